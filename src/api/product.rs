//! `DataProduct`: a data product owned by a domain team, declared in its
//! domain's namespace.
//!
//! This first version carries the product's identity and descriptive
//! metadata; storage, pipelines, ports and access grants follow.

// kube-derive takes one `printcolumn(...)` per column; clippy reads the repeated
// `type_ = "string"` inside them as duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::Condition;

/// The desired state of a DataProduct.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "meshplane.dev",
    version = "v1alpha1",
    kind = "DataProduct",
    namespaced,
    shortname = "dp",
    doc = "A data product of a domain: owned by a domain team, declared in the domain's namespace, published in the catalog.",
    category = "datamesh",
    status = "DataProductStatus",
    printcolumn(
        name = "Domain",
        type_ = "string",
        json_path = ".status.domain",
        description = "The owning DataDomain"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the product is fully provisioned"
    ),
    printcolumn(
        name = "Classification",
        type_ = "string",
        json_path = ".spec.classification",
        description = "Sensitivity of the product's data"
    ),
    printcolumn(
        name = "Lifecycle",
        type_ = "string",
        json_path = ".spec.lifecycle",
        description = "Maturity of the product"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp",
        description = "Time since creation"
    )
)]
#[serde(rename_all = "camelCase")]
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

    /// Maturity of the product: `Experimental` (default), `Stable` or `Deprecated`.
    #[serde(default)]
    pub lifecycle: Lifecycle,

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
}

/// Maturity of a data product.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum Lifecycle {
    #[default]
    Experimental,
    Stable,
    Deprecated,
}

/// Sensitivity of a data product's data, from least to most sensitive.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
pub enum Classification {
    Public,
    #[default]
    Internal,
    Confidential,
    Restricted,
}

/// What meshplane observed and provisioned for a data product.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataProductStatus {
    /// The DataDomain whose namespace holds the product.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,

    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready` summarises; `Reconciling` and `Stalled` follow kstatus.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
