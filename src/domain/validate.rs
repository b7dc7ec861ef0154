//! A DataDomain's spec, checked: what the controller can provision, or the
//! reason it cannot (pure).

use super::settings::DomainSettings;
use crate::api::{DataDomain, DataDomainSpec};

/// A spec problem only the controller can see. Permanent: the domain is
/// `Stalled` until its spec (or the operator's settings) change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainSpecError {
    #[error(
        "the namespace name `{namespace}` (prefix `{prefix}` + domain name) is longer than 63 characters; set spec.namespace to a shorter name"
    )]
    NamespaceTooLong { namespace: String, prefix: String },
    #[error("spec.namespace `{namespace}` is reserved for {why}; choose another namespace")]
    NamespaceReserved { namespace: String, why: &'static str },
    #[error("the DataDomain has no uid yet")]
    MissingUid,
}

/// A DataDomain whose spec passed the controller's checks, with the names
/// derived from it.
#[derive(Debug, Clone)]
pub struct ValidDomain<'a> {
    pub name: &'a str,
    pub uid: &'a str,
    pub namespace: String,
    pub spec: &'a DataDomainSpec,
}

/// The namespace a domain asks for or gets by default (not yet checked).
pub fn namespace_name(domain: &DataDomain, settings: &DomainSettings) -> String {
    domain
        .spec
        .namespace
        .clone()
        .unwrap_or_else(|| format!("{}{}", settings.namespace_prefix, domain.metadata.name.as_deref().unwrap_or_default()))
}

/// The namespace a domain has: the one its status records, else the one it
/// asks for or gets by default.
pub fn current_namespace(domain: &DataDomain, settings: &DomainSettings) -> String {
    domain.status.as_ref().and_then(|s| s.namespace.clone()).unwrap_or_else(|| namespace_name(domain, settings))
}

/// Checks what the CRD schema cannot, and derives the domain's names.
pub fn validate<'a>(domain: &'a DataDomain, settings: &DomainSettings) -> Result<ValidDomain<'a>, DomainSpecError> {
    let uid = domain.metadata.uid.as_deref().ok_or(DomainSpecError::MissingUid)?;
    let namespace = namespace_name(domain, settings);
    if namespace.len() > 63 {
        return Err(DomainSpecError::NamespaceTooLong { namespace, prefix: settings.namespace_prefix.clone() });
    }
    if namespace == settings.platform_namespace {
        return Err(DomainSpecError::NamespaceReserved { namespace, why: "the meshplane platform" });
    }
    Ok(ValidDomain { name: domain.metadata.name.as_deref().unwrap_or_default(), uid, namespace, spec: &domain.spec })
}
