//! The DataProduct reconciler: a short driver over named steps.
//!
//! observe (its domain, producers, consumers) -> validate (pure) -> resolve
//! inputs and consumers (pure) -> render (pure) -> apply (the only writer) ->
//! observe what the cluster made of it -> status (pure, then one patch if it
//! changed). Deletion applies each storage's deletion policy behind a
//! finalizer; everything else goes by garbage collection.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::ApiResource;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::error::{Error, Result};
use super::{Context, Events, domain_changes, objects, spec_changes};
use crate::api::conditions::{self, Computed, Condition, reason};
use crate::api::product::{DeletionPolicy, InputStatus, PipelineMode, PipelineStatus, ResourceRef, StorageKind};
use crate::api::{DataDomain, DataProduct, DataProductStatus, GovernancePolicy};
use crate::apply::{Conflict, Guarded, Outcome};
use crate::keys;
use crate::owned::Owned;
use crate::render::domain::current_namespace;
use crate::render::product::{self as render, InputState, ProductBundle, ProductSpecError, ResolvedConsumer, ResolvedInput, ValidProduct};
use crate::storage::{self, StorageState};

pub const KIND: &str = "DataProduct";

/// How soon a product whose storage backend is not installed looks again.
const BACKEND_RETRY: Duration = Duration::from_secs(10);

/// How soon a product with a child its quota refused looks again.
const QUOTA_RETRY: Duration = Duration::from_secs(30);

/// The event streams of what a product owns or depends on.
pub struct Watches {
    pub products: Events<DataProduct>,
    pub producers: Events<DataProduct>,
    pub domains: Events<DataDomain>,
    pub service_accounts: Events<Owned<ServiceAccount>>,
    pub config_maps: Events<Owned<ConfigMap>>,
    pub claims: Events<Owned<PersistentVolumeClaim>>,
    pub cron_jobs: Events<Owned<CronJob>>,
    pub deployments: Events<Deployment>,
    pub jobs: Events<Job>,
    pub roles: Events<Owned<Role>>,
    pub role_bindings: Events<Owned<RoleBinding>>,
    pub network_policies: Events<Owned<NetworkPolicy>>,
    pub policies: Events<GovernancePolicy>,
}

/// The DataProduct controller, ready to be awaited.
pub async fn controller(ctx: Arc<Context>, watches: Watches, shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static) {
    let config = kube::runtime::controller::Config::default().concurrency(ctx.settings.concurrency).debounce(Duration::from_millis(500));
    let products = ctx.caches.products.clone();
    let namespaces = ctx.caches.namespaces.clone();
    let products_for_domains = ctx.caches.products.clone();
    let products_for_policies = ctx.caches.products.clone();
    let settings = ctx.settings.domain.clone();
    Controller::for_shared_stream(objects(watches.products), ctx.caches.products.clone())
        .with_config(config)
        .owns_shared_stream(objects(watches.service_accounts))
        .owns_shared_stream(objects(watches.config_maps))
        .owns_shared_stream(objects(watches.claims))
        .owns_shared_stream(objects(watches.cron_jobs))
        .owns_shared_stream(objects(watches.deployments))
        .owns_shared_stream(objects(watches.roles))
        .owns_shared_stream(objects(watches.role_bindings))
        .owns_shared_stream(objects(watches.network_policies))
        // A Job's progress is a pipeline run of the product named on it.
        .watches_shared_stream(objects(watches.jobs), |job| {
            let product = job.labels().get(keys::LABEL_PRODUCT)?;
            Some(ObjectRef::<DataProduct>::new(product).within(job.namespace().as_deref()?))
        })
        // A producer's change (a grant, a deletion, a deprecation) reaches
        // every product that reads it.
        // What consumers read of a producer is its spec and labels, so its
        // status writes wake nobody.
        .watches_shared_stream(objects(spec_changes(watches.producers)), move |producer| {
            // The producer's domain is its namespace's (products carry no
            // domain label of their own).
            let namespace = producer.namespace().unwrap_or_default();
            let domain = namespaces.get(&ObjectRef::new(&namespace)).and_then(|ns| ns.labels().get(keys::LABEL_DOMAIN).cloned());
            consumers_of(&products, &namespace, &producer.name_any(), domain.as_deref())
        })
        // A domain's change (its classes, its people, its existence) reaches
        // its own products and those that grant it access.
        // Products read a domain's spec, namespace and existence: its other
        // status writes (its product count, its conditions) wake none of them.
        .watches_shared_stream(objects(domain_changes(watches.domains)), move |domain| {
            let name = domain.name_any();
            let namespace = current_namespace(&domain, &settings);
            products_for_domains
                .state()
                .into_iter()
                .filter(|p| {
                    p.metadata.namespace.as_deref() == Some(namespace.as_str())
                        || p.spec.access.consumers.iter().any(|c| c.domain.as_deref() == Some(name.as_str()))
                        || p.spec.inputs.iter().any(|i| i.domain.as_deref() == Some(name.as_str()))
                })
                .map(|p| ObjectRef::from_obj(p.as_ref()))
                .collect::<Vec<_>>()
        })
        // A policy's arrival, change or removal changes products' compliance.
        .watches_shared_stream(objects(watches.policies), move |_| {
            products_for_policies.state().iter().map(|p| ObjectRef::from_obj(p.as_ref())).collect::<Vec<_>>()
        })
        // A backend's storage objects (no cache: their CRDs may be absent).
        .reconcile_on(storage_object_changes(ctx.client.clone(), ctx.leadership.clone()))
        // A new leader reconciles everything once.
        .reconcile_all_on(ctx.leadership.acquired())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "product reconcile ended with an error");
            }
        })
        .await;
}

/// The products whose storage objects of a kind meshplane keeps no cache
/// of (a Bucket's claim and access) changed or went. Each such kind is
/// watched by metadata alone; while its CRDs are not installed, its watch
/// retries with backoff (at most every 30 s) and says nothing: the product
/// already reports `BackendNotInstalled`.
fn storage_object_changes(
    client: kube::Client,
    leadership: crate::leader::Leadership,
) -> impl futures::Stream<Item = ObjectRef<DataProduct>> {
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

/// Products whose inputs name the given producer: by its domain, or, with
/// no domain named, from the producer's own namespace.
fn consumers_of(
    products: &kube::runtime::reflector::Store<DataProduct>,
    namespace: &str,
    name: &str,
    domain: Option<&str>,
) -> Vec<ObjectRef<DataProduct>> {
    products
        .state()
        .into_iter()
        .filter(|p| {
            p.spec.inputs.iter().any(|i| {
                i.product == name
                    && match &i.domain {
                        Some(d) => Some(d.as_str()) == domain,
                        None => p.metadata.namespace.as_deref() == Some(namespace),
                    }
            })
        })
        .map(|p| ObjectRef::from_obj(p.as_ref()))
        .collect()
}

fn error_policy(product: Arc<DataProduct>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.error(KIND, error.category());
    tracing::warn!(product = %product.name_any(), namespace = %product.namespace().unwrap_or_default(), %error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

fn api(ctx: &Context, namespace: &str) -> Api<DataProduct> {
    Api::namespaced(ctx.client.clone(), namespace)
}

/// The DataDomain whose namespace (made by meshplane, labelled with the
/// domain) holds the product.
fn owning_domain(product: &DataProduct, ctx: &Context) -> Option<Arc<DataDomain>> {
    let ns = ctx.caches.namespaces.get(&ObjectRef::new(product.namespace().as_deref()?))?;
    if ns.labels().get(keys::LABEL_MANAGED_BY).map(String::as_str) != Some(keys::MANAGED_BY) {
        return None;
    }
    let domain = ctx.caches.domains.get(&ObjectRef::new(ns.labels().get(keys::LABEL_DOMAIN)?))?;
    let uid = domain.metadata.uid.as_deref()?;
    ns.owner_references().iter().any(|o| o.uid == uid).then_some(domain)
}

/// One pass, in a span naming the object, so every log line of it does.
async fn reconcile(product: Arc<DataProduct>, ctx: Arc<Context>) -> Result<Action> {
    use tracing::Instrument;
    let span =
        tracing::info_span!("reconcile", kind = KIND, namespace = %product.namespace().unwrap_or_default(), name = %product.name_any());
    if !ctx.synced().await {
        return Ok(Action::await_change());
    }
    reconcile_pass(product, ctx).instrument(span).await
}

async fn reconcile_pass(product: Arc<DataProduct>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(KIND);
    if product.meta().deletion_timestamp.is_some() {
        return finalize(&product, &ctx).await;
    }
    ctx.add_finalizer(product.as_ref(), keys::FINALIZER_PRODUCT).await?;

    let namespace = product.namespace().unwrap_or_default();
    let Some(domain) = owning_domain(&product, &ctx) else {
        return stall(&product, &ctx, None, &ProductSpecError::NotInDomain { namespace }).await;
    };
    let valid = match render::validate(&product, &domain) {
        Ok(valid) => valid,
        Err(problem) => return stall(&product, &ctx, Some(domain.name_any()), &problem).await,
    };

    // A domain on its way out is gone for grants and inputs: the start of
    // its deletion is when its consumers should lose their grants.
    let find_domain = |name: &str| ctx.caches.domains.get(&ObjectRef::new(name)).filter(|d| d.metadata.deletion_timestamp.is_none());
    let find_product = |ns: &str, name: &str| ctx.caches.products.get(&ObjectRef::new(name).within(ns));
    let namespace_of = |d: &DataDomain| current_namespace(d, &ctx.settings.domain);
    let inputs = render::resolve_inputs(&valid, &find_domain, &find_product, &namespace_of);
    let consumers = render::resolve_consumers(&valid, &find_domain, &namespace_of);
    let bundle = render::render(&valid, &inputs, &consumers);

    let applied = apply(&product, &valid, &bundle, &ctx).await;
    report_changes(&product, &ctx, &applied).await;
    let now = jiff::Timestamp::now();
    let (storage_states, settling) = observe_storage(&valid, &bundle, &applied, &ctx, now).await;
    let jobs = ctx.caches.indexes.jobs.get(&ctx.caches.jobs, &crate::controllers::run_key(valid.namespace, valid.name));
    let deployments: Vec<Arc<Deployment>> =
        bundle.deployments.iter().filter_map(|d| ctx.caches.deployments.get(&ObjectRef::from_obj(d))).collect();
    let pipelines = pipeline_statuses(&product, &jobs, &deployments);
    let fresh = freshness(&product, &pipelines, now);

    let mut computed =
        product_conditions(&valid, &applied, &storage_states, &pipelines, &deployments, &inputs, &consumers, fresh.as_ref().map(|f| &f.0));
    let compliance = compliance(&product, &domain, &ctx.caches.policies.state(), crate::controllers::policy::today());
    computed.insert(computed.len() - 3, compliance);
    let status = Observed { domain: valid.domain_name.to_string(), pipelines, inputs: &inputs, resources: resources_of(&bundle, &applied) };
    // A pass that created children reports once they have settled (the next
    // pass, moments later), and a new product's first status waits while its
    // storage binds (at most `storage::SETTLING`), so a new product usually
    // costs one status write, and that one says Ready.
    let created = applied.created;
    let binding = product.status.is_none() && settling.is_some() && waits_only_for_storage(&computed);
    if (!created && !binding) || applied.result.is_err() {
        // Warnings go out with the status that records them: a pass that
        // defers its status defers them too, so each is published once.
        publish_warnings(&product, &ctx, &computed).await;
        write_status(&product, &ctx, status, computed).await?;
    }
    applied.result?;
    let mut requeue = ctx.settings.resync;
    if created {
        requeue = Duration::from_secs(1);
    }
    if let Some(left) = settling {
        // The claim's binding wakes the product; if it has not bound by
        // then, look again to report it and say why.
        requeue = requeue.min(left + Duration::from_millis(100));
    }
    if !applied.missing_backends.is_empty() {
        // A backend's CRDs being installed is no event of this product's
        // (meshplane does not watch CRDs): look again now and then.
        requeue = requeue.min(BACKEND_RETRY);
    }
    if !applied.refused.is_empty() {
        // Quota frees up when something else in the namespace goes, which
        // is no event of this product's: look again now and then.
        requeue = requeue.min(QUOTA_RETRY);
    }
    if let Some(retry) = applied.conflicts.iter().filter_map(|c| c.retry_after).min() {
        requeue = requeue.min(retry + Duration::from_secs(1));
    }
    if let Some((_, Some(expires))) = fresh {
        // Wake up the moment freshness lapses instead of polling.
        requeue = requeue.min(expires + Duration::from_millis(500));
    }
    Ok(Action::requeue(requeue))
}

/// A Warning Event for each stall or policy violation the current status
/// does not record yet (with the same message).
async fn publish_warnings(product: &DataProduct, ctx: &Context, computed: &[Computed]) {
    let current = product.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    for (reason, action, message) in warnings(current, computed) {
        if reason == reason::POLICY_VIOLATION {
            tracing::warn!(product = %product.name_any(), namespace = %product.namespace().unwrap_or_default(), "{message}");
        }
        ctx.publish(product, EventType::Warning, reason, action, message, None).await;
    }
}

/// The Warning Events a status computed from `computed` is news for, given
/// the `current` conditions, as (reason, action, note) (pure).
fn warnings(current: &[Condition], computed: &[Computed]) -> Vec<(&'static str, &'static str, String)> {
    // Stalled is news when true, PolicyCompliant when false.
    let kinds = [
        (conditions::STALLED, true, reason::FIELD_MANAGER_CONFLICT, "Yield"),
        (conditions::POLICY_COMPLIANT, false, reason::POLICY_VIOLATION, "Govern"),
    ];
    kinds
        .into_iter()
        .filter_map(|(type_, news, reason, action)| {
            let found = computed.iter().find(|c| c.type_ == type_ && c.status == news)?;
            let as_text = if news { "True" } else { "False" };
            let recorded = current.iter().any(|c| c.type_ == type_ && c.status == as_text && c.message == found.message);
            (!recorded).then(|| (reason, action, found.message.clone()))
        })
        .collect()
}

/// What applying the bundle achieved.
struct Applied {
    storage_ok: bool,
    /// Storage entries whose backend the cluster does not serve.
    missing_backends: Vec<String>,
    access_ok: bool,
    pipelines_ok: bool,
    created: bool,
    /// The pass created the product's first child: it provisioned the product.
    first: bool,
    /// The pass granted a consumer access.
    granted: bool,
    /// "created ServiceAccount a", "granted domain b read access (RoleBinding
    /// c)", "updated Role d", ...: one Event reports them.
    changes: Vec<String>,
    /// Children a ResourceQuota refused; the pass went on with the others.
    refused: Vec<Refusal>,
    /// Children another field manager had changed (restored or yielded).
    conflicts: Vec<Conflict>,
    /// Storage objects as read by a pass that left them unchanged, by kind
    /// and name: observing them afterwards needs no second read.
    storage_read: Vec<((String, String), Option<DynamicObject>)>,
    result: Result<()>,
}

/// The part of a product (and its condition) a child belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    Storage,
    Access,
    Pipelines,
}

/// A child that would exceed its namespace's ResourceQuota, with the API
/// server's message (which names the quota, what was requested, used and
/// allowed).
struct Refusal {
    part: Part,
    message: String,
}

async fn apply(product: &DataProduct, valid: &ValidProduct<'_>, bundle: &ProductBundle, ctx: &Context) -> Applied {
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
    let a = &ctx.applier;
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
            if !backend_installed(ctx, &backend.api_resources()).await? {
                applied.missing_backends.push(name.clone());
                continue;
            }
            for object in objects {
                let resource = resource_of(object);
                let current = current_object(ctx, &resource, object).await?;
                let result = ctx.applier.apply_dynamic_guarded(&resource, object, current.as_ref()).await;
                let reference = k8s_openapi::api::core::v1::ObjectReference {
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
                    reclaim(product, ctx, &resource, released, reference).await?;
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
            ctx.publish(product, EventType::Normal, "Revoked", "Revoke", note, None).await;
        }
        let keep: Vec<String> = bundle.network_policies.iter().map(|p| p.name_any()).collect();
        for name in a.prune(c.indexes.network_policies.get(&c.network_policies, valid.uid), &keep).await? {
            ctx.publish(product, EventType::Normal, "Deleted", "Prune", format!("Deleted NetworkPolicy {name}"), None).await;
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
            ctx.publish(product, EventType::Normal, "Deleted", "Prune", format!("Deleted CronJob {name} (pipeline removed)"), None).await;
        }
        let keep: Vec<String> = bundle.deployments.iter().map(|d| d.name_any()).collect();
        for name in a.prune(c.indexes.deployments.get(&c.deployments, valid.uid), &keep).await? {
            ctx.publish(product, EventType::Normal, "Deleted", "Prune", format!("Deleted Deployment {name} (pipeline removed)"), None)
                .await;
        }
        applied.pipelines_ok = true;
        Ok::<(), Error>(())
    }
    .await;
    applied.result = result;
    applied
}

/// Takes back storage that an earlier product of the same name left behind
/// under `Retain`: the apply has made this product its owner again; the
/// marks of the release (label and annotation, written by the finalizer's
/// merge patch, so not removed by meshplane's apply) go, or a claim in use
/// would still read as orphaned.
async fn reclaim(
    product: &DataProduct,
    ctx: &Context,
    resource: &ApiResource,
    released: &DynamicObject,
    reference: k8s_openapi::api::core::v1::ObjectReference,
) -> Result<()> {
    let name = released.name_any();
    let patch = json!({"metadata": {
        "labels": {keys::LABEL_ORPHANED: null},
        "annotations": {keys::ANNOTATION_ORPHANED_FROM: null},
    }});
    let params = PatchParams { field_manager: Some(keys::FIELD_MANAGER.into()), ..Default::default() };
    Api::<DynamicObject>::namespaced_with(ctx.client.clone(), &product.namespace().unwrap_or_default(), resource)
        .patch(&name, &params, &Patch::Merge(&patch))
        .await
        .map_err(Error::kube(format!("reclaiming {} {name}", resource.kind)))?;
    let from = released.annotations().get(keys::ANNOTATION_ORPHANED_FROM).cloned().unwrap_or_else(|| "an earlier product".into());
    let note = format!("Took back {} {name} with its data, retained from {from}", resource.kind);
    tracing::info!(product = %product.name_any(), namespace = %product.namespace().unwrap_or_default(), "{note}");
    ctx.publish(product, EventType::Normal, "StorageReclaimed", "Provision", note, Some(reference)).await;
    Ok(())
}

/// Takes one child's apply result into the pass. A ResourceQuota's refusal
/// is recorded and the pass goes on: the product's other children do not
/// depend on this one fitting, and a quick retry would not make it fit.
/// Everything else that failed ends the pass (and is retried).
async fn settle(
    product: &DataProduct,
    ctx: &Context,
    child: k8s_openapi::api::core::v1::ObjectReference,
    result: std::result::Result<Guarded, crate::apply::ApplyError>,
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
    note(product, ctx, child, &guarded, &mut applied.changes).await;
    applied.created |= guarded.conflict.is_none() && guarded.outcome == Outcome::Created;
    if let Some(conflict) = guarded.conflict {
        applied.conflicts.push(conflict);
    }
    Ok(guarded.outcome)
}

fn resource_of(object: &DynamicObject) -> ApiResource {
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

/// What the cluster holds for a storage object: claims from the cache,
/// other kinds (no cache: their CRDs may be absent) by a read.
async fn current_object(ctx: &Context, resource: &ApiResource, object: &DynamicObject) -> Result<Option<DynamicObject>> {
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
async fn backend_installed(ctx: &Context, resources: &[ApiResource]) -> Result<bool> {
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

/// Whether storage is all a product waits for: every other part is ready,
/// it complies, and nothing needs a person. (Ready and Reconciling follow the
/// parts; freshness is not judged before a first run.)
fn waits_only_for_storage(computed: &[Computed]) -> bool {
    let others_fine = computed.iter().all(|c| match c.type_ {
        conditions::STALLED => !c.status,
        conditions::STORAGE_READY | conditions::READY | conditions::RECONCILING | conditions::FRESH => true,
        _ => c.status,
    });
    others_fine && computed.iter().any(|c| c.type_ == conditions::STORAGE_READY && !c.status)
}

/// Each storage entry's state, and how long the newest storage that is not
/// ready yet has left to settle (see [`storage::SETTLING`]), if any.
async fn observe_storage(
    valid: &ValidProduct<'_>,
    bundle: &ProductBundle,
    applied: &Applied,
    ctx: &Context,
    now: jiff::Timestamp,
) -> (Vec<(String, StorageState)>, Option<Duration>) {
    let mut states = Vec::new();
    let mut settling: Option<Duration> = None;
    let lookup = storage::Lookup { client: &ctx.client, namespace: valid.namespace, storage_classes: &ctx.caches.storage_classes, now };
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
        if !state.ready
            && let Some(explained) = backend.explain(&lookup, &state, &current).await
        {
            state = explained;
        }
        if !state.ready {
            // The longest wait left (`None` orders below any wait).
            settling = settling.max(settling_left(&current, now));
        }
        states.push((name.clone(), state));
    }
    (states, settling)
}

/// How long storage made of `current` has left of [`storage::SETTLING`],
/// counted from its newest object; `None` once settled (or not all made).
fn settling_left(current: &[Option<DynamicObject>], now: jiff::Timestamp) -> Option<Duration> {
    let newest = current.iter().map(|o| o.as_ref()?.metadata.creation_timestamp.as_ref().map(|t| t.0)).collect::<Option<Vec<_>>>()?;
    let newest = newest.into_iter().max()?;
    let age = Duration::try_from(now.duration_since(newest)).unwrap_or(Duration::ZERO);
    storage::SETTLING.checked_sub(age).filter(|left| !left.is_zero())
}

/// Each pipeline's runs, from the Jobs and Deployments in the cluster (pure).
pub fn pipeline_statuses(product: &DataProduct, jobs: &[Arc<Job>], deployments: &[Arc<Deployment>]) -> Vec<PipelineStatus> {
    let time = |t: &Time| t.0.to_string();
    product
        .spec
        .pipelines
        .iter()
        .map(|pipeline| match pipeline.mode {
            PipelineMode::Batch => {
                let mut runs: Vec<&Arc<Job>> =
                    jobs.iter().filter(|j| j.labels().get(keys::LABEL_PIPELINE) == Some(&pipeline.name)).collect();
                runs.sort_by_key(|j| j.metadata.creation_timestamp.clone().map(|t| t.0));
                let succeeded = |j: &Job| {
                    j.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| c.iter().any(|c| c.type_ == "Complete" && c.status == "True"))
                };
                let failed = |j: &Job| {
                    j.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| c.iter().any(|c| c.type_ == "Failed" && c.status == "True"))
                };
                let last = runs.last();
                PipelineStatus {
                    name: pipeline.name.clone(),
                    kind: "CronJob".into(),
                    last_schedule_time: last
                        .and_then(|j| j.status.as_ref()?.start_time.as_ref().or(j.metadata.creation_timestamp.as_ref()).map(time)),
                    last_successful_time: runs
                        .iter()
                        .filter(|j| succeeded(j))
                        .filter_map(|j| j.status.as_ref()?.completion_time.as_ref().map(|t| t.0))
                        .max()
                        .map(|t| t.to_string()),
                    last_result: last.map(|j| {
                        if succeeded(j) {
                            "Succeeded"
                        } else if failed(j) {
                            "Failed"
                        } else {
                            "Running"
                        }
                        .to_string()
                    }),
                }
            }
            PipelineMode::Continuous => {
                let deployment = deployments.iter().find(|d| d.labels().get(keys::LABEL_PIPELINE) == Some(&pipeline.name));
                let available = deployment.and_then(|d| d.status.as_ref()?.available_replicas).unwrap_or(0);
                PipelineStatus {
                    name: pipeline.name.clone(),
                    kind: "Deployment".into(),
                    last_result: Some(if available >= pipeline.replicas { "Available" } else { "Unavailable" }.into()),
                    ..Default::default()
                }
            }
        })
        .collect()
}

/// The `Fresh` condition when the product has a freshness SLO, and how long
/// until it lapses (pure).
pub fn freshness(product: &DataProduct, pipelines: &[PipelineStatus], now: jiff::Timestamp) -> Option<(Computed, Option<Duration>)> {
    let slo = product.spec.quality.as_ref()?.freshness.as_deref()?;
    let limit = parse_slo(slo)?;
    let batch = pipelines.iter().any(|p| p.kind == "CronJob");
    if !batch {
        let available = pipelines.iter().all(|p| p.last_result.as_deref() == Some("Available"));
        let message = if available { "continuous pipelines are available" } else { "a continuous pipeline is unavailable" };
        return Some((Computed::new(conditions::FRESH, available, if available { "Continuous" } else { "Unavailable" }, message), None));
    }
    let last = pipelines.iter().filter_map(|p| p.last_successful_time.as_deref()?.parse::<jiff::Timestamp>().ok()).max();
    let Some(last) = last else {
        return Some((
            Computed::new(conditions::FRESH, false, reason::NO_SUCCESSFUL_RUN, format!("no successful run yet; freshness SLO {slo}")),
            None,
        ));
    };
    let age = now.duration_since(last);
    let remaining = jiff::SignedDuration::try_from(limit).ok()?.checked_sub(age)?;
    if remaining.is_positive() {
        let message = format!("last successful run at {last}, within the freshness SLO of {slo}");
        Some((Computed::new(conditions::FRESH, true, reason::WITHIN_SLO, message), Duration::try_from(remaining).ok()))
    } else {
        let message = format!("last successful run at {last} is older than the freshness SLO of {slo}");
        Some((Computed::new(conditions::FRESH, false, reason::STALE, message), None))
    }
}

fn parse_slo(s: &str) -> Option<Duration> {
    let (n, unit) = s.split_at(s.len().checked_sub(1)?);
    let n: u64 = n.parse().ok()?;
    Some(Duration::from_secs(match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => return None,
    }))
}

/// The `PolicyCompliant` condition: every policy that selects the product's
/// domain, evaluated by the same rules the API server enforces (pure).
pub fn compliance(product: &DataProduct, domain: &DataDomain, policies: &[Arc<GovernancePolicy>], today: jiff::civil::Date) -> Computed {
    let mut applicable = 0;
    let mut violations = Vec::new();
    for policy in policies.iter().filter(|p| p.metadata.deletion_timestamp.is_none() && crate::governance::selects(p, domain)) {
        applicable += 1;
        violations.extend(crate::governance::evaluate(policy, product, today));
    }
    if violations.is_empty() {
        Computed::new(conditions::POLICY_COMPLIANT, true, reason::COMPLIANT, format!("complies with {applicable} governance policies"))
    } else {
        let messages: Vec<String> = violations.iter().map(|v| format!("{}: {}", v.field, v.message)).collect();
        Computed::new(conditions::POLICY_COMPLIANT, false, reason::POLICY_VIOLATION, messages.join("; "))
    }
}

/// Conditions of a provisioned product (pure).
#[allow(clippy::too_many_arguments)]
fn product_conditions(
    valid: &ValidProduct<'_>,
    applied: &Applied,
    storage: &[(String, StorageState)],
    pipelines: &[PipelineStatus],
    deployments: &[Arc<Deployment>],
    inputs: &[ResolvedInput],
    consumers: &[ResolvedConsumer],
    fresh: Option<&Computed>,
) -> Vec<Computed> {
    let error = applied.result.as_ref().err().map(ToString::to_string);
    let failed = |ok: bool| if ok { None } else { error.clone() };

    // A part with a child its namespace's quota refused says so, in the API
    // server's words (the quota's name, what was requested, used, allowed).
    let refused = |part: Part| {
        let messages: Vec<&str> = applied.refused.iter().filter(|r| r.part == part).map(|r| r.message.as_str()).collect();
        (!messages.is_empty()).then(|| messages.join("; "))
    };

    let storage_condition = if let Some(e) = failed(applied.storage_ok) {
        Computed::new(conditions::STORAGE_READY, false, reason::APPLY_FAILED, e)
    } else if let Some(message) = refused(Part::Storage) {
        Computed::new(conditions::STORAGE_READY, false, reason::QUOTA_EXCEEDED, message)
    } else if let Some((_, s)) = storage.iter().find(|(_, s)| !s.ready) {
        Computed::new(conditions::STORAGE_READY, false, s.reason, &s.message)
    } else if storage.is_empty() {
        Computed::new(conditions::STORAGE_READY, true, reason::PROVISIONED, "the product declares no storage")
    } else {
        let messages: Vec<&str> = storage.iter().map(|(_, s)| s.message.as_str()).collect();
        Computed::new(conditions::STORAGE_READY, true, reason::PROVISIONED, messages.join("; "))
    };

    let pods_refused: Vec<String> = deployments
        .iter()
        .filter_map(|d| {
            let failure = d.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "ReplicaFailure" && c.status == "True")?;
            let message = failure.message.as_deref()?;
            // Only from "exceeded quota" on: the text before names the
            // refused pod, a new name at every attempt, which would rewrite
            // the status each time.
            let message = &message[message.find("exceeded quota")?..];
            Some(format!("pipeline `{}`: pods {message}", d.labels().get(keys::LABEL_PIPELINE).map(String::as_str).unwrap_or_default()))
        })
        .collect();
    let pipelines_condition = if let Some(e) = failed(applied.pipelines_ok) {
        Computed::new(conditions::PIPELINES_READY, false, reason::APPLY_FAILED, e)
    } else if let Some(message) = refused(Part::Pipelines) {
        Computed::new(conditions::PIPELINES_READY, false, reason::QUOTA_EXCEEDED, message)
    } else if !pods_refused.is_empty() {
        // The ReplicaSet cannot create the pipeline's pods: the Deployment
        // carries the quota's refusal as its ReplicaFailure condition.
        Computed::new(conditions::PIPELINES_READY, false, reason::QUOTA_EXCEEDED, pods_refused.join("; "))
    } else if let Some(p) = pipelines.iter().find(|p| p.last_result.as_deref() == Some("Unavailable")) {
        Computed::new(
            conditions::PIPELINES_READY,
            false,
            reason::PROGRESSING,
            format!("continuous pipeline `{}` is not available yet", p.name),
        )
    } else {
        let batch = pipelines.iter().filter(|p| p.kind == "CronJob").count();
        let continuous = pipelines.len() - batch;
        Computed::new(
            conditions::PIPELINES_READY,
            true,
            reason::PROVISIONED,
            format!("{batch} scheduled and {continuous} continuous pipelines in place"),
        )
    };

    let access_condition = if let Some(e) = failed(applied.access_ok) {
        Computed::new(conditions::ACCESS_READY, false, reason::APPLY_FAILED, e)
    } else if let Some(message) = refused(Part::Access) {
        Computed::new(conditions::ACCESS_READY, false, reason::QUOTA_EXCEEDED, message)
    } else {
        let granted: Vec<String> =
            consumers.iter().filter(|c| !matches!(c, ResolvedConsumer::MissingDomain(_))).map(ResolvedConsumer::describe).collect();
        let missing: Vec<String> =
            consumers.iter().filter_map(|c| if let ResolvedConsumer::MissingDomain(d) = c { Some(d.clone()) } else { None }).collect();
        let mut message = if granted.is_empty() {
            "no consumers are granted access".to_string()
        } else {
            format!("read access granted to {}", granted.join(", "))
        };
        if !missing.is_empty() {
            message.push_str(&format!("; not yet granted to domains that do not exist: {}", missing.join(", ")));
        }
        Computed::new(conditions::ACCESS_READY, true, reason::PROVISIONED, message)
    };

    let blocked: Vec<String> =
        inputs.iter().filter(|i| i.state != InputState::Granted).map(|i| format!("{}: {}", i.name, i.message)).collect();
    let inputs_condition = if !blocked.is_empty() {
        let why = if inputs.iter().any(|i| i.state == InputState::AccessDenied) { reason::ACCESS_DENIED } else { reason::NOT_FOUND };
        Computed::new(conditions::INPUTS_READY, false, why, blocked.join("; "))
    } else if inputs.is_empty() {
        Computed::new(conditions::INPUTS_READY, true, reason::RESOLVED, "the product declares no inputs")
    } else {
        Computed::new(conditions::INPUTS_READY, true, reason::RESOLVED, format!("all {} inputs are granted", inputs.len()))
    };

    let parts = [storage_condition, pipelines_condition, access_condition, inputs_condition];
    let ready = parts.iter().all(|c| c.status);
    let mut computed: Vec<Computed> = parts.to_vec();
    if let Some(f) = fresh {
        computed.push(f.clone());
    }
    // Yielding to another field manager needs a person: Stalled (kstatus).
    let yielded: Vec<String> = applied
        .conflicts
        .iter()
        .filter(|c| !c.restored)
        .map(|c| {
            format!(
                "meshplane stopped forcing {} {} after {} restores within {}m: {}; the other values stay until that change is undone or the object is deleted (or at most {}m)",
                c.kind,
                c.name,
                c.restores,
                crate::apply::CONFLICT_WINDOW.as_secs() / 60,
                c.describe(),
                crate::apply::CONFLICT_WINDOW.as_secs() / 60
            )
        })
        .collect();
    if !yielded.is_empty() {
        let message = yielded.join("; ");
        computed.push(Computed::new(conditions::READY, false, reason::FIELD_MANAGER_CONFLICT, &message));
        computed.push(Computed::new(conditions::RECONCILING, false, reason::NOT_RECONCILING, ""));
        computed.push(Computed::new(conditions::STALLED, true, reason::FIELD_MANAGER_CONFLICT, message));
        return computed;
    }
    if ready {
        let message = format!("DataProduct {} in domain {} is provisioned", valid.name, valid.domain_name);
        computed.push(Computed::new(conditions::READY, true, reason::RECONCILED, message));
        computed.push(Computed::new(conditions::RECONCILING, false, reason::NOT_RECONCILING, ""));
    } else {
        let waiting: Vec<&str> = computed.iter().filter(|c| !c.status && c.type_ != conditions::FRESH).map(|c| c.type_).collect();
        let message = format!("waiting for {}", waiting.join(", "));
        let reason = if applied.result.is_err() {
            reason::APPLY_FAILED
        } else if computed.iter().any(|c| c.reason == reason::QUOTA_EXCEEDED) {
            reason::QUOTA_EXCEEDED
        } else {
            reason::PROGRESSING
        };
        computed.push(Computed::new(conditions::READY, false, reason, &message));
        computed.push(Computed::new(conditions::RECONCILING, true, reason, &message));
    }
    computed.push(Computed::new(conditions::STALLED, false, reason::NOT_STALLED, ""));
    computed
}

fn resources_of(bundle: &ProductBundle, applied: &Applied) -> Vec<ResourceRef> {
    let r = |kind: &str, name: Option<&String>| ResourceRef { kind: kind.into(), name: name.cloned().unwrap_or_default() };
    let mut out =
        vec![r("ServiceAccount", bundle.service_account.metadata.name.as_ref()), r("ConfigMap", bundle.descriptor.metadata.name.as_ref())];
    for (name, _, objects) in &bundle.storage {
        if applied.missing_backends.contains(name) {
            continue;
        }
        out.extend(objects.iter().map(|o| r(&o.types.as_ref().map(|t| t.kind.clone()).unwrap_or_default(), o.metadata.name.as_ref())));
    }
    out.push(r("Role", bundle.role.metadata.name.as_ref()));
    out.extend(bundle.role_bindings.iter().map(|o| r("RoleBinding", o.metadata.name.as_ref())));
    out.extend(bundle.network_policies.iter().map(|o| r("NetworkPolicy", o.metadata.name.as_ref())));
    out.extend(bundle.cron_jobs.iter().map(|o| r("CronJob", o.metadata.name.as_ref())));
    out.extend(bundle.deployments.iter().map(|o| r("Deployment", o.metadata.name.as_ref())));
    out
}

struct Observed<'a> {
    domain: String,
    pipelines: Vec<PipelineStatus>,
    inputs: &'a [ResolvedInput],
    resources: Vec<ResourceRef>,
}

/// The status a pass computed (pure), given the current one.
fn next_status(
    product: &DataProduct,
    observed: Option<Observed<'_>>,
    domain: Option<String>,
    computed: &[Computed],
    now: &Time,
) -> DataProductStatus {
    let current = product.status.clone().unwrap_or_default();
    let conditions = conditions::merge(&current.conditions, computed, product.metadata.generation, now);
    let stalled = conditions::status_of(&conditions, conditions::STALLED) == Some("True");
    let ready = conditions::status_of(&conditions, conditions::READY) == Some("True");
    let phase = if stalled {
        "Stalled"
    } else if ready {
        "Ready"
    } else {
        "Pending"
    };
    let (pipelines, inputs, resources, domain) = match observed {
        Some(o) => (
            o.pipelines,
            o.inputs
                .iter()
                .map(|i| InputStatus {
                    name: i.name.clone(),
                    domain: i.domain.clone(),
                    product: i.product.clone(),
                    state: i.state.as_str().into(),
                    message: Some(i.message.clone()),
                })
                .collect(),
            o.resources,
            Some(o.domain),
        ),
        None => (Vec::new(), Vec::new(), Vec::new(), domain),
    };
    DataProductStatus {
        phase: Some(phase.into()),
        domain,
        observed_generation: product.metadata.generation,
        conditions,
        pipelines,
        inputs,
        resources,
    }
}

async fn write_status(product: &DataProduct, ctx: &Context, observed: Observed<'_>, computed: Vec<Computed>) -> Result<()> {
    let status = next_status(product, Some(observed), None, &computed, &conditions::now());
    patch_status(product, ctx, status).await
}

async fn patch_status(product: &DataProduct, ctx: &Context, status: DataProductStatus) -> Result<()> {
    if product.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let patch = json!({"apiVersion": DataProduct::api_version(&()), "kind": KIND, "status": status});
    api(ctx, &product.namespace().unwrap_or_default())
        .patch_status(&product.name_any(), &PatchParams::apply(keys::FIELD_MANAGER).force(), &Patch::Apply(&patch))
        .await
        .map_err(Error::kube(format!("patching status of DataProduct {}", product.name_any())))?;
    Ok(())
}

async fn stall(product: &DataProduct, ctx: &Context, domain: Option<String>, problem: &ProductSpecError) -> Result<Action> {
    let message = problem.to_string();
    let why = problem.reason();
    let current = product.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    if !current.iter().any(|c| c.type_ == conditions::STALLED && c.status == "True" && c.message == message) {
        tracing::warn!(product = %product.name_any(), namespace = %product.namespace().unwrap_or_default(), reason = why, "{message}");
        ctx.publish(product, EventType::Warning, why, "Reconcile", message.clone(), None).await;
    }
    let computed = vec![
        Computed::new(conditions::READY, false, why, &message),
        Computed::new(conditions::RECONCILING, false, reason::NOT_RECONCILING, ""),
        Computed::new(conditions::STALLED, true, why, &message),
    ];
    let status = next_status(product, None, domain, &computed, &conditions::now());
    patch_status(product, ctx, status).await?;
    // A domain appearing or changing triggers a pass through the domain watch.
    Ok(Action::requeue(ctx.settings.resync))
}

/// Counts a child's apply and makes it part of the audit trail: a Normal
/// Event for a write, a Warning Event when another field manager had changed
/// meshplane's fields (naming the object, the manager and the fields).
async fn note(
    product: &DataProduct,
    ctx: &Context,
    child: k8s_openapi::api::core::v1::ObjectReference,
    guarded: &Guarded,
    changes: &mut Vec<String>,
) {
    let kind = child.kind.clone().unwrap_or_default();
    let name = child.name.clone().unwrap_or_default();
    let outcome = guarded.outcome;
    let label = match &guarded.conflict {
        Some(c) if c.restored => "restored",
        Some(_) => "yielded",
        None => outcome.as_str(),
    };
    ctx.metrics.applied(&kind, label);
    let at = (product.name_any(), product.namespace().unwrap_or_default());
    // Said in a Warning of its own, not among the pass's changes.
    if ctx.report_drift(product, &child, guarded).await {
        return;
    }
    match &guarded.conflict {
        Some(conflict) if conflict.restored && conflict.grants => {
            let note = format!("Restored {kind} {name}: {}; a list that grants access is meshplane's alone", conflict.describe());
            tracing::warn!(product = %at.0, namespace = %at.1, "{note}");
            ctx.publish(product, EventType::Warning, reason::FIELD_MANAGER_CONFLICT, "Restore", note, Some(child)).await;
        }
        Some(conflict) if conflict.restored => {
            let note = format!(
                "Restored {kind} {name}: {}, which meshplane manages (restore {} of {} within {}m; then meshplane stops forcing)",
                conflict.describe(),
                conflict.restores,
                crate::apply::CONFLICT_LIMIT,
                crate::apply::CONFLICT_WINDOW.as_secs() / 60
            );
            tracing::warn!(product = %at.0, namespace = %at.1, "{note}");
            ctx.publish(product, EventType::Warning, reason::FIELD_MANAGER_CONFLICT, "Restore", note, Some(child)).await;
        }
        // Yielding is reported as the Stalled condition, and its Event when
        // the condition first appears (see `reconcile_pass`).
        Some(_) => {}
        // Reported together, in one Event per pass (see `report_changes`):
        // a new product costs one Event, not one per child.
        None if outcome != Outcome::Unchanged => {
            let verb = if outcome == Outcome::Created { "created" } else { "updated" };
            tracing::info!(product = %at.0, namespace = %at.1, "{verb} {kind} {name}");
            changes.push(format!("{verb} {kind} {name}"));
        }
        None => {}
    }
}

/// One Event for every child a pass created or updated: "Created: created
/// ServiceAccount a, created ConfigMap b, granted domain c read access
/// (RoleBinding d), ..." (cut to the Event note's size). Its reason is
/// `Created` for a new product, `Granted` when a later pass grants a consumer,
/// else `Created` or `Updated`.
async fn report_changes(product: &DataProduct, ctx: &Context, applied: &Applied) {
    let changes = &applied.changes;
    if changes.is_empty() {
        return;
    }
    let reason = if applied.first {
        "Created"
    } else if applied.granted {
        "Granted"
    } else if changes.iter().any(|c| c.starts_with("created")) {
        "Created"
    } else {
        "Updated"
    };
    let mut note = changes.join(", ");
    if note.len() > 1000 {
        let cut = note.char_indices().map(|(i, _)| i).take_while(|i| *i <= 990).last().unwrap_or(0);
        note.truncate(cut);
        note.push_str(", ...");
    }
    ctx.publish(product, EventType::Normal, reason, "Provision", note, None).await;
}

/// Applies each storage's deletion policy to the storage this product owns
/// (and only that: objects are matched by the product's uid), then lets the
/// product go. Storage no longer in the spec is retained: data is deleted
/// only when the user asked for it.
async fn finalize(product: &DataProduct, ctx: &Context) -> Result<Action> {
    if !product.finalizers().iter().any(|f| f == keys::FINALIZER_PRODUCT) {
        return Ok(Action::await_change());
    }
    let namespace = product.namespace().unwrap_or_default();
    let uid = product.metadata.uid.clone().unwrap_or_default();
    let selector = format!("{}={}", keys::LABEL_PRODUCT, product.name_any());
    for kind in [StorageKind::Volume, StorageKind::Bucket] {
        let backend = storage::backend(kind);
        if !backend_installed(ctx, &backend.api_resources()).await? {
            continue;
        }
        for resource in backend.api_resources() {
            let api = Api::<DynamicObject>::namespaced_with(ctx.client.clone(), &namespace, &resource);
            let objects =
                api.list(&ListParams::default().labels(&selector)).await.map_err(Error::kube(format!("listing {}", resource.plural)))?;
            for object in objects.items.into_iter().filter(|o| o.owner_references().iter().any(|r| r.uid == uid)) {
                let entry = object.labels().get(keys::LABEL_STORAGE).and_then(|s| product.spec.storage.iter().find(|e| &e.name == s));
                let policy = entry.map(|e| e.deletion_policy).unwrap_or(DeletionPolicy::Retain);
                let name = object.name_any();
                match policy {
                    DeletionPolicy::Delete => {
                        match api.delete(&name, &DeleteParams::background()).await {
                            Ok(_) => {}
                            Err(kube::Error::Api(s)) if s.code == 404 => {}
                            Err(e) => {
                                return Err(Error::kube(format!("deleting {} {name}", resource.kind))(e));
                            }
                        }
                        let note = format!("Deleted {} {name} and its data (deletionPolicy: Delete)", resource.kind);
                        tracing::info!(product = %product.name_any(), %namespace, "{note}");
                        ctx.publish(product, EventType::Normal, "StorageDeleted", "Delete", note, None).await;
                    }
                    DeletionPolicy::Retain => {
                        let owners: Vec<_> = object.owner_references().iter().filter(|r| r.uid != uid).cloned().collect();
                        let patch = json!({"metadata": {
                            "ownerReferences": owners,
                            "labels": {keys::LABEL_ORPHANED: "true"},
                            "annotations": {keys::ANNOTATION_ORPHANED_FROM: format!("DataProduct {namespace}/{} (uid {uid})", product.name_any())},
                        }});
                        // Under meshplane's own field manager, not the client's
                        // default ("unknown"), so the object's managedFields show who
                        // released it.
                        let params = PatchParams { field_manager: Some(keys::FIELD_MANAGER.into()), ..Default::default() };
                        api.patch(&name, &params, &Patch::Merge(&patch))
                            .await
                            .map_err(Error::kube(format!("releasing {} {name}", resource.kind)))?;
                        let note = format!(
                            "Retained {} {name} with its data, labelled {}=true (deletionPolicy: Retain)",
                            resource.kind,
                            keys::LABEL_ORPHANED
                        );
                        tracing::info!(product = %product.name_any(), %namespace, "{note}");
                        ctx.publish(product, EventType::Normal, "StorageRetained", "Delete", note, None).await;
                    }
                }
            }
        }
    }
    ctx.remove_finalizer(product, keys::FINALIZER_PRODUCT).await?;
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product(freshness: &str) -> DataProduct {
        let yaml = format!(
            "metadata: {{name: p, namespace: n}}\nspec: {{quality: {{freshness: {freshness}}}, pipelines: [{{name: b, image: i, schedule: '@daily'}}]}}"
        );
        serde_saphyr::from_str(&yaml).unwrap()
    }

    fn job(name: &str, created: i64, completed: Option<i64>, failed: bool) -> Arc<Job> {
        let condition = match (completed, failed) {
            (Some(_), _) => r#"[{"type": "Complete", "status": "True"}]"#,
            (None, true) => r#"[{"type": "Failed", "status": "True"}]"#,
            _ => "[]",
        };
        let ts = |s: i64| jiff::Timestamp::from_second(s).unwrap().to_string();
        let json = format!(
            r#"{{"metadata": {{"name": "{name}", "creationTimestamp": "{}", "labels": {{"meshplane.dev/pipeline": "b"}}}},
               "status": {{"startTime": "{}", {} "conditions": {condition}}}}}"#,
            ts(created),
            ts(created),
            completed.map(|c| format!(r#""completionTime": "{}","#, ts(c))).unwrap_or_default()
        );
        Arc::new(serde_json::from_str(&json).unwrap())
    }

    #[test]
    fn runs_are_read_from_the_jobs() {
        let p = product("1h");
        let jobs = [job("a", 100, Some(110), false), job("b", 200, None, true)];
        let status = &pipeline_statuses(&p, &jobs, &[])[0];
        assert_eq!(status.last_result.as_deref(), Some("Failed"), "the newest run decides the result");
        assert_eq!(status.last_successful_time.as_deref(), Some(jiff::Timestamp::from_second(110).unwrap().to_string().as_str()));
        assert_eq!(status.last_schedule_time.as_deref(), Some(jiff::Timestamp::from_second(200).unwrap().to_string().as_str()));
    }

    #[test]
    fn freshness_lapses_and_says_when() {
        let p = product("20s");
        let pipelines = pipeline_statuses(&p, &[job("a", 100, Some(110), false)], &[]);
        let at = |s| jiff::Timestamp::from_second(s).unwrap();
        let (fresh, expires) = freshness(&p, &pipelines, at(120)).unwrap();
        assert!(fresh.status && fresh.reason == reason::WITHIN_SLO);
        assert_eq!(expires, Some(Duration::from_secs(10)));
        let (stale, expires) = freshness(&p, &pipelines, at(131)).unwrap();
        assert!(!stale.status && stale.reason == reason::STALE && expires.is_none());
        let (never, _) = freshness(&p, &pipeline_statuses(&p, &[], &[]), at(0)).unwrap();
        assert_eq!(never.reason, reason::NO_SUCCESSFUL_RUN);
        // A message must not change from pass to pass, or status is rewritten each time.
        assert_eq!(freshness(&p, &pipelines, at(121)).unwrap().0, fresh);
    }

    #[test]
    fn storage_settles_from_its_newest_object() {
        let at = |s: i64| jiff::Timestamp::from_second(s).unwrap();
        let object = |created: i64| {
            let json =
                format!(r#"{{"apiVersion": "v1", "kind": "X", "metadata": {{"name": "x", "creationTimestamp": "{}"}}}}"#, at(created));
            Some(serde_json::from_str::<DynamicObject>(&json).unwrap())
        };
        assert_eq!(settling_left(&[object(100), object(104)], at(106)), Some(storage::SETTLING - Duration::from_secs(2)));
        assert_eq!(settling_left(&[object(100)], at(100) + storage::SETTLING), None, "settled");
        assert_eq!(settling_left(&[object(100), None], at(101)), None, "not all made: nothing to wait for yet");
    }

    #[test]
    fn only_storage_may_hold_back_a_first_status() {
        let part = |type_, ready| Computed::new(type_, ready, if ready { reason::PROVISIONED } else { "ClaimPending" }, "");
        let pass = |storage, pipelines, compliant, stalled| {
            vec![
                part(conditions::STORAGE_READY, storage),
                part(conditions::PIPELINES_READY, pipelines),
                part(conditions::ACCESS_READY, true),
                part(conditions::INPUTS_READY, true),
                part(conditions::FRESH, false),
                part(conditions::POLICY_COMPLIANT, compliant),
                part(conditions::READY, false),
                part(conditions::RECONCILING, true),
                part(conditions::STALLED, stalled),
            ]
        };
        assert!(waits_only_for_storage(&pass(false, true, true, false)));
        assert!(!waits_only_for_storage(&pass(true, true, true, false)), "nothing to wait for");
        assert!(!waits_only_for_storage(&pass(false, false, true, false)), "a pipeline waits too");
        assert!(!waits_only_for_storage(&pass(false, true, false, false)), "a violation is reported at once");
        assert!(!waits_only_for_storage(&pass(false, true, true, true)), "a stall is reported at once");
    }

    #[test]
    fn a_warning_is_published_once_its_status_would_record_something_new() {
        let pass = |compliant: bool, violation: &str, stalled: bool| {
            vec![
                Computed::new(conditions::POLICY_COMPLIANT, compliant, reason::POLICY_VIOLATION, violation),
                Computed::new(conditions::STALLED, stalled, reason::FIELD_MANAGER_CONFLICT, if stalled { "yielded" } else { "" }),
            ]
        };
        let reasons =
            |current: &[Condition], computed: &[Computed]| warnings(current, computed).into_iter().map(|w| w.0).collect::<Vec<_>>();
        let violating = pass(false, "no owner", false);
        assert_eq!(reasons(&[], &violating), [reason::POLICY_VIOLATION], "a new product's violation is news");
        let recorded = conditions::merge(&[], &violating, Some(1), &conditions::now());
        assert!(reasons(&recorded, &violating).is_empty(), "a status that records it already is no news");
        assert_eq!(reasons(&recorded, &pass(false, "no owner; no description", false)), [reason::POLICY_VIOLATION], "a new message is");
        assert!(reasons(&[], &pass(true, "", false)).is_empty(), "compliance is no warning");
        assert_eq!(reasons(&recorded, &pass(false, "no owner", true)), [reason::FIELD_MANAGER_CONFLICT]);
    }

    #[test]
    fn slo_durations() {
        assert_eq!(parse_slo("90m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_slo("2d"), Some(Duration::from_secs(172800)));
        assert_eq!(parse_slo("soon"), None);
    }
}
