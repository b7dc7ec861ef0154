//! The Warning Events that tell an owner's audience another writer's
//! change to one of its children was undone.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;
use kube::runtime::events::EventType;

use crate::api::conditions::reason;
use crate::write::{Drift, Guarded, Writer};

/// Publishes a Warning Event about `owner` for each change of another
/// writer's that an apply of `child` undid: a deletion, an edit, entries
/// added to a list that grants access. An edit undone against a named
/// field manager is left to the conflict's own Warning, which names the
/// writer and its fields. True when it published.
pub async fn report_drift<K: Resource<DynamicType = ()>>(write: &Writer, owner: &K, child: &ObjectReference, written: &Guarded) -> bool {
    let kind = child.kind.as_deref().unwrap_or_default();
    let name = child.name.as_deref().unwrap_or_default();
    let place = child.namespace.as_deref().map(|ns| format!(" in namespace {ns}")).unwrap_or_default();
    let mut notes = Vec::new();
    match written.drift {
        Some(Drift::Restored) => {
            notes.push((reason::DRIFT_CORRECTED, format!("Restored {kind} {name}{place}, which another writer deleted")))
        }
        Some(Drift::Reverted) if written.revoked.is_empty() && written.conflict.is_none() => notes.push((
            reason::DRIFT_CORRECTED,
            format!("Reverted {kind} {name}{place}: another writer changed fields that meshplane manages"),
        )),
        _ => {}
    }
    for grant in &written.revoked {
        notes.push((
            reason::FOREIGN_GRANT_REMOVED,
            format!("Removed from {kind} {name}{place} access meshplane did not grant: {}", grant.describe()),
        ));
    }
    let published = !notes.is_empty();
    for (why, note) in notes {
        tracing::warn!(owner = %owner.meta().name.as_deref().unwrap_or_default(), "{note}");
        write.publish(owner, EventType::Warning, why, "Restore", note, Some(child.clone())).await;
    }
    published
}
