//! Which of a product's inputs are granted, and who its consumers are
//! (pure: the controller gathers the world, this decides).

use super::validate::ValidProduct;
use crate::api::{DataDomain, DataProduct, Subject};

/// Where an input stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputState {
    Granted,
    NotFound,
    AccessDenied,
}

impl InputState {
    pub fn as_str(self) -> &'static str {
        match self {
            InputState::Granted => "Granted",
            InputState::NotFound => "NotFound",
            InputState::AccessDenied => "AccessDenied",
        }
    }
}

/// An input, resolved against the producers in the cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedInput {
    pub name: String,
    pub domain: String,
    pub product: String,
    /// The producer's namespace, when its domain exists.
    pub namespace: Option<String>,
    pub state: InputState,
    pub message: String,
}

/// The namespace of a domain: what its status says, or what it will be.
pub type NamespaceOf<'a> = &'a dyn Fn(&DataDomain) -> String;

/// Resolves each input: `Granted` within the same domain or when the
/// producer lists this product's domain as a consumer; `NotFound` when the
/// producer (or its port) does not exist; `AccessDenied` otherwise.
pub fn resolve_inputs(
    valid: &ValidProduct<'_>,
    find_domain: &dyn Fn(&str) -> Option<std::sync::Arc<DataDomain>>,
    find_product: &dyn Fn(&str, &str) -> Option<std::sync::Arc<DataProduct>>,
    namespace_of: NamespaceOf<'_>,
) -> Vec<ResolvedInput> {
    valid
        .product
        .spec
        .inputs
        .iter()
        .map(|input| {
            let domain = input.domain.clone().unwrap_or_else(|| valid.domain_name.to_string());
            let resolved = |namespace: Option<String>, state, message: String| ResolvedInput {
                name: input.name.clone(),
                domain: domain.clone(),
                product: input.product.clone(),
                namespace,
                state,
                message,
            };
            let Some(producer_domain) = find_domain(&domain) else {
                return resolved(None, InputState::NotFound, format!("domain `{domain}` does not exist"));
            };
            let namespace = namespace_of(&producer_domain);
            let Some(producer) = find_product(&namespace, &input.product).filter(|p| p.metadata.deletion_timestamp.is_none()) else {
                return resolved(Some(namespace), InputState::NotFound, format!("DataProduct {domain}/{} does not exist", input.product));
            };
            if let Some(port) = &input.port
                && !producer.spec.output_ports.iter().any(|p| &p.name == port)
            {
                let message = format!("DataProduct {domain}/{} has no output port `{port}`", input.product);
                return resolved(Some(namespace), InputState::NotFound, message);
            }
            let same_domain = domain == valid.domain_name;
            let listed = producer.spec.access.consumers.iter().any(|c| c.domain.as_deref() == Some(valid.domain_name));
            if !same_domain && !listed {
                let owner = producer.spec.owner.as_deref().unwrap_or("its owner");
                let message = format!(
                    "DataProduct {domain}/{} does not list domain `{}` among its consumers; ask {owner} to add it to spec.access.consumers",
                    input.product, valid.domain_name
                );
                return resolved(Some(namespace), InputState::AccessDenied, message);
            }
            let mut message = if same_domain { "same domain".to_string() } else { format!("granted to domain `{}`", valid.domain_name) };
            if producer.spec.lifecycle == crate::api::product::Lifecycle::Deprecated {
                message.push_str(&format!("; the producer is Deprecated, sunset {}", producer.spec.sunset.as_deref().unwrap_or("unknown")));
            }
            resolved(Some(namespace), InputState::Granted, message)
        })
        .collect()
}

/// A consumer of the product, resolved.
#[derive(Clone, Debug, PartialEq)]
pub enum ResolvedConsumer {
    /// A domain: its pipelines' ServiceAccounts, owners and members.
    Domain { name: String, namespace: String, subjects: Vec<Subject> },
    /// One RBAC subject.
    Subject(Subject),
    /// A domain that does not exist (yet); nothing is granted.
    MissingDomain(String),
}

impl ResolvedConsumer {
    /// A short, stable key that names the consumer's grant objects.
    pub fn key(&self) -> String {
        match self {
            ResolvedConsumer::Domain { name, .. } | ResolvedConsumer::MissingDomain(name) => {
                format!("d-{name}")
            }
            ResolvedConsumer::Subject(s) => {
                format!("s-{:08x}", fnv1a(&format!("{}/{}/{}", s.kind.as_str(), s.namespace.as_deref().unwrap_or_default(), s.name)))
            }
        }
    }

    pub fn describe(&self) -> String {
        match self {
            ResolvedConsumer::Domain { name, .. } | ResolvedConsumer::MissingDomain(name) => {
                format!("domain {name}")
            }
            ResolvedConsumer::Subject(s) => format!("{} {}", s.kind.as_str(), s.name),
        }
    }
}

fn fnv1a(s: &str) -> u32 {
    s.bytes().fold(0x811c9dc5u32, |h, b| (h ^ b as u32).wrapping_mul(0x01000193))
}

pub fn resolve_consumers(
    valid: &ValidProduct<'_>,
    find_domain: &dyn Fn(&str) -> Option<std::sync::Arc<DataDomain>>,
    namespace_of: NamespaceOf<'_>,
) -> Vec<ResolvedConsumer> {
    let mut seen = std::collections::BTreeSet::new();
    valid
        .product
        .spec
        .access
        .consumers
        .iter()
        .filter_map(|consumer| {
            let resolved = match (&consumer.domain, &consumer.subject) {
                (Some(domain), _) => match find_domain(domain) {
                    Some(d) => {
                        let mut subjects = vec![Subject::group(&format!("system:serviceaccounts:{}", namespace_of(&d)))];
                        subjects.extend(d.spec.owners.iter().cloned());
                        subjects.extend(d.spec.members.iter().cloned());
                        ResolvedConsumer::Domain { name: domain.clone(), namespace: namespace_of(&d), subjects }
                    }
                    None => ResolvedConsumer::MissingDomain(domain.clone()),
                },
                (None, Some(subject)) => ResolvedConsumer::Subject(subject.clone()),
                (None, None) => return None,
            };
            seen.insert(resolved.key()).then_some(resolved)
        })
        .collect()
}
