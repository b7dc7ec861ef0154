//! `meshplane run`: connects to the cluster as kubectl would (kubeconfig or
//! in-cluster), then runs the controllers and the HTTP endpoints until
//! SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::watch;

use crate::controllers::{self, Readiness, Settings};
use crate::render::domain::DomainSettings;
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
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("connecting to the cluster: {0}")]
    Connect(#[source] kube::Error),
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
        domain: DomainSettings { namespace_prefix: options.namespace_prefix, platform_namespace: options.platform_namespace },
        resync: options.resync,
        concurrency: options.concurrency,
    };
    tracing::info!(version = env!("CARGO_PKG_VERSION"), ?settings, "meshplane starting");

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };

    let router = server::router(metrics.clone(), readiness.clone());
    let addr = options.metrics_addr;
    let http = server::serve(addr, router, stopped(stop_rx.clone()));
    let controllers = controllers::run(client, settings, metrics, readiness, stopped(stop_rx).shared());
    let (served, ()) = tokio::join!(http, controllers);
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
