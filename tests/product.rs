//! DataProduct against the real control plane, with kwok running pods:
//! provisioning, pipelines under Pod Security, runs and freshness, access
//! grants with real RBAC, lineage, data safety, buckets, drift, bad input.
//! Each test works in its own uniquely named domains.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::api::rbac::v1::Role;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use meshplane::api::DataProduct;
use support::*;

/// `kubectl auth can-i get` of a product's descriptor, as a pipeline
/// ServiceAccount of `consumer_ns` (with the groups a real token carries).
fn sa_can_read(producer_ns: &str, product: &str, consumer_ns: &str, sa: &str) -> bool {
    let user = format!("system:serviceaccount:{consumer_ns}:{sa}");
    let group = format!("system:serviceaccounts:{consumer_ns}");
    let resource = format!("configmaps/{product}-descriptor");
    can_i(&["get", &resource, "-n", producer_ns, "--as", &user, "--as-group", "system:serviceaccounts", "--as-group", &group])
}

#[tokio::test]
async fn a_product_gets_storage_pipelines_and_grants() {
    operator();
    let client = cluster().await;
    let producer = unique("shop");
    let consumer = unique("crm");
    let ns = ready_domain(&client, &producer, "  storageClasses: [standard]\n").await;
    let consumer_ns = ready_domain(&client, &consumer, "  members: [{kind: Group, name: crm-team}]\n").await;
    apply(&product_manifest(
        &ns,
        "orders",
        &format!(
            "  owner: shop-team\n  storage:\n  - {{name: data, kind: Volume, size: 1Gi}}\n  pipelines:\n  \
             - {{name: nightly, image: busybox, schedule: \"0 3 * * *\", mounts: [{{storage: data, path: /data}}]}}\n  \
             - {{name: stream, image: busybox, mode: Continuous, mounts: [{{storage: data, path: /data, readOnly: true}}]}}\n  \
             outputPorts:\n  - {{name: table, format: Parquet, storage: data, schema: [{{name: id, type: string}}]}}\n  \
             access: {{consumers: [{{domain: {consumer}}}]}}\n"
        ),
    ));
    let out = kubectl(&["wait", "--for=condition=Ready", "dp/orders", "-n", &ns, "--timeout=60s"]);
    assert!(out.contains("condition met"), "{out}");

    for object in [
        "persistentvolumeclaim/orders-data",
        "cronjob/orders-nightly",
        "deployment/orders-stream",
        "serviceaccount/orders-pipeline",
        "configmap/orders-descriptor",
        "role/orders-reader",
        &format!("rolebinding/orders-read-d-{consumer}"),
        &format!("networkpolicy/orders-read-d-{consumer}"),
    ] {
        let labels = kubectl(&["get", object, "-n", &ns, "-o", "jsonpath={.metadata.labels}{.metadata.ownerReferences[0].kind}"]);
        assert!(labels.contains("\"meshplane.dev/product\":\"orders\"") && labels.ends_with("DataProduct"), "{object}: {labels}");
    }
    let p = Api::<DataProduct>::namespaced(client.clone(), &ns).get("orders").await.unwrap();
    let status = p.status.clone().unwrap();
    assert_eq!(status.phase.as_deref(), Some("Ready"));
    assert_eq!(status.domain.as_deref(), Some(producer.as_str()));
    assert!(status.resources.iter().any(|r| r.kind == "CronJob" && r.name == "orders-nightly"));
    assert_eq!(product_condition(&p, "StorageReady").message, "claim orders-data is Bound");

    // The descriptor says what the product is and how to reach it.
    let descriptor = kubectl(&["get", "configmap", "orders-descriptor", "-n", &ns, "-o", "jsonpath={.data.descriptor\\.json}"]);
    let d: serde_json::Value = serde_json::from_str(&descriptor).unwrap();
    assert_eq!(d["owner"], "shop-team");
    assert_eq!(d["outputPorts"][0]["storage"]["objects"][0]["name"], "orders-data");
    assert_eq!(d["access"]["consumers"][0]["domain"], consumer.as_str());

    // The grant binds the consumer's pipelines and members, scoped by name.
    let rb = kubectl(&["get", "rolebinding", &format!("orders-read-d-{consumer}"), "-n", &ns, "-o", "jsonpath={.subjects[*].name}"]);
    assert!(rb.contains(&format!("system:serviceaccounts:{consumer_ns}")) && rb.contains("crm-team"), "{rb}");
    let role = Api::<Role>::namespaced(client.clone(), &ns).get("orders-reader").await.unwrap();
    assert!(role.rules.unwrap().iter().all(|r| r.resource_names.as_ref().is_some_and(|n| !n.is_empty())), "every rule names its objects");
    assert!(can_i(&["get", "configmaps/orders-descriptor", "-n", &ns, "--as", "x", "--as-group", "crm-team"]));
    assert!(!can_i(&["get", "configmaps/other", "-n", &ns, "--as", "x", "--as-group", "crm-team"]));
    assert!(!can_i(&["list", "configmaps", "-n", &ns, "--as", "x", "--as-group", "crm-team"]));

    // Pipeline pods run as the product's ServiceAccount with their volume.
    let pod = wait_until("the streaming pipeline's pod to run", Duration::from_secs(30), || async {
        let out = kubectl(&["get", "pods", "-n", &ns, "-l", "meshplane.dev/pipeline=stream", "-o", "json"]);
        let pods: serde_json::Value = serde_json::from_str(&out).ok()?;
        let pod = pods["items"].as_array()?.first()?.clone();
        (pod["status"]["phase"] == "Running").then_some(pod)
    })
    .await;
    assert_eq!(pod["spec"]["serviceAccountName"], "orders-pipeline");
    assert_eq!(pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"], "orders-data");
    let env = pod["spec"]["containers"][0]["env"].to_string();
    assert!(env.contains("MESHPLANE_STORAGE_DATA_PATH") && env.contains("/data"), "{env}");
}

#[tokio::test]
async fn pipelines_run_under_restricted_and_report_runs_and_freshness() {
    operator();
    let client = cluster().await;
    let domain = unique("runs");
    let ns = ready_domain(&client, &domain, "").await;
    // The namespace really enforces Pod Security restricted.
    let out = kubectl_stdin(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: rogue, namespace: {ns}}}\nspec:\n  containers: [{{name: c, image: busybox, securityContext: {{privileged: true}}}}]\n"
        ),
    );
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("violates PodSecurity \"restricted"), "{out:?}");

    apply(&product_manifest(
        &ns,
        "daily",
        "  pipelines:\n  - {name: load, image: busybox, schedule: \"0 0 1 1 *\"}\n  quality: {freshness: 20s}\n",
    ));
    let p = wait_product(&client, &ns, "daily", "Ready", "True").await;
    assert_eq!(product_condition(&p, "Fresh").reason, "NoSuccessfulRun");

    // A run triggered from the CronJob completes on a kwok node...
    kubectl(&["create", "job", "run-1", "-n", &ns, "--from=cronjob/daily-load"]);
    let out = kubectl(&["wait", "--for=condition=Complete", "job/run-1", "-n", &ns, "--timeout=60s"]);
    assert!(out.contains("condition met"), "{out}");
    let node = kubectl(&["get", "pods", "-n", &ns, "-l", "job-name=run-1", "-o", "jsonpath={.items[0].spec.nodeName}"]);
    assert!(node.starts_with("kwok-node-"), "{node}");
    // ... and the product reports it, and is fresh.
    let p = wait_product(&client, &ns, "daily", "Fresh", "True").await;
    let run = &p.status.as_ref().unwrap().pipelines[0];
    assert_eq!(run.last_result.as_deref(), Some("Succeeded"));
    assert!(run.last_successful_time.is_some() && run.last_schedule_time.is_some(), "{run:?}");

    // When the SLO lapses, Fresh turns False without any event.
    let p = wait_until("Fresh to lapse after 20s", Duration::from_secs(40), || async {
        let p = Api::<DataProduct>::namespaced(client.clone(), &ns).get("daily").await.ok()?;
        (product_condition(&p, "Fresh").status == "False").then_some(p)
    })
    .await;
    assert_eq!(product_condition(&p, "Fresh").reason, "Stale");
    // The next run makes it fresh again.
    kubectl(&["create", "job", "run-2", "-n", &ns, "--from=cronjob/daily-load"]);
    let p = wait_product(&client, &ns, "daily", "Fresh", "True").await;
    assert_eq!(product_condition(&p, "Fresh").reason, "WithinSLO");
}

#[tokio::test]
async fn access_follows_the_consumer_list_and_inputs_report_it() {
    operator();
    let client = cluster().await;
    let (a, b, x) = (unique("prod"), unique("cons"), unique("outsider"));
    let ns_a = ready_domain(&client, &a, "").await;
    let ns_b = ready_domain(&client, &b, "").await;
    let ns_x = ready_domain(&client, &x, "").await;
    let producer =
        |consumers: &str| product_manifest(&ns_a, "sales", &format!("  owner: sales-team\n  access: {{consumers: [{consumers}]}}\n"));
    apply(&producer(""));
    wait_product(&client, &ns_a, "sales", "Ready", "True").await;
    apply(&product_manifest(
        &ns_b,
        "forecast",
        &format!(
            "  inputs:\n  - {{name: sales, domain: {a}, product: sales}}\n  - {{name: ghost, domain: {a}, product: nothing-here}}\n  \
             pipelines: [{{name: fit, image: busybox, schedule: \"@daily\", inputs: [sales]}}]\n"
        ),
    ));

    // Nothing is granted implicitly.
    let p = wait_product(&client, &ns_b, "forecast", "InputsReady", "False").await;
    assert_eq!(product_condition(&p, "InputsReady").reason, "AccessDenied");
    let states: Vec<(String, String)> = p.status.unwrap().inputs.iter().map(|i| (i.name.clone(), i.state.clone())).collect();
    assert_eq!(states, [("sales".to_string(), "AccessDenied".to_string()), ("ghost".to_string(), "NotFound".to_string())]);
    assert!(!sa_can_read(&ns_a, "sales", &ns_b, "forecast-pipeline"));

    // Listing domain B grants its pipelines, and only them.
    apply(&producer(&format!("{{domain: {b}}}")));
    wait_until("B's pipeline to be granted", Duration::from_secs(10), || async {
        sa_can_read(&ns_a, "sales", &ns_b, "forecast-pipeline").then_some(())
    })
    .await;
    assert!(!sa_can_read(&ns_a, "sales", &ns_x, "anything-pipeline"), "an unlisted domain can read");
    let p = wait_until("the consumer's input to be Granted", Duration::from_secs(10), || async {
        let p = Api::<DataProduct>::namespaced(client.clone(), &ns_b).get("forecast").await.ok()?;
        let inputs = p.status.clone()?.inputs;
        (inputs.iter().find(|i| i.name == "sales")?.state == "Granted").then_some(p)
    })
    .await;
    // Granted inputs reach the pipeline as connection details.
    let env = kubectl(&[
        "get",
        "cronjob",
        "forecast-fit",
        "-n",
        &ns_b,
        "-o",
        "jsonpath={.spec.jobTemplate.spec.template.spec.containers[0].env}",
    ]);
    assert!(env.contains("MESHPLANE_INPUT_SALES_DESCRIPTOR") && env.contains(&format!("{ns_a}/sales-descriptor")), "{env}");
    // The missing one still keeps InputsReady False, as NotFound.
    assert_eq!(product_condition(&p, "InputsReady").reason, "NotFound");

    // Revoking takes access away within 5 seconds and the consumer sees it.
    apply(&producer(""));
    wait_until("the grant to be revoked", Duration::from_secs(5), || async {
        (!sa_can_read(&ns_a, "sales", &ns_b, "forecast-pipeline")).then_some(())
    })
    .await;
    wait_until("the consumer to see AccessDenied", Duration::from_secs(10), || async {
        let p = Api::<DataProduct>::namespaced(client.clone(), &ns_b).get("forecast").await.ok()?;
        (p.status?.inputs.iter().find(|i| i.name == "sales")?.state == "AccessDenied").then_some(())
    })
    .await;
    let p = Api::<DataProduct>::namespaced(client.clone(), &ns_b).get("forecast").await.unwrap();
    assert_eq!(product_condition(&p, "InputsReady").reason, "AccessDenied");
    let events =
        kubectl(&["get", "events", "-n", &ns_a, "--field-selector", "involvedObject.name=sales", "-o", "jsonpath={.items[*].reason}"]);
    assert!(events.contains("Granted") && events.contains("Revoked"), "{events}");
}

#[tokio::test]
async fn same_domain_inputs_are_granted_without_a_consumer_entry() {
    operator();
    let client = cluster().await;
    let domain = unique("lineage");
    let ns = ready_domain(&client, &domain, "").await;
    apply(&product_manifest(&ns, "raw", "  description: upstream\n"));
    apply(&product_manifest(&ns, "clean", "  inputs: [{name: raw, product: raw}]\n"));
    let p = wait_product(&client, &ns, "clean", "InputsReady", "True").await;
    let input = &p.status.unwrap().inputs[0];
    assert_eq!((input.state.as_str(), input.domain.as_str()), ("Granted", domain.as_str()));
    // The producer's deletion reaches the consumer promptly.
    kubectl(&["delete", "dp", "raw", "-n", &ns]);
    let p = wait_product(&client, &ns, "clean", "InputsReady", "False").await;
    assert_eq!(product_condition(&p, "InputsReady").reason, "NotFound");
}

/// A new product's first status waits while its claim binds, so it appears
/// once, as Ready; a claim that cannot bind is reported once it has had
/// `storage::SETTLING` (10 s) to, with the reason from its Events; a claim
/// of a class that binds on first use is waiting by design.
#[tokio::test]
async fn a_new_product_reports_once_its_claim_has_bound_or_has_had_time_to() {
    use futures::{StreamExt, TryStreamExt};
    use kube::runtime::{WatchStreamExt, watcher};
    operator();
    let client = cluster().await;
    let domain = unique("binding");
    // A class without a provisioner or a volume of its own: its claims stay Pending.
    let empty = format!("{domain}-empty");
    apply(&format!(
        "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {{name: {empty}}}\n\
         provisioner: kubernetes.io/no-provisioner\nvolumeBindingMode: Immediate\n"
    ));
    let lazy = format!("{domain}-lazy");
    apply(&format!(
        "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {{name: {lazy}}}\n\
         provisioner: kubernetes.io/no-provisioner\nvolumeBindingMode: WaitForFirstConsumer\n"
    ));
    let ns = ready_domain(&client, &domain, &format!("  storageClasses: [standard, {empty}, {lazy}]\n")).await;
    let api = Api::<DataProduct>::namespaced(client.clone(), &ns);
    let first_status = |name: &str| {
        let stream = watcher(api.clone(), watcher::Config::default().fields(&format!("metadata.name={name}"))).applied_objects();
        async move {
            let mut stream = std::pin::pin!(stream.try_filter(|p| std::future::ready(p.status.is_some())));
            tokio::time::timeout(Duration::from_secs(60), stream.next()).await.expect("a status within 60 s").unwrap().unwrap()
        }
    };

    let watching = tokio::spawn(first_status("bound"));
    apply(&product_manifest(&ns, "bound", "  storage: [{name: data, kind: Volume, size: 1Gi, storageClass: standard}]\n"));
    let bound = watching.await.unwrap();
    assert_eq!(product_condition(&bound, "Ready").status, "True", "the first status written: {:?}", bound.status);
    assert_eq!(product_condition(&bound, "StorageReady").message, "claim bound-data is Bound");

    let watching = tokio::spawn(first_status("stuck"));
    apply(&product_manifest(&ns, "stuck", &format!("  storage: [{{name: data, kind: Volume, size: 1Gi, storageClass: {empty}}}]\n")));
    let stuck = watching.await.unwrap();
    let storage = product_condition(&stuck, "StorageReady");
    assert_eq!((storage.status.as_str(), storage.reason.as_str()), ("False", "ClaimPending"), "{storage:?}");
    let claim = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns).get("stuck-data").await.unwrap();
    let created = claim.metadata.creation_timestamp.unwrap().0;
    let reported = storage.last_transition_time.0;
    assert!(
        reported.duration_since(created).as_secs() >= 9,
        "a Pending claim is reported once it has had 10 s to bind: created {created}, reported {reported}"
    );
    // The reason comes from the claim's Events (the volume binder's own words).
    assert!(storage.message.starts_with("claim stuck-data: "), "{}", storage.message);

    // A class that binds on first use: the claim waits for a pod by design,
    // so the storage is ready and the product says so at once.
    let watching = tokio::spawn(first_status("later"));
    apply(&product_manifest(&ns, "later", &format!("  storage: [{{name: data, kind: Volume, size: 1Gi, storageClass: {lazy}}}]\n")));
    let later = watching.await.unwrap();
    let storage = product_condition(&later, "StorageReady");
    assert_eq!(storage.status, "True", "{storage:?}");
    assert!(storage.message.starts_with("WaitForFirstConsumer: claim later-data binds when"), "{}", storage.message);
    assert_eq!(product_condition(&later, "Ready").status, "True", "{:?}", later.status);
    let phase = kubectl(&["get", "pvc", "later-data", "-n", &ns, "-o", "jsonpath={.status.phase}"]);
    assert_eq!(phase, "Pending", "the claim waits for its first consumer");
    kubectl(&["delete", "storageclass", &empty, &lazy]);
}

#[tokio::test]
async fn storage_is_retained_or_deleted_as_asked_and_never_anothers() {
    operator();
    let client = cluster().await;
    let domain = unique("safety");
    let ns = ready_domain(&client, &domain, "").await;
    apply(&product_manifest(
        &ns,
        "keep",
        "  storage:\n  - {name: kept, kind: Volume, size: 1Gi}\n  - {name: scratch, kind: Volume, size: 1Gi, deletionPolicy: Delete}\n",
    ));
    apply(&product_manifest(&ns, "neighbour", "  storage: [{name: data, kind: Volume, size: 1Gi, deletionPolicy: Delete}]\n"));
    wait_product(&client, &ns, "keep", "Ready", "True").await;
    wait_product(&client, &ns, "neighbour", "Ready", "True").await;
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns);
    let neighbour_uid = claims.get("neighbour-data").await.unwrap().metadata.uid;

    kubectl(&["delete", "dp", "keep", "-n", &ns, "--timeout=30s"]);
    wait_until("the Delete claim to be gone", Duration::from_secs(30), || async {
        claims.get_opt("keep-scratch").await.unwrap().is_none().then_some(())
    })
    .await;
    let kept = claims.get("keep-kept").await.unwrap();
    assert!(kept.metadata.deletion_timestamp.is_none(), "the retained claim is being deleted");
    assert!(kept.owner_references().is_empty(), "the retained claim is still owned: {:?}", kept.owner_references());
    assert_eq!(kept.labels().get("meshplane.dev/orphaned").map(String::as_str), Some("true"));
    assert!(kept.annotations()["meshplane.dev/orphaned-from"].contains("keep"));
    // Garbage collection has had its chance: the retained claim stays.
    wait_until("the product's other children to be collected", Duration::from_secs(30), || async {
        (!kubectl_output(&["get", "serviceaccount", "keep-pipeline", "-n", &ns]).status.success()).then_some(())
    })
    .await;
    assert!(claims.get_opt("keep-kept").await.unwrap().is_some_and(|c| c.metadata.deletion_timestamp.is_none()));
    let neighbour = claims.get("neighbour-data").await.unwrap();
    assert_eq!(neighbour.metadata.uid, neighbour_uid);
    assert!(neighbour.metadata.deletion_timestamp.is_none() && !neighbour.labels().contains_key("meshplane.dev/orphaned"));
}

#[tokio::test]
async fn buckets_need_their_backend_and_the_rest_is_provisioned_without_it() {
    operator();
    let client = cluster().await;
    let fixture = repo_root().join("tests/fixtures/cosi-crds.yaml");
    let fixture = fixture.to_str().unwrap();
    kubectl(&["delete", "-f", fixture, "--ignore-not-found", "--wait=true"]);
    let domain = unique("objects");
    let ns = ready_domain(&client, &domain, "").await;
    apply(&product_manifest(
        &ns,
        "lake",
        "  storage: [{name: files, kind: Bucket, storageClass: s3-standard}]\n  \
         pipelines: [{name: sync, image: busybox, schedule: \"@hourly\"}]\n  access: {consumers: [{subject: {kind: User, name: auditor}}]}\n",
    ));
    let p = wait_product(&client, &ns, "lake", "StorageReady", "False").await;
    let storage = product_condition(&p, "StorageReady");
    assert_eq!(storage.reason, "BackendNotInstalled", "{}", storage.message);
    assert!(storage.message.contains("bucketclaims.objectstorage.k8s.io"), "{}", storage.message);
    let p = wait_product(&client, &ns, "lake", "PipelinesReady", "True").await;
    assert_eq!(product_condition(&p, "AccessReady").status, "True");
    assert_eq!(product_condition(&p, "Ready").status, "False");
    assert!(kubectl_output(&["get", "cronjob", "lake-sync", "-n", &ns]).status.success());

    kubectl(&["apply", "-f", fixture]);
    kubectl(&["wait", "--for=condition=Established", "crd/bucketclaims.objectstorage.k8s.io", "crd/bucketaccesses.objectstorage.k8s.io"]);
    let claim = wait_until("the BucketClaim to be created", Duration::from_secs(30), || async {
        let out = kubectl_output(&["get", "bucketclaims.objectstorage.k8s.io", "lake-files", "-n", &ns, "-o", "json"]);
        out.status.success().then(|| serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap())
    })
    .await;
    assert_eq!(claim["spec"]["bucketClassName"], "s3-standard");
    let access =
        kubectl(&["get", "bucketaccesses.objectstorage.k8s.io", "lake-files", "-n", &ns, "-o", "jsonpath={.spec.credentialsSecretName}"]);
    assert_eq!(access, "lake-files-credentials");
    let p = wait_product(&client, &ns, "lake", "StorageReady", "False").await;
    let p = if product_condition(&p, "StorageReady").reason == "BackendNotInstalled" {
        wait_until("the bucket to be reported pending", Duration::from_secs(20), || async {
            let p = Api::<DataProduct>::namespaced(client.clone(), &ns).get("lake").await.ok()?;
            (product_condition(&p, "StorageReady").reason == "BucketPending").then_some(p)
        })
        .await
    } else {
        p
    };
    assert_eq!(product_condition(&p, "StorageReady").reason, "BucketPending");
    // The credentials are part of what a consumer is granted.
    assert!(can_i(&["get", "secrets/lake-files-credentials", "-n", &ns, "--as", "auditor"]));
    assert!(!can_i(&["get", "secrets/other", "-n", &ns, "--as", "auditor"]));
}

#[tokio::test]
async fn drift_is_corrected() {
    operator();
    let client = cluster().await;
    let domain = unique("pdrift");
    let ns = ready_domain(&client, &domain, "").await;
    apply(&product_manifest(&ns, "etl", "  pipelines: [{name: job, image: busybox, schedule: \"@daily\"}]\n"));
    wait_product(&client, &ns, "etl", "Ready", "True").await;
    let before = kubectl(&["get", "cronjob", "etl-job", "-n", &ns, "-o", "jsonpath={.metadata.uid}"]);
    kubectl(&["delete", "cronjob", "etl-job", "-n", &ns]);
    wait_until("the CronJob to be restored", Duration::from_secs(5), || async {
        let out = kubectl_output(&["get", "cronjob", "etl-job", "-n", &ns, "-o", "jsonpath={.metadata.uid}"]);
        (out.status.success() && String::from_utf8_lossy(&out.stdout) != before).then_some(())
    })
    .await;
    let roles = Api::<Role>::namespaced(client.clone(), &ns);
    let patch = serde_json::json!({"rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]}]});
    roles.patch("etl-reader", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    wait_until("the Role to be restored", Duration::from_secs(5), || async {
        let role = roles.get("etl-reader").await.ok()?;
        let rules = role.rules?;
        rules.iter().all(|r| r.resource_names.is_some() && r.verbs == ["get"]).then_some(())
    })
    .await;
    Api::<DataProduct>::namespaced(client.clone(), &ns).delete("etl", &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn bad_input_is_rejected_with_the_field_named() {
    operator();
    let client = cluster().await;
    let domain = unique("pbad");
    let ns = ready_domain(&client, &domain, "  storageClasses: [standard]\n").await;
    let invalid: Vec<(String, &str, &str)> = vec![
        ("a".repeat(31), "  owner: x\n", "at most 30 characters"),
        ("dup".into(), "  storage: [{name: a, kind: Volume, size: 1Gi}, {name: a, kind: Volume, size: 2Gi}]\n", "spec.storage[1]"),
        ("kind".into(), "  storage: [{name: a, kind: Disk, size: 1Gi}]\n", "spec.storage[0].kind"),
        ("nosize".into(), "  storage: [{name: a, kind: Volume}]\n", "spec.storage[0].size"),
        ("negative".into(), "  storage: [{name: a, kind: Volume, size: \"-1Gi\"}]\n", "spec.storage[0].size"),
        ("both".into(), "  pipelines: [{name: p, image: i, mode: Continuous, schedule: \"@daily\"}]\n", "spec.pipelines[0].schedule"),
        ("neither".into(), "  pipelines: [{name: p, image: i}]\n", "spec.pipelines[0].schedule"),
        ("cron".into(), "  pipelines: [{name: p, image: i, schedule: every day}]\n", "spec.pipelines[0].schedule"),
        (
            "mount".into(),
            "  pipelines: [{name: p, image: i, schedule: \"@daily\", mounts: [{storage: nope, path: /d}]}]\n",
            "spec.pipelines",
        ),
        (
            "relpath".into(),
            "  storage: [{name: a, kind: Volume, size: 1Gi}]\n  pipelines: [{name: p, image: i, schedule: \"@daily\", mounts: [{storage: a, path: data}]}]\n",
            "spec.pipelines[0].mounts[0].path",
        ),
        ("pinput".into(), "  pipelines: [{name: p, image: i, schedule: \"@daily\", inputs: [nope]}]\n", "spec.pipelines"),
        (
            "dupipe".into(),
            "  pipelines: [{name: p, image: i, schedule: \"@daily\"}, {name: p, image: j, schedule: \"@daily\"}]\n",
            "spec.pipelines[1]",
        ),
        (
            "envname".into(),
            "  pipelines: [{name: p, image: i, schedule: \"@daily\", env: [{name: 1BAD, value: x}]}]\n",
            "spec.pipelines[0].env[0].name",
        ),
        ("selfish".into(), "  inputs: [{name: me, product: selfish}]\n", "cannot be its own input"),
        ("consumer".into(), "  access: {consumers: [{domain: a, subject: {kind: User, name: u}}]}\n", "spec.access.consumers[0]"),
        ("sunset".into(), "  lifecycle: Deprecated\n", "spec.sunset"),
        ("secret".into(), "  classification: Secret\n", "spec.classification"),
        (
            "ftype".into(),
            "  outputPorts: [{name: o, format: CSV, schema: [{name: f, type: varchar}]}]\n",
            "spec.outputPorts[0].schema[0].type",
        ),
        ("portstore".into(), "  outputPorts: [{name: o, format: CSV, storage: nope}]\n", "spec.outputPorts"),
        ("fresh".into(), "  quality: {freshness: soon}\n", "spec.quality.freshness"),
        (
            "cpu".into(),
            "  pipelines: [{name: p, image: i, schedule: \"@daily\", resources: {limits: {cpu: lots}}}]\n",
            "spec.pipelines[0].resources.limits.cpu",
        ),
    ];
    for (name, spec, field) in &invalid {
        let manifest = product_manifest(&ns, name, spec);
        let out = kubectl_stdin(&["create", "-f", "-"], &manifest);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "accepted:\n{manifest}");
        assert!(stderr.contains(field), "the error for\n{manifest}\ndoes not name `{field}`: {stderr}");
    }
    println!("{} invalid DataProduct manifests rejected by the API server", invalid.len());

    // What only the controller can know is Stalled, with the reason.
    apply(&product_manifest(&ns, "fast", "  storage: [{name: a, kind: Volume, size: 1Gi, storageClass: premium}]\n"));
    let p = wait_product(&client, &ns, "fast", "Stalled", "True").await;
    let stalled = product_condition(&p, "Stalled");
    assert_eq!(stalled.reason, "StorageClassNotAllowed");
    assert!(stalled.message.contains("premium") && stalled.message.contains("allowed: standard"), "{}", stalled.message);
    assert!(kubectl_output(&["get", "pvc", "fast-a", "-n", &ns]).status.code() != Some(0), "nothing is provisioned");
    apply(&product_manifest(&ns, "loop", &format!("  inputs: [{{name: me, domain: {domain}, product: loop}}]\n")));
    let p = wait_product(&client, &ns, "loop", "Stalled", "True").await;
    assert_eq!(product_condition(&p, "Stalled").reason, "SelfInput");
    // The built-in policy refuses a product in a namespace of no domain; one
    // that forges the domain label gets past it, and the controller stalls it.
    let stray = unique("stray");
    kubectl(&["create", "namespace", &stray]);
    let out = kubectl_stdin(&["create", "-f", "-"], &product_manifest(&stray, "lost", "  owner: nobody\n"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("belongs to no DataDomain"), "{stderr}");
    kubectl(&["label", "namespace", &stray, &format!("meshplane.dev/domain={domain}")]);
    apply(&product_manifest(&stray, "lost", "  owner: nobody\n"));
    let p = wait_product(&client, &stray, "lost", "Stalled", "True").await;
    assert_eq!(product_condition(&p, "Stalled").reason, "NotInDomain");
    assert!(
        kubectl(&["get", "serviceaccounts,configmaps", "-n", &stray, "-l", "meshplane.dev/product=lost", "-o", "name"]).trim().is_empty()
    );

    // The operator kept going: a valid product is Ready.
    apply(&product_manifest(&ns, "fine", "  storage: [{name: a, kind: Volume, size: 1Gi}]\n"));
    wait_product(&client, &ns, "fine", "Ready", "True").await;
    let log = std::fs::read_to_string(cluster_dir().join("logs/meshplane.log")).unwrap_or_default();
    assert!(!log.contains("panicked"), "the operator panicked");
}
