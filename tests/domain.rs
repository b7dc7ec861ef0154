//! DataDomain against the real control plane: provisioning, isolation with
//! real RBAC, drift correction, foreign namespaces, bad input, deletion.
//! Each test works in its own uniquely named domains.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use meshplane::api::DataDomain;
use meshplane::api::conditions::status_of;
use support::*;

// A new cluster's quota controller accounts for a new CRD's objects only at
// its next full resync (the local cluster runs one every 15s).
const READY_TIMEOUT: Duration = Duration::from_secs(90);

fn domain_manifest(name: &str, extra: &str) -> String {
    format!("apiVersion: meshplane.dev/v1alpha1\nkind: DataDomain\nmetadata:\n  name: {name}\nspec:\n{extra}")
}

async fn setup() -> Client {
    operator();
    cluster().await
}

async fn domain(client: &Client, name: &str) -> Option<DataDomain> {
    Api::<DataDomain>::all(client.clone()).get_opt(name).await.unwrap()
}

async fn wait_condition(client: &Client, name: &str, type_: &str, status: &str) -> DataDomain {
    wait_until(&format!("DataDomain {name} {type_}={status}"), READY_TIMEOUT, || async {
        let d = domain(client, name).await?;
        let conditions = d.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
        (status_of(conditions, type_) == Some(status)).then_some(d)
    })
    .await
}

fn condition<'a>(d: &'a DataDomain, type_: &str) -> &'a meshplane::api::Condition {
    d.status.as_ref().unwrap().conditions.iter().find(|c| c.type_ == type_).unwrap()
}

#[tokio::test]
async fn a_domain_gets_its_whole_tenant_and_becomes_ready() {
    let client = setup().await;
    let name = unique("prov");
    apply(&domain_manifest(
        &name,
        "  description: provisioning test\n  owners: [{kind: Group, name: prov-leads}]\n  members: [{kind: User, name: mo}]\n  \
         viewers: [{kind: ServiceAccount, name: reader, namespace: default}]\n  quota: {cpu: \"4\", memory: 8Gi}\n",
    ));
    // kubectl wait, as a user would.
    let out = kubectl(&["wait", "--for=condition=Ready", &format!("dd/{name}"), "--timeout=90s"]);
    assert!(out.contains("condition met"), "{out}");

    let d = domain(&client, &name).await.unwrap();
    let status = d.status.clone().unwrap();
    let ns = format!("dm-{name}");
    assert_eq!(status.namespace.as_deref(), Some(ns.as_str()));
    assert_eq!(status.observed_generation, d.metadata.generation);
    assert_eq!(status.data_products, Some(0));
    for type_ in ["NamespaceReady", "AccessReady", "QuotaReady", "NetworkReady", "Ready"] {
        assert_eq!(condition(&d, type_).status, "True", "{type_}");
    }
    assert_eq!(condition(&d, "Stalled").status, "False");
    assert_eq!(condition(&d, "Reconciling").status, "False");

    let namespace = Api::<Namespace>::all(client.clone()).get(&ns).await.unwrap();
    let labels = namespace.labels();
    assert_eq!(labels["pod-security.kubernetes.io/enforce"], "restricted");
    assert_eq!(labels["pod-security.kubernetes.io/enforce-version"], "v1.34");
    assert_eq!(labels["meshplane.dev/domain"], name);
    assert_eq!(labels["app.kubernetes.io/managed-by"], "meshplane");
    assert_eq!(namespace.owner_references()[0].uid, d.metadata.uid.clone().unwrap());

    let bindings = Api::<RoleBinding>::namespaced(client.clone(), &ns).list(&ListParams::default()).await.unwrap();
    let by_role: BTreeMap<String, Vec<String>> = bindings
        .items
        .iter()
        .filter(|rb| rb.labels().get("meshplane.dev/domain") == Some(&name))
        .map(|rb| {
            let subjects = rb.subjects.iter().flatten().map(|s| format!("{}:{}", s.kind, s.name)).collect();
            (rb.role_ref.name.clone(), subjects)
        })
        .collect();
    assert_eq!(by_role["meshplane-domain-admin"], vec!["Group:prov-leads"]);
    assert_eq!(by_role["meshplane-domain-member"], vec!["User:mo"]);
    assert_eq!(by_role["meshplane-domain-viewer"], vec!["ServiceAccount:reader"]);

    let quota = Api::<ResourceQuota>::namespaced(client.clone(), &ns).get("meshplane-domain-quota").await.unwrap();
    let hard = quota.spec.unwrap().hard.unwrap();
    assert_eq!(hard["limits.cpu"].0, "4");
    assert_eq!(hard["requests.memory"].0, "8Gi");
    assert_eq!(hard["count/dataproducts.meshplane.dev"].0, "50", "schema default");
    Api::<LimitRange>::namespaced(client.clone(), &ns).get("meshplane-domain-defaults").await.unwrap();
    let policies = Api::<NetworkPolicy>::namespaced(client.clone(), &ns).list(&ListParams::default()).await.unwrap();
    let mut names: Vec<String> = policies.items.iter().map(|p| p.name_any()).collect();
    names.sort();
    assert_eq!(names, ["meshplane-allow-dns", "meshplane-allow-platform", "meshplane-allow-same-domain", "meshplane-default-deny"]);

    // The audit trail: an Event per provisioned child.
    let events = wait_until("provisioning events", Duration::from_secs(10), || async {
        let out = kubectl(&[
            "get",
            "events",
            "-n",
            "default",
            "--field-selector",
            &format!("involvedObject.name={name},involvedObject.kind=DataDomain"),
            "-o",
            "jsonpath={range .items[*]}{.reason} {.message}{\"\\n\"}{end}",
        ]);
        (out.lines().filter(|l| l.starts_with("Created")).count() >= 10).then_some(out)
    })
    .await;
    assert!(events.contains(&format!("Created Namespace {ns}")), "{events}");
    assert!(events.contains(&format!("Created RoleBinding meshplane-domain-owners in namespace {ns}")), "{events}");

    // Printer columns read well.
    let row = kubectl(&["get", "dd", &name, "--no-headers"]);
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cols[..4], [name.as_str(), ns.as_str(), "True", "0"], "{row}");
}

#[tokio::test]
async fn tenants_are_isolated_by_real_rbac() {
    let client = setup().await;
    let a = unique("iso-a");
    let b = unique("iso-b");
    for (d, who) in [(&a, "a"), (&b, "b")] {
        apply(&domain_manifest(
            d,
            &format!(
                "  owners: [{{kind: User, name: {d}-owner}}]\n  members: [{{kind: Group, name: {d}-team}}]\n  \
                 viewers: [{{kind: User, name: {d}-viewer}}]\n  description: domain {who}\n"
            ),
        ));
    }
    wait_condition(&client, &a, "Ready", "True").await;
    wait_condition(&client, &b, "Ready", "True").await;
    let (ns_a, ns_b) = (format!("dm-{a}"), format!("dm-{b}"));
    let owner_a = vec!["--as".to_string(), format!("{a}-owner")];
    let member_a = vec!["--as".to_string(), "someone".to_string(), "--as-group".to_string(), format!("{a}-team")];
    let viewer_a = vec!["--as".to_string(), format!("{a}-viewer")];
    let member_b = vec!["--as".to_string(), "other".to_string(), "--as-group".to_string(), format!("{b}-team")];

    // (who, verb, resource, namespace or "" for cluster scope, expected)
    let mut checks: Vec<(&Vec<String>, &str, String, &str, bool)> = Vec::new();
    for (verb, resource, expected) in [
        ("create", "dataproducts.meshplane.dev", true),
        ("delete", "dataproducts.meshplane.dev", true),
        ("list", "pods", true),
        ("get", "pods/log", true),
        ("get", "secrets", true),
        ("create", "jobs.batch", true),
        ("list", "resourcequotas", true),
    ] {
        checks.push((&owner_a, verb, resource.into(), &ns_a, expected));
        // Nothing in the other domain.
        checks.push((&owner_a, verb, resource.into(), &ns_b, false));
    }
    for (verb, resource, expected) in [
        ("create", "dataproducts.meshplane.dev", true),
        ("patch", "dataproducts.meshplane.dev", true),
        ("delete", "dataproducts.meshplane.dev", false),
        ("get", "pods/log", true),
        ("get", "secrets", false),
    ] {
        checks.push((&member_a, verb, resource.into(), &ns_a, expected));
    }
    for (verb, resource, expected) in [
        ("get", "dataproducts.meshplane.dev", true),
        ("list", "pods", true),
        ("create", "dataproducts.meshplane.dev", false),
        ("delete", "dataproducts.meshplane.dev", false),
        ("get", "secrets", false),
        ("create", "jobs.batch", false),
    ] {
        checks.push((&viewer_a, verb, resource.into(), &ns_a, expected));
    }
    for (verb, resource) in
        [("get", "dataproducts.meshplane.dev"), ("list", "pods"), ("create", "dataproducts.meshplane.dev"), ("get", "secrets")]
    {
        checks.push((&member_b, verb, resource.into(), &ns_a, false));
    }
    // What belongs to the platform: no tenant subject may change it.
    for who in [&owner_a, &member_a, &viewer_a] {
        for (verb, resource) in [
            ("patch", "rolebindings/meshplane-domain-owners"),
            ("delete", "rolebindings/meshplane-domain-viewers"),
            ("create", "rolebindings"),
            ("patch", "resourcequotas/meshplane-domain-quota"),
            ("delete", "limitranges/meshplane-domain-defaults"),
            ("patch", "networkpolicies.networking.k8s.io/meshplane-default-deny"),
            ("delete", "networkpolicies.networking.k8s.io/meshplane-allow-same-domain"),
            ("create", "roles"),
        ] {
            checks.push((who, verb, resource.into(), &ns_a, false));
        }
        checks.push((who, "patch", format!("namespaces/{ns_a}"), "", false));
        checks.push((who, "delete", format!("namespaces/{ns_a}"), "", false));
        for resource in [
            "namespaces",
            "clusterroles",
            "clusterrolebindings",
            "datadomains.meshplane.dev",
            "persistentvolumes",
            "customresourcedefinitions.apiextensions.k8s.io",
        ] {
            checks.push((who, "create", resource.into(), "", false));
        }
    }

    let mut violations = Vec::new();
    for (who, verb, resource, ns, expected) in &checks {
        let mut args: Vec<&str> = vec!["auth", "can-i", verb, resource];
        if !ns.is_empty() {
            args.extend(["-n", ns]);
        }
        args.extend(who.iter().map(String::as_str));
        let out = kubectl_output(&args);
        let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let allowed = answer == "yes";
        if answer != "yes" && answer != "no" {
            violations.push(format!("kubectl {}: unexpected answer {answer:?} {}", args.join(" "), String::from_utf8_lossy(&out.stderr)));
        } else if allowed != *expected {
            violations.push(format!("kubectl {} -> {answer}, expected {}", args.join(" "), if *expected { "yes" } else { "no" }));
        }
    }
    println!("isolation: {} RBAC checks ran, {} violations", checks.len(), violations.len());
    assert!(checks.len() >= 75, "the check list shrank: {}", checks.len());
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[tokio::test]
async fn drift_is_corrected() {
    let client = setup().await;
    let name = unique("drift");
    apply(&domain_manifest(&name, "  owners: [{kind: User, name: drifter}]\n"));
    wait_condition(&client, &name, "Ready", "True").await;
    let ns = format!("dm-{name}");
    let bindings = Api::<RoleBinding>::namespaced(client.clone(), &ns);
    let quotas = Api::<ResourceQuota>::namespaced(client.clone(), &ns);

    let before = bindings.get("meshplane-domain-owners").await.unwrap();
    bindings.delete("meshplane-domain-owners", &DeleteParams::default()).await.unwrap();
    let restored = wait_until("the deleted RoleBinding to be restored", Duration::from_secs(5), || async {
        let rb = bindings.get_opt("meshplane-domain-owners").await.unwrap()?;
        (rb.metadata.uid != before.metadata.uid).then_some(rb)
    })
    .await;
    assert_eq!(restored.subjects.unwrap()[0].name, "drifter");

    let patch = serde_json::json!({"spec": {"hard": {"limits.cpu": "1000"}}});
    quotas.patch("meshplane-domain-quota", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    wait_until("the edited ResourceQuota to be restored", Duration::from_secs(5), || async {
        let q = quotas.get("meshplane-domain-quota").await.unwrap();
        (q.spec?.hard?["limits.cpu"].0 == "8").then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_foreign_namespace_is_never_adopted() {
    let client = setup().await;
    let snapshot = || {
        (
            kubectl(&["get", "namespace", "kube-system", "-o", "jsonpath={.metadata.labels}{.metadata.ownerReferences}"]),
            kubectl(&[
                "get",
                "rolebindings",
                "-n",
                "kube-system",
                "-o",
                "jsonpath={.items[*].metadata.name}{.items[*].metadata.resourceVersion}",
            ]),
            kubectl(&["get", "resourcequotas,limitranges,networkpolicies", "-n", "kube-system", "-o", "name"]),
        )
    };
    let before = snapshot();
    let name = unique("takeover");
    apply(&domain_manifest(&name, "  namespace: kube-system\n  owners: [{kind: User, name: mallory}]\n"));
    let d = wait_condition(&client, &name, "Stalled", "True").await;
    let stalled = condition(&d, "Stalled");
    assert_eq!(stalled.reason, "NamespaceNotOwned");
    assert!(stalled.message.contains("kube-system"), "{}", stalled.message);
    assert_eq!(condition(&d, "Ready").status, "False");
    // Give the operator several resyncs to misbehave, then compare.
    wait_until("three more reconcile passes", Duration::from_secs(30), || async {
        let d = domain(&client, &name).await?;
        let since = d.status?.conditions.iter().find(|c| c.type_ == "Stalled")?.last_transition_time.clone();
        (jiff::Timestamp::now().duration_since(since.0).as_secs() >= 6).then_some(())
    })
    .await;
    assert_eq!(snapshot(), before, "kube-system changed");

    // A namespace someone else made by hand is just as foreign.
    let ns = unique("handmade");
    kubectl(&["create", "namespace", &ns]);
    let other = unique("squat");
    apply(&domain_manifest(&other, &format!("  namespace: {ns}\n")));
    let d = wait_condition(&client, &other, "Stalled", "True").await;
    assert_eq!(condition(&d, "Stalled").reason, "NamespaceNotOwned");
    let labels = kubectl(&["get", "namespace", &ns, "-o", "jsonpath={.metadata.labels}"]);
    assert!(!labels.contains("meshplane"), "{labels}");

    // Deleting such a domain leaves the namespace alone.
    kubectl(&["delete", "dd", &other, "--timeout=30s"]);
    kubectl(&["delete", "dd", &name, "--timeout=30s"]);
    assert!(kubectl_output(&["get", "namespace", &ns]).status.success());
    assert!(kubectl_output(&["get", "namespace", "kube-system"]).status.success());
}

#[tokio::test]
async fn bad_input_is_rejected_with_the_field_named() {
    let client = setup().await;
    let invalid: Vec<(String, String, &str)> = vec![
        (unique("bad") + ".dotted", String::new(), "metadata.name must be a DNS label"),
        (format!("x{}", "a".repeat(63)), String::new(), "metadata.name must be a DNS label"),
        (unique("bad"), "  quota: {cpu: lots}\n".into(), "spec.quota.cpu"),
        (unique("bad"), "  quota: {memory: \"-1Gi\"}\n".into(), "spec.quota.memory"),
        (unique("bad"), "  quota: {dataProducts: -1}\n".into(), "spec.quota.dataProducts"),
        (unique("bad"), "  owners: [{kind: Robot, name: r2}]\n".into(), "spec.owners[0].kind"),
        (unique("bad"), "  owners: [{kind: ServiceAccount, name: ci}]\n".into(), "spec.owners[0].namespace"),
        (unique("bad"), "  viewers: [{kind: User, name: u, namespace: default}]\n".into(), "spec.viewers[0].namespace"),
        (unique("bad"), "  members: [{kind: User, name: \"\"}]\n".into(), "spec.members[0].name"),
        (unique("bad"), "  namespace: Not_A_Namespace\n".into(), "spec.namespace"),
        (unique("bad"), "  network: {isolation: Closed}\n".into(), "spec.network.isolation"),
        (unique("bad"), "  network: {egressCIDRs: [10.0.0.0/33]}\n".into(), "spec.network.egressCIDRs"),
        (unique("bad"), "  storageClasses: [Fast!]\n".into(), "spec.storageClasses[0]"),
        (unique("bad"), "  deletionPolicy: Maybe\n".into(), "spec.deletionPolicy"),
    ];
    for (name, spec, field) in &invalid {
        let manifest = domain_manifest(name, if spec.is_empty() { "  description: invalid\n" } else { spec });
        let out = kubectl_stdin(&["create", "-f", "-"], &manifest);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "accepted:\n{manifest}");
        assert!(stderr.contains(field), "the error for\n{manifest}\ndoes not name `{field}`: {stderr}");
    }

    // An immutable field.
    let name = unique("immut");
    apply(&domain_manifest(&name, &format!("  namespace: {name}-ns\n")));
    let out = kubectl_stdin(&["apply", "-f", "-"], &domain_manifest(&name, &format!("  namespace: {name}-moved\n")));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("spec.namespace is immutable"));

    // What only the controller can know is reported as Stalled.
    let long = format!("l{}{}", unique("").replace('-', ""), "o".repeat(62));
    let long = &long[..62];
    apply(&domain_manifest(long, "  description: the prefix makes its namespace too long\n"));
    let d = wait_condition(&client, long, "Stalled", "True").await;
    assert_eq!(condition(&d, "Stalled").reason, "InvalidSpec");
    assert!(condition(&d, "Stalled").message.contains("longer than 63"), "{}", condition(&d, "Stalled").message);
    let reserved = unique("platform");
    apply(&domain_manifest(&reserved, "  namespace: meshplane-system\n"));
    let d = wait_condition(&client, &reserved, "Stalled", "True").await;
    assert!(condition(&d, "Stalled").message.contains("reserved"), "{}", condition(&d, "Stalled").message);

    // The operator kept working: a valid domain after all that is Ready.
    let fine = unique("fine");
    apply(&domain_manifest(&fine, "  description: after the bad ones\n"));
    wait_condition(&client, &fine, "Ready", "True").await;
    let log = std::fs::read_to_string(cluster_dir().join("logs/meshplane.log")).unwrap_or_default();
    assert!(!log.contains("panicked"), "the operator panicked");
    for n in [long, reserved.as_str(), fine.as_str(), name.as_str()] {
        kubectl(&["delete", "dd", n, "--wait=false"]);
    }
}

#[tokio::test]
async fn deletion_removes_an_empty_domain_and_waits_for_products() {
    let client = setup().await;
    let empty = unique("del-empty");
    let busy = unique("del-busy");
    apply(&domain_manifest(&empty, "  description: empty\n"));
    apply(&domain_manifest(&busy, "  description: has a product\n"));
    wait_condition(&client, &empty, "Ready", "True").await;
    wait_condition(&client, &busy, "Ready", "True").await;
    let busy_ns = format!("dm-{busy}");
    apply(&format!(
        "apiVersion: meshplane.dev/v1alpha1\nkind: DataProduct\nmetadata: {{name: invoices, namespace: {busy_ns}}}\nspec: {{owner: billing}}\n"
    ));
    wait_until("the product to be counted", Duration::from_secs(20), || async {
        (domain(&client, &busy).await?.status?.data_products? == 1).then_some(())
    })
    .await;

    let namespaces = Api::<Namespace>::all(client.clone());
    kubectl(&["delete", "dd", &empty, "--wait=false"]);
    wait_until("the empty domain and its namespace to be gone", Duration::from_secs(60), || async {
        let gone = domain(&client, &empty).await.is_none() && namespaces.get_opt(&format!("dm-{empty}")).await.unwrap().is_none();
        gone.then_some(())
    })
    .await;

    kubectl(&["delete", "dd", &busy, "--wait=false"]);
    let d = wait_condition(&client, &busy, "Deleting", "True").await;
    let deleting = condition(&d, "Deleting");
    assert_eq!(deleting.reason, "DataProductsRemain");
    assert!(deleting.message.contains("invoices") && deleting.message.contains("Cascade"), "{}", deleting.message);
    let events = kubectl(&[
        "get",
        "events",
        "-n",
        "default",
        "--field-selector",
        &format!("involvedObject.name={busy},reason=DataProductsRemain"),
        "-o",
        "name",
    ]);
    assert!(!events.trim().is_empty(), "a Warning event explains the wait");
    assert!(namespaces.get_opt(&busy_ns).await.unwrap().is_some_and(|ns| ns.metadata.deletion_timestamp.is_none()));

    kubectl(&["delete", "dataproduct", "invoices", "-n", &busy_ns]);
    wait_until("the busy domain and its namespace to be gone", Duration::from_secs(60), || async {
        let gone = domain(&client, &busy).await.is_none() && namespaces.get_opt(&busy_ns).await.unwrap().is_none();
        gone.then_some(())
    })
    .await;
}

#[tokio::test]
async fn cascade_deletes_products_with_the_domain() {
    let client = setup().await;
    let name = unique("cascade");
    apply(&domain_manifest(&name, "  deletionPolicy: Cascade\n"));
    wait_condition(&client, &name, "Ready", "True").await;
    let ns = format!("dm-{name}");
    apply(&format!("apiVersion: meshplane.dev/v1alpha1\nkind: DataProduct\nmetadata: {{name: p, namespace: {ns}}}\nspec: {{}}\n"));
    kubectl(&["delete", "dd", &name, "--wait=false"]);
    let namespaces = Api::<Namespace>::all(client.clone());
    wait_until("the cascading domain and its namespace to be gone", Duration::from_secs(60), || async {
        let gone = domain(&client, &name).await.is_none() && namespaces.get_opt(&ns).await.unwrap().is_none();
        gone.then_some(())
    })
    .await;
}
