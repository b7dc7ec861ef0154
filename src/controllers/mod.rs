//! The controllers: one reconciler per kind, sharing one [`Context`] of
//! caches, the writer and the event recorder. [`run`] wires the watches,
//! starts the controllers and serves health and metrics until a signal.

pub mod domain;
pub mod error;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::{FutureExt, Stream};
use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;

use crate::api::{DataDomain, DataProduct};
use crate::apply::Applier;
use crate::keys;
use crate::render::domain::DomainSettings;
use crate::telemetry::Metrics;

/// Operator-wide settings from the command line.
#[derive(Clone, Debug)]
pub struct Settings {
    pub domain: DomainSettings,
    /// How often a reconciled object is reconciled again without any event.
    pub resync: Duration,
    /// How many objects of one kind are reconciled at once.
    pub concurrency: u16,
}

/// The caches of the children meshplane owns; only meshplane's objects (by
/// label) are watched, with managedFields stripped.
#[derive(Clone)]
pub struct Caches {
    pub namespaces: Store<Namespace>,
    pub role_bindings: Store<RoleBinding>,
    pub quotas: Store<ResourceQuota>,
    pub limit_ranges: Store<LimitRange>,
    pub network_policies: Store<NetworkPolicy>,
    pub products: Store<PartialObjectMeta<DataProduct>>,
}

/// What every reconcile pass shares.
pub struct Context {
    pub client: Client,
    pub applier: Applier,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub settings: Settings,
    pub caches: Caches,
}

/// Readiness of the process: true once every cache has synced.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
    fn set_ready(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A cache and the watch stream that fills it, for one kind.
fn cached<K>(
    client: &Client,
    config: watcher::Config,
) -> (
    Store<K>,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(Api::<K>::all(client.clone()), config)
        .default_backoff()
        .modify(|object| object.meta_mut().managed_fields = None)
        .reflect(writer)
        .touched_objects();
    (reader, stream)
}

/// Runs every controller until `shutdown` resolves.
pub async fn run(
    client: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    readiness: Readiness,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    // Children are watched by label, so the caches hold only meshplane's own
    // objects; products only as metadata (the domain controller counts them).
    let owned = || watcher::Config::default().labels(keys::MANAGED_SELECTOR);
    let (domains, domain_events) = cached::<DataDomain>(&client, watcher::Config::default());
    let (namespaces, namespace_events) = cached::<Namespace>(&client, owned());
    let (role_bindings, role_binding_events) = cached::<RoleBinding>(&client, owned());
    let (quotas, quota_events) = cached::<ResourceQuota>(&client, owned());
    let (limit_ranges, limit_range_events) = cached::<LimitRange>(&client, owned());
    let (network_policies, network_policy_events) = cached::<NetworkPolicy>(&client, owned());
    let (products, product_events) =
        cached::<PartialObjectMeta<DataProduct>>(&client, watcher::Config::default());

    let caches = Caches {
        namespaces,
        role_bindings,
        quotas,
        limit_ranges,
        network_policies,
        products,
    };
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: keys::EVENT_REPORTER.into(),
            instance: std::env::var("POD_NAME").ok(),
        },
    );
    let ctx = Arc::new(Context {
        client: client.clone(),
        applier: Applier::new(client.clone()),
        recorder,
        metrics,
        settings,
        caches: caches.clone(),
    });

    let domain_controller = domain::controller(
        ctx.clone(),
        domain::Watches {
            domains: (domains.clone(), domain_events),
            namespaces: namespace_events,
            role_bindings: role_binding_events,
            quotas: quota_events,
            limit_ranges: limit_range_events,
            network_policies: network_policy_events,
            products: product_events,
        },
        shutdown,
    );

    let ready = async move {
        let waits = [
            domains.wait_until_ready().boxed(),
            caches.namespaces.wait_until_ready().boxed(),
            caches.role_bindings.wait_until_ready().boxed(),
            caches.quotas.wait_until_ready().boxed(),
            caches.limit_ranges.wait_until_ready().boxed(),
            caches.network_policies.wait_until_ready().boxed(),
            caches.products.wait_until_ready().boxed(),
        ];
        if futures::future::try_join_all(waits).await.is_ok() {
            tracing::info!("caches synced; ready");
            readiness.set_ready();
        }
    };
    tokio::join!(domain_controller, ready);
}
