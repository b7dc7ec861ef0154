//! A domain's conditions and status (pure).

use std::time::Duration;

use k8s_openapi::api::core::v1::ResourceQuota;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::apply::Applied;
use super::build::DomainBundle;
use super::validate::ValidDomain;
use crate::api::conditions::{self, Computed, reason};
use crate::api::{DataDomain, DataDomainStatus};

/// The parts of a tenant, in apply order: each one's condition, and what
/// it consists of.
pub const PARTS: [(&str, &str); 4] = [
    (conditions::NAMESPACE_READY, "namespace"),
    (conditions::ACCESS_READY, "role bindings"),
    (conditions::QUOTA_READY, "quota and limit range"),
    (conditions::NETWORK_READY, "network policies"),
];

/// Conditions after an apply pass (pure).
pub fn provisioned(valid: &ValidDomain<'_>, bundle: &DomainBundle, applied: &Applied, unaccounted: &[String]) -> Vec<Computed> {
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
    computed.extend(match &applied.result {
        Ok(()) if unaccounted.is_empty() => conditions::reconciled(format!(
            "namespace {} is provisioned: {} role bindings, quota, limit range, {} network policies",
            valid.namespace,
            bundle.role_bindings.len(),
            bundle.network_policies.len()
        )),
        Ok(()) => {
            conditions::reconciling(reason::QUOTA_PENDING, "everything is applied; waiting for the quota to be accounted (QuotaReady)")
        }
        Err(error) => conditions::reconciling(reason::APPLY_FAILED, format!("provisioning is retrying: {error}")),
    });
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
pub fn next(domain: &DataDomain, provisioned: Option<(String, i32)>, computed: &[Computed], now: &Time) -> DataDomainStatus {
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

/// A burst of new products (a GitOps sync, a migration) updates its domain's
/// count at most once per interval, not once per product.
pub const COUNT_INTERVAL: Duration = Duration::from_secs(15);

/// How long to hold back the `next` status when its only change from the
/// `current` one is the product count and the count was written `since`
/// ago, less than [`COUNT_INTERVAL`]; `None` to write now.
pub fn hold_count(current: &DataDomainStatus, next: &DataDomainStatus, since: Option<Duration>) -> Option<Duration> {
    if next.data_products == current.data_products {
        return None;
    }
    let only_the_count = DataDomainStatus { data_products: current.data_products, ..next.clone() } == *current;
    match since {
        Some(elapsed) if only_the_count && elapsed < COUNT_INTERVAL => Some(COUNT_INTERVAL - elapsed),
        _ => None,
    }
}
