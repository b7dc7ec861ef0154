//! `DataPlatform`: a data engine the platform team registers (a PostgreSQL
//! warehouse first), on which domains' products keep their data.

// kube-derive takes one `printcolumn(...)` per column; clippy reads the repeated
// `type_ = "string"` inside them as duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::Condition;

/// The desired state of a DataPlatform.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "meshplane.dev",
    version = "v1alpha1",
    kind = "DataPlatform",
    category = "datamesh",
    shortname = "dpl",
    doc = "A data engine registered by the platform team, on which DataProducts of the allowed domains keep their data. meshplane connects with the admin login the platform team provides and reports whether the engine is reachable and the login holds the privileges meshplane needs.",
    status = "DataPlatformStatus",
    printcolumn(name = "Engine", type_ = "string", json_path = ".spec.engine", description = "The kind of engine"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether meshplane reaches the engine with the privileges it needs"
    ),
    printcolumn(name = "Version", type_ = "string", json_path = ".status.version", description = "The engine's version"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp", description = "Time since creation")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.engine != 'Postgres' || has(self.postgres)")
        .message("spec.postgres is required when spec.engine is Postgres")
        .field_path(".postgres")
)]
pub struct DataPlatformSpec {
    /// The kind of engine.
    pub engine: Engine,

    /// How to reach a `Postgres` engine. Required when `engine` is `Postgres`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresEndpoint>,

    /// The Secret, in meshplane's own namespace, holding the admin login
    /// meshplane uses on the engine: keys `username` and `password`. For
    /// PostgreSQL the role needs LOGIN, CREATEROLE and CREATE on the
    /// database; it must not need to be a superuser.
    pub admin_secret_ref: SecretRef,

    /// The DataDomains whose products may keep data here, by their labels.
    /// Unset or empty: every domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain_selector: Option<LabelSelector>,
}

/// The kinds of engine meshplane provisions on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub enum Engine {
    /// A PostgreSQL server (version 13 or later): a warehouse of schemas and
    /// tables.
    Postgres,
}

/// Where a PostgreSQL server listens.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PostgresEndpoint {
    /// Host name or IP address.
    #[schemars(length(min = 1, max = 253))]
    pub host: String,

    /// TCP port.
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,

    /// The database products' schemas are made in.
    #[schemars(length(min = 1, max = 63))]
    pub database: String,

    /// How the connection is secured. `Disable`: plain TCP, for an engine
    /// reached over a network only the platform uses (loopback, a private
    /// link).
    #[serde(default)]
    pub ssl_mode: SslMode,
}

fn default_port() -> u16 {
    5432
}

/// How a connection to the engine is secured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub enum SslMode {
    /// Plain TCP.
    #[default]
    Disable,
}

/// A Secret in meshplane's own namespace, by name.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// What meshplane observed of the engine.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataPlatformStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// The engine's version, as it reports it (`PostgreSQL 15.18`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,

    /// `Ready`: meshplane reaches the engine with its admin login, which
    /// holds the privileges it needs. Otherwise the reason says why:
    /// `SecretNotFound`, `Unreachable`, `AuthenticationFailed`,
    /// `MissingPrivilege`, `InvalidSpec`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
