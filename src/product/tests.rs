//! Product reconcile tests that need no cluster: passes against a stand-in
//! API server (see `crate::operator::testing`).

use std::time::Duration;

use kube::runtime::controller::Action;
use serde_json::{Value, json};

use super::*;
use crate::api::DataProductStatus;
use crate::operator::testing::{self, Reply, Request, World, events, lines, served, writes_and_reads, written_status};

const ORDERS: &str = "
apiVersion: meshplane.dev/v1alpha1
kind: DataProduct
metadata: {name: orders, namespace: dm-sales, uid: p-1, generation: 1, resourceVersion: '3'}
spec:
  owner: sales-team
  storage: [{name: data, kind: Volume, size: 1Gi}]
  pipelines:
    - {name: nightly, image: busybox, schedule: '0 3 * * *', mounts: [{storage: data, path: /data}]}
    - {name: stream, image: busybox, mode: Continuous, replicas: 2}
  access: {consumers: [{domain: crm}]}
";

fn orders() -> DataProduct {
    testing::parse(testing::yaml(ORDERS))
}

/// The product's domain `sales` with its namespace, and the consumer
/// domain `crm`, in the caches.
fn world() -> World {
    let mut world = World::start();
    world.seed_sales();
    world.seed(testing::yaml(
        "{apiVersion: meshplane.dev/v1alpha1, kind: DataDomain, metadata: {name: crm, uid: d-2},\
          spec: {members: [{kind: Group, name: crm-team}]}, status: {namespace: dm-crm}}",
    ));
    world.seed(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": "dm-sales",
        "labels": {keys::LABEL_MANAGED_BY: keys::MANAGED_BY, keys::LABEL_DOMAIN: "sales"},
        "ownerReferences": [{"apiVersion": "meshplane.dev/v1alpha1", "kind": "DataDomain", "name": "sales", "uid": "d-1"}]
    }}));
    world
}

/// What the cluster adds to the children once they settle: the claim is
/// bound, the Deployment's replicas are available.
fn settle(object: &mut Value) {
    match object["kind"].as_str() {
        Some("PersistentVolumeClaim") => object["status"] = json!({"phase": "Bound"}),
        Some("Deployment") => object["status"] = json!({"replicas": 2, "availableReplicas": 2}),
        _ => {}
    }
}

const RESYNC: Duration = Duration::from_secs(300);

/// Every child of `orders`, in apply order, as `apply` lines (unforced:
/// a product's children are applied guarded).
const CHILDREN: [&str; 8] = [
    "apply /api/v1/namespaces/dm-sales/serviceaccounts/orders-pipeline",
    "apply /api/v1/namespaces/dm-sales/configmaps/orders-descriptor",
    "apply /api/v1/namespaces/dm-sales/persistentvolumeclaims/orders-data",
    "apply /apis/rbac.authorization.k8s.io/v1/namespaces/dm-sales/roles/orders-reader",
    "apply /apis/rbac.authorization.k8s.io/v1/namespaces/dm-sales/rolebindings/orders-read-d-crm",
    "apply /apis/networking.k8s.io/v1/namespaces/dm-sales/networkpolicies/orders-read-d-crm",
    "apply /apis/batch/v1/namespaces/dm-sales/cronjobs/orders-nightly",
    "apply /apis/apps/v1/namespaces/dm-sales/deployments/orders-stream",
];

const STATUS: &str = "apply --force /apis/meshplane.dev/v1alpha1/namespaces/dm-sales/dataproducts/orders/status";

/// `orders` once its children have settled and its status says so: the
/// requests of its first pass, and the product as the cluster then serves it.
async fn provisioned(world: &mut World) -> (Vec<Request>, DataProduct) {
    let (_, first) = world.pass(reconcile, &orders()).await;
    world.seed_applied(&first, settle);
    let product = world.after(&orders(), &first);
    let (_, second) = world.pass(reconcile, &product).await;
    assert_eq!(lines(&second), [STATUS]);
    (first, world.after(&product, &second))
}

#[tokio::test]
async fn a_first_pass_applies_every_child_and_leaves_the_status_until_they_settle() {
    let world = world();
    let (action, requests) = world.pass(reconcile, &orders()).await;
    let mut expected = vec!["merge /apis/meshplane.dev/v1alpha1/namespaces/dm-sales/dataproducts/orders".to_string()];
    expected.extend(CHILDREN.map(String::from));
    assert_eq!(writes_and_reads(&requests), expected);
    assert_eq!(requests[0].body, json!({"metadata": {"finalizers": [keys::FINALIZER_PRODUCT], "resourceVersion": "3"}}));
    // One Event says everything the pass made.
    let published = events(&requests);
    assert_eq!(published.len(), 1, "{published:#?}");
    assert!(published[0].starts_with("Normal Created: created ServiceAccount orders-pipeline, "), "{}", published[0]);
    assert!(published[0].contains("granted domain crm read access (RoleBinding orders-read-d-crm)"), "{}", published[0]);
    // The next pass reports, once the new children have settled.
    assert_eq!(action.unwrap(), Action::requeue(Duration::from_secs(1)));
    assert!(world.finish().await.is_empty());
}

#[tokio::test]
async fn the_pass_after_the_children_settled_writes_one_status_and_the_next_writes_nothing() {
    let mut world = world();
    let (_, first) = world.pass(reconcile, &orders()).await;
    world.seed_applied(&first, settle);
    let product = world.after(&orders(), &first);
    let (action, second) = world.pass(reconcile, &product).await;
    assert_eq!(lines(&second), [STATUS]);
    assert_eq!(action.unwrap(), Action::requeue(RESYNC));
    let status: DataProductStatus = written_status(&second);
    assert_eq!(status.phase.as_deref(), Some("Ready"));
    assert_eq!(
        testing::conditions_of(&status.conditions),
        [
            "StorageReady=True (Provisioned)",
            "PipelinesReady=True (Provisioned)",
            "AccessReady=True (Provisioned)",
            "InputsReady=True (Resolved)",
            "PolicyCompliant=True (Compliant)",
            "Ready=True (Reconciled)",
            "Reconciling=False (NotReconciling)",
            "Stalled=False (NotStalled)",
        ]
    );
    let (action, third) = world.pass(reconcile, &world.after(&product, &second)).await;
    assert_eq!(lines(&third), Vec::<String>::new());
    assert_eq!(action.unwrap(), Action::requeue(RESYNC));
    assert!(world.finish().await.is_empty());
}

const KUBECTL_EDIT: &str = "Apply failed with 1 conflict: conflict with \"kubectl-edit\" using apps/v1: .spec.replicas";

/// `kubectl edit` sets the replicas of the Deployment that `first`
/// applied, a field meshplane owns: the API server refuses meshplane's
/// unforced apply of it, naming the manager and the field.
fn edit_replicas(world: &mut World, first: &[Request]) {
    let applied = first.iter().find(|r| r.path.ends_with("/deployments/orders-stream")).unwrap();
    let mut edited = served(&applied.body);
    edited["spec"]["replicas"] = 5.into();
    edited["status"] = json!({"replicas": 5, "availableReplicas": 5});
    world.seed(edited);
    world.server.answer(|request| {
        let unforced = request.is_apply() && request.param("force").is_none();
        (unforced && request.path.ends_with("/deployments/orders-stream")).then(|| Reply::refuse(409, "Conflict", KUBECTL_EDIT))
    });
}

#[tokio::test]
async fn a_field_another_manager_changed_is_restored_by_a_forced_apply_with_a_warning() {
    let mut world = world();
    let (first, product) = provisioned(&mut world).await;
    edit_replicas(&mut world, &first);
    let (action, requests) = world.pass(reconcile, &product).await;
    assert_eq!(
        lines(&requests),
        [
            "apply /apis/apps/v1/namespaces/dm-sales/deployments/orders-stream",
            "apply --force /apis/apps/v1/namespaces/dm-sales/deployments/orders-stream",
            "event Warning FieldManagerConflict",
        ]
    );
    assert_eq!(requests[0].answered, 409);
    assert_eq!(requests[1].body["spec"]["replicas"], 2);
    let warning = &requests[2];
    assert!(warning.note().contains("field manager \"kubectl-edit\" changed .spec.replicas"), "{}", warning.note());
    assert!(warning.note().contains("restore 1 of 3"), "{}", warning.note());
    assert_eq!(warning.body["related"]["name"], "orders-stream");
    // Restored: nothing for the status to say.
    assert_eq!(action.unwrap(), Action::requeue(RESYNC));
}

#[tokio::test]
async fn a_manager_that_keeps_changing_a_field_is_yielded_to_and_the_product_stalls() {
    let mut world = world();
    let (first, product) = provisioned(&mut world).await;
    edit_replicas(&mut world, &first);
    // The edit comes back after every restore.
    for restore in 1..=crate::write::CONFLICT_LIMIT {
        let (_, requests) = world.pass(reconcile, &product).await;
        assert_eq!(events(&requests).len(), 1, "restore {restore}: {:#?}", lines(&requests));
        assert!(requests[2].note().contains(&format!("restore {restore} of 3")), "{}", requests[2].note());
    }
    let (_, requests) = world.pass(reconcile, &product).await;
    assert_eq!(
        lines(&requests),
        ["apply /apis/apps/v1/namespaces/dm-sales/deployments/orders-stream", "event Warning FieldManagerConflict", STATUS]
    );
    assert!(
        requests[1].note().starts_with("meshplane stopped forcing Deployment orders-stream after 3 restores"),
        "{}",
        requests[1].note()
    );
    let status: DataProductStatus = written_status(&requests);
    assert_eq!(status.phase.as_deref(), Some("Stalled"));
    let stalled = status.conditions.iter().find(|c| c.type_ == conditions::STALLED).unwrap();
    assert_eq!((stalled.status.as_str(), stalled.reason.as_str()), ("True", conditions::reason::FIELD_MANAGER_CONFLICT));
}

const REFUSED: &str = "persistentvolumeclaims \"orders-data\" is forbidden: exceeded quota: meshplane-domain-quota, \
                       requested: requests.storage=1Gi, used: requests.storage=10Gi, limited: requests.storage=10Gi";

#[tokio::test]
async fn a_claim_the_quota_refuses_holds_back_no_other_child_and_the_status_names_the_quota() {
    let mut world = world();
    world.server.answer(|request| {
        (request.is_apply() && request.path.ends_with("/persistentvolumeclaims/orders-data"))
            .then(|| Reply::refuse(403, "Forbidden", REFUSED))
    });
    let (action, first) = world.pass(reconcile, &orders()).await;
    // Every child after the refused claim is applied all the same.
    assert_eq!(writes_and_reads(&first)[1..], CHILDREN);
    assert_eq!(first.iter().filter(|r| r.answered == 403).count(), 1);
    assert!(action.is_ok());
    assert!(!events(&first)[0].contains("PersistentVolumeClaim"), "{:#?}", events(&first));

    world.seed_applied(&first, settle);
    let product = world.after(&orders(), &first);
    let (action, second) = world.pass(reconcile, &product).await;
    assert_eq!(lines(&second), ["apply /api/v1/namespaces/dm-sales/persistentvolumeclaims/orders-data", STATUS]);
    let status: DataProductStatus = written_status(&second);
    assert_eq!(
        testing::conditions_of(&status.conditions),
        [
            "StorageReady=False (QuotaExceeded)",
            "PipelinesReady=True (Provisioned)",
            "AccessReady=True (Provisioned)",
            "InputsReady=True (Resolved)",
            "PolicyCompliant=True (Compliant)",
            "Ready=False (QuotaExceeded)",
            "Reconciling=True (QuotaExceeded)",
            "Stalled=False (NotStalled)",
        ]
    );
    assert_eq!(status.conditions[0].message, REFUSED);
    // Quota frees up with no event of the product's: it looks again soon.
    assert_eq!(action.unwrap(), Action::requeue(status::QUOTA_RETRY));
}

/// `orders` on its way out, its storage under `policy`.
fn deleting(policy: &str) -> DataProduct {
    let mut product = testing::yaml(ORDERS);
    product["metadata"]["deletionTimestamp"] = "2026-12-01T00:00:00Z".into();
    product["metadata"]["finalizers"] = json!([keys::FINALIZER_PRODUCT]);
    product["spec"]["storage"][0]["deletionPolicy"] = policy.into();
    testing::parse(product)
}

/// A claim of storage `data` labelled for product `orders`, owned by the
/// product of uid `owner`.
fn claim(name: &str, owner: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {
        "name": name, "namespace": "dm-sales",
        "labels": {keys::LABEL_MANAGED_BY: keys::MANAGED_BY, keys::LABEL_PRODUCT: "orders", keys::LABEL_STORAGE: "data"},
        "ownerReferences": [{"apiVersion": "meshplane.dev/v1alpha1", "kind": "DataProduct", "name": "orders", "uid": owner, "controller": true}]
    }, "spec": {"resources": {"requests": {"storage": "1Gi"}}}, "status": {"phase": "Bound"}})
}

/// Serves the claims labelled for `orders`: its own, and one an earlier
/// product of the same name left behind.
fn claims(world: &World) {
    let listed = vec![claim("orders-data", "p-1"), claim("orders-data-old", "p-0")];
    world.server.answer(move |request| {
        (request.method == http::Method::GET && request.path == "/api/v1/namespaces/dm-sales/persistentvolumeclaims")
            .then(|| Reply::list(listed.clone()))
    });
}

const LIST_CLAIMS: &str = "get /api/v1/namespaces/dm-sales/persistentvolumeclaims?labelSelector=meshplane.dev/product=orders";
const BUCKETS_SERVED: &str = "get /apis/objectstorage.k8s.io/v1alpha1";
const FINALIZER: &str = "merge /apis/meshplane.dev/v1alpha1/namespaces/dm-sales/dataproducts/orders";

#[tokio::test]
async fn deletion_under_retain_releases_the_claim_and_lets_the_product_go() {
    let world = World::start();
    claims(&world);
    let (action, requests) = world.pass(reconcile, &deleting("Retain")).await;
    assert_eq!(
        lines(&requests),
        [
            LIST_CLAIMS,
            "merge /api/v1/namespaces/dm-sales/persistentvolumeclaims/orders-data",
            "event Normal StorageRetained",
            // No bucket API served: no bucket to look for.
            BUCKETS_SERVED,
            FINALIZER,
        ]
    );
    let release = &requests[1];
    assert_eq!(release.param("fieldManager"), Some(keys::FIELD_MANAGER));
    assert_eq!(
        release.body,
        json!({"metadata": {
            "ownerReferences": [],
            "labels": {keys::LABEL_ORPHANED: "true"},
            "annotations": {keys::ANNOTATION_ORPHANED_FROM: "DataProduct dm-sales/orders (uid p-1)"}
        }})
    );
    assert_eq!(requests[4].body, json!({"metadata": {"finalizers": [], "resourceVersion": "3"}}));
    assert_eq!(action.unwrap(), Action::await_change());
}

#[tokio::test]
async fn deletion_under_delete_deletes_the_products_own_claim_and_no_other() {
    let world = World::start();
    claims(&world);
    let (action, requests) = world.pass(reconcile, &deleting("Delete")).await;
    assert_eq!(
        lines(&requests),
        [
            LIST_CLAIMS,
            "delete /api/v1/namespaces/dm-sales/persistentvolumeclaims/orders-data",
            "event Normal StorageDeleted",
            BUCKETS_SERVED,
            FINALIZER,
        ]
    );
    assert_eq!(
        events(&requests),
        ["Normal StorageDeleted: Deleted PersistentVolumeClaim orders-data and its data (deletionPolicy: Delete)"]
    );
    assert_eq!(requests[4].body["metadata"]["finalizers"], json!([]));
    assert_eq!(action.unwrap(), Action::await_change());
}
