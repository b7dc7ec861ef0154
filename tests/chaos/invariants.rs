//! The invariant checker: what the DataDomains and DataProducts in the
//! cluster want (rendered by meshplane's own pure renderers, resolved
//! against the cluster as the controllers resolve them) against what the
//! cluster holds, object by object.
//!
//! Scope: the domains whose names start with the run's prefix, their
//! namespaces (every object of the kinds meshplane writes in them), and every
//! namespace labelled with one of those domains. Other suites' leftovers are
//! not judged. Every violation is reported, not only the first:
//!
//! - every expected child exists exactly once, holds every field meshplane
//!   wants (the same `contains` the controllers use to skip writes), and has
//!   exactly one meshplane owner: the right DataDomain or DataProduct uid;
//! - nothing else of those kinds is there: no orphan (a child of a gone
//!   product or domain), no duplicate (a second object for the same purpose
//!   under another name), no leaked RoleBinding or NetworkPolicy (a grant to
//!   a consumer no longer listed, or of a product that is gone). The only
//!   objects meshplane leaves on purpose are PersistentVolumeClaims: released
//!   ones (`meshplane.dev/orphaned=true`, no product owner, the annotation
//!   naming the product) and ones whose storage entry was removed from a live
//!   product's spec (kept, still owned);
//! - no PersistentVolumeClaim of a deleted product whose storage was `Retain`
//!   is lost: it still exists, released and labelled, or was taken back by a
//!   product re-created with the same name; one under `Delete` is gone;
//! - every domain and product has `status.observedGeneration` equal to its
//!   generation, no product is Stalled or failing to apply, every domain is
//!   Ready, and nothing is left half deleted (a DataDomain, DataProduct or
//!   namespace with a deletion timestamp);
//! - every child is written only by meshplane's field manager (plus the
//!   Kubernetes controllers that own known fields of some kinds), so nobody
//!   else has been writing meshplane's objects.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ConfigMap, LimitRange, Namespace, PersistentVolumeClaim, ResourceQuota, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, ListParams};
use kube::{Client, Resource, ResourceExt};
use meshplane::api::conditions::status_of;
use meshplane::api::product::{DeletionPolicy, Storage};
use meshplane::api::{DataDomain, DataProduct};
use meshplane::domain::settings::DomainSettings;
use meshplane::domain::validate::namespace_name;
use meshplane::keys;
use meshplane::plumbing::compare::contains;
use serde::Serialize;
use serde_json::Value;

/// A product the workload deleted, as it was at that moment: its storage
/// entries (the deletion policy the finalizer must apply) and the claims it
/// owned then.
#[derive(Clone, Debug)]
pub struct Deleted {
    pub namespace: String,
    pub product: String,
    pub uid: String,
    pub storage: Vec<Storage>,
    pub claims: Vec<String>,
    /// Its domain was deleted afterwards, namespace and claims with it (the
    /// domain may have been made again since, with a new namespace).
    pub namespace_deleted: bool,
}

/// Field managers allowed on meshplane's children besides meshplane itself:
/// the Kubernetes controllers that write fields of their own on some kinds
/// (a claim's binding, a workload's revision annotation), and the workload
/// of the test suite itself where it writes on purpose.
const KUBERNETES_MANAGERS: [&str; 2] = ["kube-controller-manager", "kube-scheduler"];

struct Expected {
    desired: Value,
    owner_uid: String,
    parent: String,
}

/// One object in the cluster, as JSON.
struct Actual {
    kind: &'static str,
    value: Value,
}

impl Actual {
    fn meta(&self) -> &Value {
        &self.value["metadata"]
    }
    fn namespace(&self) -> &str {
        self.meta()["namespace"].as_str().unwrap_or_default()
    }
    fn name(&self) -> &str {
        self.meta()["name"].as_str().unwrap_or_default()
    }
    fn label(&self, key: &str) -> Option<&str> {
        self.meta()["labels"][key].as_str()
    }
    fn deleting(&self) -> bool {
        !self.meta()["deletionTimestamp"].is_null()
    }
    /// Owner references to meshplane's kinds, as (kind, name, uid).
    fn meshplane_owners(&self) -> Vec<(String, String, String)> {
        self.meta()["ownerReferences"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|o| o["apiVersion"].as_str().is_some_and(|v| v.starts_with(keys::GROUP)))
            .map(|o| {
                let s = |k: &str| o[k].as_str().unwrap_or_default().to_string();
                (s("kind"), s("name"), s("uid"))
            })
            .collect()
    }
    fn managers(&self) -> BTreeSet<String> {
        self.meta()["managedFields"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| {
                Some(format!("{}{}", m["manager"].as_str()?, m["subresource"].as_str().map(|s| format!("/{s}")).unwrap_or_default()))
            })
            .collect()
    }
}

async fn list<K>(client: &Client, kind: &'static str) -> Result<Vec<Actual>, String>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Serialize,
{
    let items = Api::<K>::all(client.clone()).list(&ListParams::default()).await.map_err(|e| format!("listing {kind}: {e}"))?.items;
    Ok(items.into_iter().map(|o| Actual { kind, value: serde_json::to_value(&o).expect("an object serializes") }).collect())
}

fn json<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).expect("an object serializes")
}

fn key(kind: &str, namespace: &str, name: &str) -> (String, String, String) {
    (kind.to_string(), namespace.to_string(), name.to_string())
}

/// The first path where `actual` lacks what `desired` wants, for the report.
fn first_difference(actual: &Value, desired: &Value, path: &str) -> String {
    match (actual, desired) {
        (Value::Object(a), Value::Object(d)) => {
            for (k, dv) in d {
                let av = a.get(k).unwrap_or(&Value::Null);
                if !contains(av, dv) {
                    return first_difference(av, dv, &format!("{path}.{k}"));
                }
            }
            path.to_string()
        }
        _ => format!("{path}: have {}, want {}", short(actual), short(desired)),
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 160 { format!("{}...", &s[..160]) } else { s }
}

/// Everything that is wrong, as sentences; empty when the cluster is exactly
/// what the resources ask for. An API error is reported as a violation too,
/// so a caller polling for convergence simply tries again.
pub async fn check(client: &Client, prefix: &str, deleted: &[Deleted]) -> Vec<String> {
    match check_inner(client, prefix, deleted).await {
        Ok(violations) => violations,
        Err(error) => vec![format!("cannot read the cluster: {error}")],
    }
}

async fn check_inner(client: &Client, prefix: &str, deleted: &[Deleted]) -> Result<Vec<String>, String> {
    let settings = DomainSettings::default();
    let mut violations = Vec::new();
    let all_domains: Vec<Arc<DataDomain>> = Api::<DataDomain>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| e.to_string())?
        .items
        .into_iter()
        .map(Arc::new)
        .collect();
    let all_products: Vec<Arc<DataProduct>> = Api::<DataProduct>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| e.to_string())?
        .items
        .into_iter()
        .map(Arc::new)
        .collect();
    let namespaces: Vec<Namespace> =
        Api::<Namespace>::all(client.clone()).list(&ListParams::default()).await.map_err(|e| e.to_string())?.items;
    let mut objects = Vec::new();
    objects.extend(list::<RoleBinding>(client, "RoleBinding").await?);
    objects.extend(list::<Role>(client, "Role").await?);
    objects.extend(list::<ResourceQuota>(client, "ResourceQuota").await?);
    objects.extend(list::<LimitRange>(client, "LimitRange").await?);
    objects.extend(list::<NetworkPolicy>(client, "NetworkPolicy").await?);
    objects.extend(list::<ServiceAccount>(client, "ServiceAccount").await?);
    objects.extend(list::<ConfigMap>(client, "ConfigMap").await?);
    objects.extend(list::<PersistentVolumeClaim>(client, "PersistentVolumeClaim").await?);
    objects.extend(list::<CronJob>(client, "CronJob").await?);
    objects.extend(list::<Deployment>(client, "Deployment").await?);

    let namespace_of = |d: &DataDomain| d.status.as_ref().and_then(|s| s.namespace.clone()).unwrap_or_else(|| namespace_name(d, &settings));
    let find_domain = |name: &str| all_domains.iter().find(|d| d.name_any() == name).cloned();
    let find_product =
        |ns: &str, name: &str| all_products.iter().find(|p| p.namespace().as_deref() == Some(ns) && p.name_any() == name).cloned();

    let ours: Vec<&Arc<DataDomain>> = all_domains.iter().filter(|d| d.name_any().starts_with(prefix)).collect();
    let mut expected: BTreeMap<(String, String, String), Expected> = BTreeMap::new();
    let mut expected_namespaces: BTreeMap<String, (Value, String, String)> = BTreeMap::new();
    let mut scope: BTreeSet<String> = BTreeSet::new();
    // Live products by (namespace, name): uid and the storage entries of their spec.
    let mut live: BTreeMap<(String, String), (String, BTreeSet<String>)> = BTreeMap::new();

    for domain in &ours {
        let name = domain.name_any();
        let namespace = namespace_of(domain);
        scope.insert(namespace.clone());
        if domain.metadata.deletion_timestamp.is_some() {
            violations.push(format!("DataDomain {name} is still being deleted (finalizers {:?})", domain.finalizers()));
            continue;
        }
        let status = domain.status.clone().unwrap_or_default();
        if status.observed_generation != domain.metadata.generation {
            violations.push(format!(
                "DataDomain {name}: status.observedGeneration {:?} != generation {:?}",
                status.observed_generation, domain.metadata.generation
            ));
        }
        if status_of(&status.conditions, "Ready") != Some("True") {
            let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
            violations.push(format!("DataDomain {name} is not Ready: {:?}", ready.map(|c| (&c.reason, &c.message))));
        }
        let valid = match meshplane::domain::validate::validate(domain, &settings) {
            Ok(valid) => valid,
            Err(e) => {
                violations.push(format!("DataDomain {name} is invalid: {e}"));
                continue;
            }
        };
        let bundle = meshplane::domain::build::render(&valid, &settings);
        let parent = format!("DataDomain {name}");
        let uid = valid.uid.to_string();
        expected_namespaces.insert(namespace.clone(), (json(&bundle.namespace), uid.clone(), parent.clone()));
        let mut expect = |kind: &str, name: String, desired: Value| {
            expected.insert(key(kind, &namespace, &name), Expected { desired, owner_uid: uid.clone(), parent: parent.clone() });
        };
        for rb in &bundle.role_bindings {
            expect("RoleBinding", rb.name_any(), json(rb));
        }
        expect("ResourceQuota", bundle.quota.name_any(), json(&bundle.quota));
        expect("LimitRange", bundle.limit_range.name_any(), json(&bundle.limit_range));
        for np in &bundle.network_policies {
            expect("NetworkPolicy", np.name_any(), json(np));
        }

        for product in all_products.iter().filter(|p| p.namespace().as_deref() == Some(namespace.as_str())) {
            let pname = product.name_any();
            let what = format!("DataProduct {namespace}/{pname}");
            if product.metadata.deletion_timestamp.is_some() {
                violations.push(format!("{what} is still being deleted (finalizers {:?})", product.finalizers()));
                continue;
            }
            let pstatus = product.status.clone().unwrap_or_default();
            if pstatus.observed_generation != product.metadata.generation {
                violations.push(format!(
                    "{what}: status.observedGeneration {:?} != generation {:?}",
                    pstatus.observed_generation, product.metadata.generation
                ));
            }
            for c in &pstatus.conditions {
                if (c.type_ == "Stalled" && c.status == "True") || c.reason == "ApplyFailed" {
                    violations.push(format!("{what}: {}={} ({}: {})", c.type_, c.status, c.reason, c.message));
                }
            }
            let valid = match meshplane::product::validate::validate(product, domain) {
                Ok(valid) => valid,
                Err(e) => {
                    violations.push(format!("{what} is invalid: {e}"));
                    continue;
                }
            };
            let inputs = meshplane::product::resolve::resolve_inputs(&valid, &find_domain, &find_product, &namespace_of);
            let consumers = meshplane::product::resolve::resolve_consumers(&valid, &find_domain, &namespace_of);
            let bundle = meshplane::product::build::render(&valid, &inputs, &consumers);
            let uid = valid.uid.to_string();
            live.insert((namespace.clone(), pname.clone()), (uid.clone(), product.spec.storage.iter().map(|s| s.name.clone()).collect()));
            let mut expect = |kind: &str, name: String, desired: Value| {
                let previous =
                    expected.insert(key(kind, &namespace, &name), Expected { desired, owner_uid: uid.clone(), parent: what.clone() });
                if let Some(previous) = previous {
                    violations.push(format!("{kind} {namespace}/{name} is wanted by both {} and {what}", previous.parent));
                }
            };
            expect("ServiceAccount", bundle.service_account.name_any(), json(&bundle.service_account));
            expect("ConfigMap", bundle.descriptor.name_any(), json(&bundle.descriptor));
            for (_, _, objects) in &bundle.storage {
                for o in objects {
                    let kind = o.types.as_ref().map(|t| t.kind.clone()).unwrap_or_default();
                    expect(&kind, o.name_any(), json(o));
                }
            }
            expect("Role", bundle.role.name_any(), json(&bundle.role));
            for rb in &bundle.role_bindings {
                expect("RoleBinding", rb.name_any(), json(rb));
            }
            for np in &bundle.network_policies {
                expect("NetworkPolicy", np.name_any(), json(np));
            }
            for cj in &bundle.cron_jobs {
                expect("CronJob", cj.name_any(), json(cj));
            }
            for d in &bundle.deployments {
                expect("Deployment", d.name_any(), json(d));
            }
        }
    }

    // Namespaces: each domain's exactly as wanted; none left of gone domains.
    for ns in &namespaces {
        let name = ns.name_any();
        let labelled = ns.labels().get(keys::LABEL_DOMAIN).is_some_and(|d| d.starts_with(prefix));
        match expected_namespaces.get(&name) {
            Some((desired, uid, parent)) => {
                let actual = json(ns);
                if ns.metadata.deletion_timestamp.is_some() {
                    violations.push(format!("namespace {name} of {parent} is being deleted"));
                }
                if !contains(&actual, desired) {
                    violations
                        .push(format!("namespace {name} differs from what {parent} wants at {}", first_difference(&actual, desired, "")));
                }
                if !ns.owner_references().iter().any(|o| &o.uid == uid) {
                    violations.push(format!("namespace {name} is not owned by {parent} (uid {uid})"));
                }
            }
            None if labelled || scope.contains(&name) => {
                let phase = ns.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
                violations.push(format!("orphan namespace {name} ({phase}): no DataDomain of this run wants it"));
            }
            None => {}
        }
    }
    for (name, (_, _, parent)) in &expected_namespaces {
        if !namespaces.iter().any(|n| &n.name_any() == name) {
            violations.push(format!("missing namespace {name} of {parent}"));
        }
    }

    // Children: each expected one exactly as wanted; nothing else.
    let mut seen = BTreeSet::new();
    let mut released: BTreeMap<(String, String), &Actual> = BTreeMap::new();
    for object in objects.iter().filter(|o| scope.contains(o.namespace())) {
        let (kind, namespace, name) = (object.kind, object.namespace(), object.name());
        let id = format!("{kind} {namespace}/{name}");
        let k = key(kind, namespace, name);
        if let Some(expect) = expected.get(&k) {
            seen.insert(k);
            if object.deleting() {
                violations.push(format!("{id} of {} is being deleted", expect.parent));
            }
            if !contains(&object.value, &expect.desired) {
                violations.push(format!(
                    "{id} differs from what {} wants at {}",
                    expect.parent,
                    first_difference(&object.value, &expect.desired, "")
                ));
            }
            if object.label(keys::LABEL_ORPHANED).is_some() || !object.meta()["annotations"][keys::ANNOTATION_ORPHANED_FROM].is_null() {
                violations.push(format!("{id} is in use by {} but still marked as released by an earlier product", expect.parent));
            }
            let owners = object.meshplane_owners();
            if owners.len() != 1 || owners[0].2 != expect.owner_uid {
                violations.push(format!("{id}: meshplane owners {owners:?}, want exactly {} (uid {})", expect.parent, expect.owner_uid));
            }
            let foreign: Vec<String> = object
                .managers()
                .into_iter()
                .filter(|m| {
                    let base = m.split('/').next().unwrap_or_default();
                    base != keys::FIELD_MANAGER && !KUBERNETES_MANAGERS.contains(&base) && !m.ends_with("/status")
                })
                .collect();
            if !foreign.is_empty() {
                violations.push(format!("{id} was written by field managers other than meshplane: {foreign:?}"));
            }
            continue;
        }
        let managed = object.label(keys::LABEL_MANAGED_BY) == Some(keys::MANAGED_BY);
        if object.deleting() && (managed || kind != "ServiceAccount" && kind != "ConfigMap") {
            violations.push(format!("{id} is still being deleted (owners {:?})", object.meshplane_owners()));
            continue;
        }
        match kind {
            // Kubernetes' own: each namespace's `default` ServiceAccount and
            // `kube-root-ca.crt` ConfigMap.
            "ServiceAccount" | "ConfigMap" if !managed => {}
            "PersistentVolumeClaim" => {
                let product = object.label(keys::LABEL_PRODUCT).unwrap_or_default();
                let owners = object.meshplane_owners();
                if object.label(keys::LABEL_ORPHANED) == Some("true") {
                    if !owners.is_empty() {
                        violations.push(format!("{id} is labelled orphaned but still owned by {owners:?}"));
                    }
                    if object.meta()["annotations"][keys::ANNOTATION_ORPHANED_FROM].as_str().is_none_or(|a| !a.contains(product)) {
                        violations.push(format!("{id} is labelled orphaned without an annotation naming its product"));
                    }
                    if object.deleting() {
                        violations.push(format!("{id} was released under Retain and is being deleted"));
                    }
                    released.insert((namespace.to_string(), name.to_string()), object);
                    continue;
                }
                let storage = object.label(keys::LABEL_STORAGE).unwrap_or_default();
                let retained_in_place = live
                    .get(&(namespace.to_string(), product.to_string()))
                    .is_some_and(|(uid, entries)| owners.len() == 1 && &owners[0].2 == uid && !entries.contains(storage));
                if retained_in_place {
                    released.insert((namespace.to_string(), name.to_string()), object);
                } else {
                    violations.push(format!(
                        "orphan {id}: no live product wants it and it is not released (owners {owners:?}, labels {})",
                        object.meta()["labels"]
                    ));
                }
            }
            "RoleBinding" => violations.push(format!(
                "leaked RoleBinding {namespace}/{name}: grants {} to {}; nothing in the cluster wants it (owners {:?})",
                object.value["roleRef"]["name"],
                object.value["subjects"],
                object.meshplane_owners()
            )),
            _ => violations.push(format!(
                "orphan {id}: nothing in the cluster wants it (owners {:?}, labels {})",
                object.meshplane_owners(),
                object.meta()["labels"]
            )),
        }
    }
    for (k, expect) in &expected {
        if !seen.contains(k) {
            violations.push(format!("missing {} {}/{} wanted by {}", k.0, k.1, k.2, expect.parent));
        }
    }

    // Storage of deleted products. A product's claims are listed just before
    // it is deleted; the operator may still take back a released claim of
    // the same name between that listing and the deletion, so a later
    // incarnation of the product may be the one whose finalizer decided.
    // A claim may be gone only if the product, at one of its deletions from
    // the listing on, said `Delete` for that storage; one still there must
    // be in use by the live product or released by one of those deletions
    // that said `Retain`.
    let mut incarnations: BTreeMap<(String, String), Vec<&Deleted>> = BTreeMap::new();
    for record in deleted {
        incarnations.entry((record.namespace.clone(), record.product.clone())).or_default().push(record);
    }
    let mut claims: BTreeMap<(String, String, String), usize> = BTreeMap::new();
    for ((namespace, product), records) in &incarnations {
        for (i, record) in records.iter().enumerate() {
            for claim in &record.claims {
                claims.insert((namespace.clone(), product.clone(), claim.clone()), i);
            }
        }
    }
    for ((namespace, product, claim), first) in claims {
        if !expected_namespaces.contains_key(&namespace) {
            // The whole domain went (Cascade): its namespace took the claims.
            continue;
        }
        let later = &incarnations[&(namespace.clone(), product.clone())][first..];
        if later.iter().any(|r| r.namespace_deleted) {
            // Its domain went after the product: the namespace took the claims.
            continue;
        }
        let storage = claim.strip_prefix(&format!("{product}-")).unwrap_or_default().to_string();
        let policy =
            |r: &Deleted| r.storage.iter().find(|s| s.name == storage).map(|s| s.deletion_policy).unwrap_or(DeletionPolicy::Retain);
        let what = format!("PersistentVolumeClaim {namespace}/{claim} of deleted DataProduct {product} (uid {})", later[0].uid);
        let object = objects.iter().find(|o| o.kind == "PersistentVolumeClaim" && o.namespace() == namespace && o.name() == claim);
        let Some(object) = object else {
            if !later.iter().any(|r| policy(r) == DeletionPolicy::Delete) {
                violations.push(format!("lost {what}: its deletionPolicy was Retain"));
            }
            continue;
        };
        let in_use =
            live.get(&(namespace.clone(), product.clone())).is_some_and(|(uid, _)| object.meshplane_owners().iter().any(|o| &o.2 == uid));
        if in_use {
            continue;
        }
        let annotation = object.meta()["annotations"][keys::ANNOTATION_ORPHANED_FROM].as_str().unwrap_or_default();
        let released_by = later.iter().find(|r| annotation.contains(&r.uid));
        match released_by {
            Some(r) if object.label(keys::LABEL_ORPHANED) == Some("true") && policy(r) == DeletionPolicy::Retain => {}
            Some(r) => violations.push(format!(
                "{what}: released by the deletion of uid {} under deletionPolicy {:?}, labels {}",
                r.uid,
                policy(r),
                object.meta()["labels"]
            )),
            None => violations.push(format!(
                "{what} was not released by any of its deletions: labels {}, annotation {annotation:?}, owners {:?}",
                object.meta()["labels"],
                object.meshplane_owners()
            )),
        }
    }
    violations.sort();
    violations.dedup();
    Ok(violations)
}
