//! The DataDomain reconciler: a short driver over named steps.
//!
//! observe (the namespace, the product count) -> validate (pure) -> render
//! (pure) -> apply (the only writer) -> status (pure, then one patch if it
//! changed). Deletion runs the domain's deletion policy behind a finalizer.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::error::{Error, Result};
use super::{Context, Events, arrivals_and_departures, objects};
use crate::api::conditions::{self, Computed, reason};
use crate::api::{DataDomain, DataDomainStatus, DataProduct};
use crate::apply::{Guarded, Outcome};
use crate::keys;
use crate::owned::Owned;
use crate::render::domain::{self as render, DomainBundle, DomainSpecError, ValidDomain};

pub const KIND: &str = "DataDomain";

/// The event streams of what a domain owns or depends on.
pub struct Watches {
    pub domains: Events<DataDomain>,
    pub namespaces: Events<Namespace>,
    pub role_bindings: Events<Owned<RoleBinding>>,
    pub quotas: Events<ResourceQuota>,
    pub limit_ranges: Events<Owned<LimitRange>>,
    pub network_policies: Events<Owned<NetworkPolicy>>,
    pub products: Events<DataProduct>,
}

/// The DataDomain controller, ready to be awaited.
pub async fn controller(ctx: Arc<Context>, watches: Watches, shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static) {
    let namespaces = ctx.caches.namespaces.clone();
    // The debounce lets a burst of events (a pass's own children arriving in
    // the caches, its status write) settle into one pass that sees them all.
    let config = kube::runtime::controller::Config::default().concurrency(ctx.settings.concurrency).debounce(Duration::from_millis(500));
    Controller::for_shared_stream(objects(watches.domains), ctx.caches.domains.clone())
        .with_config(config)
        .owns_shared_stream(objects(watches.namespaces))
        .owns_shared_stream(objects(watches.role_bindings))
        .owns_shared_stream(objects(watches.quotas))
        .owns_shared_stream(objects(watches.limit_ranges))
        .owns_shared_stream(objects(watches.network_policies))
        // A product's arrival or departure changes its domain's count and may
        // unblock the domain's deletion.
        // Only those: a product's status writes do not wake its domain.
        .watches_shared_stream(objects(arrivals_and_departures(watches.products)), move |product| {
            let ns = namespaces.get(&ObjectRef::new(product.namespace().as_deref()?))?;
            Some(ObjectRef::<DataDomain>::new(ns.labels().get(keys::LABEL_DOMAIN)?))
        })
        // A new leader reconciles everything once.
        .reconcile_all_on(ctx.leadership.acquired())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "domain reconcile ended with an error");
            }
        })
        .await;
}

fn error_policy(domain: Arc<DataDomain>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.error(KIND, error.category());
    tracing::warn!(domain = %domain.name_any(), %error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// One pass, in a span naming the object, so every log line of it does.
async fn reconcile(domain: Arc<DataDomain>, ctx: Arc<Context>) -> Result<Action> {
    use tracing::Instrument;
    let span =
        tracing::info_span!("reconcile", kind = KIND, namespace = %domain.namespace().unwrap_or_default(), name = %domain.name_any());
    if !ctx.synced().await {
        return Ok(Action::await_change());
    }
    reconcile_pass(domain, ctx).instrument(span).await
}

async fn reconcile_pass(domain: Arc<DataDomain>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(KIND);
    if domain.meta().deletion_timestamp.is_some() {
        return finalize(&domain, &ctx).await;
    }
    ctx.add_finalizer(domain.as_ref(), keys::FINALIZER_DOMAIN).await?;

    let valid = match render::validate(&domain, &ctx.settings.domain) {
        Ok(valid) => valid,
        Err(problem) => return stall(&domain, &ctx, &problem).await,
    };
    match observe_namespace(&valid, &ctx).await? {
        NamespaceState::Foreign => {
            let message = format!(
                "namespace `{}` exists and was not created by this DataDomain; meshplane never adopts a namespace. Choose another spec.namespace, or delete the DataDomain",
                valid.namespace
            );
            let computed = stalled_conditions(reason::NAMESPACE_NOT_OWNED, &message);
            warn_once(&domain, &ctx, reason::NAMESPACE_NOT_OWNED, &message).await;
            write_status(&domain, &ctx, None, computed).await?;
            // The namespace may be freed later; look again now and then.
            return Ok(Action::requeue(ctx.settings.resync));
        }
        NamespaceState::Terminating => {
            let message = format!("namespace `{}` is still being deleted; waiting to create it again", valid.namespace);
            let computed = vec![
                Computed::new(conditions::READY, false, reason::NAMESPACE_TERMINATING, &message),
                Computed::new(conditions::RECONCILING, true, reason::NAMESPACE_TERMINATING, &message),
                Computed::new(conditions::STALLED, false, reason::NOT_STALLED, ""),
            ];
            write_status(&domain, &ctx, None, computed).await?;
            return Ok(Action::requeue(Duration::from_secs(2)));
        }
        NamespaceState::Absent | NamespaceState::Owned => {}
    }

    let bundle = render::render(&valid, &ctx.settings.domain);
    let applied = apply(&domain, &valid, &bundle, &ctx).await;
    let products = product_count(&valid.namespace, &ctx);
    let quota = ctx.caches.quotas.get(&ObjectRef::from_obj(&bundle.quota));
    let unaccounted = quota_unaccounted(&bundle.quota, quota.as_deref());
    let computed = provisioned_conditions(&valid, &bundle, &applied, &unaccounted);
    let provisioned = Some((valid.namespace.clone(), products));
    if let Some(wait) = hold_count(&domain, &ctx, provisioned.clone(), &computed) {
        applied.result?;
        return Ok(Action::requeue(wait));
    }
    write_status(&domain, &ctx, provisioned, computed).await?;
    applied.result?;
    Ok(Action::requeue(ctx.settings.resync))
}

enum NamespaceState {
    Absent,
    Owned,
    Terminating,
    Foreign,
}

/// Where the domain's namespace stands: from the cache when meshplane made
/// it, from the API server otherwise (a foreign namespace is not cached).
async fn observe_namespace(domain: &ValidDomain<'_>, ctx: &Context) -> Result<NamespaceState> {
    let namespace = match ctx.caches.namespaces.get(&ObjectRef::new(&domain.namespace)) {
        Some(ns) => Some((*ns).clone()),
        None => Api::<Namespace>::all(ctx.client.clone())
            .get_opt(&domain.namespace)
            .await
            .map_err(Error::kube(format!("reading namespace {}", domain.namespace)))?,
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

/// What applying the bundle achieved: how far it got and how it ended.
struct Applied {
    /// Parts fully applied, in order: namespace, access, quota, network.
    done: usize,
    result: Result<()>,
}

const PARTS: [(&str, &str); 4] = [
    (conditions::NAMESPACE_READY, "namespace"),
    (conditions::ACCESS_READY, "role bindings"),
    (conditions::QUOTA_READY, "quota and limit range"),
    (conditions::NETWORK_READY, "network policies"),
];

async fn apply(domain: &DataDomain, valid: &ValidDomain<'_>, bundle: &DomainBundle, ctx: &Context) -> Applied {
    let mut done = 0;
    let result = async {
        let c = &ctx.caches;
        let a = &ctx.applier;
        record(domain, ctx, &bundle.namespace, a.apply(&c.namespaces, &bundle.namespace).await?).await;
        done += 1;
        for rb in &bundle.role_bindings {
            record(domain, ctx, rb, a.apply(&c.role_bindings, rb).await?).await;
        }
        done += 1;
        record(domain, ctx, &bundle.quota, a.apply(&c.quotas, &bundle.quota).await?).await;
        record(domain, ctx, &bundle.limit_range, a.apply(&c.limit_ranges, &bundle.limit_range).await?).await;
        done += 1;
        for np in &bundle.network_policies {
            record(domain, ctx, np, a.apply(&c.network_policies, np).await?).await;
        }
        // Prune only after every apply succeeded: policies the spec no longer
        // asks for (isolation turned Open, egress CIDRs removed).
        let keep: Vec<String> = bundle.network_policies.iter().map(|p| p.name_any()).collect();
        let owned = c.indexes.network_policies.get(&c.network_policies, valid.uid);
        let pruned = a.prune(owned.into_iter().filter(|np| is_child(np.as_ref(), valid)).collect(), &keep).await?;
        for name in pruned {
            let note = format!("Deleted NetworkPolicy {name} from namespace {}", valid.namespace);
            ctx.publish(domain, EventType::Normal, "Deleted", "Prune", note, None).await;
        }
        done += 1;
        Ok::<(), Error>(())
    }
    .await;
    Applied { done, result }
}

fn is_child<K: Resource>(object: &K, domain: &ValidDomain<'_>) -> bool {
    object.meta().namespace.as_deref() == Some(domain.namespace.as_str())
        && object.meta().owner_references.iter().flatten().any(|o| o.uid == domain.uid)
}

/// Counts the write and emits the Event that makes it part of the audit
/// trail, naming the child as the Event's related object.
async fn record<K: Resource<DynamicType = ()>>(domain: &DataDomain, ctx: &Context, child: &K, written: Guarded) {
    let kind = K::kind(&());
    ctx.metrics.applied(&kind, written.outcome.as_str());
    if ctx.report_drift(domain, &child.object_ref(&()), &written).await {
        return;
    }
    let reason = match written.outcome {
        Outcome::Unchanged => return,
        Outcome::Created => "Created",
        // An update of an existing child is drift being corrected or a spec change.
        Outcome::Updated => "Updated",
    };
    let name = child.meta().name.as_deref().unwrap_or_default();
    let place = child.meta().namespace.as_deref().map(|ns| format!(" in namespace {ns}")).unwrap_or_default();
    let note = format!("{reason} {kind} {name}{place}");
    tracing::info!(domain = %domain.name_any(), "{note}");
    ctx.publish(domain, EventType::Normal, reason, "Provision", note, Some(child.object_ref(&()))).await;
}

fn domain_namespace(domain: &DataDomain, ctx: &Context) -> String {
    render::namespace_name(domain, &ctx.settings.domain)
}

/// A Warning Event, emitted when the condition it explains first appears.
async fn warn_once(domain: &DataDomain, ctx: &Context, reason: &str, message: &str) {
    let current = domain.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    let already =
        current.iter().any(|c| c.type_ == conditions::STALLED && c.status == "True" && c.reason == reason && c.message == message);
    if !already {
        tracing::warn!(domain = %domain.name_any(), reason, "{message}");
        ctx.publish(domain, EventType::Warning, reason, "Reconcile", message.to_string(), None).await;
    }
}

/// A burst of new products (a GitOps sync, a migration) updates its domain's
/// count at most once per interval, not once per product.
pub const COUNT_INTERVAL: Duration = Duration::from_secs(15);

/// How long to hold back a status whose only change is the product count,
/// when the count was written less than [`COUNT_INTERVAL`] ago; `None` to
/// write now (and the time of this count write is noted).
fn hold_count(domain: &DataDomain, ctx: &Context, provisioned: Option<(String, i32)>, computed: &[Computed]) -> Option<Duration> {
    let current = domain.status.as_ref()?;
    let next = next_status(domain, provisioned, computed, &conditions::now());
    if next.data_products == current.data_products {
        return None;
    }
    let only_the_count = DataDomainStatus { data_products: current.data_products, ..next } == *current;
    let mut written = ctx.counts_written.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let now = std::time::Instant::now();
    match written.get(&domain.name_any()) {
        Some(at) if only_the_count && now.duration_since(*at) < COUNT_INTERVAL => Some(COUNT_INTERVAL - now.duration_since(*at)),
        _ => {
            written.insert(domain.name_any(), now);
            None
        }
    }
}

/// The domain's products, but for those being deleted (the start of a
/// product's deletion already takes it out of the count).
fn product_count(namespace: &str, ctx: &Context) -> i32 {
    ctx.caches
        .products
        .state()
        .iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(namespace) && p.metadata.deletion_timestamp.is_none())
        .count() as i32
}

fn stalled_conditions(why: &'static str, message: &str) -> Vec<Computed> {
    vec![
        Computed::new(conditions::READY, false, why, message),
        Computed::new(conditions::RECONCILING, false, reason::NOT_RECONCILING, ""),
        Computed::new(conditions::STALLED, true, why, message),
    ]
}

async fn stall(domain: &DataDomain, ctx: &Context, problem: &DomainSpecError) -> Result<Action> {
    let message = problem.to_string();
    warn_once(domain, ctx, reason::INVALID_SPEC, &message).await;
    write_status(domain, ctx, None, stalled_conditions(reason::INVALID_SPEC, &message)).await?;
    // Nothing changes until the spec does; a spec change triggers a pass.
    Ok(Action::await_change())
}

/// Conditions after an apply pass (pure).
fn provisioned_conditions(valid: &ValidDomain<'_>, bundle: &DomainBundle, applied: &Applied, unaccounted: &[String]) -> Vec<Computed> {
    let mut computed = Vec::new();
    for (i, (type_, what)) in PARTS.iter().enumerate() {
        computed.push(if i < applied.done {
            if *type_ == conditions::QUOTA_READY && !unaccounted.is_empty() {
                let message = format!(
                    "waiting for the quota controller to account for {}; until then it refuses new objects of those kinds",
                    unaccounted.join(", ")
                );
                Computed::new(type_, false, reason::QUOTA_PENDING, message)
            } else {
                Computed::new(type_, true, reason::PROVISIONED, format!("{what} in place"))
            }
        } else if i == applied.done {
            let error = applied.result.as_ref().err().map(ToString::to_string).unwrap_or_default();
            Computed::new(type_, false, reason::APPLY_FAILED, error)
        } else {
            Computed::new(type_, false, reason::PROGRESSING, "waiting for the parts before it")
        });
    }
    match &applied.result {
        Ok(()) if unaccounted.is_empty() => {
            let message = format!(
                "namespace {} is provisioned: {} role bindings, quota, limit range, {} network policies",
                valid.namespace,
                bundle.role_bindings.len(),
                bundle.network_policies.len()
            );
            computed.push(Computed::new(conditions::READY, true, reason::RECONCILED, message));
            computed.push(Computed::new(conditions::RECONCILING, false, reason::NOT_RECONCILING, ""));
        }
        Ok(()) => {
            let message = "everything is applied; waiting for the quota to be accounted (QuotaReady)";
            computed.push(Computed::new(conditions::READY, false, reason::QUOTA_PENDING, message));
            computed.push(Computed::new(conditions::RECONCILING, true, reason::QUOTA_PENDING, message));
        }
        Err(error) => {
            let message = format!("provisioning is retrying: {error}");
            computed.push(Computed::new(conditions::READY, false, reason::APPLY_FAILED, &message));
            computed.push(Computed::new(conditions::RECONCILING, true, reason::APPLY_FAILED, &message));
        }
    }
    computed.push(Computed::new(conditions::STALLED, false, reason::NOT_STALLED, ""));
    computed
}

/// The quota's limits whose usage the controller-manager has not computed
/// yet (pure). Until it has, the API server refuses to create objects of
/// those kinds ("status unknown for quota"), so the domain is not Ready.
pub fn quota_unaccounted(desired: &ResourceQuota, actual: Option<&ResourceQuota>) -> Vec<String> {
    let hard = desired.spec.as_ref().and_then(|s| s.hard.as_ref());
    let used = actual.and_then(|q| q.status.as_ref()).and_then(|s| s.used.as_ref());
    hard.into_iter().flat_map(|h| h.keys()).filter(|key| !used.is_some_and(|u| u.contains_key(*key))).cloned().collect()
}

/// The status a pass computed (pure), given the current one.
pub fn next_status(domain: &DataDomain, provisioned: Option<(String, i32)>, computed: &[Computed], now: &Time) -> DataDomainStatus {
    let current = domain.status.clone().unwrap_or_default();
    let (namespace, data_products) = match provisioned {
        Some((ns, count)) => (Some(ns), Some(count)),
        None => (None, None),
    };
    DataDomainStatus {
        namespace,
        data_products,
        observed_generation: domain.metadata.generation,
        conditions: conditions::merge(&current.conditions, computed, domain.metadata.generation, now),
    }
}

/// Patches the status only when it differs from what the domain carries.
async fn write_status(domain: &DataDomain, ctx: &Context, provisioned: Option<(String, i32)>, computed: Vec<Computed>) -> Result<()> {
    let status = next_status(domain, provisioned, &computed, &conditions::now());
    if domain.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let patch = json!({
        "apiVersion": DataDomain::api_version(&()),
        "kind": KIND,
        "status": status,
    });
    Api::<DataDomain>::all(ctx.client.clone())
        .patch_status(&domain.name_any(), &PatchParams::apply(keys::FIELD_MANAGER).force(), &Patch::Apply(&patch))
        .await
        .map_err(Error::kube(format!("patching status of DataDomain {}", domain.name_any())))?;
    Ok(())
}

/// Runs the deletion policy. `Block` waits while products remain; the
/// namespace is deleted only when meshplane owns it. Never blocks on anything
/// but the user's own products: a missing namespace or CRD is no obstacle.
async fn finalize(domain: &DataDomain, ctx: &Context) -> Result<Action> {
    if !domain.finalizers().iter().any(|f| f == keys::FINALIZER_DOMAIN) {
        return Ok(Action::await_change());
    }
    let namespace = domain_namespace(domain, ctx);
    let owned = match Api::<Namespace>::all(ctx.client.clone())
        .get_opt(&namespace)
        .await
        .map_err(Error::kube(format!("reading namespace {namespace}")))?
    {
        Some(ns) => domain.metadata.uid.as_deref().is_some_and(|uid| ns.owner_references().iter().any(|o| o.uid == uid)),
        None => false,
    };
    if owned {
        if domain.spec.deletion_policy == crate::api::domain::DomainDeletionPolicy::Block {
            // Whether every product left is already on its way out.
            let mut going = false;
            // Ask the API server, not the cache: a product the cache has not
            // seen yet must not be deleted with the namespace.
            let products = match Api::<DataProduct>::namespaced(ctx.client.clone(), &namespace).list_metadata(&ListParams::default()).await
            {
                Ok(list) => {
                    going = list.items.iter().all(|p| p.metadata.deletion_timestamp.is_some());
                    list.items.iter().map(|p| p.name_any()).collect::<Vec<_>>()
                }
                Err(kube::Error::Api(s)) if s.code == 404 => Vec::new(),
                Err(e) => {
                    return Err(Error::kube(format!("listing DataProducts in {namespace}"))(e));
                }
            };
            if !products.is_empty() {
                let shown: Vec<&str> = products.iter().take(5).map(String::as_str).collect();
                let message = format!(
                    "deletion waits: namespace {namespace} holds {} DataProduct(s) ({}{}); delete them, or set spec.deletionPolicy: Cascade to delete them with the domain",
                    products.len(),
                    shown.join(", "),
                    if products.len() > shown.len() { ", ..." } else { "" }
                );
                let current = domain.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
                if !current.iter().any(|c| c.type_ == conditions::DELETING && c.message == message) {
                    ctx.publish(domain, EventType::Warning, reason::DATA_PRODUCTS_REMAIN, "Delete", message.clone(), None).await;
                }
                let computed = vec![
                    Computed::new(conditions::READY, false, reason::DATA_PRODUCTS_REMAIN, &message),
                    Computed::new(conditions::DELETING, true, reason::DATA_PRODUCTS_REMAIN, &message),
                    Computed::new(conditions::RECONCILING, true, reason::DATA_PRODUCTS_REMAIN, &message),
                    Computed::new(conditions::STALLED, false, reason::NOT_STALLED, ""),
                ];
                let provisioned = Some((namespace.clone(), products.len() as i32));
                write_status(domain, ctx, provisioned, computed).await?;
                // A product's removal wakes the domain; looking again soon
                // while the last ones are going is only a safety net.
                return Ok(Action::requeue(Duration::from_secs(if going { 2 } else { 30 })));
            }
        }
        match Api::<Namespace>::all(ctx.client.clone()).delete(&namespace, &DeleteParams::background()).await {
            Ok(_) => {
                let note = format!("Deleted namespace {namespace} ({:?} deletion policy)", domain.spec.deletion_policy);
                ctx.publish(domain, EventType::Normal, "Deleted", "Delete", note, None).await
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(Error::kube(format!("deleting namespace {namespace}"))(e)),
        }
    }
    ctx.remove_finalizer(domain, keys::FINALIZER_DOMAIN).await?;
    Ok(Action::await_change())
}
