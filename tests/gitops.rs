//! GitOps health: kstatus (sigs.k8s.io/cli-utils' status library, what Flux
//! uses) reads meshplane's conditions as Current when Ready, InProgress while
//! reconciling and Failed when Stalled.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};

use support::*;

/// kstatus's verdict on an object, from `kubectl get -o json`.
fn kstatus(args: &[&str]) -> String {
    let json = kubectl(&[args, &["-o", "json"]].concat());
    let mut child = Command::new(bin("kstatus")).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(json.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "kstatus: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn kstatus_reads_current_in_progress_and_failed() {
    operator();
    let client = cluster().await;
    let domain = unique("gitops");
    let ns = ready_domain(&client, &domain, "  storageClasses: [standard, missing]\n").await;
    assert!(kstatus(&["get", "datadomain", &domain]).contains(" Current "), "a Ready domain is Current");

    apply(&product_manifest(&ns, "fine", "  owner: team\n"));
    // A class the domain allows but the cluster lacks: the claim never binds.
    apply(&product_manifest(&ns, "waiting", "  storage: [{name: d, kind: Volume, size: 1Gi, storageClass: missing}]\n"));
    apply(&product_manifest(&ns, "forbidden", "  storage: [{name: d, kind: Volume, size: 1Gi, storageClass: premium}]\n"));
    wait_product(&client, &ns, "fine", "Ready", "True").await;
    wait_product(&client, &ns, "waiting", "Reconciling", "True").await;
    wait_product(&client, &ns, "forbidden", "Stalled", "True").await;

    let verdicts = kstatus(&["get", "dataproducts", "-n", &ns]);
    let status_of =
        |name: &str| verdicts.lines().find(|l| l.starts_with(&format!("{ns}/{name} "))).map(|l| l.split(' ').nth(1).unwrap().to_string());
    assert_eq!(status_of("fine").as_deref(), Some("Current"), "{verdicts}");
    assert_eq!(status_of("waiting").as_deref(), Some("InProgress"), "{verdicts}");
    assert_eq!(status_of("forbidden").as_deref(), Some("Failed"), "{verdicts}");
    println!("kstatus:\n{verdicts}");
}
