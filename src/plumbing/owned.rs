//! What the caches keep of a child meshplane applies: a 64-bit digest of the
//! fields meshplane's own field manager set, next to the few metadata fields
//! the controllers look up (name, namespace, uid, resource version, owner
//! references, creation, deletion).
//!
//! The applier compares what it would write with what the cluster holds
//! (see [`contains`]), and that comparison only ever reads the
//! fields meshplane writes. Everything else on a child (the API server's
//! defaults, status, other managers' fields) is dropped as the watch delivers
//! it, and of meshplane's fields only their [`digest`] is kept: eight bytes
//! where the object as a struct, or even its fields as text, takes
//! kilobytes.
//! Which fields are meshplane's comes from the object's managedFields
//! (server-side apply records them per manager). A kind whose served fields a
//! controller reads keeps those, and meshplane's, as text ([`Served`]: a
//! claim's spec and status).
//!
//! A field another manager took over (a forced apply, a `kubectl edit`) is no
//! longer in meshplane's set, so the digest differs, the applier reads the
//! child and finds the field missing, and the next apply restores it, which
//! is how the applier notices the conflict.

use std::borrow::Cow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use super::compare::{contains, insert, is_zero, pointer};
use super::quantity::parse_quantity;
use crate::keys::{self, granting_fields};

/// A child kind as its cache keeps it (see the module docs).
pub struct Owned<K> {
    metadata: ObjectMeta,
    fields: Fields,
    kind: PhantomData<fn() -> K>,
}

/// What an [`Owned`] keeps of meshplane's fields.
#[derive(Clone, Debug)]
enum Fields {
    /// A kind with [`Served`] fields: those and meshplane's, as compact JSON
    /// text, since a controller reads them.
    Text(Box<str>),
    /// Any other kind: only a [`digest`] of meshplane's fields, which is all
    /// the applier compares (8 bytes instead of some 700 of text).
    Digest(u64),
}

/// Whether a cached child holds what meshplane would write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holds {
    Yes,
    No,
    /// The cache kept a digest, and it differs from the desired object's:
    /// either a field differs, or the API server wrote a value in another
    /// form ("1000m" for "1"). Only the object as served can tell.
    Unknown {
        desired: u64,
        cached: u64,
    },
}

impl<K> Clone for Owned<K> {
    fn clone(&self) -> Self {
        Owned { metadata: self.metadata.clone(), fields: self.fields.clone(), kind: PhantomData }
    }
}

impl<K: Resource<DynamicType = ()> + Served> fmt::Debug for Owned<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(&format!("Owned<{}>", K::kind(&()))).field("metadata", &self.metadata).field("fields", &self.fields).finish()
    }
}

impl<K: Resource<DynamicType = ()> + Served> Resource for Owned<K> {
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        K::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        K::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        K::version(dt)
    }
    fn api_version(dt: &()) -> Cow<'_, str> {
        K::api_version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        K::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// The metadata fields the controllers look up, kept typed rather than
/// compared (the applier compares owner references on their own).
const LOOKED_UP: [&str; 7] = ["name", "namespace", "uid", "resourceVersion", "ownerReferences", "creationTimestamp", "deletionTimestamp"];

impl<K: Resource<DynamicType = ()> + Served> Owned<K> {
    /// Keeps of `object` (as the API server serves it) what meshplane set.
    pub fn from_value(object: Value) -> Result<Self, serde_json::Error> {
        let (metadata, fields) = Self::split(object)?;
        let fields = if K::SERVED.is_empty() {
            Fields::Digest(digest(&fields))
        } else {
            Fields::Text(serde_json::to_string(&fields)?.into_boxed_str())
        };
        Ok(Owned { metadata, fields, kind: PhantomData })
    }

    /// `object`'s looked-up metadata, and its fields that meshplane set
    /// (with the served ones, for a [`Served`] kind).
    fn split(mut object: Value) -> Result<(ObjectMeta, Value), serde_json::Error> {
        let body = object.as_object_mut().ok_or_else(|| serde::de::Error::custom("an object must be a JSON object"))?;
        let managed = body.get_mut("metadata").and_then(Value::as_object_mut).and_then(|m| m.remove("managedFields"));
        let ours = own_fields(managed.as_ref());
        let looked_up = take_looked_up(body);
        let served: Vec<(String, Value)> = K::SERVED.iter().filter_map(|f| Some((f.to_string(), body.remove(*f)?))).collect();
        let granting: Vec<(&[&str], Value)> =
            granting_fields(&K::kind(&())).iter().filter_map(|path| Some((*path, pointer(&object, path)?.clone()))).collect();
        if ours.as_object().is_some_and(Map::is_empty) {
            // Not a field of it is meshplane's (`{}` would mean all of it).
            object = Value::Object(Map::new());
        } else {
            retain(&mut object, &ours);
        }
        // Entries of a granting list that meshplane did not set still count
        // as the list's: whoever added them widened someone's access.
        for (path, value) in granting {
            if !is_zero(&value) && pointer(&object, path) != Some(&value) {
                insert(&mut object, path, value);
            }
        }
        if let Some(body) = object.as_object_mut() {
            body.extend(served);
        }
        Ok((serde_json::from_value(Value::Object(looked_up))?, object))
    }

    /// The object as meshplane's fields make it up: what
    /// [`contains`] compares a desired object with. A kind
    /// kept as a digest has only its looked-up metadata here: read it whole
    /// with [`Owned::comparable`].
    pub fn current(&self) -> Result<Value, serde_json::Error> {
        let fields = match &self.fields {
            Fields::Text(text) => serde_json::from_str(text)?,
            Fields::Digest(_) => Value::Object(Map::new()),
        };
        Self::assemble(&self.metadata, fields)
    }

    fn assemble(metadata: &ObjectMeta, mut object: Value) -> Result<Value, serde_json::Error> {
        let looked_up = serde_json::to_value(metadata)?;
        if let (Some(object), Value::Object(looked_up)) = (object.as_object_mut(), looked_up) {
            object.insert("apiVersion".into(), K::api_version(&()).into());
            object.insert("kind".into(), K::kind(&()).into());
            let meta = object.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
            if let Some(meta) = meta.as_object_mut() {
                meta.extend(looked_up);
            }
        }
        Ok(object)
    }

    /// `object` as the API server serves it, made up of meshplane's fields
    /// like [`Owned::current`] (for a kind kept as a digest, what the applier
    /// reads when the digest cannot decide).
    pub fn comparable(object: Value) -> Result<Value, serde_json::Error> {
        let (metadata, fields) = Self::split(object)?;
        Self::assemble(&metadata, fields)
    }

    /// Whether this child holds every field of `desired` (what meshplane
    /// would apply) with an equal value.
    pub fn holds(&self, desired: &Value) -> Result<Holds, serde_json::Error> {
        let Fields::Digest(cached) = self.fields else {
            return Ok(if contains(&self.current()?, desired) { Holds::Yes } else { Holds::No });
        };
        if let Some(owners) = desired.pointer("/metadata/ownerReferences")
            && !contains(&serde_json::to_value(&self.metadata.owner_references)?, owners)
        {
            return Ok(Holds::No);
        }
        let mut desired = desired.clone();
        if let Some(body) = desired.as_object_mut() {
            take_looked_up(body);
        }
        let desired = digest(&desired);
        Ok(if desired == cached { Holds::Yes } else { Holds::Unknown { desired, cached } })
    }
}

/// Takes out of an object what is not compared as one of its fields: its
/// apiVersion and kind, and the metadata the controllers look up, which is
/// returned (it stays typed; the rest of the metadata, such as labels and
/// annotations, is compared like any other field).
fn take_looked_up(object: &mut Map<String, Value>) -> Map<String, Value> {
    object.remove("apiVersion");
    object.remove("kind");
    let mut looked_up = Map::new();
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        for key in LOOKED_UP {
            if let Some(value) = meta.remove(key) {
                looked_up.insert(key.to_string(), value);
            }
        }
    }
    looked_up
}

/// A 64-bit digest of `value` as [`contains`] compares it:
/// members with a zero value are left out (they match absent ones), numbers
/// count by their value, and so do strings that are quantities ("1Gi" and
/// "1024Mi" digest alike). Two values that digest alike are equal to the
/// applier; two that do not may still be (a member present on one side
/// only), which the applier settles by reading the object.
pub fn digest(value: &Value) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    feed(value, &mut hasher);
    hasher.finish()
}

fn feed(value: &Value, h: &mut impl Hasher) {
    match value {
        Value::Null => 0u8.hash(h),
        Value::Bool(b) => (1u8, b).hash(h),
        Value::Number(n) => (2u8, n.as_f64().unwrap_or(f64::NAN).to_bits()).hash(h),
        Value::String(s) => match parse_quantity(s) {
            // Rounded as `contains` compares quantities (to a few ulps).
            Some(q) => (3u8, format!("{q:.12e}")).hash(h),
            None => (4u8, s).hash(h),
        },
        Value::Array(items) => {
            (5u8, items.len()).hash(h);
            items.iter().for_each(|item| feed(item, h));
        }
        Value::Object(members) => {
            6u8.hash(h);
            let mut members: Vec<_> = members.iter().filter(|(_, v)| !left_out(v)).collect();
            members.sort_unstable_by_key(|(k, _)| *k);
            members.len().hash(h);
            for (key, member) in members {
                key.hash(h);
                feed(member, h);
            }
        }
    }
}

/// Whether [`digest`] leaves a member out: a zero value, as
/// [`contains`] matches it with an absent one, but for `false`.
/// A `false` meshplane applies is one the API server keeps (`*bool` fields:
/// `automountServiceAccountToken`, `allowPrivilegeEscalation`), and when
/// another writer turns it on, meshplane's fields lose it: the digest must
/// then differ, so the applier looks.
fn left_out(value: &Value) -> bool {
    match value {
        Value::Bool(_) => false,
        Value::Object(members) => members.values().all(left_out),
        Value::Array(items) => items.is_empty(),
        other => is_zero(other),
    }
}

impl<'de, K: Resource<DynamicType = ()> + Served> Deserialize<'de> for Owned<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Owned::from_value(Value::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

/// The top-level fields of a child kind that [`Owned`] keeps whole, as the
/// API server serves them, because a controller reads them: a claim's phase,
/// and its class as the API server defaulted it.
pub trait Served {
    const SERVED: &'static [&'static str] = &[];
}

impl Served for k8s_openapi::api::core::v1::PersistentVolumeClaim {
    const SERVED: &'static [&'static str] = &["spec", "status"];
}

macro_rules! only_meshplanes {
    ($($kind:ty),*) => { $(impl Served for $kind {})* };
}

only_meshplanes!(
    k8s_openapi::api::rbac::v1::RoleBinding,
    k8s_openapi::api::rbac::v1::Role,
    k8s_openapi::api::networking::v1::NetworkPolicy,
    k8s_openapi::api::core::v1::LimitRange,
    k8s_openapi::api::core::v1::ServiceAccount,
    k8s_openapi::api::core::v1::ConfigMap,
    k8s_openapi::api::batch::v1::CronJob
);

/// The union of meshplane's managedFields entries (its applies, and its
/// few plain writes such as a released claim's labels).
fn own_fields(managed: Option<&Value>) -> Value {
    let mut set = Value::Object(Map::new());
    for entry in managed.and_then(Value::as_array).into_iter().flatten() {
        if entry.get("manager").and_then(Value::as_str) == Some(keys::FIELD_MANAGER)
            && let Some(fields) = entry.get("fieldsV1")
        {
            union(&mut set, fields);
        }
    }
    set
}

fn union(into: &mut Value, from: &Value) {
    if let (Some(into), Some(from)) = (into.as_object_mut(), from.as_object()) {
        for (key, child) in from {
            union(into.entry(key.clone()).or_insert_with(|| Value::Object(Map::new())), child);
        }
    }
}

/// Removes from `value` every field that `set` (a managedFields `fieldsV1`
/// set) does not name. A member with no children in the set is kept whole
/// (a leaf, or an atomic list or map); list items are matched by key
/// (`k:`), by value (`v:`) or by index (`i:`).
pub fn retain(value: &mut Value, set: &Value) {
    let Some(set) = set.as_object() else { return };
    if set.is_empty() {
        return; // `{}`: the member is owned whole
    }
    match value {
        Value::Object(fields) => fields.retain(|name, child| match set.get(&format!("f:{name}")) {
            Some(child_set) => {
                retain(child, child_set);
                true
            }
            None => false,
        }),
        Value::Array(items) => {
            let mut index = 0;
            items.retain_mut(|item| {
                let found = item_set(set, item, index);
                index += 1;
                match found {
                    Some(child_set) => {
                        retain(item, child_set);
                        true
                    }
                    None => false,
                }
            });
        }
        _ => {}
    }
}

/// The part of a list's set that names `item` (at `index`), if any.
fn item_set<'a>(set: &'a Map<String, Value>, item: &Value, index: usize) -> Option<&'a Value> {
    static EMPTY: std::sync::LazyLock<Value> = std::sync::LazyLock::new(|| Value::Object(Map::new()));
    set.iter().find_map(|(key, child)| {
        if let Some(keys) = key.strip_prefix("k:") {
            let keys: Map<String, Value> = serde_json::from_str(keys).ok()?;
            keys.iter().all(|(k, v)| item.get(k) == Some(v)).then_some(child)
        } else if let Some(v) = key.strip_prefix("v:") {
            (serde_json::from_str::<Value>(v).ok()? == *item).then_some(&*EMPTY)
        } else if let Some(i) = key.strip_prefix("i:") {
            (i.parse::<usize>().ok()? == index).then_some(child)
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::CronJob;
    use serde_json::json;

    fn served() -> Value {
        json!({
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": {
                "name": "orders-nightly", "namespace": "sales", "uid": "u-1", "resourceVersion": "42",
                "creationTimestamp": "2026-11-29T00:00:00Z", "generation": 3,
                "labels": {"app.kubernetes.io/managed-by": "meshplane", "team": "added-by-someone"},
                "ownerReferences": [{"apiVersion": "meshplane.io/v1alpha1", "kind": "DataProduct", "name": "orders", "uid": "p-1", "controller": true}],
                "managedFields": [
                    {"manager": "meshplane", "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1": {
                        "f:metadata": {"f:labels": {"f:app.kubernetes.io/managed-by": {}}, "f:ownerReferences": {"k:{\"uid\":\"p-1\"}": {}}},
                        "f:spec": {"f:schedule": {}, "f:jobTemplate": {"f:spec": {"f:template": {"f:spec": {
                            "f:containers": {"k:{\"name\":\"run\"}": {".": {}, "f:name": {}, "f:image": {}, "f:args": {},
                                "f:env": {"k:{\"name\":\"A\"}": {".": {}, "f:name": {}, "f:value": {}}}}},
                            "f:restartPolicy": {}
                        }}}}}
                    }},
                    {"manager": "kubectl-edit", "operation": "Update", "fieldsType": "FieldsV1", "fieldsV1": {
                        "f:metadata": {"f:labels": {"f:team": {}}},
                        "f:spec": {"f:jobTemplate": {"f:spec": {"f:template": {"f:spec": {"f:containers": {
                            "k:{\"name\":\"run\"}": {"f:env": {"k:{\"name\":\"B\"}": {".": {}, "f:name": {}, "f:value": {}}}}
                        }}}}}}
                    }}
                ]
            },
            "spec": {
                "schedule": "0 3 * * *", "concurrencyPolicy": "Allow", "suspend": false,
                "jobTemplate": {"spec": {"backoffLimit": 6, "template": {"spec": {
                    "containers": [
                        {"name": "run", "image": "busybox", "args": ["a", "b"], "terminationMessagePath": "/dev/termination-log",
                         "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
                        {"name": "sidecar", "image": "proxy"}
                    ],
                    "restartPolicy": "OnFailure", "dnsPolicy": "ClusterFirst"
                }}}}
            },
            "status": {"lastScheduleTime": "2026-11-29T03:00:00Z"}
        })
    }

    #[test]
    fn only_meshplanes_fields_are_kept() {
        let owned = Owned::<CronJob>::from_value(served()).unwrap();
        let current = Owned::<CronJob>::comparable(served()).unwrap();
        assert_eq!(
            current["spec"],
            json!({"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": {"spec": {
                "containers": [{"name": "run", "image": "busybox", "args": ["a", "b"], "env": [{"name": "A", "value": "1"}]}],
                "restartPolicy": "OnFailure"
            }}}}})
        );
        assert_eq!(current["metadata"]["labels"], json!({"app.kubernetes.io/managed-by": "meshplane"}));
        assert!(current.get("status").is_none());
        assert!(current["metadata"].get("managedFields").is_none() && current["metadata"].get("generation").is_none());
        // Looked up: how long a claim has waited to bind.
        assert_eq!(owned.meta().creation_timestamp.as_ref().map(|t| t.0.to_string()).as_deref(), Some("2026-11-29T00:00:00Z"));
    }

    fn applied() -> Value {
        json!({
            "apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {
                "name": "orders-nightly", "namespace": "sales", "labels": {"app.kubernetes.io/managed-by": "meshplane"},
                "ownerReferences": [{"apiVersion": "meshplane.io/v1alpha1", "kind": "DataProduct", "name": "orders", "uid": "p-1", "controller": true}]
            },
            "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": {"spec": {
                "containers": [{"name": "run", "image": "busybox", "args": ["a", "b"], "env": [{"name": "A", "value": "1"}]}],
                "restartPolicy": "OnFailure"
            }}}}}
        })
    }

    #[test]
    fn what_meshplane_applied_compares_equal_and_a_change_does_not() {
        let current = Owned::<CronJob>::comparable(served()).unwrap();
        let mut applied = applied();
        assert!(contains(&current, &applied));
        applied["spec"]["schedule"] = "0 4 * * *".into();
        assert!(!contains(&current, &applied));
    }

    #[test]
    fn the_cache_keeps_a_digest_that_answers_for_what_meshplane_applied() {
        let owned = Owned::<CronJob>::from_value(served()).unwrap();
        assert!(matches!(owned.fields, Fields::Digest(_)));
        assert_eq!(owned.holds(&applied()).unwrap(), Holds::Yes);
        // A changed field: the digest cannot say more, the object read whole does.
        let mut changed = applied();
        changed["spec"]["schedule"] = "0 4 * * *".into();
        assert!(matches!(owned.holds(&changed).unwrap(), Holds::Unknown { .. }));
        // Another owner is a difference the metadata tells at once.
        let mut adopted = applied();
        adopted["metadata"]["ownerReferences"][0]["uid"] = "p-2".into();
        assert_eq!(owned.holds(&adopted).unwrap(), Holds::No);
    }

    #[test]
    fn digests_compare_as_the_applier_does() {
        // Quantities by value, zero members as absent (but `false`), key order ignored.
        assert_eq!(digest(&json!({"cpu": "1", "memory": "1Gi"})), digest(&json!({"memory": "1024Mi", "cpu": "1000m"})));
        assert_eq!(digest(&json!({"a": 1, "c": [], "d": {"e": ""}})), digest(&json!({"a": 1.0})));
        // A `false` someone else turned on leaves meshplane's fields: a difference.
        assert_ne!(digest(&json!({"a": 1, "b": false})), digest(&json!({"a": 1})));
        assert_ne!(digest(&json!({"a": [1, 2]})), digest(&json!({"a": [2, 1]})));
        assert_ne!(digest(&json!({"a": "1"})), digest(&json!({"a": 1})));
        assert_ne!(digest(&json!({"a": {"b": 1}})), digest(&json!({"a": 1, "b": 1})));
    }

    #[test]
    fn what_controllers_look_up_stays_in_the_metadata() {
        let owned = Owned::<CronJob>::from_value(served()).unwrap();
        let meta = owned.meta();
        assert_eq!(meta.name.as_deref(), Some("orders-nightly"));
        assert_eq!(meta.namespace.as_deref(), Some("sales"));
        assert_eq!(meta.uid.as_deref(), Some("u-1"));
        assert_eq!(meta.resource_version.as_deref(), Some("42"));
        assert_eq!(meta.owner_references.as_ref().unwrap()[0].uid, "p-1");
        assert!(meta.labels.is_none() && meta.managed_fields.is_none());
        let current = Owned::<CronJob>::comparable(served()).unwrap();
        assert_eq!(current["metadata"]["name"], "orders-nightly");
        assert_eq!(current["metadata"]["ownerReferences"][0]["uid"], "p-1");
    }

    #[test]
    fn an_object_meshplane_set_nothing_on_compares_as_empty() {
        let mut object = served();
        object["metadata"]["managedFields"] = json!([]);
        let current = Owned::<CronJob>::comparable(object).unwrap();
        assert!(current.get("spec").is_none());
        assert_eq!(current["metadata"]["name"], "orders-nightly");
    }

    #[test]
    fn a_claim_keeps_its_spec_and_status_as_served() {
        let claim = json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "orders-data", "namespace": "sales", "labels": {"meshplane.dev/orphaned": "true"},
                "managedFields": [
                    {"manager": "meshplane", "operation": "Apply", "fieldsV1": {"f:spec": {"f:resources": {"f:requests": {"f:storage": {}}}}}},
                    {"manager": "meshplane", "operation": "Update", "fieldsV1": {"f:metadata": {"f:labels": {"f:meshplane.dev/orphaned": {}}}}}
                ]},
            "spec": {"resources": {"requests": {"storage": "1Gi"}}, "storageClassName": "standard", "volumeName": "pv-1"},
            "status": {"phase": "Bound"}
        });
        let current = Owned::<k8s_openapi::api::core::v1::PersistentVolumeClaim>::from_value(claim).unwrap().current().unwrap();
        assert_eq!(current["spec"]["storageClassName"], "standard");
        assert_eq!(current["status"]["phase"], "Bound");
        assert_eq!(current["metadata"]["labels"]["meshplane.dev/orphaned"], "true");
    }

    #[test]
    fn list_items_match_by_value_and_index() {
        let mut value = json!({"finalizers": ["a", "b"], "ports": [{"port": 1}, {"port": 2}]});
        retain(&mut value, &json!({"f:finalizers": {"v:\"b\"": {}}, "f:ports": {"i:1": {"f:port": {}}}}));
        assert_eq!(value, json!({"finalizers": ["b"], "ports": [{"port": 2}]}));
    }

    #[test]
    fn a_map_set_with_only_itself_keeps_none_of_its_fields() {
        let mut value = json!({"resources": {"limits": {"cpu": "1"}}});
        retain(&mut value, &json!({"f:resources": {".": {}}}));
        assert_eq!(value, json!({"resources": {}}));
    }
}
