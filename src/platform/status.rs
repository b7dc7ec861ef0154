//! A platform's conditions and status, and when to look again (pure).

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::observe::Found;
use crate::api::DataPlatform;
use crate::api::conditions::{self, Computed, reason};
use crate::api::platform::DataPlatformStatus;

/// How soon a platform that is not Ready looks again: an engine coming
/// back, a Secret made or a privilege granted is no event of the platform's.
pub const RETRY: Duration = Duration::from_secs(10);

/// The conditions for what a pass found. A fault that needs a person (a
/// missing Secret, a refused login, a missing privilege) is Stalled; an
/// engine out of reach is still being reconciled.
pub fn conditions(found: &Found) -> Vec<Computed> {
    let triple = match found {
        Found::Ready { version } => conditions::reconciled(format!("connected; {version}")),
        Found::Unreachable(m) => conditions::reconciling(reason::UNREACHABLE, m),
        Found::SecretNotFound(m) => conditions::stalled(reason::SECRET_NOT_FOUND, m),
        Found::InvalidSpec(m) => conditions::stalled(reason::INVALID_SPEC, m),
        Found::AuthenticationFailed(m) => conditions::stalled(reason::AUTHENTICATION_FAILED, m),
        Found::DatabaseNotFound(m) => conditions::stalled(reason::DATABASE_NOT_FOUND, m),
        Found::MissingPrivilege(m) => conditions::stalled(reason::MISSING_PRIVILEGE, m),
    };
    triple.to_vec()
}

/// The status a pass computed, given the current one.
pub fn next(platform: &DataPlatform, found: &Found, computed: &[Computed], now: &Time) -> DataPlatformStatus {
    let current = platform.status.clone().unwrap_or_default();
    let version = match found {
        Found::Ready { version } => Some(version.clone()),
        // The last version seen stays until the engine answers again.
        _ => current.version.clone(),
    };
    DataPlatformStatus {
        observed_generation: platform.metadata.generation,
        version,
        conditions: conditions::merge(&current.conditions, computed, platform.metadata.generation, now),
    }
}

/// When to look again.
pub fn requeue(found: &Found, resync: Duration) -> Duration {
    match found {
        Found::Ready { .. } => resync,
        _ => RETRY.min(resync),
    }
}

/// The Warning a pass's conditions are news for, given the current ones:
/// (reason, message) when the platform is not Ready for a reason or with a
/// message its status does not record yet.
pub fn warning(current: &[conditions::Condition], computed: &[Computed]) -> Option<(&'static str, String)> {
    let ready = computed.iter().find(|c| c.type_ == conditions::READY)?;
    if ready.status {
        return None;
    }
    (!conditions::records(current, ready)).then(|| (ready.reason, ready.message.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_that_needs_a_person_stalls_and_an_unreachable_engine_is_still_reconciling() {
        let status =
            |found: &Found| conditions(found).into_iter().map(|c| format!("{}={} ({})", c.type_, c.status, c.reason)).collect::<Vec<_>>();
        assert_eq!(
            status(&Found::Ready { version: "PostgreSQL 15.18".into() }),
            ["Ready=true (Reconciled)", "Reconciling=false (NotReconciling)", "Stalled=false (NotStalled)"]
        );
        assert_eq!(
            status(&Found::Unreachable("no answer".into())),
            ["Ready=false (Unreachable)", "Reconciling=true (Unreachable)", "Stalled=false (NotStalled)"]
        );
        assert_eq!(
            status(&Found::AuthenticationFailed("refused".into())),
            ["Ready=false (AuthenticationFailed)", "Reconciling=false (NotReconciling)", "Stalled=true (AuthenticationFailed)"]
        );
    }

    #[test]
    fn a_warning_is_news_once() {
        let computed = conditions(&Found::MissingPrivilege("role a lacks CREATEROLE".into()));
        let (why, message) = warning(&[], &computed).unwrap();
        assert_eq!((why, message.as_str()), (reason::MISSING_PRIVILEGE, "role a lacks CREATEROLE"));
        let recorded = conditions::merge(&[], &computed, Some(1), &conditions::now());
        assert_eq!(warning(&recorded, &computed), None);
        assert_eq!(warning(&[], &conditions(&Found::Ready { version: "PostgreSQL 15".into() })), None);
    }

    #[test]
    fn a_platform_that_is_not_ready_looks_again_soon() {
        assert_eq!(requeue(&Found::Ready { version: "v".into() }, Duration::from_secs(300)), Duration::from_secs(300));
        assert_eq!(requeue(&Found::Unreachable("x".into()), Duration::from_secs(300)), RETRY);
    }
}
