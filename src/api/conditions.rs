//! Condition types and reasons, as constants, and the pure helper that
//! merges a freshly computed condition into a status list.
//!
//! `Ready` summarises; one condition per provisioning step says where it
//! stands; `Reconciling` and `Stalled` follow kstatus so Argo CD and Flux can
//! compute health. A condition's `lastTransitionTime` moves only when its
//! status flips, so a pass that changes nothing writes nothing.

pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";
pub const NAMESPACE_READY: &str = "NamespaceReady";
pub const ACCESS_READY: &str = "AccessReady";
pub const QUOTA_READY: &str = "QuotaReady";
pub const NETWORK_READY: &str = "NetworkReady";
pub const DELETING: &str = "Deleting";
pub const STORAGE_READY: &str = "StorageReady";
pub const PIPELINES_READY: &str = "PipelinesReady";
pub const INPUTS_READY: &str = "InputsReady";
pub const FRESH: &str = "Fresh";
pub const POLICY_COMPLIANT: &str = "PolicyCompliant";

pub mod reason {
    pub const PROVISIONED: &str = "Provisioned";
    pub const RECONCILED: &str = "Reconciled";
    pub const PROGRESSING: &str = "Progressing";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const NAMESPACE_NOT_OWNED: &str = "NamespaceNotOwned";
    pub const NAMESPACE_TERMINATING: &str = "NamespaceTerminating";
    pub const APPLY_FAILED: &str = "ApplyFailed";
    pub const QUOTA_PENDING: &str = "QuotaPending";
    pub const DATA_PRODUCTS_REMAIN: &str = "DataProductsRemain";
    pub const NOT_STALLED: &str = "NotStalled";
    pub const NOT_RECONCILING: &str = "NotReconciling";
    pub const NO_SUCCESSFUL_RUN: &str = "NoSuccessfulRun";
    pub const WITHIN_SLO: &str = "WithinSLO";
    pub const STALE: &str = "Stale";
    pub const ACCESS_DENIED: &str = "AccessDenied";
    pub const NOT_FOUND: &str = "NotFound";
    pub const RESOLVED: &str = "Resolved";
    pub const COMPLIANT: &str = "Compliant";
    pub const POLICY_VIOLATION: &str = "PolicyViolation";
    /// A ResourceQuota of the namespace refused a child (or its pods).
    pub const QUOTA_EXCEEDED: &str = "QuotaExceeded";
    /// Another field manager keeps changing fields meshplane manages on a
    /// child: restored (a Warning Event) or, past a limit, left alone (`Stalled`).
    pub const FIELD_MANAGER_CONFLICT: &str = "FieldManagerConflict";
    /// A child another writer deleted or edited was put back (an Event).
    pub const DRIFT_CORRECTED: &str = "DriftCorrected";
    /// Entries another writer added to a list that grants access (a
    /// binding's subjects, a role's rules, a network policy's rules) were
    /// removed (an Event).
    pub const FOREIGN_GRANT_REMOVED: &str = "ForeignGrantRemoved";
    /// A DataPlatform's engine does not answer.
    pub const UNREACHABLE: &str = "Unreachable";
    /// A DataPlatform's admin Secret is missing or incomplete.
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    /// A DataPlatform's engine refused its admin login.
    pub const AUTHENTICATION_FAILED: &str = "AuthenticationFailed";
    /// A DataPlatform names a database its engine does not have.
    pub const DATABASE_NOT_FOUND: &str = "DatabaseNotFound";
    /// A DataPlatform's admin login lacks a privilege meshplane needs.
    pub const MISSING_PRIVILEGE: &str = "MissingPrivilege";
}

/// A condition as computed by a reconcile pass, before it is merged into the
/// current status (which supplies `lastTransitionTime` when nothing flipped).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Computed {
    pub type_: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Computed {
    pub fn new(type_: &'static str, status: bool, reason: &'static str, message: impl Into<String>) -> Self {
        Computed { type_, status, reason, message: message.into() }
    }
}

/// Ready, Reconciling and Stalled (kstatus) of an object that is done.
pub fn reconciled(message: impl Into<String>) -> [Computed; 3] {
    [
        Computed::new(READY, true, reason::RECONCILED, message),
        Computed::new(RECONCILING, false, reason::NOT_RECONCILING, ""),
        Computed::new(STALLED, false, reason::NOT_STALLED, ""),
    ]
}

/// Ready, Reconciling and Stalled of an object meshplane is still working
/// on, for `why`.
pub fn reconciling(why: &'static str, message: impl Into<String>) -> [Computed; 3] {
    let message = message.into();
    [
        Computed::new(READY, false, why, &message),
        Computed::new(RECONCILING, true, why, message),
        Computed::new(STALLED, false, reason::NOT_STALLED, ""),
    ]
}

/// Ready, Reconciling and Stalled of an object that needs a person, for `why`.
pub fn stalled(why: &'static str, message: impl Into<String>) -> [Computed; 3] {
    let message = message.into();
    [
        Computed::new(READY, false, why, &message),
        Computed::new(RECONCILING, false, reason::NOT_RECONCILING, ""),
        Computed::new(STALLED, true, why, message),
    ]
}

/// Merges computed conditions into the current list: a condition keeps its
/// `lastTransitionTime` unless its status flipped; `now` stamps new and
/// flipped ones. Conditions of types not computed this pass are dropped.
pub fn merge(current: &[Condition], computed: &[Computed], generation: Option<i64>, now: &Time) -> Vec<Condition> {
    computed
        .iter()
        .map(|c| {
            let status = if c.status { "True" } else { "False" }.to_string();
            let previous = current.iter().find(|p| p.type_ == c.type_);
            let last_transition_time = match previous {
                Some(p) if p.status == status => p.last_transition_time.clone(),
                _ => now.clone(),
            };
            Condition {
                type_: c.type_.to_string(),
                status,
                reason: c.reason.to_string(),
                message: c.message.clone(),
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

/// Now, to the second: Kubernetes stores times to the second, so a finer
/// time would make every comparison with a stored status differ.
pub fn now() -> Time {
    Time(jiff::Timestamp::from_second(jiff::Timestamp::now().as_second()).unwrap_or_default())
}

/// Whether `current` already records `computed` (its type, status, reason
/// and message): a Warning about it would be no news.
pub fn records(current: &[Condition], computed: &Computed) -> bool {
    let status = if computed.status { "True" } else { "False" };
    current.iter().any(|c| c.type_ == computed.type_ && c.status == status && c.reason == computed.reason && c.message == computed.message)
}

/// The status (`True`/`False`/`Unknown`) of a condition type, if present.
pub fn status_of<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a str> {
    conditions.iter().find(|c| c.type_ == type_).map(|c| c.status.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> Time {
        Time(jiff::Timestamp::from_second(second).unwrap())
    }

    #[test]
    fn transition_time_moves_only_when_the_status_flips() {
        let first = merge(&[], &[Computed::new(READY, false, reason::PROGRESSING, "starting")], Some(1), &at(100));
        assert_eq!(first[0].last_transition_time, at(100));
        // Same status, new reason and message: the time stays.
        let same = merge(&first, &[Computed::new(READY, false, reason::APPLY_FAILED, "retrying")], Some(2), &at(200));
        assert_eq!(same[0].last_transition_time, at(100));
        assert_eq!((same[0].reason.as_str(), same[0].observed_generation), (reason::APPLY_FAILED, Some(2)));
        // A flip moves it.
        let flipped = merge(&same, &[Computed::new(READY, true, reason::RECONCILED, "done")], Some(2), &at(300));
        assert_eq!((flipped[0].status.as_str(), flipped[0].last_transition_time.clone()), ("True", at(300)));
    }

    #[test]
    fn a_pass_that_computes_the_same_conditions_changes_nothing() {
        let computed = [Computed::new(READY, true, reason::RECONCILED, "ok"), Computed::new(STALLED, false, reason::NOT_STALLED, "")];
        let once = merge(&[], &computed, Some(3), &at(1));
        let twice = merge(&once, &computed, Some(3), &at(99));
        assert_eq!(once, twice);
        assert_eq!(status_of(&twice, STALLED), Some("False"));
        assert_eq!(status_of(&twice, "Missing"), None);
    }
}
