//! GovernancePolicy: the platform team's rules, compiled into the API
//! server's own admission objects (so the API server enforces them), with
//! the number of products that violate the policy now. Products' own
//! `PolicyCompliant` conditions are the product controller's.
//!
//! A pass: build the admission objects (pure) -> apply (through the writer)
//! -> count violations (pure, over the cache) -> status (pure, then one
//! patch if it changed). Deletion goes by garbage collection.

pub mod build;
pub mod status;

use std::future::Future;
use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use crate::api::GovernancePolicy;
use crate::error::{Error, Result};
use crate::operator::Context;
use crate::operator::reconciler;
use crate::operator::watched::Watched;
use crate::plumbing::filter::spec_changes;
use crate::plumbing::watch::objects;
use crate::write::Outcome;

pub const KIND: &str = "GovernancePolicy";

/// The GovernancePolicy controller, ready to be awaited: woken by its
/// policies, their admission objects, and any domain or product change
/// (selectors pick domains by label; violations follow the products).
pub fn controller<S>(ctx: Arc<Context>, watched: &mut Watched, shutdown: S) -> impl Future<Output = ()> + use<S>
where
    S: Future<Output = ()> + Send + Sync + 'static,
{
    let l = &ctx.leadership;
    let own = reconciler::controller(&ctx, watched.policies.take(l), ctx.caches.policies.clone());
    let controller = crate::owning!(own, watched, l; admission_policies, admission_bindings)
        .watches_shared_stream(objects(crate::domain::changes(watched.domains.take(l))), crate::plumbing::every(&ctx.caches.policies))
        .watches_shared_stream(objects(spec_changes(watched.products.take(l))), crate::plumbing::every(&ctx.caches.policies));
    reconciler::run(controller, ctx, shutdown, KIND, reconcile)
}

/// Today's date in UTC: the deprecation rule counts notice from it.
pub fn today() -> jiff::civil::Date {
    jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).date()
}

/// One pass over a policy.
async fn reconcile(policy: Arc<GovernancePolicy>, ctx: Arc<Context>) -> Result<Action> {
    if policy.metadata.deletion_timestamp.is_some() {
        // The admission objects go by garbage collection.
        return Ok(Action::await_change());
    }
    let name = policy.name_any();
    let today = today();
    let domains = ctx.caches.domains.state();
    let selected = status::selected_domains(&policy, &domains);
    let vap = build::render_policy(&policy, today);
    let binding = build::render_binding(&policy, selected.as_deref());
    let applied = async {
        let a = &ctx.write.applier;
        let compiled = a.apply(&ctx.caches.admission_policies, &vap).await?.outcome;
        ctx.metrics.applied("ValidatingAdmissionPolicy", compiled.as_str());
        let bound = a.apply(&ctx.caches.admission_bindings, &binding).await?.outcome;
        ctx.metrics.applied("ValidatingAdmissionPolicyBinding", bound.as_str());
        Ok::<_, Error>(compiled != Outcome::Unchanged || bound != Outcome::Unchanged)
    }
    .await;

    let violations = status::violations(&policy, selected.as_deref(), &domains, &ctx.caches.products.state(), &ctx.settings.domain, today);
    ctx.metrics.policy_violations(&name, violations);
    if let Ok(true) = applied {
        let note =
            format!("Compiled into ValidatingAdmissionPolicy and binding {} ({:?})", build::admission_name(&name), policy.spec.enforcement);
        ctx.write.publish(policy.as_ref(), EventType::Normal, "Compiled", "Compile", note, None).await;
    }
    let next = status::next(&policy, applied.as_ref().map(|_| ()).map_err(ToString::to_string), violations);
    ctx.write.status(policy.as_ref(), policy.status.as_ref(), &next).await?;
    applied?;
    Ok(Action::requeue(status::requeue(today, jiff::Timestamp::now(), ctx.settings.resync)))
}

#[cfg(test)]
mod tests;
