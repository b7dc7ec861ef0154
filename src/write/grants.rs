//! Lists that grant access (a binding's subjects, a role's rules, a network
//! policy's rules; see [`crate::keys::granting_fields`]) are meshplane's
//! whole: entries another writer added are found, named and removed.

use serde_json::Value;

use crate::keys::{self, granting_fields};
use crate::plumbing::compare::{contains, pointer};

/// Entries that another writer added to a list that grants access.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForeignGrant {
    /// The list, as the API server names fields: `.subjects`.
    pub field: String,
    /// The field managers other than meshplane that own the list.
    pub managers: Vec<String>,
    /// The entries meshplane does not want, as compact JSON.
    pub entries: Vec<String>,
}

impl ForeignGrant {
    /// `field manager "kubectl-edit" added {"kind":"User","name":"eve"} to .subjects`
    pub fn describe(&self) -> String {
        let who = match self.managers.as_slice() {
            [] => "another writer".to_string(),
            managers => format!("field manager {}", managers.iter().map(|m| format!("{m:?}")).collect::<Vec<_>>().join(", ")),
        };
        format!("{who} added {} to {}", self.entries.join(", "), self.field)
    }
}

/// What `served` (a child as the API server serves it, managedFields
/// included) holds in its granting lists beyond what `desired` asks for,
/// and who put it there.
pub fn foreign_grants(kind: &str, served: &Value, desired: &Value) -> Vec<ForeignGrant> {
    let managed = served.pointer("/metadata/managedFields").and_then(Value::as_array);
    granting_fields(kind)
        .iter()
        .filter_map(|path| {
            let wanted = pointer(desired, path).and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
            let entries: Vec<String> = pointer(served, path)?
                .as_array()?
                .iter()
                .filter(|entry| !wanted.iter().any(|w| contains(entry, w)))
                .map(|entry| entry.to_string())
                .collect();
            if entries.is_empty() {
                return None;
            }
            let set_path: Vec<String> = path.iter().map(|key| format!("f:{key}")).collect();
            let managers = managed
                .into_iter()
                .flatten()
                .filter(|entry| entry.get("manager").and_then(Value::as_str) != Some(keys::FIELD_MANAGER))
                .filter(|entry| {
                    let fields = entry.get("fieldsV1");
                    fields.is_some_and(|f| set_path.iter().try_fold(f, |at, key| at.get(key)).is_some())
                })
                .filter_map(|entry| Some(entry.get("manager")?.as_str()?.to_string()))
                .collect();
            Some(ForeignGrant { field: format!(".{}", path.join(".")), managers, entries })
        })
        .collect()
}

/// Whether a conflict names a field in (or under) one of `kind`'s lists
/// that grant access.
pub fn touches_grants(kind: &str, managers: &[(String, Vec<String>)]) -> bool {
    let lists: Vec<String> = granting_fields(kind).iter().map(|path| format!(".{}", path.join("."))).collect();
    managers.iter().flat_map(|(_, fields)| fields).any(|field| {
        lists.iter().any(|list| field.strip_prefix(list.as_str()).is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '['])))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plumbing::owned::{Holds, Owned};
    use serde_json::json;

    #[test]
    fn a_conflict_on_a_granting_list_is_never_yielded() {
        let on = |field: &str| vec![("kubectl-patch".to_string(), vec![field.to_string()])];
        assert!(touches_grants("RoleBinding", &on(".subjects")));
        assert!(touches_grants("NetworkPolicy", &on(".spec.ingress")));
        assert!(touches_grants("Role", &on(".rules")));
        assert!(!touches_grants("RoleBinding", &on(".metadata.labels.a")));
        assert!(!touches_grants("NetworkPolicy", &on(".spec.ingressClass")));
        assert!(!touches_grants("Deployment", &on(".spec.replicas")));
    }

    fn viewers(subjects: Value, managed: Value) -> Value {
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "meshplane-domain-viewers", "namespace": "dm-a", "managedFields": managed},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "meshplane-domain-viewer"},
            "subjects": subjects
        })
    }

    fn desired_viewers() -> Value {
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "meshplane-domain-viewers", "namespace": "dm-a"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "meshplane-domain-viewer"},
            "subjects": []
        })
    }

    #[test]
    fn a_subject_someone_added_to_an_empty_binding_is_a_difference() {
        use k8s_openapi::api::rbac::v1::RoleBinding;
        let ours = json!({"manager": "meshplane", "operation": "Apply", "fieldsV1": {"f:roleRef": {}, "f:subjects": {}}});
        // As meshplane applied it: no subjects (the API server omits the empty list).
        let mut applied = viewers(json!(null), json!([ours]));
        applied.as_object_mut().unwrap().remove("subjects");
        let owned = Owned::<RoleBinding>::from_value(applied).unwrap();
        assert_eq!(owned.holds(&desired_viewers()).unwrap(), Holds::Yes);
        // Someone's update took the list over and added a subject.
        let eve = json!([{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "eve"}]);
        let theirs = json!({"manager": "widener", "operation": "Update", "fieldsV1": {"f:subjects": {}}});
        let served = viewers(eve.clone(), json!([{"manager": "meshplane", "operation": "Apply", "fieldsV1": {"f:roleRef": {}}}, theirs]));
        let owned = Owned::<RoleBinding>::from_value(served.clone()).unwrap();
        assert!(matches!(owned.holds(&desired_viewers()).unwrap(), Holds::Unknown { .. }));
        // Read whole, it holds the foreign subject: not what meshplane wants.
        let comparable = Owned::<RoleBinding>::comparable(served.clone()).unwrap();
        assert_eq!(comparable["subjects"], eve);
        assert!(!contains(&comparable, &desired_viewers()));
        let foreign = foreign_grants("RoleBinding", &served, &desired_viewers());
        assert_eq!(foreign.len(), 1);
        assert_eq!(foreign[0].managers, ["widener"]);
        assert_eq!(foreign[0].field, ".subjects");
        assert!(foreign[0].describe().contains("\"widener\" added") && foreign[0].describe().contains("eve"), "{}", foreign[0].describe());
    }

    #[test]
    fn a_binding_that_holds_only_meshplanes_subjects_has_no_foreign_grant() {
        let ann = json!([{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "ann"}]);
        let served = viewers(ann.clone(), json!([{"manager": "meshplane", "operation": "Apply", "fieldsV1": {"f:subjects": {}}}]));
        let mut desired = desired_viewers();
        desired["subjects"] = json!([{"kind": "User", "name": "ann", "apiGroup": "rbac.authorization.k8s.io"}]);
        assert!(foreign_grants("RoleBinding", &served, &desired).is_empty());
        // Kinds with no granting list have none.
        assert!(foreign_grants("ConfigMap", &served, &desired).is_empty());
    }
}
