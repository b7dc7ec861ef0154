//! A domain's deletion: its deletion policy, behind a finalizer.

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::core::ApiResource;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use super::observe;
use crate::api::DataDomain;
use crate::api::conditions::{self, Computed, reason};
use crate::api::domain::DomainDeletionPolicy;
use crate::error::Result;
use crate::keys;
use crate::operator::Context;

/// Runs the deletion policy. `Block` waits while products remain; the
/// namespace is deleted only when meshplane owns it. Never blocks on anything
/// but the user's own products: a missing namespace or CRD is no obstacle.
pub async fn finalize(domain: &DataDomain, ctx: &Context) -> Result<Action> {
    if !domain.finalizers().iter().any(|f| f == keys::FINALIZER_DOMAIN) {
        return Ok(Action::await_change());
    }
    // The namespace it made (its status says which), not the one its spec
    // would name now: the operator's namespace prefix may have changed since.
    let namespace = super::validate::current_namespace(domain, &ctx.settings.domain);
    if observe::owns_namespace(domain, &namespace, ctx).await? {
        if domain.spec.deletion_policy == DomainDeletionPolicy::Block {
            let (products, going) = observe::remaining_products(&namespace, ctx).await?;
            if !products.is_empty() {
                return wait_for_products(domain, ctx, &namespace, &products, going).await;
            }
        }
        if ctx.write.delete(&ApiResource::erase::<Namespace>(&()), None, &namespace).await? {
            let note = format!("Deleted namespace {namespace} ({:?} deletion policy)", domain.spec.deletion_policy);
            ctx.write.publish(domain, EventType::Normal, "Deleted", "Delete", note, None).await
        }
    }
    ctx.write.remove_finalizer(domain, keys::FINALIZER_DOMAIN).await?;
    Ok(Action::await_change())
}

/// `Block` while products remain: says which, and waits.
async fn wait_for_products(domain: &DataDomain, ctx: &Context, namespace: &str, products: &[String], going: bool) -> Result<Action> {
    let shown: Vec<&str> = products.iter().take(5).map(String::as_str).collect();
    let message = format!(
        "deletion waits: namespace {namespace} holds {} DataProduct(s) ({}{}); delete them, or set spec.deletionPolicy: Cascade to delete them with the domain",
        products.len(),
        shown.join(", "),
        if products.len() > shown.len() { ", ..." } else { "" }
    );
    let current = domain.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    if !conditions::records(current, &Computed::new(conditions::DELETING, true, reason::DATA_PRODUCTS_REMAIN, &message)) {
        ctx.write.publish(domain, EventType::Warning, reason::DATA_PRODUCTS_REMAIN, "Delete", message.clone(), None).await;
    }
    let computed = vec![
        Computed::new(conditions::READY, false, reason::DATA_PRODUCTS_REMAIN, &message),
        Computed::new(conditions::DELETING, true, reason::DATA_PRODUCTS_REMAIN, &message),
        Computed::new(conditions::RECONCILING, true, reason::DATA_PRODUCTS_REMAIN, &message),
        Computed::new(conditions::STALLED, false, reason::NOT_STALLED, ""),
    ];
    let provisioned = Some((namespace.to_string(), products.len() as i32));
    super::write_status(domain, ctx, provisioned, computed).await?;
    // A product's removal wakes the domain; looking again soon while the
    // last ones are going is only a safety net.
    Ok(Action::requeue(Duration::from_secs(if going { 2 } else { 30 })))
}
