//! The controllers: one reconciler per kind, sharing one [`Context`] of
//! caches, the writer and the event recorder. [`run`] wires the watches,
//! starts the controllers and runs until shutdown.
//!
//! Every kind is watched once ([`Shared`]): one watch fills one cache and
//! hands each change, deletions included, to every controller that reacts
//! to that kind.

pub mod domain;
pub mod error;
pub mod policy;
pub mod product;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, LimitRange, Namespace, PersistentVolumeClaim, ResourceQuota, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::Api;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, Store};

use crate::leader::Leadership;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;

use crate::api::conditions::reason;
use crate::api::{DataDomain, DataProduct, GovernancePolicy};
use crate::apply::Applier;
use crate::keys;
use crate::owned::Owned;
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

/// Every cache meshplane reads. Children are watched by label, so these hold
/// only meshplane's own objects, with managedFields stripped; a child whose
/// status nothing reads is kept as only the fields meshplane set ([`Owned`]).
#[derive(Clone)]
pub struct Caches {
    pub domains: Store<DataDomain>,
    pub products: Store<DataProduct>,
    pub namespaces: Store<Namespace>,
    pub role_bindings: Store<Owned<RoleBinding>>,
    pub roles: Store<Owned<Role>>,
    pub quotas: Store<ResourceQuota>,
    pub limit_ranges: Store<Owned<LimitRange>>,
    pub network_policies: Store<Owned<NetworkPolicy>>,
    pub service_accounts: Store<Owned<ServiceAccount>>,
    pub config_maps: Store<Owned<ConfigMap>>,
    pub claims: Store<Owned<PersistentVolumeClaim>>,
    pub cron_jobs: Store<Owned<CronJob>>,
    pub deployments: Store<Deployment>,
    pub jobs: Store<Job>,
    pub policies: Store<GovernancePolicy>,
    pub admission_policies: Store<ValidatingAdmissionPolicy>,
    pub admission_bindings: Store<ValidatingAdmissionPolicyBinding>,
    /// Read to tell a claim that waits for its first consumer by design from
    /// one that cannot bind.
    pub storage_classes: Store<StorageClass>,
    pub indexes: Indexes,
}

/// One kind's cached objects by a key of theirs (their owner's uid, the
/// product a run belongs to), kept current by the kind's watch: a pass looks
/// up its own children instead of scanning every object of the kind in the
/// cluster, which made each pass cost O(all children) and a full resync O(N^2).
///
/// A key's objects are few (a product's network policies), so they are kept
/// in a list of exactly their number, by name and namespace only: what a
/// cache lookup compares. A hash set per key (with room for more than a key's
/// few objects), of references that also carried each object's uid and
/// resource version, took several times that.
pub struct ByKey<K: Resource<DynamicType = ()> + Clone + 'static> {
    keys: fn(&K) -> Vec<String>,
    entries: Arc<std::sync::RwLock<std::collections::HashMap<String, Vec<reflector::ObjectRef<K>>>>>,
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> Clone for ByKey<K> {
    fn clone(&self) -> Self {
        ByKey { keys: self.keys, entries: self.entries.clone() }
    }
}

/// An object's name and namespace, as a cache lookup compares them.
fn lookup_ref<K: Resource<DynamicType = ()>>(object: &K) -> reflector::ObjectRef<K> {
    let meta = object.meta();
    let name = reflector::ObjectRef::new(meta.name.as_deref().unwrap_or_default());
    match &meta.namespace {
        Some(namespace) => name.within(namespace),
        None => name,
    }
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> ByKey<K> {
    /// An index by the objects' `keys`.
    pub fn new(keys: fn(&K) -> Vec<String>) -> Self {
        ByKey { keys, entries: Default::default() }
    }

    /// An index by owner uid.
    pub fn by_owner() -> Self {
        ByKey::new(|o| o.meta().owner_references.iter().flatten().map(|r| r.uid.clone()).collect())
    }

    fn insert(&self, entries: &mut std::collections::HashMap<String, Vec<reflector::ObjectRef<K>>>, object: &K) {
        let id = lookup_ref(object);
        for key in (self.keys)(object) {
            let refs = entries.entry(key).or_default();
            if !refs.contains(&id) {
                refs.push(id.clone());
                refs.shrink_to_fit();
            }
        }
    }

    /// Follows one watch event, once `cache` holds it. A relist is taken
    /// whole when it completes, like the cache takes it.
    fn apply(&self, event: &watcher::Event<K>, cache: &Store<K>) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        match event {
            watcher::Event::Apply(o) | watcher::Event::InitApply(o) => self.insert(&mut entries, o),
            watcher::Event::Delete(o) => {
                let id = lookup_ref(o);
                for key in (self.keys)(o) {
                    if let Some(refs) = entries.get_mut(&key) {
                        refs.retain(|r| *r != id);
                        if refs.is_empty() {
                            entries.remove(&key);
                        }
                    }
                }
            }
            watcher::Event::Init => {}
            watcher::Event::InitDone => {
                entries.clear();
                for o in cache.state() {
                    self.insert(&mut entries, &o);
                }
            }
        }
    }

    /// What keeps the index current: the kind's watch calls it.
    fn follow(&self) -> impl Fn(&watcher::Event<K>, &Store<K>) + Send + 'static
    where
        K: Send + Sync,
    {
        let index = self.clone();
        move |event, cache| index.apply(event, cache)
    }

    /// The cached objects under `key` now.
    pub fn get(&self, cache: &Store<K>, key: &str) -> Vec<Arc<K>> {
        let refs: Vec<reflector::ObjectRef<K>> = {
            let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
            entries.get(key).cloned().unwrap_or_default()
        };
        // A key an object no longer has (an owner reference removed from a
        // released claim) leaves its entry behind until the object's next
        // event: checked here.
        refs.iter().filter_map(|r| cache.get(r)).filter(|o| (self.keys)(o).iter().any(|k| k == key)).collect()
    }
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
    pub client: Client,
    pub applier: Applier,
    /// Who publishes Events (see [`Context::publish`]).
    pub reporter: Reporter,
    pub metrics: Arc<Metrics>,
    pub settings: Settings,
    pub caches: Caches,
    pub leadership: Leadership,
    /// When each domain's product count was last written (see
    /// `domain::COUNT_INTERVAL`).
    pub counts_written: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
    /// True once every cache has synced (see [`Context::synced`]).
    pub synced: tokio::sync::watch::Receiver<bool>,
}

/// The changes of one kind that reach one controller: all of them while this
/// replica leads, none while it stands by (its caches stay current either way).
pub type Events<K> = BoxStream<'static, Change<K>>;

/// Passes an object's change on only when `key` of it differs from the last
/// one passed on for that object; an object's first change and its deletion
/// always pass.
/// A controller that reads a few fields of another kind is then not woken by
/// that kind's other writes (a status it does not read, a product count).
pub fn when_changed<K, T>(events: Events<K>, key: impl Fn(&K) -> T + Send + 'static) -> Events<K>
where
    K: Resource + Send + Sync + 'static,
    T: std::hash::Hash,
{
    // By namespace and name: an object deleted and made again replaces its
    // entry, so the map is bounded by the names in use, not by churn. Both
    // the name and the key are kept as 64-bit hashes (16 bytes an object
    // where the labels alone took hundreds); two colliding is as likely as
    // not at all.
    fn hash_of(value: &impl std::hash::Hash) -> u64 {
        let mut hasher = std::hash::DefaultHasher::new();
        value.hash(&mut hasher);
        std::hash::Hasher::finish(&hasher)
    }
    let mut last = std::collections::HashMap::<u64, u64>::new();
    events
        .filter(move |change| {
            let meta = change.object.meta();
            let id = hash_of(&(&meta.namespace, &meta.name));
            let changed = if change.deleted {
                last.remove(&id);
                true
            } else {
                let key = hash_of(&key(&change.object));
                last.insert(id, key) != Some(key)
            };
            futures::future::ready(changed)
        })
        .boxed()
}

/// A product or domain's identity: its uid, and whether it is being deleted.
fn existence<K: Resource>(object: &K) -> (Option<String>, bool) {
    (object.meta().uid.clone(), object.meta().deletion_timestamp.is_some())
}

/// Changes to what others read of an object: its spec (the generation), its
/// labels, its existence.
pub fn spec_changes<K: Resource + Send + Sync + 'static>(events: Events<K>) -> Events<K> {
    when_changed(events, |o| (existence(o), o.meta().generation, o.meta().labels.clone()))
}

/// Changes to what others read of a domain: its spec and labels, its
/// existence, and its namespace.
pub fn domain_changes(events: Events<DataDomain>) -> Events<DataDomain> {
    when_changed(events, |d| {
        (existence(d), d.metadata.generation, d.metadata.labels.clone(), d.status.as_ref().and_then(|s| s.namespace.clone()))
    })
}

/// A product's arrival and the start of its deletion.
pub fn arrivals_and_departures(events: Events<DataProduct>) -> Events<DataProduct> {
    when_changed(events, existence)
}

impl Context {
    /// Waits until every cache has synced. A pass compares what it wants with
    /// the caches; one that ran on a cache still listing would take a child
    /// it has not seen yet for a missing one and write it again (after a
    /// restart: every domain's RoleBindings, every product's grants).
    /// False when the process is stopping before that: the pass must not run.
    pub async fn synced(&self) -> bool {
        self.synced.clone().wait_for(|synced| *synced).await.is_ok()
    }

    /// Adds `finalizer` to the object unless it has it.
    pub async fn add_finalizer<K>(&self, object: &K, finalizer: &str) -> error::Result<()>
    where
        K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        if object.meta().finalizers.iter().flatten().any(|f| f == finalizer) {
            return Ok(());
        }
        let mut finalizers = object.meta().finalizers.clone().unwrap_or_default();
        finalizers.push(finalizer.to_string());
        self.set_finalizers(object, finalizers).await
    }

    /// Removes `finalizer` from the object, letting its deletion finish;
    /// its children are no longer drift to correct.
    pub async fn remove_finalizer<K>(&self, object: &K, finalizer: &str) -> error::Result<()>
    where
        K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        if let Some(uid) = &object.meta().uid {
            self.applier.forget(uid);
        }
        let remaining = object.meta().finalizers.iter().flatten().filter(|f| *f != finalizer).cloned().collect();
        self.set_finalizers(object, remaining).await
    }

    /// Replaces the finalizer list, guarded by the resourceVersion it was read
    /// at, so a concurrent change is retried instead of overwritten.
    async fn set_finalizers<K>(&self, object: &K, finalizers: Vec<String>) -> error::Result<()>
    where
        K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let meta = object.meta();
        let name = meta.name.clone().unwrap_or_default();
        let patch = serde_json::json!({"metadata": {"finalizers": finalizers, "resourceVersion": meta.resource_version}});
        let resource = kube::core::ApiResource::erase::<K>(&());
        let api: Api<kube::api::DynamicObject> = match &meta.namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &resource),
            None => Api::all_with(self.client.clone(), &resource),
        };
        api.patch(&name, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch))
            .await
            .map_err(error::Error::kube(format!("updating finalizers of {} {name}", K::kind(&()))))?;
        Ok(())
    }

    /// Publishes an Event about `object` (the audit trail), naming a related
    /// object when there is one. A failure to publish is logged, never fatal.
    pub async fn publish<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        type_: kube::runtime::events::EventType,
        reason: &str,
        action: &str,
        note: String,
        related: Option<k8s_openapi::api::core::v1::ObjectReference>,
    ) {
        let event =
            kube::runtime::events::Event { type_, reason: reason.into(), note: Some(note), action: action.into(), secondary: related };
        // A Recorder per Event: kube's Recorder keeps every Event it published
        // for six minutes (to count repeats), which after a burst of new
        // products is megabytes held for nothing; meshplane publishes an Event
        // only when something changed, so there are no repeats to count.
        let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
        if let Err(error) = recorder.publish(&event, &object.object_ref(&())).await {
            tracing::warn!(%error, "could not publish event");
        }
    }
}

impl Context {
    /// Publishes a Warning Event about `owner` for each change of another
    /// writer's that an apply of `child` undid: a deletion, an edit, entries
    /// added to a list that grants access. An edit undone against a named
    /// field manager is left to the conflict's own Warning, which names the
    /// writer and its fields. True when it published.
    pub async fn report_drift<K: Resource<DynamicType = ()>>(
        &self,
        owner: &K,
        child: &k8s_openapi::api::core::v1::ObjectReference,
        written: &crate::apply::Guarded,
    ) -> bool {
        use kube::runtime::events::EventType;
        let kind = child.kind.as_deref().unwrap_or_default();
        let name = child.name.as_deref().unwrap_or_default();
        let place = child.namespace.as_deref().map(|ns| format!(" in namespace {ns}")).unwrap_or_default();
        let mut notes = Vec::new();
        match written.drift {
            Some(crate::apply::Drift::Restored) => {
                notes.push((reason::DRIFT_CORRECTED, format!("Restored {kind} {name}{place}, which another writer deleted")))
            }
            Some(crate::apply::Drift::Reverted) if written.revoked.is_empty() && written.conflict.is_none() => notes.push((
                reason::DRIFT_CORRECTED,
                format!("Reverted {kind} {name}{place}: another writer changed fields that meshplane manages"),
            )),
            _ => {}
        }
        for grant in &written.revoked {
            notes.push((
                reason::FOREIGN_GRANT_REMOVED,
                format!("Removed from {kind} {name}{place} access meshplane did not grant: {}", grant.describe()),
            ));
        }
        let published = !notes.is_empty();
        for (why, note) in notes {
            tracing::warn!(owner = %owner.meta().name.as_deref().unwrap_or_default(), "{note}");
            self.publish(owner, EventType::Warning, why, "Restore", note, Some(child.clone())).await;
        }
        published
    }
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
/// included: kube's shared reflectors pass on only updates, so a deleted
/// child never woke its owner and waited for the resync.
struct Shared<K: Resource<DynamicType = ()> + Clone + 'static> {
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
    fn watch(config: watcher::Config) -> Self {
        Self::watch_observed(config, |_| {}, |_, _| {})
    }

    /// Like `watch`, caching each object as `trim` leaves it (managedFields
    /// always go), and `observe` sees every event once the cache holds it.
    fn watch_observed(
        config: watcher::Config,
        trim: impl FnMut(&mut K) + Send + 'static,
        observe: impl Fn(&watcher::Event<K>, &Store<K>) + Send + 'static,
    ) -> Self {
        let writer = reflector::store::Writer::default();
        Shared { store: writer.as_reader(), writer, config, subscribers: Vec::new(), trim: Box::new(trim), observe: Box::new(observe) }
    }

    /// A new subscriber's changes: all of them while this replica leads,
    /// none while it stands by (its caches stay current either way).
    fn take(&mut self, leadership: &Leadership) -> Events<K> {
        let leadership = leadership.clone();
        let (sender, changes) = futures::channel::mpsc::channel(SUBSCRIBER_BUFFER);
        self.subscribers.push(sender);
        // Always drained, so a standby's caches never stall on a full buffer.
        changes.filter(move |_| futures::future::ready(leadership.is_leader())).boxed()
    }

    /// Runs the watch: fills the cache, then hands each change to every
    /// subscriber, waiting while one is full.
    fn run(self, client: &Client, metrics: &Arc<Metrics>) -> futures::future::BoxFuture<'static, ()> {
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
                        metrics.watch_error(&kind, error::watch_category(&error));
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
fn dispatched<K: Resource<DynamicType = ()> + Clone>(
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

/// Objects per page when a watch lists.
const LIST_PAGE: u32 = 100;

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
    // Lists come in pages of 100 rather than kube's 500: a (re)list holds a
    // page's response and its parsed objects at once, next to the cache it
    // fills, and that transient sets the process's peak memory.
    let all = || watcher::Config::default().page_size(LIST_PAGE);
    let owned = || all().labels(keys::MANAGED_SELECTOR);
    let mut domains = Shared::<DataDomain>::watch(all());
    // The catalog's search index follows the products' watch.
    let index = Arc::new(crate::catalog::index::Index::default());
    let mut products = Shared::<DataProduct>::watch_observed(all(), |_| {}, {
        let index = index.clone();
        move |event, cache| index.apply_shared(event, &|namespace, name| cache.get(&reflector::ObjectRef::new(name).within(namespace)))
    });
    let mut policies = Shared::<GovernancePolicy>::watch(all());
    let mut admission_policies = Shared::<ValidatingAdmissionPolicy>::watch(owned());
    let mut admission_bindings = Shared::<ValidatingAdmissionPolicyBinding>::watch(owned());
    let mut namespaces = Shared::<Namespace>::watch(owned());
    let storage_classes = Shared::<StorageClass>::watch(all());
    let indexes = Indexes::default();
    let mut role_bindings = Shared::<Owned<RoleBinding>>::watch_observed(owned(), |_| {}, indexes.role_bindings.follow());
    let mut roles = Shared::<Owned<Role>>::watch(owned());
    let mut quotas = Shared::<ResourceQuota>::watch(owned());
    let mut limit_ranges = Shared::<Owned<LimitRange>>::watch(owned());
    let mut network_policies = Shared::<Owned<NetworkPolicy>>::watch_observed(owned(), |_| {}, indexes.network_policies.follow());
    let mut service_accounts = Shared::<Owned<ServiceAccount>>::watch(owned());
    let mut config_maps = Shared::<Owned<ConfigMap>>::watch(owned());
    let mut claims = Shared::<Owned<PersistentVolumeClaim>>::watch(owned());
    // Runs are read from the Jobs, so a CronJob is kept as meshplane's own
    // fields (`Owned`), like every child whose status is not read.
    let mut cron_jobs = Shared::<Owned<CronJob>>::watch_observed(owned(), |_| {}, indexes.cron_jobs.follow());
    let mut deployments = Shared::<Deployment>::watch_observed(owned(), |_| {}, indexes.deployments.follow());
    // A run is read from its labels, its creation and its status; its pod
    // template (a copy of the CronJob's, for every run kept in history) is not
    // kept.
    let mut jobs = Shared::<Job>::watch_observed(owned(), |job| job.spec = None, indexes.jobs.follow());

    let caches = Caches {
        domains: domains.store.clone(),
        products: products.store.clone(),
        namespaces: namespaces.store.clone(),
        role_bindings: role_bindings.store.clone(),
        roles: roles.store.clone(),
        quotas: quotas.store.clone(),
        limit_ranges: limit_ranges.store.clone(),
        network_policies: network_policies.store.clone(),
        service_accounts: service_accounts.store.clone(),
        config_maps: config_maps.store.clone(),
        claims: claims.store.clone(),
        cron_jobs: cron_jobs.store.clone(),
        deployments: deployments.store.clone(),
        jobs: jobs.store.clone(),
        policies: policies.store.clone(),
        admission_policies: admission_policies.store.clone(),
        admission_bindings: admission_bindings.store.clone(),
        storage_classes: storage_classes.store.clone(),
        indexes,
    };
    // The catalog reads the same caches (on every replica, leader or not).
    let _ = catalog.send(Some(crate::catalog::http::CatalogCaches {
        domains: caches.domains.clone(),
        products: caches.products.clone(),
        index: index.clone(),
    }));
    let reporter = Reporter { controller: keys::EVENT_REPORTER.into(), instance: std::env::var("POD_NAME").ok() };
    let (synced_tx, synced) = tokio::sync::watch::channel(false);
    let ctx = Arc::new(Context {
        client: client.clone(),
        applier: Applier::new(client.clone(), metrics.child_reads.clone(), metrics.drift.clone()),
        reporter,
        metrics: metrics.clone(),
        settings,
        caches: caches.clone(),
        leadership: leadership.clone(),
        counts_written: Default::default(),
        synced,
    });
    let l = &leadership;

    let domain_controller = domain::controller(
        ctx.clone(),
        domain::Watches {
            domains: domains.take(l),
            namespaces: namespaces.take(l),
            role_bindings: role_bindings.take(l),
            quotas: quotas.take(l),
            limit_ranges: limit_ranges.take(l),
            network_policies: network_policies.take(l),
            products: products.take(l),
        },
        shutdown.clone(),
    );
    let product_controller = product::controller(
        ctx.clone(),
        product::Watches {
            products: products.take(l),
            producers: products.take(l),
            domains: domains.take(l),
            service_accounts: service_accounts.take(l),
            config_maps: config_maps.take(l),
            claims: claims.take(l),
            cron_jobs: cron_jobs.take(l),
            deployments: deployments.take(l),
            jobs: jobs.take(l),
            roles: roles.take(l),
            role_bindings: role_bindings.take(l),
            network_policies: network_policies.take(l),
            policies: policies.take(l),
        },
        shutdown.clone(),
    );
    let policy_controller = policy::controller(
        ctx.clone(),
        policy::Watches {
            policies: policies.take(l),
            admission_policies: admission_policies.take(l),
            admission_bindings: admission_bindings.take(l),
            domains: domains.take(l),
            products: products.take(l),
        },
        shutdown.clone(),
    );

    let drivers = futures::future::join_all([
        domains.run(&client, &metrics),
        products.run(&client, &metrics),
        namespaces.run(&client, &metrics),
        role_bindings.run(&client, &metrics),
        roles.run(&client, &metrics),
        quotas.run(&client, &metrics),
        limit_ranges.run(&client, &metrics),
        network_policies.run(&client, &metrics),
        service_accounts.run(&client, &metrics),
        config_maps.run(&client, &metrics),
        claims.run(&client, &metrics),
        cron_jobs.run(&client, &metrics),
        deployments.run(&client, &metrics),
        jobs.run(&client, &metrics),
        policies.run(&client, &metrics),
        admission_policies.run(&client, &metrics),
        admission_bindings.run(&client, &metrics),
        storage_classes.run(&client, &metrics),
    ]);

    // Objects by Ready status, from the caches, for dashboards and alerts.
    let counting = {
        let (c, metrics) = (caches.clone(), ctx.metrics.clone());
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            loop {
                tick.tick().await;
                let domains = c.domains.state();
                let lag = |generation: Option<i64>, observed: Option<i64>| generation.is_some() && observed != generation;
                metrics.count_objects(
                    "DataDomain",
                    domains.iter().map(|d| {
                        let s = d.status.as_ref();
                        (s.map(|s| s.conditions.as_slice()), lag(d.metadata.generation, s.and_then(|s| s.observed_generation)))
                    }),
                );
                let products = c.products.state();
                metrics.count_objects(
                    "DataProduct",
                    products.iter().map(|p| {
                        let s = p.status.as_ref();
                        (s.map(|s| s.conditions.as_slice()), lag(p.metadata.generation, s.and_then(|s| s.observed_generation)))
                    }),
                );
                let policies = c.policies.state();
                metrics.count_objects(
                    "GovernancePolicy",
                    policies.iter().map(|p| {
                        let s = p.status.as_ref();
                        (s.map(|s| s.conditions.as_slice()), lag(p.metadata.generation, s.and_then(|s| s.observed_generation)))
                    }),
                );
            }
        }
    };
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
    let ready = async move {
        let c = &caches;
        let waits = [
            c.domains.wait_until_ready().boxed(),
            c.products.wait_until_ready().boxed(),
            c.namespaces.wait_until_ready().boxed(),
            c.role_bindings.wait_until_ready().boxed(),
            c.roles.wait_until_ready().boxed(),
            c.quotas.wait_until_ready().boxed(),
            c.limit_ranges.wait_until_ready().boxed(),
            c.network_policies.wait_until_ready().boxed(),
            c.service_accounts.wait_until_ready().boxed(),
            c.config_maps.wait_until_ready().boxed(),
            c.claims.wait_until_ready().boxed(),
            c.cron_jobs.wait_until_ready().boxed(),
            c.deployments.wait_until_ready().boxed(),
            c.jobs.wait_until_ready().boxed(),
            c.policies.wait_until_ready().boxed(),
            c.admission_policies.wait_until_ready().boxed(),
            c.admission_bindings.wait_until_ready().boxed(),
            c.storage_classes.wait_until_ready().boxed(),
        ];
        if futures::future::try_join_all(waits).await.is_ok() {
            tracing::info!("caches synced; ready");
            let _ = synced_tx.send(true);
            readiness.set_ready();
        }
    };
    // The watches run until the controllers have shut down.
    tokio::select! {
        _ = async { tokio::join!(domain_controller, product_controller, policy_controller, ready) } => {},
        _ = drivers => {},
        _ = counting => {},
        () = stopped_unsynced => tracing::info!("stopped before the caches synced; no pass had run"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::ResourceExt;

    fn domain(generation: i64, count: i32, namespace: &str) -> Arc<DataDomain> {
        let mut d: DataDomain = serde_saphyr::from_str(&format!(
            "apiVersion: meshplane.dev/v1alpha1\nkind: DataDomain\nmetadata: {{name: sales, uid: u1, generation: {generation}}}\nspec: {{}}\n\
             status: {{namespace: {namespace}, dataProducts: {count}}}"
        ))
        .unwrap();
        d.metadata.labels = None;
        Arc::new(d)
    }

    fn binding(name: &str, owner: &str) -> RoleBinding {
        serde_saphyr::from_str(&format!(
            "metadata: {{name: {name}, namespace: dm-a, ownerReferences: [{{apiVersion: v1, kind: X, name: x, uid: {owner}}}]}}\n\
             roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: r}}"
        ))
        .unwrap()
    }

    #[test]
    fn children_are_found_by_their_owner_through_changes_and_relists() {
        let (cache, mut writer) = reflector::store::<RoleBinding>();
        let index = ByKey::<RoleBinding>::by_owner();
        let mut feed = |event: watcher::Event<RoleBinding>| {
            writer.apply_watcher_event(&event);
            index.apply(&event, &cache);
        };
        feed(watcher::Event::Apply(binding("a1", "uid-a")));
        feed(watcher::Event::Apply(binding("a2", "uid-a")));
        feed(watcher::Event::Apply(binding("b1", "uid-b")));
        let names = |uid: &str| {
            let mut names: Vec<String> = index.get(&cache, uid).iter().map(|o| o.name_any()).collect();
            names.sort();
            names
        };
        assert_eq!(names("uid-a"), ["a1", "a2"]);
        assert_eq!(names("uid-b"), ["b1"]);
        feed(watcher::Event::Delete(binding("a1", "uid-a")));
        assert_eq!(names("uid-a"), ["a2"]);
        // An owner reference taken away: no longer that owner's child.
        let mut released = binding("b1", "uid-b");
        released.metadata.owner_references = None;
        feed(watcher::Event::Apply(released));
        assert!(names("uid-b").is_empty());
        // A relist drops what it no longer lists.
        feed(watcher::Event::Init);
        feed(watcher::Event::InitApply(binding("c1", "uid-c")));
        feed(watcher::Event::InitDone);
        assert!(names("uid-a").is_empty());
        assert_eq!(names("uid-c"), ["c1"]);
    }

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

    fn applied(object: Arc<DataDomain>) -> Change<DataDomain> {
        Change { object, deleted: false }
    }

    #[tokio::test]
    async fn a_domain_event_reaches_products_only_when_what_they_read_changed() {
        let events = futures::stream::iter(vec![
            applied(domain(1, 0, "dm-sales")),
            // Its product count: nothing a product reads.
            applied(domain(1, 1, "dm-sales")),
            applied(domain(1, 2, "dm-sales")),
            // Its spec.
            applied(domain(2, 2, "dm-sales")),
            // Its namespace.
            applied(domain(2, 2, "dm-sales-2")),
            applied(domain(2, 3, "dm-sales-2")),
            // Its deletion, which changes nothing else about it.
            Change { object: domain(2, 3, "dm-sales-2"), deleted: true },
            // Made again with the same name and fields: a new arrival.
            applied(domain(2, 3, "dm-sales-2")),
        ])
        .boxed();
        let passed: Vec<(Option<i64>, Option<String>, bool)> = domain_changes(events)
            .map(|c| (c.object.metadata.generation, c.object.status.as_ref().and_then(|s| s.namespace.clone()), c.deleted))
            .collect()
            .await;
        assert_eq!(
            passed,
            [
                (Some(1), Some("dm-sales".into()), false),
                (Some(2), Some("dm-sales".into()), false),
                (Some(2), Some("dm-sales-2".into()), false),
                (Some(2), Some("dm-sales-2".into()), true),
                (Some(2), Some("dm-sales-2".into()), false),
            ]
        );
    }

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
