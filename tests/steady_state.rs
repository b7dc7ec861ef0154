//! At steady state meshplane sends no mutating request: with 20 Ready
//! domains and a resync every 2 seconds, the API server's own request
//! counters show no write to anything meshplane manages over 30 seconds.
//!
//! Runs alone (its own test binary, after the others), since it reads
//! cluster-wide counters.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use kube::api::{Api, ListParams};
use meshplane::api::DataDomain;
use meshplane::api::conditions::status_of;
use support::*;

const DOMAINS: usize = 20;
const WINDOW: Duration = Duration::from_secs(30);
const MANAGED: [&str; 7] = [
    "namespaces",
    "rolebindings",
    "resourcequotas",
    "limitranges",
    "networkpolicies",
    "datadomains",
    "dataproducts",
];

/// apiserver_request_total series of non-read verbs on the managed
/// resources, as `labels -> count`.
fn mutating_requests() -> BTreeMap<String, f64> {
    let metrics = kubectl(&["get", "--raw", "/metrics"]);
    let mut out = BTreeMap::new();
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        let Some((labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let get = |key: &str| {
            let pat = format!("{key}=\"");
            labels
                .split(&pat)
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or_default()
                .to_string()
        };
        let (verb, resource, subresource) = (get("verb"), get("resource"), get("subresource"));
        let read = matches!(verb.as_str(), "GET" | "LIST" | "WATCH");
        // The controller-manager, not meshplane, writes a quota's usage.
        let quota_usage = resource == "resourcequotas" && subresource == "status";
        if read
            || quota_usage
            || !get("dry_run").is_empty()
            || !MANAGED.contains(&resource.as_str())
        {
            continue;
        }
        out.insert(labels.to_string(), value.parse().unwrap_or(0.0));
    }
    out
}

fn operator_metric(addr: &str, name: &str) -> f64 {
    let (_, body) = http_get(addr, "/metrics").expect("operator metrics");
    body.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn resyncs_at_steady_state_send_no_mutating_request() {
    let addr = operator();
    let client = cluster().await;
    let prefix = unique("steady");
    for i in 0..DOMAINS {
        apply(&format!(
            "apiVersion: meshplane.dev/v1alpha1\nkind: DataDomain\nmetadata:\n  name: {prefix}-{i}\nspec:\n  \
             owners: [{{kind: User, name: owner-{i}}}]\n  viewers: [{{kind: Group, name: readers}}]\n  \
             network: {{egressCIDRs: [10.20.0.0/16]}}\n  quota: {{cpu: 1500m, memory: 3Gi}}\n"
        ));
    }
    let domains = Api::<DataDomain>::all(client.clone());
    wait_until(
        "20 domains to be Ready",
        Duration::from_secs(120),
        || async {
            let list = domains.list(&ListParams::default()).await.ok()?;
            let ready = list
                .items
                .iter()
                .filter(|d| {
                    d.metadata
                        .name
                        .as_deref()
                        .is_some_and(|n| n.starts_with(&prefix))
                })
                .filter(|d| {
                    d.status
                        .as_ref()
                        .is_some_and(|s| status_of(&s.conditions, "Ready") == Some("True"))
                })
                .count();
            (ready == DOMAINS).then_some(())
        },
    )
    .await;
    // Earlier tests' deletions must have finished: a namespace being emptied
    // by the controller-manager is a stream of writes that are not ours.
    wait_until(
        "no namespace to be terminating",
        Duration::from_secs(120),
        || async {
            let phases = kubectl(&[
                "get",
                "namespaces",
                "-o",
                "jsonpath={.items[*].status.phase}",
            ]);
            let deleting = kubectl(&[
                "get",
                "datadomains",
                "-o",
                "jsonpath={.items[*].metadata.deletionTimestamp}",
            ]);
            (!phases.contains("Terminating") && deleting.trim().is_empty()).then_some(())
        },
    )
    .await;

    let before = mutating_requests();
    let passes_before = operator_metric(&addr, "meshplane_reconciliations_total");
    // The measurement window: every domain is resynced ~15 times in it.
    tokio::time::sleep(WINDOW).await;
    let after = mutating_requests();
    let passes = operator_metric(&addr, "meshplane_reconciliations_total") - passes_before;

    let changed: Vec<String> = after
        .iter()
        .filter_map(|(labels, count)| {
            let delta = count - before.get(labels).copied().unwrap_or(0.0);
            (delta > 0.0).then(|| format!("+{delta} {labels}"))
        })
        .collect();
    println!(
        "steady state: {passes} reconcile passes in {WINDOW:?}, {} mutating requests on managed resources",
        changed.len()
    );
    let expected_passes = (DOMAINS as f64) * (WINDOW.as_secs_f64() / 2.0) / 2.0;
    assert!(
        passes >= expected_passes,
        "only {passes} reconcile passes in the window; expected at least {expected_passes}"
    );
    assert!(
        changed.is_empty(),
        "mutating requests at steady state:\n{}",
        changed.join("\n")
    );
}
