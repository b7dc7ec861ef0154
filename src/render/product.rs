//! DataProduct -> the Kubernetes objects that implement it, and the pure
//! decisions around them: which inputs are granted, who the consumers are.
//! No client, no clock: the controller gathers the world, this decides.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, Container, EnvVar as KubeEnvVar, PodSecurityContext, PodSpec, PodTemplateSpec, ResourceRequirements,
    SeccompProfile, SecurityContext, ServiceAccount,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicySpec,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject as RbacSubject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::Resource;
use kube::api::DynamicObject;
use serde_json::json;

use crate::api::domain::NetworkIsolation;
use crate::api::product::{CpuMemory, Pipeline, PipelineMode, StorageKind};
use crate::api::{DataDomain, DataProduct, Subject, SubjectKind};
use crate::keys;
use crate::storage::{self, ProductRef, Wiring};

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
    OwnerReference {
        api_version: DataProduct::api_version(&()).into_owned(),
        kind: DataProduct::kind(&()).into_owned(),
        name: name.to_string(),
        uid: uid.to_string(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
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

fn labels(valid: &ValidProduct<'_>, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (keys::LABEL_MANAGED_BY.to_string(), keys::MANAGED_BY.to_string()),
        (keys::LABEL_DOMAIN.to_string(), valid.domain_name.to_string()),
        (keys::LABEL_PRODUCT.to_string(), valid.name.to_string()),
        (keys::LABEL_COMPONENT.to_string(), component.to_string()),
    ])
}

fn meta(valid: &ValidProduct<'_>, name: String, component: &str) -> ObjectMeta {
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

/// What the product is and how to reach it, for the catalog and consumers.
pub fn render_descriptor(valid: &ValidProduct<'_>) -> ConfigMap {
    let spec = &valid.product.spec;
    let product_ref = valid.product_ref();
    let ports: Vec<_> = spec
        .output_ports
        .iter()
        .map(|port| {
            let backing = port.storage.as_ref().and_then(|name| spec.storage.iter().find(|s| &s.name == name)).map(|s| {
                let objects = storage::backend(s.kind).render(&product_ref, s);
                json!({
                    "name": s.name,
                    "kind": s.kind,
                    "objects": objects.iter().map(|o| json!({
                        "kind": o.types.as_ref().map(|t| t.kind.clone()),
                        "name": o.metadata.name,
                    })).collect::<Vec<_>>(),
                    "credentials": storage::backend(s.kind).credentials(&product_ref, s),
                })
            });
            json!({
                "name": port.name,
                "format": port.format,
                "description": port.description,
                "storage": backing,
                "schema": port.schema,
            })
        })
        .collect();
    let owner = spec.owner.as_deref().unwrap_or("the domain's owners");
    let descriptor = json!({
        "apiVersion": format!("{}/{}", keys::GROUP, keys::VERSION),
        "kind": "DataProductDescriptor",
        "name": valid.name,
        "domain": valid.domain_name,
        "namespace": valid.namespace,
        "owner": spec.owner,
        "description": spec.description,
        "documentation": spec.documentation,
        "lifecycle": spec.lifecycle,
        "sunset": spec.sunset,
        "classification": spec.classification,
        "containsPII": spec.contains_pii,
        "tags": spec.tags,
        "outputPorts": ports,
        "inputs": spec.inputs,
        "quality": spec.quality,
        "access": {
            "consumers": spec.access.consumers,
            "howToRequest": format!(
                "ask {owner} to add your domain to spec.access.consumers of DataProduct {} in namespace {}",
                valid.name, valid.namespace
            ),
        },
    });
    ConfigMap {
        metadata: meta(valid, descriptor_name(valid.name), "descriptor"),
        data: Some(BTreeMap::from([(
            "descriptor.json".to_string(),
            serde_json::to_string_pretty(&descriptor).expect("a descriptor serializes"),
        )])),
        ..Default::default()
    }
}

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

fn quantities(cm: &Option<CpuMemory>) -> Option<BTreeMap<String, Quantity>> {
    let cm = cm.as_ref()?;
    let mut map = BTreeMap::new();
    if let Some(cpu) = &cm.cpu {
        map.insert("cpu".to_string(), cpu.clone());
    }
    if let Some(memory) = &cm.memory {
        map.insert("memory".to_string(), memory.clone());
    }
    (!map.is_empty()).then_some(map)
}

/// The pod of a pipeline: the product's ServiceAccount, Pod Security
/// `restricted` (non-root, no privilege escalation, no capabilities,
/// RuntimeDefault seccomp), its volumes, its storage's and granted inputs'
/// connection details.
pub fn render_pod(valid: &ValidProduct<'_>, pipeline: &Pipeline, inputs: &[ResolvedInput], restart_policy: &str) -> PodTemplateSpec {
    let spec = &valid.product.spec;
    let product_ref = valid.product_ref();
    let mut wiring = Wiring::default();
    for storage in &spec.storage {
        let mount = pipeline.mounts.iter().find(|m| m.storage == storage.name);
        // Volumes are wired where mounted; buckets for every pipeline.
        if storage.kind == StorageKind::Volume && mount.is_none() {
            continue;
        }
        let w = storage::backend(storage.kind).wiring(&product_ref, storage, mount);
        wiring.volumes.extend(w.volumes);
        wiring.mounts.extend(w.mounts);
        wiring.env.extend(w.env);
    }
    let mut env: Vec<KubeEnvVar> = vec![
        storage::env("MESHPLANE_PRODUCT".into(), valid.name),
        storage::env("MESHPLANE_DOMAIN".into(), valid.domain_name),
        storage::env("MESHPLANE_DESCRIPTOR".into(), format!("{}/{}", valid.namespace, descriptor_name(valid.name))),
    ];
    env.extend(wiring.env);
    for input in inputs.iter().filter(|i| pipeline.inputs.contains(&i.name) && i.state == InputState::Granted) {
        let Some(ns) = &input.namespace else { continue };
        env.push(storage::env(storage::env_name(&["MESHPLANE_INPUT", &input.name, "NAMESPACE"]), ns.clone()));
        env.push(storage::env(storage::env_name(&["MESHPLANE_INPUT", &input.name, "PRODUCT"]), input.product.clone()));
        env.push(storage::env(
            storage::env_name(&["MESHPLANE_INPUT", &input.name, "DESCRIPTOR"]),
            format!("{ns}/{}", descriptor_name(&input.product)),
        ));
    }
    env.extend(pipeline.env.iter().map(|e| storage::env(e.name.clone(), e.value.clone())));
    let mut pod_labels = labels(valid, "pipeline");
    pod_labels.insert(keys::LABEL_PIPELINE.to_string(), pipeline.name.clone());
    PodTemplateSpec {
        metadata: Some(ObjectMeta { labels: Some(pod_labels), ..Default::default() }),
        spec: Some(PodSpec {
            service_account_name: Some(service_account_name(valid.name)),
            automount_service_account_token: Some(false),
            restart_policy: Some(restart_policy.into()),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(65532),
                run_as_group: Some(65532),
                fs_group: Some(65532),
                seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
                ..Default::default()
            }),
            containers: vec![Container {
                name: pipeline.name.clone(),
                image: Some(pipeline.image.clone()),
                command: (!pipeline.command.is_empty()).then(|| pipeline.command.clone()),
                args: (!pipeline.args.is_empty()).then(|| pipeline.args.clone()),
                env: Some(env),
                resources: pipeline.resources.as_ref().map(|r| ResourceRequirements {
                    requests: quantities(&r.requests),
                    limits: quantities(&r.limits),
                    ..Default::default()
                }),
                volume_mounts: (!wiring.mounts.is_empty()).then_some(wiring.mounts),
                security_context: Some(SecurityContext {
                    allow_privilege_escalation: Some(false),
                    run_as_non_root: Some(true),
                    capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Default::default() }),
                    seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            volumes: (!wiring.volumes.is_empty()).then_some(wiring.volumes),
            ..Default::default()
        }),
    }
}

pub fn render_pipelines(valid: &ValidProduct<'_>, inputs: &[ResolvedInput]) -> (Vec<CronJob>, Vec<Deployment>) {
    let mut cron_jobs = Vec::new();
    let mut deployments = Vec::new();
    for pipeline in &valid.product.spec.pipelines {
        let name = workload_name(valid.name, &pipeline.name);
        let mut workload_meta = meta(valid, name, "pipeline");
        workload_meta.labels.get_or_insert_default().insert(keys::LABEL_PIPELINE.into(), pipeline.name.clone());
        match pipeline.mode {
            PipelineMode::Batch => {
                let pod = render_pod(valid, pipeline, inputs, "Never");
                cron_jobs.push(CronJob {
                    metadata: workload_meta,
                    spec: Some(CronJobSpec {
                        schedule: pipeline.schedule.clone().unwrap_or_default(),
                        concurrency_policy: Some("Forbid".into()),
                        successful_jobs_history_limit: Some(3),
                        failed_jobs_history_limit: Some(3),
                        job_template: JobTemplateSpec {
                            // Jobs carry the pipeline's labels, so meshplane's
                            // cache sees them and reports their runs.
                            metadata: Some(ObjectMeta {
                                labels: pod.metadata.as_ref().and_then(|m| m.labels.clone()),
                                ..Default::default()
                            }),
                            spec: Some(JobSpec { backoff_limit: Some(2), template: pod, ..Default::default() }),
                        },
                        ..Default::default()
                    }),
                    ..Default::default()
                });
            }
            PipelineMode::Continuous => {
                let pod = render_pod(valid, pipeline, inputs, "Always");
                let mut selector = BTreeMap::from([(keys::LABEL_PRODUCT.to_string(), valid.name.to_string())]);
                selector.insert(keys::LABEL_PIPELINE.to_string(), pipeline.name.clone());
                deployments.push(Deployment {
                    metadata: workload_meta,
                    spec: Some(DeploymentSpec {
                        replicas: Some(pipeline.replicas),
                        selector: LabelSelector { match_labels: Some(selector), ..Default::default() },
                        template: pod,
                        ..Default::default()
                    }),
                    ..Default::default()
                });
            }
        }
    }
    (cron_jobs, deployments)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

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
