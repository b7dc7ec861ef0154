//! The scale benchmark behind `make bench` (not a test: it measures).
//!
//! Against a local control plane that `cluster/bench.sh` starts for it, with
//! meshplane as a separate process under its own ServiceAccount (so API
//! priority and fairness treats it as in production), it measures at one size
//! (D domains, N products, from `BENCH_DOMAINS` / `BENCH_PRODUCTS`):
//!
//! - time until every domain and product is Ready;
//! - the floor: the very same child objects, rendered by meshplane's own
//!   renderers, applied by a plain client with server-side apply at the same
//!   concurrency, under the same ServiceAccount, until they are usable (quotas
//!   accounted, claims bound); and the ratio of the two;
//! - mutating requests per new product by verb and resource, from the API
//!   server's `apiserver_request_total`, and the operator's own requests
//!   (its flow schema's dispatched requests);
//! - mutating requests during a steady-state window (`BENCH_STEADY_SECS`);
//! - reconcile-to-Ready latency of one product changed while N exist;
//! - the operator's memory (VmRSS, VmHWM) idle, after provisioning, steady,
//!   and after a restart (the relist peak);
//! - HTTP 429 responses: those the operator got (its own metrics) and all the
//!   API server sent (every client: the bench's own watches, the
//!   controller-manager's informers).
//!
//! It prints a table and writes JSON to `target/bench/scale-<D>x<N>.json`.

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, ResourceQuota};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use meshplane::api::{DataDomain, DataProduct};
use serde_json::{Value, json};

const MANAGER: &str = "meshplane-bench";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

struct Settings {
    domains: usize,
    products: usize,
    concurrency: usize,
    steady: Duration,
    latency_samples: usize,
}

// ---------------------------------------------------------------------------
// Manifests

fn domain(name: &str) -> Value {
    json!({
        "apiVersion": "meshplane.dev/v1alpha1",
        "kind": "DataDomain",
        "metadata": {"name": name, "labels": {"bench.meshplane.dev/run": "operator"}},
        "spec": {
            "description": format!("Benchmark domain {name}"),
            "owners": [{"kind": "Group", "name": format!("{name}-owners")}],
            "members": [{"kind": "Group", "name": format!("{name}-engineers")}],
            "viewers": [{"kind": "Group", "name": "analysts"}],
            "quota": {"storage": "10Ti", "persistentVolumeClaims": 1000, "dataProducts": 1000},
            "storageClasses": ["standard"],
        }
    })
}

/// A product like the examples: a volume, a scheduled pipeline, an output
/// port with a schema, and one consuming domain (a grant).
fn product(name: &str, namespace: &str, consumer: &str) -> Value {
    json!({
        "apiVersion": "meshplane.dev/v1alpha1",
        "kind": "DataProduct",
        "metadata": {"name": name, "namespace": namespace, "labels": {"bench.meshplane.dev/run": "operator"}},
        "spec": {
            "owner": "team@example.com",
            "description": format!("Benchmark product {name}"),
            "classification": "Internal",
            "tags": ["bench"],
            "storage": [{"name": "data", "kind": "Volume", "size": "1Gi", "storageClass": "standard"}],
            "pipelines": [{
                "name": "build",
                "image": "registry.example.com/bench/build:1.0",
                "schedule": "0 3 * * *",
                "mounts": [{"storage": "data", "path": "/data"}],
            }],
            "outputPorts": [{
                "name": "table",
                "format": "Parquet",
                "storage": "data",
                "schema": [
                    {"name": "id", "type": "string"},
                    {"name": "amount", "type": "number"},
                    {"name": "at", "type": "timestamp"},
                ],
            }],
            "access": {"consumers": [{"domain": consumer}]},
        }
    })
}

fn domain_name(prefix: &str, i: usize) -> String {
    format!("{prefix}{i:04}")
}

// ---------------------------------------------------------------------------
// The API server's counters

/// `apiserver_request_total` and friends, summed by the labels we report on.
#[derive(Default, Clone)]
struct Counters {
    /// (verb, resource[/subresource]) → count, mutating verbs only.
    mutating: BTreeMap<(String, String), f64>,
    /// Requests the operator's flow schema dispatched (all verbs).
    service_accounts_dispatched: f64,
    /// 429s: every response code 429, and APF rejections.
    too_many: f64,
    too_many_by: BTreeMap<String, f64>,
    rejected: f64,
}

fn labels(line: &str) -> (&str, BTreeMap<&str, &str>, f64) {
    let (head, value) = line.rsplit_once(' ').unwrap_or((line, "0"));
    let value = value.parse().unwrap_or(0.0);
    let Some((name, rest)) = head.split_once('{') else { return (head, BTreeMap::new(), value) };
    let mut map = BTreeMap::new();
    for pair in rest.trim_end_matches('}').split("\",") {
        if let Some((k, v)) = pair.split_once("=\"") {
            map.insert(k, v.trim_end_matches('"'));
        }
    }
    (name, map, value)
}

async fn counters(client: &Client) -> Counters {
    let text = client.request_text(axum::http::Request::get("/metrics").body(Vec::new()).unwrap()).await.expect("reading /metrics");
    let mut c = Counters::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (name, l, value) = labels(line);
        match name {
            "apiserver_request_total" => {
                let verb = l.get("verb").copied().unwrap_or_default();
                if l.get("code") == Some(&"429") {
                    c.too_many += value;
                    let resource = l.get("resource").copied().unwrap_or_default();
                    *c.too_many_by.entry(format!("{verb} {resource}")).or_default() += value;
                }
                // Server-side apply is counted as the verb APPLY.
                if ["POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION"].contains(&verb) {
                    let mut resource = l.get("resource").copied().unwrap_or_default().to_string();
                    if let Some(sub) = l.get("subresource").filter(|s| !s.is_empty()) {
                        resource = format!("{resource}/{sub}");
                    }
                    *c.mutating.entry((verb.to_string(), resource)).or_default() += value;
                }
            }
            "apiserver_flowcontrol_dispatched_requests_total" if l.get("flow_schema") == Some(&"service-accounts") => {
                c.service_accounts_dispatched += value;
            }
            "apiserver_flowcontrol_rejected_requests_total" => c.rejected += value,
            _ => {}
        }
    }
    c
}

fn delta(after: &Counters, before: &Counters) -> Counters {
    let mut mutating = BTreeMap::new();
    for (k, v) in &after.mutating {
        let d = v - before.mutating.get(k).copied().unwrap_or(0.0);
        if d > 0.0 {
            mutating.insert(k.clone(), d);
        }
    }
    Counters {
        mutating,
        service_accounts_dispatched: after.service_accounts_dispatched - before.service_accounts_dispatched,
        too_many: after.too_many - before.too_many,
        too_many_by: after
            .too_many_by
            .iter()
            .map(|(k, v)| (k.clone(), v - before.too_many_by.get(k).copied().unwrap_or(0.0)))
            .filter(|(_, v)| *v > 0.0)
            .collect(),
        rejected: after.rejected - before.rejected,
    }
}

fn total(c: &Counters) -> f64 {
    c.mutating.values().sum()
}

/// The writes meshplane makes: it writes with server-side apply (APPLY),
/// patches (status, finalizers), creates Events and deletes; Kubernetes' own
/// controllers here write with PUT (claim binding, quota status), leases and
/// endpoints are the control plane's own heartbeat, and an APPLY of a whole
/// DataDomain or DataProduct is the benchmark's (the user's) own (meshplane
/// applies only their status).
fn meshplane_writes(c: &Counters) -> f64 {
    c.mutating
        .iter()
        .filter(|((verb, resource), _)| {
            let users = verb == "APPLY" && (resource == "dataproducts" || resource == "datadomains");
            verb != "PUT" && resource != "leases" && resource != "endpoints" && !users
        })
        .map(|(_, v)| v)
        .sum()
}

// ---------------------------------------------------------------------------
// The operator process

struct Operator {
    child: Child,
    metrics: String,
}

fn start_operator(kubeconfig: &str) -> Operator {
    let (child, metrics) = support::spawn_meshplane(
        std::path::Path::new(kubeconfig),
        "meshplane-bench",
        &["--catalog-addr", "127.0.0.1:0", "--identity", "bench"],
        &[("RUST_LOG", "info,kube=warn")],
    );
    let pids = support::cluster_dir().join("pids");
    std::fs::create_dir_all(&pids).unwrap();
    std::fs::write(pids.join("meshplane.pid"), child.id().to_string()).unwrap();
    support::wait_ready(&metrics, "meshplane-bench", Duration::from_secs(120));
    Operator { child, metrics }
}

impl Operator {
    /// (VmRSS, VmHWM) in MiB.
    fn memory(&self) -> (f64, f64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
                .unwrap_or(0.0)
                / 1024.0
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    fn metric(&self, name: &str) -> f64 {
        let (_, body) = support::http_get(&self.metrics, "/metrics").unwrap_or_default();
        body.lines().filter(|l| l.starts_with(name)).filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok()).sum()
    }

    /// CPU time the process has used (user and system), in seconds.
    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        process_stat(&stat).map(|(_, seconds)| seconds).unwrap_or(0.0)
    }

    /// HTTP 429s the operator itself got: its lists and watches, its passes.
    fn throttled(&self) -> f64 {
        let (_, body) = support::http_get(&self.metrics, "/metrics").unwrap_or_default();
        body.lines()
            .filter(|l| l.starts_with("meshplane_watch_errors_total{") || l.starts_with("meshplane_reconcile_errors_total{"))
            .filter(|l| l.contains("category=\"throttled\""))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    }

    fn stop(mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// Where the machine's CPU goes

/// CPU time, in seconds, of the whole machine (busy and all) and of each
/// process of the run by name: the control plane's components, meshplane and
/// this benchmark. A phase's delta says whether the machine was saturated and
/// who used it.
#[derive(Default, Clone)]
struct Cpu {
    busy: f64,
    all: f64,
    by_process: BTreeMap<String, f64>,
}

/// Ticks (100 per second) to seconds.
const TICK: f64 = 100.0;

/// A `/proc/<pid>/stat` line's command name and CPU time (user and system)
/// in seconds. After the command name (which may hold spaces), fields 14
/// and 15 of the whole line: utime and stime, in clock ticks.
fn process_stat(stat: &str) -> Option<(&str, f64)> {
    let (head, rest) = stat.rsplit_once(')')?;
    let comm = head.split_once('(').map(|(_, c)| c).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    Some((comm, (ticks(11) + ticks(12)) / TICK))
}

fn cpu_now() -> Cpu {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    // user nice system idle iowait irq softirq steal ...
    let fields: Vec<f64> = stat.lines().next().unwrap_or_default().split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    let all: f64 = fields.iter().take(8).sum();
    let idle = fields.get(3).copied().unwrap_or(0.0) + fields.get(4).copied().unwrap_or(0.0);
    let mut by_process = BTreeMap::new();
    let me = std::process::id().to_string();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let Some((comm, seconds)) = process_stat(&stat) else { continue };
        let name = match comm {
            _ if pid == me => "benchmark",
            c if c.starts_with("kube-apiserver") => "kube-apiserver",
            c if c.starts_with("kube-controller") => "kube-controller-manager",
            c if c.starts_with("kube-scheduler") => "kube-scheduler",
            "etcd" => "etcd",
            c if c.starts_with("kwok") => "kwok",
            "meshplane" => "meshplane",
            _ => "other",
        };
        *by_process.entry(name.to_string()).or_default() += seconds;
    }
    Cpu { busy: (all - idle) / TICK, all: all / TICK, by_process }
}

/// One phase's CPU: the machine's busy share (of all its cores) and each
/// process's seconds. A process that ended in the phase (a restarted
/// operator) is not counted; one that started counts whole.
#[derive(Default, serde::Serialize)]
struct PhaseCpu {
    seconds: f64,
    machine_busy_percent: f64,
    by_process_s: BTreeMap<String, f64>,
}

fn phase_cpu(before: &Cpu, after: &Cpu) -> PhaseCpu {
    let round = |v: f64| (v * 10.0).round() / 10.0;
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
    let all = after.all - before.all;
    PhaseCpu {
        seconds: round(all / cores),
        machine_busy_percent: if all > 0.0 { round(100.0 * (after.busy - before.busy) / all) } else { 0.0 },
        by_process_s: after
            .by_process
            .iter()
            .map(|(k, v)| (k.clone(), round(v - before.by_process.get(k).copied().unwrap_or(0.0))))
            .filter(|(_, v)| *v > 0.0)
            .collect(),
    }
}

// ---------------------------------------------------------------------------
// Waiting for readiness with a watch

fn is_ready(conditions: &[meshplane::api::Condition]) -> bool {
    meshplane::api::conditions::status_of(conditions, meshplane::api::conditions::READY) == Some("True")
}

/// Waits until `count` objects of the watch are ready by `ready`; returns
/// how long each took to become ready, from `start`.
async fn await_ready<K, F>(api: Api<K>, selector: &str, count: usize, start: Instant, timeout: Duration, ready: F) -> Vec<Duration>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    F: Fn(&K) -> bool,
{
    let mut seen: BTreeMap<String, Duration> = BTreeMap::new();
    let stream = watcher(api, watcher::Config::default().labels(selector)).boxed();
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    tokio::pin!(stream);
    while seen.len() < count {
        tokio::select! {
            _ = &mut deadline => panic!("only {} of {count} objects ({selector}) became ready within {timeout:?}", seen.len()),
            event = stream.try_next() => {
                let objects = match event.expect("watch failed") {
                    Some(watcher::Event::Apply(o)) | Some(watcher::Event::InitApply(o)) => vec![o],
                    _ => vec![],
                };
                for o in objects {
                    let key = format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any());
                    if ready(&o) && !seen.contains_key(&key) {
                        seen.insert(key, start.elapsed());
                    }
                }
            }
        }
    }
    seen.into_values().collect()
}

/// Whether the quota controller has accounted every limit of a quota (until
/// then the API server refuses objects the quota counts).
fn quota_accounted(quota: &ResourceQuota) -> bool {
    let hard = quota.spec.as_ref().and_then(|s| s.hard.as_ref());
    let used = quota.status.as_ref().and_then(|s| s.used.as_ref());
    hard.is_some_and(|h| h.keys().all(|k| used.is_some_and(|u| u.contains_key(k))))
}

fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[(((sorted.len() - 1) as f64) * p).round() as usize]
}

// ---------------------------------------------------------------------------
// Phases

async fn apply_all(client: &Client, objects: Vec<Value>, concurrency: usize) {
    stream::iter(objects)
        .map(|object| {
            let client = client.clone();
            async move { apply_value(&client, &object).await }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<()>>()
        .await;
}

async fn apply_value(client: &Client, object: &Value) {
    let api_version = object["apiVersion"].as_str().unwrap();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let kind = object["kind"].as_str().unwrap();
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
    let name = object["metadata"]["name"].as_str().unwrap();
    let api: Api<DynamicObject> = match object["metadata"]["namespace"].as_str() {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    // Transient failures (a busy API server) are retried a few times.
    for attempt in 1.. {
        match api.patch(name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(object)).await {
            Ok(_) => return,
            Err(e) if attempt >= 20 => panic!("applying {kind} {name}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100 * attempt)).await,
        }
    }
}

/// A rendered object as a plain apply body.
fn plain<T: serde::Serialize + Resource<DynamicType = ()>>(object: &T) -> Value {
    let mut v = serde_json::to_value(object).unwrap();
    v["apiVersion"] = T::api_version(&()).into();
    v["kind"] = T::kind(&()).into();
    floor_metadata(&mut v);
    v
}

/// The floor's objects carry no owner (the garbage collector would remove
/// children of a missing owner) and not meshplane's managed-by label (the
/// operator's caches select on it), so the operator never sees them.
fn floor_metadata(v: &mut Value) {
    if let Some(meta) = v["metadata"].as_object_mut() {
        meta.remove("ownerReferences");
        let labels = meta.entry("labels").or_insert(json!({}));
        if let Some(labels) = labels.as_object_mut() {
            labels.remove(meshplane::keys::LABEL_MANAGED_BY);
        }
        labels["bench.meshplane.dev/run"] = "floor".into();
    }
}

fn plain_dynamic(object: &DynamicObject) -> Value {
    let mut v = serde_json::to_value(object).unwrap();
    floor_metadata(&mut v);
    v
}

/// Renders the floor's objects with meshplane's renderers: per domain, its
/// namespace, then everything else of it; per product, its children.
fn floor_objects(settings: &Settings) -> (Vec<Value>, Vec<Value>, Vec<Value>) {
    let domain_settings = meshplane::domain::settings::DomainSettings::default();
    let mut domains = Vec::new();
    for i in 0..settings.domains {
        let mut d: DataDomain = serde_json::from_value(domain(&domain_name("f", i))).unwrap();
        d.metadata.uid = Some(format!("floor-{i}"));
        domains.push(d);
    }
    let by_name: BTreeMap<String, Arc<DataDomain>> = domains.iter().map(|d| (d.name_any(), Arc::new(d.clone()))).collect();
    let (mut namespaces, mut tenant, mut children) = (Vec::new(), Vec::new(), Vec::new());
    for d in &domains {
        let valid = meshplane::domain::validate::validate(d, &domain_settings).unwrap();
        let bundle = meshplane::domain::build::render(&valid, &domain_settings);
        namespaces.push(plain(&bundle.namespace));
        tenant.extend(bundle.role_bindings.iter().map(plain));
        tenant.push(plain(&bundle.quota));
        tenant.push(plain(&bundle.limit_range));
        tenant.extend(bundle.network_policies.iter().map(plain));
    }
    for j in 0..settings.products {
        let i = j % settings.domains;
        let d = &domains[i];
        let ns = meshplane::domain::validate::namespace_name(d, &domain_settings);
        let mut p: DataProduct =
            serde_json::from_value(product(&format!("p{j:05}"), &ns, &domain_name("f", (i + 1) % settings.domains))).unwrap();
        p.metadata.uid = Some(format!("floor-p{j}"));
        let valid = meshplane::product::validate::validate(&p, d).unwrap();
        let find = |name: &str| by_name.get(name).cloned();
        let namespace_of = |d: &DataDomain| meshplane::domain::validate::namespace_name(d, &domain_settings);
        let consumers = meshplane::product::resolve::resolve_consumers(&valid, &find, &namespace_of);
        let bundle = meshplane::product::build::render(&valid, &[], &consumers);
        children.push(plain(&bundle.service_account));
        children.push(plain(&bundle.descriptor));
        for (_, _, objects) in &bundle.storage {
            children.extend(objects.iter().map(plain_dynamic));
        }
        children.push(plain(&bundle.role));
        children.extend(bundle.role_bindings.iter().map(plain));
        children.extend(bundle.network_policies.iter().map(plain));
        children.extend(bundle.cron_jobs.iter().map(plain));
        children.extend(bundle.deployments.iter().map(plain));
    }
    (namespaces, tenant, children)
}

#[derive(serde::Serialize, Default)]
struct Report {
    domains: usize,
    products: usize,
    concurrency: usize,
    operator_domains_ready_s: f64,
    operator_products_ready_s: f64,
    operator_total_s: f64,
    floor_domains_s: f64,
    floor_products_s: f64,
    floor_total_s: f64,
    ratio: f64,
    floor_children_per_product: f64,
    writes_per_product: f64,
    meshplane_writes_per_product: f64,
    writes_per_product_by_resource: BTreeMap<String, f64>,
    operator_requests_per_product: f64,
    writes_per_domain: f64,
    steady_seconds: u64,
    steady_writes: f64,
    /// Leases, endpoints and Kubernetes' own PUTs: not meshplane's.
    steady_control_plane_writes: f64,
    steady_writes_by_resource: BTreeMap<String, f64>,
    steady_operator_requests: f64,
    latency_samples: usize,
    latency_p50_ms: f64,
    latency_p99_ms: f64,
    latency_max_ms: f64,
    rss_idle_mib: f64,
    rss_provisioned_mib: f64,
    hwm_provisioned_mib: f64,
    rss_steady_mib: f64,
    rss_steady_max_mib: f64,
    relist_seconds: f64,
    relist_writes: f64,
    relist_writes_by_resource: BTreeMap<String, f64>,
    rss_relist_mib: f64,
    hwm_relist_mib: f64,
    http_429: f64,
    /// 429s the operator got (its own metrics), of all the API server sent.
    operator_429: f64,
    /// The operator's CPU time while provisioning and during the steady window.
    cpu_provisioning_s: f64,
    cpu_steady_s: f64,
    http_429_by: BTreeMap<String, f64>,
    apf_rejected: f64,
    /// The machine's CPU during the floor's and the operator's products
    /// phase: saturated or not, and who used it.
    cpu_floor_products: PhaseCpu,
    cpu_operator_products: PhaseCpu,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e4).round() / 10.0
}

#[tokio::main]
async fn main() {
    let settings = Settings {
        domains: env_or("BENCH_DOMAINS", 50),
        products: env_or("BENCH_PRODUCTS", 1000),
        concurrency: env_or("BENCH_CONCURRENCY", 8),
        steady: Duration::from_secs(env_or("BENCH_STEADY_SECS", 600)),
        latency_samples: env_or("BENCH_LATENCY_SAMPLES", 50),
    };
    let (d, n, c) = (settings.domains, settings.products, settings.concurrency);
    println!("scale benchmark: {d} domains, {n} products, concurrency {c}, steady {:?}", settings.steady);
    let admin = support::cluster().await;
    support::kubectl(&["apply", "--server-side", "--force-conflicts", "-k", support::repo_root().join("deploy/base").to_str().unwrap()]);
    support::kubectl(&["wait", "--for=condition=Established", "crd", "--all", "--timeout=60s"]);
    let out = support::cluster_script("operator-kubeconfig.sh").output().expect("operator kubeconfig");
    assert!(out.status.success(), "operator-kubeconfig.sh: {}", String::from_utf8_lossy(&out.stderr));
    let sa_kubeconfig = String::from_utf8(out.stdout).unwrap().trim().to_string();
    // The floor writes as the operator's ServiceAccount: same identity, same
    // priority level.
    let sa = support::client_for(std::path::Path::new(&sa_kubeconfig)).await;
    let mut report = Report { domains: d, products: n, concurrency: c, ..Default::default() };
    let start_counters = counters(&admin).await;

    // --- the floor ----------------------------------------------------------
    let (namespaces, tenant, children) = floor_objects(&settings);
    report.floor_children_per_product = children.len() as f64 / n as f64;
    let floor_selector = "bench.meshplane.dev/run=floor";
    let started = Instant::now();
    apply_all(&sa, namespaces, c).await;
    apply_all(&sa, tenant, c).await;
    // Usable as the operator's Ready means it: the quota controller has
    // accounted every limit (until then the API server refuses objects the
    // quota counts).
    await_ready(Api::<ResourceQuota>::all(admin.clone()), floor_selector, d, started, Duration::from_secs(1800), quota_accounted).await;
    report.floor_domains_s = started.elapsed().as_secs_f64();
    let products_started = Instant::now();
    let cpu_before = cpu_now();
    apply_all(&sa, children, c).await;
    await_ready(Api::<PersistentVolumeClaim>::all(admin.clone()), floor_selector, n, products_started, Duration::from_secs(1800), |pvc| {
        pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
    })
    .await;
    report.floor_products_s = products_started.elapsed().as_secs_f64();
    report.cpu_floor_products = phase_cpu(&cpu_before, &cpu_now());
    report.floor_total_s = started.elapsed().as_secs_f64();
    println!("floor: domains {:.1}s, products {:.1}s", report.floor_domains_s, report.floor_products_s);

    // --- the operator -------------------------------------------------------
    let operator = start_operator(&sa_kubeconfig);
    report.rss_idle_mib = operator.memory().0;
    let selector = "bench.meshplane.dev/run=operator";
    let before_domains = counters(&admin).await;
    let started = Instant::now();
    let domains: Vec<Value> = (0..d).map(|i| domain(&domain_name("d", i))).collect();
    apply_all(&admin, domains, c).await;
    await_ready(Api::<DataDomain>::all(admin.clone()), selector, d, started, Duration::from_secs(1800), |o| {
        o.status.as_ref().is_some_and(|s| is_ready(&s.conditions))
    })
    .await;
    report.operator_domains_ready_s = started.elapsed().as_secs_f64();
    let before_products = counters(&admin).await;
    report.writes_per_domain = total(&delta(&before_products, &before_domains)) / d as f64;
    let products_started = Instant::now();
    let cpu_before = cpu_now();
    let products: Vec<Value> = (0..n)
        .map(|j| {
            let i = j % d;
            product(&format!("p{j:05}"), &format!("dm-{}", domain_name("d", i)), &domain_name("d", (i + 1) % d))
        })
        .collect();
    apply_all(&admin, products, c).await;
    let ready_after = await_ready(Api::<DataProduct>::all(admin.clone()), selector, n, products_started, Duration::from_secs(3600), |o| {
        o.status.as_ref().is_some_and(|s| is_ready(&s.conditions) && s.observed_generation == o.metadata.generation)
    })
    .await;
    report.operator_products_ready_s = products_started.elapsed().as_secs_f64();
    report.cpu_operator_products = phase_cpu(&cpu_before, &cpu_now());
    report.operator_total_s = started.elapsed().as_secs_f64();
    report.ratio = report.operator_total_s / report.floor_total_s;
    println!(
        "operator: domains {:.1}s, products {:.1}s (p50 ready at {:.1}s)",
        report.operator_domains_ready_s,
        report.operator_products_ready_s,
        percentile(&ready_after, 0.5).as_secs_f64()
    );
    // Wait for the last writes of the wave (a domain's batched count, a
    // status) to land before counting: meshplane's writes stop changing for
    // 20 s. Not its passes: periodic resyncs never stop, and are no writes.
    let mut last = meshplane_writes(&counters(&admin).await);
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = meshplane_writes(&counters(&admin).await);
        if now != last {
            (last, quiet_since) = (now, Instant::now());
        }
    }
    let after_products = counters(&admin).await;
    let wave = delta(&after_products, &before_products);
    report.writes_per_product = total(&wave) / n as f64;
    report.meshplane_writes_per_product = meshplane_writes(&wave) / n as f64;
    report.writes_per_product_by_resource =
        wave.mutating.iter().map(|((verb, resource), v)| (format!("{verb} {resource}"), (v / n as f64 * 100.0).round() / 100.0)).collect();
    report.operator_requests_per_product = wave.service_accounts_dispatched / n as f64;
    report.cpu_provisioning_s = operator.cpu_seconds();
    let (rss, hwm) = operator.memory();
    report.rss_provisioned_mib = rss;
    report.hwm_provisioned_mib = hwm;

    // --- steady state -------------------------------------------------------
    let steady_start = counters(&admin).await;
    let cpu_before_steady = operator.cpu_seconds();
    let until = Instant::now() + settings.steady;
    let mut rss_max: f64 = 0.0;
    while Instant::now() < until {
        rss_max = rss_max.max(operator.memory().0);
        tokio::time::sleep(Duration::from_secs(1).min(until.saturating_duration_since(Instant::now()))).await;
    }
    let steady = delta(&counters(&admin).await, &steady_start);
    report.steady_seconds = settings.steady.as_secs();
    report.steady_writes = meshplane_writes(&steady);
    report.steady_control_plane_writes = total(&steady) - report.steady_writes;
    report.steady_writes_by_resource = steady.mutating.iter().map(|((verb, resource), v)| (format!("{verb} {resource}"), *v)).collect();
    report.steady_operator_requests = steady.service_accounts_dispatched;
    report.rss_steady_mib = operator.memory().0;
    report.cpu_steady_s = operator.cpu_seconds() - cpu_before_steady;
    report.rss_steady_max_mib = rss_max;

    // --- reconcile-to-Ready latency -----------------------------------------
    let target_ns = format!("dm-{}", domain_name("d", 0));
    let api = Api::<DataProduct>::namespaced(admin.clone(), &target_ns);
    let mut latencies = Vec::new();
    for k in 0..settings.latency_samples {
        let patch = json!({"spec": {"description": format!("Benchmark product, revision {k}")}});
        let changed = Instant::now();
        let patched = api.patch("p00000", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patching a product");
        let generation = patched.metadata.generation;
        let version = patched.resource_version().unwrap_or_default();
        let mut events = api
            .watch(&kube::api::WatchParams::default().fields("metadata.name=p00000").timeout(60), &version)
            .await
            .expect("watching the product")
            .boxed();
        loop {
            match tokio::time::timeout(Duration::from_secs(60), events.try_next()).await {
                Ok(Ok(Some(kube::api::WatchEvent::Modified(p)))) => {
                    let s = p.status.unwrap_or_default();
                    if s.observed_generation == generation && is_ready(&s.conditions) {
                        latencies.push(changed.elapsed());
                        break;
                    }
                }
                Ok(Ok(Some(_))) => {}
                other => panic!("no reconcile of p00000 generation {generation:?} within 60s: {other:?}"),
            }
        }
    }
    report.latency_samples = latencies.len();
    report.latency_p50_ms = ms(percentile(&latencies, 0.5));
    report.latency_p99_ms = ms(percentile(&latencies, 0.99));
    report.latency_max_ms = ms(percentile(&latencies, 1.0));

    // --- restart: the relist ------------------------------------------------
    report.operator_429 = operator.throttled();
    operator.stop();
    let before_restart = counters(&admin).await;
    let restarted = Instant::now();
    let operator = start_operator(&sa_kubeconfig);
    // Every object is reconciled once after the initial list.
    while operator.metric("meshplane_reconciliations_total") < (d + n) as f64 {
        assert!(restarted.elapsed() < Duration::from_secs(1800), "the restarted operator did not reconcile everything");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    report.relist_seconds = restarted.elapsed().as_secs_f64();
    let (rss, hwm) = operator.memory();
    report.rss_relist_mib = rss;
    report.hwm_relist_mib = hwm;
    let relist = delta(&counters(&admin).await, &before_restart);
    report.relist_writes = meshplane_writes(&relist);
    report.relist_writes_by_resource = relist.mutating.iter().map(|((verb, resource), v)| (format!("{verb} {resource}"), *v)).collect();
    report.operator_429 += operator.throttled();
    operator.stop();

    let all = delta(&counters(&admin).await, &start_counters);
    report.http_429 = all.too_many;
    report.http_429_by = all.too_many_by;
    report.apf_rejected = all.rejected;

    print_report(&report);
    let dir = support::repo_root().join("target/bench");
    std::fs::create_dir_all(&dir).unwrap();
    let path: PathBuf = dir.join(format!("scale-{d}x{n}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    println!("JSON: {}", path.display());
}

fn print_report(r: &Report) {
    let rows: Vec<(String, String, &str)> = vec![
        ("domains ready (operator)".into(), format!("{:.1} s", r.operator_domains_ready_s), ""),
        ("products ready (operator)".into(), format!("{:.1} s", r.operator_products_ready_s), ""),
        ("total (operator)".into(), format!("{:.1} s", r.operator_total_s), ""),
        ("total (floor: plain SSA of the same children)".into(), format!("{:.1} s", r.floor_total_s), ""),
        ("operator / floor".into(), format!("{:.2}x", r.ratio), "<= 1.3x"),
        (
            "writes per product (all clients)".into(),
            format!("{:.2} (floor children {:.0})", r.writes_per_product, r.floor_children_per_product),
            "",
        ),
        (
            "writes per product by meshplane (APPLY, PATCH, POST, DELETE)".into(),
            format!("{:.2}", r.meshplane_writes_per_product),
            "<= children + 1",
        ),
        ("operator requests per product (any verb)".into(), format!("{:.2}", r.operator_requests_per_product), ""),
        (
            format!("steady-state writes by meshplane in {} s", r.steady_seconds),
            format!("{} (+{} by the control plane)", r.steady_writes.abs(), r.steady_control_plane_writes),
            "0",
        ),
        ("reconcile-to-Ready p50 / p99".into(), format!("{} / {} ms", r.latency_p50_ms, r.latency_p99_ms), "p99 <= 1000 ms"),
        (
            "RSS idle / provisioned / steady".into(),
            format!("{:.1} / {:.1} / {:.1} MiB", r.rss_idle_mib, r.rss_provisioned_mib, r.rss_steady_mib),
            "",
        ),
        (
            format!("operator CPU while provisioning / in {} s of steady state", r.steady_seconds),
            format!("{:.1} s / {:.1} s", r.cpu_provisioning_s, r.cpu_steady_s),
            "",
        ),
        ("peak RSS (VmHWM) while provisioning".into(), format!("{:.1} MiB", r.hwm_provisioned_mib), "40 MiB at 1k, 150 MiB at 5k"),
        (
            "relist after restart: peak / steady".into(),
            format!("{:.1} / {:.1} MiB ({:.1} s, {} writes)", r.hwm_relist_mib, r.rss_relist_mib, r.relist_seconds, r.relist_writes.abs()),
            "<= 1.5x steady",
        ),
        (
            "HTTP 429 to the operator / to all clients (APF rejections)".into(),
            format!("{} / {} ({})", r.operator_429, r.http_429, r.apf_rejected),
            "0",
        ),
    ];
    println!("\n| {} domains, {} products | measured | goal |\n|---|---|---|", r.domains, r.products);
    for (what, value, goal) in rows {
        println!("| {what} | {value} | {goal} |");
    }
    println!("\nwrites per product by verb and resource (all clients):");
    for (k, v) in &r.writes_per_product_by_resource {
        println!("  {k}: {v}");
    }
    for (phase, cpu) in [("floor", &r.cpu_floor_products), ("operator", &r.cpu_operator_products)] {
        let processes: Vec<String> = cpu.by_process_s.iter().map(|(k, v)| format!("{k} {v:.1} s")).collect();
        println!(
            "CPU in the {phase}'s products phase ({:.1} s): machine {:.1}% busy; {}",
            cpu.seconds,
            cpu.machine_busy_percent,
            processes.join(", ")
        );
    }
    if !r.http_429_by.is_empty() {
        println!("HTTP 429 by verb and resource: {:?}", r.http_429_by);
    }
    if !r.steady_writes_by_resource.is_empty() {
        println!("steady-state writes by verb and resource:");
        for (k, v) in &r.steady_writes_by_resource {
            println!("  {k}: {v}");
        }
    }
    if !r.relist_writes_by_resource.is_empty() {
        println!("writes during the restart's relist by verb and resource:");
        for (k, v) in &r.relist_writes_by_resource {
            println!("  {k}: {v}");
        }
    }
}
