//! The catalog's HTTP API (`/api/v1`), served by every replica from its
//! caches. Callers present a bearer token, which the cluster checks
//! (TokenReview); a Restricted product is visible only to those who may `get`
//! it (SubjectAccessReview). Authentication can be turned off for local
//! development.

// Handlers return a ready Response as their error: it is what axum sends.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query as UrlQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, UserInfo};
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use kube::api::{Api, PostParams};
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::watch;

use super::index::Entry;
use super::{Query, detail, domain_summary, lineage};
use crate::api::product::Classification;
use crate::api::{DataDomain, DataProduct};

/// The caches the catalog reads, once the controllers have built them.
#[derive(Clone)]
pub struct CatalogCaches {
    pub domains: Store<DataDomain>,
    pub products: Store<DataProduct>,
    /// Kept current by the products' watch events.
    pub index: Arc<super::index::Index>,
}

#[derive(Clone)]
pub struct CatalogState {
    client: Client,
    caches: watch::Receiver<Option<CatalogCaches>>,
    authenticate: bool,
    /// Recent answers of the cluster, so a page of results costs no review storm.
    reviews: Arc<Mutex<HashMap<String, (Instant, bool)>>>,
}

const REVIEW_TTL: Duration = Duration::from_secs(10);

impl CatalogState {
    pub fn new(client: Client, caches: watch::Receiver<Option<CatalogCaches>>, authenticate: bool) -> Self {
        CatalogState { client, caches, authenticate, reviews: Arc::default() }
    }
}

pub fn router(state: CatalogState) -> Router {
    Router::new()
        .route("/api/v1/domains", get(domains))
        .route("/api/v1/products", get(products))
        .route("/api/v1/products/{namespace}/{name}", get(product))
        .route("/api/v1/products/{namespace}/{name}/odps", get(product_odps))
        .route("/api/v1/lineage", get(lineage_graph))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/", get(search_page))
        .route("/products/{namespace}/{name}", get(product_page))
        .route("/domains/{name}", get(domain_page))
        .route("/lineage", get(lineage_page))
        .route("/login", get(login_form).post(login))
        .with_state(state)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

const COOKIE: &str = "meshplane_token";

/// The caller's token: the Authorization header (API clients) or the cookie
/// the login page sets (browsers).
fn token_of(headers: &HeaderMap) -> Option<String> {
    if let Some(t) = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")) {
        return Some(t.trim().to_string());
    }
    headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(&format!("{COOKIE}=")).map(str::to_string))
}

/// Who is asking: `None` when authentication is off.
struct Caller(Option<UserInfo>);

async fn authenticate(state: &CatalogState, headers: &HeaderMap) -> Result<Caller, Response> {
    if !state.authenticate {
        return Ok(Caller(None));
    }
    let token =
        token_of(headers).ok_or_else(|| error(StatusCode::UNAUTHORIZED, "a bearer token is required (Authorization: Bearer <token>)"))?;
    let review = TokenReview { spec: TokenReviewSpec { token: Some(token.to_string()), audiences: None }, ..Default::default() };
    let reviewed = Api::<TokenReview>::all(state.client.clone())
        .create(&PostParams::default(), &review)
        .await
        .map_err(|e| error(StatusCode::BAD_GATEWAY, format!("the cluster could not review the token: {e}")))?;
    let status = reviewed.status.unwrap_or_default();
    match (status.authenticated, status.user) {
        (Some(true), Some(user)) => Ok(Caller(Some(user))),
        _ => Err(error(StatusCode::UNAUTHORIZED, "the token is not valid for this cluster")),
    }
}

/// Whether the caller may see the product: anyone authenticated may see
/// products below Restricted; a Restricted one only those who may `get` it.
async fn visible(state: &CatalogState, caller: &Caller, product: &DataProduct) -> bool {
    let Some(user) = &caller.0 else { return true };
    if product.spec.classification != Classification::Restricted {
        return true;
    }
    let namespace = product.namespace().unwrap_or_default();
    let name = product.name_any();
    let username = user.username.clone().unwrap_or_default();
    let key = format!("{username}\u{0}{namespace}\u{0}{name}");
    if let Some((at, allowed)) = state.reviews.lock().unwrap_or_else(|e| e.into_inner()).get(&key)
        && at.elapsed() < REVIEW_TTL
    {
        return *allowed;
    }
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: user.username.clone(),
            groups: user.groups.clone(),
            uid: user.uid.clone(),
            extra: user.extra.clone(),
            resource_attributes: Some(ResourceAttributes {
                group: Some(crate::keys::GROUP.into()),
                resource: Some("dataproducts".into()),
                verb: Some("get".into()),
                namespace: Some(namespace),
                name: Some(name),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let allowed = match Api::<SubjectAccessReview>::all(state.client.clone()).create(&PostParams::default(), &review).await {
        Ok(r) => r.status.is_some_and(|s| s.allowed),
        Err(e) => {
            tracing::warn!(error = %e, "subject access review failed; hiding the product");
            false
        }
    };
    state.reviews.lock().unwrap_or_else(|e| e.into_inner()).insert(key, (Instant::now(), allowed));
    allowed
}

fn caches(state: &CatalogState) -> Result<CatalogCaches, Response> {
    state.caches.borrow().clone().ok_or_else(|| error(StatusCode::SERVICE_UNAVAILABLE, "the catalog is starting"))
}

/// What every request starts with: who asks, and the caches to answer from.
/// A page sends an unauthenticated browser to the login form; the API
/// answers 401.
async fn open(state: &CatalogState, headers: &HeaderMap, page: bool) -> Result<(Caller, CatalogCaches), Response> {
    let caller = authenticate(state, headers).await.map_err(|r| {
        if page && r.status() == StatusCode::UNAUTHORIZED { axum::response::Redirect::to("/login").into_response() } else { r }
    })?;
    Ok((caller, caches(state)?))
}

/// One product, if it exists and the caller may see it (a hidden product is
/// reported exactly like a missing one).
async fn visible_product(
    state: &CatalogState,
    caller: &Caller,
    c: &CatalogCaches,
    namespace: &str,
    name: &str,
) -> Option<Arc<DataProduct>> {
    let p = c.products.get(&kube::runtime::reflector::ObjectRef::new(name).within(namespace))?;
    visible(state, caller, &p).await.then_some(p)
}

/// Every product the caller may see.
async fn visible_products(state: &CatalogState, caller: &Caller, c: &CatalogCaches) -> Vec<Arc<DataProduct>> {
    let mut shown = Vec::new();
    for p in c.products.state() {
        if visible(state, caller, &p).await {
            shown.push(p);
        }
    }
    shown
}

/// The products matching a query that the caller may see, sorted by
/// namespace and name. The index filters first, so access is reviewed only
/// for the matches.
async fn search(state: &CatalogState, caller: &Caller, c: &CatalogCaches, query: &Query) -> Vec<Arc<Entry>> {
    let mut items = c.index.search(query);
    if caller.0.is_some() {
        let mut shown = Vec::with_capacity(items.len());
        for entry in items {
            if visible(state, caller, &entry.product).await {
                shown.push(entry);
            }
        }
        items = shown;
    }
    items
}

/// A page of results: `limit` items from `offset`.
struct Page {
    offset: usize,
    limit: usize,
}

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

impl Page {
    fn parse(params: &BTreeMap<String, String>) -> Result<Page, String> {
        let number = |name: &str, default: usize, max: usize| match params.get(name).filter(|v| !v.is_empty()) {
            None => Ok(default),
            Some(v) => match v.parse::<usize>() {
                Ok(n) if n <= max => Ok(n),
                _ => Err(format!("query parameter `{name}`: `{v}` is not a whole number from 0 to {max}")),
            },
        };
        Ok(Page { offset: number("offset", 0, usize::MAX)?, limit: number("limit", DEFAULT_LIMIT, MAX_LIMIT)? })
    }

    /// The page's summaries: only these are copied.
    fn of(&self, items: &[Arc<Entry>]) -> Vec<super::ProductSummary> {
        items.iter().skip(self.offset).take(self.limit).map(|e| e.summary.clone()).collect()
    }
}

async fn domains(State(state): State<CatalogState>, headers: HeaderMap) -> Response {
    let (_, c) = match open(&state, &headers, false).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    let counts = c.index.counts_by_namespace();
    let mut list: Vec<_> = c.domains.state().iter().map(|d| domain_summary(d, &counts)).collect();
    list.sort_by(|a, b| a.name.cmp(&b.name));
    Json(json!({"items": list})).into_response()
}

async fn products(State(state): State<CatalogState>, headers: HeaderMap, UrlQuery(params): UrlQuery<BTreeMap<String, String>>) -> Response {
    let (caller, c) = match open(&state, &headers, false).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    let known = ["q", "domain", "tag", "classification", "owner", "lifecycle", "limit", "offset"];
    if let Some(unknown) = params.keys().find(|k| !known.contains(&k.as_str())) {
        return error(StatusCode::BAD_REQUEST, format!("unknown query parameter `{unknown}`; known: {}", known.join(", ")));
    }
    let (query, page) = match (Query::parse(&params), Page::parse(&params)) {
        (Ok(q), Ok(p)) => (q, p),
        (Err(e), _) => return error(StatusCode::BAD_REQUEST, e.to_string()),
        (_, Err(e)) => return error(StatusCode::BAD_REQUEST, e),
    };
    let items = search(&state, &caller, &c, &query).await;
    let total = items.len();
    Json(json!({"items": page.of(&items), "total": total, "offset": page.offset, "limit": page.limit})).into_response()
}

async fn product(State(state): State<CatalogState>, headers: HeaderMap, Path((namespace, name)): Path<(String, String)>) -> Response {
    let (caller, c) = match open(&state, &headers, false).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    match visible_product(&state, &caller, &c, &namespace, &name).await {
        Some(p) => Json(detail(&p)).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no DataProduct {namespace}/{name} that you may see")),
    }
}

/// One product as an Open Data Product Standard document.
async fn product_odps(State(state): State<CatalogState>, headers: HeaderMap, Path((namespace, name)): Path<(String, String)>) -> Response {
    let (caller, c) = match open(&state, &headers, false).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    match visible_product(&state, &caller, &c, &namespace, &name).await {
        Some(p) => Json(super::odps::export(&p)).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no DataProduct {namespace}/{name} that you may see")),
    }
}

async fn lineage_graph(State(state): State<CatalogState>, headers: HeaderMap) -> Response {
    let (caller, c) = match open(&state, &headers, false).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    let shown = visible_products(&state, &caller, &c).await;
    let refs: Vec<&DataProduct> = shown.iter().map(|p| p.as_ref()).collect();
    Json(lineage(&refs)).into_response()
}

async fn search_page(
    State(state): State<CatalogState>,
    headers: HeaderMap,
    UrlQuery(params): UrlQuery<BTreeMap<String, String>>,
) -> Response {
    let (caller, c) = match open(&state, &headers, true).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    let (query, page) = match (Query::parse(&params), Page::parse(&params)) {
        (Ok(q), Ok(p)) => (q, p),
        (Err(e), _) => return (StatusCode::BAD_REQUEST, axum::response::Html(super::web::escape(&e.to_string()))).into_response(),
        (_, Err(e)) => return (StatusCode::BAD_REQUEST, axum::response::Html(super::web::escape(&e))).into_response(),
    };
    let results = search(&state, &caller, &c, &query).await;
    let total = results.len();
    let mut domains: Vec<_> = c.domains.state().iter().map(|d| d.metadata.name.clone().unwrap_or_default()).collect();
    domains.sort();
    axum::response::Html(super::web::search(&params, &page.of(&results), (total, page.offset, page.limit), &domains)).into_response()
}

async fn product_page(State(state): State<CatalogState>, headers: HeaderMap, Path((namespace, name)): Path<(String, String)>) -> Response {
    let (caller, c) = match open(&state, &headers, true).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    match visible_product(&state, &caller, &c, &namespace, &name).await {
        Some(p) => axum::response::Html(super::web::product(&detail(&p))).into_response(),
        None => (StatusCode::NOT_FOUND, axum::response::Html("no such product that you may see".to_string())).into_response(),
    }
}

async fn domain_page(State(state): State<CatalogState>, headers: HeaderMap, Path(name): Path<String>) -> Response {
    let (caller, c) = match open(&state, &headers, true).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    let Some(d) = c.domains.get(&kube::runtime::reflector::ObjectRef::new(&name)) else {
        return (StatusCode::NOT_FOUND, axum::response::Html("no such domain".to_string())).into_response();
    };
    let found = search(&state, &caller, &c, &Query { domain: Some(name), ..Default::default() }).await;
    let products: Vec<_> = found.iter().map(|e| e.summary.clone()).collect();
    let mut summary_of_domain = domain_summary(&d, &BTreeMap::new());
    summary_of_domain.data_products = products.len() as i32;
    axum::response::Html(super::web::domain(&summary_of_domain, &products)).into_response()
}

async fn lineage_page(State(state): State<CatalogState>, headers: HeaderMap) -> Response {
    let (caller, c) = match open(&state, &headers, true).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    let shown = visible_products(&state, &caller, &c).await;
    let refs: Vec<&DataProduct> = shown.iter().map(|p| p.as_ref()).collect();
    axum::response::Html(super::web::lineage(&lineage(&refs))).into_response()
}

async fn login_form() -> Response {
    axum::response::Html(
        "<!doctype html><html><body style=\"font-family:sans-serif;max-width:40em;margin:2em auto\"><h1>meshplane catalog</h1>\
         <p>Paste a token the cluster accepts, for example from <code>kubectl create token &lt;serviceaccount&gt;</code>.</p>\
         <form method=\"post\" action=\"/login\"><input type=\"password\" name=\"token\" size=\"60\"><button>Sign in</button></form></body></html>"
            .to_string(),
    )
    .into_response()
}

#[derive(serde::Deserialize)]
struct Login {
    token: String,
}

async fn login(State(state): State<CatalogState>, axum::Form(form): axum::Form<Login>) -> Response {
    let mut headers = HeaderMap::new();
    if let Ok(v) = format!("Bearer {}", form.token.trim()).parse() {
        headers.insert("authorization", v);
    }
    if authenticate(&state, &headers).await.is_err() {
        return (
            StatusCode::UNAUTHORIZED,
            axum::response::Html("the cluster does not accept this token; <a href=\"/login\">try again</a>".to_string()),
        )
            .into_response();
    }
    let cookie = format!("{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict", form.token.trim());
    ([(axum::http::header::SET_COOKIE, cookie)], axum::response::Redirect::to("/")).into_response()
}

/// The OpenAPI document of the API (no token needed: it describes, it shows nothing).
async fn openapi() -> Response {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], include_str!("openapi.json")).into_response()
}
