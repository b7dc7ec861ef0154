//! The GovernancePolicy reconciler: compiles the policy into its
//! ValidatingAdmissionPolicy and binding (the API server enforces them), and
//! reports how many products violate it now. Products' own `PolicyCompliant`
//! conditions are the product reconciler's.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::error::{Error, Result};
use super::{Context, Events, domain_changes, objects, spec_changes};
use crate::api::conditions::{self, Computed, reason};
use crate::api::policy::GovernancePolicyStatus;
use crate::api::{DataDomain, DataProduct, GovernancePolicy};
use crate::governance::{self, admission};
use crate::keys;
use crate::render::domain::current_namespace;

pub const KIND: &str = "GovernancePolicy";

/// The event streams a policy depends on.
pub struct Watches {
    pub policies: Events<GovernancePolicy>,
    pub admission_policies: Events<ValidatingAdmissionPolicy>,
    pub admission_bindings: Events<ValidatingAdmissionPolicyBinding>,
    pub domains: Events<DataDomain>,
    pub products: Events<DataProduct>,
}

pub async fn controller(ctx: Arc<Context>, watches: Watches, shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static) {
    let config = kube::runtime::controller::Config::default().concurrency(ctx.settings.concurrency).debounce(Duration::from_millis(500));
    let all_for_domains = ctx.caches.policies.clone();
    let all_for_products = ctx.caches.policies.clone();
    let every = |store: &kube::runtime::reflector::Store<GovernancePolicy>| {
        store.state().iter().map(|p| ObjectRef::from_obj(p.as_ref())).collect::<Vec<_>>()
    };
    Controller::for_shared_stream(objects(watches.policies), ctx.caches.policies.clone())
        .with_config(config)
        .owns_shared_stream(objects(watches.admission_policies))
        .owns_shared_stream(objects(watches.admission_bindings))
        // Selectors pick domains by label; any domain change may change the scope.
        .watches_shared_stream(objects(domain_changes(watches.domains)), move |_| every(&all_for_domains))
        // Violation counts follow the products.
        .watches_shared_stream(objects(spec_changes(watches.products)), move |_| every(&all_for_products))
        // A new leader reconciles everything once.
        .reconcile_all_on(ctx.leadership.acquired())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "policy reconcile ended with an error");
            }
        })
        .await;
}

fn error_policy(policy: Arc<GovernancePolicy>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.error(KIND, error.category());
    tracing::warn!(policy = %policy.name_any(), %error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// Today's date in UTC: the deprecation rule counts notice from it.
pub fn today() -> jiff::civil::Date {
    jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).date()
}

/// The domains a policy selects: `None` for every domain (no selector).
pub fn selected_domains(policy: &GovernancePolicy, domains: &[Arc<DataDomain>]) -> Option<Vec<String>> {
    let selector = policy.spec.domain_selector.as_ref()?;
    if selector.match_labels.as_ref().is_none_or(|m| m.is_empty()) && selector.match_expressions.as_ref().is_none_or(|e| e.is_empty()) {
        return None;
    }
    let mut names: Vec<String> = domains.iter().filter(|d| governance::selects(policy, d)).map(|d| d.name_any()).collect();
    names.sort();
    Some(names)
}

/// One pass, in a span naming the object, so every log line of it does.
async fn reconcile(policy: Arc<GovernancePolicy>, ctx: Arc<Context>) -> Result<Action> {
    use tracing::Instrument;
    let span =
        tracing::info_span!("reconcile", kind = KIND, namespace = %policy.namespace().unwrap_or_default(), name = %policy.name_any());
    if !ctx.synced().await {
        return Ok(Action::await_change());
    }
    reconcile_pass(policy, ctx).instrument(span).await
}

async fn reconcile_pass(policy: Arc<GovernancePolicy>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(KIND);
    if policy.meta().deletion_timestamp.is_some() {
        // The admission objects go by garbage collection.
        return Ok(Action::await_change());
    }
    let name = policy.name_any();
    let today = today();
    let domains = ctx.caches.domains.state();
    let selected = selected_domains(&policy, &domains);
    let vap = admission::render_policy(&policy, today);
    let binding = admission::render_binding(&policy, selected.as_deref());
    let applied = async {
        let outcome = ctx.applier.apply(&ctx.caches.admission_policies, &vap).await?.outcome;
        ctx.metrics.applied("ValidatingAdmissionPolicy", outcome.as_str());
        let outcome2 = ctx.applier.apply(&ctx.caches.admission_bindings, &binding).await?.outcome;
        ctx.metrics.applied("ValidatingAdmissionPolicyBinding", outcome2.as_str());
        Ok::<_, Error>(outcome != crate::apply::Outcome::Unchanged || outcome2 != crate::apply::Outcome::Unchanged)
    }
    .await;

    // Violations now, among the products of the selected domains.
    // Their namespaces, worked out once: a pass reads every product.
    let scope: std::collections::HashSet<String> = domains
        .iter()
        .filter(|d| selected.as_ref().is_none_or(|names| names.contains(&d.name_any())))
        .map(|d| current_namespace(d, &ctx.settings.domain))
        .collect();
    let in_scope = |product: &DataProduct| product.metadata.namespace.as_ref().is_some_and(|ns| scope.contains(ns));
    let violations =
        ctx.caches.products.state().iter().filter(|p| in_scope(p) && !governance::evaluate(&policy, p, today).is_empty()).count() as i32;
    ctx.metrics.policy_violations(&name, violations);

    let computed = match &applied {
        Ok(_) => vec![
            Computed::new(
                conditions::READY,
                true,
                reason::RECONCILED,
                format!("{} enforced by the API server ({:?})", admission::admission_name(&name), policy.spec.enforcement),
            ),
            Computed::new(conditions::RECONCILING, false, reason::NOT_RECONCILING, ""),
            Computed::new(conditions::STALLED, false, reason::NOT_STALLED, ""),
        ],
        Err(e) => {
            let message = format!("compiling into admission objects failed: {e}");
            vec![
                Computed::new(conditions::READY, false, reason::APPLY_FAILED, &message),
                Computed::new(conditions::RECONCILING, true, reason::APPLY_FAILED, &message),
                Computed::new(conditions::STALLED, false, reason::NOT_STALLED, ""),
            ]
        }
    };
    if let Ok(true) = applied {
        let note = format!(
            "Compiled into ValidatingAdmissionPolicy and binding {} ({:?})",
            admission::admission_name(&name),
            policy.spec.enforcement
        );
        ctx.publish(policy.as_ref(), EventType::Normal, "Compiled", "Compile", note, None).await;
    }
    let current = policy.status.clone().unwrap_or_default();
    let status = GovernancePolicyStatus {
        observed_generation: policy.metadata.generation,
        admission_objects: vec![
            format!("ValidatingAdmissionPolicy/{}", admission::admission_name(&name)),
            format!("ValidatingAdmissionPolicyBinding/{}", admission::admission_name(&name)),
        ],
        violations: Some(violations),
        conditions: conditions::merge(&current.conditions, &computed, policy.metadata.generation, &conditions::now()),
    };
    if policy.status.as_ref() != Some(&status) {
        let patch = json!({"apiVersion": GovernancePolicy::api_version(&()), "kind": KIND, "status": status});
        Api::<GovernancePolicy>::all(ctx.client.clone())
            .patch_status(&name, &PatchParams::apply(keys::FIELD_MANAGER).force(), &Patch::Apply(&patch))
            .await
            .map_err(Error::kube(format!("patching status of GovernancePolicy {name}")))?;
    }
    applied?;
    // Recompile at the next UTC midnight: the deprecation rule's date moves.
    let tomorrow = today.tomorrow().ok().and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC).ok());
    let until_midnight =
        tomorrow.and_then(|t| Duration::try_from(t.timestamp().duration_since(jiff::Timestamp::now())).ok()).unwrap_or(ctx.settings.resync);
    Ok(Action::requeue(ctx.settings.resync.min(until_midnight + Duration::from_secs(1))))
}
