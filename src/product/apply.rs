//! A product's children, applied through the writer in order (storage,
//! access, pipelines), each one's outcome taken into the pass.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::DynamicObject;
use kube::core::ApiResource;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};

use super::build::ProductBundle;
use super::validate::ValidProduct;
use super::{events, observe};
use crate::api::DataProduct;
use crate::error::{ApplyError, Error, Result};
use crate::keys;
use crate::operator::Context;
use crate::storage;
use crate::write::{Conflict, Guarded, Outcome};

/// What applying the bundle achieved.
pub struct Applied {
    pub storage_ok: bool,
    /// Storage entries whose backend the cluster does not serve.
    pub missing_backends: Vec<String>,
    pub access_ok: bool,
    pub pipelines_ok: bool,
    pub created: bool,
    /// The pass created the product's first child: it provisioned the product.
    pub first: bool,
    /// The pass granted a consumer access.
    pub granted: bool,
    /// "created ServiceAccount a", "granted domain b read access (RoleBinding
    /// c)", "updated Role d", ...: one Event reports them.
    pub changes: Vec<String>,
    /// Children a ResourceQuota refused; the pass went on with the others.
    pub refused: Vec<Refusal>,
    /// Children another field manager had changed (restored or yielded).
    pub conflicts: Vec<Conflict>,
    /// Storage objects as read by a pass that left them unchanged, by kind
    /// and name: observing them afterwards needs no second read.
    pub storage_read: Vec<((String, String), Option<DynamicObject>)>,
    pub result: Result<()>,
}

/// The part of a product (and its condition) a child belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Storage,
    Access,
    Pipelines,
}

/// A child that would exceed its namespace's ResourceQuota, with the API
/// server's message (which names the quota, what was requested, used and
/// allowed).
pub struct Refusal {
    pub part: Part,
    pub message: String,
}

pub async fn apply(product: &DataProduct, valid: &ValidProduct<'_>, bundle: &ProductBundle, ctx: &Context) -> Applied {
    let mut applied = Applied {
        storage_ok: false,
        missing_backends: Vec::new(),
        access_ok: false,
        pipelines_ok: false,
        created: false,
        first: false,
        granted: false,
        changes: Vec::new(),
        refused: Vec::new(),
        conflicts: Vec::new(),
        storage_read: Vec::new(),
        result: Ok(()),
    };
    let c = &ctx.caches;
    let a = &ctx.write.applier;
    let result = async {
        let (sa, descriptor) = (&bundle.service_account, &bundle.descriptor);
        let outcome =
            settle(product, ctx, sa.object_ref(&()), a.apply_guarded(&c.service_accounts, sa).await, Part::Pipelines, &mut applied).await?;
        // Every product's first child: this pass provisions the product.
        applied.first = outcome == Outcome::Created;
        settle(product, ctx, descriptor.object_ref(&()), a.apply_guarded(&c.config_maps, descriptor).await, Part::Access, &mut applied)
            .await?;

        for (name, kind, objects) in &bundle.storage {
            let backend = storage::backend(*kind);
            if !observe::backend_installed(ctx, &backend.api_resources()).await? {
                applied.missing_backends.push(name.clone());
                continue;
            }
            for object in objects {
                let resource = resource_of(object);
                let current = observe::current_object(ctx, &resource, object).await?;
                let result = a.apply_dynamic_guarded(&resource, object, current.as_ref()).await;
                let reference = ObjectReference {
                    api_version: Some(resource.api_version.clone()),
                    kind: Some(resource.kind.clone()),
                    name: object.metadata.name.clone(),
                    namespace: object.metadata.namespace.clone(),
                    ..Default::default()
                };
                let refused = applied.refused.len();
                let outcome = settle(product, ctx, reference.clone(), result, Part::Storage, &mut applied).await?;
                if applied.refused.len() == refused
                    && let Some(released) = current.as_ref().filter(|c| c.labels().get(keys::LABEL_ORPHANED).is_some())
                {
                    events::reclaimed(product, ctx, &resource, released, reference).await?;
                } else if outcome == Outcome::Unchanged {
                    applied.storage_read.push(((resource.kind.clone(), object.name_any()), current));
                }
            }
        }
        applied.storage_ok = true;

        let role = &bundle.role;
        settle(product, ctx, role.object_ref(&()), a.apply_guarded(&c.roles, role).await, Part::Access, &mut applied).await?;
        for rb in &bundle.role_bindings {
            let outcome =
                settle(product, ctx, rb.object_ref(&()), a.apply_guarded(&c.role_bindings, rb).await, Part::Access, &mut applied).await?;
            if outcome == Outcome::Created {
                // Said in the pass's one Event: "granted <consumer> read
                // access (RoleBinding x)" in place of "created RoleBinding x".
                let consumer = rb.annotations().get(keys::ANNOTATION_CONSUMER).cloned().unwrap_or_default();
                let created = format!("created RoleBinding {}", rb.name_any());
                applied.changes.retain(|c| *c != created);
                applied.changes.push(format!("granted {consumer} read access (RoleBinding {})", rb.name_any()));
                applied.granted = true;
            }
        }
        for np in &bundle.network_policies {
            settle(product, ctx, np.object_ref(&()), a.apply_guarded(&c.network_policies, np).await, Part::Access, &mut applied).await?;
        }
        // Revocations: grants of consumers no longer listed, only after every
        // grant still wanted is in place.
        let keep: Vec<String> = bundle.role_bindings.iter().map(|r| r.name_any()).collect();
        for name in a.prune(c.indexes.role_bindings.get(&c.role_bindings, valid.uid), &keep).await? {
            let note = format!("Revoked read access to DataProduct {} (deleted RoleBinding {name})", valid.name);
            ctx.write.publish(product, EventType::Normal, "Revoked", "Revoke", note, None).await;
        }
        let keep: Vec<String> = bundle.network_policies.iter().map(|p| p.name_any()).collect();
        for name in a.prune(c.indexes.network_policies.get(&c.network_policies, valid.uid), &keep).await? {
            ctx.write.publish(product, EventType::Normal, "Deleted", "Prune", format!("Deleted NetworkPolicy {name}"), None).await;
        }
        applied.access_ok = true;

        for cj in &bundle.cron_jobs {
            settle(product, ctx, cj.object_ref(&()), a.apply_guarded(&c.cron_jobs, cj).await, Part::Pipelines, &mut applied).await?;
        }
        for d in &bundle.deployments {
            settle(product, ctx, d.object_ref(&()), a.apply_guarded(&c.deployments, d).await, Part::Pipelines, &mut applied).await?;
        }
        let keep: Vec<String> = bundle.cron_jobs.iter().map(|j| j.name_any()).collect();
        for name in a.prune(c.indexes.cron_jobs.get(&c.cron_jobs, valid.uid), &keep).await? {
            ctx.write
                .publish(product, EventType::Normal, "Deleted", "Prune", format!("Deleted CronJob {name} (pipeline removed)"), None)
                .await;
        }
        let keep: Vec<String> = bundle.deployments.iter().map(|d| d.name_any()).collect();
        for name in a.prune(c.indexes.deployments.get(&c.deployments, valid.uid), &keep).await? {
            ctx.write
                .publish(product, EventType::Normal, "Deleted", "Prune", format!("Deleted Deployment {name} (pipeline removed)"), None)
                .await;
        }
        applied.pipelines_ok = true;
        Ok::<(), Error>(())
    }
    .await;
    applied.result = result;
    applied
}

/// Takes one child's apply result into the pass. A ResourceQuota's refusal
/// is recorded and the pass goes on: the product's other children do not
/// depend on this one fitting, and a quick retry would not make it fit.
/// Everything else that failed ends the pass (and is retried).
async fn settle(
    product: &DataProduct,
    ctx: &Context,
    child: ObjectReference,
    result: std::result::Result<Guarded, ApplyError>,
    part: Part,
    applied: &mut Applied,
) -> Result<Outcome> {
    let guarded = match result {
        Ok(guarded) => guarded,
        Err(error) => {
            let Some(message) = error.quota_exceeded() else {
                return Err(error.into());
            };
            tracing::warn!(product = %product.name_any(), namespace = %product.namespace().unwrap_or_default(), "{message}");
            applied.refused.push(Refusal { part, message: message.to_string() });
            return Ok(Outcome::Unchanged);
        }
    };
    events::note(product, ctx, child, &guarded, &mut applied.changes).await;
    applied.created |= guarded.conflict.is_none() && guarded.outcome == Outcome::Created;
    if let Some(conflict) = guarded.conflict {
        applied.conflicts.push(conflict);
    }
    Ok(guarded.outcome)
}

pub fn resource_of(object: &DynamicObject) -> ApiResource {
    let types = object.types.clone().unwrap_or_default();
    let (group, version) = match types.api_version.split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), types.api_version.clone()),
    };
    let plural = match types.kind.as_str() {
        "BucketAccess" => "bucketaccesses".to_string(),
        kind => format!("{}s", kind.to_ascii_lowercase()),
    };
    ApiResource { group, version, api_version: types.api_version, kind: types.kind, plural }
}
