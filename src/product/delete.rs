//! A product's deletion: each storage's deletion policy, behind a
//! finalizer. Everything else goes by garbage collection.

use kube::ResourceExt;
use kube::api::{Api, DynamicObject, ListParams};
use kube::core::ApiResource;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use super::observe;
use crate::api::DataProduct;
use crate::api::product::{DeletionPolicy, StorageKind};
use crate::error::{Error, Result};
use crate::keys;
use crate::operator::Context;
use crate::storage;

/// Applies each storage's deletion policy to the storage this product owns
/// (and only that: objects are matched by the product's uid), then lets the
/// product go. Storage no longer in the spec is retained: data is deleted
/// only when the user asked for it.
pub async fn finalize(product: &DataProduct, ctx: &Context) -> Result<Action> {
    if !product.finalizers().iter().any(|f| f == keys::FINALIZER_PRODUCT) {
        return Ok(Action::await_change());
    }
    for kind in [StorageKind::Volume, StorageKind::Bucket] {
        let backend = storage::backend(kind);
        if !observe::backend_installed(ctx, &backend.api_resources()).await? {
            continue;
        }
        for resource in backend.api_resources() {
            for object in owned_storage(product, ctx, &resource).await? {
                let entry = object.labels().get(keys::LABEL_STORAGE).and_then(|s| product.spec.storage.iter().find(|e| &e.name == s));
                match entry.map(|e| e.deletion_policy).unwrap_or(DeletionPolicy::Retain) {
                    DeletionPolicy::Delete => delete(product, ctx, &resource, &object).await?,
                    DeletionPolicy::Retain => retain(product, ctx, &resource, &object).await?,
                }
            }
        }
    }
    ctx.write.remove_finalizer(product, keys::FINALIZER_PRODUCT).await?;
    Ok(Action::await_change())
}

/// The product's storage objects of one kind, as the API server lists
/// them now (not the cache: deletion must not act on a stale view).
async fn owned_storage(product: &DataProduct, ctx: &Context, resource: &ApiResource) -> Result<Vec<DynamicObject>> {
    let namespace = product.namespace().unwrap_or_default();
    let uid = product.metadata.uid.clone().unwrap_or_default();
    let selector = format!("{}={}", keys::LABEL_PRODUCT, product.name_any());
    let api = Api::<DynamicObject>::namespaced_with(ctx.client.clone(), &namespace, resource);
    let objects = api.list(&ListParams::default().labels(&selector)).await.map_err(Error::kube(format!("listing {}", resource.plural)))?;
    Ok(objects.items.into_iter().filter(|o| o.owner_references().iter().any(|r| r.uid == uid)).collect())
}

async fn delete(product: &DataProduct, ctx: &Context, resource: &ApiResource, object: &DynamicObject) -> Result<()> {
    let name = object.name_any();
    ctx.write.delete(resource, object.metadata.namespace.as_deref(), &name).await?;
    let note = format!("Deleted {} {name} and its data (deletionPolicy: Delete)", resource.kind);
    tracing::info!(product = %product.name_any(), namespace = %product.namespace().unwrap_or_default(), "{note}");
    ctx.write.publish(product, EventType::Normal, "StorageDeleted", "Delete", note, None).await;
    Ok(())
}

async fn retain(product: &DataProduct, ctx: &Context, resource: &ApiResource, object: &DynamicObject) -> Result<()> {
    let name = object.name_any();
    let namespace = product.namespace().unwrap_or_default();
    let uid = product.metadata.uid.clone().unwrap_or_default();
    let from = format!("DataProduct {namespace}/{} (uid {uid})", product.name_any());
    ctx.write.release(resource, object, &uid, &from).await?;
    let note = format!("Retained {} {name} with its data, labelled {}=true (deletionPolicy: Retain)", resource.kind, keys::LABEL_ORPHANED);
    tracing::info!(product = %product.name_any(), %namespace, "{note}");
    ctx.write.publish(product, EventType::Normal, "StorageRetained", "Delete", note, None).await;
    Ok(())
}
