//! The Events a product pass publishes: one for what it provisioned, a
//! Warning for what needs a person, the audit trail of storage taken back.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::ResourceExt;
use kube::api::DynamicObject;
use kube::core::ApiResource;
use kube::runtime::events::EventType;

use super::apply::Applied;
use super::status;
use crate::api::DataProduct;
use crate::api::conditions::{self, Computed, reason};
use crate::error::Result;
use crate::keys;
use crate::operator::Context;
use crate::operator::drift::report_drift;
use crate::write::{CONFLICT_LIMIT, CONFLICT_WINDOW, Guarded, Outcome};

/// A Warning Event for each stall or policy violation the current status
/// does not record yet (with the same message).
pub async fn publish_warnings(product: &DataProduct, ctx: &Context, computed: &[Computed]) {
    let current = product.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    for (reason, action, message) in status::warnings(current, computed) {
        if reason == reason::POLICY_VIOLATION {
            tracing::warn!(product = %product.name_any(), namespace = %product.namespace().unwrap_or_default(), "{message}");
        }
        ctx.write.publish(product, EventType::Warning, reason, action, message, None).await;
    }
}

/// A Warning for a stall, unless the status records it already.
pub async fn warn_stalled(product: &DataProduct, ctx: &Context, why: &'static str, message: &str) {
    let current = product.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    if !conditions::records(current, &Computed::new(conditions::STALLED, true, why, message)) {
        tracing::warn!(product = %product.name_any(), namespace = %product.namespace().unwrap_or_default(), reason = why, "{message}");
        ctx.write.publish(product, EventType::Warning, why, "Reconcile", message.to_string(), None).await;
    }
}

/// Counts a child's apply and makes it part of the audit trail: a Normal
/// Event for a write, a Warning Event when another field manager had changed
/// meshplane's fields (naming the object, the manager and the fields).
pub async fn note(product: &DataProduct, ctx: &Context, child: ObjectReference, guarded: &Guarded, changes: &mut Vec<String>) {
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
    if report_drift(&ctx.write, product, &child, guarded).await {
        return;
    }
    match &guarded.conflict {
        Some(conflict) if conflict.restored && conflict.grants => {
            let note = format!("Restored {kind} {name}: {}; a list that grants access is meshplane's alone", conflict.describe());
            tracing::warn!(product = %at.0, namespace = %at.1, "{note}");
            ctx.write.publish(product, EventType::Warning, reason::FIELD_MANAGER_CONFLICT, "Restore", note, Some(child)).await;
        }
        Some(conflict) if conflict.restored => {
            let note = format!(
                "Restored {kind} {name}: {}, which meshplane manages (restore {} of {} within {}m; then meshplane stops forcing)",
                conflict.describe(),
                conflict.restores,
                CONFLICT_LIMIT,
                CONFLICT_WINDOW.as_secs() / 60
            );
            tracing::warn!(product = %at.0, namespace = %at.1, "{note}");
            ctx.write.publish(product, EventType::Warning, reason::FIELD_MANAGER_CONFLICT, "Restore", note, Some(child)).await;
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
pub async fn report_changes(product: &DataProduct, ctx: &Context, applied: &Applied) {
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
    ctx.write.publish(product, EventType::Normal, reason, "Provision", note, None).await;
}

/// Takes back storage that an earlier product of the same name left behind
/// under `Retain` (see [`crate::write::Writer::reclaim`]), and says so: the
/// apply has made this product its owner again, and the marks of the
/// release go, or a claim in use would still read as orphaned.
pub async fn reclaimed(
    product: &DataProduct,
    ctx: &Context,
    resource: &ApiResource,
    released: &DynamicObject,
    reference: ObjectReference,
) -> Result<()> {
    let name = released.name_any();
    ctx.write.reclaim(resource, released).await?;
    let from = released.annotations().get(keys::ANNOTATION_ORPHANED_FROM).cloned().unwrap_or_else(|| "an earlier product".into());
    let note = format!("Took back {} {name} with its data, retained from {from}", resource.kind);
    tracing::info!(product = %product.name_any(), namespace = %product.namespace().unwrap_or_default(), "{note}");
    ctx.write.publish(product, EventType::Normal, "StorageReclaimed", "Provision", note, Some(reference)).await;
    Ok(())
}
