//! `DataDomain`: a business domain, and the isolated tenant meshplane gives it.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::{Condition, Subject};

/// The desired state of a DataDomain: who the domain's people are and what
/// its tenant gets.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "meshplane.dev",
    version = "v1alpha1",
    kind = "DataDomain",
    shortname = "dd",
    doc = "A business domain of the data mesh. meshplane gives each domain an isolated tenant: its own namespace (Pod Security `restricted`), RoleBindings of its owners, members and viewers to meshplane's domain roles, a ResourceQuota, a LimitRange and NetworkPolicies. Domain teams then declare DataProducts in that namespace.",
    category = "datamesh",
    status = "DataDomainStatus",
    printcolumn(name = "Namespace", type_ = "string", json_path = ".status.namespace", description = "The domain's namespace"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status", description = "Whether the tenant is fully provisioned"),
    printcolumn(name = "Products", type_ = "integer", json_path = ".status.dataProducts", description = "DataProducts in the domain"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp", description = "Time since creation"),
    validation = Rule::new("self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$') && size(self.metadata.name) <= 63")
        .message("metadata.name must be a DNS label: at most 63 lower-case letters, digits and '-', starting and ending with a letter or digit")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.__namespace__) == has(oldSelf.__namespace__) && (!has(self.__namespace__) || self.__namespace__ == oldSelf.__namespace__)")
        .message("spec.namespace is immutable: a domain cannot move to another namespace")
        .field_path(".namespace")
)]
pub struct DataDomainSpec {
    /// Human-readable name of the domain, shown in the catalog.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub display_name: Option<String>,

    /// What the domain is responsible for, shown in the catalog.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub description: Option<String>,

    /// Who owns the domain. Owners are bound to the `meshplane-domain-admin`
    /// ClusterRole in the domain's namespace: they manage DataProducts and
    /// read everything there, but cannot change the namespace, its quota,
    /// its network policies or its role bindings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub owners: Vec<Subject>,

    /// Domain team members, bound to `meshplane-domain-member`: they create
    /// and change DataProducts and read their workloads.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub members: Vec<Subject>,

    /// Read-only users of the domain, bound to `meshplane-domain-viewer`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub viewers: Vec<Subject>,

    /// The namespace meshplane creates for the domain. Defaults to the
    /// operator's namespace prefix (`--namespace-prefix`, default `dm-`)
    /// followed by the domain's name. meshplane never adopts a namespace it did
    /// not create. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub namespace: Option<String>,

    /// Resource limits of the domain's namespace, enforced by a ResourceQuota
    /// that domain teams cannot edit.
    #[serde(default)]
    pub quota: DomainQuota,

    /// Network isolation of the domain's namespace.
    #[serde(default)]
    pub network: DomainNetwork,

    /// StorageClasses that the domain's DataProducts may use. Empty means any
    /// class of the cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")))]
    pub storage_classes: Vec<String>,

    /// What happens to the domain's namespace when the domain is deleted.
    /// `Block` (default): deletion waits while DataProducts remain in the
    /// namespace, then removes the namespace. `Cascade`: the namespace is
    /// removed at once with every DataProduct in it.
    #[serde(default)]
    pub deletion_policy: DomainDeletionPolicy,
}

/// Resource limits of a domain's namespace.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DomainQuota {
    /// CPU the namespace's pods may request and be limited to, in total.
    #[serde(default = "default_cpu")]
    #[x_kube(validation = Rule::new("type(self) == int ? self >= 0 : isQuantity(self) && !quantity(self).isLessThan(quantity('0'))")
        .message("must be a non-negative quantity such as 8 or 500m"))]
    pub cpu: Quantity,

    /// Memory the namespace's pods may request and be limited to, in total.
    #[serde(default = "default_memory")]
    #[x_kube(validation = Rule::new("type(self) == int ? self >= 0 : isQuantity(self) && !quantity(self).isLessThan(quantity('0'))")
        .message("must be a non-negative quantity such as 32Gi"))]
    pub memory: Quantity,

    /// Storage that the namespace's PersistentVolumeClaims may request, in total.
    #[serde(default = "default_storage")]
    #[x_kube(validation = Rule::new("type(self) == int ? self >= 0 : isQuantity(self) && !quantity(self).isLessThan(quantity('0'))")
        .message("must be a non-negative quantity such as 500Gi"))]
    pub storage: Quantity,

    /// Number of PersistentVolumeClaims the namespace may hold.
    #[serde(default = "default_pvcs")]
    #[schemars(range(min = 0, max = 100000))]
    pub persistent_volume_claims: i32,

    /// Number of DataProducts the domain may hold.
    #[serde(default = "default_products")]
    #[schemars(range(min = 0, max = 100000))]
    pub data_products: i32,
}

fn default_cpu() -> Quantity {
    Quantity("8".into())
}
fn default_memory() -> Quantity {
    Quantity("32Gi".into())
}
fn default_storage() -> Quantity {
    Quantity("500Gi".into())
}
fn default_pvcs() -> i32 {
    20
}
fn default_products() -> i32 {
    50
}

impl Default for DomainQuota {
    fn default() -> Self {
        DomainQuota {
            cpu: default_cpu(),
            memory: default_memory(),
            storage: default_storage(),
            persistent_volume_claims: default_pvcs(),
            data_products: default_products(),
        }
    }
}

/// Network isolation of a domain's namespace.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DomainNetwork {
    /// `Strict` (default): pods accept traffic only from the same domain and
    /// from the platform's namespace, and may send it only to the same
    /// domain, to cluster DNS and to `egressCIDRs`. `Open`: no isolation.
    #[serde(default)]
    pub isolation: NetworkIsolation,

    /// Address ranges outside the cluster that pods of a `Strict` domain may
    /// reach (an object store, a database), in CIDR notation.
    #[serde(default, rename = "egressCIDRs", skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 43)))]
    #[x_kube(validation = Rule::new("self.all(c, isCIDR(c))").message("each entry must be a CIDR such as 10.1.0.0/16"))]
    pub egress_cidrs: Vec<String>,
}

/// How a domain's namespace is isolated on the network.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum NetworkIsolation {
    #[default]
    Strict,
    Open,
}

/// What deleting a DataDomain does to its namespace.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum DomainDeletionPolicy {
    #[default]
    Block,
    Cascade,
}

/// What meshplane observed and provisioned for a domain.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataDomainStatus {
    /// The namespace provisioned for the domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,

    /// How many DataProducts the domain's namespace holds, not counting those
    /// being deleted. During a burst of new products it is updated at most
    /// once every 15 seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_products: Option<i32>,

    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready` summarises; `NamespaceReady`, `AccessReady`, `QuotaReady` and
    /// `NetworkReady` report each part; `Reconciling` and `Stalled` follow kstatus.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
