//! DataProduct: a domain's data product (its storage, pipelines, descriptor,
//! and read access for its consumers).
//!
//! A pass: observe (its domain, producers, consumers) -> validate (pure) ->
//! resolve inputs and consumers (pure) -> build (pure) -> apply (through the
//! writer) -> observe what the cluster made of it -> status (pure, then one
//! patch if it changed). Deletion applies each storage's deletion policy
//! behind a finalizer ([`delete`]); everything else goes by garbage
//! collection.

pub mod apply;
pub mod build;
pub mod delete;
pub mod events;
pub mod observe;
pub mod resolve;
pub mod status;
pub mod validate;

use std::future::Future;
use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;

use crate::api::conditions;
use crate::api::{DataDomain, DataProduct};
use crate::domain::validate::current_namespace;
use crate::error::Result;
use crate::keys;
use crate::operator::Context;
use crate::operator::reconciler;
use crate::operator::watched::Watched;
use crate::plumbing::filter::spec_changes;
use crate::plumbing::watch::objects;
use status::{Facts, Observed};
use validate::ProductSpecError;

pub const KIND: &str = "DataProduct";

/// The DataProduct controller, ready to be awaited: woken by its products,
/// their children and runs, the products they read, the domains they live
/// in or grant, every policy, and their storage objects.
pub fn controller<S>(ctx: Arc<Context>, watched: &mut Watched, shutdown: S) -> impl Future<Output = ()> + use<S>
where
    S: Future<Output = ()> + Send + Sync + 'static,
{
    let l = &ctx.leadership;
    let (products, namespaces, settings) = (ctx.caches.products.clone(), ctx.caches.namespaces.clone(), ctx.settings.domain.clone());
    let own = reconciler::controller(&ctx, watched.products.take(l), ctx.caches.products.clone());
    let children = crate::owning!(own, watched, l;
        service_accounts, config_maps, claims, cron_jobs, deployments, roles, role_bindings, network_policies);
    let controller = children
        // A Job's progress is a pipeline run of the product named on it.
        .watches_shared_stream(objects(watched.jobs.take(l)), |job| {
            let product = job.labels().get(keys::LABEL_PRODUCT)?;
            Some(ObjectRef::<DataProduct>::new(product).within(job.namespace().as_deref()?))
        })
        // A producer's change (a grant, a deletion, a deprecation) reaches
        // every product that reads it. What consumers read of a producer is
        // its spec and labels, so its status writes wake nobody.
        .watches_shared_stream(objects(spec_changes(watched.products.take(l))), {
            let products = products.clone();
            move |producer| observe::consumers_of(&products, &namespaces, &producer)
        })
        // A domain's change (its classes, its people, its existence) reaches
        // its own products and those that grant it access or read from it.
        // Its other status writes (its product count, its conditions) wake
        // none of them.
        .watches_shared_stream(objects(crate::domain::changes(watched.domains.take(l))), move |domain| {
            observe::products_of_domain(&products, &domain, &current_namespace(&domain, &settings))
        })
        // A policy's arrival, change or removal changes products' compliance.
        .watches_shared_stream(objects(watched.policies.take(l)), crate::plumbing::every(&ctx.caches.products))
        // A backend's storage objects (no cache: their CRDs may be absent).
        .reconcile_on(observe::storage_object_changes(ctx.client.clone(), ctx.leadership.clone()));
    reconciler::run(controller, ctx, shutdown, KIND, reconcile)
}

/// One pass over a product.
async fn reconcile(product: Arc<DataProduct>, ctx: Arc<Context>) -> Result<Action> {
    if product.metadata.deletion_timestamp.is_some() {
        return delete::finalize(&product, &ctx).await;
    }
    ctx.write.add_finalizer(product.as_ref(), keys::FINALIZER_PRODUCT).await?;

    let namespace = product.namespace().unwrap_or_default();
    let Some(domain) = observe::owning_domain(&product, &ctx) else {
        return stall(&product, &ctx, None, &ProductSpecError::NotInDomain { namespace }).await;
    };
    let valid = match validate::validate(&product, &domain) {
        Ok(valid) => valid,
        Err(problem) => return stall(&product, &ctx, Some(domain.name_any()), &problem).await,
    };

    // A domain on its way out is gone for grants and inputs: the start of
    // its deletion is when its consumers should lose their grants.
    let find_domain = |name: &str| ctx.caches.domains.get(&ObjectRef::new(name)).filter(|d| d.metadata.deletion_timestamp.is_none());
    let find_product = |ns: &str, name: &str| ctx.caches.products.get(&ObjectRef::new(name).within(ns));
    let namespace_of = |d: &DataDomain| current_namespace(d, &ctx.settings.domain);
    let inputs = resolve::resolve_inputs(&valid, &find_domain, &find_product, &namespace_of);
    let consumers = resolve::resolve_consumers(&valid, &find_domain, &namespace_of);
    let bundle = build::render(&valid, &inputs, &consumers);

    let applied = apply::apply(&product, &valid, &bundle, &ctx).await;
    events::report_changes(&product, &ctx, &applied).await;
    let now = jiff::Timestamp::now();
    let (storage, settling) = observe::storage(&valid, &bundle, &applied, &ctx, now).await;
    let (jobs, deployments) = observe::runs(&valid, &bundle, &ctx);
    let pipelines = status::pipeline_statuses(&product, &jobs, &deployments);
    let fresh = status::freshness(&product, &pipelines, now);
    let compliance = status::compliance(&product, &domain, &ctx.caches.policies.state(), crate::policy::today());
    let computed = status::provisioned(Facts {
        valid: &valid,
        applied: &applied,
        storage: &storage,
        pipelines: &pipelines,
        deployments: &deployments,
        inputs: &inputs,
        consumers: &consumers,
        fresh: fresh.as_ref().map(|f| &f.0),
        compliance,
    });

    // A pass that created children reports once they have settled (the next
    // pass, moments later), and a new product's first status waits while its
    // storage binds (at most `storage::SETTLING`), so a new product usually
    // costs one status write, and that one says Ready.
    let binding = product.status.is_none() && settling.is_some() && status::waits_only_for_storage(&computed);
    if (!applied.created && !binding) || applied.result.is_err() {
        // Warnings go out with the status that records them: a pass that
        // defers its status defers them too, so each is published once.
        events::publish_warnings(&product, &ctx, &computed).await;
        let observed = Observed {
            domain: valid.domain_name.to_string(),
            pipelines,
            inputs: &inputs,
            resources: status::resources_of(&bundle, &applied),
        };
        let next = status::next(&product, Some(observed), None, &computed, &conditions::now());
        ctx.write.status(product.as_ref(), product.status.as_ref(), &next).await?;
    }
    let requeue = status::requeue(&applied, settling, fresh.and_then(|f| f.1), ctx.settings.resync);
    applied.result?;
    Ok(Action::requeue(requeue))
}

/// A product meshplane cannot provision as it stands: Stalled, with a
/// Warning the first time.
async fn stall(product: &DataProduct, ctx: &Context, domain: Option<String>, problem: &ProductSpecError) -> Result<Action> {
    let message = problem.to_string();
    let why = problem.reason();
    events::warn_stalled(product, ctx, why, &message).await;
    let computed = conditions::stalled(why, &message);
    let next = status::next(product, None, domain, &computed, &conditions::now());
    ctx.write.status(product, product.status.as_ref(), &next).await?;
    // A domain appearing or changing triggers a pass through the domain watch.
    Ok(Action::requeue(ctx.settings.resync))
}

#[cfg(test)]
mod tests;
