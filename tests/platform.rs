//! DataPlatform against the real PostgreSQL server the local control plane
//! runs (`cluster/postgres.sh`): a platform registered with the admin login
//! is Ready with the server's version; every fault a platform team can make
//! is reported with its reason, and a fixed one recovers without a push.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Event, Secret};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use meshplane::api::DataPlatform;
use meshplane::api::conditions::status_of;
use support::*;

/// Where meshplane looks for a platform's admin Secret.
const OWN_NAMESPACE: &str = "meshplane-system";

/// A login of the tests' PostgreSQL, from the files `cluster/postgres.sh`
/// writes (`admin.env`: meshplane's admin; `superuser.env`: for setup only).
struct Login {
    port: u16,
    database: String,
    user: String,
    password: String,
}

fn login(file: &str) -> Login {
    let path = cluster_dir().join("postgres").join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let values: BTreeMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
    Login {
        port: values["PGPORT"].parse().unwrap(),
        database: values["PGDATABASE"].to_string(),
        user: values["PGUSER"].to_string(),
        password: values["PGPASSWORD"].to_string(),
    }
}

/// A Secret in meshplane's namespace with the login `user`/`password`.
async fn admin_secret(client: &Client, name: &str, user: &str, password: &str) {
    let data = BTreeMap::from([
        ("username".to_string(), ByteString(user.as_bytes().to_vec())),
        ("password".to_string(), ByteString(password.as_bytes().to_vec())),
    ]);
    let secret = Secret {
        metadata: kube::api::ObjectMeta { name: Some(name.into()), ..Default::default() },
        data: Some(data),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), OWN_NAMESPACE).create(&PostParams::default(), &secret).await.unwrap();
}

fn platform_manifest(name: &str, port: u16, database: &str, secret: &str) -> String {
    format!(
        "apiVersion: meshplane.dev/v1alpha1\nkind: DataPlatform\nmetadata: {{name: {name}}}\n\
         spec: {{engine: Postgres, postgres: {{host: 127.0.0.1, port: {port}, database: {database}}}, adminSecretRef: {{name: {secret}}}}}"
    )
}

/// Waits until the platform's Ready condition has `status` and `reason`;
/// returns the platform.
async fn wait_platform(client: &Client, name: &str, status: &str, reason: &str) -> DataPlatform {
    let api = Api::<DataPlatform>::all(client.clone());
    wait_until(&format!("DataPlatform {name} Ready={status} ({reason})"), Duration::from_secs(30), || async {
        let platform = api.get_opt(name).await.ok()??;
        let conditions = &platform.status.as_ref()?.conditions;
        let ready = conditions.iter().find(|c| c.type_ == "Ready")?;
        (ready.status == status && ready.reason == reason).then_some(platform)
    })
    .await
}

/// The Warning Events about the platform, by reason.
async fn warnings(client: &Client, name: &str) -> Vec<String> {
    let events = Api::<Event>::namespaced(client.clone(), "default")
        .list(&ListParams::default().fields(&format!("involvedObject.name={name},involvedObject.kind=DataPlatform")))
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    events.into_iter().filter(|e| e.type_.as_deref() == Some("Warning")).filter_map(|e| e.reason).collect()
}

/// Runs `statement` on the tests' PostgreSQL as its superuser.
async fn as_superuser(statement: &str) {
    let su = login("superuser.env");
    let (client, connection) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(su.port)
        .dbname(&su.database)
        .user(&su.user)
        .password(&su.password)
        .connect(tokio_postgres::NoTls)
        .await
        .expect("connecting as the superuser");
    tokio::spawn(connection);
    client.batch_execute(statement).await.unwrap_or_else(|e| panic!("{statement}: {e}"));
}

#[tokio::test]
async fn a_registered_postgres_engine_is_ready_with_its_version() {
    operator();
    let client = cluster().await;
    let admin = login("admin.env");
    let name = unique("warehouse");
    admin_secret(&client, &name, &admin.user, &admin.password).await;
    apply(&platform_manifest(&name, admin.port, &admin.database, &name));
    let platform = wait_platform(&client, &name, "True", "Reconciled").await;
    let status = platform.status.unwrap();
    let version = status.version.unwrap_or_default();
    assert!(version.starts_with("PostgreSQL 1"), "the server's version: {version}");
    assert_eq!(status_of(&status.conditions, "Stalled"), Some("False"));
    assert_eq!(status.observed_generation, platform.metadata.generation);
    // `kubectl get` shows the engine, its readiness and its version.
    let row = kubectl(&["get", "dataplatform", &name, "--no-headers"]);
    assert!(row.contains("Postgres") && row.contains("True") && row.contains(&version), "{row}");
    // The password appears nowhere in what meshplane writes about it.
    let yaml = kubectl(&["get", "dataplatform", &name, "-o", "yaml"]);
    assert!(!yaml.contains(&admin.password), "the admin password leaked into the DataPlatform");
}

#[tokio::test]
async fn a_wrong_password_stalls_the_platform_with_a_warning_and_a_fixed_secret_recovers_it() {
    operator();
    let client = cluster().await;
    let admin = login("admin.env");
    let name = unique("wrong-password");
    admin_secret(&client, &name, &admin.user, "not-the-password").await;
    apply(&platform_manifest(&name, admin.port, &admin.database, &name));
    let platform = wait_platform(&client, &name, "False", "AuthenticationFailed").await;
    let conditions = platform.status.unwrap().conditions;
    assert_eq!(status_of(&conditions, "Stalled"), Some("True"), "a refused login needs a person");
    let message = &conditions.iter().find(|c| c.type_ == "Ready").unwrap().message;
    assert!(message.contains(&admin.user) && !message.contains("not-the-password"), "{message}");
    wait_until("an AuthenticationFailed Warning", Duration::from_secs(10), || async {
        warnings(&client, &name).await.iter().any(|r| r == "AuthenticationFailed").then_some(())
    })
    .await;

    // The platform team fixes the Secret: no event of the platform's, so the
    // platform looks again on its own.
    let secrets = Api::<Secret>::namespaced(client.clone(), OWN_NAMESPACE);
    secrets.delete(&name, &DeleteParams::default()).await.unwrap();
    admin_secret(&client, &name, &admin.user, &admin.password).await;
    wait_platform(&client, &name, "True", "Reconciled").await;
}

#[tokio::test]
async fn an_engine_out_of_reach_is_unreachable_and_still_reconciling() {
    operator();
    let client = cluster().await;
    let admin = login("admin.env");
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let name = unique("unreachable");
    admin_secret(&client, &name, &admin.user, &admin.password).await;
    apply(&platform_manifest(&name, port, &admin.database, &name));
    let platform = wait_platform(&client, &name, "False", "Unreachable").await;
    let conditions = platform.status.unwrap().conditions;
    assert_eq!(status_of(&conditions, "Reconciling"), Some("True"));
    assert_eq!(status_of(&conditions, "Stalled"), Some("False"), "an engine may come back by itself");
}

#[tokio::test]
async fn an_admin_without_createrole_or_one_that_is_a_superuser_misses_what_meshplane_needs() {
    operator();
    let client = cluster().await;
    let admin = login("admin.env");
    for (prefix, attributes, expected) in
        [("no-createrole", "LOGIN", "lacks CREATEROLE"), ("superuser", "LOGIN SUPERUSER", "is a superuser")]
    {
        let name = unique(prefix);
        let role = name.replace('-', "_");
        let password = format!("pw-{role}");
        as_superuser(&format!(
            "CREATE ROLE {role} {attributes} PASSWORD '{password}'; GRANT CONNECT, CREATE ON DATABASE {} TO {role}",
            admin.database
        ))
        .await;
        admin_secret(&client, &name, &role, &password).await;
        apply(&platform_manifest(&name, admin.port, &admin.database, &name));
        let platform = wait_platform(&client, &name, "False", "MissingPrivilege").await;
        let conditions = platform.status.unwrap().conditions;
        let message = &conditions.iter().find(|c| c.type_ == "Ready").unwrap().message;
        assert!(message.contains(expected), "{message}");
    }
}

#[tokio::test]
async fn a_missing_secret_or_database_is_named() {
    operator();
    let client = cluster().await;
    let admin = login("admin.env");
    let name = unique("no-secret");
    apply(&platform_manifest(&name, admin.port, &admin.database, "does-not-exist"));
    let platform = wait_platform(&client, &name, "False", "SecretNotFound").await;
    let message = platform.status.unwrap().conditions.into_iter().find(|c| c.type_ == "Ready").unwrap().message;
    assert!(message.contains("meshplane-system/does-not-exist"), "{message}");

    let name = unique("no-database");
    admin_secret(&client, &name, &admin.user, &admin.password).await;
    apply(&platform_manifest(&name, admin.port, "no_such_database", &name));
    wait_platform(&client, &name, "False", "DatabaseNotFound").await;
}

#[test]
fn a_postgres_platform_without_its_endpoint_is_refused_by_the_api_server() {
    ensure_cluster();
    let name = unique("no-endpoint");
    let manifest = format!(
        "apiVersion: meshplane.dev/v1alpha1\nkind: DataPlatform\nmetadata: {{name: {name}}}\n\
         spec: {{engine: Postgres, adminSecretRef: {{name: x}}}}"
    );
    let out = kubectl_stdin(&["apply", "--dry-run=server", "-f", "-"], &manifest);
    assert!(!out.status.success(), "a Postgres platform without spec.postgres was admitted");
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(error.contains("spec.postgres is required when spec.engine is Postgres"), "{error}");
}
