//! Domain reconcile tests that need no cluster.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::controller::Action;
use serde_json::json;

use super::*;
use crate::api::DataDomainStatus;
use crate::operator::testing::{self, Reply, World, events, writes_and_reads, written_status};
use crate::plumbing::watch::Change;

fn domain(generation: i64, count: i32, namespace: &str) -> Arc<DataDomain> {
    let mut d: DataDomain = serde_saphyr::from_str(&format!(
        "apiVersion: meshplane.dev/v1alpha1\nkind: DataDomain\nmetadata: {{name: sales, uid: u1, generation: {generation}}}\nspec: {{}}\n\
         status: {{namespace: {namespace}, dataProducts: {count}}}"
    ))
    .unwrap();
    d.metadata.labels = None;
    Arc::new(d)
}

fn applied(object: Arc<DataDomain>) -> Change<DataDomain> {
    Change { object, deleted: false }
}

#[tokio::test]
async fn a_domain_event_reaches_products_only_when_what_they_read_changed() {
    let events = futures::stream::iter(vec![
        applied(domain(1, 0, "dm-sales")),
        // Its product count: nothing a product reads.
        applied(domain(1, 1, "dm-sales")),
        applied(domain(1, 2, "dm-sales")),
        // Its spec.
        applied(domain(2, 2, "dm-sales")),
        // Its namespace.
        applied(domain(2, 2, "dm-sales-2")),
        applied(domain(2, 3, "dm-sales-2")),
        // Its deletion, which changes nothing else about it.
        Change { object: domain(2, 3, "dm-sales-2"), deleted: true },
        // Made again with the same name and fields: a new arrival.
        applied(domain(2, 3, "dm-sales-2")),
    ])
    .boxed();
    let passed: Vec<(Option<i64>, Option<String>, bool)> = changes(events)
        .map(|c| (c.object.metadata.generation, c.object.status.as_ref().and_then(|s| s.namespace.clone()), c.deleted))
        .collect()
        .await;
    assert_eq!(
        passed,
        [
            (Some(1), Some("dm-sales".into()), false),
            (Some(2), Some("dm-sales".into()), false),
            (Some(2), Some("dm-sales-2".into()), false),
            (Some(2), Some("dm-sales-2".into()), true),
            (Some(2), Some("dm-sales-2".into()), false),
        ]
    );
}

// Passes against a stand-in API server (see `crate::operator::testing`).

const SALES: &str = "
apiVersion: meshplane.dev/v1alpha1
kind: DataDomain
metadata: {name: sales, uid: d-1, generation: 1, resourceVersion: '7'}
spec:
  owners: [{kind: Group, name: sales-leads}]
  members: [{kind: User, name: ann}]
";

fn sales() -> DataDomain {
    testing::parse(testing::yaml(SALES))
}

const RESYNC: Duration = Duration::from_secs(300);

#[tokio::test]
async fn a_first_pass_applies_the_whole_tenant_and_writes_one_status() {
    let world = World::start();
    let (action, requests) = world.pass(reconcile, &sales()).await;
    assert_eq!(action.unwrap(), Action::requeue(RESYNC));
    assert_eq!(
        writes_and_reads(&requests),
        [
            "merge /apis/meshplane.dev/v1alpha1/datadomains/sales",
            // Not in the cache: meshplane asks whether someone else made it.
            "get /api/v1/namespaces/dm-sales",
            "apply --force /api/v1/namespaces/dm-sales",
            "apply --force /apis/rbac.authorization.k8s.io/v1/namespaces/dm-sales/rolebindings/meshplane-domain-owners",
            "apply --force /apis/rbac.authorization.k8s.io/v1/namespaces/dm-sales/rolebindings/meshplane-domain-members",
            "apply --force /apis/rbac.authorization.k8s.io/v1/namespaces/dm-sales/rolebindings/meshplane-domain-viewers",
            "apply --force /api/v1/namespaces/dm-sales/resourcequotas/meshplane-domain-quota",
            "apply --force /api/v1/namespaces/dm-sales/limitranges/meshplane-domain-defaults",
            "apply --force /apis/networking.k8s.io/v1/namespaces/dm-sales/networkpolicies/meshplane-default-deny",
            "apply --force /apis/networking.k8s.io/v1/namespaces/dm-sales/networkpolicies/meshplane-allow-same-domain",
            "apply --force /apis/networking.k8s.io/v1/namespaces/dm-sales/networkpolicies/meshplane-allow-platform",
            "apply --force /apis/networking.k8s.io/v1/namespaces/dm-sales/networkpolicies/meshplane-allow-dns",
            "apply --force /apis/meshplane.dev/v1alpha1/datadomains/sales/status",
        ]
    );
    // The finalizer goes on first, guarded by the version it was read at.
    assert_eq!(requests[0].body, json!({"metadata": {"finalizers": [keys::FINALIZER_DOMAIN], "resourceVersion": "7"}}));
    let members = requests.iter().find(|r| r.path.ends_with("/meshplane-domain-members")).unwrap();
    assert_eq!(members.body["subjects"], json!([{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "ann"}]));
    assert_eq!(members.body["metadata"]["ownerReferences"][0]["uid"], "d-1");
    // One Event per child, naming it.
    let published = events(&requests);
    assert_eq!(published.len(), 10, "{published:#?}");
    assert_eq!(published[0], "Normal Created: Created Namespace dm-sales");
    assert!(published.iter().all(|e| e.starts_with("Normal Created: Created ")), "{published:#?}");
    let status: DataDomainStatus = written_status(&requests);
    assert_eq!((status.namespace.as_deref(), status.data_products, status.observed_generation), (Some("dm-sales"), Some(0), Some(1)));
    assert_eq!(
        testing::conditions_of(&status.conditions),
        [
            "NamespaceReady=True (Provisioned)",
            "AccessReady=True (Provisioned)",
            // Nothing has accounted the new quota yet.
            "QuotaReady=False (QuotaPending)",
            "NetworkReady=True (Provisioned)",
            "Ready=False (QuotaPending)",
            "Reconciling=True (QuotaPending)",
            "Stalled=False (NotStalled)",
        ]
    );
    assert!(world.finish().await.is_empty());
}

#[tokio::test]
async fn a_second_pass_over_what_the_first_applied_makes_no_request() {
    let mut world = World::start();
    let (_, first) = world.pass(reconcile, &sales()).await;
    world.seed_applied(&first, |_| {});
    let domain = world.after(&sales(), &first);
    assert!(domain.finalizers().contains(&keys::FINALIZER_DOMAIN.to_string()) && domain.status.is_some());
    let (action, second) = world.pass(reconcile, &domain).await;
    assert_eq!(testing::lines(&second), Vec::<String>::new());
    assert_eq!(action.unwrap(), Action::requeue(RESYNC));
    assert!(world.finish().await.is_empty());
}

#[tokio::test]
async fn once_the_quota_is_accounted_one_status_write_makes_the_domain_ready() {
    let mut world = World::start();
    let (_, first) = world.pass(reconcile, &sales()).await;
    // The quota controller has computed the usage of every limit.
    world.seed_applied(&first, |object| {
        if object["kind"] == "ResourceQuota" {
            let used: serde_json::Map<String, serde_json::Value> =
                object["spec"]["hard"].as_object().unwrap().keys().map(|k| (k.clone(), json!("0"))).collect();
            object["status"] = json!({"hard": object["spec"]["hard"], "used": used});
        }
    });
    let domain = world.after(&sales(), &first);
    let (_, second) = world.pass(reconcile, &domain).await;
    assert_eq!(testing::lines(&second), ["apply --force /apis/meshplane.dev/v1alpha1/datadomains/sales/status"]);
    let status: DataDomainStatus = written_status(&second);
    assert_eq!(
        testing::conditions_of(&status.conditions),
        [
            "NamespaceReady=True (Provisioned)",
            "AccessReady=True (Provisioned)",
            "QuotaReady=True (Provisioned)",
            "NetworkReady=True (Provisioned)",
            "Ready=True (Reconciled)",
            "Reconciling=False (NotReconciling)",
            "Stalled=False (NotStalled)",
        ]
    );
    // A condition that did not flip keeps the time it last did.
    let before = domain.status.as_ref().unwrap();
    assert_eq!(status.conditions[0].last_transition_time, before.conditions[0].last_transition_time);
    let (_, third) = world.pass(reconcile, &world.after(&domain, &second)).await;
    assert_eq!(testing::lines(&third), Vec::<String>::new());
}

/// `sales` on its way out under `policy`, with another controller's
/// finalizer besides meshplane's.
fn deleting(policy: &str) -> DataDomain {
    let mut domain = testing::yaml(SALES);
    domain["metadata"]["deletionTimestamp"] = "2026-12-01T00:00:00Z".into();
    domain["metadata"]["finalizers"] = json!([keys::FINALIZER_DOMAIN, "backup.example.com/hold"]);
    domain["spec"]["deletionPolicy"] = policy.into();
    domain["status"] = json!({"namespace": "dm-sales"});
    testing::parse(domain)
}

/// Serves the namespace `dm-sales`, owned by the domain of uid `owner`,
/// and the products in it.
fn cluster(world: &World, owner: &str, products: &[&str]) {
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "dm-sales", "ownerReferences": [
        {"apiVersion": "meshplane.dev/v1alpha1", "kind": "DataDomain", "name": "sales", "uid": owner}]}});
    let products: Vec<serde_json::Value> = products
        .iter()
        .map(|name| json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": {"name": name, "namespace": "dm-sales"}}))
        .collect();
    world.server.answer(move |request| match (request.method.as_str(), request.path.as_str()) {
        ("GET", "/api/v1/namespaces/dm-sales") => Some(Reply::ok(namespace.clone())),
        ("GET", "/apis/meshplane.dev/v1alpha1/namespaces/dm-sales/dataproducts") => Some(Reply::list(products.clone())),
        _ => None,
    });
}

#[tokio::test]
async fn deletion_under_block_waits_while_products_remain_and_says_which() {
    let world = World::start();
    cluster(&world, "d-1", &["orders", "invoices"]);
    let (action, requests) = world.pass(reconcile, &deleting("Block")).await;
    assert_eq!(
        testing::lines(&requests),
        [
            // Asked of the API server, not the caches: deletion acts on nothing stale.
            "get /api/v1/namespaces/dm-sales",
            "get /apis/meshplane.dev/v1alpha1/namespaces/dm-sales/dataproducts",
            "event Warning DataProductsRemain",
            "apply --force /apis/meshplane.dev/v1alpha1/datadomains/sales/status",
        ]
    );
    assert_eq!(action.unwrap(), Action::requeue(Duration::from_secs(30)));
    let status: DataDomainStatus = written_status(&requests);
    let deleting = status.conditions.iter().find(|c| c.type_ == conditions::DELETING).unwrap();
    assert_eq!((deleting.status.as_str(), deleting.reason.as_str()), ("True", reason::DATA_PRODUCTS_REMAIN));
    assert!(deleting.message.contains("2 DataProduct(s) (orders, invoices)"), "{}", deleting.message);
    assert_eq!(status.data_products, Some(2));
}

#[tokio::test]
async fn deletion_under_block_once_no_product_remains_deletes_the_namespace_and_removes_only_meshplanes_finalizer() {
    let world = World::start();
    cluster(&world, "d-1", &[]);
    let (action, requests) = world.pass(reconcile, &deleting("Block")).await;
    assert_eq!(
        testing::lines(&requests),
        [
            "get /api/v1/namespaces/dm-sales",
            "get /apis/meshplane.dev/v1alpha1/namespaces/dm-sales/dataproducts",
            "delete /api/v1/namespaces/dm-sales",
            "event Normal Deleted",
            "merge /apis/meshplane.dev/v1alpha1/datadomains/sales",
        ]
    );
    assert_eq!(action.unwrap(), Action::await_change());
    assert_eq!(requests[4].body, json!({"metadata": {"finalizers": ["backup.example.com/hold"], "resourceVersion": "7"}}));
}

#[tokio::test]
async fn deletion_under_cascade_deletes_the_namespace_with_its_products() {
    let world = World::start();
    cluster(&world, "d-1", &["orders"]);
    let (action, requests) = world.pass(reconcile, &deleting("Cascade")).await;
    assert_eq!(
        testing::lines(&requests),
        [
            "get /api/v1/namespaces/dm-sales",
            "delete /api/v1/namespaces/dm-sales",
            "event Normal Deleted",
            "merge /apis/meshplane.dev/v1alpha1/datadomains/sales",
        ]
    );
    assert_eq!(events(&requests), ["Normal Deleted: Deleted namespace dm-sales (Cascade deletion policy)"]);
    assert_eq!(action.unwrap(), Action::await_change());
    assert_eq!(requests[3].body["metadata"]["finalizers"], json!(["backup.example.com/hold"]));
}

#[tokio::test]
async fn deletion_never_deletes_a_namespace_the_domain_does_not_own() {
    let world = World::start();
    cluster(&world, "someone-else", &["orders"]);
    let (_, requests) = world.pass(reconcile, &deleting("Cascade")).await;
    assert_eq!(testing::lines(&requests), ["get /api/v1/namespaces/dm-sales", "merge /apis/meshplane.dev/v1alpha1/datadomains/sales"]);
}

#[tokio::test]
async fn deletion_acts_on_the_namespace_the_domain_made_even_when_its_spec_now_names_another() {
    let world = World::start();
    cluster(&world, "d-1", &["orders"]);
    let mut domain = deleting("Block");
    domain.spec.namespace = Some("sales-v2".into());
    let (action, requests) = world.pass(reconcile, &domain).await;
    assert_eq!(
        testing::lines(&requests),
        [
            "get /api/v1/namespaces/dm-sales",
            "get /apis/meshplane.dev/v1alpha1/namespaces/dm-sales/dataproducts",
            "event Warning DataProductsRemain",
            "apply --force /apis/meshplane.dev/v1alpha1/datadomains/sales/status",
        ],
        "Block holds while the namespace it made holds products"
    );
    assert_eq!(action.unwrap(), Action::requeue(Duration::from_secs(30)));
}
