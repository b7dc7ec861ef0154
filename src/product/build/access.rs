//! Who may read the product: its reader Role, a RoleBinding per granted
//! consumer, and the network policies that let consumers' pipelines in
//! and the product's own out to its inputs.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicySpec,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject as RbacSubject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use super::descriptor_name;
use super::{meta, reader_role_name};
use crate::api::domain::NetworkIsolation;
use crate::api::{Subject, SubjectKind};
use crate::keys;
use crate::product::resolve::InputState;
use crate::product::resolve::{ResolvedConsumer, ResolvedInput};
use crate::product::validate::ValidProduct;
use crate::storage::{self};

/// One Role per product, limited by resourceNames to the product, its
/// descriptor and its credentials; each consumer gets a binding to it.
pub fn render_reader_role(valid: &ValidProduct<'_>) -> Role {
    let product_ref = valid.product_ref();
    let secrets: Vec<String> =
        valid.product.spec.storage.iter().flat_map(|s| storage::backend(s.kind).credentials(&product_ref, s)).collect();
    let mut rules = vec![
        PolicyRule {
            api_groups: Some(vec![keys::GROUP.into()]),
            resources: Some(vec!["dataproducts".into()]),
            resource_names: Some(vec![valid.name.to_string()]),
            verbs: vec!["get".into()],
            ..Default::default()
        },
        PolicyRule {
            api_groups: Some(vec!["".into()]),
            resources: Some(vec!["configmaps".into()]),
            resource_names: Some(vec![descriptor_name(valid.name)]),
            verbs: vec!["get".into()],
            ..Default::default()
        },
    ];
    if !secrets.is_empty() {
        rules.push(PolicyRule {
            api_groups: Some(vec!["".into()]),
            resources: Some(vec!["secrets".into()]),
            resource_names: Some(secrets),
            verbs: vec!["get".into()],
            ..Default::default()
        });
    }
    Role { metadata: meta(valid, reader_role_name(valid.name), "access"), rules: Some(rules) }
}

fn rbac_subject(subject: &Subject) -> RbacSubject {
    RbacSubject {
        kind: subject.kind.as_str().to_string(),
        name: subject.name.clone(),
        namespace: subject.namespace.clone(),
        api_group: (subject.kind != SubjectKind::ServiceAccount).then(|| "rbac.authorization.k8s.io".to_string()),
    }
}

fn grant_meta(valid: &ValidProduct<'_>, consumer: &ResolvedConsumer) -> ObjectMeta {
    let mut m = meta(valid, format!("{}-read-{}", valid.name, consumer.key()), "grant");
    m.annotations = Some(BTreeMap::from([(keys::ANNOTATION_CONSUMER.to_string(), consumer.describe())]));
    m
}

pub fn render_grants(valid: &ValidProduct<'_>, consumers: &[ResolvedConsumer]) -> Vec<RoleBinding> {
    consumers
        .iter()
        .filter_map(|consumer| {
            let subjects = match consumer {
                ResolvedConsumer::Domain { subjects, .. } => subjects.iter().map(rbac_subject).collect(),
                ResolvedConsumer::Subject(s) => vec![rbac_subject(s)],
                ResolvedConsumer::MissingDomain(_) => return None,
            };
            Some(RoleBinding {
                metadata: grant_meta(valid, consumer),
                role_ref: RoleRef {
                    api_group: "rbac.authorization.k8s.io".into(),
                    kind: "Role".into(),
                    name: reader_role_name(valid.name),
                },
                subjects: Some(subjects),
            })
        })
        .collect()
}

fn pods_of(product: &str) -> LabelSelector {
    LabelSelector { match_labels: Some(BTreeMap::from([(keys::LABEL_PRODUCT.to_string(), product.to_string())])), ..Default::default() }
}

fn namespace_selector(namespace: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([(keys::LABEL_NAMESPACE_NAME.to_string(), namespace.to_string())])),
        ..Default::default()
    }
}

/// A consumer domain's namespaces may reach the product's pods; a product
/// in a Strict domain may reach the pods of its granted cross-domain inputs.
pub fn render_network_policies(valid: &ValidProduct<'_>, inputs: &[ResolvedInput], consumers: &[ResolvedConsumer]) -> Vec<NetworkPolicy> {
    let mut policies: Vec<NetworkPolicy> = consumers
        .iter()
        .filter_map(|consumer| match consumer {
            ResolvedConsumer::Domain { namespace, .. } => Some(NetworkPolicy {
                metadata: grant_meta(valid, consumer),
                spec: Some(NetworkPolicySpec {
                    pod_selector: Some(pods_of(valid.name)),
                    policy_types: Some(vec!["Ingress".into()]),
                    ingress: Some(vec![NetworkPolicyIngressRule {
                        from: Some(vec![NetworkPolicyPeer {
                            namespace_selector: Some(namespace_selector(namespace)),
                            ..Default::default()
                        }]),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
            }),
            _ => None,
        })
        .collect();
    let upstream: Vec<NetworkPolicyPeer> = inputs
        .iter()
        .filter(|i| i.state == InputState::Granted && i.domain != valid.domain_name)
        .filter_map(|i| {
            Some(NetworkPolicyPeer {
                namespace_selector: Some(namespace_selector(i.namespace.as_deref()?)),
                pod_selector: Some(pods_of(&i.product)),
                ..Default::default()
            })
        })
        .collect();
    if valid.domain.spec.network.isolation == NetworkIsolation::Strict && !upstream.is_empty() {
        policies.push(NetworkPolicy {
            metadata: meta(valid, format!("{}-inputs", valid.name), "network"),
            spec: Some(NetworkPolicySpec {
                pod_selector: Some(pods_of(valid.name)),
                policy_types: Some(vec!["Egress".into()]),
                egress: Some(vec![NetworkPolicyEgressRule { to: Some(upstream), ..Default::default() }]),
                ..Default::default()
            }),
        });
    }
    policies
}
