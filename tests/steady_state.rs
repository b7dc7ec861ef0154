//! meshplane's writes, as the API server's audit log records them (who
//! wrote which object): a new product costs one write per child plus its
//! status and finalizer; at steady state (20 domains, 50 products, a resync
//! every 2 seconds) meshplane writes nothing at all, and neither does it when
//! it restarts and reconciles everything again. The log also records
//! meshplane's GETs: it reads no child back while it provisions, resyncs or
//! restarts (its cache's digest of each child answers), and a child whose
//! digest differs is read once.
//!
//! Runs alone (its own test binary, after the others, one test at a time),
//! so that the operator's work is this suite's alone.

mod support;

use std::time::Duration;

use kube::api::{Api, ListParams};
use meshplane::api::conditions::status_of;
use meshplane::api::{DataDomain, DataProduct};
use support::*;

const DOMAINS: usize = 20;
const WINDOW: Duration = Duration::from_secs(30);
const PRODUCTS: usize = 50;

/// The tests of what a resync does run the operator with a resync every 2
/// seconds (the setting under test), so a window sees many of them.
fn resyncing_operator() -> String {
    operator_with(&["--resync", "2s"])
}

fn operator_metric(addr: &str, name: &str) -> f64 {
    let (_, body) = http_get(addr, "/metrics").expect("operator metrics");
    body.lines().filter(|l| l.starts_with(name)).filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok()).sum()
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

/// meshplane's writes after `mark`, once it has written nothing for 3 seconds.
async fn settled_writes(mark: u64) -> Vec<Write> {
    wait_until("meshplane to stop writing", Duration::from_secs(60), || async {
        let before = ours_since(mark).len();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let after = ours_since(mark);
        (after.len() == before).then_some(after)
    })
    .await
}

fn ours_since(mark: u64) -> Vec<Write> {
    writes_since(mark).into_iter().filter(|w| w.user == MESHPLANE_USER).collect()
}

/// Whether a write touched an object of the test whose names start with
/// `prefix`: its domains, their namespaces, anything in those namespaces,
/// and the domains' Events.
fn touches(write: &Write, prefix: &str) -> bool {
    let namespace = format!("dm-{prefix}");
    write.namespace.starts_with(&namespace) || write.name.starts_with(prefix) || write.name.starts_with(&namespace)
}

fn lines<'a>(writes: impl IntoIterator<Item = &'a Write>) -> String {
    writes.into_iter().map(|w| format!("  {w}")).collect::<Vec<_>>().join("\n")
}

#[tokio::test]
async fn a_new_product_costs_one_write_per_child_plus_status_and_finalizer() {
    operator();
    let client = cluster().await;
    let (producer, consumer, ns) = producer_and_consumer(&client, "writes").await;
    quiesce().await;
    // Let the domains' own passes finish before counting.
    settled_writes(audit_mark()).await;
    let mark = audit_mark();
    let name = "costed";
    apply(&format!(
        "apiVersion: meshplane.dev/v1alpha1\nkind: DataProduct\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  \
         storage: [{{name: data, kind: Volume, size: 1Gi}}]\n  \
         pipelines: [{{name: batch, image: busybox, schedule: \"@daily\", mounts: [{{storage: data, path: /d}}]}}, \
         {{name: stream, image: busybox, mode: Continuous}}]\n  \
         outputPorts: [{{name: out, format: Parquet, storage: data}}]\n  access: {{consumers: [{{domain: {consumer}}}]}}\n"
    ));
    let product = wait_product(&client, &ns, name, "Ready", "True").await;
    // Ready is reported once everything settled; stragglers are awaited.
    let writes = settled_writes(mark).await;
    let children = product.status.unwrap().resources.len();
    // The domains' own status (their product count) is theirs, not the
    // product's, and Events are reports: both counted apart.
    let (product_writes, rest): (Vec<&Write>, Vec<&Write>) = writes.iter().partition(|w| w.namespace == ns && w.resource != "events");
    let (events, rest): (Vec<&Write>, Vec<&Write>) = rest.into_iter().partition(|w| w.resource == "events");
    let (domains, elsewhere): (Vec<&Write>, Vec<&Write>) =
        rest.into_iter().partition(|w| w.resource == "datadomains" && (w.name == producer || w.name == consumer));
    println!(
        "a new product with {children} children cost meshplane {} writes, plus {} to its domains' status and {} Events:\n{}",
        product_writes.len(),
        domains.len(),
        events.len(),
        lines(writes.iter())
    );
    assert!(children >= 8, "the product has fewer children than expected: {children}");
    // Objects left by earlier suites may change on their own meanwhile.
    if !elsewhere.is_empty() {
        println!("meanwhile, to other tests' objects:\n{}", lines(elsewhere));
    }
    assert!(domains.len() <= 2, "more than one count write per domain:\n{}", lines(domains));
    assert!(product_writes.len() <= children + 2, "{} writes for {children} children:\n{}", product_writes.len(), lines(product_writes));
    // Each pass compared the children it had applied by the cache's digest
    // alone: none was read back.
    let reads: Vec<Write> = reads_since(mark).into_iter().filter(|r| r.namespace == ns).collect();
    assert!(reads.is_empty(), "children read back whole:\n{}", lines(&reads));
}

/// A child can hold everything meshplane renders and still not digest
/// alike: here meshplane's own field manager added a label beside its
/// applied fields (as an update, like `kubectl label --field-manager`). The
/// applier reads that child whole once, finds every field it wants, and
/// remembers it: the passes after read nothing and write nothing.
#[tokio::test]
async fn a_child_that_digests_differently_is_read_once_and_not_written() {
    resyncing_operator();
    let client = cluster().await;
    let (_, consumer, ns) = producer_and_consumer(&client, "digest").await;
    apply(&format!(
        "apiVersion: meshplane.dev/v1alpha1\nkind: DataProduct\nmetadata: {{name: read-once, namespace: {ns}}}\nspec:\n  \
         storage: [{{name: data, kind: Volume, size: 1Gi}}]\n  \
         pipelines: [{{name: batch, image: busybox, schedule: \"@daily\", mounts: [{{storage: data, path: /d}}]}}]\n  \
         access: {{consumers: [{{domain: {consumer}}}]}}\n"
    ));
    wait_product(&client, &ns, "read-once", "Ready", "True").await;
    settled_writes(audit_mark()).await;
    let mark = audit_mark();
    let account = meshplane::product::build::service_account_name("read-once");
    kubectl(&["label", "serviceaccount", "-n", &ns, &account, "added=by-hand", "--field-manager", "meshplane"]);
    let of_account = |r: &Write| r.namespace == ns && r.resource == "serviceaccounts" && r.name == account;
    wait_until("meshplane to read the relabelled ServiceAccount", Duration::from_secs(30), || async {
        reads_since(mark).iter().any(of_account).then_some(())
    })
    .await;
    // Five resyncs of the product (one every 2 s) after that read.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let reads: Vec<Write> = reads_since(mark).into_iter().filter(|r| r.namespace == ns).collect();
    let writes: Vec<Write> = ours_since(mark).into_iter().filter(|w| w.namespace == ns && w.resource != "events").collect();
    println!("after the label: {} reads and {} writes in {ns}", reads.len(), writes.len());
    assert_eq!(reads.len(), 1, "the child should be read once:\n{}", lines(&reads));
    assert!(reads.iter().all(of_account), "reads of other children:\n{}", lines(&reads));
    assert!(writes.is_empty(), "writes after the label:\n{}", lines(&writes));
}

#[tokio::test]
async fn resyncs_at_steady_state_send_no_mutating_request() {
    let addr = resyncing_operator();
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

    let mark = audit_mark();
    let passes_before = operator_metric(&addr, "meshplane_reconciliations_total");
    // The measurement window: every domain is resynced ~15 times in it.
    tokio::time::sleep(WINDOW).await;
    let passes = operator_metric(&addr, "meshplane_reconciliations_total") - passes_before;
    // Objects left by earlier suites may change on their own (a freshness
    // SLO lapsing): only this test's are steady by construction.
    let writes = ours_since(mark);
    let (ours, elsewhere): (Vec<&Write>, Vec<&Write>) = writes.iter().partition(|w| touches(w, &prefix));
    println!("steady state: {passes} reconcile passes in {WINDOW:?}, {} writes to this test's objects", ours.len());
    if !elsewhere.is_empty() {
        println!("meanwhile, to other tests' objects:\n{}", lines(elsewhere));
    }
    let expected_passes = (DOMAINS as f64) * (WINDOW.as_secs_f64() / 2.0) / 2.0;
    assert!(passes >= expected_passes, "only {passes} reconcile passes in the window; expected at least {expected_passes}");
    assert!(ours.is_empty(), "writes at steady state:\n{}", lines(ours));
    let reads: Vec<Write> = reads_since(mark).into_iter().filter(|r| touches(r, &prefix)).collect();
    assert!(reads.is_empty(), "reads at steady state:\n{}", lines(&reads));
}

/// A restart relists every kind and reconciles every object once. That must
/// write nothing: a pass that ran before the child caches had listed took
/// children it had not seen yet for missing ones and applied them again
/// (every domain's RoleBindings and NetworkPolicy, and their Events). Nor
/// may it read any child back: the restarted process knows each child only
/// by the digest of meshplane's fields its cache keeps, and every kind's
/// digest must match what meshplane renders (quotas, limit ranges and
/// egress rules included, whose quantities the API server may rewrite).
#[tokio::test]
async fn a_restart_reconciles_everything_and_writes_nothing() {
    operator();
    let client = cluster().await;
    let prefix = unique("restart");
    let mut namespaces = Vec::new();
    for i in 0..3 {
        let spec = "  viewers: [{kind: Group, name: readers}]\n  network: {egressCIDRs: [10.20.0.0/16]}\n  \
                    quota: {cpu: \"8\", memory: 16Gi, storage: 100Gi}\n";
        namespaces.push(ready_domain(&client, &format!("{prefix}-{i}"), spec).await);
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
    settled_writes(audit_mark()).await;
    let mark = audit_mark();
    let domains = Api::<DataDomain>::all(client.clone()).list_metadata(&ListParams::default()).await.unwrap().items.len();
    let products = Api::<DataProduct>::all(client.clone()).list_metadata(&ListParams::default()).await.unwrap().items.len();

    let addr = restart_operator();
    let objects = (domains + products) as f64;
    wait_until("the restarted operator to reconcile every domain and product", Duration::from_secs(120), || async {
        (operator_metric(&addr, "meshplane_reconciliations_total") >= objects).then_some(())
    })
    .await;
    let writes = settled_writes(mark).await;
    let (ours, elsewhere): (Vec<&Write>, Vec<&Write>) = writes.iter().partition(|w| touches(w, &prefix));
    println!("restart: {domains} domains and {products} products reconciled; {} writes to this test's objects", ours.len());
    if !elsewhere.is_empty() {
        println!("meanwhile, to other tests' objects:\n{}", lines(elsewhere));
    }
    assert!(ours.is_empty(), "writes after a restart:\n{}", lines(ours));
    let reads: Vec<Write> = reads_since(mark).into_iter().filter(|r| touches(r, &prefix)).collect();
    assert!(reads.is_empty(), "children read back after a restart:\n{}", lines(&reads));
}
