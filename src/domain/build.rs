//! DataDomain -> the Kubernetes objects of its tenant. Pure: no client, no
//! clock; a test feeds a manifest and asserts on the objects.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{LimitRange, LimitRangeItem, LimitRangeSpec, Namespace, ResourceQuota, ResourceQuotaSpec};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject as RbacSubject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::settings::DomainSettings;
use super::validate::ValidDomain;
use crate::api::domain::NetworkIsolation;
use crate::api::{DataDomain, Subject};
use crate::keys;
use crate::plumbing::controller_owner;

/// Everything a domain's tenant consists of, in apply order.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DomainBundle {
    pub namespace: Namespace,
    pub role_bindings: Vec<RoleBinding>,
    pub quota: ResourceQuota,
    pub limit_range: LimitRange,
    pub network_policies: Vec<NetworkPolicy>,
}

/// Renders the whole tenant of a validated domain.
pub fn render(domain: &ValidDomain<'_>, settings: &DomainSettings) -> DomainBundle {
    DomainBundle {
        namespace: render_namespace(domain),
        role_bindings: render_role_bindings(domain),
        quota: render_quota(domain),
        limit_range: render_limit_range(domain),
        network_policies: render_network_policies(domain, settings),
    }
}

/// The owner reference every child of a domain carries, so the garbage
/// collector removes them with the domain.
pub fn owner_reference(domain: &ValidDomain<'_>) -> OwnerReference {
    controller_owner::<DataDomain>(domain.name, domain.uid)
}

fn labels(domain: &ValidDomain<'_>, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (keys::LABEL_MANAGED_BY.to_string(), keys::MANAGED_BY.to_string()),
        (keys::LABEL_DOMAIN.to_string(), domain.name.to_string()),
        (keys::LABEL_COMPONENT.to_string(), component.to_string()),
    ])
}

fn meta(domain: &ValidDomain<'_>, name: &str, component: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(domain.namespace.clone()),
        labels: Some(labels(domain, component)),
        owner_references: Some(vec![owner_reference(domain)]),
        ..ObjectMeta::default()
    }
}

pub fn render_namespace(domain: &ValidDomain<'_>) -> Namespace {
    let mut labels = labels(domain, "namespace");
    for (key, value) in [
        (keys::POD_SECURITY_ENFORCE, keys::POD_SECURITY_LEVEL),
        (keys::POD_SECURITY_ENFORCE_VERSION, keys::POD_SECURITY_VERSION),
        (keys::POD_SECURITY_WARN, keys::POD_SECURITY_LEVEL),
        (keys::POD_SECURITY_WARN_VERSION, keys::POD_SECURITY_VERSION),
        (keys::POD_SECURITY_AUDIT, keys::POD_SECURITY_LEVEL),
    ] {
        labels.insert(key.to_string(), value.to_string());
    }
    Namespace {
        metadata: ObjectMeta {
            name: Some(domain.namespace.clone()),
            labels: Some(labels),
            owner_references: Some(vec![owner_reference(domain)]),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }
}

fn rbac_subject(subject: &Subject) -> RbacSubject {
    RbacSubject {
        kind: subject.kind.as_str().to_string(),
        name: subject.name.clone(),
        namespace: subject.namespace.clone(),
        // ServiceAccounts are in the core group, which RBAC spells as no group.
        api_group: match subject.kind {
            crate::api::SubjectKind::ServiceAccount => None,
            _ => Some("rbac.authorization.k8s.io".to_string()),
        },
    }
}

/// One RoleBinding per audience, always rendered (with no subjects when the
/// list is empty) so that emptying a list in the spec empties the binding.
pub fn render_role_bindings(domain: &ValidDomain<'_>) -> Vec<RoleBinding> {
    [
        (keys::ROLE_BINDING_OWNERS, keys::CLUSTER_ROLE_DOMAIN_ADMIN, &domain.spec.owners),
        (keys::ROLE_BINDING_MEMBERS, keys::CLUSTER_ROLE_DOMAIN_MEMBER, &domain.spec.members),
        (keys::ROLE_BINDING_VIEWERS, keys::CLUSTER_ROLE_DOMAIN_VIEWER, &domain.spec.viewers),
    ]
    .into_iter()
    .map(|(name, role, subjects)| {
        let mut subjects: Vec<RbacSubject> = subjects.iter().map(rbac_subject).collect();
        // The spec's order is the user's; a stable order keeps the applied
        // object identical when only the order changed.
        subjects.sort_by(|a, b| (&a.kind, &a.namespace, &a.name).cmp(&(&b.kind, &b.namespace, &b.name)));
        subjects.dedup();
        RoleBinding {
            metadata: meta(domain, name, "access"),
            role_ref: RoleRef { api_group: "rbac.authorization.k8s.io".into(), kind: "ClusterRole".into(), name: role.into() },
            subjects: Some(subjects),
        }
    })
    .collect()
}

pub fn render_quota(domain: &ValidDomain<'_>) -> ResourceQuota {
    let q = &domain.spec.quota;
    let hard = BTreeMap::from([
        ("requests.cpu".to_string(), q.cpu.clone()),
        ("limits.cpu".to_string(), q.cpu.clone()),
        ("requests.memory".to_string(), q.memory.clone()),
        ("limits.memory".to_string(), q.memory.clone()),
        ("requests.storage".to_string(), q.storage.clone()),
        ("persistentvolumeclaims".to_string(), Quantity(q.persistent_volume_claims.to_string())),
        (format!("count/dataproducts.{}", keys::GROUP), Quantity(q.data_products.to_string())),
    ]);
    ResourceQuota {
        metadata: meta(domain, keys::RESOURCE_QUOTA, "quota"),
        spec: Some(ResourceQuotaSpec { hard: Some(hard), ..ResourceQuotaSpec::default() }),
        ..ResourceQuota::default()
    }
}

/// Defaults for containers that declare no resources, so that pods in a
/// namespace with a quota on CPU and memory are admitted at all.
pub fn render_limit_range(domain: &ValidDomain<'_>) -> LimitRange {
    let pair = |cpu: &str, memory: &str| {
        BTreeMap::from([("cpu".to_string(), Quantity(cpu.into())), ("memory".to_string(), Quantity(memory.into()))])
    };
    LimitRange {
        metadata: meta(domain, keys::LIMIT_RANGE, "quota"),
        spec: Some(LimitRangeSpec {
            limits: vec![LimitRangeItem {
                type_: "Container".into(),
                default: Some(pair("500m", "512Mi")),
                default_request: Some(pair("100m", "128Mi")),
                ..LimitRangeItem::default()
            }],
        }),
    }
}

fn namespace_peer(name: &str) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(keys::LABEL_NAMESPACE_NAME.to_string(), name.to_string())])),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    }
}

fn same_namespace_peer() -> NetworkPolicyPeer {
    NetworkPolicyPeer { pod_selector: Some(LabelSelector::default()), ..NetworkPolicyPeer::default() }
}

fn policy(domain: &ValidDomain<'_>, name: &str, spec: NetworkPolicySpec) -> NetworkPolicy {
    NetworkPolicy { metadata: meta(domain, name, "network"), spec: Some(spec) }
}

/// `Strict`: deny all ingress and egress, then allow the same domain, the
/// platform namespace (ingress), cluster DNS and the domain's egress CIDRs
/// (egress). `Open`: no policies at all.
pub fn render_network_policies(domain: &ValidDomain<'_>, settings: &DomainSettings) -> Vec<NetworkPolicy> {
    if domain.spec.network.isolation == NetworkIsolation::Open {
        return Vec::new();
    }
    let all_pods = LabelSelector::default();
    let types = |t: &[&str]| Some(t.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    let mut policies = vec![
        policy(
            domain,
            keys::NETWORK_POLICY_DEFAULT_DENY,
            NetworkPolicySpec { pod_selector: Some(all_pods.clone()), policy_types: types(&["Ingress", "Egress"]), ..Default::default() },
        ),
        policy(
            domain,
            keys::NETWORK_POLICY_SAME_DOMAIN,
            NetworkPolicySpec {
                pod_selector: Some(all_pods.clone()),
                policy_types: types(&["Ingress", "Egress"]),
                ingress: Some(vec![NetworkPolicyIngressRule { from: Some(vec![same_namespace_peer()]), ..Default::default() }]),
                egress: Some(vec![NetworkPolicyEgressRule { to: Some(vec![same_namespace_peer()]), ..Default::default() }]),
            },
        ),
        policy(
            domain,
            keys::NETWORK_POLICY_PLATFORM,
            NetworkPolicySpec {
                pod_selector: Some(all_pods.clone()),
                policy_types: types(&["Ingress"]),
                ingress: Some(vec![NetworkPolicyIngressRule {
                    from: Some(vec![namespace_peer(&settings.platform_namespace)]),
                    ..Default::default()
                }]),
                ..Default::default()
            },
        ),
        policy(
            domain,
            keys::NETWORK_POLICY_DNS,
            NetworkPolicySpec {
                pod_selector: Some(all_pods.clone()),
                policy_types: types(&["Egress"]),
                egress: Some(vec![NetworkPolicyEgressRule {
                    to: Some(vec![NetworkPolicyPeer {
                        namespace_selector: namespace_peer("kube-system").namespace_selector,
                        pod_selector: Some(LabelSelector {
                            match_labels: Some(BTreeMap::from([("k8s-app".to_string(), "kube-dns".to_string())])),
                            ..LabelSelector::default()
                        }),
                        ..NetworkPolicyPeer::default()
                    }]),
                    ports: Some(
                        ["UDP", "TCP"]
                            .into_iter()
                            .map(|protocol| NetworkPolicyPort {
                                port: Some(IntOrString::Int(53)),
                                protocol: Some(protocol.into()),
                                ..Default::default()
                            })
                            .collect(),
                    ),
                }]),
                ..Default::default()
            },
        ),
    ];
    if !domain.spec.network.egress_cidrs.is_empty() {
        policies.push(policy(
            domain,
            keys::NETWORK_POLICY_EGRESS_CIDRS,
            NetworkPolicySpec {
                pod_selector: Some(all_pods),
                policy_types: types(&["Egress"]),
                egress: Some(vec![NetworkPolicyEgressRule {
                    to: Some(
                        domain
                            .spec
                            .network
                            .egress_cidrs
                            .iter()
                            .map(|cidr| NetworkPolicyPeer {
                                ip_block: Some(IPBlock { cidr: cidr.clone(), except: None }),
                                ..Default::default()
                            })
                            .collect(),
                    ),
                    ..Default::default()
                }]),
                ..Default::default()
            },
        ));
    }
    policies
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::validate::{DomainSpecError, validate};

    fn domain(yaml: &str) -> DataDomain {
        let mut d: DataDomain = serde_saphyr::from_str(yaml).expect("fixture parses");
        d.metadata.uid = Some("uid-1".into());
        d
    }

    const ORDERS: &str = r#"
apiVersion: meshplane.dev/v1alpha1
kind: DataDomain
metadata: {name: orders}
spec:
  owners: [{kind: Group, name: orders-leads}]
  members:
    - {kind: User, name: zed}
    - {kind: ServiceAccount, name: ci, namespace: tools}
    - {kind: User, name: zed}
  viewers: [{kind: Group, name: analysts}]
  quota: {cpu: "16", memory: 64Gi, storage: 1Ti, persistentVolumeClaims: 5, dataProducts: 7}
  network: {egressCIDRs: [10.1.0.0/16]}
"#;

    #[test]
    fn the_whole_tenant_of_a_domain() {
        let d = domain(ORDERS);
        let settings = DomainSettings::default();
        let valid = validate(&d, &settings).unwrap();
        insta::assert_yaml_snapshot!(render(&valid, &settings));
    }

    #[test]
    fn namespace_defaults_to_prefix_and_name() {
        let d = domain(ORDERS);
        let settings = DomainSettings { namespace_prefix: "mesh-".into(), ..Default::default() };
        assert_eq!(validate(&d, &settings).unwrap().namespace, "mesh-orders");
        let d = domain("metadata: {name: orders}\nspec: {namespace: sales}");
        assert_eq!(validate(&d, &settings).unwrap().namespace, "sales");
    }

    #[test]
    fn a_namespace_the_controller_cannot_use_is_a_spec_error() {
        let settings = DomainSettings::default();
        let long = domain(&format!("metadata: {{name: {}}}\nspec: {{}}", "a".repeat(62)));
        assert!(matches!(validate(&long, &settings), Err(DomainSpecError::NamespaceTooLong { .. })));
        let platform = domain("metadata: {name: p}\nspec: {namespace: meshplane-system}");
        let err = validate(&platform, &settings).unwrap_err();
        assert!(err.to_string().contains("reserved"), "{err}");
        let mut no_uid = domain(ORDERS);
        no_uid.metadata.uid = None;
        assert_eq!(validate(&no_uid, &settings).unwrap_err(), DomainSpecError::MissingUid);
    }

    #[test]
    fn every_child_is_owned_and_labelled() {
        let d = domain(ORDERS);
        let settings = DomainSettings::default();
        let bundle = render(&validate(&d, &settings).unwrap(), &settings);
        let mut metas = vec![&bundle.namespace.metadata, &bundle.quota.metadata, &bundle.limit_range.metadata];
        metas.extend(bundle.role_bindings.iter().map(|r| &r.metadata));
        metas.extend(bundle.network_policies.iter().map(|p| &p.metadata));
        for meta in metas {
            let labels = meta.labels.as_ref().unwrap();
            assert_eq!(labels[keys::LABEL_MANAGED_BY], keys::MANAGED_BY);
            assert_eq!(labels[keys::LABEL_DOMAIN], "orders");
            let owner = &meta.owner_references.as_ref().unwrap()[0];
            assert_eq!((owner.kind.as_str(), owner.uid.as_str(), owner.controller), ("DataDomain", "uid-1", Some(true)));
        }
    }

    #[test]
    fn subjects_are_sorted_and_deduplicated() {
        let d = domain(ORDERS);
        let settings = DomainSettings::default();
        let bundle = render(&validate(&d, &settings).unwrap(), &settings);
        let members = bundle.role_bindings.iter().find(|r| r.role_ref.name == keys::CLUSTER_ROLE_DOMAIN_MEMBER).unwrap();
        let names: Vec<_> = members.subjects.as_ref().unwrap().iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["ci", "zed"]);
    }

    #[test]
    fn empty_audiences_still_get_a_binding_with_no_subjects() {
        let d = domain("metadata: {name: solo}\nspec: {}");
        let settings = DomainSettings::default();
        let bundle = render(&validate(&d, &settings).unwrap(), &settings);
        assert_eq!(bundle.role_bindings.len(), 3);
        assert!(bundle.role_bindings.iter().all(|r| r.subjects.as_ref().is_some_and(Vec::is_empty)));
    }

    #[test]
    fn open_domains_get_no_network_policies() {
        let d = domain("metadata: {name: open}\nspec: {network: {isolation: Open}}");
        let settings = DomainSettings::default();
        assert!(render(&validate(&d, &settings).unwrap(), &settings).network_policies.is_empty());
    }

    #[test]
    fn strict_domains_deny_by_default_and_admit_the_platform() {
        let d = domain("metadata: {name: strict}\nspec: {}");
        let settings = DomainSettings { platform_namespace: "platform".into(), ..Default::default() };
        let policies = render(&validate(&d, &settings).unwrap(), &settings).network_policies;
        let names: Vec<_> = policies.iter().map(|p| p.metadata.name.as_deref().unwrap()).collect();
        assert_eq!(
            names,
            [keys::NETWORK_POLICY_DEFAULT_DENY, keys::NETWORK_POLICY_SAME_DOMAIN, keys::NETWORK_POLICY_PLATFORM, keys::NETWORK_POLICY_DNS]
        );
        let platform = serde_json::to_string(&policies[2]).unwrap();
        assert!(platform.contains(r#""kubernetes.io/metadata.name":"platform""#), "{platform}");
    }

    #[test]
    fn quota_defaults_come_from_the_schema_defaults() {
        let d = domain("metadata: {name: q}\nspec: {}");
        let settings = DomainSettings::default();
        let quota = render(&validate(&d, &settings).unwrap(), &settings).quota;
        let hard = quota.spec.unwrap().hard.unwrap();
        assert_eq!(hard["limits.cpu"].0, "8");
        assert_eq!(hard["requests.storage"].0, "500Gi");
        assert_eq!(hard["count/dataproducts.meshplane.dev"].0, "50");
    }
}
