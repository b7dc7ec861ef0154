//! The one place that writes children: server-side apply under meshplane's
//! field manager, skipped when the cached object already holds every field
//! meshplane wants, so a resync at steady state sends no mutating request.
//!
//! Two ways to apply. [`Applier::apply`] always forces: the domain's tenant
//! (namespace, RoleBindings, quota, network policies) belongs to the platform,
//! and nobody else may hold its fields. [`Applier::apply_guarded`], for a
//! product's children, first applies without forcing, so a foreign field
//! manager's change to a field meshplane owns is seen (the API server refuses
//! with a conflict naming the manager and the field), reported, and restored;
//! one that keeps coming back is given up on rather than fought forever (see
//! [`ConflictGuard`]).

use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::ApiResource;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde_json::Value;

use crate::keys;
use crate::owned::{ForeignGrant, Holds, Owned};
use crate::telemetry::{ChildLabels, DriftLabels};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

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

impl ApplyError {
    /// The API server's message when a ResourceQuota refused the object
    /// ("... is forbidden: exceeded quota: <quota>, requested: ..., used:
    /// ..., limited: ..."): not a fault of meshplane's, and not one that a
    /// quick retry cures.
    pub fn quota_exceeded(&self) -> Option<&str> {
        match &self.source {
            kube::Error::Api(status) if status.code == 403 && status.message.contains("exceeded quota") => Some(&status.message),
            _ => None,
        }
    }
}

/// Restores of one object against one foreign field manager, within
/// [`CONFLICT_WINDOW`], after which meshplane stops forcing that object.
pub const CONFLICT_LIMIT: usize = 3;
/// How long a restore counts against [`CONFLICT_LIMIT`].
pub const CONFLICT_WINDOW: Duration = Duration::from_secs(600);

/// Another field manager changed fields that meshplane owns on a child.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub kind: String,
    pub name: String,
    /// Each foreign manager, with the fields it changed (as the API server
    /// names them: `.spec.replicas`), in the API server's order.
    pub managers: Vec<(String, Vec<String>)>,
    /// Restores of this object against these managers within the window,
    /// this one included (when restored).
    pub restores: usize,
    /// True: meshplane forced its values back. False: it yielded, and the
    /// foreign values stay until `retry_after` has passed.
    pub restored: bool,
    /// When meshplane will force again (yielded only).
    pub retry_after: Option<Duration>,
    /// The conflict touched a list that grants access, which meshplane
    /// always restores (it never yields those).
    pub grants: bool,
}

impl Conflict {
    /// "field manager \"kubectl-edit\" changed .spec.replicas"
    pub fn describe(&self) -> String {
        let parts: Vec<String> =
            self.managers.iter().map(|(manager, fields)| format!("field manager {manager:?} changed {}", fields.join(", "))).collect();
        parts.join("; ")
    }
}

/// How meshplane put back another writer's change to a child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drift {
    /// The child was deleted, and made again.
    Restored,
    /// A field meshplane owns was changed, and set back.
    Reverted,
}

impl Drift {
    pub fn as_str(self) -> &'static str {
        match self {
            Drift::Restored => "restored",
            Drift::Reverted => "reverted",
        }
    }
}

/// What an apply did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Guarded {
    /// `Unchanged` when meshplane yielded: nothing was written.
    pub outcome: Outcome,
    pub conflict: Option<Conflict>,
    /// Set when the write undid another writer's change to a child that
    /// meshplane had seen in place as it still wants it.
    pub drift: Option<Drift>,
    /// Entries another writer had added to a list that grants access,
    /// removed by this write.
    pub revoked: Vec<ForeignGrant>,
}

impl Guarded {
    fn unchanged() -> Self {
        Guarded { outcome: Outcome::Unchanged, conflict: None, drift: None, revoked: Vec::new() }
    }

    fn written(outcome: Outcome) -> Self {
        Guarded { outcome, ..Guarded::unchanged() }
    }
}

/// Remembers, per child and foreign field manager, when meshplane restored
/// its fields, so that a manager that keeps changing them is not fought
/// forever.
///
/// Each time a plain (unforced) apply of a child is refused with a conflict,
/// meshplane counts it against every manager named. Below [`CONFLICT_LIMIT`]
/// restores within [`CONFLICT_WINDOW`] it forces its values back (a Warning
/// Event says which manager changed which field). At the limit it yields: it
/// leaves the foreign values in place and the product reports
/// `Stalled=True`, reason `FieldManagerConflict`, naming the object, the
/// manager and the fields, so a person decides (remove the other writer or
/// its change, or stop managing the object elsewhere). It keeps trying plain
/// applies, which write nothing while the conflict stands and succeed as soon
/// as the foreign change is gone; once the oldest restore leaves the window it
/// forces once more. The memory is per process: a restarted or new leader
/// starts counting afresh, which costs at most [`CONFLICT_LIMIT`] more
/// restores.
#[derive(Clone, Default)]
pub struct ConflictGuard {
    restores: Arc<Mutex<Restores>>,
}

/// When meshplane restored each (object, foreign manager), oldest first.
type Restores = HashMap<(String, String), Vec<Instant>>;

impl ConflictGuard {
    /// Decides on a conflict seen now: restore (and count it) or yield.
    fn decide(&self, object: &str, managers: &[(String, Vec<String>)], now: Instant) -> (bool, usize, Option<Duration>) {
        let mut restores = self.restores.lock().unwrap_or_else(|e| e.into_inner());
        restores.retain(|_, times| {
            times.retain(|t| now.duration_since(*t) < CONFLICT_WINDOW);
            !times.is_empty()
        });
        let key = |manager: &str| (object.to_string(), manager.to_string());
        let most = managers.iter().map(|(m, _)| restores.get(&key(m)).map_or(0, Vec::len)).max().unwrap_or(0);
        if most >= CONFLICT_LIMIT {
            let oldest = managers.iter().filter_map(|(m, _)| restores.get(&key(m))?.first().copied()).min().unwrap_or(now);
            let retry_after = CONFLICT_WINDOW.saturating_sub(now.duration_since(oldest));
            return (false, most, Some(retry_after));
        }
        for (manager, _) in managers {
            restores.entry(key(manager)).or_default().push(now);
        }
        (true, most + 1, None)
    }
}

/// The foreign managers and fields of a server-side apply conflict, from the
/// API server's message (the Status' causes are not exposed by the client):
/// `Apply failed with 1 conflict: conflict with "kubectl-edit" using apps/v1: .spec.replicas`
/// or, for several, `Apply failed with 2 conflicts: conflicts with "a" using v1:\n- .x\n- .y`.
pub fn parse_conflicts(message: &str) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for line in message.lines() {
        let line = line.trim();
        if let Some(field) = line.strip_prefix("- ") {
            if let Some((_, fields)) = out.last_mut() {
                fields.push(field.trim().to_string());
            }
            continue;
        }
        let Some(at) = line.find(" with \"") else {
            continue;
        };
        let rest = &line[at + " with \"".len()..];
        // The manager is printed quoted (Go's %q): find the closing quote.
        let mut manager = String::new();
        let mut chars = rest.char_indices();
        let mut end = rest.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        manager.push(escaped);
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => manager.push(c),
            }
        }
        let fields = match rest[end..].split_once(": ") {
            Some((_, field)) if !field.trim().is_empty() => vec![field.trim().to_string()],
            _ => Vec::new(),
        };
        out.push((manager, fields));
    }
    out
}

/// How a cached object answers the applier's question: does it already
/// hold what meshplane would write? A whole object compares field by field
/// ([`contains`]); an [`Owned`] child by the digest its cache keeps.
pub trait Current: Sized {
    fn holds(&self, desired: &Value) -> serde_json::Result<Holds>;

    /// `object`, as the API server serves it, in the form [`contains`]
    /// compares (when [`Current::holds`] could not tell).
    fn comparable(object: Value) -> serde_json::Result<Value>;
}

impl<K: Serialize> Current for K {
    fn holds(&self, desired: &Value) -> serde_json::Result<Holds> {
        Ok(if contains(&serde_json::to_value(self)?, desired) { Holds::Yes } else { Holds::No })
    }

    fn comparable(object: Value) -> serde_json::Result<Value> {
        Ok(object)
    }
}

impl<K: Resource<DynamicType = ()> + crate::owned::Served> Current for Owned<K> {
    fn holds(&self, desired: &Value) -> serde_json::Result<Holds> {
        Owned::holds(self, desired)
    }

    fn comparable(object: Value) -> serde_json::Result<Value> {
        Owned::<K>::comparable(object)
    }
}

/// Children whose cached digest differed from the desired object's while
/// the object, read whole, held every field: (desired digest, cached
/// digest) by object. Such a pair needs no second read.
type Confirmed = HashMap<u64, (u64, u64)>;

/// What meshplane last saw in place of a child, by child: the digest of
/// the object it wanted then, and its owner's uid (hashed).
#[derive(Default)]
struct Seen {
    children: HashMap<u64, (u64, u64)>,
}

impl Seen {
    /// How a write of `wanted` to the child `id` corrects drift: it does when
    /// meshplane saw the child in place as it still wants it, and the cache
    /// now lacks it (`held` None) or holds something else.
    fn drift(&self, id: u64, wanted: u64, held: Option<bool>) -> Option<Drift> {
        let (seen, _) = self.children.get(&id)?;
        match held {
            _ if *seen != wanted => None,
            None => Some(Drift::Restored),
            Some(false) => Some(Drift::Reverted),
            Some(true) => None,
        }
    }
}

fn hash_of(value: impl Hash) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// A hash naming one child.
fn child_id(kind: &str, namespace: Option<&str>, name: &str) -> u64 {
    hash_of((kind, namespace, name))
}

/// The hashed uid of an object's first owner (that of "" for none).
fn owner_of(body: &Value) -> u64 {
    hash_of(body.pointer("/metadata/ownerReferences/0/uid").and_then(Value::as_str).unwrap_or_default())
}

/// Writes children with server-side apply, consulting a cache first.
#[derive(Clone)]
pub struct Applier {
    client: Client,
    guard: ConflictGuard,
    confirmed: Arc<Mutex<Confirmed>>,
    seen: Arc<Mutex<Seen>>,
    reads: Family<ChildLabels, Counter>,
    drift: Family<DriftLabels, Counter>,
}

impl Applier {
    /// An applier that counts the children it had to read whole in `reads`
    /// (see [`Holds::Unknown`]) and the drift it corrected in `drift`.
    pub fn new(client: Client, reads: Family<ChildLabels, Counter>, drift: Family<DriftLabels, Counter>) -> Self {
        Applier { client, guard: ConflictGuard::default(), confirmed: Default::default(), seen: Default::default(), reads, drift }
    }

    /// Forgets the children of an owner that is going: they are no drift
    /// to correct once it has gone.
    pub fn forget(&self, owner_uid: &str) {
        let owner = hash_of(owner_uid);
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).children.retain(|_, (_, o)| *o != owner);
    }

    fn api<K: Resource<DynamicType = ()>>(&self, namespace: Option<&str>) -> Api<DynamicObject> {
        let resource = ApiResource::erase::<K>(&());
        match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &resource),
            None => Api::all_with(self.client.clone(), &resource),
        }
    }

    /// Applies `desired` unless `cache` already holds an object that contains
    /// every field of it, forcing meshplane's values over any other manager's.
    pub async fn apply<K, C>(&self, cache: &Store<C>, desired: &K) -> Result<Guarded, ApplyError>
    where
        K: Resource<DynamicType = ()> + Serialize,
        C: Resource<DynamicType = ()> + Current + Clone + 'static,
    {
        self.apply_typed(cache, desired, false).await
    }

    /// Like [`Applier::apply`], but a foreign field manager's change is
    /// reported and, past [`CONFLICT_LIMIT`], left alone (see [`ConflictGuard`]).
    pub async fn apply_guarded<K, C>(&self, cache: &Store<C>, desired: &K) -> Result<Guarded, ApplyError>
    where
        K: Resource<DynamicType = ()> + Serialize,
        C: Resource<DynamicType = ()> + Current + Clone + 'static,
    {
        self.apply_typed(cache, desired, true).await
    }

    async fn apply_typed<K, C>(&self, cache: &Store<C>, desired: &K, guarded: bool) -> Result<Guarded, ApplyError>
    where
        K: Resource<DynamicType = ()> + Serialize,
        C: Resource<DynamicType = ()> + Current + Clone + 'static,
    {
        let name = desired.name_any();
        let namespace = desired.namespace();
        let mut key = ObjectRef::<C>::new(&name);
        if let Some(ns) = &namespace {
            key = key.within(ns);
        }
        let error = |source| ApplyError { kind: K::kind(&()).into_owned(), name: name.clone(), source };
        let mut body = serde_json::to_value(desired).map_err(|e| error(kube::Error::SerdeError(e)))?;
        body["apiVersion"] = K::api_version(&()).into();
        body["kind"] = K::kind(&()).into();
        // A list that grants access is applied even when empty, so that it
        // is meshplane's (and an entry someone adds is a change to undo).
        for path in crate::owned::granting_fields(&K::kind(&())) {
            if crate::owned::pointer(&body, path).is_none() {
                crate::owned::insert(&mut body, path, Value::Array(Vec::new()));
            }
        }
        let mut revoked = Vec::new();
        let held = match cache.get(&key).map(|current| current.holds(&body)).transpose().map_err(|e| error(kube::Error::SerdeError(e)))? {
            None => None,
            Some(Holds::Yes) => Some(true),
            Some(Holds::No) => Some(false),
            Some(Holds::Unknown { desired, cached }) => {
                let (held, foreign) = self.confirm::<K, C>(namespace.as_deref(), &name, &body, (desired, cached)).await?;
                revoked = foreign;
                Some(held)
            }
        };
        let mut written = self.apply_value(&ApiResource::erase::<K>(&()), namespace.as_deref(), &name, body, held, guarded).await?;
        if written.outcome != Outcome::Unchanged {
            written.revoked = revoked;
            for _ in &written.revoked {
                self.drift.get_or_create(&DriftLabels { kind: K::kind(&()).into_owned(), correction: "revoked" }).inc();
            }
        }
        Ok(written)
    }

    /// Whether the child named, read whole from the API server, holds every
    /// field of `body`; remembered per (desired, cached) digest pair, so an
    /// object whose server form differs from meshplane's (a normalised
    /// value) is read once, not on every pass.
    /// Also returns the entries of the child's granting lists that another
    /// writer added (see [`crate::owned::granting_fields`]).
    async fn confirm<K, C>(
        &self,
        namespace: Option<&str>,
        name: &str,
        body: &Value,
        digests: (u64, u64),
    ) -> Result<(bool, Vec<ForeignGrant>), ApplyError>
    where
        K: Resource<DynamicType = ()>,
        C: Current,
    {
        let id = child_id(&K::kind(&()), namespace, name);
        if self.confirmed.lock().unwrap_or_else(|e| e.into_inner()).get(&id) == Some(&digests) {
            return Ok((true, Vec::new()));
        }
        let error = |source| ApplyError { kind: K::kind(&()).into_owned(), name: name.to_string(), source };
        self.reads.get_or_create(&ChildLabels { kind: K::kind(&()).into_owned() }).inc();
        let Some(served) = self.api::<K>(namespace).get_opt(name).await.map_err(error)? else {
            return Ok((false, Vec::new()));
        };
        let served = serde_json::to_value(served).map_err(|e| error(kube::Error::SerdeError(e)))?;
        let foreign = crate::owned::foreign_grants(&K::kind(&()), &served, body);
        let turned_on = contradicted(&served, body);
        let served = C::comparable(served).map_err(|e| error(kube::Error::SerdeError(e)))?;
        let held = contains(&served, body) && !turned_on;
        tracing::debug!(kind = %K::kind(&()), name, held, "read a child whose cached digest differs from what meshplane would apply");
        let mut confirmed = self.confirmed.lock().unwrap_or_else(|e| e.into_inner());
        if held {
            confirmed.insert(id, digests);
        } else {
            confirmed.remove(&id);
        }
        Ok((held, foreign))
    }

    /// Applies an untyped object (a kind meshplane has no Rust type or cache
    /// for), given what the cluster holds now, guarded against fighting a
    /// foreign manager.
    pub async fn apply_dynamic_guarded(
        &self,
        resource: &ApiResource,
        desired: &DynamicObject,
        current: Option<&DynamicObject>,
    ) -> Result<Guarded, ApplyError> {
        self.apply_untyped(resource, desired, current, true).await
    }

    async fn apply_untyped(
        &self,
        resource: &ApiResource,
        desired: &DynamicObject,
        current: Option<&DynamicObject>,
        guarded: bool,
    ) -> Result<Guarded, ApplyError> {
        let name = desired.name_any();
        let error = |source| ApplyError { kind: resource.kind.clone(), name: name.clone(), source };
        let mut body = serde_json::to_value(desired).map_err(|e| error(kube::Error::SerdeError(e)))?;
        body["apiVersion"] = resource.api_version.clone().into();
        body["kind"] = resource.kind.clone().into();
        let held = match current {
            Some(c) => Some(contains(&serde_json::to_value(c).map_err(|e| error(kube::Error::SerdeError(e)))?, &body)),
            None => None,
        };
        self.apply_value(resource, desired.namespace().as_deref(), &name, body, held, guarded).await
    }

    async fn apply_value(
        &self,
        resource: &ApiResource,
        namespace: Option<&str>,
        name: &str,
        body: Value,
        held: Option<bool>,
        guarded: bool,
    ) -> Result<Guarded, ApplyError> {
        let id = child_id(&resource.kind, namespace, name);
        let wanted = crate::owned::digest(&body);
        if held == Some(true) {
            self.seen.lock().unwrap_or_else(|e| e.into_inner()).children.insert(id, (wanted, owner_of(&body)));
            return Ok(Guarded::unchanged());
        }
        let drift = self.seen.lock().unwrap_or_else(|e| e.into_inner()).drift(id, wanted, held);
        let mut written = self.write(resource, namespace, name, &body, held, guarded).await?;
        if written.outcome != Outcome::Unchanged {
            written.drift = drift;
            if let Some(drift) = drift {
                self.drift.get_or_create(&DriftLabels { kind: resource.kind.clone(), correction: drift.as_str() }).inc();
            }
        }
        Ok(written)
    }

    async fn write(
        &self,
        resource: &ApiResource,
        namespace: Option<&str>,
        name: &str,
        body: &Value,
        held: Option<bool>,
        guarded: bool,
    ) -> Result<Guarded, ApplyError> {
        let api: Api<DynamicObject> = match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, resource),
            None => Api::all_with(self.client.clone(), resource),
        };
        let error = |source| ApplyError { kind: resource.kind.clone(), name: name.to_string(), source };
        let written = if held.is_some() { Outcome::Updated } else { Outcome::Created };
        let forced = PatchParams::apply(keys::FIELD_MANAGER).force();
        if !guarded {
            api.patch(name, &forced, &Patch::Apply(body)).await.map_err(error)?;
            return Ok(Guarded::written(written));
        }
        let managers = match api.patch(name, &PatchParams::apply(keys::FIELD_MANAGER), &Patch::Apply(body)).await {
            Ok(_) => return Ok(Guarded::written(written)),
            Err(kube::Error::Api(status)) if status.code == 409 && status.message.starts_with("Apply failed") => {
                let managers = parse_conflicts(&status.message);
                if managers.is_empty() { vec![("unknown".to_string(), vec![status.message])] } else { managers }
            }
            Err(source) => return Err(error(source)),
        };
        // meshplane's own non-apply writes (a released claim's labels) are
        // no foreign manager: take the fields back without a word.
        let managers: Vec<_> = managers.into_iter().filter(|(m, _)| m != keys::FIELD_MANAGER).collect();
        if managers.is_empty() {
            api.patch(name, &forced, &Patch::Apply(body)).await.map_err(error)?;
            return Ok(Guarded::written(written));
        }
        let object = format!("{}/{}/{name}", resource.kind, namespace.unwrap_or_default());
        // A list that grants access is never yielded: whoever changed it
        // widened someone's access, and meshplane takes it back every time.
        let grants = touches_grants(&resource.kind, &managers);
        let (restore, restores, retry_after) = if grants { (true, 1, None) } else { self.guard.decide(&object, &managers, Instant::now()) };
        let conflict =
            Conflict { kind: resource.kind.clone(), name: name.to_string(), managers, restores, restored: restore, retry_after, grants };
        if !restore {
            return Ok(Guarded { conflict: Some(conflict), ..Guarded::unchanged() });
        }
        api.patch(name, &forced, &Patch::Apply(body)).await.map_err(error)?;
        Ok(Guarded { conflict: Some(conflict), ..Guarded::written(Outcome::Updated) })
    }

    /// Deletes the cached objects that `owned` selects and `keep` does not
    /// name. Called only after every apply of a pass succeeded.
    pub async fn prune<K>(&self, owned: Vec<Arc<K>>, keep: &[String]) -> Result<Vec<String>, ApplyError>
    where
        K: Resource<DynamicType = ()> + Clone + Debug + Send + Sync + 'static,
    {
        let mut pruned = Vec::new();
        for object in owned {
            let name = object.name_any();
            if keep.contains(&name) || object.meta().deletion_timestamp.is_some() {
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

/// Whether a conflict names a field in (or under) one of `kind`'s lists
/// that grant access.
fn touches_grants(kind: &str, managers: &[(String, Vec<String>)]) -> bool {
    let lists: Vec<String> = crate::owned::granting_fields(kind).iter().map(|path| format!(".{}", path.join("."))).collect();
    managers.iter().flat_map(|(_, fields)| fields).any(|field| {
        lists.iter().any(|list| field.strip_prefix(list.as_str()).is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '['])))
    })
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
    fn conflicts_name_their_managers_and_fields() {
        // As kube-apiserver v1.34 words them.
        let one = "Apply failed with 1 conflict: conflict with \"kubectl-patch\" using apps/v1: .spec.replicas";
        assert_eq!(parse_conflicts(one), vec![("kubectl-patch".to_string(), vec![".spec.replicas".to_string()])]);
        let two = "Apply failed with 2 conflicts: conflicts with \"kubectl-label\" using v1:\n- .metadata.labels.a\nconflicts with \"kubectl-patch\" using v1:\n- .data.x";
        assert_eq!(
            parse_conflicts(two),
            vec![
                ("kubectl-label".to_string(), vec![".metadata.labels.a".to_string()]),
                ("kubectl-patch".to_string(), vec![".data.x".to_string()])
            ]
        );
        let applied = "Apply failed with 1 conflict: conflict with \"argo \\\"cd\\\"\": .spec.template.spec.containers[name=\"c\"].image";
        assert_eq!(
            parse_conflicts(applied),
            vec![("argo \"cd\"".to_string(), vec![".spec.template.spec.containers[name=\"c\"].image".to_string()])]
        );
        let scale = "Apply failed with 1 conflict: conflict with \"kubectl\" with subresource \"scale\" using apps/v1 at 2026-01-01T00:00:00Z: .spec.replicas";
        assert_eq!(parse_conflicts(scale), vec![("kubectl".to_string(), vec![".spec.replicas".to_string()])]);
    }

    #[test]
    fn a_manager_that_keeps_coming_back_is_given_up_on() {
        let guard = ConflictGuard::default();
        let managers = vec![("hpa".to_string(), vec![".spec.replicas".to_string()])];
        let t0 = Instant::now();
        for n in 1..=CONFLICT_LIMIT {
            assert_eq!(guard.decide("Deployment/ns/d", &managers, t0 + Duration::from_secs(n as u64)), (true, n, None));
        }
        let (restore, restores, retry) = guard.decide("Deployment/ns/d", &managers, t0 + Duration::from_secs(61));
        assert!(!restore);
        assert_eq!(restores, CONFLICT_LIMIT);
        assert_eq!(retry, Some(CONFLICT_WINDOW - Duration::from_secs(60)));
        // Another object, or another manager on it, is counted apart.
        assert!(guard.decide("Deployment/ns/e", &managers, t0 + Duration::from_secs(62)).0);
        // Once the oldest restore has left the window, meshplane forces again.
        assert!(guard.decide("Deployment/ns/d", &managers, t0 + CONFLICT_WINDOW + Duration::from_secs(2)).0);
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

    #[test]
    fn drift_is_what_changed_after_meshplane_saw_its_child_in_place() {
        let mut seen = Seen::default();
        // Never seen in place: a first creation, no drift.
        assert_eq!(seen.drift(1, 10, None), None);
        seen.children.insert(1, (10, 0));
        assert_eq!(seen.drift(1, 10, None), Some(Drift::Restored));
        assert_eq!(seen.drift(1, 10, Some(false)), Some(Drift::Reverted));
        // meshplane wants something else now: a change of its own, no drift.
        assert_eq!(seen.drift(1, 11, Some(false)), None);
        assert_eq!(seen.drift(1, 11, None), None);
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
