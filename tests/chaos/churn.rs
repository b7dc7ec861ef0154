//! The workload of a chaos run: products and domains created, updated and
//! deleted at random (seeded), as a platform's users would, while operators
//! and the control plane are killed underneath.
//!
//! Domains: three stable ones (`<run>-a`, `-b`, `-c`), whose people and
//! network isolation change, and one (`<run>-e`) that comes and goes, with
//! `Cascade` or `Block` deletion. Products: a pool of five names per domain,
//! applied with random specs (volumes under `Retain` or `Delete`, batch and
//! continuous pipelines, consumers, inputs from other products) and deleted;
//! a name comes back, so a re-created product takes back retained claims.
//! Every write is server-side apply under the field manager `chaos-test`, so
//! the spec is exactly the last one sent. A request the API server refuses
//! or cannot answer (it may be restarting) is counted and skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use meshplane::api::{DataDomain, DataProduct};
use serde_json::{Value, json};

use crate::invariants::Deleted;
use crate::rng::Rng;

const MANAGER: &str = "chaos-test";
const PRODUCTS_PER_DOMAIN: usize = 5;

/// Counts of what the workload did.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub applied_products: usize,
    pub deleted_products: usize,
    pub domain_updates: usize,
    pub domains_created: usize,
    pub domains_deleted: usize,
    /// Children meshplane made, deleted behind its back (it must put them back).
    pub children_deleted: usize,
    pub refused: usize,
}

pub struct Churn {
    client: Client,
    rng: Rng,
    pub prefix: String,
    stable: Vec<String>,
    ephemeral: String,
    /// Products the workload applied and has not deleted, by (domain, name).
    products: BTreeMap<(String, String), ()>,
    /// Products deleted by the workload that may still be finalizing.
    terminating: BTreeSet<(String, String)>,
    ephemeral_alive: bool,
    pub deleted: Vec<Deleted>,
    pub stats: Stats,
    generation: u64,
}

fn namespace(domain: &str) -> String {
    format!("dm-{domain}")
}

impl Churn {
    pub fn new(client: Client, prefix: &str, rng: Rng) -> Self {
        Churn {
            client,
            rng,
            prefix: prefix.to_string(),
            stable: ["a", "b", "c"].iter().map(|s| format!("{prefix}-{s}")).collect(),
            ephemeral: format!("{prefix}-e"),
            products: BTreeMap::new(),
            terminating: BTreeSet::new(),
            ephemeral_alive: false,
            deleted: Vec::new(),
            stats: Stats::default(),
            generation: 0,
        }
    }

    fn domains(&self) -> Vec<String> {
        let mut all = self.stable.clone();
        all.push(self.ephemeral.clone());
        all
    }

    /// Creates the stable domains and waits until they are Ready, then puts
    /// a first product in each.
    pub async fn setup(&mut self) {
        for name in self.stable.clone() {
            let spec = self.domain_spec(false);
            self.apply_domain(&name, spec).await.unwrap_or_else(|e| panic!("creating DataDomain {name}: {e}"));
        }
        let api = Api::<DataDomain>::all(self.client.clone());
        for name in self.stable.clone() {
            crate::support::wait_until(&format!("DataDomain {name} to be Ready"), Duration::from_secs(90), || async {
                let d = api.get_opt(&name).await.ok()??;
                (meshplane::api::conditions::status_of(&d.status?.conditions, "Ready") == Some("True")).then_some(())
            })
            .await;
        }
        for domain in self.stable.clone() {
            let spec = self.product_spec(&domain, "p0");
            self.apply_product(&domain, "p0", spec).await.unwrap_or_else(|e| panic!("creating DataProduct p0 in {domain}: {e}"));
        }
    }

    fn domain_spec(&mut self, ephemeral: bool) -> Value {
        let people = [
            json!({"kind": "Group", "name": format!("{}-eng", self.prefix)}),
            json!({"kind": "User", "name": "alice"}),
            json!({"kind": "ServiceAccount", "name": "bi", "namespace": "tools"}),
        ];
        let pick = |rng: &mut Rng| people.iter().filter(|_| rng.chance(50)).cloned().collect::<Vec<_>>();
        let members = pick(&mut self.rng);
        let viewers = pick(&mut self.rng);
        let isolation = if self.rng.chance(70) { "Strict" } else { "Open" };
        let egress: Vec<&str> = if self.rng.chance(30) { vec!["10.20.0.0/16"] } else { vec![] };
        let deletion = if ephemeral && self.rng.chance(50) { "Cascade" } else { "Block" };
        json!({
            "description": "chaos",
            "owners": [{"kind": "Group", "name": format!("{}-leads", self.prefix)}],
            "members": members,
            "viewers": viewers,
            "network": {"isolation": isolation, "egressCIDRs": egress},
            "deletionPolicy": deletion,
        })
    }

    fn product_spec(&mut self, domain: &str, name: &str) -> Value {
        self.generation += 1;
        let mut storage = Vec::new();
        for s in ["s0", "s1"] {
            if self.rng.chance(40) {
                let policy = if self.rng.chance(70) { "Retain" } else { "Delete" };
                storage.push(json!({"name": s, "kind": "Volume", "size": "1Gi", "deletionPolicy": policy}));
            }
        }
        let mut pipelines = Vec::new();
        if self.rng.chance(50) {
            let mounts: Vec<Value> = storage.iter().take(1).map(|s| json!({"storage": s["name"], "path": "/data"})).collect();
            pipelines.push(json!({"name": "batch", "image": "busybox", "schedule": "0 3 * * *", "mounts": mounts}));
        }
        if self.rng.chance(40) {
            pipelines.push(json!({"name": "stream", "image": "busybox", "mode": "Continuous", "replicas": 1}));
        }
        let mut consumers = Vec::new();
        for d in self.domains() {
            if d != domain && self.rng.chance(30) {
                consumers.push(json!({"domain": d}));
            }
        }
        if self.rng.chance(30) {
            consumers.push(json!({"subject": {"kind": "User", "name": format!("auditor-{}", self.rng.below(3))}}));
        }
        let mut inputs = Vec::new();
        if self.rng.chance(40) {
            let domains = self.domains();
            let from = self.rng.pick(&domains).clone();
            let product = format!("p{}", self.rng.below(PRODUCTS_PER_DOMAIN));
            if !(from == domain && product == name) {
                inputs.push(json!({"name": "in0", "domain": from, "product": product, "port": "out"}));
            }
        }
        json!({
            "owner": "chaos",
            "description": format!("version {}", self.generation),
            "storage": storage,
            "pipelines": pipelines,
            "inputs": inputs,
            "outputPorts": [{"name": "out", "format": "Parquet"}],
            "access": {"consumers": consumers},
        })
    }

    async fn apply_domain(&self, name: &str, spec: Value) -> Result<(), kube::Error> {
        let body = json!({"apiVersion": "meshplane.dev/v1alpha1", "kind": "DataDomain", "metadata": {"name": name}, "spec": spec});
        Api::<DataDomain>::all(self.client.clone()).patch(name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&body)).await?;
        Ok(())
    }

    async fn apply_product(&self, domain: &str, name: &str, spec: Value) -> Result<(), kube::Error> {
        let ns = namespace(domain);
        let body = json!({
            "apiVersion": "meshplane.dev/v1alpha1",
            "kind": "DataProduct",
            "metadata": {"name": name, "namespace": ns},
            "spec": spec,
        });
        Api::<DataProduct>::namespaced(self.client.clone(), &ns)
            .patch(name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&body))
            .await?;
        Ok(())
    }

    /// Deletes a product, recording what its finalizer must do with the
    /// claims it owns at this moment.
    async fn delete_product(&mut self, domain: &str, name: &str) -> Result<(), kube::Error> {
        let ns = namespace(domain);
        let api = Api::<DataProduct>::namespaced(self.client.clone(), &ns);
        let Some(product) = api.get_opt(name).await? else {
            return Ok(());
        };
        if product.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        let uid = product.metadata.uid.clone().unwrap_or_default();
        let claims: Vec<String> = Api::<PersistentVolumeClaim>::namespaced(self.client.clone(), &ns)
            .list(&ListParams::default().labels(&format!("meshplane.dev/product={name}")))
            .await?
            .items
            .into_iter()
            .filter(|c| c.owner_references().iter().any(|o| o.uid == uid))
            .map(|c| c.name_any())
            .collect();
        // Guarded by the uid read above: the record describes exactly the
        // object that is deleted, whose spec then cannot change anymore.
        let params = DeleteParams {
            preconditions: Some(kube::api::Preconditions { uid: Some(uid.clone()), resource_version: None }),
            ..Default::default()
        };
        let deleted = api.delete(name, &params).await?;
        let spec = deleted.left().map(|p| p.spec).unwrap_or(product.spec);
        self.terminating.insert((domain.to_string(), name.to_string()));
        self.deleted.push(Deleted {
            namespace: ns,
            product: name.to_string(),
            uid,
            storage: spec.storage,
            claims,
            namespace_deleted: false,
        });
        Ok(())
    }

    /// One random operation.
    pub async fn step(&mut self) {
        let roll = self.rng.below(100);
        let result = if roll < 55 {
            let live: Vec<String> = self.domains().into_iter().filter(|d| *d != self.ephemeral || self.ephemeral_alive).collect();
            let domain = self.rng.pick(&live).clone();
            let name = format!("p{}", self.rng.below(PRODUCTS_PER_DOMAIN));
            // A deleted product waits for its finalizer; a spec sent in
            // between would change what the finalizer does with its storage
            // after the workload recorded it. Re-create it once it is gone.
            let key = (domain.clone(), name.clone());
            if self.terminating.contains(&key) {
                match Api::<DataProduct>::namespaced(self.client.clone(), &namespace(&domain)).get_opt(&name).await {
                    Ok(None) => {
                        self.terminating.remove(&key);
                    }
                    Ok(Some(_)) => return,
                    Err(_) => {
                        self.stats.refused += 1;
                        return;
                    }
                }
            }
            let spec = self.product_spec(&domain, &name);
            let result = self.apply_product(&domain, &name, spec).await;
            if result.is_ok() {
                self.stats.applied_products += 1;
                self.products.insert((domain, name), ());
            }
            result
        } else if roll < 80 {
            let keys: Vec<(String, String)> = self.products.keys().cloned().collect();
            if keys.is_empty() {
                return;
            }
            let (domain, name) = self.rng.pick(&keys).clone();
            let result = self.delete_product(&domain, &name).await;
            if result.is_ok() {
                self.stats.deleted_products += 1;
                self.products.remove(&(domain, name));
            }
            result
        } else if roll < 93 {
            let stable = self.stable.clone();
            let domain = self.rng.pick(&stable).clone();
            let spec = self.domain_spec(false);
            let result = self.apply_domain(&domain, spec).await;
            if result.is_ok() {
                self.stats.domain_updates += 1;
            }
            result
        } else if roll < 97 {
            let result = self.delete_child().await;
            if result.is_ok() {
                self.stats.children_deleted += 1;
            }
            result
        } else {
            self.toggle_ephemeral().await
        };
        if result.is_err() {
            self.stats.refused += 1;
        }
    }

    /// Deletes one child meshplane made in a stable domain's namespace (a
    /// binding, a network policy, a descriptor, a service account, a
    /// CronJob), as a careless admin would; the invariants demand it back.
    async fn delete_child(&mut self) -> Result<(), kube::Error> {
        let stable = self.stable.clone();
        let domain: &String = self.rng.pick(&stable);
        let ns = namespace(domain);
        let managed = ListParams::default().labels("app.kubernetes.io/managed-by=meshplane");
        let client = self.client.clone();
        let mut names: Vec<(&str, String)> = Vec::new();
        let rbs = Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(client.clone(), &ns);
        names.extend(rbs.list_metadata(&managed).await?.items.into_iter().map(|o| ("RoleBinding", o.name_any())));
        let nps = Api::<k8s_openapi::api::networking::v1::NetworkPolicy>::namespaced(client.clone(), &ns);
        names.extend(nps.list_metadata(&managed).await?.items.into_iter().map(|o| ("NetworkPolicy", o.name_any())));
        let cms = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), &ns);
        names.extend(cms.list_metadata(&managed).await?.items.into_iter().map(|o| ("ConfigMap", o.name_any())));
        let sas = Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(client.clone(), &ns);
        names.extend(sas.list_metadata(&managed).await?.items.into_iter().map(|o| ("ServiceAccount", o.name_any())));
        let cjs = Api::<k8s_openapi::api::batch::v1::CronJob>::namespaced(client.clone(), &ns);
        names.extend(cjs.list_metadata(&managed).await?.items.into_iter().map(|o| ("CronJob", o.name_any())));
        if names.is_empty() {
            return Ok(());
        }
        let (kind, name) = self.rng.pick(&names).clone();
        let params = DeleteParams::default();
        let deleted = match kind {
            "RoleBinding" => rbs.delete(&name, &params).await.map(|_| ()),
            "NetworkPolicy" => nps.delete(&name, &params).await.map(|_| ()),
            "ConfigMap" => cms.delete(&name, &params).await.map(|_| ()),
            "ServiceAccount" => sas.delete(&name, &params).await.map(|_| ()),
            _ => cjs.delete(&name, &params).await.map(|_| ()),
        };
        match deleted {
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            other => other,
        }
    }

    /// Creates the ephemeral domain, or deletes it (first its products when
    /// its policy is Block, as a user would).
    async fn toggle_ephemeral(&mut self) -> Result<(), kube::Error> {
        let api = Api::<DataDomain>::all(self.client.clone());
        let name = self.ephemeral.clone();
        let current = api.get_opt(&name).await?;
        if !self.ephemeral_alive {
            // Re-create only once the previous one is gone.
            if current.is_some() {
                return Ok(());
            }
            let spec = self.domain_spec(true);
            self.apply_domain(&name, spec).await?;
            self.ephemeral_alive = true;
            self.stats.domains_created += 1;
            return Ok(());
        }
        let Some(current) = current else {
            self.ephemeral_alive = false;
            return Ok(());
        };
        let cascade = current.spec.deletion_policy == meshplane::api::domain::DomainDeletionPolicy::Cascade;
        let inside: Vec<(String, String)> = self.products.keys().filter(|(d, _)| *d == name).cloned().collect();
        for (domain, product) in &inside {
            if !cascade {
                self.delete_product(domain, product).await?;
                self.stats.deleted_products += 1;
            }
            self.products.remove(&(domain.clone(), product.clone()));
        }
        api.delete(&name, &DeleteParams::default()).await?;
        // Deleting the domain deletes its namespace, with the claims its
        // deleted products left behind.
        let ns = namespace(&name);
        for record in self.deleted.iter_mut().filter(|r| r.namespace == ns) {
            record.namespace_deleted = true;
        }
        self.ephemeral_alive = false;
        self.stats.domains_deleted += 1;
        Ok(())
    }

    /// Runs random operations, a random 50-250 ms apart, until `stop`;
    /// returns the workload with its records.
    pub fn run(mut self, stop: Arc<AtomicBool>, paused: Arc<AtomicBool>) -> tokio::task::JoinHandle<Churn> {
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                if !paused.load(Ordering::SeqCst) {
                    self.step().await;
                }
                let pause = self.rng.between(Duration::from_millis(50), Duration::from_millis(250));
                tokio::time::sleep(pause).await;
            }
            self
        })
    }
}
