//! What every controller shares, and [`run`], which wires them: one watch
//! per kind ([`watched`]), the caches and the [`Context`], the
//! controllers, readiness, and the objects-by-condition gauges.

pub mod context;
pub mod drift;
pub mod reconciler;
#[cfg(test)]
pub mod testing;
pub mod watched;

use std::sync::Arc;
use std::time::Duration;

use kube::{Client, Resource};

pub use context::{Context, Readiness, Settings};
use watched::{Caches, Watched};

use crate::api::Condition;
use crate::leader::Leadership;
use crate::telemetry::Metrics;

/// Runs every controller until `shutdown` resolves.
pub async fn run(
    client: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    readiness: Readiness,
    leadership: Leadership,
    catalog: tokio::sync::watch::Sender<Option<crate::catalog::http::CatalogCaches>>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + Clone + 'static,
) {
    // The catalog's search index follows the products' watch.
    let search = Arc::new(crate::catalog::index::Index::default());
    let mut watched = Watched::new(Default::default(), &search);
    let caches = watched.caches();
    // The catalog reads the same caches (on every replica, leader or not).
    let _ = catalog.send(Some(crate::catalog::http::CatalogCaches {
        domains: caches.domains.clone(),
        products: caches.products.clone(),
        index: search,
    }));
    let (ctx, synced) = Context::new(client.clone(), settings, metrics.clone(), caches.clone(), leadership.clone());
    let ctx = Arc::new(ctx);

    let domains = crate::domain::controller(ctx.clone(), &mut watched, shutdown.clone());
    let products = crate::product::controller(ctx.clone(), &mut watched, shutdown.clone());
    let policies = crate::policy::controller(ctx.clone(), &mut watched, shutdown.clone());
    let platforms = crate::platform::controller(ctx.clone(), &mut watched, shutdown.clone());
    let watches = watched.run(&client, &metrics);

    // kube's controllers hold their runners until their stores have listed,
    // and a graceful shutdown waits for the runners: a stop before the caches
    // synced would wait forever (an API server out of reach). No pass has run
    // then, so nothing is left to finish.
    let stopped_unsynced = {
        let readiness = readiness.clone();
        async move {
            shutdown.await;
            if readiness.is_ready() {
                std::future::pending::<()>().await;
            }
        }
    };
    let ready = {
        let caches = caches.clone();
        async move {
            if caches.wait_until_ready().await {
                tracing::info!("caches synced; ready");
                let _ = synced.send(true);
                readiness.set_ready();
            }
        }
    };
    // The watches run until the controllers have shut down.
    tokio::select! {
        _ = async { tokio::join!(domains, products, policies, platforms, ready) } => {},
        _ = watches => {},
        _ = count_by_condition(caches, metrics) => {},
        () = stopped_unsynced => tracing::info!("stopped before the caches synced; no pass had run"),
    }
}

/// Objects by Ready status, from the caches, for dashboards and alerts.
async fn count_by_condition(caches: Caches, metrics: Arc<Metrics>) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        tick.tick().await;
        count(&metrics, "DataDomain", &caches.domains.state(), |d| {
            d.status.as_ref().map(|s| (s.conditions.as_slice(), s.observed_generation))
        });
        count(&metrics, "DataProduct", &caches.products.state(), |p| {
            p.status.as_ref().map(|s| (s.conditions.as_slice(), s.observed_generation))
        });
        count(&metrics, "GovernancePolicy", &caches.policies.state(), |p| {
            p.status.as_ref().map(|s| (s.conditions.as_slice(), s.observed_generation))
        });
        count(&metrics, "DataPlatform", &caches.platforms.state(), |p| {
            p.status.as_ref().map(|s| (s.conditions.as_slice(), s.observed_generation))
        });
    }
}

/// Counts one kind's objects by their conditions, and those whose status
/// lags their spec (`status` gives an object's conditions and observed
/// generation).
fn count<K: Resource>(
    metrics: &Metrics,
    kind: &'static str,
    objects: &[Arc<K>],
    status: impl Fn(&K) -> Option<(&[Condition], Option<i64>)>,
) {
    metrics.count_objects(
        kind,
        objects.iter().map(|o| {
            let generation = o.meta().generation;
            let status = status(o);
            (status.map(|s| s.0), generation.is_some() && status.and_then(|s| s.1) != generation)
        }),
    );
}
