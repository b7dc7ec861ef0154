//! Another field manager's change to fields meshplane owns: how it is read
//! from the API server's refusal, and when meshplane stops forcing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Restores of one object against one foreign field manager, within
/// [`CONFLICT_WINDOW`], after which meshplane stops forcing that object.
pub const CONFLICT_LIMIT: usize = 3;

/// How long a restore counts against [`CONFLICT_LIMIT`].
pub const CONFLICT_WINDOW: Duration = Duration::from_secs(600);

/// Another field manager changed fields that meshplane owns on a child.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub kind: String,
    pub name: String,
    /// Each foreign manager, with the fields it changed (as the API server
    /// names them: `.spec.replicas`), in the API server's order.
    pub managers: Vec<(String, Vec<String>)>,
    /// Restores of this object against these managers within the window,
    /// this one included (when restored).
    pub restores: usize,
    /// True: meshplane forced its values back. False: it yielded, and the
    /// foreign values stay until `retry_after` has passed.
    pub restored: bool,
    /// When meshplane will force again (yielded only).
    pub retry_after: Option<Duration>,
    /// The conflict touched a list that grants access, which meshplane
    /// always restores (it never yields those).
    pub grants: bool,
}

impl Conflict {
    /// "field manager \"kubectl-edit\" changed .spec.replicas"
    pub fn describe(&self) -> String {
        let parts: Vec<String> =
            self.managers.iter().map(|(manager, fields)| format!("field manager {manager:?} changed {}", fields.join(", "))).collect();
        parts.join("; ")
    }
}

/// Remembers, per child and foreign field manager, when meshplane restored
/// its fields, so that a manager that keeps changing them is not fought
/// forever.
///
/// Each time a plain (unforced) apply of a child is refused with a conflict,
/// meshplane counts it against every manager named. Below [`CONFLICT_LIMIT`]
/// restores within [`CONFLICT_WINDOW`] it forces its values back (a Warning
/// Event says which manager changed which field). At the limit it yields: it
/// leaves the foreign values in place and the product reports
/// `Stalled=True`, reason `FieldManagerConflict`, naming the object, the
/// manager and the fields, so a person decides (remove the other writer or
/// its change, or stop managing the object elsewhere). It keeps trying plain
/// applies, which write nothing while the conflict stands and succeed as soon
/// as the foreign change is gone; once the oldest restore leaves the window it
/// forces once more. The memory is per process: a restarted or new leader
/// starts counting afresh, which costs at most [`CONFLICT_LIMIT`] more
/// restores.
#[derive(Clone, Default)]
pub struct ConflictGuard {
    restores: Arc<Mutex<Restores>>,
}

/// When meshplane restored each (object, foreign manager), oldest first.
type Restores = HashMap<(String, String), Vec<Instant>>;

impl ConflictGuard {
    /// Decides on a conflict seen now: restore (and count it) or yield.
    pub fn decide(&self, object: &str, managers: &[(String, Vec<String>)], now: Instant) -> (bool, usize, Option<Duration>) {
        let mut restores = self.restores.lock().unwrap_or_else(|e| e.into_inner());
        restores.retain(|_, times| {
            times.retain(|t| now.duration_since(*t) < CONFLICT_WINDOW);
            !times.is_empty()
        });
        let key = |manager: &str| (object.to_string(), manager.to_string());
        let most = managers.iter().map(|(m, _)| restores.get(&key(m)).map_or(0, Vec::len)).max().unwrap_or(0);
        if most >= CONFLICT_LIMIT {
            let oldest = managers.iter().filter_map(|(m, _)| restores.get(&key(m))?.first().copied()).min().unwrap_or(now);
            let retry_after = CONFLICT_WINDOW.saturating_sub(now.duration_since(oldest));
            return (false, most, Some(retry_after));
        }
        for (manager, _) in managers {
            restores.entry(key(manager)).or_default().push(now);
        }
        (true, most + 1, None)
    }
}

/// The foreign managers and fields of a server-side apply conflict, from the
/// API server's message (the Status' causes are not exposed by the client):
/// `Apply failed with 1 conflict: conflict with "kubectl-edit" using apps/v1: .spec.replicas`
/// or, for several, `Apply failed with 2 conflicts: conflicts with "a" using v1:\n- .x\n- .y`.
pub fn parse_conflicts(message: &str) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for line in message.lines() {
        let line = line.trim();
        if let Some(field) = line.strip_prefix("- ") {
            if let Some((_, fields)) = out.last_mut() {
                fields.push(field.trim().to_string());
            }
            continue;
        }
        let Some(at) = line.find(" with \"") else {
            continue;
        };
        let rest = &line[at + " with \"".len()..];
        // The manager is printed quoted (Go's %q): find the closing quote.
        let mut manager = String::new();
        let mut chars = rest.char_indices();
        let mut end = rest.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        manager.push(escaped);
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => manager.push(c),
            }
        }
        let fields = match rest[end..].split_once(": ") {
            Some((_, field)) if !field.trim().is_empty() => vec![field.trim().to_string()],
            _ => Vec::new(),
        };
        out.push((manager, fields));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicts_name_their_managers_and_fields() {
        // As kube-apiserver v1.34 words them.
        let one = "Apply failed with 1 conflict: conflict with \"kubectl-patch\" using apps/v1: .spec.replicas";
        assert_eq!(parse_conflicts(one), vec![("kubectl-patch".to_string(), vec![".spec.replicas".to_string()])]);
        let two = "Apply failed with 2 conflicts: conflicts with \"kubectl-label\" using v1:\n- .metadata.labels.a\nconflicts with \"kubectl-patch\" using v1:\n- .data.x";
        assert_eq!(
            parse_conflicts(two),
            vec![
                ("kubectl-label".to_string(), vec![".metadata.labels.a".to_string()]),
                ("kubectl-patch".to_string(), vec![".data.x".to_string()])
            ]
        );
        let applied = "Apply failed with 1 conflict: conflict with \"argo \\\"cd\\\"\": .spec.template.spec.containers[name=\"c\"].image";
        assert_eq!(
            parse_conflicts(applied),
            vec![("argo \"cd\"".to_string(), vec![".spec.template.spec.containers[name=\"c\"].image".to_string()])]
        );
        let scale = "Apply failed with 1 conflict: conflict with \"kubectl\" with subresource \"scale\" using apps/v1 at 2026-01-01T00:00:00Z: .spec.replicas";
        assert_eq!(parse_conflicts(scale), vec![("kubectl".to_string(), vec![".spec.replicas".to_string()])]);
    }

    #[test]
    fn a_manager_that_keeps_coming_back_is_given_up_on() {
        let guard = ConflictGuard::default();
        let managers = vec![("hpa".to_string(), vec![".spec.replicas".to_string()])];
        let t0 = Instant::now();
        for n in 1..=CONFLICT_LIMIT {
            assert_eq!(guard.decide("Deployment/ns/d", &managers, t0 + Duration::from_secs(n as u64)), (true, n, None));
        }
        let (restore, restores, retry) = guard.decide("Deployment/ns/d", &managers, t0 + Duration::from_secs(61));
        assert!(!restore);
        assert_eq!(restores, CONFLICT_LIMIT);
        assert_eq!(retry, Some(CONFLICT_WINDOW - Duration::from_secs(60)));
        // Another object, or another manager on it, is counted apart.
        assert!(guard.decide("Deployment/ns/e", &managers, t0 + Duration::from_secs(62)).0);
        // Once the oldest restore has left the window, meshplane forces again.
        assert!(guard.decide("Deployment/ns/d", &managers, t0 + CONFLICT_WINDOW + Duration::from_secs(2)).0);
    }
}
