//! Platform reconcile tests that need no cluster: passes against a stand-in
//! API server (see `crate::operator::testing`). The engine itself is tested
//! for real in `tests/platform.rs`.

use std::time::Duration;

use serde_json::json;

use super::*;
use crate::api::DataPlatformStatus;
use crate::operator::testing::{self, Reply, World, events, lines, written_status};

const SECRET: &str = "get /api/v1/namespaces/meshplane-system/secrets/warehouse-admin";
const STATUS: &str = "apply --force /apis/meshplane.dev/v1alpha1/dataplatforms/warehouse/status";

/// A platform on `port` of this machine, its admin in `warehouse-admin`.
fn warehouse(port: u16) -> DataPlatform {
    testing::parse(json!({
        "apiVersion": "meshplane.dev/v1alpha1", "kind": "DataPlatform",
        "metadata": {"name": "warehouse", "uid": "w-1", "generation": 1},
        "spec": {"engine": "Postgres", "postgres": {"host": "127.0.0.1", "port": port, "database": "meshplane"},
                 "adminSecretRef": {"name": "warehouse-admin"}}
    }))
}

/// Serves the admin Secret with `data` (values base64).
fn secret(world: &World, data: serde_json::Value) {
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "warehouse-admin", "namespace": "meshplane-system"}, "data": data});
    world.server.answer(move |request| (request.line() == SECRET).then(|| Reply::ok(secret.clone())));
}

fn ready(status: &DataPlatformStatus) -> (String, String, String) {
    let c = status.conditions.iter().find(|c| c.type_ == conditions::READY).unwrap();
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

#[tokio::test]
async fn a_missing_admin_secret_stalls_the_platform_once_and_a_second_pass_writes_nothing() {
    let world = World::start();
    let platform = warehouse(5432);
    let (action, requests) = world.pass(reconcile, &platform).await;
    assert_eq!(lines(&requests), [SECRET, "event Warning SecretNotFound", STATUS]);
    assert_eq!(action.unwrap(), Action::requeue(status::RETRY), "a Secret made later is no event of the platform's");
    let status: DataPlatformStatus = written_status(&requests);
    let (ready_, reason, message) = ready(&status);
    assert_eq!((ready_.as_str(), reason.as_str()), ("False", "SecretNotFound"));
    assert!(message.contains("meshplane-system/warehouse-admin"), "{message}");
    assert_eq!(testing::conditions_of(&status.conditions)[2], "Stalled=True (SecretNotFound)");

    // The same finding again: read the Secret, nothing written.
    let (_, second) = world.pass(reconcile, &world.after(&platform, &requests)).await;
    assert_eq!(lines(&second), [SECRET]);
}

#[tokio::test]
async fn a_secret_without_a_password_is_named() {
    let world = World::start();
    secret(&world, json!({"username": "bWVzaHBsYW5l"}));
    let (_, requests) = world.pass(reconcile, &warehouse(5432)).await;
    let (_, reason, message) = ready(&written_status(&requests));
    assert_eq!(reason, "SecretNotFound");
    assert!(message.contains("must hold the keys `username` and `password`"), "{message}");
}

#[tokio::test]
async fn an_engine_that_refuses_connections_is_unreachable_and_the_password_is_said_nowhere() {
    let world = World::start();
    // "meshplane" / "s3cret-pw"
    secret(&world, json!({"username": "bWVzaHBsYW5l", "password": "czNjcmV0LXB3"}));
    // A port nothing listens on: the connection is refused at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (action, requests) = world.pass(reconcile, &warehouse(port)).await;
    assert_eq!(lines(&requests), [SECRET, "event Warning Unreachable", STATUS]);
    assert_eq!(action.unwrap(), Action::requeue(Duration::from_secs(10)));
    let status: DataPlatformStatus = written_status(&requests);
    assert_eq!(
        testing::conditions_of(&status.conditions),
        ["Ready=False (Unreachable)", "Reconciling=True (Unreachable)", "Stalled=False (NotStalled)"]
    );
    for request in &requests {
        assert!(!request.body.to_string().contains("s3cret-pw"), "the password in {}", request.line());
    }
    assert!(events(&requests)[0].contains(&format!("127.0.0.1:{port}/meshplane")), "{:?}", events(&requests));
}
