//! A policy's scope, violations, conditions and status (pure).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;

use super::build::admission_name;
use crate::api::conditions::{self, reason};
use crate::api::policy::GovernancePolicyStatus;
use crate::api::{DataDomain, DataProduct, GovernancePolicy};
use crate::domain::settings::DomainSettings;
use crate::domain::validate::current_namespace;
use crate::governance;

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

/// How many products of the selected domains violate the policy now.
pub fn violations(
    policy: &GovernancePolicy,
    selected: Option<&[String]>,
    domains: &[Arc<DataDomain>],
    products: &[Arc<DataProduct>],
    settings: &DomainSettings,
    today: jiff::civil::Date,
) -> i32 {
    // The selected domains' namespaces, worked out once: a pass reads every product.
    let scope: HashSet<String> = domains
        .iter()
        .filter(|d| selected.is_none_or(|names| names.contains(&d.name_any())))
        .map(|d| current_namespace(d, settings))
        .collect();
    let in_scope = |product: &DataProduct| product.metadata.namespace.as_ref().is_some_and(|ns| scope.contains(ns));
    products.iter().filter(|p| in_scope(p) && !governance::evaluate(policy, p, today).is_empty()).count() as i32
}

/// The status after a pass whose compilation ended in `compiled`.
pub fn next(policy: &GovernancePolicy, compiled: Result<(), String>, violations: i32) -> GovernancePolicyStatus {
    let name = policy.name_any();
    let computed = match compiled {
        Ok(()) => conditions::reconciled(format!("{} enforced by the API server ({:?})", admission_name(&name), policy.spec.enforcement)),
        Err(e) => conditions::reconciling(reason::APPLY_FAILED, format!("compiling into admission objects failed: {e}")),
    };
    let current = policy.status.clone().unwrap_or_default();
    GovernancePolicyStatus {
        observed_generation: policy.metadata.generation,
        admission_objects: vec![
            format!("ValidatingAdmissionPolicy/{}", admission_name(&name)),
            format!("ValidatingAdmissionPolicyBinding/{}", admission_name(&name)),
        ],
        violations: Some(violations),
        conditions: conditions::merge(&current.conditions, &computed, policy.metadata.generation, &conditions::now()),
    }
}

/// When to look again: at the next UTC midnight (the deprecation rule's
/// date moves), or after `resync`, whichever comes first.
pub fn requeue(today: jiff::civil::Date, now: jiff::Timestamp, resync: Duration) -> Duration {
    let tomorrow = today.tomorrow().ok().and_then(|d| d.to_zoned(jiff::tz::TimeZone::UTC).ok());
    let until_midnight = tomorrow.and_then(|t| Duration::try_from(t.timestamp().duration_since(now)).ok()).unwrap_or(resync);
    resync.min(until_midnight + Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_is_compiled_again_just_after_midnight() {
        let today = jiff::civil::date(2026, 12, 1);
        let now: jiff::Timestamp = "2026-12-01T23:59:00Z".parse().unwrap();
        assert_eq!(requeue(today, now, Duration::from_secs(300)), Duration::from_secs(61));
        assert_eq!(requeue(today, "2026-12-01T12:00:00Z".parse().unwrap(), Duration::from_secs(300)), Duration::from_secs(300));
    }
}
