//! DataProduct -> the Kubernetes objects that implement it. Pure: no
//! client, no clock.

pub mod access;
pub mod descriptor;
pub mod pipelines;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::DynamicObject;

use super::resolve::{ResolvedConsumer, ResolvedInput};
use super::validate::ValidProduct;
use crate::api::DataProduct;
use crate::api::product::StorageKind;
use crate::keys;
use crate::plumbing::controller_owner;
use crate::storage::{self};
use access::{render_grants, render_network_policies, render_reader_role};
use descriptor::render_descriptor;
use pipelines::render_pipelines;

/// Everything that implements a product, in apply order.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ProductBundle {
    pub service_account: ServiceAccount,
    pub descriptor: ConfigMap,
    /// Storage objects per storage entry, in spec order.
    pub storage: Vec<(String, StorageKind, Vec<DynamicObject>)>,
    pub role: Role,
    pub role_bindings: Vec<RoleBinding>,
    pub network_policies: Vec<NetworkPolicy>,
    pub cron_jobs: Vec<CronJob>,
    pub deployments: Vec<Deployment>,
}

pub fn owner_reference(name: &str, uid: &str) -> OwnerReference {
    controller_owner::<DataProduct>(name, uid)
}

pub fn service_account_name(product: &str) -> String {
    format!("{product}-pipeline")
}

pub fn descriptor_name(product: &str) -> String {
    format!("{product}-descriptor")
}

pub fn workload_name(product: &str, pipeline: &str) -> String {
    format!("{product}-{pipeline}")
}

pub fn reader_role_name(product: &str) -> String {
    format!("{product}-reader")
}

pub(super) fn labels(valid: &ValidProduct<'_>, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (keys::LABEL_MANAGED_BY.to_string(), keys::MANAGED_BY.to_string()),
        (keys::LABEL_DOMAIN.to_string(), valid.domain_name.to_string()),
        (keys::LABEL_PRODUCT.to_string(), valid.name.to_string()),
        (keys::LABEL_COMPONENT.to_string(), component.to_string()),
    ])
}

pub(super) fn meta(valid: &ValidProduct<'_>, name: String, component: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(valid.namespace.to_string()),
        labels: Some(labels(valid, component)),
        owner_references: Some(vec![owner_reference(valid.name, valid.uid)]),
        ..Default::default()
    }
}

/// Renders every object of a validated product.
pub fn render(valid: &ValidProduct<'_>, inputs: &[ResolvedInput], consumers: &[ResolvedConsumer]) -> ProductBundle {
    let product_ref = valid.product_ref();
    let storage =
        valid.product.spec.storage.iter().map(|s| (s.name.clone(), s.kind, storage::backend(s.kind).render(&product_ref, s))).collect();
    let (cron_jobs, deployments) = render_pipelines(valid, inputs);
    ProductBundle {
        service_account: ServiceAccount {
            metadata: meta(valid, service_account_name(valid.name), "pipelines"),
            // Pipelines talk to storage, not to the API server.
            automount_service_account_token: Some(false),
            ..Default::default()
        },
        descriptor: render_descriptor(valid),
        storage,
        role: render_reader_role(valid),
        role_bindings: render_grants(valid, consumers),
        network_policies: render_network_policies(valid, inputs, consumers),
        cron_jobs,
        deployments,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::access::*;
    use super::pipelines::*;
    use super::*;
    use crate::api::{DataDomain, DataProduct, Subject};
    use crate::product::resolve::*;
    use crate::product::validate::*;

    fn domain(yaml: &str) -> DataDomain {
        let mut d: DataDomain = serde_saphyr::from_str(yaml).expect("domain fixture");
        d.metadata.uid = Some("domain-uid".into());
        d
    }

    fn product(yaml: &str) -> DataProduct {
        let mut p: DataProduct = serde_saphyr::from_str(yaml).expect("product fixture");
        p.metadata.uid = Some("product-uid".into());
        p
    }

    const SHOP: &str = "metadata: {name: shop}\nspec: {storageClasses: [standard, fast]}";
    const ORDERS: &str = r#"
metadata: {name: orders, namespace: dm-shop}
spec:
  owner: shop-team
  storage:
    - {name: data, kind: Volume, size: 5Gi}
    - {name: files, kind: Bucket, storageClass: s3}
  pipelines:
    - {name: nightly, image: busybox, schedule: "0 3 * * *", mounts: [{storage: data, path: /data}], inputs: [users],
       env: [{name: MODE, value: full}], resources: {limits: {cpu: "1", memory: 1Gi}}}
    - {name: stream, image: busybox, mode: Continuous, replicas: 2}
  inputs:
    - {name: users, domain: crm, product: users}
  outputPorts:
    - {name: table, format: Parquet, storage: data, schema: [{name: id, type: string}, {name: email, type: string, pii: true}]}
  access:
    consumers:
      - {domain: crm}
      - {subject: {kind: User, name: auditor}}
      - {domain: ghost}
"#;

    fn world() -> (DataDomain, DataDomain, DataProduct) {
        let crm = domain("metadata: {name: crm}\nspec: {members: [{kind: Group, name: crm-team}]}\nstatus: {namespace: dm-crm}");
        let users = product("metadata: {name: users, namespace: dm-crm}\nspec: {owner: crm-team, access: {consumers: [{domain: shop}]}}");
        (domain(SHOP), crm, users)
    }

    fn resolve(p: &DataProduct, shop: &DataDomain, crm: &DataDomain, users: &DataProduct) -> (Vec<ResolvedInput>, Vec<ResolvedConsumer>) {
        let valid = validate(p, shop).unwrap();
        let find_domain = |n: &str| match n {
            "crm" => Some(Arc::new(crm.clone())),
            "shop" => Some(Arc::new(shop.clone())),
            _ => None,
        };
        let find_product = |ns: &str, n: &str| (ns == "dm-crm" && n == "users").then(|| Arc::new(users.clone()));
        let ns_of = |d: &DataDomain| format!("dm-{}", d.metadata.name.as_deref().unwrap());
        (resolve_inputs(&valid, &find_domain, &find_product, &ns_of), resolve_consumers(&valid, &find_domain, &ns_of))
    }

    #[test]
    fn the_whole_product() {
        let (shop, crm, users) = world();
        let p = product(ORDERS);
        let (inputs, consumers) = resolve(&p, &shop, &crm, &users);
        let valid = validate(&p, &shop).unwrap();
        insta::assert_yaml_snapshot!(render(&valid, &inputs, &consumers));
    }

    #[test]
    fn a_granted_cross_domain_input_is_wired_into_the_pipeline() {
        let (shop, crm, users) = world();
        let p = product(ORDERS);
        let (inputs, _) = resolve(&p, &shop, &crm, &users);
        assert_eq!(inputs[0].state, InputState::Granted);
        let valid = validate(&p, &shop).unwrap();
        let (cron_jobs, deployments) = render_pipelines(&valid, &inputs);
        let env = serde_json::to_string(&cron_jobs[0]).unwrap();
        assert!(env.contains("MESHPLANE_INPUT_USERS_DESCRIPTOR") && env.contains("dm-crm/users-descriptor"), "{env}");
        // The continuous pipeline does not read the input.
        assert!(!serde_json::to_string(&deployments[0]).unwrap().contains("MESHPLANE_INPUT_USERS"));
    }

    #[test]
    fn inputs_are_denied_unless_listed_and_missing_ones_are_not_found() {
        let (shop, crm, mut users) = world();
        users.spec.access.consumers.clear();
        let p = product(ORDERS);
        let (inputs, _) = resolve(&p, &shop, &crm, &users);
        assert_eq!(inputs[0].state, InputState::AccessDenied);
        assert!(inputs[0].message.contains("crm-team"), "{}", inputs[0].message);
        let p = product(
            "metadata: {name: x, namespace: dm-shop}\nspec: {inputs: [{name: a, domain: crm, product: nope}, {name: b, domain: mars, product: p}, {name: c, domain: crm, product: users, port: nope}]}",
        );
        let (inputs, _) = resolve(&p, &shop, &crm, &users);
        assert!(inputs.iter().all(|i| i.state == InputState::NotFound), "{inputs:?}");
    }

    #[test]
    fn consumers_resolve_to_grants_and_unknown_domains_grant_nothing() {
        let (shop, crm, users) = world();
        let p = product(ORDERS);
        let (_, consumers) = resolve(&p, &shop, &crm, &users);
        assert_eq!(consumers.len(), 3);
        let valid = validate(&p, &shop).unwrap();
        let grants = render_grants(&valid, &consumers);
        assert_eq!(grants.len(), 2, "no binding for a domain that does not exist");
        let crm_subjects: Vec<_> = grants[0].subjects.as_ref().unwrap().iter().map(|s| s.name.as_str()).collect();
        assert_eq!(crm_subjects, ["system:serviceaccounts:dm-crm", "crm-team"]);
        assert_eq!(consumers[1].key(), ResolvedConsumer::Subject(Subject::user("auditor")).key(), "keys are stable");
        let role = render_reader_role(&valid);
        let names: Vec<_> = role.rules.unwrap().iter().flat_map(|r| r.resource_names.clone().unwrap()).collect();
        assert_eq!(names, ["orders", "orders-descriptor", "orders-files-credentials"]);
    }

    #[test]
    fn pipeline_pods_satisfy_restricted() {
        let (shop, crm, users) = world();
        let p = product(ORDERS);
        let (inputs, _) = resolve(&p, &shop, &crm, &users);
        let valid = validate(&p, &shop).unwrap();
        for pipeline in &p.spec.pipelines {
            let pod = render_pod(&valid, pipeline, &inputs, "Never").spec.unwrap();
            assert_eq!(pod.service_account_name.as_deref(), Some("orders-pipeline"));
            let psc = pod.security_context.unwrap();
            assert_eq!((psc.run_as_non_root, psc.seccomp_profile.unwrap().type_.as_str()), (Some(true), "RuntimeDefault"));
            let sc = pod.containers[0].security_context.clone().unwrap();
            assert_eq!(sc.allow_privilege_escalation, Some(false));
            assert_eq!(sc.capabilities.unwrap().drop, Some(vec!["ALL".to_string()]));
        }
    }

    #[test]
    fn controller_only_spec_errors() {
        let (shop, _, _) = world();
        let p = product(
            "metadata: {name: x, namespace: dm-shop}\nspec: {storage: [{name: a, kind: Volume, size: 1Gi, storageClass: premium}]}",
        );
        let err = validate(&p, &shop).unwrap_err();
        assert_eq!(err.reason(), "StorageClassNotAllowed");
        assert!(err.to_string().contains("allowed: standard, fast"), "{err}");
        let p = product("metadata: {name: x, namespace: dm-shop}\nspec: {inputs: [{name: me, domain: shop, product: x}]}");
        assert_eq!(validate(&p, &shop).unwrap_err().reason(), "SelfInput");
        // A bucket's class is a BucketClass, not the domain's concern.
        let p = product("metadata: {name: x, namespace: dm-shop}\nspec: {storage: [{name: b, kind: Bucket, storageClass: premium}]}");
        assert!(validate(&p, &shop).is_ok());
    }

    #[test]
    fn unset_volume_class_takes_the_domains_first() {
        let (shop, _, _) = world();
        let p = product("metadata: {name: x, namespace: dm-shop}\nspec: {storage: [{name: a, kind: Volume, size: 1Gi}]}");
        let valid = validate(&p, &shop).unwrap();
        let bundle = render(&valid, &[], &[]);
        assert_eq!(bundle.storage[0].2[0].data["spec"]["storageClassName"], "standard");
    }
}
