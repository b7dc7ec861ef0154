//! Storage backends: one file per kind of storage a DataProduct can ask
//! for. A backend renders the kind's objects (pure), says how pipelines reach
//! them, and judges readiness from what the cluster shows. Adding a kind (a
//! database, a topic) is one new file and one line in [`backend`].

mod bucket;
mod volume;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{EnvVar, Event, Volume, VolumeMount};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::DynamicObject;
use kube::core::ApiResource;

use crate::api::product::{Mount, Storage, StorageKind};

pub use bucket::Bucket;
pub use volume::VolumeClaim;

/// The product a storage entry belongs to, as the backends need it.
#[derive(Clone, Debug)]
pub struct ProductRef<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub uid: &'a str,
    pub domain: &'a str,
    /// The storage class to use when the entry names none (the domain's
    /// first allowed class), if any.
    pub default_class: Option<&'a str>,
}

/// How a pipeline's pod reaches one storage entry.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Wiring {
    pub volumes: Vec<Volume>,
    pub mounts: Vec<VolumeMount>,
    pub env: Vec<EnvVar>,
}

/// Whether one storage entry is usable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageState {
    pub ready: bool,
    /// CamelCase reason when not ready.
    pub reason: &'static str,
    pub message: String,
}

/// How long new storage is given to become ready (a claim to bind) before a
/// backend asks the cluster why it is not: until then, waiting is normal, and
/// looking costs a request per pass.
pub const SETTLING: Duration = Duration::from_secs(10);

/// What a backend consults to explain storage that is not ready.
pub struct Lookup<'a> {
    /// A storage class of the cluster's, by name (from the cache).
    pub storage_class: &'a (dyn Fn(&str) -> Option<Arc<StorageClass>> + Sync),
    pub now: jiff::Timestamp,
}

/// What [`Backend::explain`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Explanation {
    /// Nothing more to say.
    Nothing,
    /// The storage is in this state after all.
    State(StorageState),
    /// The newest Event about this object says why (read it, then
    /// [`explained_by`]): `what` names the object to a reader ("claim").
    Events { kind: &'static str, what: &'static str, name: String },
}

/// `state`, explained by the newest Event about the object `name`.
pub fn explained_by(state: &StorageState, what: &str, name: &str, event: &Event) -> StorageState {
    let reason = event.reason.as_deref().unwrap_or_default();
    let message = event.message.as_deref().unwrap_or_default();
    StorageState { message: format!("{what} {name}: {reason}: {message}"), ..state.clone() }
}

/// One kind of storage.
pub trait Backend: Send + Sync {
    /// The API resources this kind writes; when the cluster does not serve
    /// them, the storage is `BackendNotInstalled` and nothing is written.
    fn api_resources(&self) -> Vec<ApiResource>;

    /// The objects one storage entry needs (pure).
    fn render(&self, product: &ProductRef<'_>, storage: &Storage) -> Vec<DynamicObject>;

    /// Volumes, mounts and environment that give a pipeline access (pure).
    fn wiring(&self, product: &ProductRef<'_>, storage: &Storage, mount: Option<&Mount>) -> Wiring;

    /// Secrets holding the storage's credentials, which consumers are granted.
    fn credentials(&self, product: &ProductRef<'_>, storage: &Storage) -> Vec<String>;

    /// Readiness from the current objects, in `render` order (pure).
    fn state(&self, storage: &Storage, current: &[Option<DynamicObject>]) -> StorageState;

    /// A closer look at storage that [`Backend::state`] found not ready: the
    /// state it is in after all (waiting by design is ready), or the object
    /// whose Events give Kubernetes' reason (pure). Storage younger than
    /// [`SETTLING`] is normally on its way: nothing more to say.
    fn explain(&self, lookup: &Lookup<'_>, state: &StorageState, current: &[Option<DynamicObject>]) -> Explanation;
}

/// The backend of a storage kind.
pub fn backend(kind: StorageKind) -> &'static dyn Backend {
    match kind {
        StorageKind::Volume => &VolumeClaim,
        StorageKind::Bucket => &Bucket,
    }
}

/// Environment variable names are upper case with underscores.
pub fn env_name(parts: &[&str]) -> String {
    parts.iter().map(|p| p.to_ascii_uppercase().replace(['-', '.'], "_")).collect::<Vec<_>>().join("_")
}

pub(crate) fn env(name: String, value: impl Into<String>) -> EnvVar {
    EnvVar { name, value: Some(value.into()), ..EnvVar::default() }
}

/// Metadata every storage object carries: name, namespace, meshplane's
/// labels and the product as controlling owner.
pub(crate) fn object_meta(product: &ProductRef<'_>, name: String, storage: &str) -> kube::api::ObjectMeta {
    use std::collections::BTreeMap;

    use crate::keys;
    kube::api::ObjectMeta {
        name: Some(name),
        namespace: Some(product.namespace.to_string()),
        labels: Some(BTreeMap::from([
            (keys::LABEL_MANAGED_BY.to_string(), keys::MANAGED_BY.to_string()),
            (keys::LABEL_DOMAIN.to_string(), product.domain.to_string()),
            (keys::LABEL_PRODUCT.to_string(), product.name.to_string()),
            (keys::LABEL_COMPONENT.to_string(), "storage".to_string()),
            (keys::LABEL_STORAGE.to_string(), storage.to_string()),
        ])),
        owner_references: Some(vec![crate::plumbing::controller_owner::<crate::api::DataProduct>(product.name, product.uid)]),
        ..Default::default()
    }
}
