//! What every kind's controller does the same way: its configuration, a
//! pass in a span that names the object and waits for the caches, the pass
//! timed and its errors counted and retried, a full pass when this replica
//! becomes leader, and a graceful shutdown.

use std::fmt::Debug;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tracing::Instrument;

use super::context::Context;
use crate::error::{Error, Result};
use crate::plumbing::watch::{Events, objects};

/// How soon a pass that failed is tried again.
const RETRY: Duration = Duration::from_secs(5);

/// `controller`, woken when a child of one of the named watched kinds
/// changes or goes (its owner reference names the object to reconcile):
/// `owning!(controller, watched, leadership; namespaces, role_bindings)`.
#[macro_export]
macro_rules! owning {
    ($controller:expr, $watched:expr, $leadership:expr; $($kind:ident),+ $(,)?) => {
        $controller$(.owns_shared_stream($crate::plumbing::watch::objects($watched.$kind.take($leadership))))+
    };
}

/// A kind's controller over its own changes and cache, not yet running:
/// the caller adds what else wakes it, then [`run`]s it.
pub fn controller<K>(ctx: &Context, events: Events<K>, cache: Store<K>) -> Controller<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    // The debounce lets a burst of events (a pass's own children arriving in
    // the caches, its status write) settle into one pass that sees them all.
    let config = Config::default().concurrency(ctx.settings.concurrency).debounce(Duration::from_millis(500));
    Controller::for_shared_stream(objects(events), cache).with_config(config)
}

/// Runs `controller` until `shutdown`, calling `pass` for each object of
/// `kind` that needs one, once every cache has synced.
pub async fn run<K, F, Fut>(
    controller: Controller<K>,
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    kind: &'static str,
    pass: F,
) where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    F: Fn(Arc<K>, Arc<Context>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Action>> + Send + 'static,
{
    let pass = Arc::new(pass);
    let reconcile = move |object: Arc<K>, ctx: Arc<Context>| {
        let pass = pass.clone();
        async move {
            let span =
                tracing::info_span!("reconcile", %kind, namespace = %object.namespace().unwrap_or_default(), name = %object.name_any());
            if !ctx.synced().await {
                return Ok(Action::await_change());
            }
            let _timer = ctx.metrics.reconcile(kind);
            pass(object, ctx.clone()).instrument(span).await
        }
    };
    controller
        // A new leader reconciles everything once.
        .reconcile_all_on(ctx.leadership.acquired())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, move |object, error, ctx| error_policy(kind, object, error, ctx), ctx)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "reconcile ended with an error");
            }
        })
        .await;
}

fn error_policy<K: Resource<DynamicType = ()>>(kind: &'static str, object: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.error(kind, error.category());
    tracing::warn!(
        kind,
        namespace = %object.meta().namespace.as_deref().unwrap_or_default(),
        name = %object.meta().name.as_deref().unwrap_or_default(),
        %error,
        "reconcile failed; retrying"
    );
    Action::requeue(RETRY)
}
