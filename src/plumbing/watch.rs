//! One watch per kind, fanned out: the watch fills the kind's cache and
//! hands each change, deletions included, to every controller that
//! subscribed to the kind.

use std::sync::Arc;

use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;

use super::index::lookup_ref;
use crate::error::watch_category;
use crate::leader::Leadership;
use crate::telemetry::Metrics;

/// The changes of one kind that reach one controller: all of them while this
/// replica leads, none while it stands by (its caches stay current either way).
pub type Events<K> = BoxStream<'static, Change<K>>;

/// One change to a watched object, as a controller receives it: the object
/// as the cache holds it now, or as it was last seen when it is gone.
pub struct Change<K> {
    pub object: Arc<K>,
    /// The object was deleted (or vanished while the watch relisted).
    pub deleted: bool,
}

impl<K> Clone for Change<K> {
    fn clone(&self) -> Self {
        Change { object: self.object.clone(), deleted: self.deleted }
    }
}

/// The objects of a stream of changes, as kube's controllers take them: a
/// deleted child still names its owner, so the owner is reconciled and puts
/// the child back.
pub fn objects<K: Send + Sync + 'static>(events: Events<K>) -> BoxStream<'static, Arc<K>> {
    events.map(|change| change.object).boxed()
}

/// How many changes a controller may have queued before the watch that
/// feeds it waits (backpressure, never a dropped change).
const SUBSCRIBER_BUFFER: usize = 1024;

/// One watched kind: its cache, and a stream of changes for each controller
/// that subscribed ([`Shared::take`]) before the watch started
/// ([`Shared::run`]). Every change reaches every subscriber, deletions
/// included, so a deleted child wakes its owner at once (kube's shared
/// reflectors pass on only updates).
pub struct Shared<K: Resource<DynamicType = ()> + Clone + 'static> {
    store: Store<K>,
    writer: reflector::store::Writer<K>,
    config: watcher::Config,
    subscribers: Vec<futures::channel::mpsc::Sender<Change<K>>>,
    trim: Box<dyn FnMut(&mut K) + Send>,
    observe: Observer<K>,
}

/// What sees every event of a watch once its cache holds it (an index).
type Observer<K> = Box<dyn Fn(&watcher::Event<K>, &Store<K>) + Send>;

impl<K> Shared<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    pub fn watch(config: watcher::Config) -> Self {
        Self::watch_observed(config, |_| {}, |_, _| {})
    }

    /// Like `watch`, caching each object as `trim` leaves it (managedFields
    /// always go), and `observe` sees every event once the cache holds it.
    pub fn watch_observed(
        config: watcher::Config,
        trim: impl FnMut(&mut K) + Send + 'static,
        observe: impl Fn(&watcher::Event<K>, &Store<K>) + Send + 'static,
    ) -> Self {
        let writer = reflector::store::Writer::default();
        Shared { store: writer.as_reader(), writer, config, subscribers: Vec::new(), trim: Box::new(trim), observe: Box::new(observe) }
    }

    /// The kind's cache, filled once [`Shared::run`] runs.
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// Puts `object` in the cache as the watch would deliver it (trimmed,
    /// managedFields gone) and lets the observer see it, so a test gives a
    /// pass the cluster it means without running a watch.
    #[cfg(test)]
    pub fn seed(&mut self, mut object: K) {
        object.meta_mut().managed_fields = None;
        (self.trim)(&mut object);
        let event = watcher::Event::Apply(object);
        self.writer.apply_watcher_event(&event);
        (self.observe)(&event, &self.store);
    }

    /// A new subscriber's changes: all of them while this replica leads,
    /// none while it stands by (its caches stay current either way).
    pub fn take(&mut self, leadership: &Leadership) -> Events<K> {
        let leadership = leadership.clone();
        let (sender, changes) = futures::channel::mpsc::channel(SUBSCRIBER_BUFFER);
        self.subscribers.push(sender);
        // Always drained, so a standby's caches never stall on a full buffer.
        changes.filter(move |_| futures::future::ready(leadership.is_leader())).boxed()
    }

    /// Runs the watch: fills the cache, then hands each change to every
    /// subscriber, waiting while one is full.
    pub fn run(self, client: &Client, metrics: &Arc<Metrics>) -> futures::future::BoxFuture<'static, ()> {
        let Shared { store, mut writer, config, mut subscribers, mut trim, observe } = self;
        let kind = K::kind(&()).into_owned();
        let metrics = metrics.clone();
        let watch = watcher(Api::<K>::all(client.clone()), config).default_backoff().modify(move |object| {
            object.meta_mut().managed_fields = None;
            trim(object);
        });
        async move {
            let mut watch = std::pin::pin!(watch);
            // What the cache held when a relist began: whatever the relist
            // no longer lists was deleted meanwhile, unseen by the watch.
            let mut before_relist: Vec<Arc<K>> = Vec::new();
            while let Some(event) = watch.next().await {
                let event = match event {
                    Ok(event) => event,
                    Err(error) => {
                        metrics.watch_error(&kind, watch_category(&error));
                        tracing::warn!(%kind, %error, "watch failed; retrying");
                        continue;
                    }
                };
                if matches!(event, watcher::Event::Init) {
                    before_relist = store.state();
                }
                writer.apply_watcher_event(&event);
                observe(&event, &store);
                let changes = dispatched(&event, &store, &mut before_relist);
                for change in changes {
                    for subscriber in &mut subscribers {
                        // A subscriber that has gone (its controller shut down) is skipped.
                        let _ = futures::SinkExt::send(subscriber, change.clone()).await;
                    }
                }
            }
        }
        .boxed()
    }
}

/// The changes one watch event makes known, once `cache` holds it: an
/// object applied, one deleted, or, when a relist completes, every object
/// listed and every one of `before_relist` that is gone.
pub fn dispatched<K: Resource<DynamicType = ()> + Clone>(
    event: &watcher::Event<K>,
    cache: &Store<K>,
    before_relist: &mut Vec<Arc<K>>,
) -> Vec<Change<K>> {
    match event {
        watcher::Event::Apply(object) => {
            let object = cache.get(&lookup_ref(object)).unwrap_or_else(|| Arc::new(object.clone()));
            vec![Change { object, deleted: false }]
        }
        watcher::Event::Delete(object) => vec![Change { object: Arc::new(object.clone()), deleted: true }],
        watcher::Event::Init | watcher::Event::InitApply(_) => Vec::new(),
        watcher::Event::InitDone => {
            let listed = cache.state();
            let vanished = std::mem::take(before_relist).into_iter().filter(|old| cache.get(&lookup_ref(old.as_ref())).is_none());
            let mut changes: Vec<Change<K>> = vanished.map(|object| Change { object, deleted: true }).collect();
            changes.extend(listed.into_iter().map(|object| Change { object, deleted: false }));
            changes
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plumbing::index::tests::binding;
    use k8s_openapi::api::rbac::v1::RoleBinding;
    use kube::ResourceExt;

    #[test]
    fn deletions_reach_subscribers_and_a_relist_reports_what_vanished() {
        let mut writer = reflector::store::Writer::<RoleBinding>::default();
        let cache = writer.as_reader();
        let mut before = Vec::new();
        let mut feed = |event: watcher::Event<RoleBinding>, before: &mut Vec<Arc<RoleBinding>>| {
            if matches!(event, watcher::Event::Init) {
                *before = cache.state();
            }
            writer.apply_watcher_event(&event);
            let mut seen: Vec<(String, bool)> =
                dispatched(&event, &cache, before).iter().map(|c| (c.object.name_any(), c.deleted)).collect();
            seen.sort();
            seen
        };
        assert_eq!(feed(watcher::Event::Apply(binding("a", "o")), &mut before), [("a".to_string(), false)]);
        assert_eq!(feed(watcher::Event::Apply(binding("b", "o")), &mut before), [("b".to_string(), false)]);
        assert_eq!(feed(watcher::Event::Delete(binding("a", "o")), &mut before), [("a".to_string(), true)]);
        // A relist after the watch fell behind: `b` went unseen, `c` came.
        assert!(feed(watcher::Event::Init, &mut before).is_empty());
        assert!(feed(watcher::Event::InitApply(binding("c", "o")), &mut before).is_empty());
        assert_eq!(feed(watcher::Event::InitDone, &mut before), [("b".to_string(), true), ("c".to_string(), false)]);
    }
}
