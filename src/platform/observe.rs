//! What a platform pass reads: the admin login's Secret (in meshplane's own
//! namespace) and the engine itself, over a connection of its own.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use tokio_postgres::error::SqlState;

use crate::api::DataPlatform;
use crate::api::platform::{Engine, PostgresEndpoint};
use crate::error::{Error, Result};
use crate::operator::Context;

/// How long connecting to an engine, and each question to it, may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// What a pass found of the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    /// Reached with the admin login, which holds every privilege meshplane
    /// needs.
    Ready { version: String },
    /// The Secret of the admin login is missing or lacks a key.
    SecretNotFound(String),
    /// The spec cannot be acted on (no endpoint for its engine).
    InvalidSpec(String),
    /// No connection: refused, timed out, name not resolved.
    Unreachable(String),
    /// The engine refused the admin login.
    AuthenticationFailed(String),
    /// The database named does not exist on the engine.
    DatabaseNotFound(String),
    /// The admin login lacks a privilege meshplane needs, or is a superuser.
    MissingPrivilege(String),
}

/// The admin login, from its Secret.
pub struct Admin {
    pub username: String,
    pub password: String,
}

/// Reads the admin login and asks the engine what meshplane needs to know.
pub async fn engine(platform: &DataPlatform, ctx: &Context) -> Result<Found> {
    let admin = match admin(platform, ctx).await? {
        Ok(admin) => admin,
        Err(found) => return Ok(found),
    };
    Ok(match platform.spec.engine {
        Engine::Postgres => match &platform.spec.postgres {
            Some(endpoint) => postgres(endpoint, &admin).await,
            None => Found::InvalidSpec("spec.postgres is required when spec.engine is Postgres".into()),
        },
    })
}

/// The admin login from the Secret the platform names, in meshplane's own
/// namespace (read each pass: meshplane caches no Secret).
async fn admin(platform: &DataPlatform, ctx: &Context) -> Result<std::result::Result<Admin, Found>> {
    let namespace = &ctx.settings.domain.platform_namespace;
    let name = &platform.spec.admin_secret_ref.name;
    let secret = Api::<Secret>::namespaced(ctx.client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(Error::kube(format!("reading Secret {namespace}/{name}")))?;
    let Some(secret) = secret else {
        return Ok(Err(Found::SecretNotFound(format!("Secret {namespace}/{name} (spec.adminSecretRef) does not exist"))));
    };
    let data = secret.data.unwrap_or_default();
    let key = |key: &str| data.get(key).map(|v| String::from_utf8_lossy(&v.0).into_owned()).filter(|v| !v.is_empty());
    match (key("username"), key("password")) {
        (Some(username), Some(password)) => Ok(Ok(Admin { username, password })),
        _ => Ok(Err(Found::SecretNotFound(format!(
            "Secret {namespace}/{name} (spec.adminSecretRef) must hold the keys `username` and `password`"
        )))),
    }
}

/// Connects to a PostgreSQL server as the admin and checks its privileges.
pub async fn postgres(endpoint: &PostgresEndpoint, admin: &Admin) -> Found {
    let mut config = tokio_postgres::Config::new();
    config
        .host(&endpoint.host)
        .port(endpoint.port)
        .dbname(&endpoint.database)
        .user(&admin.username)
        .password(&admin.password)
        .application_name("meshplane")
        .connect_timeout(TIMEOUT);
    let where_ = format!("{}:{}/{}", endpoint.host, endpoint.port, endpoint.database);
    let connected = tokio::time::timeout(TIMEOUT, config.connect(tokio_postgres::NoTls)).await;
    let (client, connection) = match connected {
        Ok(Ok(pair)) => pair,
        Ok(Err(error)) => return refused(&where_, &admin.username, &error),
        Err(_) => return Found::Unreachable(format!("no answer from {where_} within {}s", TIMEOUT.as_secs())),
    };
    // The connection runs beside the questions, and ends with the client.
    let connection = tokio::spawn(connection);
    let question = "SELECT split_part(current_setting('server_version'), ' ', 1), r.rolsuper, r.rolcreaterole, \
                    has_database_privilege(current_database(), 'CREATE') FROM pg_roles r WHERE r.rolname = current_user";
    let answer = tokio::time::timeout(TIMEOUT, client.query_one(question, &[])).await;
    drop(client);
    let _ = connection.await;
    let row = match answer {
        Ok(Ok(row)) => row,
        Ok(Err(error)) => return Found::Unreachable(format!("{where_}: {error}")),
        Err(_) => return Found::Unreachable(format!("{where_} did not answer within {}s", TIMEOUT.as_secs())),
    };
    let (version, superuser, create_role, create): (String, bool, bool, bool) = (row.get(0), row.get(1), row.get(2), row.get(3));
    let user = &admin.username;
    let mut missing = Vec::new();
    if !create_role {
        missing.push("CREATEROLE".to_string());
    }
    if !create {
        missing.push(format!("CREATE on database {}", endpoint.database));
    }
    if superuser {
        return Found::MissingPrivilege(format!(
            "role {user} is a superuser; give meshplane a role with LOGIN, CREATEROLE and CREATE on the database instead"
        ));
    }
    if !missing.is_empty() {
        return Found::MissingPrivilege(format!("role {user} lacks {}", missing.join(" and ")));
    }
    Found::Ready { version: format!("PostgreSQL {version}") }
}

/// Why the server refused a connection, as a reader should hear it.
fn refused(where_: &str, user: &str, error: &tokio_postgres::Error) -> Found {
    match error.code() {
        Some(code) if *code == SqlState::INVALID_PASSWORD || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION => {
            Found::AuthenticationFailed(format!("{where_} refused the login of role {user}: {}", server_message(error)))
        }
        Some(code) if *code == SqlState::INVALID_CATALOG_NAME => Found::DatabaseNotFound(format!("{where_}: {}", server_message(error))),
        Some(_) => Found::Unreachable(format!("{where_}: {}", server_message(error))),
        None => Found::Unreachable(format!("cannot connect to {where_}: {error}")),
    }
}

/// The server's own message for an error it sent.
fn server_message(error: &tokio_postgres::Error) -> String {
    error.as_db_error().map(|e| e.message().to_string()).unwrap_or_else(|| error.to_string())
}
