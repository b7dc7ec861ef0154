//! Reconcile passes without a cluster (test-only). [`ApiServer`] stands in
//! for the API server behind kube's tower-test mock service: it records
//! every request a pass makes and answers it. [`World`] is the Context a
//! pass runs with, over caches that a test fills with what the API server
//! would serve ([`served`]).
//!
//! The stand-in accepts every write and finds nothing to read, unless a
//! test's rules answer first. It fails no request it did not expect: a test
//! asserts the whole list of requests a pass made, so an unexpected one
//! fails the test there, with the list to read.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Method;
use kube::api::DynamicObject;
use kube::client::Body;
use kube::core::ApiResource;
use kube::{Api, Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::context::{Context, Settings};
use super::watched::Watched;
use crate::domain::settings::DomainSettings;
use crate::keys;
use crate::leader::Leadership;
use crate::telemetry::Metrics;

/// One request the client sent, as the stand-in read it.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: Method,
    pub path: String,
    /// Query parameters, decoded.
    pub query: Vec<(String, String)>,
    pub content_type: String,
    /// The body as JSON (`Null` when there was none).
    pub body: Value,
    /// The HTTP status the stand-in answered with.
    pub answered: u16,
}

impl Request {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }

    /// A server-side apply.
    pub fn is_apply(&self) -> bool {
        self.method == Method::PATCH && self.content_type == "application/apply-patch+yaml"
    }

    /// An Event published (events.k8s.io).
    pub fn is_event(&self) -> bool {
        self.method == Method::POST && self.path.ends_with("/events")
    }

    /// What the request does, in one line a test compares:
    /// `apply --force /api/v1/namespaces/dm-a` (an apply under another
    /// field manager than meshplane's says `as <manager>`), `merge <path>`,
    /// `create <path>`, `delete <path>`, `get <path>?<query>`, and for an
    /// Event its type and reason: `event Warning FieldManagerConflict`.
    pub fn line(&self) -> String {
        let path = &self.path;
        match self.method.as_str() {
            "PATCH" if self.is_apply() => {
                let force = if self.param("force") == Some("true") { " --force" } else { "" };
                let manager = match self.param("fieldManager") {
                    Some(keys::FIELD_MANAGER) => String::new(),
                    other => format!(" as {}", other.unwrap_or("nobody")),
                };
                format!("apply{force}{manager} {path}")
            }
            "PATCH" if self.content_type == "application/merge-patch+json" => format!("merge {path}"),
            "POST" if self.is_event() => {
                format!("event {} {}", self.body["type"].as_str().unwrap_or_default(), self.body["reason"].as_str().unwrap_or_default())
            }
            "POST" => format!("create {path}"),
            "DELETE" => format!("delete {path}"),
            "GET" if self.query.is_empty() => format!("get {path}"),
            "GET" => {
                let query: Vec<String> = self.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("get {path}?{}", query.join("&"))
            }
            method => format!("{method} {} {path}", self.content_type),
        }
    }

    /// An Event's note.
    pub fn note(&self) -> &str {
        self.body["note"].as_str().unwrap_or_default()
    }

    async fn read(request: http::Request<Body>) -> Request {
        let (parts, body) = request.into_parts();
        let bytes = body.collect_bytes().await.expect("a request body is read whole");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        let content_type = parts.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        let query = parts.uri.query().unwrap_or_default().split('&').filter(|pair| !pair.is_empty()).map(decode_pair).collect();
        Request { method: parts.method, path: parts.uri.path().to_string(), query, content_type, body, answered: 0 }
    }
}

/// Each request's [`Request::line`].
pub fn lines(requests: &[Request]) -> Vec<String> {
    requests.iter().map(Request::line).collect()
}

/// The lines of the requests that are not Events.
pub fn writes_and_reads(requests: &[Request]) -> Vec<String> {
    requests.iter().filter(|r| !r.is_event()).map(Request::line).collect()
}

/// The Events published, as `<type> <reason>: <note>`.
pub fn events(requests: &[Request]) -> Vec<String> {
    requests
        .iter()
        .filter(|r| r.is_event())
        .map(|r| format!("{} {}: {}", r.body["type"].as_str().unwrap_or_default(), r.body["reason"].as_str().unwrap_or_default(), r.note()))
        .collect()
}

fn decode_pair(pair: &str) -> (String, String) {
    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
    (decode(key), decode(value))
}

/// `application/x-www-form-urlencoded` decoding, as kube encodes queries.
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|hex| u8::from_str_radix(hex, 16).ok()) {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// How the stand-in answers a request: an HTTP status and a JSON body.
pub struct Reply {
    code: u16,
    body: Value,
}

impl Reply {
    pub fn ok(body: Value) -> Reply {
        Reply { code: 200, body }
    }

    /// A refusal as the API server words it: a `Status` object.
    pub fn refuse(code: u16, reason: &str, message: &str) -> Reply {
        let body = json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": code, "reason": reason, "message": message});
        Reply { code, body }
    }

    pub fn not_found() -> Reply {
        Reply::refuse(404, "NotFound", "not found")
    }

    /// A list of `items` (of any kind; kube reads the items).
    pub fn list(items: Vec<Value>) -> Reply {
        Reply::ok(json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": items}))
    }

    fn into_response(self) -> http::Response<Body> {
        http::Response::builder()
            .status(self.code)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Body::from(serde_json::to_vec(&self.body).expect("a reply serializes")))
            .expect("a reply is a response")
    }
}

/// What the stand-in answers when no rule does: it accepts every write,
/// echoing the object back (with the name the path gives it), and finds
/// nothing to read.
fn accept(request: &Request) -> Reply {
    let mut segments: Vec<&str> = request.path.split('/').collect();
    if segments.last() == Some(&"status") {
        segments.pop();
    }
    let name = segments.last().copied().unwrap_or_default();
    match request.method.as_str() {
        "GET" => Reply::not_found(),
        "DELETE" => Reply::ok(json!({"apiVersion": "v1", "kind": "Status", "status": "Success", "code": 200})),
        "POST" => Reply { code: 201, body: request.body.clone() },
        _ => {
            let mut object = request.body.clone();
            if let Some(fields) = object.as_object_mut() {
                let metadata = fields.entry("metadata").or_insert_with(|| json!({}));
                if let Some(metadata) = metadata.as_object_mut() {
                    metadata.entry("name").or_insert_with(|| name.into());
                }
            }
            Reply::ok(object)
        }
    }
}

/// A test's answers, tried before [`accept`]'s: `None` leaves a request to it.
type Rules = Box<dyn FnMut(&Request) -> Option<Reply> + Send>;

/// The stand-in for the API server (see the module docs).
pub struct ApiServer {
    requests: Arc<Mutex<Vec<Request>>>,
    rules: Arc<Mutex<Rules>>,
    task: tokio::task::JoinHandle<()>,
}

impl ApiServer {
    /// A client whose every request this server answers, and the server.
    pub fn start() -> (Client, ApiServer) {
        let (service, mut handle) = tower_test::mock::pair::<http::Request<Body>, http::Response<Body>>();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let rules: Arc<Mutex<Rules>> = Arc::new(Mutex::new(Box::new(|_: &Request| None)));
        let (log, answers) = (requests.clone(), rules.clone());
        let task = tokio::spawn(async move {
            while let Some((request, respond)) = handle.next_request().await {
                let mut request = Request::read(request).await;
                let reply = (answers.lock().unwrap())(&request).unwrap_or_else(|| accept(&request));
                request.answered = reply.code;
                log.lock().unwrap().push(request);
                respond.send_response(reply.into_response());
            }
        });
        (Client::new(service, "default"), ApiServer { requests, rules, task })
    }

    /// Answers with `rules` from now on, before the default answers.
    pub fn answer(&self, rules: impl FnMut(&Request) -> Option<Reply> + Send + 'static) {
        *self.rules.lock().unwrap() = Box::new(rules);
    }

    /// The requests received since the last call, in order. Each is
    /// recorded before it is answered, so once a pass has returned, every
    /// request it made is here.
    pub fn take(&self) -> Vec<Request> {
        std::mem::take(&mut *self.requests.lock().unwrap())
    }

    /// Waits for the server to end, which it does once every client is
    /// dropped, and returns the requests not taken yet.
    pub async fn stop(self) -> Vec<Request> {
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the server ends once every client is dropped")
            .expect("the server answered every request without panicking");
        std::mem::take(&mut *self.requests.lock().unwrap())
    }
}

/// What a reconcile pass runs with: a Context over the stand-in, and the
/// watches whose caches a test fills.
pub struct World {
    pub ctx: Arc<Context>,
    pub watched: Watched,
    pub server: ApiServer,
}

impl World {
    /// An empty cluster: no cache holds anything, and the stand-in has
    /// started (so this runs within a Tokio runtime).
    pub fn start() -> World {
        let (client, server) = ApiServer::start();
        let watched = Watched::new(Default::default(), &Arc::new(crate::catalog::index::Index::default()));
        let settings = Settings { domain: DomainSettings::default(), resync: Duration::from_secs(300), concurrency: 1 };
        let (ctx, synced) = Context::new(client, settings, Arc::new(Metrics::default()), watched.caches(), Leadership::always());
        synced.send(true).expect("the context listens for its caches' sync");
        World { ctx: Arc::new(ctx), watched, server }
    }

    /// One pass of `reconcile` over `object`, and the requests it made.
    pub async fn pass<K, F, Fut>(&self, reconcile: F, object: &K) -> (crate::error::Result<kube::runtime::controller::Action>, Vec<Request>)
    where
        K: Clone,
        F: FnOnce(Arc<K>, Arc<Context>) -> Fut,
        Fut: std::future::Future<Output = crate::error::Result<kube::runtime::controller::Action>>,
    {
        let action = reconcile(Arc::new(object.clone()), self.ctx.clone()).await;
        (action, self.server.take())
    }

    /// Puts the domain `sales` (uid `d-1`, namespace `dm-sales`) in the cache.
    pub fn seed_sales(&mut self) {
        self.seed(yaml(
            "{apiVersion: meshplane.dev/v1alpha1, kind: DataDomain, metadata: {name: sales, uid: d-1}, spec: {}, status: {namespace: dm-sales}}",
        ));
    }

    /// Puts `object` (as the API server serves it) in its kind's cache, as
    /// the watch would.
    pub fn seed(&mut self, object: Value) {
        let kind = object["kind"].as_str().unwrap_or_default().to_string();
        let w = &mut self.watched;
        match kind.as_str() {
            "DataDomain" => w.domains.seed(parse(object)),
            "DataProduct" => w.products.seed(parse(object)),
            "GovernancePolicy" => w.policies.seed(parse(object)),
            "ValidatingAdmissionPolicy" => w.admission_policies.seed(parse(object)),
            "ValidatingAdmissionPolicyBinding" => w.admission_bindings.seed(parse(object)),
            "Namespace" => w.namespaces.seed(parse(object)),
            "StorageClass" => w.storage_classes.seed(parse(object)),
            "RoleBinding" => w.role_bindings.seed(parse(object)),
            "Role" => w.roles.seed(parse(object)),
            "ResourceQuota" => w.quotas.seed(parse(object)),
            "LimitRange" => w.limit_ranges.seed(parse(object)),
            "NetworkPolicy" => w.network_policies.seed(parse(object)),
            "ServiceAccount" => w.service_accounts.seed(parse(object)),
            "ConfigMap" => w.config_maps.seed(parse(object)),
            "PersistentVolumeClaim" => w.claims.seed(parse(object)),
            "CronJob" => w.cron_jobs.seed(parse(object)),
            "Deployment" => w.deployments.seed(parse(object)),
            "Job" => w.jobs.seed(parse(object)),
            other => panic!("no cache holds kind {other:?}"),
        }
    }

    /// Puts in the caches every child that `requests` applied and the
    /// stand-in accepted, as the API server then serves it ([`served`]),
    /// after `finish` has added what the cluster adds of its own (a claim's
    /// phase, a quota's usage).
    pub fn seed_applied(&mut self, requests: &[Request], mut finish: impl FnMut(&mut Value)) {
        for request in requests.iter().filter(|r| r.is_apply() && r.answered < 300 && !r.path.ends_with("/status")) {
            let mut object = served(&request.body);
            finish(&mut object);
            self.seed(object);
        }
    }

    /// `object` as the API server serves it once `requests` were made: its
    /// finalizers as merge-patched, its status as applied.
    pub fn after<K>(&self, object: &K, requests: &[Request]) -> K
    where
        K: Resource<DynamicType = ()> + Serialize + DeserializeOwned,
    {
        let meta = object.meta();
        let resource = ApiResource::erase::<K>(&());
        let api: Api<DynamicObject> = match &meta.namespace {
            Some(ns) => Api::namespaced_with(self.ctx.client.clone(), ns, &resource),
            None => Api::all_with(self.ctx.client.clone(), &resource),
        };
        let path = format!("{}/{}", api.resource_url(), meta.name.as_deref().unwrap_or_default());
        let mut value = serde_json::to_value(object).expect("an object serializes");
        for request in requests.iter().filter(|r| r.answered < 300) {
            if request.path == path && request.content_type == "application/merge-patch+json" {
                merge_patch(&mut value, &request.body);
            } else if request.path == format!("{path}/status") && request.is_apply() {
                value["status"] = request.body["status"].clone();
            }
        }
        parse(value)
    }

    /// Ends the world: drops the client, waits for the stand-in to end, and
    /// returns the requests not taken yet.
    pub async fn finish(self) -> Vec<Request> {
        let World { ctx, watched, server } = self;
        drop((ctx, watched));
        server.stop().await
    }
}

/// The status the pass wrote (its status apply), as `S`.
/// Each condition as `Type=Status (Reason)`.
pub fn conditions_of(conditions: &[crate::api::Condition]) -> Vec<String> {
    conditions.iter().map(|c| format!("{}={} ({})", c.type_, c.status, c.reason)).collect()
}

pub fn written_status<S: DeserializeOwned>(requests: &[Request]) -> S {
    let written: Vec<&Request> = requests.iter().filter(|r| r.is_apply() && r.path.ends_with("/status")).collect();
    assert_eq!(written.len(), 1, "one status write: {:#?}", lines(requests));
    parse(written[0].body["status"].clone())
}

pub fn parse<T: DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).unwrap_or_else(|e| panic!("a fixture parses as {}: {e}", std::any::type_name::<T>()))
}

/// A YAML fixture, as JSON.
pub fn yaml(text: &str) -> Value {
    serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("a fixture parses: {e}\n{text}"))
}

/// What the API server serves of an object meshplane applied: the applied
/// fields, the metadata the server adds, and a managedFields entry that
/// makes every applied field meshplane's, as server-side apply records it.
pub fn served(applied: &Value) -> Value {
    let mut object = applied.clone();
    let mut fields = applied.clone();
    if let Some(fields) = fields.as_object_mut() {
        fields.remove("apiVersion");
        fields.remove("kind");
    }
    let name = applied["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let metadata = object["metadata"].as_object_mut().expect("an applied object has metadata");
    metadata.insert("uid".into(), format!("uid-{name}").into());
    metadata.insert("resourceVersion".into(), "1".into());
    metadata.insert("creationTimestamp".into(), "2026-01-01T00:00:00Z".into());
    metadata.insert(
        "managedFields".into(),
        json!([{
            "manager": keys::FIELD_MANAGER,
            "operation": "Apply",
            "apiVersion": applied["apiVersion"],
            "fieldsType": "FieldsV1",
            "fieldsV1": field_set(&fields),
        }]),
    );
    object
}

/// The managedFields set naming every field of `value`; a list is named
/// whole (as an atomic list is), which names every item.
fn field_set(value: &Value) -> Value {
    match value {
        Value::Object(members) => Value::Object(members.iter().map(|(key, member)| (format!("f:{key}"), field_set(member))).collect()),
        _ => Value::Object(Map::new()),
    }
}

/// A JSON merge patch (RFC 7386) of `patch` into `target`.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let fields = target.as_object_mut().expect("made an object above");
    for (key, value) in patch {
        if value.is_null() {
            fields.remove(key);
        } else {
            merge_patch(fields.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

mod tests {
    use super::*;

    #[test]
    fn a_query_is_decoded_as_kube_encodes_it() {
        assert_eq!(decode("meshplane.dev%2Fproduct%3Dorders"), "meshplane.dev/product=orders");
        assert_eq!(decode("a+b%"), "a b%");
    }

    #[test]
    fn a_merge_patch_sets_replaces_and_removes() {
        let mut object = json!({"metadata": {"finalizers": ["a", "b"], "labels": {"x": "1", "y": "2"}}});
        merge_patch(&mut object, &json!({"metadata": {"finalizers": ["b"], "labels": {"x": null, "z": "3"}}}));
        assert_eq!(object, json!({"metadata": {"finalizers": ["b"], "labels": {"y": "2", "z": "3"}}}));
    }

    #[test]
    fn what_is_served_after_an_apply_is_meshplanes_whole() {
        use k8s_openapi::api::rbac::v1::RoleBinding;

        use crate::plumbing::owned::{Holds, Owned};
        let applied = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "b", "namespace": "dm-a", "labels": {"app.kubernetes.io/managed-by": "meshplane"},
                "ownerReferences": [{"apiVersion": "v1", "kind": "X", "name": "x", "uid": "o-1"}]},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "r"},
            "subjects": [{"kind": "User", "name": "ann"}]
        });
        let cached: Owned<RoleBinding> = parse(served(&applied));
        assert_eq!(cached.holds(&applied).unwrap(), Holds::Yes);
        let mut changed = applied.clone();
        changed["subjects"][0]["name"] = "eve".into();
        assert_ne!(cached.holds(&changed).unwrap(), Holds::Yes);
    }
}
