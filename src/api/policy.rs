//! `GovernancePolicy`: the platform's federated governance, set once and
//! enforced in every selected domain by the API server itself.

// kube-derive takes one `printcolumn(...)` per column; clippy reads the repeated
// `type_ = "string"` inside them as duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::Condition;

/// The desired state of a GovernancePolicy.
#[derive(CustomResource, KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "meshplane.dev",
    version = "v1alpha1",
    kind = "GovernancePolicy",
    category = "datamesh",
    shortname = "gp",
    doc = "Rules every DataProduct in the selected domains must follow. meshplane compiles them into a ValidatingAdmissionPolicy and its binding, so the API server itself refuses (Enforce), warns about (Warn) or records (Audit) a violating manifest; the same rules, evaluated by meshplane, set each product's PolicyCompliant condition and drive `meshplane lint`.",
    status = "GovernancePolicyStatus",
    printcolumn(name = "Enforcement", type_ = "string", json_path = ".spec.enforcement", description = "Deny, warn or audit violations"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the admission objects are in place"
    ),
    printcolumn(
        name = "Violations",
        type_ = "integer",
        json_path = ".status.violations",
        description = "Products that violate the policy now"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp", description = "Time since creation")
)]
#[serde(rename_all = "camelCase")]
pub struct GovernancePolicySpec {
    /// The DataDomains the policy applies to, by their labels. Unset or empty:
    /// every domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain_selector: Option<LabelSelector>,

    /// `Enforce` refuses a violating DataProduct; `Warn` admits it with a
    /// warning the client prints; `Audit` admits it and records the violation
    /// (audit log, the product's `PolicyCompliant` condition, an Event).
    #[serde(default)]
    pub enforcement: Enforcement,

    /// The rules; each is off unless set.
    #[serde(default)]
    pub rules: Rules,
}

/// What the API server does with a violation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub enum Enforcement {
    #[default]
    Enforce,
    Warn,
    Audit,
}

/// The rules of a policy. Each is off unless set.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rules {
    /// Products must name an owner.
    #[serde(default, skip_serializing_if = "is_false")]
    pub require_owner: bool,

    /// Products must have a description.
    #[serde(default, skip_serializing_if = "is_false")]
    pub require_description: bool,

    /// Products must link their documentation.
    #[serde(default, skip_serializing_if = "is_false")]
    pub require_documentation: bool,

    /// A regular expression (RE2) that product names must match, such as `^[a-z]+(-[a-z]+)*$`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub name_pattern: Option<String>,

    /// Classification rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classification: Option<ClassificationRules>,

    /// Storage classes a product's Volumes may use. Empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 253)))]
    pub allowed_storage_classes: Vec<String>,

    /// The largest size one storage entry may ask for, such as 100Gi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("type(self) == int ? self > 0 : isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))")
        .message("must be a positive quantity such as 100Gi"))]
    pub max_storage_size: Option<Quantity>,

    /// Image registries pipelines may pull from, as prefixes of the image
    /// reference, such as `registry.example.com/`. Empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 253)))]
    pub allowed_registries: Vec<String>,

    /// Every pipeline must set CPU and memory limits.
    #[serde(default, skip_serializing_if = "is_false")]
    pub require_resource_limits: bool,

    /// A Stable product must declare `quality.freshness`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub require_freshness_for_stable: bool,

    /// A Deprecated product's sunset must be at least this many days ahead
    /// (counted from the day the policy is evaluated, in UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3650))]
    pub deprecation_notice_days: Option<i32>,
}

fn is_false(b: &bool) -> bool {
    !b
}

/// Rules about a product's classification.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClassificationRules {
    /// A product with `containsPII` must be Confidential or Restricted.
    #[serde(default, rename = "piiRequiresConfidential", skip_serializing_if = "is_false")]
    pub pii_requires_confidential: bool,

    /// A Restricted product must list its consumers explicitly.
    #[serde(default, skip_serializing_if = "is_false")]
    pub restricted_requires_consumers: bool,

    /// A Public product may not contain PII.
    #[serde(default, rename = "publicForbidsPII", skip_serializing_if = "is_false")]
    pub public_forbids_pii: bool,
}

/// What meshplane observed and produced for a policy.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GovernancePolicyStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// The ValidatingAdmissionPolicy and binding compiled from the policy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub admission_objects: Vec<String>,

    /// How many DataProducts violate the policy now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub violations: Option<i32>,

    /// `Ready`: the admission objects are in place.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
