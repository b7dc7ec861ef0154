//! The kinds meshplane watches, in one table: each is watched once, and
//! its cache and its subscriptions come from that one watch.

use std::sync::Arc;

use futures::FutureExt;
use k8s_openapi::api::admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, LimitRange, Namespace, PersistentVolumeClaim, ResourceQuota, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::Client;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher::Config;

use super::context::Indexes;
use crate::api::{DataDomain, DataPlatform, DataProduct, GovernancePolicy};
use crate::catalog::index::Index;
use crate::keys;
use crate::plumbing::owned::Owned;
use crate::plumbing::watch::Shared;
use crate::telemetry::Metrics;

/// Objects per page when a watch lists. Lists come in pages of 100 rather
/// than kube's 500: a (re)list holds a page's response and its parsed
/// objects at once, next to the cache it fills, and that transient sets the
/// process's peak memory.
const LIST_PAGE: u32 = 100;

/// Every object of a kind.
fn all() -> Config {
    Config::default().page_size(LIST_PAGE)
}

/// Only meshplane's own objects of a kind.
fn owned() -> Config {
    all().labels(keys::MANAGED_SELECTOR)
}

/// Declares the watched kinds once: `field: Kind = how it is watched`.
/// From it come [`Caches`] (every cache meshplane reads), [`Watched`] (the
/// watches, which controllers subscribe to before they run), running them
/// all, and waiting until every cache has synced.
macro_rules! watched_kinds {
    ($indexes:ident, $search:ident; $($field:ident: $kind:ty = $watch:expr),* $(,)?) => {
        /// Every cache meshplane reads. Children are watched by label, so
        /// these hold only meshplane's own objects, with managedFields
        /// stripped; a child whose status nothing reads is kept as only the
        /// fields meshplane set ([`Owned`]).
        #[derive(Clone)]
        pub struct Caches {
            $(pub $field: Store<$kind>,)*
            pub indexes: Indexes,
        }

        /// Each watched kind's watch, not yet running: controllers take
        /// their subscriptions from it first.
        pub struct Watched {
            $(pub $field: Shared<$kind>,)*
            pub indexes: Indexes,
        }

        impl Watched {
            /// The watches; the products' one also keeps the catalog's
            /// search index current.
            pub fn new($indexes: Indexes, $search: &Arc<Index>) -> Self {
                Watched { $($field: $watch,)* indexes: $indexes }
            }

            pub fn caches(&self) -> Caches {
                Caches { $($field: self.$field.store(),)* indexes: self.indexes.clone() }
            }

            /// Runs every watch until the process stops.
            pub fn run(self, client: &Client, metrics: &Arc<Metrics>) -> futures::future::BoxFuture<'static, ()> {
                futures::future::join_all([$(self.$field.run(client, metrics),)*]).map(|_| ()).boxed()
            }
        }

        impl Caches {
            /// Waits until every cache has listed its kind; false when a
            /// watch stopped first.
            pub async fn wait_until_ready(&self) -> bool {
                futures::future::try_join_all([$(self.$field.wait_until_ready().boxed(),)*]).await.is_ok()
            }
        }
    };
}

watched_kinds! { indexes, search;
    domains: DataDomain = Shared::watch(all()),
    products: DataProduct = Shared::watch_observed(all(), |_| {}, {
        let search = search.clone();
        move |event, cache| search.apply_shared(event, &|namespace, name| cache.get(&ObjectRef::new(name).within(namespace)))
    }),
    policies: GovernancePolicy = Shared::watch(all()),
    platforms: DataPlatform = Shared::watch(all()),
    admission_policies: ValidatingAdmissionPolicy = Shared::watch(owned()),
    admission_bindings: ValidatingAdmissionPolicyBinding = Shared::watch(owned()),
    namespaces: Namespace = Shared::watch(owned()),
    // Read to tell a claim that waits for its first consumer by design from
    // one that cannot bind.
    storage_classes: StorageClass = Shared::watch(all()),
    role_bindings: Owned<RoleBinding> = Shared::watch_observed(owned(), |_| {}, indexes.role_bindings.follow()),
    roles: Owned<Role> = Shared::watch(owned()),
    quotas: ResourceQuota = Shared::watch(owned()),
    limit_ranges: Owned<LimitRange> = Shared::watch(owned()),
    network_policies: Owned<NetworkPolicy> = Shared::watch_observed(owned(), |_| {}, indexes.network_policies.follow()),
    service_accounts: Owned<ServiceAccount> = Shared::watch(owned()),
    config_maps: Owned<ConfigMap> = Shared::watch(owned()),
    claims: Owned<PersistentVolumeClaim> = Shared::watch(owned()),
    // Runs are read from the Jobs, so a CronJob is kept as meshplane's own
    // fields (`Owned`), like every child whose status is not read.
    cron_jobs: Owned<CronJob> = Shared::watch_observed(owned(), |_| {}, indexes.cron_jobs.follow()),
    deployments: Deployment = Shared::watch_observed(owned(), |_| {}, indexes.deployments.follow()),
    // A run is read from its labels, its creation and its status; its pod
    // template (a copy of the CronJob's, for every run kept in history) is
    // not kept.
    jobs: Job = Shared::watch_observed(owned(), |job| job.spec = None, indexes.jobs.follow()),
}
