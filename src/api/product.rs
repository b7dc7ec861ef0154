//! `DataProduct`: a data product owned by a domain team, declared in its
//! domain's namespace: its storage, pipelines, output ports, inputs
//! (lineage) and who may consume it.

// kube-derive takes one `printcolumn(...)` per column; clippy reads the repeated
// `type_ = "string"` inside them as duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::{Condition, Subject};

/// The desired state of a DataProduct.
#[derive(CustomResource, KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "meshplane.dev",
    version = "v1alpha1",
    kind = "DataProduct",
    namespaced,
    shortname = "dp",
    category = "datamesh",
    doc = "A data product of a domain: owned by a domain team, declared in the domain's namespace, published in the catalog. meshplane provisions its storage, pipelines and access grants, and resolves its inputs (lineage).",
    status = "DataProductStatus",
    printcolumn(name = "Domain", type_ = "string", json_path = ".status.domain", description = "The owning DataDomain"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status", description = "Whether the product is fully provisioned"),
    printcolumn(name = "Classification", type_ = "string", json_path = ".spec.classification", description = "Sensitivity of the product's data"),
    printcolumn(name = "Lifecycle", type_ = "string", json_path = ".spec.lifecycle", description = "Maturity of the product"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp", description = "Time since creation"),
    validation = Rule::new("self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$') && size(self.metadata.name) <= 30")
        .message("metadata.name must be a DNS label of at most 30 characters (it prefixes the names of the product's objects)"),
    validation = Rule::new("!has(self.spec.inputs) || self.spec.inputs.all(i, has(i.domain) || i.product != self.metadata.name)")
        .message("spec.inputs: a product cannot be its own input")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.lifecycle != 'Deprecated' || has(self.sunset)")
        .message("a Deprecated product needs spec.sunset, the date it goes away")
        .field_path(".sunset"),
    validation = Rule::new("!has(self.pipelines) || self.pipelines.all(p, !has(p.mounts) || p.mounts.all(m, has(self.storage) && self.storage.exists(s, s.name == m.storage && s.kind == 'Volume')))")
        .message("spec.pipelines[].mounts[].storage must name a Volume in spec.storage")
        .field_path(".pipelines"),
    validation = Rule::new("!has(self.pipelines) || self.pipelines.all(p, !has(p.inputs) || p.inputs.all(i, has(self.inputs) && self.inputs.exists(x, x.name == i)))")
        .message("spec.pipelines[].inputs must name entries of spec.inputs")
        .field_path(".pipelines"),
    validation = Rule::new("!has(self.outputPorts) || self.outputPorts.all(o, !has(o.storage) || (has(self.storage) && self.storage.exists(s, s.name == o.storage)))")
        .message("spec.outputPorts[].storage must name an entry of spec.storage")
        .field_path(".outputPorts")
)]
pub struct DataProductSpec {
    /// The team or person accountable for the product (a name or an e-mail address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub owner: Option<String>,

    /// What the product contains and what it is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub description: Option<String>,

    /// A link to the product's documentation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub documentation: Option<String>,

    /// Maturity of the product: `Experimental` (default), `Stable` or
    /// `Deprecated` (which requires `sunset`).
    #[serde(default)]
    pub lifecycle: Lifecycle,

    /// The date (YYYY-MM-DD) a Deprecated product goes away.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"), length(max = 10))]
    pub sunset: Option<String>,

    /// How sensitive the product's data is: `Public`, `Internal` (default),
    /// `Confidential` or `Restricted`.
    #[serde(default)]
    pub classification: Classification,

    /// Whether the product holds personally identifiable information.
    #[serde(default, rename = "containsPII")]
    pub contains_pii: bool,

    /// Free-form keywords for catalog search.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 63)))]
    pub tags: Vec<String>,

    /// Where the product keeps its data. Each entry becomes a
    /// PersistentVolumeClaim (`Volume`) or a COSI BucketClaim (`Bucket`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub storage: Vec<Storage>,

    /// The jobs that produce the product's data: a `schedule` makes a
    /// CronJob, `mode: Continuous` a Deployment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub pipelines: Vec<Pipeline>,

    /// Upstream data products this one reads: its lineage. An input from
    /// another domain is usable only once that product lists this domain
    /// among its consumers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub inputs: Vec<Input>,

    /// What consumers read: each port names its format, its backing storage
    /// and its schema.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub output_ports: Vec<OutputPort>,

    /// Who may read the product's output ports.
    #[serde(default)]
    pub access: Access,

    /// Service levels the product promises.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<Quality>,
}

/// Maturity of a data product.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum Lifecycle {
    #[default]
    Experimental,
    Stable,
    Deprecated,
}

/// Sensitivity of a data product's data, from least to most sensitive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
pub enum Classification {
    Public,
    #[default]
    Internal,
    Confidential,
    Restricted,
}

/// One place where the product keeps data.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.kind != 'Volume' || has(self.size)").message("size is required for a Volume").field_path(".size")
)]
pub struct Storage {
    /// Name of the storage, unique in the product; it names the claim `<product>-<name>`.
    #[schemars(length(min = 1, max = 20), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,

    /// `Volume` (a PersistentVolumeClaim) or `Bucket` (a COSI BucketClaim and BucketAccess).
    pub kind: StorageKind,

    /// Capacity of a Volume, such as 10Gi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("type(self) == int ? self > 0 : isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))")
        .message("must be a positive quantity such as 10Gi"))]
    pub size: Option<Quantity>,

    /// StorageClass of a Volume, or BucketClass of a Bucket. For a Volume it
    /// must be one the domain allows; unset means the domain's first allowed
    /// class, or the cluster's default class when the domain allows any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub storage_class: Option<String>,

    /// BucketAccessClass of a Bucket's credentials; defaults to `storageClass`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub bucket_access_class: Option<String>,

    /// What deleting the product does to this storage: `Retain` (default)
    /// keeps the claim and its data, detached and labelled
    /// `meshplane.dev/orphaned`; `Delete` removes them.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// Kinds of storage meshplane provisions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum StorageKind {
    Volume,
    Bucket,
}

/// What deleting a product does to its storage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum DeletionPolicy {
    #[default]
    Retain,
    Delete,
}

/// A job that produces the product's data.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.mode == 'Continuous' ? !has(self.schedule) : has(self.schedule)")
        .message("a Batch pipeline needs a schedule; a Continuous pipeline must not have one")
        .field_path(".schedule")
)]
pub struct Pipeline {
    /// Name of the pipeline, unique in the product; it names the CronJob or
    /// Deployment `<product>-<name>`.
    #[schemars(length(min = 1, max = 20), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,

    /// Container image that runs the pipeline.
    #[schemars(length(min = 1, max = 512))]
    pub image: String,

    /// Entrypoint of the container; the image's own when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub command: Vec<String>,

    /// Arguments to the entrypoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub args: Vec<String>,

    /// Environment variables of the container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub env: Vec<EnvVar>,

    /// CPU and memory of the container; the domain's defaults apply when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,

    /// `Batch` (default): runs on `schedule` as a CronJob. `Continuous`: a
    /// long-running Deployment (streaming).
    #[serde(default)]
    pub mode: PipelineMode,

    /// Cron schedule of a Batch pipeline, such as `0 3 * * *` or `@hourly`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 128),
        regex(pattern = r"^(@(annually|yearly|monthly|weekly|daily|midnight|hourly)|([0-9*/,?A-Za-z-]+ +){4}[0-9*/,?A-Za-z-]+)$")
    )]
    pub schedule: Option<String>,

    /// Replicas of a Continuous pipeline.
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: i32,

    /// The product's Volumes this pipeline mounts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub mounts: Vec<Mount>,

    /// Names of entries in `spec.inputs` this pipeline reads; their
    /// connection details are injected as environment variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(max = 40)))]
    pub inputs: Vec<String>,
}

fn one() -> i32 {
    1
}

/// How a pipeline runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum PipelineMode {
    #[default]
    Batch,
    Continuous,
}

/// An environment variable.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnvVar {
    /// Name of the variable.
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"))]
    pub name: String,
    /// Value of the variable.
    #[serde(default)]
    #[schemars(length(max = 4096))]
    pub value: String,
}

/// CPU and memory of a pipeline's container.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    /// Guaranteed amounts, such as `{cpu: 250m, memory: 256Mi}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<CpuMemory>,
    /// Upper bounds, such as `{cpu: "1", memory: 1Gi}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<CpuMemory>,
}

/// An amount of CPU and memory.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuMemory {
    /// CPU, such as 500m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("type(self) == int ? self > 0 : isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))")
        .message("must be a positive quantity such as 500m"))]
    pub cpu: Option<Quantity>,
    /// Memory, such as 512Mi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("type(self) == int ? self > 0 : isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))")
        .message("must be a positive quantity such as 512Mi"))]
    pub memory: Option<Quantity>,
}

/// A Volume mounted into a pipeline.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mount {
    /// Name of a `Volume` entry of `spec.storage`.
    #[schemars(length(min = 1, max = 20))]
    pub storage: String,
    /// Absolute path in the container.
    #[schemars(length(min = 1, max = 1024), regex(pattern = r"^/"))]
    pub path: String,
    /// Mount read-only.
    #[serde(default)]
    pub read_only: bool,
}

/// An upstream data product.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Input {
    /// Local name of the input, unique in the product; pipelines refer to it.
    #[schemars(length(min = 1, max = 40), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,
    /// DataDomain of the upstream product; this product's own domain when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub domain: Option<String>,
    /// Name of the upstream DataProduct.
    #[schemars(length(min = 1, max = 30), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub product: String,
    /// Output port of the upstream product that is read; any when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub port: Option<String>,
}

/// A way consumers read the product.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutputPort {
    /// Name of the port, unique in the product.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,
    /// Data format, such as Parquet, Delta, Iceberg, CSV, JSON, Avro or a table or topic.
    #[schemars(length(min = 1, max = 64))]
    pub format: String,
    /// Entry of `spec.storage` that holds the port's data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 20))]
    pub storage: Option<String>,
    /// What the port offers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub description: Option<String>,
    /// Fields of the port's records.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub schema: Vec<SchemaField>,
}

/// One field of an output port's schema.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SchemaField {
    /// Field name.
    #[schemars(length(min = 1, max = 128))]
    pub name: String,
    /// Logical type: string, integer, number, boolean, date, timestamp, binary, array or object.
    #[serde(rename = "type")]
    pub type_: FieldType,
    /// What the field means.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,
    /// Whether the field holds personally identifiable information.
    #[serde(default)]
    pub pii: bool,
}

/// Logical types of schema fields (the Open Data Product Standard's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    String,
    Integer,
    Number,
    Boolean,
    Date,
    Timestamp,
    Binary,
    Array,
    Object,
}

/// Who may read the product.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Access {
    /// Domains or RBAC subjects granted read access to the product's
    /// descriptor, output ports and credentials. Nothing is granted implicitly,
    /// except to the product's own domain.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub consumers: Vec<Consumer>,
}

/// One consumer: a whole domain (its pipelines and members) or one subject.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[x_kube(
    validation = Rule::new("has(self.domain) != has(self.subject)").message("a consumer names exactly one of domain or subject")
)]
pub struct Consumer {
    /// A DataDomain whose pipelines and members may read the product.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub domain: Option<String>,
    /// A user, group or service account that may read the product.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Subject>,
}

/// Service levels of a product.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Quality {
    /// The newest successful pipeline run may be at most this old, such as
    /// `24h`, `90m` or `20s`. Reported by the `Fresh` condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[1-9][0-9]{0,6}(s|m|h|d)$"), length(max = 8))]
    pub freshness: Option<String>,
}

/// What meshplane observed and provisioned for a data product.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataProductStatus {
    /// `Pending`, `Ready`, `Stalled` or `Deleting`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,

    /// The DataDomain whose namespace holds the product.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,

    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready` summarises; `StorageReady`, `PipelinesReady`, `AccessReady`,
    /// `InputsReady` and `Fresh` report each part; `Reconciling` and
    /// `Stalled` follow kstatus.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// Each pipeline's runs, read from the cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pipelines: Vec<PipelineStatus>,

    /// Each input, resolved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<InputStatus>,

    /// The objects meshplane provisioned for the product.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<ResourceRef>,
}

/// A pipeline's runs.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineStatus {
    pub name: String,
    /// `CronJob` or `Deployment`.
    pub kind: String,
    /// When the last run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<String>,
    /// When the last successful run finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_time: Option<String>,
    /// `Succeeded`, `Failed` or `Running` for the newest run; `Available` or
    /// `Unavailable` for a Continuous pipeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_result: Option<String>,
}

/// An input, resolved.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InputStatus {
    pub name: String,
    pub domain: String,
    pub product: String,
    /// `Granted`, `NotFound` or `AccessDenied`.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// An object meshplane provisioned.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ResourceRef {
    pub kind: String,
    pub name: String,
}
