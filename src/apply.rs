//! The one place that writes children: server-side apply under meshplane's
//! field manager, skipped when the cached object already holds every field
//! meshplane wants, so a resync at steady state sends no mutating request.

use std::fmt::Debug;

use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::ApiResource;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::keys;

/// What applying one object did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Updated,
    Unchanged,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Updated => "updated",
            Outcome::Unchanged => "unchanged",
        }
    }
}

/// A failed write, naming the object.
#[derive(Debug, thiserror::Error)]
#[error("applying {kind} {name}: {source}")]
pub struct ApplyError {
    pub kind: String,
    pub name: String,
    #[source]
    pub source: kube::Error,
}

/// Writes children with server-side apply, consulting a cache first.
#[derive(Clone)]
pub struct Applier {
    client: Client,
}

impl Applier {
    pub fn new(client: Client) -> Self {
        Applier { client }
    }

    fn api<K: Resource<DynamicType = ()>>(&self, namespace: Option<&str>) -> Api<DynamicObject> {
        let resource = ApiResource::erase::<K>(&());
        match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &resource),
            None => Api::all_with(self.client.clone(), &resource),
        }
    }

    /// Applies `desired` unless `cache` already holds an object that contains
    /// every field of it.
    pub async fn apply<K>(&self, cache: &Store<K>, desired: &K) -> Result<Outcome, ApplyError>
    where
        K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug + Send + Sync + 'static,
    {
        let name = desired.name_any();
        let namespace = desired.namespace();
        let mut key = ObjectRef::<K>::new(&name);
        if let Some(ns) = &namespace {
            key = key.within(ns);
        }
        let error = |source| ApplyError { kind: K::kind(&()).into_owned(), name: name.clone(), source };
        let mut body = serde_json::to_value(desired).map_err(|e| error(kube::Error::SerdeError(e)))?;
        body["apiVersion"] = K::api_version(&()).into();
        body["kind"] = K::kind(&()).into();
        let current = match cache.get(&key) {
            Some(current) => Some(serde_json::to_value(current.as_ref()).map_err(|e| error(kube::Error::SerdeError(e)))?),
            None => None,
        };
        self.apply_value(&ApiResource::erase::<K>(&()), namespace.as_deref(), &name, body, current.as_ref()).await
    }

    /// Applies an untyped object (a kind meshplane has no Rust type or cache
    /// for), given what the cluster holds now.
    pub async fn apply_dynamic(
        &self,
        resource: &ApiResource,
        desired: &DynamicObject,
        current: Option<&DynamicObject>,
    ) -> Result<Outcome, ApplyError> {
        let name = desired.name_any();
        let error = |source| ApplyError { kind: resource.kind.clone(), name: name.clone(), source };
        let mut body = serde_json::to_value(desired).map_err(|e| error(kube::Error::SerdeError(e)))?;
        body["apiVersion"] = resource.api_version.clone().into();
        body["kind"] = resource.kind.clone().into();
        let current = match current {
            Some(c) => Some(serde_json::to_value(c).map_err(|e| error(kube::Error::SerdeError(e)))?),
            None => None,
        };
        self.apply_value(resource, desired.namespace().as_deref(), &name, body, current.as_ref()).await
    }

    async fn apply_value(
        &self,
        resource: &ApiResource,
        namespace: Option<&str>,
        name: &str,
        body: Value,
        current: Option<&Value>,
    ) -> Result<Outcome, ApplyError> {
        if let Some(current) = current
            && contains(current, &body)
        {
            return Ok(Outcome::Unchanged);
        }
        let api: Api<DynamicObject> = match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, resource),
            None => Api::all_with(self.client.clone(), resource),
        };
        let params = PatchParams::apply(keys::FIELD_MANAGER).force();
        api.patch(name, &params, &Patch::Apply(&body)).await.map_err(|source| ApplyError {
            kind: resource.kind.clone(),
            name: name.to_string(),
            source,
        })?;
        Ok(if current.is_some() { Outcome::Updated } else { Outcome::Created })
    }

    /// Deletes the cached objects that `owned` selects and `keep` does not
    /// name. Called only after every apply of a pass succeeded.
    pub async fn prune<K>(&self, cache: &Store<K>, owned: impl Fn(&K) -> bool, keep: &[String]) -> Result<Vec<String>, ApplyError>
    where
        K: Resource<DynamicType = ()> + Clone + Debug + Send + Sync + 'static,
    {
        let mut pruned = Vec::new();
        for object in cache.state() {
            let name = object.name_any();
            if !owned(&object) || keep.contains(&name) || object.meta().deletion_timestamp.is_some() {
                continue;
            }
            match self.api::<K>(object.namespace().as_deref()).delete(&name, &DeleteParams::background()).await {
                Ok(_) => pruned.push(name),
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(source) => {
                    return Err(ApplyError { kind: K::kind(&()).into_owned(), name, source });
                }
            }
        }
        Ok(pruned)
    }
}

/// True when `actual` holds every field of `desired` with an equal value.
/// Fields the API server adds (defaults, status, metadata) are ignored; a zero
/// value in `desired` matches an absent field (Go's `omitempty` drops them);
/// strings that are equal quantities ("1000m" and "1") are equal.
pub fn contains(actual: &Value, desired: &Value) -> bool {
    match (actual, desired) {
        (Value::Object(a), Value::Object(d)) => d.iter().all(|(k, dv)| match a.get(k) {
            Some(av) => contains(av, dv),
            None => is_zero(dv),
        }),
        (Value::Array(a), Value::Array(d)) => a.len() == d.len() && a.iter().zip(d).all(|(av, dv)| contains(av, dv)),
        (Value::String(a), Value::String(d)) => a == d || quantities_equal(a, d),
        (Value::Number(a), Value::Number(d)) => a.as_f64() == d.as_f64(),
        (Value::Null, d) => is_zero(d),
        (a, d) => a == d,
    }
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.values().all(is_zero),
    }
}

/// Parses a Kubernetes quantity ("500m", "2Gi", "1e3", "8") to a number.
pub fn parse_quantity(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-')).unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "u" => 1e-6,
        "n" => 1e-9,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exp if exp.starts_with(['e', 'E']) => 10f64.powi(exp[1..].parse().ok()?),
        _ => return None,
    };
    Some(number * factor)
}

fn quantities_equal(a: &str, b: &str) -> bool {
    match (parse_quantity(a), parse_quantity(b)) {
        (Some(x), Some(y)) => (x - y).abs() <= f64::EPSILON * x.abs().max(y.abs()) * 4.0,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn extra_fields_on_the_server_are_ignored() {
        let actual = json!({"metadata": {"name": "a", "uid": "1", "labels": {"x": "1", "y": "2"}}, "spec": {"a": 1}});
        let desired = json!({"metadata": {"name": "a", "labels": {"x": "1"}}});
        assert!(contains(&actual, &desired));
    }

    #[test]
    fn a_changed_or_missing_field_is_a_difference() {
        let actual = json!({"spec": {"hard": {"cpu": "8"}}});
        assert!(!contains(&actual, &json!({"spec": {"hard": {"cpu": "9"}}})));
        assert!(!contains(&actual, &json!({"spec": {"hard": {"memory": "1Gi"}}})));
        assert!(!contains(&json!({"l": [1, 2]}), &json!({"l": [1]})));
    }

    #[test]
    fn zero_values_match_absent_fields() {
        let actual = json!({"subjects": [{"kind": "ServiceAccount", "name": "a"}]});
        let desired = json!({"subjects": [{"kind": "ServiceAccount", "name": "a", "apiGroup": ""}], "x": []});
        assert!(contains(&actual, &desired));
    }

    #[test]
    fn equal_quantities_in_other_spellings_are_equal() {
        assert!(contains(&json!({"cpu": "1"}), &json!({"cpu": "1000m"})));
        assert!(contains(&json!({"m": "1Gi"}), &json!({"m": "1024Mi"})));
        assert!(!contains(&json!({"m": "1G"}), &json!({"m": "1Gi"})));
        assert_eq!(parse_quantity("500m"), Some(0.5));
        assert_eq!(parse_quantity("1e3"), Some(1000.0));
        assert_eq!(parse_quantity("abc"), None);
    }
}
