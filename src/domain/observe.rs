//! What a domain pass reads: its namespace, its products.

use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kube::runtime::reflector::ObjectRef;

use super::validate::ValidDomain;
use crate::api::{DataDomain, DataProduct};
use crate::error::{Error, Result};
use crate::keys;
use crate::operator::Context;

pub enum NamespaceState {
    Absent,
    Owned,
    Terminating,
    Foreign,
}

/// Where the domain's namespace stands: from the cache when meshplane made
/// it, from the API server otherwise (a foreign namespace is not cached).
pub async fn namespace(domain: &ValidDomain<'_>, ctx: &Context) -> Result<NamespaceState> {
    let namespace = match ctx.caches.namespaces.get(&ObjectRef::new(&domain.namespace)) {
        Some(ns) => Some((*ns).clone()),
        None => read_namespace(&domain.namespace, ctx).await?,
    };
    let Some(namespace) = namespace else {
        return Ok(NamespaceState::Absent);
    };
    let owned = namespace.owner_references().iter().any(|o| o.uid == domain.uid);
    let ours = namespace.labels().get(keys::LABEL_DOMAIN).map(String::as_str) == Some(domain.name)
        && namespace.labels().get(keys::LABEL_MANAGED_BY).map(String::as_str) == Some(keys::MANAGED_BY);
    Ok(match (owned, namespace.metadata.deletion_timestamp.is_some()) {
        (true, false) => NamespaceState::Owned,
        // A namespace of an earlier DataDomain of the same name, on its way out.
        (_, true) if owned || ours => NamespaceState::Terminating,
        _ => NamespaceState::Foreign,
    })
}

async fn read_namespace(name: &str, ctx: &Context) -> Result<Option<Namespace>> {
    Api::<Namespace>::all(ctx.client.clone()).get_opt(name).await.map_err(Error::kube(format!("reading namespace {name}")))
}

/// Whether the namespace exists and this domain owns it (asked of the API
/// server: deletion must not act on a stale cache).
pub async fn owns_namespace(domain: &DataDomain, namespace: &str, ctx: &Context) -> Result<bool> {
    Ok(match read_namespace(namespace, ctx).await? {
        Some(ns) => domain.metadata.uid.as_deref().is_some_and(|uid| ns.owner_references().iter().any(|o| o.uid == uid)),
        None => false,
    })
}

/// The products in `namespace`, by name, and whether every one of them is
/// already on its way out. Asked of the API server, not the cache: a
/// product the cache has not seen yet must not be deleted with the namespace.
pub async fn remaining_products(namespace: &str, ctx: &Context) -> Result<(Vec<String>, bool)> {
    match Api::<DataProduct>::namespaced(ctx.client.clone(), namespace).list_metadata(&ListParams::default()).await {
        Ok(list) => {
            let going = list.items.iter().all(|p| p.metadata.deletion_timestamp.is_some());
            Ok((list.items.iter().map(|p| p.name_any()).collect(), going))
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Ok((Vec::new(), true)),
        Err(e) => Err(Error::kube(format!("listing DataProducts in {namespace}"))(e)),
    }
}

/// The domain's products, but for those being deleted (the start of a
/// product's deletion already takes it out of the count).
pub fn product_count(namespace: &str, ctx: &Context) -> i32 {
    ctx.caches
        .products
        .state()
        .iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(namespace) && p.metadata.deletion_timestamp.is_none())
        .count() as i32
}
