//! Drift and wake-ups, with the operator in its shipped configuration (a
//! resync every 5 minutes): every kind of child meshplane creates is put
//! back by the watch when someone deletes or edits it, an entry added by
//! hand to a list that grants access is removed with a Warning naming the
//! writer, and a change to one object reaches every object that shows it.
//! Each reaction is timed and printed; the deadline is far below the resync,
//! so only a watch can meet it.

mod support;

use std::time::{Duration, Instant};

use kube::Api;
use meshplane::api::DataProduct;
use meshplane::api::conditions::status_of;
use support::*;

/// What a reaction must take at most. The resync is 5 minutes: anything
/// under this came from a watch event.
const DEADLINE: Duration = Duration::from_secs(2);

/// One child of a domain or product, and a hand edit of a field meshplane owns.
struct Child {
    resource: &'static str,
    namespace: String,
    name: String,
    /// A JSON merge patch that changes a field meshplane manages.
    edit: String,
    /// The field the edit changes, as a kubectl jsonpath: compared before the
    /// edit and after the revert.
    field: &'static str,
}

impl Child {
    /// The same child, to be changed with `..`.
    fn clone_named(&self) -> Child {
        Child {
            resource: self.resource,
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            edit: self.edit.clone(),
            field: self.field,
        }
    }
}

fn get(child: &Child, jsonpath: &str) -> Option<String> {
    let out = kubectl_output(&["get", child.resource, &child.name, "-n", &child.namespace, "-o", &format!("jsonpath={jsonpath}")]);
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).to_string())
}

/// Polls `check` until it holds, returning how long that took; panics after
/// the deadline, naming what was awaited.
async fn timed(what: &str, check: impl Fn() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if check() {
            return start.elapsed();
        }
        assert!(start.elapsed() < DEADLINE, "{what}: not within {DEADLINE:?} (the resync is 5 minutes; only a watch reacts this fast)");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn delete_and_await_restore(child: &Child) -> Duration {
    let before = get(child, "{.metadata.uid}").unwrap_or_else(|| panic!("{} {} exists", child.resource, child.name));
    kubectl(&["delete", child.resource, &child.name, "-n", &child.namespace, "--wait=false"]);
    timed(&format!("{} {} restored after deletion", child.resource, child.name), || {
        get(child, "{.metadata.uid}").is_some_and(|uid| !uid.is_empty() && uid != before)
    })
    .await
}

async fn edit_and_await_revert(child: &Child) -> Duration {
    // The restored object's fields may still be settling (a quota's usage):
    // read what meshplane keeps once it has stayed put.
    let before = get(child, child.field).unwrap();
    kubectl(&["patch", child.resource, &child.name, "-n", &child.namespace, "--type", "merge", "-p", &child.edit]);
    timed(&format!("{} {} reverted after an edit of {}", child.resource, child.name, child.field), || {
        get(child, child.field).is_some_and(|now| now == before)
    })
    .await
}

fn drift_metric(correction: &str) -> f64 {
    let (_, body) = http_get(&operator(), "/metrics").expect("operator metrics");
    body.lines()
        .filter(|l| l.starts_with("meshplane_drift_corrected_total{") && l.contains(&format!("correction=\"{correction}\"")))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Warning Events of `reason` whose message contains every one of `texts`
/// (a domain's Events are in `default`: a DataDomain has no namespace).
fn warnings(reason: &str, texts: &[&str]) -> usize {
    let out = kubectl(&[
        "get",
        "events",
        "-A",
        "--field-selector",
        &format!("reason={reason},type=Warning"),
        "-o",
        "jsonpath={range .items[*]}{.message}{\"\\n\"}{end}",
    ]);
    out.lines().filter(|l| texts.iter().all(|t| l.contains(t))).count()
}

const PRODUCT: &str = "drifted";

/// A producer domain with a product that makes every kind of product child,
/// granted to a consumer domain. Returns (producer namespace, consumer).
async fn provisioned(client: &kube::Client) -> (String, String) {
    let producer = unique("drift");
    let consumer = unique("drift-c");
    // No viewers: the viewers' binding has no subjects, which are meshplane's all the same.
    let spec = "  owners: [{kind: User, name: drift-owner}]\n  quota: {cpu: \"8\", memory: 16Gi, storage: 100Gi}\n  \
                network: {egressCIDRs: [10.20.0.0/16]}\n";
    let ns = ready_domain(client, &producer, spec).await;
    ready_domain(client, &consumer, "").await;
    apply(&format!(
        "apiVersion: meshplane.dev/v1alpha1\nkind: DataProduct\nmetadata: {{name: {PRODUCT}, namespace: {ns}}}\nspec:\n  \
         storage: [{{name: data, kind: Volume, size: 1Gi}}]\n  \
         pipelines: [{{name: batch, image: busybox, schedule: \"@daily\", mounts: [{{storage: data, path: /d}}]}}, \
         {{name: stream, image: busybox, mode: Continuous}}]\n  \
         outputPorts: [{{name: out, format: Parquet, storage: data}}]\n  access: {{consumers: [{{domain: {consumer}}}]}}\n"
    ));
    wait_product(client, &ns, PRODUCT, "Ready", "True").await;
    (ns, consumer)
}

#[tokio::test]
async fn every_kind_of_child_is_restored_after_deletion_and_reverted_after_edit() {
    operator();
    let client = cluster().await;
    let (ns, consumer) = provisioned(&client).await;
    let grant = format!("{PRODUCT}-read-d-{consumer}");
    let child = |resource: &'static str, name: &str, edit: &str, field: &'static str| Child {
        resource,
        namespace: ns.clone(),
        name: name.to_string(),
        edit: edit.to_string(),
        field,
    };
    let eve = r#"[{"kind":"User","apiGroup":"rbac.authorization.k8s.io","name":"eve"}]"#;
    let children = [
        child("rolebinding", "meshplane-domain-owners", &format!(r#"{{"subjects":{eve}}}"#), "{.subjects}"),
        child("resourcequota", "meshplane-domain-quota", r#"{"spec":{"hard":{"limits.cpu":"1000"}}}"#, "{.spec.hard.limits\\.cpu}"),
        child(
            "limitrange",
            "meshplane-domain-defaults",
            r#"{"spec":{"limits":[{"type":"Container","max":{"cpu":"64"}}]}}"#,
            "{.spec.limits}",
        ),
        child("networkpolicy", "meshplane-default-deny", r#"{"spec":{"ingress":[{}]}}"#, "{.spec.ingress}"),
        child("networkpolicy", "meshplane-allow-same-domain", r#"{"spec":{"ingress":[{}]}}"#, "{.spec.ingress}"),
        child(
            "serviceaccount",
            &format!("{PRODUCT}-pipeline"),
            r#"{"automountServiceAccountToken":true}"#,
            "{.automountServiceAccountToken}",
        ),
        child(
            "configmap",
            &format!("{PRODUCT}-descriptor"),
            r#"{"metadata":{"labels":{"meshplane.dev/product":"another"}}}"#,
            "{.metadata.labels}",
        ),
        child(
            "persistentvolumeclaim",
            &format!("{PRODUCT}-data"),
            r#"{"metadata":{"labels":{"meshplane.dev/product":"another"}}}"#,
            "{.metadata.labels}",
        ),
        child("cronjob", &format!("{PRODUCT}-batch"), r#"{"spec":{"schedule":"* * * * *"}}"#, "{.spec.schedule}"),
        child("deployment", &format!("{PRODUCT}-stream"), r#"{"spec":{"replicas":5}}"#, "{.spec.replicas}"),
        child(
            "role",
            &format!("{PRODUCT}-reader"),
            r#"{"rules":[{"apiGroups":[""],"resources":["secrets"],"verbs":["get"]}]}"#,
            "{.rules}",
        ),
        child("rolebinding", &grant, &format!(r#"{{"subjects":{eve}}}"#), "{.subjects}"),
        child("networkpolicy", &grant, r#"{"spec":{"ingress":[{}]}}"#, "{.spec.ingress}"),
    ];
    let (restored_before, reverted_before) = (drift_metric("restored"), drift_metric("reverted"));
    let mut report = Vec::new();
    for c in &children {
        let deleted = delete_and_await_restore(c).await;
        // The restored child's own status settles (a claim binds, a quota is
        // accounted) before it is edited.
        wait_product(&client, &ns, PRODUCT, "Ready", "True").await;
        let edited = edit_and_await_revert(c).await;
        report.push(format!(
            "  {:<22} {:<40} restored in {:>5} ms, reverted in {:>5} ms",
            c.resource,
            c.name,
            deleted.as_millis(),
            edited.as_millis()
        ));
    }
    println!("with the shipped resync (5m):\n{}", report.join("\n"));
    // Every correction is counted, by kind (the counter may lag the write by
    // a moment: the applier counts once the write returned).
    let n = children.len() as f64;
    wait_until("the drift counters to count every correction", Duration::from_secs(10), || async {
        (drift_metric("restored") - restored_before >= n && drift_metric("reverted") - reverted_before >= n).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_subject_added_by_hand_is_removed_with_a_warning_naming_the_writer() {
    operator();
    let client = cluster().await;
    // No viewers: meshplane applied the binding with no subjects, and owns that.
    let ns = ready_domain(&client, &unique("grantee"), "  owners: [{kind: User, name: an-owner}]\n").await;
    let binding = "meshplane-domain-viewers";
    assert_eq!(kubectl(&["get", "rolebinding", binding, "-n", &ns, "-o", "jsonpath={.subjects}"]), "");
    let revoked_before = drift_metric("revoked");
    let patch = r#"{"subjects":[{"kind":"User","apiGroup":"rbac.authorization.k8s.io","name":"mallory"}]}"#;
    let out = kubectl_output(&["patch", "rolebinding", binding, "-n", &ns, "--type", "merge", "-p", patch, "--field-manager", "widener"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let took = timed("the hand-added subject to be removed", || {
        kubectl(&["get", "rolebinding", binding, "-n", &ns, "-o", "jsonpath={.subjects}"]).trim().is_empty()
    })
    .await;
    println!("a subject added by hand to an empty binding was removed in {} ms", took.as_millis());
    assert!(!can_i(&["get", "dataproducts", "-n", &ns, "--as", "mallory"]), "mallory kept access");
    wait_until("a Warning naming the writer and the subject", DEADLINE, || async {
        (warnings("ForeignGrantRemoved", &[&ns, "\"widener\"", "mallory"]) > 0).then_some(())
    })
    .await;
    assert!(drift_metric("revoked") > revoked_before, "the revocation is counted");

    // A rule added to the default-deny policy (which has none) opens the
    // namespace: removed as well.
    let out = kubectl_output(&[
        "patch",
        "networkpolicy",
        "meshplane-default-deny",
        "-n",
        &ns,
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"ingress":[{}]}}"#,
        "--field-manager",
        "opener",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    timed("the hand-added ingress rule to be removed", || {
        kubectl(&["get", "networkpolicy", "meshplane-default-deny", "-n", &ns, "-o", "jsonpath={.spec.ingress}"]).trim().is_empty()
    })
    .await;
    wait_until("a Warning naming the policy's writer", DEADLINE, || async {
        (warnings("ForeignGrantRemoved", &[&ns, "\"opener\""]) > 0).then_some(())
    })
    .await;
}

/// Waits until the product's condition has the reason, within the deadline;
/// returns how long it took.
async fn reason_within(api: &Api<DataProduct>, name: &str, type_: &str, reason: &str, what: &str) -> Duration {
    let start = Instant::now();
    loop {
        if let Ok(p) = api.get(name).await {
            let conditions = p.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
            if conditions.iter().any(|c| c.type_ == type_ && c.reason == reason) {
                return start.elapsed();
            }
        }
        assert!(start.elapsed() < DEADLINE, "{what}: {name} {type_} not {reason} within {DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_change_to_one_object_reaches_every_object_that_shows_it() {
    operator();
    let client = cluster().await;
    let producer = unique("wake");
    let consumer = unique("wake-c");
    let producer_ns = ready_domain(&client, &producer, "").await;
    let consumer_ns = ready_domain(&client, &consumer, "").await;
    let consumers = Api::<DataProduct>::namespaced(client.clone(), &consumer_ns);
    let mut report = Vec::new();

    // A consumer that reads a product that does not exist yet.
    apply(&product_manifest(&consumer_ns, "reader", &format!("  inputs: [{{name: src, domain: {producer}, product: source}}]\n")));
    reason_within(&consumers, "reader", "InputsReady", "NotFound", "the missing input").await;

    // The producer is created, without granting the consumer.
    let source = |extra: &str| {
        product_manifest(
            &producer_ns,
            "source",
            &format!(
                "  storage: [{{name: data, kind: Volume, size: 1Gi}}]\n  outputPorts: [{{name: out, format: Parquet, storage: data}}]\n{extra}"
            ),
        )
    };
    apply(&source(""));
    let t = reason_within(&consumers, "reader", "InputsReady", "AccessDenied", "a producer created").await;
    report.push(format!("  producer created -> consumer AccessDenied: {} ms", t.as_millis()));

    // A grant given.
    apply(&source(&format!("  access: {{consumers: [{{domain: {consumer}}}]}}\n")));
    let t = reason_within(&consumers, "reader", "InputsReady", "Resolved", "a grant given").await;
    report.push(format!("  grant given -> consumer Resolved: {} ms", t.as_millis()));

    // The producer deprecated: the consumer's input says so.
    apply(&source(&format!("  lifecycle: Deprecated\n  sunset: \"2099-01-01\"\n  access: {{consumers: [{{domain: {consumer}}}]}}\n")));
    let start = Instant::now();
    wait_until("the consumer to see the deprecation", DEADLINE, || async {
        let p = consumers.get("reader").await.ok()?;
        p.status?.inputs.iter().any(|i| i.message.as_deref().is_some_and(|m| m.contains("Deprecated"))).then_some(())
    })
    .await;
    report.push(format!("  producer deprecated -> consumer's input says so: {} ms", start.elapsed().as_millis()));

    // The consumer domain's members change: the producer's grant follows.
    let grant = "source-read-d-".to_string() + &consumer;
    apply(&format!(
        "apiVersion: meshplane.dev/v1alpha1\nkind: DataDomain\nmetadata:\n  name: {consumer}\nspec:\n  members: [{{kind: User, name: new-analyst}}]\n"
    ));
    let t = timed("a consumer domain's new member to reach the producer's grant", || {
        kubectl(&["get", "rolebinding", &grant, "-n", &producer_ns, "-o", "jsonpath={.subjects[*].name}"]).contains("new-analyst")
    })
    .await;
    report.push(format!("  consumer domain's member added -> producer's grant: {} ms", t.as_millis()));

    // A grant revoked.
    apply(&source(""));
    let t = reason_within(&consumers, "reader", "InputsReady", "AccessDenied", "a grant revoked").await;
    report.push(format!("  grant revoked -> consumer AccessDenied: {} ms", t.as_millis()));

    // The producer deleted.
    kubectl(&["delete", "dataproduct", "source", "-n", &producer_ns, "--wait=false"]);
    let t = reason_within(&consumers, "reader", "InputsReady", "NotFound", "a producer deleted").await;
    report.push(format!("  producer deleted -> consumer NotFound: {} ms", t.as_millis()));

    // A policy that selects only this test's consumer domain by label.
    let label = unique("sel");
    kubectl(&["label", "datadomain", &consumer, &format!("drift-test={label}")]);
    let policy = unique("wake-policy");
    apply(&format!(
        "apiVersion: meshplane.dev/v1alpha1\nkind: GovernancePolicy\nmetadata:\n  name: {policy}\nspec:\n  enforcement: Audit\n  \
         domainSelector: {{matchLabels: {{drift-test: {label}}}}}\n  rules:\n    requireDescription: true\n"
    ));
    let t = reason_within(&consumers, "reader", "PolicyCompliant", "PolicyViolation", "a policy created").await;
    report.push(format!("  policy created -> product PolicyViolation: {} ms", t.as_millis()));
    kubectl(&["delete", "governancepolicy", &policy, "--wait=false"]);
    let start = Instant::now();
    wait_until("the policy's removal to reach the product", DEADLINE, || async {
        let p = consumers.get("reader").await.ok()?;
        (status_of(&p.status?.conditions, "PolicyCompliant") == Some("True")).then_some(())
    })
    .await;
    report.push(format!("  policy deleted -> product compliant: {} ms", start.elapsed().as_millis()));
    println!("with the shipped resync (5m):\n{}", report.join("\n"));
}

#[tokio::test]
async fn a_deleted_domain_namespace_is_made_again_with_everything_in_it() {
    operator();
    let client = cluster().await;
    let name = unique("renew");
    let ns = ready_domain(&client, &name, "  owners: [{kind: User, name: keeper}]\n").await;
    let before = kubectl(&["get", "namespace", &ns, "-o", "jsonpath={.metadata.uid}"]);
    kubectl(&["delete", "namespace", &ns, "--wait=false"]);
    wait_until("the namespace to be made again, with its bindings", Duration::from_secs(120), || async {
        let uid = kubectl_output(&["get", "namespace", &ns, "-o", "jsonpath={.metadata.uid}"]);
        let uid = String::from_utf8_lossy(&uid.stdout).to_string();
        if uid.is_empty() || uid == before {
            return None;
        }
        let subjects = kubectl_output(&["get", "rolebinding", "meshplane-domain-owners", "-n", &ns, "-o", "jsonpath={.subjects[*].name}"]);
        let quota = kubectl_output(&["get", "resourcequota", "meshplane-domain-quota", "-n", &ns, "-o", "name"]);
        (String::from_utf8_lossy(&subjects.stdout) == "keeper" && quota.status.success()).then_some(())
    })
    .await;
    let api = Api::<meshplane::api::DataDomain>::all(client.clone());
    wait_until("the domain to be Ready again", Duration::from_secs(60), || async {
        let d = api.get(&name).await.ok()?;
        (status_of(&d.status?.conditions, "Ready") == Some("True")).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_bucket_products_storage_objects_are_restored_and_reverted() {
    operator();
    let client = cluster().await;
    let fixture = repo_root().join("tests/fixtures/cosi-crds.yaml");
    kubectl(&["apply", "-f", fixture.to_str().unwrap()]);
    kubectl(&["wait", "--for=condition=Established", "crd/bucketclaims.objectstorage.k8s.io", "crd/bucketaccesses.objectstorage.k8s.io"]);
    let ns = ready_domain(&client, &unique("drift-b"), "").await;
    apply(&product_manifest(&ns, "lake", "  storage: [{name: files, kind: Bucket, storageClass: s3-standard}]\n"));
    let claim = Child {
        resource: "bucketclaims.objectstorage.k8s.io",
        namespace: ns.clone(),
        name: "lake-files".to_string(),
        edit: r#"{"spec":{"bucketClassName":"s3-cheap"}}"#.to_string(),
        field: "{.spec.bucketClassName}",
    };
    wait_until("the BucketClaim", Duration::from_secs(30), || async { get(&claim, "{.metadata.uid}").filter(|u| !u.is_empty()) }).await;
    let access = Child { resource: "bucketaccesses.objectstorage.k8s.io", field: "{.spec.credentialsSecretName}", ..claim.clone_named() };
    let mut report = Vec::new();
    for c in [&claim, &access] {
        let deleted = delete_and_await_restore(c).await;
        let edit = if c.resource == access.resource { r#"{"spec":{"credentialsSecretName":"elsewhere"}}"# } else { c.edit.as_str() };
        let edited = edit_and_await_revert(&Child { edit: edit.to_string(), ..c.clone_named() }).await;
        report.push(format!("  {:<36} restored in {:>5} ms, reverted in {:>5} ms", c.resource, deleted.as_millis(), edited.as_millis()));
    }
    println!("bucket storage objects, with the shipped resync (5m):\n{}", report.join("\n"));
}
