//! Domain reconcile tests that need no cluster.

use std::sync::Arc;

use futures::StreamExt;

use super::*;
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
