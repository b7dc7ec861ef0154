//! The reconcile error: what failed, with context, and a bounded category
//! for metrics. Spec problems are not errors here: they become a `Stalled`
//! condition.

/// A failed write, naming the object.
#[derive(Debug, thiserror::Error)]
#[error("applying {kind} {name}: {source}")]
pub struct ApplyError {
    pub kind: String,
    pub name: String,
    #[source]
    pub source: kube::Error,
}

impl ApplyError {
    /// The API server's message when a ResourceQuota refused the object
    /// ("... is forbidden: exceeded quota: <quota>, requested: ..., used:
    /// ..., limited: ..."): not a fault of meshplane's, and not one that a
    /// quick retry cures.
    pub fn quota_exceeded(&self) -> Option<&str> {
        match &self.source {
            kube::Error::Api(status) if status.code == 403 && status.message.contains("exceeded quota") => Some(&status.message),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Apply(#[from] ApplyError),

    #[error("{action}: {source}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },

    #[error("serializing {what}: {source}")]
    Serialize {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// Every value [`Error::category`] returns: metric series start at zero
/// for each, so an alert's `rate()` sees the first error.
pub const CATEGORIES: [&str; 7] = ["forbidden", "conflict", "invalid", "throttled", "api", "transport", "serialize"];

impl Error {
    pub fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let action = action.into();
        move |source| Error::Kube { action, source }
    }

    /// A bounded label for metrics.
    pub fn category(&self) -> &'static str {
        let source = match self {
            Error::Apply(e) => &e.source,
            Error::Kube { source, .. } => source,
            Error::Serialize { .. } => return "serialize",
        };
        category_of(source)
    }
}

/// A bounded label for a failed request: `throttled` is HTTP 429 (API
/// priority and fairness, or a cache still initialising).
pub fn category_of(error: &kube::Error) -> &'static str {
    match error {
        kube::Error::Api(s) => status_category(s.code),
        _ => "transport",
    }
}

fn status_category(code: u16) -> &'static str {
    match code {
        403 => "forbidden",
        409 => "conflict",
        400 | 422 => "invalid",
        429 => "throttled",
        _ => "api",
    }
}

/// [`category_of`] for a watch's failure.
pub fn watch_category(error: &kube::runtime::watcher::Error) -> &'static str {
    use kube::runtime::watcher::Error as W;
    match error {
        W::InitialListFailed(e) | W::WatchStartFailed(e) | W::WatchFailed(e) => category_of(e),
        W::WatchError(status) => status_category(status.code),
        W::NoResourceVersion => "api",
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
