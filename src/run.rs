//! `meshplane run`: connects to the cluster as kubectl would (kubeconfig or
//! in-cluster), then runs the controllers and the HTTP endpoints until
//! SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::watch;

use crate::domain::settings::DomainSettings;
use crate::leader;
use crate::operator::{self, Readiness, Settings};
use crate::server;
use crate::telemetry::Metrics;

/// Everything `meshplane run` is told on its command line.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub namespace_prefix: String,
    pub platform_namespace: String,
    pub resync: Duration,
    pub concurrency: u16,
    pub metrics_addr: SocketAddr,
    /// Elect a leader on a Lease (off: this process always reconciles).
    pub leader_election: bool,
    pub lease_name: String,
    /// This replica's name in the Lease (the pod name in a cluster).
    pub identity: String,
    /// Address of the catalog API.
    pub catalog_addr: SocketAddr,
    /// Check callers' tokens (off only for local development).
    pub catalog_auth: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("connecting to the cluster: {0}")]
    Connect(#[source] kube::Error),
    #[error("leader election: {0}")]
    Election(#[source] kube_lease_manager::LeaseManagerError),
    #[error("lost the leader lease; exiting so that only the new leader writes")]
    LostLeadership,
    #[error("serving metrics and health on {addr}: {source}")]
    Serve {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

pub async fn run(options: RunOptions) -> Result<(), RunError> {
    let client = kube::Client::try_default().await.map_err(RunError::Connect)?;
    let metrics = Arc::new(Metrics::default());
    let readiness = Readiness::default();
    let settings = Settings {
        domain: DomainSettings {
            namespace_prefix: options.namespace_prefix.clone(),
            platform_namespace: options.platform_namespace.clone(),
        },
        resync: options.resync,
        concurrency: options.concurrency,
    };
    tracing::info!(version = env!("CARGO_PKG_VERSION"), ?settings, "meshplane starting");

    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    let on_signal = stop_tx.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = on_signal.send(true);
    });
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };

    let (leadership, election) = if options.leader_election {
        let election = leader::ElectionSettings {
            namespace: options.platform_namespace.clone(),
            lease: options.lease_name.clone(),
            identity: options.identity.clone(),
            duration: 10,
            grace: 3,
        };
        tracing::info!(lease = %election.lease, namespace = %election.namespace, identity = %election.identity, "joining the leader election");
        let (leadership, lost, guard) = leader::elect(client.clone(), election).await.map_err(RunError::Election)?;
        (leadership, Some((lost, guard)))
    } else {
        (leader::Leadership::always(), None)
    };
    let lost_flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (lost, guard) = match election {
        Some((lost, guard)) => (Some(lost), Some(guard)),
        None => (None, None),
    };
    if let Some(lost) = lost {
        let stop = stop_tx.clone();
        let flag = lost_flag.clone();
        tokio::spawn(async move {
            if lost.await.is_ok() {
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
                let _ = stop.send(true);
            }
        });
    }
    metrics.watch_leadership(leadership.clone());

    let router = server::router(metrics.clone(), readiness.clone());
    let addr = options.metrics_addr;
    let http = server::serve(addr, router, stopped(stop_rx.clone()));
    let (caches_tx, caches_rx) = watch::channel(None);
    if !options.catalog_auth {
        tracing::warn!("catalog authentication is off: anyone who reaches the catalog sees every product");
    }
    let catalog = crate::catalog::http::router(crate::catalog::http::CatalogState::new(client.clone(), caches_rx, options.catalog_auth));
    let catalog_addr = options.catalog_addr;
    let catalog = server::serve(catalog_addr, catalog, stopped(stop_rx.clone()));
    let controllers = operator::run(client, settings, metrics, readiness, leadership, caches_tx, stopped(stop_rx).shared());
    let (served, catalog_served, ()) = tokio::join!(http, catalog, controllers);
    if let Err(source) = catalog_served {
        return Err(RunError::Serve { addr: catalog_addr, source });
    }
    if lost_flag.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(RunError::LostLeadership);
    }
    if let Some(guard) = guard {
        guard.release().await;
    }
    served.map_err(|source| RunError::Serve { addr, source })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("installing SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
