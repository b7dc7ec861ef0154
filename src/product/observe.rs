//! What a product pass reads: its domain, its storage as the cluster holds
//! it, its runs, and which products a change of another object concerns.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Namespace};
use kube::ResourceExt;
use kube::api::{Api, DynamicObject, ListParams};
use kube::core::ApiResource;
use kube::runtime::reflector::{ObjectRef, Store};

use super::KIND;
use super::apply::{Applied, resource_of};
use super::build::ProductBundle;
use super::validate::ValidProduct;
use crate::api::product::StorageKind;
use crate::api::{DataDomain, DataProduct};
use crate::error::{Error, Result};
use crate::keys;
use crate::leader::Leadership;
use crate::operator::Context;
use crate::operator::context::run_key;
use crate::storage::{self, Explanation, StorageState};

/// The DataDomain whose namespace (made by meshplane, labelled with the
/// domain) holds the product.
pub fn owning_domain(product: &DataProduct, ctx: &Context) -> Option<Arc<DataDomain>> {
    let ns = ctx.caches.namespaces.get(&ObjectRef::new(product.namespace().as_deref()?))?;
    if ns.labels().get(keys::LABEL_MANAGED_BY).map(String::as_str) != Some(keys::MANAGED_BY) {
        return None;
    }
    let domain = ctx.caches.domains.get(&ObjectRef::new(ns.labels().get(keys::LABEL_DOMAIN)?))?;
    let uid = domain.metadata.uid.as_deref()?;
    ns.owner_references().iter().any(|o| o.uid == uid).then_some(domain)
}

/// Products whose inputs name the given producer: by its domain, or, with
/// no domain named, from the producer's own namespace.
pub fn consumers_of(products: &Store<DataProduct>, namespaces: &Store<Namespace>, producer: &DataProduct) -> Vec<ObjectRef<DataProduct>> {
    // The producer's domain is its namespace's (products carry no domain
    // label of their own).
    let namespace = producer.namespace().unwrap_or_default();
    let name = producer.name_any();
    let domain = namespaces.get(&ObjectRef::new(&namespace)).and_then(|ns| ns.labels().get(keys::LABEL_DOMAIN).cloned());
    let domain = domain.as_deref();
    products
        .state()
        .into_iter()
        .filter(|p| {
            p.spec.inputs.iter().any(|i| {
                i.product == name
                    && match &i.domain {
                        Some(d) => Some(d.as_str()) == domain,
                        None => p.metadata.namespace.as_deref() == Some(namespace.as_str()),
                    }
            })
        })
        .map(|p| ObjectRef::from_obj(p.as_ref()))
        .collect()
}

/// Products a domain's change concerns: those in its namespace, and those
/// that grant it access or read from it.
pub fn products_of_domain(products: &Store<DataProduct>, domain: &DataDomain, namespace: &str) -> Vec<ObjectRef<DataProduct>> {
    let name = domain.name_any();
    products
        .state()
        .into_iter()
        .filter(|p| {
            p.metadata.namespace.as_deref() == Some(namespace)
                || p.spec.access.consumers.iter().any(|c| c.domain.as_deref() == Some(name.as_str()))
                || p.spec.inputs.iter().any(|i| i.domain.as_deref() == Some(name.as_str()))
        })
        .map(|p| ObjectRef::from_obj(p.as_ref()))
        .collect()
}

/// The products whose storage objects of a kind meshplane keeps no cache
/// of (a Bucket's claim and access) changed or went. Each such kind is
/// watched by metadata alone; while its CRDs are not installed, its watch
/// retries with backoff (at most every 30 s) and says nothing: the product
/// already reports `BackendNotInstalled`.
pub fn storage_object_changes(client: kube::Client, leadership: Leadership) -> impl futures::Stream<Item = ObjectRef<DataProduct>> {
    use kube::runtime::{WatchStreamExt, watcher};
    let resources = storage::backend(StorageKind::Bucket).api_resources();
    let watches = resources.into_iter().map(move |resource| {
        let api = Api::<kube::core::PartialObjectMeta<DynamicObject>>::all_with(client.clone(), &resource);
        watcher(api, watcher::Config::default().labels(keys::MANAGED_SELECTOR))
            .default_backoff()
            .filter_map(|event| async move {
                let (watcher::Event::Apply(object) | watcher::Event::Delete(object)) = event.ok()? else {
                    return None;
                };
                let namespace = object.metadata.namespace.clone()?;
                let owners: Vec<ObjectRef<DataProduct>> = object
                    .metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .filter(|o| o.kind == KIND)
                    .map(|o| ObjectRef::new(&o.name).within(&namespace))
                    .collect();
                Some(futures::stream::iter(owners))
            })
            .flatten()
            .boxed()
    });
    // Only the leader reconciles.
    futures::stream::select_all(watches).filter(move |_| futures::future::ready(leadership.is_leader()))
}

/// Each storage entry's state, and how long the newest storage that is not
/// ready yet has left to settle (see [`storage::SETTLING`]), if any.
pub async fn storage(
    valid: &ValidProduct<'_>,
    bundle: &ProductBundle,
    applied: &Applied,
    ctx: &Context,
    now: jiff::Timestamp,
) -> (Vec<(String, StorageState)>, Option<Duration>) {
    let mut states = Vec::new();
    let mut settling: Option<Duration> = None;
    let storage_class = |name: &str| ctx.caches.storage_classes.get(&ObjectRef::new(name));
    let lookup = storage::Lookup { storage_class: &storage_class, now };
    for (storage, (name, kind, objects)) in valid.product.spec.storage.iter().zip(&bundle.storage) {
        if applied.missing_backends.contains(name) {
            let resources: Vec<String> =
                storage::backend(*kind).api_resources().iter().map(|r| format!("{}.{}", r.plural, r.group)).collect();
            let message = format!(
                "storage `{name}` is a {kind:?}, but the cluster does not serve {}; install its CRDs and driver",
                resources.join(", ")
            );
            states.push((name.clone(), StorageState { ready: false, reason: "BackendNotInstalled", message }));
            continue;
        }
        let mut current = Vec::new();
        for object in objects {
            let resource = resource_of(object);
            let key = (resource.kind.clone(), object.name_any());
            let read = applied.storage_read.iter().find(|(k, _)| *k == key).map(|(_, read)| read.clone());
            current.push(match read {
                Some(read) => read,
                None => current_object(ctx, &resource, object).await.ok().flatten(),
            });
        }
        let backend = storage::backend(*kind);
        let mut state = backend.state(storage, &current);
        if !state.ready {
            state = match backend.explain(&lookup, &state, &current) {
                Explanation::Nothing => state,
                Explanation::State(explained) => explained,
                Explanation::Events { kind, what, name } => match newest_event(ctx, valid.namespace, kind, &name).await {
                    Some(event) => storage::explained_by(&state, what, &name, &event),
                    None => state,
                },
            };
        }
        if !state.ready {
            // The longest wait left (`None` orders below any wait).
            settling = settling.max(super::status::settling_left(&current, now));
        }
        states.push((name.clone(), state));
    }
    (states, settling)
}

/// The newest Event about an object, which says why it is not ready.
async fn newest_event(ctx: &Context, namespace: &str, kind: &str, name: &str) -> Option<Event> {
    let events = Api::<Event>::namespaced(ctx.client.clone(), namespace)
        .list(&ListParams::default().fields(&format!("involvedObject.kind={kind},involvedObject.name={name}")))
        .await
        .ok()?;
    events.items.into_iter().max_by_key(|e| e.last_timestamp.clone().map(|t| t.0))
}

/// The product's pipeline runs (Jobs) and continuous pipelines
/// (Deployments), from the caches.
pub fn runs(valid: &ValidProduct<'_>, bundle: &ProductBundle, ctx: &Context) -> (Vec<Arc<Job>>, Vec<Arc<Deployment>>) {
    let jobs = ctx.caches.indexes.jobs.get(&ctx.caches.jobs, &run_key(valid.namespace, valid.name));
    let deployments = bundle.deployments.iter().filter_map(|d| ctx.caches.deployments.get(&ObjectRef::from_obj(d))).collect();
    (jobs, deployments)
}

/// What the cluster holds for a storage object: claims from the cache,
/// other kinds (no cache: their CRDs may be absent) by a read.
pub async fn current_object(ctx: &Context, resource: &ApiResource, object: &DynamicObject) -> Result<Option<DynamicObject>> {
    let name = object.name_any();
    let namespace = object.namespace().unwrap_or_default();
    if resource.kind == "PersistentVolumeClaim" {
        let Some(pvc) = ctx.caches.claims.get(&ObjectRef::new(&name).within(&namespace)) else {
            return Ok(None);
        };
        let value = pvc.current().map_err(|source| Error::Serialize { what: "claim", source })?;
        return serde_json::from_value(value).map(Some).map_err(|source| Error::Serialize { what: "claim", source });
    }
    Api::<DynamicObject>::namespaced_with(ctx.client.clone(), &namespace, resource)
        .get_opt(&name)
        .await
        .map_err(Error::kube(format!("reading {} {name}", resource.kind)))
}

/// Whether the cluster serves every resource a backend writes.
pub async fn backend_installed(ctx: &Context, resources: &[ApiResource]) -> Result<bool> {
    for resource in resources {
        if resource.group.is_empty() {
            continue;
        }
        match ctx.client.list_api_group_resources(&resource.api_version).await {
            Ok(list) => {
                if !list.resources.iter().any(|r| r.name == resource.plural) {
                    return Ok(false);
                }
            }
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(false),
            Err(e) => return Err(Error::kube(format!("discovering {}", resource.api_version))(e)),
        }
    }
    Ok(true)
}
