//! What every reconcile pass shares: settings, caches, the writer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::Client;

pub use super::watched::Caches;
use crate::domain::settings::DomainSettings;
use crate::keys;
use crate::leader::Leadership;
use crate::plumbing::index::ByKey;
use crate::plumbing::owned::Owned;
use crate::telemetry::Metrics;
use crate::write::Writer;

/// Operator-wide settings from the command line.
#[derive(Clone, Debug)]
pub struct Settings {
    pub domain: DomainSettings,
    /// How often a reconciled object is reconciled again without any event.
    pub resync: Duration,
    /// How many objects of one kind are reconciled at once.
    pub concurrency: u16,
}

/// The key of a pipeline run (a Job): its namespace and product.
pub fn run_key(namespace: &str, product: &str) -> String {
    format!("{namespace}/{product}")
}

/// The indexes over the caches: the children kinds meshplane prunes, by
/// owner, and the pipeline runs, by product.
#[derive(Clone)]
pub struct Indexes {
    pub role_bindings: ByKey<Owned<RoleBinding>>,
    pub network_policies: ByKey<Owned<NetworkPolicy>>,
    pub cron_jobs: ByKey<Owned<CronJob>>,
    pub deployments: ByKey<Deployment>,
    pub jobs: ByKey<Job>,
}

impl Default for Indexes {
    fn default() -> Self {
        Indexes {
            role_bindings: ByKey::by_owner(),
            network_policies: ByKey::by_owner(),
            cron_jobs: ByKey::by_owner(),
            deployments: ByKey::by_owner(),
            jobs: ByKey::new(|job| {
                let meta = &job.metadata;
                let product = meta.labels.as_ref().and_then(|l| l.get(keys::LABEL_PRODUCT));
                product.zip(meta.namespace.as_ref()).map(|(product, ns)| run_key(ns, product)).into_iter().collect()
            }),
        }
    }
}

/// What every reconcile pass shares.
pub struct Context {
    /// For reads; every write goes through [`Context::write`].
    pub client: Client,
    pub write: Writer,
    pub metrics: Arc<Metrics>,
    pub settings: Settings,
    pub caches: Caches,
    pub leadership: Leadership,
    /// When each domain's product count was last written (see
    /// `domain::status::COUNT_INTERVAL`).
    pub counts_written: Mutex<HashMap<String, Instant>>,
    /// True once every cache has synced (see [`Context::synced`]).
    pub synced: tokio::sync::watch::Receiver<bool>,
}

impl Context {
    pub fn new(
        client: Client,
        settings: Settings,
        metrics: Arc<Metrics>,
        caches: Caches,
        leadership: Leadership,
    ) -> (Self, tokio::sync::watch::Sender<bool>) {
        let (synced_tx, synced) = tokio::sync::watch::channel(false);
        let write = Writer::new(client.clone(), &metrics);
        let ctx = Context { client, write, metrics, settings, caches, leadership, counts_written: Default::default(), synced };
        (ctx, synced_tx)
    }

    /// Waits until every cache has synced. A pass compares what it wants with
    /// the caches; one that ran on a cache still listing would take a child
    /// it has not seen yet for a missing one and write it again (after a
    /// restart: every domain's RoleBindings, every product's grants).
    /// False when the process is stopping before that: the pass must not run.
    pub async fn synced(&self) -> bool {
        self.synced.clone().wait_for(|synced| *synced).await.is_ok()
    }
}

/// Readiness of the process: true once every cache has synced.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
    pub(crate) fn set_ready(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::ResourceExt;
    use kube::runtime::{reflector, watcher};

    #[test]
    fn runs_are_found_by_their_product() {
        let (cache, mut writer) = reflector::store::<Job>();
        let index = Indexes::default().jobs;
        let run = |name: &str, namespace: &str, product: &str| -> Job {
            serde_saphyr::from_str(&format!(
                "metadata: {{name: {name}, namespace: {namespace}, labels: {{{}: {product}}}}}",
                keys::LABEL_PRODUCT
            ))
            .unwrap()
        };
        for job in [run("r1", "dm-a", "orders"), run("r2", "dm-a", "orders"), run("r3", "dm-a", "sales"), run("r4", "dm-b", "orders")] {
            let event = watcher::Event::Apply(job);
            writer.apply_watcher_event(&event);
            index.apply(&event, &cache);
        }
        let mut names: Vec<String> = index.get(&cache, &run_key("dm-a", "orders")).iter().map(|j| j.name_any()).collect();
        names.sort();
        assert_eq!(names, ["r1", "r2"]);
        assert_eq!(index.get(&cache, &run_key("dm-b", "orders")).len(), 1);
        // Relabelled to another product: found under that one only.
        let event = watcher::Event::Apply(run("r1", "dm-a", "sales"));
        writer.apply_watcher_event(&event);
        index.apply(&event, &cache);
        assert_eq!(index.get(&cache, &run_key("dm-a", "orders")).len(), 1);
        assert_eq!(index.get(&cache, &run_key("dm-a", "sales")).len(), 2);
    }
}
