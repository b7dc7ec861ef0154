//! The install paths against the real API server: the Helm chart and the
//! kustomize base are accepted and produce the same objects; helm installs;
//! a mistyped value fails; meshplane's RBAC keeps its least-privilege
//! properties (checked on `kubectl auth can-i --list`, kept as a snapshot).

mod support;

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value;
use support::*;

fn helm(args: &[&str]) -> std::process::Output {
    Command::new(bin("helm")).args(args).env("KUBECONFIG", kubeconfig_path()).current_dir(repo_root()).output().unwrap()
}

fn documents(yaml: &str) -> Vec<Value> {
    yaml.split("\n---")
        .filter(|d| d.lines().any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')))
        .map(|d| serde_saphyr::from_str::<Value>(d).unwrap_or_else(|e| panic!("{e}\n{d}")))
        .filter(|v| !v.is_null())
        .collect()
}

/// Objects by kind/namespace/name, without labels and annotations (the
/// chart adds Helm's own).
fn by_identity(docs: Vec<Value>) -> BTreeMap<String, Value> {
    docs.into_iter()
        .map(|mut d| {
            let key = format!(
                "{}/{}/{}",
                d["kind"].as_str().unwrap_or_default(),
                d["metadata"]["namespace"].as_str().unwrap_or_default(),
                d["metadata"]["name"].as_str().unwrap_or_default()
            );
            if let Some(meta) = d.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.remove("labels");
                meta.remove("annotations");
            }
            (key, d)
        })
        .collect()
}

#[test]
fn chart_and_kustomize_produce_the_same_objects_and_the_server_accepts_both() {
    ensure_cluster();
    let out = helm(&["lint", "charts/meshplane"]);
    assert!(out.status.success(), "helm lint: {}", String::from_utf8_lossy(&out.stdout));

    let out = helm(&["template", "meshplane", "charts/meshplane", "--namespace", "meshplane-system"]);
    assert!(out.status.success(), "helm template: {}", String::from_utf8_lossy(&out.stderr));
    let chart = String::from_utf8(out.stdout).unwrap();
    let kustomize = kubectl(&["kustomize", repo_root().join("deploy/default").to_str().unwrap()]);
    for (what, manifests) in [("chart", &chart), ("kustomize", &kustomize)] {
        let out = kubectl_stdin(&["apply", "--server-side", "--force-conflicts", "--dry-run=server", "-f", "-"], manifests);
        assert!(out.status.success(), "{what} refused: {}", String::from_utf8_lossy(&out.stderr));
    }

    let chart = by_identity(documents(&chart));
    let mut kustomize = by_identity(documents(&kustomize));
    // The chart installs into the release namespace; it does not create it.
    kustomize.retain(|k, _| !k.starts_with("Namespace/"));
    let only_chart: Vec<_> = chart.keys().filter(|k| !kustomize.contains_key(*k)).collect();
    let only_kustomize: Vec<_> = kustomize.keys().filter(|k| !chart.contains_key(*k)).collect();
    assert!(only_chart.is_empty() && only_kustomize.is_empty(), "only in the chart: {only_chart:?}; only in kustomize: {only_kustomize:?}");
    for (key, object) in &chart {
        assert_eq!(object, &kustomize[key], "{key} differs between the chart and kustomize");
    }
    println!("chart and kustomize: {} identical objects", chart.len());
}

#[test]
fn a_mistyped_value_fails_and_crds_are_kept_on_uninstall() {
    ensure_cluster();
    let out = helm(&["template", "meshplane", "charts/meshplane", "--set", "replicas=two"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("values don't meet the specifications of the schema") && stderr.contains("replicas"), "{stderr}");
    let out = helm(&["template", "meshplane", "charts/meshplane", "--set", "logFormat=xml"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("logFormat"));

    let out = helm(&["template", "meshplane", "charts/meshplane"]);
    let crds: Vec<Value> =
        documents(&String::from_utf8(out.stdout).unwrap()).into_iter().filter(|d| d["kind"] == "CustomResourceDefinition").collect();
    assert_eq!(crds.len(), meshplane::crds::all().len());
    assert!(crds.iter().all(|c| c["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"));
    // The chart's CRDs are exactly `meshplane crds`.
    let generated = Command::new(env!("CARGO_BIN_EXE_meshplane")).arg("crds").output().unwrap();
    let committed = std::fs::read_to_string(repo_root().join("charts/meshplane/files/crds.yaml")).unwrap();
    assert_eq!(String::from_utf8(generated.stdout).unwrap(), committed, "charts/meshplane/files/crds.yaml is stale: run make crds");
}

#[test]
fn helm_installs_into_the_local_control_plane() {
    operator();
    // The tests' own install (deploy/base) holds the same objects: Helm takes
    // them over, and leaves them in place afterwards.
    let out = helm(&[
        "upgrade",
        "--install",
        "meshplane",
        "charts/meshplane",
        "--namespace",
        "meshplane-system",
        "--take-ownership",
        "--wait",
        "--timeout",
        "120s",
    ]);
    assert!(out.status.success(), "helm install: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let status = helm(&["status", "meshplane", "--namespace", "meshplane-system", "-o", "json"]);
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["info"]["status"], "deployed");
    let ready = kubectl(&["get", "deployment", "meshplane", "-n", "meshplane-system", "-o", "jsonpath={.status.readyReplicas}"]);
    assert_eq!(ready, "2", "both replicas are scheduled and ready (kwok runs the pods)");
    let pod = kubectl(&["get", "pods", "-n", "meshplane-system", "-l", "app.kubernetes.io/name=meshplane", "-o", "name"]);
    assert_eq!(pod.lines().count(), 2, "the pods were admitted under the namespace's Pod Security `restricted`: {pod}");
}

#[test]
fn meshplane_rbac_is_least_privilege() {
    ensure_cluster();
    kubectl(&["apply", "--server-side", "--force-conflicts", "-k", repo_root().join("deploy/base").to_str().unwrap()]);
    let list = kubectl(&["auth", "can-i", "--list", "--as", "system:serviceaccount:meshplane-system:meshplane", "-n", "some-tenant"]);
    let snapshot = repo_root().join("tests/fixtures/rbac-can-i-list.txt");
    if std::env::var_os("MESHPLANE_UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&snapshot, &list).unwrap();
    }
    let expected = std::fs::read_to_string(&snapshot).unwrap_or_default();
    assert_eq!(list, expected, "meshplane's effective rights changed; review, then MESHPLANE_UPDATE_SNAPSHOTS=1 to accept");

    let mut checks = 0;
    for line in list.lines().skip(1) {
        let columns: Vec<&str> = line.split_whitespace().collect();
        let resource = columns[0];
        let verbs = line.rsplit_once('[').map(|(_, v)| v.trim_end_matches(']')).unwrap_or_default();
        let is_url = resource.starts_with("[/");
        checks += 1;
        if is_url {
            continue;
        }
        assert!(!verbs.split_whitespace().any(|v| v == "*" || v == "escalate" || v == "impersonate"), "{line}");
        assert!(!resource.contains('*'), "{line}");
        if resource == "secrets" {
            assert_eq!(verbs.trim(), "get", "no list or watch on Secrets: {line}");
        }
        if verbs.split_whitespace().any(|v| v == "bind") {
            assert!(resource == "clusterroles.rbac.authorization.k8s.io" && line.contains("meshplane-domain-"), "{line}");
        }
    }
    // Leases only in meshplane's own namespace.
    assert!(!list.contains("leases.coordination.k8s.io"), "a Lease right outside the platform namespace");
    let own = kubectl(&[
        "auth",
        "can-i",
        "update",
        "leases",
        "-n",
        "meshplane-system",
        "--as",
        "system:serviceaccount:meshplane-system:meshplane",
    ]);
    assert_eq!(own.trim(), "yes");
    println!("RBAC: {checks} rules checked");
}

#[tokio::test]
async fn the_dashboard_and_alerts_use_metrics_the_operator_serves() {
    let addr = operator();
    let client = cluster().await;
    // Something to reconcile and count, once this replica leads.
    ready_domain(&client, &unique("metrics"), "").await;
    let policy = unique("metrics");
    apply(&format!(
        "apiVersion: meshplane.dev/v1alpha1\nkind: GovernancePolicy\nmetadata: {{name: {policy}}}\nspec:\n  \
         enforcement: Audit\n  domainSelector: {{matchLabels: {{metrics-test: {policy}}}}}\n  rules: {{requireOwner: true}}\n"
    ));
    let body = wait_until("the operator to have applied something", std::time::Duration::from_secs(60), || async {
        let (code, body) = http_get(&addr, "/metrics")?;
        let seen = ["meshplane_child_applies_total", "meshplane_objects{", &format!("meshplane_policy_violations{{policy=\"{policy}\"}}")]
            .iter()
            .all(|s| body.contains(s));
        (code == 200 && seen).then_some(body)
    })
    .await;
    let out =
        helm(&["template", "meshplane", "charts/meshplane", "--set", "prometheusRule.enabled=true", "--set", "dashboards.enabled=true"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rendered = String::from_utf8(out.stdout).unwrap();
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(repo_root().join("charts/meshplane/dashboards/meshplane.json")).unwrap()).unwrap();
    let names: std::collections::BTreeSet<String> = regex::Regex::new(r"meshplane_[a-z_]+")
        .unwrap()
        .find_iter(&format!("{rendered}{dashboard}"))
        .map(|m| m.as_str().to_string())
        .filter(|n| !n.ends_with('_') && n != "meshplane_dashboard")
        .collect();
    assert!(names.len() >= 6, "{names:?}");
    for name in &names {
        let base = name.trim_end_matches("_bucket");
        assert!(body.contains(&format!("# TYPE {}", base.trim_end_matches("_total"))), "{name} is not served:\n{body}");
    }
    // Every metric line parses as Prometheus text, and no label carries an object's name.
    for line in body.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (series, value) = line.rsplit_once(' ').unwrap();
        assert!(value.parse::<f64>().is_ok(), "{line}");
        assert!(!series.contains("name=") && !series.contains("namespace="), "{line}");
    }
}
