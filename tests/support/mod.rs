//! Test support for integration tests against the local control plane.
//!
//! The tests run on a control plane of their own, in [`cluster_dir`]
//! (`target/cluster-test`), never on the developer's `target/cluster`, where
//! `make dev` leaves examples/ and its GovernancePolicies: what a developer
//! applied must not decide a test.
//!
//! - [`cluster`] starts the control plane once per run if it is not running
//!   (`cluster/up.sh`) and returns an admin client.
//! - [`operator`] installs the CRDs and RBAC and runs one meshplane process per
//!   run, as its own ServiceAccount, restarted when the binary was rebuilt.
//! - [`unique`] names a domain or namespace per test, so tests run in parallel.
//! - [`wait_until`] polls a condition with a deadline: no fixed sleeps.
#![allow(dead_code)]

use std::fs::{File, OpenOptions};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The state folder of the tests' control plane: `MESHPLANE_TEST_CLUSTER_DIR`
/// (`cluster/bench.sh` names its own), by default `target/cluster-test`. It
/// never reads `MESHPLANE_CLUSTER_DIR`: that one chooses the cluster the
/// developer's scripts act on, and `make` exports it for `target/cluster`.
pub fn cluster_dir() -> PathBuf {
    std::env::var_os("MESHPLANE_TEST_CLUSTER_DIR").map(PathBuf::from).unwrap_or_else(|| repo_root().join("target/cluster-test"))
}

/// A script of `cluster/` (`up.sh`, `restart.sh`, ...) set to act on the
/// tests' control plane, whatever cluster the environment names.
pub fn cluster_script(name: &str) -> Command {
    let mut command = Command::new(repo_root().join("cluster").join(name));
    command.env("MESHPLANE_CLUSTER_DIR", cluster_dir()).env("KUBECONFIG", kubeconfig_path());
    command
}

pub fn kubeconfig_path() -> PathBuf {
    cluster_dir().join("kubeconfig")
}

/// The path of a binary the cluster scripts build (`kubectl`, `helm`, ...).
pub fn bin(name: &str) -> PathBuf {
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("source cluster/lib.sh && bin_path {name}"))
        .current_dir(repo_root())
        .output()
        .expect("running bash");
    assert!(out.status.success(), "cannot locate {name}: {}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// An exclusive lock shared by every test process using the tests' cluster:
/// `<cluster dir>.<name>`, beside the folder rather than in it, since
/// `cluster/up.sh` and `cluster/down.sh` remove the folder.
fn lock(name: &str) -> File {
    let dir = cluster_dir();
    let parent = dir.parent().expect("the cluster folder has a parent");
    std::fs::create_dir_all(parent).unwrap();
    let path = parent.join(format!("{}.{name}", dir.file_name().expect("the cluster folder has a name").to_string_lossy()));
    let file = OpenOptions::new().create(true).truncate(false).write(true).open(path).unwrap();
    file.lock().expect("locking");
    file
}

fn cluster_ready() -> bool {
    kubeconfig_path().exists() && kubectl_output(&["get", "--raw", "/readyz"]).status.success()
}

/// Starts the tests' control plane unless it runs, once for all tests.
pub fn ensure_cluster() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let _guard = lock("cluster-up.lock");
        if cluster_ready() {
            return;
        }
        let status = cluster_script("up.sh").status().expect("running cluster/up.sh");
        assert!(status.success(), "cluster/up.sh failed");
    });
}

/// An admin client of the tests' control plane (started if needed).
pub async fn cluster() -> Client {
    ensure_cluster();
    client_for(&kubeconfig_path()).await
}

pub async fn client_for(kubeconfig: &Path) -> Client {
    let config =
        kube::Config::from_custom_kubeconfig(Kubeconfig::read_from(kubeconfig).expect("reading kubeconfig"), &KubeConfigOptions::default())
            .await
            .expect("loading kubeconfig");
    Client::try_from(config).expect("building client")
}

/// Runs kubectl against the tests' cluster as admin.
pub fn kubectl_output(args: &[&str]) -> Output {
    static KUBECTL: OnceLock<PathBuf> = OnceLock::new();
    let kubectl = KUBECTL.get_or_init(|| bin("kubectl"));
    Command::new(kubectl).args(args).env("KUBECONFIG", kubeconfig_path()).output().expect("running kubectl")
}

/// Runs kubectl and returns its stdout; panics with stderr on failure.
pub fn kubectl(args: &[&str]) -> String {
    let out = kubectl_output(args);
    assert!(out.status.success(), "kubectl {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Runs kubectl with a manifest on stdin.
pub fn kubectl_stdin(args: &[&str], stdin: &str) -> Output {
    use std::io::Write;
    static KUBECTL: OnceLock<PathBuf> = OnceLock::new();
    let kubectl = KUBECTL.get_or_init(|| bin("kubectl"));
    let mut child = Command::new(kubectl)
        .args(args)
        .env("KUBECONFIG", kubeconfig_path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running kubectl");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

/// `kubectl apply -f -` of a manifest; panics on failure.
pub fn apply(manifest: &str) {
    let out = kubectl_stdin(&["apply", "-f", "-"], manifest);
    assert!(out.status.success(), "kubectl apply failed: {}\n{manifest}", String::from_utf8_lossy(&out.stderr));
}

/// A name unique to this test process and call: lower case, starts with a
/// letter, short enough for a namespace with a prefix.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{prefix}-{:x}{:x}{n}", std::process::id() % 0xfff, nanos % 0xffff)
}

/// Polls `check` until it returns `Some`, or panics after `timeout` naming
/// what was awaited. The poll interval is short: deadlines, not sleeps.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The meshplane operator used by the tests: one process per run, as its own
/// ServiceAccount with the shipped RBAC and its shipped settings (the
/// 5-minute resync among them: every reaction a test awaits comes from a
/// watch, as it must for users). Returns its metrics address.
pub fn operator() -> String {
    operator_with(&[])
}

/// The tests' operator run with `args` beyond its shipped settings, for a
/// test of the setting itself (`--resync 2s` for the checks of what a resync
/// does); the process is restarted whenever it runs with other arguments.
pub fn operator_with(args: &[&str]) -> String {
    let wanted = args.join(" ");
    let mut started = OPERATOR.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((addr, running)) = started.as_ref()
        && *running == wanted
    {
        return addr.clone();
    }
    ensure_cluster();
    let _guard = lock("operator.lock");
    let dir = cluster_dir();
    let pid_file = dir.join("pids/meshplane.pid");
    let addr_file = dir.join("meshplane.addr");
    let args_file = dir.join("meshplane.args");
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_meshplane"));
    // Reuse a running operator only if it runs this very build, so set.
    if let (Ok(pid), Ok(addr)) = (std::fs::read_to_string(&pid_file), std::fs::read_to_string(&addr_file)) {
        let exe = std::fs::read_link(format!("/proc/{}/exe", pid.trim())).ok();
        let running = std::fs::read_to_string(&args_file).unwrap_or_default();
        if exe.as_deref() == Some(binary.as_path()) && running == wanted {
            *started = Some((addr.clone(), wanted));
            return addr;
        }
        if exe.is_some_and(|e| e.to_string_lossy().contains("meshplane")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
            wait_gone(pid.trim());
        }
    }
    kubectl(&["apply", "--server-side", "--force-conflicts", "-k", repo_root().join("deploy/base").to_str().unwrap()]);
    kubectl(&["wait", "--for=condition=Established", "crd", "--all", "--timeout=60s"]);
    let addr = spawn_shared_operator(args);
    *started = Some((addr.clone(), wanted));
    addr
}

/// The tests' operator's metrics address and extra arguments, once started.
static OPERATOR: Mutex<Option<(String, String)>> = Mutex::new(None);

/// Stops the tests' operator with SIGTERM (as a rolling update would) and
/// starts it again, with the manifests and arguments as they are: the
/// restart alone, with no write of the tests' own. Returns the new metrics
/// address.
pub fn restart_operator() -> String {
    let args = {
        operator();
        let started = OPERATOR.lock().unwrap_or_else(|e| e.into_inner());
        started.as_ref().map(|(_, args)| args.clone()).unwrap_or_default()
    };
    let mut started = OPERATOR.lock().unwrap_or_else(|e| e.into_inner());
    let _guard = lock("operator.lock");
    if let Ok(pid) = std::fs::read_to_string(cluster_dir().join("pids/meshplane.pid")) {
        let _ = Command::new("kill").arg(pid.trim()).status();
        wait_gone(pid.trim());
    }
    let split: Vec<&str> = args.split_whitespace().collect();
    let addr = spawn_shared_operator(&split);
    *started = Some((addr.clone(), args));
    addr
}

/// Starts the shared operator process and records it for the next test
/// binaries (PID, binary, arguments, metrics address).
fn spawn_shared_operator(extra: &[&str]) -> String {
    let dir = cluster_dir();
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_meshplane"));
    let out = cluster_script("operator-kubeconfig.sh").output().expect("operator kubeconfig");
    assert!(out.status.success(), "operator-kubeconfig.sh: {}", String::from_utf8_lossy(&out.stderr));
    let kubeconfig = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let catalog_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let catalog_addr = format!("127.0.0.1:{catalog_port}");
    std::fs::write(dir.join("meshplane.catalog"), &catalog_addr).unwrap();
    std::fs::create_dir_all(dir.join("pids")).unwrap();
    let mut args = vec!["--catalog-addr", &catalog_addr];
    args.extend_from_slice(extra);
    // Deliberately never waited on: the operator outlives this test process
    // and serves the next test binaries; cluster/down.sh stops it by PID.
    let (child, addr) = spawn_meshplane(Path::new(&kubeconfig), "meshplane", &args, &[("RUST_LOG", "info,meshplane=debug,kube=warn")]);
    std::fs::write(dir.join("pids/meshplane.pid"), child.id().to_string()).unwrap();
    std::fs::write(dir.join("pids/meshplane.pid.exe"), binary.to_string_lossy().as_bytes()).unwrap();
    std::fs::write(dir.join("meshplane.args"), extra.join(" ")).unwrap();
    std::fs::write(dir.join("meshplane.addr"), &addr).unwrap();
    wait_ready(&addr, "meshplane", Duration::from_secs(60));
    addr
}

/// Starts `meshplane run` with `args` as the identity in `kubeconfig`, with
/// metrics on a free port, its output appended to `logs/<log>.log`. Returns
/// the process (not waited for) and its metrics address.
pub fn spawn_meshplane(kubeconfig: &Path, log: &str, args: &[&str], env: &[(&str, &str)]) -> (std::process::Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let logs = cluster_dir().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let log = OpenOptions::new().create(true).append(true).open(logs.join(format!("{log}.log"))).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_meshplane"))
        .args(["run", "--metrics-addr", &addr])
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("starting meshplane");
    (child, addr)
}

/// Blocks until the meshplane serving metrics at `addr` has synced every
/// cache, or panics after `timeout` naming its log (`logs/<log>.log`).
pub fn wait_ready(addr: &str, log: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while http_get(addr, "/readyz").is_none_or(|(code, _)| code != 200) {
        assert!(
            Instant::now() < deadline,
            "meshplane did not become ready; see {}",
            cluster_dir().join(format!("logs/{log}.log")).display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_gone(pid: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    // A process this test started and did not wait for stays a zombie ("Z")
    // until the test exits: exited all the same.
    let running = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')))
    };
    while running() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The catalog address of the tests' operator.
pub fn catalog() -> String {
    operator();
    std::fs::read_to_string(cluster_dir().join("meshplane.catalog")).expect("the operator's catalog address")
}

/// A minimal HTTP/1.0 GET on loopback: (status code, body).
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    http_get_with(addr, path, None)
}

/// A GET with an optional bearer token.
pub fn http_get_with(addr: &str, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((code, body))
}

/// A DataDomain manifest with the given (indented) spec lines.
pub fn domain_manifest(name: &str, spec: &str) -> String {
    let spec = if spec.is_empty() { "  description: test domain\n" } else { spec };
    format!("apiVersion: meshplane.dev/v1alpha1\nkind: DataDomain\nmetadata:\n  name: {name}\nspec:\n{spec}")
}

/// A DataProduct manifest with the given (indented) spec lines.
pub fn product_manifest(namespace: &str, name: &str, spec: &str) -> String {
    format!("apiVersion: meshplane.dev/v1alpha1\nkind: DataProduct\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n{spec}")
}

/// Two Ready domains, a producer and a consumer, named after `prefix`:
/// (producer, consumer, the producer's namespace).
pub async fn producer_and_consumer(client: &Client, prefix: &str) -> (String, String, String) {
    let producer = unique(prefix);
    let consumer = unique(&format!("{prefix}-c"));
    let ns = ready_domain(client, &producer, "").await;
    ready_domain(client, &consumer, "").await;
    (producer, consumer, ns)
}

/// Creates a domain and waits until it is Ready; returns its namespace.
pub async fn ready_domain(client: &Client, name: &str, spec: &str) -> String {
    apply(&domain_manifest(name, spec));
    let api = kube::Api::<meshplane::api::DataDomain>::all(client.clone());
    wait_until(&format!("DataDomain {name} to be Ready"), Duration::from_secs(90), || async {
        let d = api.get_opt(name).await.ok()??;
        let status = d.status?;
        (meshplane::api::conditions::status_of(&status.conditions, "Ready") == Some("True")).then_some(status.namespace?)
    })
    .await
}

/// Waits until a DataProduct's condition has the given status; returns the product.
pub async fn wait_product(client: &Client, namespace: &str, name: &str, type_: &str, status: &str) -> meshplane::api::DataProduct {
    let api = kube::Api::<meshplane::api::DataProduct>::namespaced(client.clone(), namespace);
    wait_until(&format!("DataProduct {namespace}/{name} {type_}={status}"), Duration::from_secs(60), || async {
        let p = api.get_opt(name).await.ok()??;
        let conditions = p.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
        (meshplane::api::conditions::status_of(conditions, type_) == Some(status)).then_some(p)
    })
    .await
}

/// A condition of a product, which must be present.
pub fn product_condition<'a>(p: &'a meshplane::api::DataProduct, type_: &str) -> &'a meshplane::api::Condition {
    p.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == type_)).unwrap_or_else(|| panic!("no {type_} condition"))
}

/// `kubectl auth can-i` as the given identity; true for "yes".
pub fn can_i(args: &[&str]) -> bool {
    let mut all = vec!["auth", "can-i"];
    all.extend_from_slice(args);
    let out = kubectl_output(&all);
    let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(answer == "yes" || answer == "no", "kubectl {}: {answer} {}", all.join(" "), String::from_utf8_lossy(&out.stderr));
    answer == "yes"
}

/// The user the tests' operator acts as (its ServiceAccount).
pub const MESHPLANE_USER: &str = "system:serviceaccount:meshplane-system:meshplane";

/// One request the API server recorded in its audit log (`cluster/up.sh`
/// logs every write, and of the reads only meshplane's GETs).
#[derive(Debug, Clone)]
pub struct Write {
    pub user: String,
    pub verb: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for Write {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sub = if self.subresource.is_empty() { String::new() } else { format!("/{}", self.subresource) };
        let namespace = if self.namespace.is_empty() { String::new() } else { format!("{}/", self.namespace) };
        write!(f, "{} {}{sub} {namespace}{} by {}", self.verb, self.resource, self.name, self.user)
    }
}

/// A place in the API server's audit log: [`writes_since`] reads what was
/// logged after it.
pub fn audit_mark() -> u64 {
    std::fs::metadata(audit_log()).map(|m| m.len()).unwrap_or(0)
}

fn audit_log() -> PathBuf {
    cluster_dir().join("logs/audit.log")
}

/// The writes the API server handled after `mark`, in order; a request it
/// refused (a conflict, a denial) is no write and left out.
pub fn writes_since(mark: u64) -> Vec<Write> {
    logged_since(mark).into_iter().filter(|w| w.verb != "get").collect()
}

/// meshplane's reads of single objects (GET) after `mark`, in order: it
/// reads a child whole only when its cache cannot tell whether the child
/// holds meshplane's fields.
pub fn reads_since(mark: u64) -> Vec<Write> {
    logged_since(mark).into_iter().filter(|w| w.verb == "get" && w.user == MESHPLANE_USER).collect()
}

fn logged_since(mark: u64) -> Vec<Write> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = File::open(audit_log()).expect("the API server's audit log (cluster/up.sh with AUDIT=true)");
    file.seek(SeekFrom::Start(mark)).unwrap();
    let mut text = String::new();
    file.read_to_string(&mut text).unwrap();
    // The last line may still be being written.
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["responseStatus"]["code"].as_u64().is_some_and(|code| code < 300 || event["verb"] == "get"))
        .map(|event| {
            let field = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
            let object = &event["objectRef"];
            Write {
                user: field(&event["user"]["username"]),
                verb: field(&event["verb"]),
                resource: field(&object["resource"]),
                subresource: field(&object["subresource"]),
                namespace: field(&object["namespace"]),
                name: field(&object["name"]),
            }
        })
        .collect()
}
