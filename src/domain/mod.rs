//! DataDomain: a business domain's isolated tenant (its namespace, the
//! RoleBindings of its people, its quota and limits, its network policies).
//!
//! A pass: observe the namespace -> validate (pure) -> build (pure) -> apply
//! (through the writer) -> status (pure, then one patch if it changed).
//! Deletion runs the domain's deletion policy behind a finalizer
//! ([`delete`]).

pub mod apply;
pub mod build;
pub mod delete;
pub mod events;
pub mod observe;
pub mod settings;
pub mod status;
pub mod validate;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;

use crate::api::DataDomain;
use crate::api::conditions::{self, Computed, reason};
use crate::error::Result;
use crate::keys;
use crate::operator::Context;
use crate::operator::reconciler;
use crate::operator::watched::Watched;
use crate::plumbing::filter::{arrivals_and_departures, existence, when_changed};
use crate::plumbing::watch::{Events, objects};
use observe::NamespaceState;
use validate::DomainSpecError;

pub const KIND: &str = "DataDomain";

/// The DataDomain controller, ready to be awaited: woken by its domains,
/// their children, and products arriving in or leaving their namespaces.
pub fn controller<S>(ctx: Arc<Context>, watched: &mut Watched, shutdown: S) -> impl Future<Output = ()> + use<S>
where
    S: Future<Output = ()> + Send + Sync + 'static,
{
    let l = &ctx.leadership;
    let namespaces = ctx.caches.namespaces.clone();
    let own = reconciler::controller(&ctx, watched.domains.take(l), ctx.caches.domains.clone());
    let controller = crate::owning!(own, watched, l; namespaces, role_bindings, quotas, limit_ranges, network_policies)
        // A product's arrival or departure changes its domain's count and may
        // unblock the domain's deletion.
        // Only those: a product's status writes do not wake its domain.
        .watches_shared_stream(objects(arrivals_and_departures(watched.products.take(l))), move |product| {
            let ns = namespaces.get(&ObjectRef::new(product.namespace().as_deref()?))?;
            Some(ObjectRef::<DataDomain>::new(ns.labels().get(keys::LABEL_DOMAIN)?))
        });
    reconciler::run(controller, ctx, shutdown, KIND, reconcile)
}

/// Changes to what other kinds read of a domain: its spec and labels, its
/// existence, and its namespace.
pub fn changes(events: Events<DataDomain>) -> Events<DataDomain> {
    when_changed(events, |d| {
        (existence(d), d.metadata.generation, d.metadata.labels.clone(), d.status.as_ref().and_then(|s| s.namespace.clone()))
    })
}

/// One pass over a domain.
async fn reconcile(domain: Arc<DataDomain>, ctx: Arc<Context>) -> Result<Action> {
    if domain.metadata.deletion_timestamp.is_some() {
        return delete::finalize(&domain, &ctx).await;
    }
    ctx.write.add_finalizer(domain.as_ref(), keys::FINALIZER_DOMAIN).await?;

    let valid = match validate::validate(&domain, &ctx.settings.domain) {
        Ok(valid) => valid,
        Err(problem) => return stall(&domain, &ctx, &problem).await,
    };
    match observe::namespace(&valid, &ctx).await? {
        NamespaceState::Foreign => {
            let message = format!(
                "namespace `{}` exists and was not created by this DataDomain; meshplane never adopts a namespace. Choose another spec.namespace, or delete the DataDomain",
                valid.namespace
            );
            events::warn_once(&domain, &ctx, reason::NAMESPACE_NOT_OWNED, &message).await;
            write_status(&domain, &ctx, None, conditions::stalled(reason::NAMESPACE_NOT_OWNED, &message).to_vec()).await?;
            // The namespace may be freed later; look again now and then.
            return Ok(Action::requeue(ctx.settings.resync));
        }
        NamespaceState::Terminating => {
            let message = format!("namespace `{}` is still being deleted; waiting to create it again", valid.namespace);
            write_status(&domain, &ctx, None, conditions::reconciling(reason::NAMESPACE_TERMINATING, message).to_vec()).await?;
            return Ok(Action::requeue(Duration::from_secs(2)));
        }
        NamespaceState::Absent | NamespaceState::Owned => {}
    }

    let bundle = build::render(&valid, &ctx.settings.domain);
    let applied = apply::apply(&domain, &valid, &bundle, &ctx).await;
    let products = observe::product_count(&valid.namespace, &ctx);
    let quota = ctx.caches.quotas.get(&ObjectRef::from_obj(&bundle.quota));
    let unaccounted = status::quota_unaccounted(&bundle.quota, quota.as_deref());
    let computed = status::provisioned(&valid, &bundle, &applied, &unaccounted);
    let provisioned = Some((valid.namespace.clone(), products));
    if let Some(wait) = hold_count(&domain, &ctx, provisioned.clone(), &computed) {
        applied.result?;
        return Ok(Action::requeue(wait));
    }
    write_status(&domain, &ctx, provisioned, computed).await?;
    applied.result?;
    Ok(Action::requeue(ctx.settings.resync))
}

/// A spec the controller cannot provision: Stalled until it changes.
async fn stall(domain: &DataDomain, ctx: &Context, problem: &DomainSpecError) -> Result<Action> {
    let message = problem.to_string();
    events::warn_once(domain, ctx, reason::INVALID_SPEC, &message).await;
    write_status(domain, ctx, None, conditions::stalled(reason::INVALID_SPEC, &message).to_vec()).await?;
    // Nothing changes until the spec does; a spec change triggers a pass.
    Ok(Action::await_change())
}

/// How long to hold back a status whose only change is the product count
/// (see [`status::hold_count`]); `None` to write now, noting when.
fn hold_count(domain: &DataDomain, ctx: &Context, provisioned: Option<(String, i32)>, computed: &[Computed]) -> Option<Duration> {
    let current = domain.status.as_ref()?;
    let next = status::next(domain, provisioned, computed, &conditions::now());
    let mut written = ctx.counts_written.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let now = std::time::Instant::now();
    let wait = status::hold_count(current, &next, written.get(&domain.name_any()).map(|at| now.duration_since(*at)));
    if wait.is_none() && next.data_products != current.data_products {
        written.insert(domain.name_any(), now);
    }
    wait
}

/// Patches the status only when it differs from what the domain carries.
async fn write_status(domain: &DataDomain, ctx: &Context, provisioned: Option<(String, i32)>, computed: Vec<Computed>) -> Result<()> {
    let next = status::next(domain, provisioned, &computed, &conditions::now());
    ctx.write.status(domain, domain.status.as_ref(), &next).await
}

#[cfg(test)]
mod tests;
