//! Prometheus metrics and log setup. Metric labels are bounded: a kind, an
//! outcome, an error category; never an object name or an error message.

use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: &'static str,
    pub category: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    /// Policies are few and named by the platform team, so this stays bounded.
    pub policy: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApplyLabels {
    pub kind: String,
    pub outcome: &'static str,
}

/// The operator's metrics, registered once at start-up.
pub struct Metrics {
    pub registry: Registry,
    pub reconciliations: Family<KindLabels, Counter>,
    pub errors: Family<ErrorLabels, Counter>,
    pub duration: Family<KindLabels, Histogram>,
    pub applies: Family<ApplyLabels, Counter>,
    pub violations: Family<PolicyLabels, Gauge>,
    pub leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("meshplane");
        let reconciliations = Family::<KindLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let duration = Family::<KindLabels, Histogram>::new_with_constructor(|| Histogram::new(exponential_buckets(0.005, 2.0, 12)));
        let applies = Family::<ApplyLabels, Counter>::default();
        registry.register("reconciliations", "Reconcile passes, by resource kind", reconciliations.clone());
        registry.register("reconcile_errors", "Failed reconcile passes, by kind and error category", errors.clone());
        registry.register("reconcile_duration_seconds", "Duration of reconcile passes", duration.clone());
        registry.register(
            "child_applies",
            "Children meshplane considered applying, by child kind and outcome (created, updated, unchanged)",
            applies.clone(),
        );
        let violations = Family::<PolicyLabels, Gauge>::default();
        registry.register("policy_violations", "DataProducts that violate a GovernancePolicy now", violations.clone());
        let leader = Gauge::default();
        registry.register("leader", "1 while this replica is the leader and reconciles, 0 while it stands by", leader.clone());
        Metrics { registry, reconciliations, errors, duration, applies, violations, leader }
    }
}

impl Metrics {
    /// Counts a pass and returns a guard that records its duration when dropped.
    pub fn reconcile(&self, kind: &'static str) -> ReconcileTimer<'_> {
        self.reconciliations.get_or_create(&KindLabels { kind }).inc();
        ReconcileTimer { metrics: self, kind, start: Instant::now() }
    }

    pub fn error(&self, kind: &'static str, category: &'static str) {
        self.errors.get_or_create(&ErrorLabels { kind, category }).inc();
    }

    pub fn applied(&self, kind: &str, outcome: &'static str) {
        self.applies.get_or_create(&ApplyLabels { kind: kind.to_string(), outcome }).inc();
    }

    pub fn policy_violations(&self, policy: &str, count: i32) {
        self.violations.get_or_create(&PolicyLabels { policy: policy.to_string() }).set(count as i64);
    }

    /// Keeps the leader gauge current.
    pub fn watch_leadership(&self, leadership: crate::leader::Leadership) {
        use futures::StreamExt;
        let gauge = self.leader.clone();
        gauge.set(leadership.is_leader() as i64);
        tokio::spawn(async move {
            let mut terms = Box::pin(leadership.acquired());
            while terms.next().await.is_some() {
                gauge.set(1);
            }
        });
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    kind: &'static str,
    start: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics.duration.get_or_create(&KindLabels { kind: self.kind }).observe(self.start.elapsed().as_secs_f64());
    }
}

/// Log format: `text` for people (`make dev`), `json` for log pipelines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global log subscriber; `RUST_LOG` overrides the default level.
pub fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,kube=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => builder.with_target(false).init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
