//! Leader election on a `coordination.k8s.io` Lease, with kube-lease-manager
//! (server-side apply on the Lease, so two replicas cannot both take it; a
//! maintained crate rather than a hand-rolled loop). Every replica watches
//! and caches; only the leader's controllers receive events, so only the
//! leader writes. A leader that loses the Lease stops: it never writes again
//! under a lease it no longer holds.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::Stream;
use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;

/// Whether this replica leads, and when it became the leader.
#[derive(Clone)]
pub struct Leadership {
    leader: Arc<AtomicBool>,
    terms: watch::Receiver<u64>,
}

impl Leadership {
    /// A replica that leads from the start (leader election off).
    pub fn always() -> Self {
        let (tx, terms) = watch::channel(1);
        // The sender may go: the one term has begun.
        drop(tx);
        Leadership { leader: Arc::new(AtomicBool::new(true)), terms }
    }

    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
    }

    /// Yields once when this replica becomes the leader (at once if it
    /// already is): the moment for a controller to reconcile everything.
    pub fn acquired(&self) -> impl Stream<Item = ()> + Send + 'static {
        let terms = self.terms.clone();
        futures::stream::unfold((terms, 0u64), |(mut terms, seen)| async move {
            loop {
                let term = *terms.borrow_and_update();
                if term > seen {
                    return Some(((), (terms, term)));
                }
                terms.changed().await.ok()?;
            }
        })
    }
}

/// Settings of the election.
#[derive(Clone, Debug)]
pub struct ElectionSettings {
    pub namespace: String,
    pub lease: String,
    pub identity: String,
    /// Seconds a lease is valid after its last renewal.
    pub duration: u64,
    /// Seconds before expiry at which the holder renews.
    pub grace: u64,
}

/// Runs the election in the background. `lost` resolves if this replica
/// led and then lost the Lease; dropping the returned guard releases the
/// Lease (on shutdown).
pub async fn elect(
    client: Client,
    settings: ElectionSettings,
) -> Result<(Leadership, tokio::sync::oneshot::Receiver<()>, ElectionGuard), kube_lease_manager::LeaseManagerError> {
    let manager = LeaseManagerBuilder::new(client, &settings.lease)
        .with_namespace(&settings.namespace)
        .with_identity(&settings.identity)
        .with_duration(settings.duration)
        .with_grace(settings.grace)
        .build()
        .await?;
    let (mut changes, task) = manager.watch().await;
    let leader = Arc::new(AtomicBool::new(false));
    let (terms_tx, terms) = watch::channel(0u64);
    let (lost_tx, lost) = tokio::sync::oneshot::channel();
    let flag = leader.clone();
    let identity = settings.identity.clone();
    let follower = tokio::spawn(async move {
        let mut lost_tx = Some(lost_tx);
        loop {
            let is_leader = *changes.borrow_and_update();
            let was_leader = flag.swap(is_leader, Ordering::SeqCst);
            if is_leader && !was_leader {
                tracing::info!(%identity, "became the leader");
                terms_tx.send_modify(|t| *t += 1);
            } else if !is_leader && was_leader {
                tracing::error!(%identity, "lost the leader lease; stopping");
                if let Some(tx) = lost_tx.take() {
                    let _ = tx.send(());
                }
            }
            if changes.changed().await.is_err() {
                return changes;
            }
        }
    });
    Ok((Leadership { leader, terms }, lost, ElectionGuard { follower, task }))
}

/// Holds the election's tasks; [`ElectionGuard::release`] gives the Lease up.
pub struct ElectionGuard {
    follower: tokio::task::JoinHandle<watch::Receiver<bool>>,
    task: tokio::task::JoinHandle<Result<kube_lease_manager::LeaseManager, kube_lease_manager::LeaseManagerError>>,
}

impl ElectionGuard {
    /// Releases the Lease so a standby takes over at once.
    pub async fn release(self) {
        self.follower.abort();
        // The manager's task releases the Lease when its channel closes.
        let _ = self.follower.await;
        match self.task.await {
            Ok(Ok(_)) => tracing::info!("released the leader lease"),
            Ok(Err(error)) => tracing::warn!(%error, "could not release the leader lease"),
            Err(error) => tracing::warn!(%error, "leader election task failed"),
        }
    }
}
