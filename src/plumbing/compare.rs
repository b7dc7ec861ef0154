//! How a child as the cluster holds it compares with what meshplane would
//! write: field by field, a zero value matching an absent field, equal
//! quantities in other spellings equal.

use serde_json::{Map, Value};

use super::quantity::quantities_equal;

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

pub fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.values().all(is_zero),
    }
}

/// True when `actual` (a child as served, every manager's fields) has
/// `true` where `desired` says `false`. A `false` meshplane applied matches
/// an absent field (Go omits it), so a switch another writer turned on
/// (`automountServiceAccountToken`, `allowPrivilegeEscalation`) is not
/// among meshplane's fields and only the whole object shows it.
pub fn contradicted(actual: &Value, desired: &Value) -> bool {
    match (actual, desired) {
        (Value::Object(a), Value::Object(d)) => d.iter().any(|(k, dv)| a.get(k).is_some_and(|av| contradicted(av, dv))),
        (Value::Array(a), Value::Array(d)) => a.len() == d.len() && a.iter().zip(d).any(|(av, dv)| contradicted(av, dv)),
        (Value::Bool(true), Value::Bool(false)) => true,
        _ => false,
    }
}

/// The value at `path` in `object`, if any.
pub fn pointer<'a>(object: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(object, |value, key| value.get(key))
}

/// Sets the value at `path` in `object`, making the objects on the way.
pub fn insert(object: &mut Value, path: &[&str], value: Value) {
    let Some((last, parents)) = path.split_last() else { return };
    let mut at = object;
    for key in parents {
        let Some(map) = at.as_object_mut() else { return };
        at = map.entry(key.to_string()).or_insert_with(|| Value::Object(Map::new()));
    }
    if let Some(map) = at.as_object_mut() {
        map.insert(last.to_string(), value);
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
    }

    #[test]
    fn a_switch_turned_on_by_someone_else_contradicts_meshplanes_false() {
        let desired = json!({"automountServiceAccountToken": false, "spec": {"containers": [{"securityContext": {"allowPrivilegeEscalation": false}}]}});
        assert!(!contradicted(&json!({"spec": {"containers": [{}]}}), &desired));
        assert!(contradicted(&json!({"automountServiceAccountToken": true}), &desired));
        assert!(contradicted(&json!({"spec": {"containers": [{"securityContext": {"allowPrivilegeEscalation": true}}]}}), &desired));
        assert!(!contradicted(&json!({"automountServiceAccountToken": false}), &desired));
    }
}
