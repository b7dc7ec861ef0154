//! Filters on a kind's changes: a controller that reads a few fields of
//! another kind is woken only when those change.

use futures::StreamExt;
use kube::Resource;

use super::watch::Events;

/// Passes an object's change on only when `key` of it differs from the last
/// one passed on for that object; an object's first change and its deletion
/// always pass.
/// A controller that reads a few fields of another kind is then not woken by
/// that kind's other writes (a status it does not read, a product count).
pub fn when_changed<K, T>(events: Events<K>, key: impl Fn(&K) -> T + Send + 'static) -> Events<K>
where
    K: Resource + Send + Sync + 'static,
    T: std::hash::Hash,
{
    // By namespace and name: an object deleted and made again replaces its
    // entry, so the map is bounded by the names in use, not by churn. Both
    // the name and the key are kept as 64-bit hashes (16 bytes an object,
    // however large what the key covers); two colliding is as likely as not
    // at all.
    fn hash_of(value: &impl std::hash::Hash) -> u64 {
        let mut hasher = std::hash::DefaultHasher::new();
        value.hash(&mut hasher);
        std::hash::Hasher::finish(&hasher)
    }
    let mut last = std::collections::HashMap::<u64, u64>::new();
    events
        .filter(move |change| {
            let meta = change.object.meta();
            let id = hash_of(&(&meta.namespace, &meta.name));
            let changed = if change.deleted {
                last.remove(&id);
                true
            } else {
                let key = hash_of(&key(&change.object));
                last.insert(id, key) != Some(key)
            };
            futures::future::ready(changed)
        })
        .boxed()
}

/// A product or domain's identity: its uid, and whether it is being deleted.
pub fn existence<K: Resource>(object: &K) -> (Option<String>, bool) {
    (object.meta().uid.clone(), object.meta().deletion_timestamp.is_some())
}

/// Changes to what others read of an object: its spec (the generation), its
/// labels, its existence.
pub fn spec_changes<K: Resource + Send + Sync + 'static>(events: Events<K>) -> Events<K> {
    when_changed(events, |o| (existence(o), o.meta().generation, o.meta().labels.clone()))
}

/// An object's arrival and the start of its deletion.
pub fn arrivals_and_departures<K: Resource + Send + Sync + 'static>(events: Events<K>) -> Events<K> {
    when_changed(events, existence)
}
