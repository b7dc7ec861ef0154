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
use std::time::Instant;

use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::ApiResource;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::Serialize;
use serde_json::Value;

use super::conflict::{Conflict, ConflictGuard, parse_conflicts};
use super::grants::{ForeignGrant, foreign_grants, touches_grants};
use crate::error::ApplyError;
use crate::keys;
use crate::plumbing::compare::{contains, contradicted, insert, pointer};
use crate::plumbing::owned::{Holds, Owned, Served};
use crate::telemetry::{ChildLabels, DriftLabels};

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

impl<K: Resource<DynamicType = ()> + Served> Current for Owned<K> {
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
    /// reported and, past [`super::conflict::CONFLICT_LIMIT`], left alone (see [`ConflictGuard`]).
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
        for path in keys::granting_fields(&K::kind(&())) {
            if pointer(&body, path).is_none() {
                insert(&mut body, path, Value::Array(Vec::new()));
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
    /// writer added (see [`keys::granting_fields`]).
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
        let foreign = foreign_grants(&K::kind(&()), &served, body);
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
        let wanted = crate::plumbing::owned::digest(&body);
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
