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
pub struct ConditionLabels {
    pub kind: &'static str,
    /// The `Ready` condition's status: True, False or Unknown.
    pub ready: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: &'static str,
    pub category: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WatchErrorLabels {
    /// A kind meshplane watches: a fixed set.
    pub kind: String,
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

/// A child kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChildLabels {
    pub kind: String,
}

/// A child kind, and how meshplane corrected another writer's change to it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DriftLabels {
    pub kind: String,
    /// `restored` (the child was deleted), `reverted` (a field meshplane
    /// owns was edited) or `revoked` (an entry was added to a list that
    /// grants access).
    pub correction: &'static str,
}

/// The operator's metrics, registered once at start-up.
pub struct Metrics {
    pub registry: Registry,
    pub reconciliations: Family<KindLabels, Counter>,
    pub errors: Family<ErrorLabels, Counter>,
    pub watch_errors: Family<WatchErrorLabels, Counter>,
    pub duration: Family<KindLabels, Histogram>,
    pub applies: Family<ApplyLabels, Counter>,
    pub child_reads: Family<ChildLabels, Counter>,
    pub drift: Family<DriftLabels, Counter>,
    pub violations: Family<PolicyLabels, Gauge>,
    pub leader: Gauge,
    pub in_flight: Family<KindLabels, Gauge>,
    pub objects: Family<ConditionLabels, Gauge>,
    pub backlog: Family<KindLabels, Gauge>,
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
        let watch_errors = Family::<WatchErrorLabels, Counter>::default();
        registry.register(
            "watch_errors",
            "Failed lists and watches behind the caches (each retried with backoff), by watched kind and error category; throttled is HTTP 429",
            watch_errors.clone(),
        );
        registry.register("reconcile_duration_seconds", "Duration of reconcile passes", duration.clone());
        registry.register(
            "child_applies",
            "Children meshplane considered applying, by child kind and outcome (created, updated, unchanged)",
            applies.clone(),
        );
        let child_reads = Family::<ChildLabels, Counter>::default();
        registry.register(
            "child_reads",
            "Children read whole from the API server because the cache's digest of meshplane's fields differed from the desired object's, by child kind (once per object and change; 0 when the API server keeps meshplane's values as written)",
            child_reads.clone(),
        );
        let drift = Family::<DriftLabels, Counter>::default();
        registry.register(
            "drift_corrected",
            "Children another writer changed and meshplane put back, by child kind and correction: restored (deleted), reverted (a field meshplane owns edited), revoked (an entry added to a list that grants access)",
            drift.clone(),
        );
        let violations = Family::<PolicyLabels, Gauge>::default();
        registry.register("policy_violations", "DataProducts that violate a GovernancePolicy now", violations.clone());
        let leader = Gauge::default();
        registry.register("leader", "1 while this replica is the leader and reconciles, 0 while it stands by", leader.clone());
        let in_flight = Family::<KindLabels, Gauge>::default();
        registry.register("reconciles_in_flight", "Reconcile passes running now, by kind", in_flight.clone());
        let objects = Family::<ConditionLabels, Gauge>::default();
        registry.register("objects", "DataDomains, DataProducts and GovernancePolicies, by kind and Ready status", objects.clone());
        let backlog = Family::<KindLabels, Gauge>::default();
        registry.register(
            "backlog",
            "Objects whose latest spec meshplane has not reconciled yet (observedGeneration behind generation): the work queue seen from outside",
            backlog.clone(),
        );
        // Series start at zero, so dashboards and alerts see them before the first event.
        for kind in ["DataDomain", "DataProduct", "GovernancePolicy", "DataPlatform"] {
            let _ = reconciliations.get_or_create(&KindLabels { kind });
            let _ = in_flight.get_or_create(&KindLabels { kind });
            for category in crate::error::CATEGORIES {
                let _ = errors.get_or_create(&ErrorLabels { kind, category });
            }
        }
        Metrics {
            registry,
            reconciliations,
            errors,
            watch_errors,
            duration,
            applies,
            child_reads,
            drift,
            violations,
            leader,
            in_flight,
            objects,
            backlog,
        }
    }
}

impl Metrics {
    /// Counts a pass and returns a guard that records its duration when dropped.
    pub fn reconcile(&self, kind: &'static str) -> ReconcileTimer<'_> {
        self.reconciliations.get_or_create(&KindLabels { kind }).inc();
        self.in_flight.get_or_create(&KindLabels { kind }).inc();
        ReconcileTimer { metrics: self, kind, start: Instant::now() }
    }

    pub fn error(&self, kind: &'static str, category: &'static str) {
        self.errors.get_or_create(&ErrorLabels { kind, category }).inc();
    }

    pub fn watch_error(&self, kind: &str, category: &'static str) {
        self.watch_errors.get_or_create(&WatchErrorLabels { kind: kind.to_string(), category }).inc();
    }

    pub fn applied(&self, kind: &str, outcome: &'static str) {
        self.applies.get_or_create(&ApplyLabels { kind: kind.to_string(), outcome }).inc();
    }

    pub fn policy_violations(&self, policy: &str, count: i32) {
        self.violations.get_or_create(&PolicyLabels { policy: policy.to_string() }).set(count as i64);
    }

    /// Sets how many objects of a kind have each `Ready` status, and how
    /// many wait for their latest spec to be reconciled. Each item: the
    /// conditions, and whether observedGeneration lags generation.
    pub fn count_objects<'a>(&self, kind: &'static str, objects: impl Iterator<Item = (Option<&'a [crate::api::Condition]>, bool)>) {
        let mut counts = [0i64; 3];
        let mut behind = 0;
        for (c, lagging) in objects {
            behind += lagging as i64;
            let status = c.and_then(|c| crate::api::conditions::status_of(c, crate::api::conditions::READY));
            counts[match status {
                Some("True") => 0,
                Some("False") => 1,
                _ => 2,
            }] += 1;
        }
        for (ready, count) in ["True", "False", "Unknown"].into_iter().zip(counts) {
            self.objects.get_or_create(&ConditionLabels { kind, ready }).set(count);
        }
        self.backlog.get_or_create(&KindLabels { kind }).set(behind);
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
        self.metrics.in_flight.get_or_create(&KindLabels { kind: self.kind }).dec();
    }
}

/// Log format: `text` for people (`make dev`), `json` for log pipelines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global log subscriber; `RUST_LOG` overrides the default level.
/// Built with the `otel` feature and given `OTEL_EXPORTER_OTLP_ENDPOINT`, it
/// also exports the reconcile spans as OpenTelemetry traces.
pub fn init_logging(format: LogFormat) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,kube=warn"));
    let output = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer().with_target(false).boxed(),
        // Each line carries the reconcile span: the object's kind, namespace and name.
        LogFormat::Json => {
            tracing_subscriber::fmt::layer().json().flatten_event(true).with_current_span(true).with_span_list(false).boxed()
        }
    };
    let registry = tracing_subscriber::registry().with(filter).with(output);
    #[cfg(feature = "otel")]
    let registry = registry.with(otel::layer());
    registry.init();
}

#[cfg(feature = "otel")]
mod otel {
    use opentelemetry::trace::TracerProvider;
    use tracing_subscriber::Layer;

    /// The OTLP exporter layer, when OTEL_EXPORTER_OTLP_ENDPOINT is set.
    pub fn layer<S>() -> Option<impl Layer<S>>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT")?;
        let exporter = match opentelemetry_otlp::SpanExporter::builder().with_tonic().build() {
            Ok(exporter) => exporter,
            Err(error) => {
                eprintln!("OpenTelemetry exporter: {error}; traces are off");
                return None;
            }
        };
        let resource = opentelemetry_sdk::Resource::builder().with_service_name("meshplane").build();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build();
        let tracer = provider.tracer("meshplane");
        opentelemetry::global::set_tracer_provider(provider);
        Some(tracing_opentelemetry::layer().with_tracer(tracer))
    }
}
