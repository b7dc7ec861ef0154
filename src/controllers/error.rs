//! The reconcile error: what failed, with context, and whether retrying can
//! help. Spec problems are not errors here: they become a `Stalled` condition.

use crate::apply::ApplyError;

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
pub const CATEGORIES: [&str; 6] = ["forbidden", "conflict", "invalid", "api", "transport", "serialize"];

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
        match source {
            kube::Error::Api(s) if s.code == 403 => "forbidden",
            kube::Error::Api(s) if s.code == 409 => "conflict",
            kube::Error::Api(s) if s.code == 422 || s.code == 400 => "invalid",
            kube::Error::Api(_) => "api",
            _ => "transport",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
