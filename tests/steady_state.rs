//! meshplane's writes, counted by the API server itself
//! (`apiserver_request_total`): a new product costs one write per child plus
//! its status and finalizer; at steady state (20 domains, 50 products, a
//! resync every 2 seconds) nothing meshplane manages is written at all, and
//! neither is it when the operator restarts and reconciles everything again.
//!
//! Runs alone (its own test binary, after the others, one test at a time),
//! since it reads cluster-wide counters.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use kube::api::{Api, ListParams};
use meshplane::api::conditions::status_of;
use meshplane::api::{DataDomain, DataProduct};
use support::*;

const DOMAINS: usize = 20;
const WINDOW: Duration = Duration::from_secs(30);
const PRODUCTS: usize = 50;
const MANAGED: [&str; 14] = [
    "namespaces",
    "rolebindings",
    "resourcequotas",
    "limitranges",
    "networkpolicies",
    "datadomains",
    "dataproducts",
    "serviceaccounts",
    "configmaps",
    "persistentvolumeclaims",
    "cronjobs",
    "deployments",
    "roles",
    "bucketclaims",
];

/// apiserver_request_total series of non-read verbs on the managed
/// resources, as `labels -> count`. Left out are the writes Kubernetes' own
/// controllers make to these objects: a quota's usage, a workload's status,
/// and the volume binder's update (PUT) of a claim. meshplane writes status
/// only of its own kinds and never PUTs.
fn mutating_requests() -> BTreeMap<String, f64> {
    let metrics = kubectl(&["get", "--raw", "/metrics"]);
    let mut out = BTreeMap::new();
    for line in metrics.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        let Some((labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let get = |key: &str| {
            let pat = format!("{key}=\"");
            labels.split(&pat).nth(1).and_then(|rest| rest.split('"').next()).unwrap_or_default().to_string()
        };
        let (verb, resource, subresource) = (get("verb"), get("resource"), get("subresource"));
        // A token request (the operator's kubeconfig) is no write to an object.
        let read = matches!(verb.as_str(), "GET" | "LIST" | "WATCH") || subresource == "token";
        let kubernetes_own = (subresource == "status" && resource != "datadomains" && resource != "dataproducts")
            || (resource == "persistentvolumeclaims" && verb == "PUT");
        if read || kubernetes_own || !get("dry_run").is_empty() || !MANAGED.contains(&resource.as_str()) {
            continue;
        }
        out.insert(labels.to_string(), value.parse().unwrap_or(0.0));
    }
    out
}

fn operator_metric(addr: &str, name: &str) -> f64 {
    let (_, body) = http_get(addr, "/metrics").expect("operator metrics");
    body.lines().filter(|l| l.starts_with(name)).filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok()).sum()
}

fn total(requests: &BTreeMap<String, f64>) -> f64 {
    requests.values().sum()
}

/// Earlier tests' deletions must have finished: a namespace being emptied by
/// the controller-manager is a stream of writes that are not meshplane's.
async fn quiesce() {
    wait_until("no namespace or domain to be terminating", Duration::from_secs(120), || async {
        let phases = kubectl(&["get", "namespaces", "-o", "jsonpath={.items[*].status.phase}"]);
        let deleting = kubectl(&["get", "datadomains,dataproducts", "-A", "-o", "jsonpath={.items[*].metadata.deletionTimestamp}"]);
        (!phases.contains("Terminating") && deleting.trim().is_empty()).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_new_product_costs_one_write_per_child_plus_status_and_finalizer() {
    operator();
    let client = cluster().await;
    let producer = unique("writes");
    let consumer = unique("writes-c");
    let ns = ready_domain(&client, &producer, "").await;
    ready_domain(&client, &consumer, "").await;
    quiesce().await;
    // The API server counts every client's writes. Earlier suites' products
    // may still change on their own (a freshness SLO lapsing), so a window in
    // which any other DataProduct or DataDomain changed is measured again.
    for attempt in 1..=3 {
        let name = format!("costed-{attempt}");
        let (writes, domain_writes, children, detail) = measure_new_product(&client, &ns, &name, &consumer).await;
        // The create request itself is the user's, not meshplane's.
        let meshplane_writes = writes - 1.0;
        println!(
            "a new product with {children} children cost {meshplane_writes} mutating requests (and {domain_writes} to its domains' status):\n{}",
            detail.join("\n")
        );
        assert!(children >= 8.0, "the product has fewer children than expected: {children}");
        if meshplane_writes <= children + 2.0 {
            return;
        }
        assert!(attempt < 3, "{meshplane_writes} writes for {children} children:\n{}", detail.join("\n"));
    }
}

/// The series that grew from `before` to `after`, as "+delta labels".
fn increases(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> Vec<String> {
    after
        .iter()
        .filter_map(|(labels, count)| {
            let delta = count - before.get(labels).copied().unwrap_or(0.0);
            (delta > 0.0).then(|| format!("+{delta} {labels}"))
        })
        .collect()
}

/// The mutating requests, once they have stopped changing for 3 seconds.
async fn settled_requests() -> BTreeMap<String, f64> {
    wait_until("the counters to settle", Duration::from_secs(30), || async {
        let a = total(&mutating_requests());
        tokio::time::sleep(Duration::from_secs(3)).await;
        let b = mutating_requests();
        (total(&b) == a).then_some(b)
    })
    .await
}

/// Other products' and domains' resource versions: what else changed.
fn others(except: &[&str]) -> BTreeMap<String, String> {
    let out = kubectl(&[
        "get",
        "datadomains,dataproducts",
        "-A",
        "-o",
        "jsonpath={range .items[*]}{.kind}/{.metadata.namespace}/{.metadata.name} {.metadata.resourceVersion}{\"\\n\"}{end}",
    ]);
    out.lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(k, _)| !except.iter().any(|e| k.ends_with(&format!("/{e}"))))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Creates a product and counts the API server's mutating requests until
/// everything settled: (writes, writes to domains, children, detail). When
/// another product or domain changed meanwhile, the writes are reported as
/// infinite, so the caller measures again.
async fn measure_new_product(client: &kube::Client, ns: &str, name: &str, consumer: &str) -> (f64, f64, f64, Vec<String>) {
    // Let the domains' own passes finish before counting.
    let before = settled_requests().await;
    // The new product and the two domains it touches (their product counts).
    let ours = [name, ns.trim_start_matches("dm-"), consumer];
    let unchanged = others(&ours);
    apply(&format!(
        "apiVersion: meshplane.dev/v1alpha1\nkind: DataProduct\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  \
         storage: [{{name: data, kind: Volume, size: 1Gi}}]\n  \
         pipelines: [{{name: batch, image: busybox, schedule: \"@daily\", mounts: [{{storage: data, path: /d}}]}}, \
         {{name: stream, image: busybox, mode: Continuous}}]\n  \
         outputPorts: [{{name: out, format: Parquet, storage: data}}]\n  access: {{consumers: [{{domain: {consumer}}}]}}\n"
    ));
    let product = wait_product(client, ns, name, "Ready", "True").await;
    // Ready is reported once everything settled; give stragglers a moment.
    let after = settled_requests().await;
    let children = product.status.unwrap().resources.len() as f64;
    // The domains' own status (their product count) is theirs, not the
    // product's: counted separately.
    let is_domain = |labels: &String| labels.contains("resource=\"datadomains\"");
    let delta = |labels: &String, count: &f64| count - before.get(labels).copied().unwrap_or(0.0);
    let writes: f64 = after.iter().filter(|(l, _)| !is_domain(l)).map(|(l, c)| delta(l, c)).sum();
    let domain_writes: f64 = after.iter().filter(|(l, _)| is_domain(l)).map(|(l, c)| delta(l, c)).sum();
    let detail = increases(&before, &after);
    let changed = others(&ours) != unchanged;
    let writes = if changed { f64::INFINITY } else { writes };
    if changed {
        println!("another product or domain changed while measuring {name}: measuring again");
    }
    (writes, domain_writes, children, detail)
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
             network: {{egressCIDRs: [10.20.0.0/16]}}\n  quota: {{cpu: \"8\", memory: 16Gi}}\n"
        ));
    }
    let domains = Api::<DataDomain>::all(client.clone());
    wait_until("20 domains to be Ready", Duration::from_secs(120), || async {
        let list = domains.list(&ListParams::default()).await.ok()?;
        let ready = list
            .items
            .iter()
            .filter(|d| d.metadata.name.as_deref().is_some_and(|n| n.starts_with(&prefix)))
            .filter(|d| d.status.as_ref().is_some_and(|s| status_of(&s.conditions, "Ready") == Some("True")))
            .count();
        (ready == DOMAINS).then_some(())
    })
    .await;
    for i in 0..PRODUCTS {
        let ns = format!("dm-{prefix}-{}", i % DOMAINS);
        let consumer = format!("{prefix}-{}", (i + 1) % DOMAINS);
        apply(&format!(
            "apiVersion: meshplane.dev/v1alpha1\nkind: DataProduct\nmetadata: {{name: p{i}, namespace: {ns}}}\nspec:\n  \
             storage: [{{name: data, kind: Volume, size: 1Gi}}]\n  \
             pipelines: [{{name: batch, image: busybox, schedule: \"@daily\", mounts: [{{storage: data, path: /d}}]}}]\n  \
             outputPorts: [{{name: out, format: Parquet, storage: data}}]\n  access: {{consumers: [{{domain: {consumer}}}]}}\n"
        ));
    }
    let products = Api::<DataProduct>::all(client.clone());
    wait_until("50 products to be Ready", Duration::from_secs(120), || async {
        let list = products.list(&ListParams::default()).await.ok()?;
        let ready = list
            .items
            .iter()
            .filter(|p| p.metadata.namespace.as_deref().is_some_and(|n| n.starts_with(&format!("dm-{prefix}"))))
            .filter(|p| p.status.as_ref().is_some_and(|s| status_of(&s.conditions, "Ready") == Some("True")))
            .count();
        (ready == PRODUCTS).then_some(())
    })
    .await;
    // A burst of new products updates a domain's count at most every 15 s:
    // steady means those writes have landed too.
    wait_until("every domain's product count to be current", Duration::from_secs(60), || async {
        let list = domains.list(&ListParams::default()).await.ok()?;
        let current = list.items.iter().filter(|d| d.metadata.name.as_deref().is_some_and(|n| n.starts_with(&prefix))).all(|d| {
            let i: usize = d.metadata.name.as_deref().unwrap().rsplit('-').next().unwrap().parse().unwrap();
            let expected = (0..PRODUCTS).filter(|p| p % DOMAINS == i).count() as i32;
            d.status.as_ref().and_then(|s| s.data_products) == Some(expected)
        });
        current.then_some(())
    })
    .await;
    quiesce().await;

    let before = mutating_requests();
    let passes_before = operator_metric(&addr, "meshplane_reconciliations_total");
    // The measurement window: every domain is resynced ~15 times in it.
    tokio::time::sleep(WINDOW).await;
    let after = mutating_requests();
    let passes = operator_metric(&addr, "meshplane_reconciliations_total") - passes_before;

    let changed = increases(&before, &after);
    println!("steady state: {passes} reconcile passes in {WINDOW:?}, {} mutating requests on managed resources", changed.len());
    let expected_passes = (DOMAINS as f64) * (WINDOW.as_secs_f64() / 2.0) / 2.0;
    assert!(passes >= expected_passes, "only {passes} reconcile passes in the window; expected at least {expected_passes}");
    assert!(changed.is_empty(), "mutating requests at steady state:\n{}", changed.join("\n"));
}

/// A restart relists every kind and reconciles every object once. That must
/// write nothing: a pass that ran before the child caches had listed took
/// children it had not seen yet for missing ones and applied them again
/// (every domain's RoleBindings and NetworkPolicy, and their Events).
#[tokio::test]
async fn a_restart_reconciles_everything_and_writes_nothing() {
    operator();
    let client = cluster().await;
    let prefix = unique("restart");
    let mut namespaces = Vec::new();
    for i in 0..3 {
        namespaces.push(ready_domain(&client, &format!("{prefix}-{i}"), "  viewers: [{kind: Group, name: readers}]\n").await);
    }
    for (i, ns) in namespaces.iter().enumerate() {
        apply(&format!(
            "apiVersion: meshplane.dev/v1alpha1\nkind: DataProduct\nmetadata: {{name: p{i}, namespace: {ns}}}\nspec:\n  \
             storage: [{{name: data, kind: Volume, size: 1Gi}}]\n  \
             pipelines: [{{name: batch, image: busybox, schedule: \"@daily\", mounts: [{{storage: data, path: /d}}]}}]\n  \
             outputPorts: [{{name: out, format: Parquet, storage: data}}]\n  access: {{consumers: [{{domain: {prefix}-{}}}]}}\n",
            (i + 1) % 3
        ));
    }
    for (i, ns) in namespaces.iter().enumerate() {
        wait_product(&client, ns, &format!("p{i}"), "Ready", "True").await;
    }
    quiesce().await;
    let before = settled_requests().await;
    let domains = Api::<DataDomain>::all(client.clone()).list_metadata(&ListParams::default()).await.unwrap().items.len();
    let products = Api::<DataProduct>::all(client.clone()).list_metadata(&ListParams::default()).await.unwrap().items.len();

    let addr = restart_operator();
    let objects = (domains + products) as f64;
    wait_until("the restarted operator to reconcile every domain and product", Duration::from_secs(120), || async {
        (operator_metric(&addr, "meshplane_reconciliations_total") >= objects).then_some(())
    })
    .await;
    let after = settled_requests().await;
    let changed = increases(&before, &after);
    println!("restart: {domains} domains and {products} products reconciled; {} mutating requests on managed resources", changed.len());
    assert!(changed.is_empty(), "mutating requests after a restart:\n{}", changed.join("\n"));
}
