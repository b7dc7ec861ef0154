//! Kubernetes plumbing that knows no meshplane rule: the watch fan-out,
//! the by-key index, change filters, quantities and the comparison of a
//! desired object with a served one, the `Owned` child cache type, owner
//! references. (Not named `kube`: a module of that name would shadow the
//! crate.)

pub mod compare;
pub mod filter;
pub mod index;
pub mod owned;
pub mod quantity;
pub mod watch;

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;
use kube::runtime::reflector::{ObjectRef, Store};

/// A reference to the object of kind `K` named `name` as the controlling
/// owner of another: garbage collection deletes the child with it, and
/// `kubectl` shows who made it.
pub fn controller_owner<K: Resource<DynamicType = ()>>(name: &str, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: name.to_string(),
        uid: uid.to_string(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Every object of a cache, as a mapping from any change to all of them.
pub fn every<K, T>(store: &Store<K>) -> impl Fn(Arc<T>) -> Vec<ObjectRef<K>> + use<K, T>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let store = store.clone();
    move |_| store.state().iter().map(|o| ObjectRef::from_obj(o.as_ref())).collect()
}
