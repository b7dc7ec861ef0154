//! High availability: several meshplane processes against one cluster elect
//! one leader on a Lease; only it reconciles; when it is killed (SIGKILL, no
//! chance to release) a standby takes over and reconciles a new product
//! within 20 seconds. Runs alone, after the other suites: it kills the
//! shared test operator.

mod support;

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use support::*;

fn metric(addr: &str, name: &str) -> Option<f64> {
    let (_, body) = http_get(addr, "/metrics")?;
    body.lines().filter(|l| l.starts_with(name)).filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok()).reduce(|a, b| a + b)
}

fn holder() -> String {
    kubectl(&["get", "lease", "meshplane", "-n", "meshplane-system", "-o", "jsonpath={.spec.holderIdentity}"])
}

struct Replica {
    identity: String,
    addr: String,
    child: Child,
}

fn spawn_replica(identity: &str) -> Replica {
    let kubeconfig = cluster_dir().join("meshplane.kubeconfig");
    let (child, addr) = spawn_meshplane(&kubeconfig, identity, &["--catalog-addr", "127.0.0.1:0", "--identity", identity], &[]);
    Replica { identity: identity.to_string(), addr, child }
}

#[tokio::test]
async fn one_leader_reconciles_and_a_standby_takes_over_within_20_seconds() {
    let shared = operator();
    let client = cluster().await;
    let domain = unique("ha");
    let ns = ready_domain(&client, &domain, "").await;
    let leader_identity = holder();
    assert!(!leader_identity.is_empty(), "the shared operator holds the lease");
    assert_eq!(metric(&shared, "meshplane_leader"), Some(1.0));

    let mut replicas = vec![spawn_replica(&unique("ha-a")), spawn_replica(&unique("ha-b"))];
    for r in &replicas {
        wait_until("the standby to sync its caches", Duration::from_secs(60), || async {
            http_get(&r.addr, "/readyz").is_some_and(|(code, _)| code == 200).then_some(())
        })
        .await;
    }
    // Standbys watch but never reconcile.
    apply(&format!(
        "apiVersion: meshplane.dev/v1alpha1\nkind: DataProduct\nmetadata: {{name: before, namespace: {ns}}}\nspec: {{owner: a}}\n"
    ));
    wait_product(&client, &ns, "before", "Ready", "True").await;
    for r in &replicas {
        assert_eq!(metric(&r.addr, "meshplane_leader"), Some(0.0), "{} claims to lead", r.identity);
        assert_eq!(metric(&r.addr, "meshplane_reconciliations_total").unwrap_or(0.0), 0.0, "{} reconciled as a standby", r.identity);
    }
    assert_eq!(holder(), leader_identity);

    // Kill the leader without a chance to release the Lease.
    let pid = std::fs::read_to_string(cluster_dir().join("pids/meshplane.pid")).unwrap();
    let killed = Instant::now();
    assert!(Command::new("kill").args(["-9", pid.trim()]).status().unwrap().success());
    apply(&format!(
        "apiVersion: meshplane.dev/v1alpha1\nkind: DataProduct\nmetadata: {{name: after, namespace: {ns}}}\nspec: {{owner: b}}\n"
    ));
    let api = kube::Api::<meshplane::api::DataProduct>::namespaced(client.clone(), &ns);
    wait_until("a standby to take over and reconcile the new product", Duration::from_secs(20), || async {
        let p = api.get_opt("after").await.ok()??;
        let ready = p.status?.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True");
        ready.then_some(())
    })
    .await;
    let took = killed.elapsed();
    let new_leader = holder();
    let leader = replicas.iter().find(|r| r.identity == new_leader).expect("a standby holds the lease");
    assert_eq!(metric(&leader.addr, "meshplane_leader"), Some(1.0));
    let leaders = replicas.iter().filter(|r| metric(&r.addr, "meshplane_leader") == Some(1.0)).count();
    assert_eq!(leaders, 1, "exactly one leader");
    println!("failover: {new_leader} reconciled a new product {took:?} after the leader was killed");

    // SIGTERM: the leader releases the Lease and exits cleanly.
    for r in &mut replicas {
        let _ = Command::new("kill").args(["-TERM", &r.child.id().to_string()]).status();
    }
    for r in &mut replicas {
        let status = r.child.wait().unwrap();
        assert!(status.success(), "{} exited with {status}", r.identity);
    }
    assert_eq!(holder(), "", "the leader released the Lease on SIGTERM");
}

/// SIGTERM stops meshplane even when it never reached the API server (its
/// caches never synced): a rollout or `make cluster-down` must not wait on a
/// process that has nothing to finish.
#[test]
fn sigterm_stops_a_process_that_never_reached_the_api_server() {
    // A port nothing listens on: every request is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = cluster_dir().join("unreachable");
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: gone\n  cluster: {{server: 'https://127.0.0.1:{port}', insecure-skip-tls-verify: true}}\n\
             users:\n- name: nobody\n  user: {{token: none}}\ncontexts:\n- name: gone\n  context: {{cluster: gone, user: nobody}}\ncurrent-context: gone\n"
        ),
    )
    .unwrap();
    let (mut child, addr) = spawn_meshplane(&kubeconfig, "unreachable", &["--leader-election=false", "--catalog-addr", "127.0.0.1:0"], &[]);
    // Serving /healthz, and not ready (nothing synced).
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_get(&addr, "/healthz").is_none() {
        assert!(Instant::now() < deadline, "meshplane did not serve /healthz");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_ne!(http_get(&addr, "/readyz").map(|(code, _)| code), Some(200), "ready without an API server");
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let termed = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if termed.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("meshplane was still running 10 s after SIGTERM; see {}", cluster_dir().join("logs/unreachable.log").display());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    println!("stopped {:?} after SIGTERM ({status})", termed.elapsed());
}
