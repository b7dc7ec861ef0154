//! Policy reconcile tests that need no cluster: passes against a stand-in
//! API server (see `crate::operator::testing`).

use serde_json::json;

use super::*;
use crate::api::GovernancePolicyStatus;
use crate::keys;
use crate::operator::testing::{self, World, events, lines, written_status};

const STANDARDS: &str = "
apiVersion: meshplane.dev/v1alpha1
kind: GovernancePolicy
metadata: {name: standards, uid: g-1, generation: 1}
spec: {enforcement: Enforce, rules: {requireOwner: true}}
";

fn standards() -> GovernancePolicy {
    testing::parse(testing::yaml(STANDARDS))
}

/// A domain `sales` with two products, one of them without an owner.
fn world() -> World {
    let mut world = World::start();
    world.seed_sales();
    for (name, owner) in [("orders", "sales-team"), ("invoices", "")] {
        let mut product = json!({"apiVersion": "meshplane.dev/v1alpha1", "kind": "DataProduct",
            "metadata": {"name": name, "namespace": "dm-sales", "uid": format!("p-{name}")}, "spec": {}});
        if !owner.is_empty() {
            product["spec"]["owner"] = owner.into();
        }
        world.seed(product);
    }
    world
}

const STATUS: &str = "apply --force /apis/meshplane.dev/v1alpha1/governancepolicies/standards/status";

#[tokio::test]
async fn a_first_pass_applies_the_admission_policy_and_its_binding_and_writes_one_status() {
    let world = world();
    let (action, requests) = world.pass(reconcile, &standards()).await;
    assert_eq!(
        lines(&requests),
        [
            "apply --force /apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies/meshplane-standards",
            "apply --force /apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings/meshplane-standards",
            "event Normal Compiled",
            STATUS,
        ]
    );
    let binding = &requests[1].body;
    assert_eq!(binding["spec"]["policyName"], "meshplane-standards");
    assert_eq!(binding["spec"]["validationActions"], json!(["Deny"]));
    assert_eq!(binding["metadata"]["ownerReferences"][0]["uid"], "g-1");
    assert_eq!(binding["metadata"]["labels"][keys::LABEL_POLICY], "standards");
    assert_eq!(events(&requests), ["Normal Compiled: Compiled into ValidatingAdmissionPolicy and binding meshplane-standards (Enforce)"]);
    let status: GovernancePolicyStatus = written_status(&requests);
    assert_eq!(status.violations, Some(1), "the product without an owner");
    let ready = status.conditions.iter().find(|c| c.type_ == crate::api::conditions::READY).unwrap();
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("True", "Reconciled"));
    assert!(action.is_ok());
    assert!(world.finish().await.is_empty());
}

#[tokio::test]
async fn a_second_pass_over_what_the_first_applied_makes_no_request() {
    let mut world = world();
    let (_, first) = world.pass(reconcile, &standards()).await;
    world.seed_applied(&first, |_| {});
    let policy = world.after(&standards(), &first);
    assert!(policy.status.is_some());
    let (action, second) = world.pass(reconcile, &policy).await;
    assert_eq!(lines(&second), Vec::<String>::new());
    assert!(action.is_ok());
    assert!(world.finish().await.is_empty());
}

#[tokio::test]
async fn a_product_that_comes_into_line_changes_only_the_status() {
    let mut world = world();
    let (_, first) = world.pass(reconcile, &standards()).await;
    world.seed_applied(&first, |_| {});
    let policy = world.after(&standards(), &first);
    world.seed(json!({"apiVersion": "meshplane.dev/v1alpha1", "kind": "DataProduct",
        "metadata": {"name": "invoices", "namespace": "dm-sales", "uid": "p-invoices"}, "spec": {"owner": "billing"}}));
    let (_, second) = world.pass(reconcile, &policy).await;
    assert_eq!(lines(&second), [STATUS]);
    assert_eq!(written_status::<GovernancePolicyStatus>(&second).violations, Some(0));
}
