//! One kind's cached objects by a key of theirs, kept current by the kind's
//! watch.

use std::sync::Arc;

use kube::Resource;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;

/// One kind's cached objects by a key of theirs (their owner's uid, the
/// product a run belongs to), kept current by the kind's watch: a pass looks
/// up its own children instead of scanning every object of the kind in the
/// cluster, so a pass costs O(its children) and a full resync O(N).
///
/// A key's objects are few (a product's network policies), so they are kept
/// in a list of exactly their number, by name and namespace only: what a
/// cache lookup compares.
pub struct ByKey<K: Resource<DynamicType = ()> + Clone + 'static> {
    keys: fn(&K) -> Vec<String>,
    entries: Arc<std::sync::RwLock<std::collections::HashMap<String, Vec<ObjectRef<K>>>>>,
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> Clone for ByKey<K> {
    fn clone(&self) -> Self {
        ByKey { keys: self.keys, entries: self.entries.clone() }
    }
}

/// An object's name and namespace, as a cache lookup compares them.
pub fn lookup_ref<K: Resource<DynamicType = ()>>(object: &K) -> ObjectRef<K> {
    let meta = object.meta();
    let name = ObjectRef::new(meta.name.as_deref().unwrap_or_default());
    match &meta.namespace {
        Some(namespace) => name.within(namespace),
        None => name,
    }
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> ByKey<K> {
    /// An index by the objects' `keys`.
    pub fn new(keys: fn(&K) -> Vec<String>) -> Self {
        ByKey { keys, entries: Default::default() }
    }

    /// An index by owner uid.
    pub fn by_owner() -> Self {
        ByKey::new(|o| o.meta().owner_references.iter().flatten().map(|r| r.uid.clone()).collect())
    }

    fn insert(&self, entries: &mut std::collections::HashMap<String, Vec<ObjectRef<K>>>, object: &K) {
        let id = lookup_ref(object);
        for key in (self.keys)(object) {
            let refs = entries.entry(key).or_default();
            if !refs.contains(&id) {
                refs.push(id.clone());
                refs.shrink_to_fit();
            }
        }
    }

    /// Follows one watch event, once `cache` holds it. A relist is taken
    /// whole when it completes, like the cache takes it.
    pub fn apply(&self, event: &watcher::Event<K>, cache: &Store<K>) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        match event {
            watcher::Event::Apply(o) | watcher::Event::InitApply(o) => self.insert(&mut entries, o),
            watcher::Event::Delete(o) => {
                let id = lookup_ref(o);
                for key in (self.keys)(o) {
                    if let Some(refs) = entries.get_mut(&key) {
                        refs.retain(|r| *r != id);
                        if refs.is_empty() {
                            entries.remove(&key);
                        }
                    }
                }
            }
            watcher::Event::Init => {}
            watcher::Event::InitDone => {
                entries.clear();
                for o in cache.state() {
                    self.insert(&mut entries, &o);
                }
            }
        }
    }

    /// What keeps the index current: the kind's watch calls it.
    pub fn follow(&self) -> impl Fn(&watcher::Event<K>, &Store<K>) + Send + 'static
    where
        K: Send + Sync,
    {
        let index = self.clone();
        move |event, cache| index.apply(event, cache)
    }

    /// The cached objects under `key` now.
    pub fn get(&self, cache: &Store<K>, key: &str) -> Vec<Arc<K>> {
        let refs: Vec<ObjectRef<K>> = {
            let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
            entries.get(key).cloned().unwrap_or_default()
        };
        // A key an object no longer has (an owner reference removed from a
        // released claim) leaves its entry behind until the object's next
        // event: checked here.
        refs.iter().filter_map(|r| cache.get(r)).filter(|o| (self.keys)(o).iter().any(|k| k == key)).collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::rbac::v1::RoleBinding;
    use kube::ResourceExt;
    use kube::runtime::reflector;

    /// A RoleBinding `name` owned by the object of uid `owner`.
    pub(crate) fn binding(name: &str, owner: &str) -> RoleBinding {
        serde_saphyr::from_str(&format!(
            "metadata: {{name: {name}, namespace: dm-a, ownerReferences: [{{apiVersion: v1, kind: X, name: x, uid: {owner}}}]}}\n\
             roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: r}}"
        ))
        .unwrap()
    }

    #[test]
    fn children_are_found_by_their_owner_through_changes_and_relists() {
        let (cache, mut writer) = reflector::store::<RoleBinding>();
        let index = ByKey::<RoleBinding>::by_owner();
        let mut feed = |event: watcher::Event<RoleBinding>| {
            writer.apply_watcher_event(&event);
            index.apply(&event, &cache);
        };
        feed(watcher::Event::Apply(binding("a1", "uid-a")));
        feed(watcher::Event::Apply(binding("a2", "uid-a")));
        feed(watcher::Event::Apply(binding("b1", "uid-b")));
        let names = |uid: &str| {
            let mut names: Vec<String> = index.get(&cache, uid).iter().map(|o| o.name_any()).collect();
            names.sort();
            names
        };
        assert_eq!(names("uid-a"), ["a1", "a2"]);
        assert_eq!(names("uid-b"), ["b1"]);
        feed(watcher::Event::Delete(binding("a1", "uid-a")));
        assert_eq!(names("uid-a"), ["a2"]);
        // An owner reference taken away: no longer that owner's child.
        let mut released = binding("b1", "uid-b");
        released.metadata.owner_references = None;
        feed(watcher::Event::Apply(released));
        assert!(names("uid-b").is_empty());
        // A relist drops what it no longer lists.
        feed(watcher::Event::Init);
        feed(watcher::Event::InitApply(binding("c1", "uid-c")));
        feed(watcher::Event::InitDone);
        assert!(names("uid-a").is_empty());
        assert_eq!(names("uid-c"), ["c1"]);
    }
}
