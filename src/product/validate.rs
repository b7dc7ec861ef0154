//! A DataProduct's spec, checked against its domain: what the controller
//! can provision, or the reason it cannot (pure).

use crate::api::product::StorageKind;
use crate::api::{DataDomain, DataProduct};
use crate::storage::ProductRef;

/// A spec problem only the controller can see: the product is `Stalled`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProductSpecError {
    #[error("namespace `{namespace}` belongs to no DataDomain; a DataProduct lives in its domain's namespace")]
    NotInDomain { namespace: String },
    #[error("storage `{storage}` asks for storage class `{class}`, which domain `{domain}` does not allow; allowed: {allowed}")]
    StorageClassNotAllowed { storage: String, class: String, domain: String, allowed: String },
    #[error("input `{input}` names this product itself")]
    SelfInput { input: String },
    #[error("the DataProduct has no uid yet")]
    MissingUid,
}

impl ProductSpecError {
    pub fn reason(&self) -> &'static str {
        match self {
            ProductSpecError::NotInDomain { .. } => "NotInDomain",
            ProductSpecError::StorageClassNotAllowed { .. } => "StorageClassNotAllowed",
            ProductSpecError::SelfInput { .. } => "SelfInput",
            ProductSpecError::MissingUid => "InvalidSpec",
        }
    }
}

/// A product that passed the controller's checks, with its domain.
#[derive(Clone, Debug)]
pub struct ValidProduct<'a> {
    pub product: &'a DataProduct,
    pub name: &'a str,
    pub namespace: &'a str,
    pub uid: &'a str,
    pub domain: &'a DataDomain,
    pub domain_name: &'a str,
}

impl ValidProduct<'_> {
    pub fn product_ref(&self) -> ProductRef<'_> {
        ProductRef {
            name: self.name,
            namespace: self.namespace,
            uid: self.uid,
            domain: self.domain_name,
            default_class: self.domain.spec.storage_classes.first().map(String::as_str),
        }
    }
}

/// Checks what the schema cannot.
pub fn validate<'a>(product: &'a DataProduct, domain: &'a DataDomain) -> Result<ValidProduct<'a>, ProductSpecError> {
    let uid = product.metadata.uid.as_deref().ok_or(ProductSpecError::MissingUid)?;
    let name = product.metadata.name.as_deref().unwrap_or_default();
    let domain_name = domain.metadata.name.as_deref().unwrap_or_default();
    let allowed = &domain.spec.storage_classes;
    for storage in product.spec.storage.iter().filter(|s| s.kind == StorageKind::Volume) {
        if let Some(class) = &storage.storage_class
            && !allowed.is_empty()
            && !allowed.contains(class)
        {
            return Err(ProductSpecError::StorageClassNotAllowed {
                storage: storage.name.clone(),
                class: class.clone(),
                domain: domain_name.to_string(),
                allowed: allowed.join(", "),
            });
        }
    }
    if let Some(input) = product.spec.inputs.iter().find(|i| i.domain.as_deref().unwrap_or(domain_name) == domain_name && i.product == name)
    {
        return Err(ProductSpecError::SelfInput { input: input.name.clone() });
    }
    Ok(ValidProduct { product, name, namespace: product.metadata.namespace.as_deref().unwrap_or_default(), uid, domain, domain_name })
}
