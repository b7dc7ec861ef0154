//! Chaos and faults: meshplane keeps the cluster exactly as its resources
//! say while its own processes and the control plane are killed under it.
//!
//! - The operator is killed with SIGKILL at random moments (20 times;
//!   `MESHPLANE_CHAOS_KILLS=200` for the full size) while products and
//!   domains are created, updated and deleted, and restarted each time; then
//!   the invariant checker (`chaos/invariants.rs`) must find nothing wrong
//!   within 60 seconds of the last kill.
//! - kube-apiserver, then etcd, are killed and restarted (`cluster/restart.sh`)
//!   in the middle of the workload; the same operator process recovers and
//!   converges.
//! - Two replicas; the leader is killed again and again (SIGKILL and SIGTERM
//!   in turn) during the workload; the Lease's holders, the replicas' own
//!   metrics and the Events each replica signs with its identity show that
//!   only the holder of the Lease wrote; convergence as above.
//! - A child changed by a foreign field manager is restored and reported;
//!   one that keeps being changed is given up on and reported as Stalled.
//! - Products that do not fit their domain's quota say so (`QuotaExceeded`,
//!   naming the quota); their neighbours and other domains are unaffected.
//!
//! What the writer audit proves, and what it does not: all replicas write
//! under the one field manager `meshplane`, so managedFields cannot tell them
//! apart (the checker only proves that no other manager wrote meshplane's
//! children). Each replica signs its Events with its identity
//! (`reportingInstance`, from `POD_NAME`), and meshplane emits one for every
//! child it creates or changes, so "every Event falls within its author's
//! term" covers every create and update, not status patches or deletions.
//! The Lease polling (every 100 ms, cross-checked against
//! `leaseTransitions`) and metric samples (every ~100 ms) are observations,
//! not a proof of the gaps in between. And a killed leader cannot write:
//! what this shows is that the handover itself never lets a standby write
//! before it holds the Lease, nor a stopping leader after it let go.
//!
//! Runs alone, after the other suites, one test at a time: it kills the
//! shared test operator and restarts the API server. Random choices follow a
//! seed, printed at the start (`MESHPLANE_CHAOS_SEED` replays it).

mod support;

#[path = "chaos/churn.rs"]
mod churn;
#[path = "chaos/invariants.rs"]
mod invariants;
#[path = "chaos/rng.rs"]
mod rng;

use std::collections::BTreeMap;
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use meshplane::api::{DataDomain, DataProduct};
use support::*;

use crate::churn::Churn;
use crate::rng::Rng;

/// One test at a time even if the harness runs several: each kills
/// operators and may restart the control plane.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long after the last fault the cluster must be exactly as wanted.
const CONVERGENCE: Duration = Duration::from_secs(60);

fn count_from_env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

/// The seed of this process, printed once.
fn seed() -> u64 {
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SEED.get_or_init(|| {
        let seed = Rng::seed_from_env();
        println!("chaos seed: {seed} (replay with MESHPLANE_CHAOS_SEED={seed})");
        seed
    })
}

/// What every test starts from: the cluster with meshplane's CRDs and RBAC,
/// the shared test operator stopped (its Lease released), a client, a name
/// prefix for this run's domains and a random generator for this test.
struct Run {
    client: Client,
    prefix: String,
    rng: Rng,
}

impl Run {
    async fn start(test: &str) -> Run {
        // Installs the CRDs and RBAC and writes the operator's kubeconfig.
        operator();
        stop_shared_operator();
        let client = cluster().await;
        let prefix = unique("cx");
        let rng = Rng::new(seed() ^ test.bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64)));
        println!("{test}: domains {prefix}-*");
        Run { client, prefix, rng }
    }

    /// Deletes this run's domains (Cascade) while an operator still runs to
    /// finalize them, and waits until their products and domains are gone.
    async fn cleanup(&self) {
        let api = Api::<DataDomain>::all(self.client.clone());
        let ours: Vec<String> = api
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .map(|d| d.name_any())
            .filter(|n| n.starts_with(&self.prefix))
            .collect();
        for name in &ours {
            let patch = serde_json::json!({"spec": {"deletionPolicy": "Cascade"}});
            let _ = api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await;
            let _ = api.delete(name, &DeleteParams::default()).await;
        }
        let prefix = self.prefix.clone();
        // Cleanup, after the assertions: the controller-manager empties each
        // namespace kind by kind (each product finalized by meshplane on the
        // way), which on 2 shared cores after a chaos run once took over 90 s.
        wait_until("this run's domains and products to be deleted", Duration::from_secs(180), || async {
            let domains = api.list(&ListParams::default()).await.ok()?;
            let products = Api::<DataProduct>::all(self.client.clone()).list(&ListParams::default()).await.ok()?;
            let left = domains.items.iter().any(|d| d.name_any().starts_with(&prefix))
                || products.items.iter().any(|p| p.namespace().is_some_and(|ns| ns.starts_with(&format!("dm-{prefix}"))));
            (!left).then_some(())
        })
        .await;
    }
}

/// Stops the tests' shared operator with SIGTERM, so it releases the Lease.
fn stop_shared_operator() {
    let Ok(pid) = std::fs::read_to_string(cluster_dir().join("pids/meshplane.pid")) else {
        return;
    };
    let pid = pid.trim().to_string();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    if !exe.is_some_and(|e| e.to_string_lossy().contains("meshplane")) {
        return;
    }
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::path::Path::new(&format!("/proc/{pid}/exe")).exists() && std::fs::read_link(format!("/proc/{pid}/exe")).is_ok() {
        if Instant::now() > deadline {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A meshplane process of this suite, as the operator's ServiceAccount,
/// with its own identity in the Lease and on its Events (`POD_NAME`).
struct Operator {
    identity: String,
    addr: String,
    child: Child,
}

impl Operator {
    fn spawn(identity: &str) -> Operator {
        let (child, addr) = spawn_meshplane(
            &cluster_dir().join("meshplane.kubeconfig"),
            &format!("chaos-{identity}"),
            &["--catalog-addr", "127.0.0.1:0", "--identity", identity],
            &[("POD_NAME", identity), ("RUST_LOG", "info,kube=warn")],
        );
        Operator { identity: identity.to_string(), addr, child }
    }

    async fn ready(&self) {
        wait_until(&format!("{} to sync its caches", self.identity), Duration::from_secs(60), || async {
            http_get(&self.addr, "/readyz").is_some_and(|(code, _)| code == 200).then_some(())
        })
        .await;
    }

    fn metric(&self, name: &str) -> Option<f64> {
        let (_, body) = http_get(&self.addr, "/metrics")?;
        Some(
            body.lines()
                .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
                .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
                .sum(),
        )
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL: no chance to release the Lease or finish anything.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for the exit (graceful: the Lease is released).
    async fn terminate(&mut self) -> ExitStatus {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(Instant::now() < deadline, "{} did not exit within 30s of SIGTERM", self.identity);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Lease's holder now ("" when free).
async fn lease(client: &Client) -> Option<Lease> {
    Api::<Lease>::namespaced(client.clone(), "meshplane-system").get_opt("meshplane").await.ok().flatten()
}

fn holder_of(lease: &Option<Lease>) -> String {
    lease.as_ref().and_then(|l| l.spec.as_ref()?.holder_identity.clone()).unwrap_or_default()
}

/// Frees enough PersistentVolumes of the local pool for the run: released
/// ones (their claims gone, reclaim policy Retain) are made available again,
/// and the pool grows when that is not enough.
fn ensure_volumes(wanted: usize) {
    let out = kubectl(&["get", "pv", "-l", "meshplane.dev/local-pool=true", "-o", "json"]);
    let pvs: serde_json::Value = serde_json::from_str(&out).unwrap();
    let items = pvs["items"].as_array().cloned().unwrap_or_default();
    let mut available = 0;
    let mut highest = 0;
    for pv in &items {
        let name = pv["metadata"]["name"].as_str().unwrap_or_default();
        highest = highest.max(name.trim_start_matches("pv-").parse::<usize>().unwrap_or(0));
        match pv["status"]["phase"].as_str() {
            Some("Available") => available += 1,
            Some("Released") => {
                kubectl(&["patch", "pv", name, "--type", "json", "-p", r#"[{"op":"remove","path":"/spec/claimRef"}]"#]);
                available += 1;
            }
            _ => {}
        }
    }
    if available < wanted {
        let more = wanted - available;
        let manifests = cluster_script("pv-pool.sh")
            .args([(highest + 1).to_string(), (highest + more).to_string()])
            .output()
            .expect("cluster/pv-pool.sh");
        let out = kubectl_stdin(&["apply", "-f", "-"], &String::from_utf8_lossy(&manifests.stdout));
        assert!(out.status.success(), "growing the volume pool: {}", String::from_utf8_lossy(&out.stderr));
        println!("grew the volume pool by {more} PersistentVolumes");
    }
}

/// Polls the invariant checker until it finds nothing, or fails with every
/// violation `budget` after `since`. Returns how long after `since` the
/// cluster was right.
async fn converge(client: &Client, prefix: &str, deleted: &[invariants::Deleted], since: Instant, budget: Duration) -> Duration {
    let mut last = Vec::new();
    loop {
        let violations = invariants::check(client, prefix, deleted).await;
        if violations.is_empty() {
            return since.elapsed();
        }
        if since.elapsed() > budget {
            let mut report = format!(
                "{} invariant violations {:.0?} after the last fault (seed {}):\n- {}",
                violations.len(),
                since.elapsed(),
                seed(),
                violations.join("\n- ")
            );
            if violations != last && !last.is_empty() {
                report.push_str("\n(the set was still changing)");
            }
            panic!("{report}");
        }
        last = violations;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// No operator log of this run shows a panic.
fn assert_no_panic(identities: &[String]) {
    for identity in identities {
        let log = std::fs::read_to_string(cluster_dir().join(format!("logs/chaos-{identity}.log"))).unwrap_or_default();
        assert!(!log.contains("panicked"), "meshplane {identity} panicked; see logs/chaos-{identity}.log");
    }
}

fn flags() -> (Arc<AtomicBool>, Arc<AtomicBool>) {
    (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_operator_at_random_moments_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let mut run = Run::start("kill").await;
    let kills = count_from_env("MESHPLANE_CHAOS_KILLS", 20);
    ensure_volumes(60 + 2 * kills);
    let identity = "chaos-solo".to_string();
    let mut operator = Operator::spawn(&identity);
    operator.ready().await;
    let mut churn = Churn::new(run.client.clone(), &run.prefix, run.rng.fork());
    churn.setup().await;
    let (stop, paused) = flags();
    let workload = churn.run(stop.clone(), paused);
    let started = Instant::now();
    let mut last_kill = Instant::now();
    for _ in 0..kills {
        // Sometimes before the new process has even synced its caches.
        tokio::time::sleep(run.rng.between(Duration::from_millis(200), Duration::from_millis(3000))).await;
        operator.kill();
        last_kill = Instant::now();
        operator = Operator::spawn(&identity);
    }
    stop.store(true, Ordering::SeqCst);
    let churn = workload.await.unwrap();
    let churned = started.elapsed();
    let took = converge(&run.client, &run.prefix, &churn.deleted, last_kill, CONVERGENCE).await;
    assert!(operator.alive(), "the last operator process exited");
    println!(
        "{kills} SIGKILLs in {churned:.1?} of churn ({:?}); converged {took:.1?} after the last kill; {} deletions audited for their storage",
        churn.stats,
        churn.deleted.len()
    );
    run.cleanup().await;
    assert!(operator.terminate().await.success());
    assert_no_panic(&[identity]);
}

/// Restarts a component of the tests' control plane with cluster/restart.sh;
/// returns how long it was away (kill to ready).
async fn restart(component: &'static str) -> Duration {
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || cluster_script("restart.sh").arg(component).output().unwrap()).await.unwrap();
    assert!(out.status.success(), "cluster/restart.sh {component}: {}", String::from_utf8_lossy(&out.stderr));
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_rides_out_api_server_and_etcd_restarts() {
    let _serial = SERIAL.lock().await;
    let mut run = Run::start("control-plane").await;
    ensure_volumes(80);
    let identity = "chaos-solo".to_string();
    let mut operator = Operator::spawn(&identity);
    operator.ready().await;
    let pid = operator.child.id();
    let mut churn = Churn::new(run.client.clone(), &run.prefix, run.rng.fork());
    churn.setup().await;
    let (stop, paused) = flags();
    let workload = churn.run(stop.clone(), paused.clone());
    let mut figures = Vec::new();
    for component in ["kube-apiserver", "etcd"] {
        paused.store(false, Ordering::SeqCst);
        tokio::time::sleep(run.rng.between(Duration::from_secs(2), Duration::from_secs(4))).await;
        let away = restart(component).await;
        let back = Instant::now();
        // The workload goes on against the restarted control plane.
        tokio::time::sleep(run.rng.between(Duration::from_secs(2), Duration::from_secs(4))).await;
        paused.store(true, Ordering::SeqCst);
        // Everything the workload has asked for so far, including what it
        // asked while the control plane was away (the storage of deleted
        // products is audited at the end, with the workload's records).
        let took = converge(&run.client, &run.prefix, &[], back, CONVERGENCE).await;
        assert!(operator.alive(), "the operator exited after the {component} restart");
        assert_eq!(operator.child.id(), pid);
        figures.push(format!("{component}: away {away:.1?}, converged {took:.1?} after it was ready again"));
    }
    stop.store(true, Ordering::SeqCst);
    let churn = workload.await.unwrap();
    let took = converge(&run.client, &run.prefix, &churn.deleted, Instant::now(), CONVERGENCE).await;
    println!("{}; final check {took:.1?}; workload {:?}; same operator process {pid} throughout", figures.join("; "), churn.stats);
    run.cleanup().await;
    assert!(operator.terminate().await.success());
    assert_no_panic(&[identity]);
}

/// One observation of the Lease.
#[derive(Clone, Debug)]
struct LeaseSeen {
    holder: String,
    acquired: Option<jiff::Timestamp>,
    transitions: i32,
}

/// One observation of a replica's own metrics.
#[derive(Clone, Debug)]
struct Sample {
    round: u64,
    identity: String,
    leader: f64,
    reconciliations: f64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_again_and_again_never_makes_two_writers() {
    let _serial = SERIAL.lock().await;
    let mut run = Run::start("leader").await;
    let failovers = count_from_env("MESHPLANE_CHAOS_FAILOVERS", 4);
    ensure_volumes(60 + 6 * failovers);
    let client = run.client.clone();
    let mut next = 0;
    let mut identity = || {
        next += 1;
        format!("{}-r{}", run.prefix, next - 1)
    };
    let mut replicas = vec![Operator::spawn(&identity()), Operator::spawn(&identity())];
    for r in &replicas {
        r.ready().await;
    }
    let mut all_identities: Vec<String> = replicas.iter().map(|r| r.identity.clone()).collect();

    // Watch the Lease and the replicas' own metrics throughout.
    let stop_watch = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<Vec<LeaseSeen>>> = Arc::default();
    let live: Arc<Mutex<Vec<(String, String)>>> =
        Arc::new(Mutex::new(replicas.iter().map(|r| (r.identity.clone(), r.addr.clone())).collect()));
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let watcher = {
        let (stop, seen, live, samples, client) = (stop_watch.clone(), seen.clone(), live.clone(), samples.clone(), client.clone());
        tokio::spawn(async move {
            let mut round = 0;
            while !stop.load(Ordering::SeqCst) {
                round += 1;
                if let Some(lease) = lease(&client).await {
                    let spec = lease.spec.clone().unwrap_or_default();
                    let now = LeaseSeen {
                        holder: spec.holder_identity.unwrap_or_default(),
                        acquired: spec.acquire_time.map(|t| t.0),
                        transitions: spec.lease_transitions.unwrap_or(0),
                    };
                    let mut seen = seen.lock().unwrap();
                    match seen.last_mut() {
                        // The lease library takes an orphaned Lease in two
                        // writes (holder, then the transitions count): a poll
                        // between them sees the new holder with the old count.
                        Some(last) if last.holder == now.holder && last.acquired == now.acquired => last.transitions = now.transitions,
                        _ => seen.push(now),
                    }
                }
                let replicas = live.lock().unwrap().clone();
                for (identity, addr) in replicas {
                    let scrape = tokio::task::spawn_blocking(move || http_get(&addr, "/metrics")).await.unwrap();
                    let Some((_, body)) = scrape else { continue };
                    let value = |name: &str| -> f64 {
                        body.lines()
                            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
                            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
                            .sum()
                    };
                    samples.lock().unwrap().push(Sample {
                        round,
                        identity,
                        leader: value("meshplane_leader"),
                        reconciliations: value("meshplane_reconciliations_total"),
                    });
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    let mut churn = Churn::new(client.clone(), &run.prefix, run.rng.fork());
    churn.setup().await;
    let (stop, paused) = flags();
    let workload = churn.run(stop.clone(), paused);
    let mut kills: BTreeMap<String, SystemTime> = BTreeMap::new();
    let mut failover_times = Vec::new();
    let mut last_kill = Instant::now();
    for i in 0..failovers {
        tokio::time::sleep(run.rng.between(Duration::from_millis(1000), Duration::from_millis(3000))).await;
        let holder = wait_until("a replica to hold the Lease", Duration::from_secs(30), || async {
            let holder = holder_of(&lease(&client).await);
            replicas.iter().position(|r| r.identity == holder)
        })
        .await;
        let mut leader = replicas.remove(holder);
        live.lock().unwrap().retain(|(id, _)| *id != leader.identity);
        let sigkill = i % 2 == 0;
        kills.insert(leader.identity.clone(), SystemTime::now());
        let killed = Instant::now();
        last_kill = killed;
        let standby = Operator::spawn(&identity());
        live.lock().unwrap().push((standby.identity.clone(), standby.addr.clone()));
        all_identities.push(standby.identity.clone());
        if sigkill {
            leader.kill();
        } else {
            let status = leader.terminate().await;
            assert!(status.success(), "{} exited with {status} on SIGTERM", leader.identity);
        }
        replicas.push(standby);
        let old = leader.identity.clone();
        let new = wait_until("a standby to take the Lease", Duration::from_secs(30), || async {
            let holder = holder_of(&lease(&client).await);
            (holder != old && replicas.iter().any(|r| r.identity == holder)).then_some(holder)
        })
        .await;
        failover_times.push(format!("{} {:.1?}", if sigkill { "KILL" } else { "TERM" }, killed.elapsed()));
        println!("failover {}: {old} -> {new} in {:.1?}", i + 1, killed.elapsed());
    }
    stop.store(true, Ordering::SeqCst);
    let churn = workload.await.unwrap();
    let took = converge(&client, &run.prefix, &churn.deleted, last_kill, CONVERGENCE).await;
    stop_watch.store(true, Ordering::SeqCst);
    watcher.await.unwrap();

    // The audit. 1. The Lease: every acquisition came after the previous
    // holder was killed or stopped, and none was missed by the polling.
    let seen = seen.lock().unwrap().clone();
    let acquisitions: Vec<&LeaseSeen> = seen.iter().filter(|s| all_identities.contains(&s.holder)).collect();
    let mut problems = Vec::new();
    for pair in acquisitions.windows(2) {
        let (before, after) = (pair[0], pair[1]);
        let Some(killed) = kills.get(&before.holder) else {
            problems.push(format!("{} took the Lease from {}, which was never killed", after.holder, before.holder));
            continue;
        };
        let killed = jiff::Timestamp::try_from(*killed).unwrap();
        if after.acquired.is_none_or(|a| a < killed) {
            problems.push(format!(
                "{} acquired the Lease at {:?}, before {} was killed at {killed}",
                after.holder, after.acquired, before.holder
            ));
        }
    }
    if let (Some(first), Some(last)) = (acquisitions.first(), acquisitions.last()) {
        let counted = (last.transitions - first.transitions) as usize;
        if counted != acquisitions.len() - 1 {
            problems.push(format!("the Lease counted {counted} transitions, the audit saw {}", acquisitions.len() - 1));
        }
    }
    // 2. The replicas' metrics: one that does not lead never reconciled (a
    // process leads at most once: one that loses the Lease exits), and no
    // two replicas claimed to lead at once.
    let samples = samples.lock().unwrap().clone();
    for s in &samples {
        if s.leader == 0.0 && s.reconciliations > 0.0 {
            problems.push(format!("standby {} had reconciled {} objects (round {})", s.identity, s.reconciliations, s.round));
        }
    }
    let mut leaders: BTreeMap<u64, Vec<&str>> = BTreeMap::new();
    for s in samples.iter().filter(|s| s.leader == 1.0) {
        leaders.entry(s.round).or_default().push(&s.identity);
    }
    for (round, who) in &leaders {
        if who.len() > 1 {
            problems.push(format!("round {round}: {who:?} all claimed to lead"));
        }
    }
    // 3. The writes: every Event a replica signed (one per child it created
    // or changed, each grant and revocation) falls within its own term, from
    // its acquisition of the Lease to the next holder's.
    let mut terms: BTreeMap<&str, (jiff::Timestamp, Option<jiff::Timestamp>)> = BTreeMap::new();
    for (i, a) in acquisitions.iter().enumerate() {
        let end = acquisitions.get(i + 1).and_then(|n| n.acquired);
        if let Some(start) = a.acquired {
            terms.insert(&a.holder, (start, end));
        }
    }
    let mut audited = 0;
    let mut writers = std::collections::BTreeSet::new();
    let mut namespaces: Vec<String> = ["a", "b", "c", "e"].iter().map(|d| format!("dm-{}-{d}", run.prefix)).collect();
    namespaces.push("default".into());
    for ns in &namespaces {
        let events = Api::<Event>::namespaced(client.clone(), ns).list(&ListParams::default()).await.unwrap().items;
        for e in events.iter().filter(|e| e.reporting_controller.as_deref() == Some("meshplane")) {
            let instance = e.reporting_instance.clone().unwrap_or_default();
            if !all_identities.contains(&instance) {
                continue;
            }
            audited += 1;
            writers.insert(instance.clone());
            let Some((start, end)) = terms.get(instance.as_str()) else {
                problems.push(format!("{instance} wrote ({:?} {:?}) but never held the Lease", e.reason, e.note));
                continue;
            };
            let mut times = vec![e.event_time.as_ref().map(|t| t.0)];
            times.push(e.series.as_ref().map(|s| s.last_observed_time.0));
            for t in times.into_iter().flatten() {
                if t < *start || end.is_some_and(|end| t > end) {
                    problems.push(format!("{instance} wrote at {t} ({:?} {:?}) outside its term {start} .. {end:?}", e.reason, e.note));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{} problems in the writer audit (seed {}):\n- {}", problems.len(), seed(), problems.join("\n- "));
    assert!(audited > 0, "no Events to audit");
    println!(
        "{failovers} failovers ({}); {} Lease holders; {} metric samples; {audited} Events from {} writers, each within its holder's term; converged {took:.1?} after the last kill; workload {:?}",
        failover_times.join(", "),
        acquisitions.len(),
        samples.len(),
        writers.len(),
        churn.stats
    );
    run.cleanup().await;
    for r in &mut replicas {
        let _ = Command::new("kill").args(["-TERM", &r.child.id().to_string()]).status();
    }
    for r in &mut replicas {
        assert!(r.terminate().await.success(), "{} did not exit cleanly", r.identity);
    }
    assert_no_panic(&all_identities);
}

/// Warning Events about a product with the given reason: (action, note).
async fn warnings(client: &Client, namespace: &str, product: &str, reason: &str) -> Vec<(String, String)> {
    let events = Api::<Event>::namespaced(client.clone(), namespace).list(&ListParams::default()).await.unwrap().items;
    events
        .into_iter()
        .filter(|e| {
            e.type_.as_deref() == Some("Warning")
                && e.reason.as_deref() == Some(reason)
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(product)
        })
        .map(|e| (e.action.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect()
}

fn replicas_of(namespace: &str, name: &str) -> String {
    kubectl(&["get", "deployment", name, "-n", namespace, "-o", "jsonpath={.spec.replicas}"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_field_manager_is_restored_reported_and_not_fought_forever() {
    let _serial = SERIAL.lock().await;
    let run = Run::start("foreign").await;
    let identity = "chaos-solo".to_string();
    let mut operator = Operator::spawn(&identity);
    operator.ready().await;
    let client = run.client.clone();
    let ns = ready_domain(&client, &format!("{}-f", run.prefix), "").await;
    apply(&product_manifest(&ns, "feed", "  pipelines: [{name: stream, image: busybox, mode: Continuous}]\n"));
    wait_product(&client, &ns, "feed", "Ready", "True").await;
    let deployment = "feed-stream";

    // A field meshplane does not set is someone else's: left alone.
    kubectl(&["label", "deployment", deployment, "-n", &ns, "team=data"]);
    kubectl(&["patch", "dataproduct", "feed", "-n", &ns, "--type", "merge", "-p", r#"{"spec":{"description":"touched"}}"#]);
    wait_until("the product's change to be reconciled", Duration::from_secs(30), || async {
        let p = Api::<DataProduct>::namespaced(client.clone(), &ns).get("feed").await.ok()?;
        (p.status?.observed_generation == p.metadata.generation).then_some(())
    })
    .await;
    let label = kubectl(&["get", "deployment", deployment, "-n", &ns, "-o", "jsonpath={.metadata.labels.team}"]);
    assert_eq!(label, "data", "a label meshplane does not manage was removed");
    assert!(warnings(&client, &ns, "feed", "FieldManagerConflict").await.is_empty(), "a foreign label was reported as a conflict");

    // A field meshplane manages, changed by `kubectl patch`: restored, with a
    // Warning naming the object, the manager and the field, each time up to
    // the limit.
    let limit = meshplane::write::CONFLICT_LIMIT;
    let mut restored_in = Vec::new();
    for round in 1..=limit {
        kubectl(&["patch", "deployment", deployment, "-n", &ns, "--type", "merge", "-p", r#"{"spec":{"replicas":3}}"#]);
        let changed = Instant::now();
        wait_until(&format!("restore {round} of spec.replicas"), Duration::from_secs(30), || async {
            (replicas_of(&ns, deployment) == "1").then_some(())
        })
        .await;
        restored_in.push(changed.elapsed());
    }
    let restores = wait_until("the Warning Events of the restores", Duration::from_secs(10), || async {
        let w = warnings(&client, &ns, "feed", "FieldManagerConflict").await;
        (!w.is_empty()).then_some(w)
    })
    .await;
    let (action, note) = &restores[0];
    assert_eq!(action, "Restore");
    for needle in ["Deployment feed-stream", "\"kubectl-patch\"", ".spec.replicas"] {
        assert!(note.contains(needle), "the Warning does not name {needle}: {note}");
    }
    assert_eq!(operator.metric("meshplane_child_applies_total{kind=\"Deployment\",outcome=\"restored\"}"), Some(limit as f64));

    // Once more: meshplane yields instead of fighting, and says so.
    kubectl(&["patch", "deployment", deployment, "-n", &ns, "--type", "merge", "-p", r#"{"spec":{"replicas":3}}"#]);
    let p = wait_product(&client, &ns, "feed", "Stalled", "True").await;
    let stalled = product_condition(&p, "Stalled");
    assert_eq!(stalled.reason, "FieldManagerConflict");
    for needle in ["Deployment feed-stream", "\"kubectl-patch\"", ".spec.replicas", "stopped forcing"] {
        assert!(stalled.message.contains(needle), "the Stalled condition does not name {needle}: {}", stalled.message);
    }
    assert_eq!(replicas_of(&ns, deployment), "3", "meshplane fought on past the limit");
    let yielded = wait_until("the Warning Event of the yield", Duration::from_secs(10), || async {
        warnings(&client, &ns, "feed", "FieldManagerConflict").await.into_iter().find(|(action, _)| action == "Yield")
    })
    .await;
    assert!(yielded.1.contains("kubectl-patch"), "{}", yielded.1);
    assert!(operator.metric("meshplane_child_applies_total{kind=\"Deployment\",outcome=\"yielded\"}").unwrap_or(0.0) >= 1.0);
    // Still yielding a pass later (no write, no restore).
    kubectl(&["patch", "dataproduct", "feed", "-n", &ns, "--type", "merge", "-p", r#"{"spec":{"description":"again"}}"#]);
    wait_until("the next pass", Duration::from_secs(30), || async {
        let p = Api::<DataProduct>::namespaced(client.clone(), &ns).get("feed").await.ok()?;
        (p.status?.observed_generation == p.metadata.generation).then_some(())
    })
    .await;
    assert_eq!(replicas_of(&ns, deployment), "3");
    assert_eq!(operator.metric("meshplane_child_applies_total{kind=\"Deployment\",outcome=\"restored\"}"), Some(limit as f64));

    // The person's fix (here: delete the object): meshplane recreates it and
    // the product is Ready again.
    let before = Api::<Deployment>::namespaced(client.clone(), &ns).get(deployment).await.unwrap().metadata.uid;
    kubectl(&["delete", "deployment", deployment, "-n", &ns]);
    let p = wait_product(&client, &ns, "feed", "Ready", "True").await;
    assert_eq!(product_condition(&p, "Stalled").status, "False");
    let after = Api::<Deployment>::namespaced(client.clone(), &ns).get(deployment).await.unwrap().metadata.uid;
    assert_ne!(before, after);
    assert_eq!(replicas_of(&ns, deployment), "1");
    println!("restored a foreign change {limit} times (in {restored_in:.1?}), then yielded: {}", stalled.message);
    run.cleanup().await;
    assert!(operator.terminate().await.success());
    assert_no_panic(&[identity]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_product_that_exceeds_its_quota_says_so_and_nothing_else_breaks() {
    let _serial = SERIAL.lock().await;
    let run = Run::start("quota").await;
    ensure_volumes(20);
    let identity = "chaos-solo".to_string();
    let mut operator = Operator::spawn(&identity);
    operator.ready().await;
    let client = run.client.clone();
    let tight = format!("{}-q", run.prefix);
    let ns = ready_domain(
        &client,
        &tight,
        "  quota: {cpu: \"1\", memory: 2Gi, storage: 3Gi, persistentVolumeClaims: 2, dataProducts: 4}\n  storageClasses: [standard]\n",
    )
    .await;
    let other = ready_domain(&client, &format!("{}-o", run.prefix), "").await;

    // Fits: a 1Gi volume and one pipeline pod (500m CPU limit by default).
    apply(&product_manifest(
        &ns,
        "fits",
        "  storage: [{name: data, kind: Volume, size: 1Gi}]\n  pipelines: [{name: run, image: busybox, mode: Continuous}]\n",
    ));
    wait_product(&client, &ns, "fits", "Ready", "True").await;
    // Too much storage: the claim is refused; the rest is provisioned.
    apply(&product_manifest(
        &ns,
        "hoard",
        "  storage: [{name: data, kind: Volume, size: 5Gi}]\n  access: {consumers: [{subject: {kind: User, name: u}}]}\n",
    ));
    let p = wait_product(&client, &ns, "hoard", "StorageReady", "False").await;
    let storage = product_condition(&p, "StorageReady");
    assert_eq!(storage.reason, "QuotaExceeded", "{}", storage.message);
    for needle in ["exceeded quota: meshplane-domain-quota", "requests.storage"] {
        assert!(storage.message.contains(needle), "StorageReady does not name {needle}: {}", storage.message);
    }
    let ready = product_condition(&p, "Ready");
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "QuotaExceeded"));
    assert_eq!(product_condition(&p, "AccessReady").status, "True");
    for object in ["role/hoard-reader", "serviceaccount/hoard-pipeline", "configmap/hoard-descriptor"] {
        kubectl(&["get", object, "-n", &ns]);
    }
    // Too many pods: the Deployment's pods are refused by the quota.
    apply(&product_manifest(&ns, "busy", "  pipelines: [{name: run, image: busybox, mode: Continuous, replicas: 3}]\n"));
    let p = wait_until("busy to report its pods refused", Duration::from_secs(60), || async {
        let p = Api::<DataProduct>::namespaced(client.clone(), &ns).get("busy").await.ok()?;
        let c = p.status.as_ref()?.conditions.iter().find(|c| c.type_ == "PipelinesReady")?.clone();
        (c.reason == "QuotaExceeded").then_some(p)
    })
    .await;
    let pipelines = product_condition(&p, "PipelinesReady");
    for needle in ["pipeline `run`", "exceeded quota: meshplane-domain-quota", "limits.cpu"] {
        assert!(pipelines.message.contains(needle), "PipelinesReady does not name {needle}: {}", pipelines.message);
    }
    // A product over the domain's product count is refused by the API server.
    apply(&product_manifest(&ns, "fourth", "  owner: x\n"));
    let out = kubectl_stdin(&["apply", "-f", "-"], &product_manifest(&ns, "fifth", "  owner: x\n"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("exceeded quota: meshplane-domain-quota"), "{stderr}");

    // Nothing else broke: the neighbour, the domain, another domain.
    let p = Api::<DataProduct>::namespaced(client.clone(), &ns).get("fits").await.unwrap();
    assert_eq!(product_condition(&p, "Ready").status, "True");
    wait_product(&client, &ns, "fourth", "Ready", "True").await;
    let d = Api::<DataDomain>::all(client.clone()).get(&tight).await.unwrap();
    assert_eq!(meshplane::api::conditions::status_of(&d.status.unwrap().conditions, "Ready"), Some("True"));
    apply(&product_manifest(&other, "elsewhere", "  storage: [{name: data, kind: Volume, size: 10Gi}]\n"));
    wait_product(&client, &other, "elsewhere", "Ready", "True").await;

    // Room made: busy fits once fits' pipeline is gone.
    apply(&product_manifest(&ns, "fits", "  storage: [{name: data, kind: Volume, size: 1Gi}]\n"));
    apply(&product_manifest(&ns, "busy", "  pipelines: [{name: run, image: busybox, mode: Continuous, replicas: 2}]\n"));
    wait_product(&client, &ns, "busy", "Ready", "True").await;
    println!("StorageReady: {}\nPipelinesReady: {}", storage.message, pipelines.message);
    run.cleanup().await;
    assert!(operator.terminate().await.success());
    assert_no_panic(&[identity]);
}
