//! The local control plane is a real Kubernetes: versions, RBAC, scheduling
//! onto kwok nodes, Jobs and CronJobs, volume binding, namespace deletion,
//! garbage collection, and helm as a client.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::*;

fn pinned(var: &str) -> String {
    let out =
        Command::new("bash").arg("-c").arg(format!("source cluster/lib.sh && echo ${var}")).current_dir(repo_root()).output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn namespace(prefix: &str) -> String {
    let ns = unique(prefix);
    kubectl(&["create", "namespace", &ns]);
    ns
}

async fn wait_kubectl(what: &str, timeout: Duration, args: &[&str], expect: &str) {
    wait_until(what, timeout, || async {
        let out = kubectl_output(args);
        String::from_utf8_lossy(&out.stdout).trim().eq(expect).then_some(())
    })
    .await
}

#[tokio::test]
async fn versions_are_pinned_and_server_is_ready() {
    ensure_cluster();
    let version = pinned("KUBERNETES_VERSION");
    let out = kubectl(&["version", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["clientVersion"]["gitVersion"], version.as_str(), "{out}");
    assert_eq!(v["serverVersion"]["gitVersion"], version.as_str(), "{out}");
    assert_eq!(kubectl(&["get", "--raw", "/readyz"]).trim(), "ok");
}

/// The tests run on a control plane of their own, never the developer's
/// (`make dev` leaves examples/ and its GovernancePolicies in
/// `target/cluster`): another folder, another API server, and the scripts the
/// tests run (here the one writing the operator's kubeconfig) act on it too.
#[tokio::test]
async fn the_tests_run_on_a_control_plane_of_their_own() {
    ensure_cluster();
    let developers = repo_root().join("target/cluster");
    assert_ne!(cluster_dir(), developers, "the tests' cluster folder is the developer's");
    let server = |kubeconfig: &Path| {
        std::fs::read_to_string(kubeconfig).ok()?.lines().find_map(|l| l.trim().strip_prefix("server: ").map(str::to_string))
    };
    let ours = server(&kubeconfig_path()).expect("the tests' kubeconfig names its API server");
    if let Some(theirs) = server(&developers.join("kubeconfig")) {
        assert_ne!(ours, theirs, "the tests' API server is the developer's");
    }
    operator();
    let operators = server(&cluster_dir().join("meshplane.kubeconfig"));
    assert_eq!(operators.as_deref(), Some(ours.as_str()), "the tests' operator is not on the tests' API server");
}

#[tokio::test]
async fn rbac_is_enforced() {
    ensure_cluster();
    let ns = namespace("rbac");
    let user = unique("alice");
    let can = || {
        let out = kubectl_output(&["auth", "can-i", "create", "pods", "-n", &ns, "--as", &user]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(can(), "no");
    kubectl(&["create", "rolebinding", "alice-edit", "-n", &ns, "--clusterrole", "edit", "--user", &user]);
    assert_eq!(can(), "yes");
    // Elsewhere still no.
    let out = kubectl_output(&["auth", "can-i", "create", "pods", "-n", "kube-system", "--as", &user]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no");
}

#[tokio::test]
async fn jobs_and_cronjobs_complete_on_kwok_nodes() {
    ensure_cluster();
    let ns = namespace("jobs");
    kubectl(&["create", "job", "once", "-n", &ns, "--image", "busybox", "--", "true"]);
    kubectl(&["create", "cronjob", "nightly", "-n", &ns, "--image", "busybox", "--schedule", "0 3 * * *", "--", "true"]);
    kubectl(&["create", "job", "manual", "-n", &ns, "--from", "cronjob/nightly"]);
    for job in ["once", "manual"] {
        let target = format!("job/{job}");
        let out = kubectl(&["wait", "-n", &ns, "--for", "condition=Complete", &target, "--timeout", "60s"]);
        assert!(out.contains("condition met"), "{out}");
    }
    let nodes = kubectl(&["get", "pods", "-n", &ns, "-o", "jsonpath={.items[*].spec.nodeName}"]);
    let nodes: Vec<&str> = nodes.split_whitespace().collect();
    assert_eq!(nodes.len(), 2, "one pod per job: {nodes:?}");
    assert!(nodes.iter().all(|n| n.starts_with("kwok-node-")), "{nodes:?}");
}

#[tokio::test]
async fn claims_of_the_default_class_bind() {
    ensure_cluster();
    let ns = namespace("pvc");
    apply(&format!(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: data, namespace: {ns}}}\n\
         spec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 1Gi}}}}}}\n"
    ));
    wait_kubectl(
        "the claim to bind",
        Duration::from_secs(30),
        &["get", "pvc", "data", "-n", &ns, "-o", "jsonpath={.status.phase}"],
        "Bound",
    )
    .await;
    let class = kubectl(&["get", "pvc", "data", "-n", &ns, "-o", "jsonpath={.spec.storageClassName}"]);
    assert_eq!(class, "standard", "the default class is filled in by admission");
}

#[tokio::test]
async fn namespace_deletion_finishes_and_orphans_are_collected() {
    ensure_cluster();
    let ns = namespace("gc");
    kubectl(&["create", "job", "work", "-n", &ns, "--image", "busybox", "--", "true"]);
    kubectl(&["create", "configmap", "owner", "-n", &ns]);
    apply(&format!(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: data, namespace: {ns}}}\n\
         spec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 1Gi}}}}}}\n"
    ));
    // A dependent whose owner is deleted is garbage-collected.
    let uid = kubectl(&["get", "configmap", "owner", "-n", &ns, "-o", "jsonpath={.metadata.uid}"]);
    apply(&format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: dependent\n  namespace: {ns}\n  ownerReferences:\n  \
         - {{apiVersion: v1, kind: ConfigMap, name: owner, uid: {uid}}}\n"
    ));
    kubectl(&["delete", "configmap", "owner", "-n", &ns]);
    wait_kubectl(
        "the dependent to be collected",
        Duration::from_secs(30),
        &["get", "configmap", "-n", &ns, "-o", "jsonpath={.items[*].metadata.name}"],
        "kube-root-ca.crt",
    )
    .await;
    kubectl(&["delete", "namespace", &ns, "--wait=false"]);
    wait_until("the namespace to be gone", Duration::from_secs(60), || async {
        let out = kubectl_output(&["get", "namespace", &ns]);
        (!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("NotFound")).then_some(())
    })
    .await;
}

#[tokio::test]
async fn helm_renders_a_chart_the_server_accepts() {
    ensure_cluster();
    let helm = bin("helm");
    let out = Command::new(&helm).args(["version", "--short"]).output().unwrap();
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(version.starts_with(&pinned("HELM_VERSION")), "helm version: {version}");

    let chart = std::env::temp_dir().join(unique("chart"));
    std::fs::create_dir_all(chart.join("templates")).unwrap();
    std::fs::write(chart.join("Chart.yaml"), "apiVersion: v2\nname: probe\nversion: 0.1.0\nkubeVersion: \">=1.34.0-0\"\n").unwrap();
    std::fs::write(chart.join("values.yaml"), "greeting: hello\n").unwrap();
    std::fs::write(
        chart.join("templates/configmap.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\n  namespace: default\n\
         data:\n  greeting: {{ .Values.greeting | quote }}\n  kube: {{ .Capabilities.KubeVersion.Version | quote }}\n",
    )
    .unwrap();
    let out = Command::new(&helm).args(["template", "probe", chart.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "helm template: {}", String::from_utf8_lossy(&out.stderr));
    let rendered = String::from_utf8(out.stdout).unwrap();
    // helm's default capabilities follow the pinned release (set at build time).
    let kubernetes = pinned("KUBERNETES_VERSION");
    let minor = kubernetes.split('.').nth(1).unwrap();
    assert!(rendered.contains(&format!("kube: \"v1.{minor}.0\"")), "{rendered}");
    let out = kubectl_stdin(&["apply", "--server-side", "--dry-run=server", "-f", "-"], &rendered);
    assert!(out.status.success(), "dry run: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("serverside-applied (server dry run)"));
    std::fs::remove_dir_all(chart).ok();
}
