//! The Events a domain pass publishes: the audit trail of its writes, and
//! a Warning when a problem first appears.

use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};

use crate::api::DataDomain;
use crate::api::conditions::{self, Computed};
use crate::operator::Context;
use crate::operator::drift::report_drift;
use crate::write::{Guarded, Outcome};

/// Counts the write and emits the Event that makes it part of the audit
/// trail, naming the child as the Event's related object.
pub async fn record<K: Resource<DynamicType = ()>>(domain: &DataDomain, ctx: &Context, child: &K, written: Guarded) {
    let kind = K::kind(&());
    ctx.metrics.applied(&kind, written.outcome.as_str());
    if report_drift(&ctx.write, domain, &child.object_ref(&()), &written).await {
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
    ctx.write.publish(domain, EventType::Normal, reason, "Provision", note, Some(child.object_ref(&()))).await;
}

/// A Warning Event, emitted when the condition it explains first appears.
pub async fn warn_once(domain: &DataDomain, ctx: &Context, reason: &'static str, message: &str) {
    let current = domain.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    if !conditions::records(current, &Computed::new(conditions::STALLED, true, reason, message)) {
        tracing::warn!(domain = %domain.name_any(), reason, "{message}");
        ctx.write.publish(domain, EventType::Warning, reason, "Reconcile", message.to_string(), None).await;
    }
}
