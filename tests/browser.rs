//! The catalog's web pages in a real browser: Debian's headless Chromium,
//! driven through ChromeDriver's W3C WebDriver protocol, against the tests'
//! operator with catalog authentication on. A person's path: sent to the
//! login form, signs in with a ServiceAccount token, searches, opens a
//! product, looks at the lineage. Each step leaves a screenshot in
//! `target/browser/`. Missing Chromium or ChromeDriver is a failure, never a
//! skip: `cluster/browser-deps.sh` installs them.

mod support;

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The key under which WebDriver names an element (W3C WebDriver, "web element identifier").
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// Generous: CI runs this beside the other test binaries on 2 cores.
const STEP: Duration = Duration::from_secs(60);

/// One HTTP/1.1 exchange with a JSON body each way. ChromeDriver answers
/// `Connection: close` but keeps the connection open, so the body is read by
/// its Content-Length, not to the end of the stream.
fn http_json(addr: &str, method: &str, path: &str, body: Option<&Value>, timeout: Duration) -> Result<(u16, Value), String> {
    let fail = |e: std::io::Error| format!("{method} http://{addr}{path}: {e}");
    let mut stream = TcpStream::connect(addr).map_err(fail)?;
    stream.set_read_timeout(Some(timeout)).map_err(fail)?;
    stream.set_write_timeout(Some(timeout)).map_err(fail)?;
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .map_err(fail)?;
    let mut response = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let end = loop {
        if let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        match stream.read(&mut chunk).map_err(fail)? {
            0 => return Err(format!("{method} {path}: the connection closed before the response head ended")),
            n => response.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&response[..end]).to_string();
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| format!("{method} {path}: bad status line"))?;
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| l.split_once(':').filter(|(k, _)| k.trim().eq_ignore_ascii_case(name)).map(|(_, v)| v.trim()))
    };
    let length: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("{method} {path}: no Content-Length; this client reads no other framing"))?;
    let mut body = response.split_off(end + 4);
    while body.len() < length {
        match stream.read(&mut chunk).map_err(fail)? {
            0 => return Err(format!("{method} {path}: the connection closed after {} of {length} body bytes", body.len())),
            n => body.extend_from_slice(&chunk[..n]),
        }
    }
    body.truncate(length);
    let value = if body.is_empty() { Value::Null } else { serde_json::from_slice(&body).map_err(|e| format!("{method} {path}: {e}"))? };
    Ok((code, value))
}

/// A free port on loopback (nothing listens on it once this returns).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Polls `check` until it returns `Some`; panics after `timeout` naming what was awaited.
fn eventually<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A ChromeDriver process with (once created) one Chromium session. Dropping
/// it, also on panic, ends the session and then kills ChromeDriver's whole
/// process group, so no Chromium outlives the test.
struct Browser {
    driver: Child,
    addr: String,
    session: Option<String>,
    /// ChromeDriver's TMPDIR: the browser profile lives here, removed at the end.
    tmp: PathBuf,
    log: PathBuf,
}

impl Browser {
    /// Starts ChromeDriver on a free port and opens a headless Chromium session.
    fn start(out: &Path) -> Browser {
        for path in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(path).exists(),
                "{path} is missing: run cluster/browser-deps.sh as root (it installs Debian's chromium and chromium-driver)"
            );
        }
        let log = out.join("chromedriver.log");
        let tmp = out.join(format!("tmp-{}", std::process::id()));
        // Another process may take the free port before ChromeDriver binds
        // it; ChromeDriver then exits at once and a new port is tried.
        let mut browser = None;
        for _ in 0..3 {
            let addr = format!("127.0.0.1:{}", free_port());
            std::fs::create_dir_all(&tmp).unwrap();
            let logfile = File::create(&log).unwrap();
            let driver = Command::new(CHROMEDRIVER)
                .arg(format!("--port={}", addr.rsplit(':').next().unwrap()))
                .env("TMPDIR", &tmp)
                .stdin(Stdio::null())
                .stdout(logfile.try_clone().unwrap())
                .stderr(logfile)
                // Its own process group: Chromium's processes join it, and the guard kills the group.
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("starting {CHROMEDRIVER}: {e}; see cluster/browser-deps.sh"));
            let mut candidate = Browser { driver, addr, session: None, tmp: tmp.clone(), log: log.clone() };
            if candidate.wait_ready() {
                browser = Some(candidate);
                break;
            }
        }
        let mut browser = browser.unwrap_or_else(|| panic!("chromedriver did not start; see {}", log.display()));
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "timeouts": {"implicit": 0, "pageLoad": STEP.as_millis() as u64, "script": 30_000},
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--disable-background-networking", "--window-size=1280,900"],
            },
        }}});
        let created = browser.call("POST", "/session", Some(&capabilities));
        browser.session = Some(created["sessionId"].as_str().expect("a session id").to_string());
        browser
    }

    /// Waits until ChromeDriver answers `/status` ready; false if it exited.
    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.driver.try_wait().unwrap() {
                eprintln!("chromedriver exited ({status}) on {}; trying another port", self.addr);
                return false;
            }
            if let Ok((200, v)) = http_json(&self.addr, "GET", "/status", None, Duration::from_secs(5))
                && v["value"]["ready"] == true
            {
                return true;
            }
            assert!(Instant::now() < deadline, "chromedriver on {} not ready after 30s; see {}", self.addr, self.log.display());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A WebDriver command; panics with WebDriver's error. Returns `value`.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let (code, v) =
            http_json(&self.addr, method, path, body, STEP * 2).unwrap_or_else(|e| panic!("WebDriver {e}; see {}", self.log.display()));
        assert_eq!(code, 200, "WebDriver {method} {path}: {} {}", v["value"]["error"], v["value"]["message"]);
        v["value"].clone()
    }

    /// A command of the session.
    fn command(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let id = self.session.as_deref().expect("a session");
        self.call(method, &format!("/session/{id}{path}"), body)
    }

    fn open(&self, url: &str) {
        self.command("POST", "/url", Some(&json!({"url": url})));
    }

    fn url(&self) -> String {
        self.command("GET", "/url", None).as_str().unwrap().to_string()
    }

    fn source(&self) -> String {
        self.command("GET", "/source", None).as_str().unwrap().to_string()
    }

    /// The first element matching a CSS selector, waited for.
    fn find(&self, css: &str) -> String {
        let id = self.session.as_deref().expect("a session");
        let body = json!({"using": "css selector", "value": css});
        eventually(&format!("an element `{css}` on the page"), STEP, || {
            match http_json(&self.addr, "POST", &format!("/session/{id}/element"), Some(&body), STEP) {
                Ok((200, v)) => v["value"][ELEMENT].as_str().map(str::to_string),
                Ok((_, v)) if v["value"]["error"] == "no such element" => None,
                Ok((code, v)) => panic!("finding `{css}`: {code} {}", v["value"]),
                Err(e) => panic!("finding `{css}`: {e}"),
            }
        })
    }

    fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css);
        self.command("POST", &format!("/element/{element}/value"), Some(&json!({"text": text})));
    }

    fn click(&self, css: &str) {
        let element = self.find(css);
        self.command("POST", &format!("/element/{element}/click"), Some(&json!({})));
    }

    fn text(&self, css: &str) -> String {
        let element = self.find(css);
        self.command("GET", &format!("/element/{element}/text"), None).as_str().unwrap().to_string()
    }

    /// Waits until the page's path (and query) is `path`, and returns its source.
    fn wait_for_page(&self, origin: &str, path: &str) -> String {
        let expected = format!("{origin}{path}");
        let deadline = Instant::now() + STEP;
        while self.url() != expected {
            assert!(
                Instant::now() < deadline,
                "the browser did not reach {expected} in {STEP:?}; it shows {}:\n{}",
                self.url(),
                self.source()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        self.source()
    }

    /// Saves a screenshot of the viewport and checks that it is a PNG.
    fn screenshot(&self, file: &Path) {
        let png = base64_decode(self.command("GET", "/screenshot", None).as_str().expect("base64 text"));
        let (width, height) = png_size(&png).unwrap_or_else(|| panic!("{} is not a PNG", file.display()));
        assert!(width > 0 && height > 0, "{}: an empty {width}x{height} image", file.display());
        std::fs::write(file, &png).unwrap();
        eprintln!("screenshot {} ({width}x{height}, {} bytes)", file.display(), png.len());
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(id) = self.session.take() {
            let _ = http_json(&self.addr, "DELETE", &format!("/session/{id}"), None, Duration::from_secs(10));
        }
        // The group's id is ChromeDriver's pid: it was started as the group's leader.
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", self.driver.id())]).stderr(Stdio::null()).status();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.tmp);
    }
}

/// Standard base64 (RFC 4648, with padding), as WebDriver sends screenshots.
fn base64_decode(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut bits, mut count) = (0u32, 0u32);
    for c in text.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=') {
        let sextet = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: byte {c}"),
        };
        bits = (bits << 6) | u32::from(sextet);
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    out
}

/// Width and height of a PNG: the signature, then the IHDR chunk first.
fn png_size(png: &[u8]) -> Option<(u32, u32)> {
    let header = png.get(..24)?;
    if header[..8] != *b"\x89PNG\r\n\x1a\n" || header[12..16] != *b"IHDR" {
        return None;
    }
    let be = |b: &[u8]| u32::from_be_bytes(b.try_into().unwrap());
    Some((be(&header[16..20]), be(&header[20..24])))
}

/// The numeric attribute `name` of the first tag in `tag` text (`<rect x="20" ...>`).
fn number_attr(tag: &str, name: &str) -> f64 {
    let start = tag.find(&format!(" {name}=\"")).unwrap_or_else(|| panic!("no {name} in {tag}")) + name.len() + 3;
    let len = tag[start..].find('"').unwrap();
    tag[start..start + len].parse().unwrap_or_else(|e| panic!("{name} in {tag}: {e}"))
}

/// A node's box in the lineage SVG.
#[derive(Debug, Clone, Copy)]
struct NodeBox {
    x: f64,
    y: f64,
    width: f64,
    height: f64,
}

impl NodeBox {
    /// The `<rect>` just before `<text>{label}</text>`.
    fn of(svg: &str, label: &str) -> NodeBox {
        let at = svg.find(&format!(">{label}</text>")).unwrap_or_else(|| panic!("no node {label} in the lineage picture: {svg}"));
        let rect = &svg[svg[..at].rfind("<rect").expect("a rect before the label")..at];
        NodeBox {
            x: number_attr(rect, "x"),
            y: number_attr(rect, "y"),
            width: number_attr(rect, "width"),
            height: number_attr(rect, "height"),
        }
    }

    fn holds(&self, (x, y): (f64, f64)) -> bool {
        (self.x..=self.x + self.width).contains(&x) && (self.y..=self.y + self.height).contains(&y)
    }
}

/// An arrow of the lineage SVG: a `<path class="edge">` from its first
/// point to its last, and its `<title>` (the input's state).
#[derive(Debug)]
struct Edge {
    from: (f64, f64),
    to: (f64, f64),
    state: String,
}

fn edges(svg: &str) -> Vec<Edge> {
    let point = |p: &str| -> (f64, f64) {
        let (x, y) = p.trim_start_matches(['M', 'C']).split_once(',').unwrap_or_else(|| panic!("a point: {p}"));
        (x.parse().unwrap(), y.parse().unwrap())
    };
    svg.split("<path class=\"edge\" ")
        .skip(1)
        .map(|path| {
            let tag = format!(" {}", &path[..path.find('>').unwrap()]);
            let start = tag.find(" d=\"").expect("a path with d") + 4;
            let d = &tag[start..start + tag[start..].find('"').unwrap()];
            let points: Vec<&str> = d.split_whitespace().collect();
            let state = path.split_once("<title>").and_then(|(_, t)| t.split_once("</title>")).map(|(t, _)| t.to_string());
            Edge { from: point(points[0]), to: point(points[points.len() - 1]), state: state.unwrap_or_default() }
        })
        .collect()
}

#[test]
fn base64_decodes_what_it_should() {
    assert_eq!(base64_decode("bWVzaHBsYW5l"), b"meshplane");
    assert_eq!(base64_decode("bWVzaA=="), b"mesh");
    assert_eq!(base64_decode("bWVzaHA=\n"), b"meshp");
    assert_eq!(base64_decode("iVBORw0KGgo="), b"\x89PNG\r\n\x1a\n");
    assert_eq!(base64_decode("+/+/"), [0xfb, 0xff, 0xbf]);
}

#[tokio::test]
async fn a_person_signs_in_searches_and_follows_lineage_in_chromium() {
    let catalog = catalog();
    let origin = format!("http://{catalog}");
    let client = cluster().await;
    let out = repo_root().join("target/browser");
    std::fs::create_dir_all(&out).unwrap();

    // Two products in a fresh domain, one the other's input, found by a
    // word only they carry; a third in the same domain that must not match.
    let domain = unique("brw");
    let ns = ready_domain(&client, &domain, "  displayName: Browser Test\n  description: Products a headless browser reads.\n").await;
    let suffix = domain.trim_start_matches("brw-");
    let (clicks, sessions, invoices) = (format!("clicks-{suffix}"), format!("sessions-{suffix}"), format!("invoices-{suffix}"));
    let word = format!("kiwi{suffix}");
    apply(&product_manifest(
        &ns,
        &clicks,
        &format!(
            "  owner: web-team@example.com\n  description: Raw page clicks from the shop\n  tags: [web, {word}]\n  \
             outputPorts: [{{name: events, format: Parquet, schema: [{{name: page_url, type: string}}, {{name: clicked_at, type: timestamp}}]}}]\n"
        ),
    ));
    // Restricted: only the ClusterRole below lets the token's ServiceAccount see it.
    apply(&product_manifest(
        &ns,
        &sessions,
        &format!(
            "  owner: analytics-team@example.com\n  description: Visits stitched together from raw clicks\n  tags: [{word}]\n  \
             classification: Restricted\n  lifecycle: Stable\n  inputs: [{{name: clicks, product: {clicks}}}]\n  \
             outputPorts: [{{name: visits, format: CSV, schema: [{{name: session_id, type: string}}, {{name: page_count, type: integer}}]}}]\n"
        ),
    ));
    apply(&product_manifest(&ns, &invoices, "  owner: billing@example.com\n  description: Every invoice sent\n  tags: [billing]\n"));
    for name in [&clicks, &sessions, &invoices] {
        wait_product(&client, &ns, name, "Ready", "True").await;
    }
    wait_product(&client, &ns, &sessions, "InputsReady", "True").await;

    // A reader of every product and domain, as a browser user would be.
    let (sa, role) = ("catalog-reader", unique("brw-reader"));
    apply(&format!(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: {sa}, namespace: {ns}}}\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {{name: {role}}}\n\
         rules: [{{apiGroups: [meshplane.dev], resources: [dataproducts, datadomains], verbs: [get, list]}}]\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {{name: {role}}}\n\
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: {role}}}\n\
         subjects: [{{kind: ServiceAccount, name: {sa}, namespace: {ns}}}]\n"
    ));
    let user = format!("system:serviceaccount:{ns}:{sa}");
    wait_until("the ServiceAccount's ClusterRole to take effect", Duration::from_secs(30), || async {
        can_i(&["get", &format!("dataproducts.meshplane.dev/{sessions}"), "-n", &ns, "--as", &user]).then_some(())
    })
    .await;
    let token = kubectl(&["create", "token", sa, "-n", &ns, "--duration", "1h"]).trim().to_string();
    // The catalog answers from the operator's caches: wait until they hold
    // both products and the edge, so what the browser sees is settled.
    let search_api = format!("/api/v1/products?q={word}");
    wait_until("the catalog to find both products", Duration::from_secs(30), || async {
        let (code, body) = http_get_with(&catalog, &search_api, Some(&token))?;
        let v: Value = serde_json::from_str(&body).ok()?;
        let found: Vec<_> = v["items"].as_array()?.iter().map(|i| (i["name"].as_str(), i["domain"].as_str())).collect();
        (code == 200 && found == [(Some(clicks.as_str()), Some(domain.as_str())), (Some(sessions.as_str()), Some(domain.as_str()))])
            .then_some(())
    })
    .await;

    let browser = Browser::start(&out);
    let started = Instant::now();

    // 1. Without the cookie the catalog sends the browser to its login form.
    browser.open(&format!("{origin}/"));
    let login = browser.wait_for_page(&origin, "/login");
    assert!(login.contains("kubectl create token"), "the login page says where a token comes from: {login}");
    browser.type_into("form[action='/login'] input[name='token']", &token);
    browser.screenshot(&out.join("01-login.png"));
    browser.click("form[action='/login'] button");
    let home = browser.wait_for_page(&origin, "/");
    assert_eq!(browser.text("h1"), "Data products", "signed in, the search page: {home}");
    let cookie = browser.command("GET", "/cookie/meshplane_token", None);
    assert_eq!(cookie["value"].as_str(), Some(token.as_str()));
    assert_eq!(cookie["httpOnly"], true, "scripts must not read the token: {cookie}");

    // 2. Search by the word only two products carry.
    browser.type_into("form[action='/'] input[name='q']", &word);
    browser.click("form[action='/'] button");
    let results = eventually("the search results", STEP, || {
        let url = browser.url();
        url.contains(&format!("q={word}")).then(|| browser.source())
    });
    let link = |name: &str| format!("href=\"/products/{ns}/{name}\"");
    assert!(results.contains(&link(&clicks)) && results.contains(&link(&sessions)), "both products are found: {results}");
    assert!(!results.contains(&invoices), "the unrelated product is not listed: {results}");
    assert!(results.contains("2 products"), "{results}");
    assert!(results.contains("Raw page clicks from the shop") && results.contains(&format!("href=\"/domains/{domain}\"")));
    browser.screenshot(&out.join("02-search.png"));

    // 3. The Restricted product's page, through its link.
    browser.click(&format!("a[href='/products/{ns}/{sessions}']"));
    let page = browser.wait_for_page(&origin, &format!("/products/{ns}/{sessions}"));
    assert_eq!(browser.text("h1"), sessions);
    for expected in [
        "Visits stitched together from raw clicks",
        "analytics-team@example.com",
        "Restricted",
        "Port visits (CSV)",
        "session_id",
        "page_count",
        &format!("{domain}/{clicks} · Granted"),
    ] {
        assert!(page.contains(expected), "the product page shows {expected:?}: {page}");
    }
    browser.screenshot(&out.join("03-product.png"));

    // 4. The lineage picture, from the header's link.
    browser.click("header a[href='/lineage']");
    let lineage = browser.wait_for_page(&origin, "/lineage");
    let svg = &lineage[lineage.find("<svg").expect("an SVG picture")..];
    let (from, to) = (NodeBox::of(svg, &clicks), NodeBox::of(svg, &sessions));
    let edge = edges(svg).into_iter().find(|e| from.holds(e.from) && to.holds(e.to));
    let edge = edge.unwrap_or_else(|| panic!("no edge from {clicks} {from:?} to {sessions} {to:?}: {svg}"));
    assert_eq!(edge.state, "Granted", "{edge:?}");
    // Other tests' domains fill the picture too: bring ours into view.
    let node = browser.find(&format!("svg a[href='/domains/{domain}']"));
    let script = "const n = arguments[0]; n.scrollIntoView({block: 'center', inline: 'center'}); \
                  const r = n.getBoundingClientRect(); \
                  return r.left >= 0 && r.top >= 0 && r.right <= innerWidth && r.bottom <= innerHeight;";
    let shown = browser.command("POST", "/execute/sync", Some(&json!({"script": script, "args": [{ELEMENT: node}]})));
    assert_eq!(shown, true, "{clicks} is in view for the screenshot");
    browser.screenshot(&out.join("04-lineage.png"));
    eprintln!("browser steps took {:?}", started.elapsed());
}
