//! The catalog search benchmark (not a test: it measures): latency p50/p99
//! and requests per second of `/api/v1/products` over 10,000 products.
//!
//! It serves meshplane's real catalog router over loopback HTTP from a watch
//! cache and search index fed with watch events, as the operator's are,
//! with authentication off (the cluster's TokenReview is not what is
//! measured), and queries it with a keep-alive HTTP/1.1 client in the same
//! process: first one request at a time for latency, then several
//! connections at once for throughput. No API server is involved: the
//! catalog answers from memory by design.
//!
//! `cargo bench --bench search` (also part of `make bench`);
//! `SEARCH_PRODUCTS`, `SEARCH_REQUESTS` and `SEARCH_CONNECTIONS` change the size.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::runtime::reflector;
use kube::runtime::watcher;
use meshplane::api::{DataDomain, DataProduct};
use meshplane::catalog::http::{CatalogCaches, CatalogState, router};
use meshplane::catalog::index::Index;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A deterministic pseudo-random sequence (xorshift), so runs compare.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 as usize
    }
    fn pick<'a>(&mut self, items: &'a [&'a str]) -> &'a str {
        items[self.next() % items.len()]
    }
}

const WORDS: &[&str] = &[
    "orders",
    "payments",
    "customers",
    "inventory",
    "shipments",
    "returns",
    "invoices",
    "ledger",
    "campaigns",
    "clicks",
    "sessions",
    "devices",
    "stores",
    "suppliers",
    "contracts",
    "claims",
    "policies",
    "risk",
    "fraud",
    "churn",
    "revenue",
    "margin",
    "forecast",
    "daily",
    "hourly",
    "snapshot",
    "events",
    "aggregates",
    "curated",
    "raw",
    "enriched",
    "europe",
    "americas",
    "asia",
    "mobile",
    "web",
];
const CLASSES: &[&str] = &["Public", "Internal", "Confidential", "Restricted"];
const LIFECYCLES: &[&str] = &["Experimental", "Stable", "Deprecated"];

fn products(count: usize, domains: usize) -> Vec<DataProduct> {
    let mut rng = Rng(0x9e3779b97f4a7c15);
    (0..count)
        .map(|i| {
            let domain = format!("domain{:03}", i % domains);
            let words: Vec<&str> = (0..3).map(|_| rng.pick(WORDS)).collect();
            let name = format!("{}-{}-{i}", words[0], words[1]);
            // Schema field names: mostly common, one per product unique-ish.
            let fields: Vec<_> = (0..6)
                .map(|k| json!({"name": format!("{}_{}", rng.pick(WORDS), if k == 0 { i % 997 } else { k }), "type": "string"}))
                .collect();
            let product = json!({
                "apiVersion": "meshplane.dev/v1alpha1",
                "kind": "DataProduct",
                "metadata": {"name": name, "namespace": format!("dm-{domain}"), "uid": format!("uid-{i}"), "resourceVersion": "1"},
                "spec": {
                    "owner": format!("team{}@example.com", i % 200),
                    "description": format!("The {} {} of the {} domain, {} and {}.", words[0], words[1], domain, words[2], rng.pick(WORDS)),
                    "classification": CLASSES[i % CLASSES.len()],
                    "lifecycle": LIFECYCLES[i % LIFECYCLES.len()],
                    "tags": [words[0], words[2], format!("tier{}", i % 3)],
                    "outputPorts": [{"name": "table", "format": "Parquet", "schema": fields}],
                },
                "status": {"domain": domain, "conditions": [{"type": "Ready", "status": "True", "reason": "Ready", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]},
            });
            serde_json::from_value(product).expect("a valid DataProduct")
        })
        .collect()
}

fn domains(count: usize) -> Vec<DataDomain> {
    (0..count)
        .map(|i| {
            serde_json::from_value(json!({
                "apiVersion": "meshplane.dev/v1alpha1",
                "kind": "DataDomain",
                "metadata": {"name": format!("domain{i:03}"), "uid": format!("d-{i}"), "resourceVersion": "1"},
                "spec": {"description": "benchmark domain"},
                "status": {"namespace": format!("dm-domain{i:03}")},
            }))
            .expect("a valid DataDomain")
        })
        .collect()
}

/// One keep-alive HTTP/1.1 connection.
struct Connection {
    reader: BufReader<TcpStream>,
}

impl Connection {
    async fn open(addr: std::net::SocketAddr) -> Connection {
        let stream = TcpStream::connect(addr).await.expect("connecting to the catalog");
        stream.set_nodelay(true).unwrap();
        Connection { reader: BufReader::new(stream) }
    }

    /// GETs `path`; returns the status code and the body's length.
    async fn get(&mut self, path: &str) -> (u16, usize) {
        let request = format!("GET {path} HTTP/1.1\r\nHost: catalog\r\n\r\n");
        self.reader.get_mut().write_all(request.as_bytes()).await.unwrap();
        let mut line = String::new();
        self.reader.read_line(&mut line).await.unwrap();
        let code = line.split_whitespace().nth(1).and_then(|c| c.parse().ok()).expect("a status line");
        let mut length = 0;
        loop {
            line.clear();
            self.reader.read_line(&mut line).await.unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).await.unwrap();
        (code, length)
    }
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[(((samples.len() - 1) as f64) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() {
    let count = env_or("SEARCH_PRODUCTS", 10_000);
    let requests = env_or("SEARCH_REQUESTS", 2_000);
    let connections = env_or("SEARCH_CONNECTIONS", 4);
    let domain_count = 100;

    // The caches, fed the way the operator's watches feed them.
    let (product_store, mut product_writer) = reflector::store::<DataProduct>();
    let (domain_store, mut domain_writer) = reflector::store::<DataDomain>();
    let index = Arc::new(Index::default());
    let index_for_app = index.clone();
    for p in products(count, domain_count) {
        let event = watcher::Event::Apply(p);
        product_writer.apply_watcher_event(&event);
        index.apply(&event);
    }
    for d in domains(domain_count) {
        domain_writer.apply_watcher_event(&watcher::Event::Apply(d));
    }
    let (_caches_tx, caches) =
        tokio::sync::watch::channel(Some(CatalogCaches { domains: domain_store, products: product_store, index: index_for_app }));
    // Authentication is off, so this client is never called.
    let client = kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap())).unwrap();
    let app = router(CatalogState::new(client, caches, false));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let queries: Vec<(&str, String)> = vec![
        ("free text, selective (a schema field)", "/api/v1/products?q=ledger_42".into()),
        ("free text, common word", "/api/v1/products?q=revenue".into()),
        ("domain", "/api/v1/products?domain=domain007".into()),
        ("tag + classification", "/api/v1/products?tag=fraud&classification=Confidential".into()),
        ("owner + lifecycle", "/api/v1/products?owner=team17@example.com&lifecycle=Stable".into()),
        ("text + domain", "/api/v1/products?q=daily&domain=domain042".into()),
    ];

    // The index alone, without HTTP: where the time goes.
    for (what, params) in [
        ("index only: free text, common word", vec![("q", "revenue")]),
        ("index only: owner + lifecycle", vec![("owner", "team17@example.com"), ("lifecycle", "Stable")]),
    ] {
        let query = meshplane::catalog::Query::parse(&params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()).unwrap();
        let mut samples = Vec::new();
        for _ in 0..200 {
            let t = Instant::now();
            std::hint::black_box(index.search(&query));
            samples.push(t.elapsed());
        }
        println!("{what}: p50 {} ms, p99 {} ms", ms(percentile(&mut samples, 0.5)), ms(percentile(&mut samples, 0.99)));
    }
    println!("catalog search over {count} products in {domain_count} domains; {requests} requests per query, one at a time\n");
    println!("| query | results (bytes) | p50 ms | p99 ms |\n|---|---|---|---|");
    let mut conn = Connection::open(addr).await;
    let mut all = Vec::new();
    for (what, path) in &queries {
        let (code, bytes) = conn.get(path).await;
        assert_eq!(code, 200, "{path}");
        let mut samples = Vec::with_capacity(requests);
        for _ in 0..requests {
            let t = Instant::now();
            conn.get(path).await;
            samples.push(t.elapsed());
        }
        println!("| {what} | {bytes} | {} | {} |", ms(percentile(&mut samples, 0.5)), ms(percentile(&mut samples, 0.99)));
        all.extend(samples);
    }
    println!("| all of the above | | {} | {} |", ms(percentile(&mut all, 0.5)), ms(percentile(&mut all, 0.99)));

    // Throughput: several connections at once, the queries in rotation.
    let window = Duration::from_secs(env_or("SEARCH_SECONDS", 10) as u64);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..connections {
        let paths: Vec<String> = queries.iter().map(|(_, p)| p.clone()).collect();
        tasks.push(tokio::spawn(async move {
            let mut conn = Connection::open(addr).await;
            let mut done = 0usize;
            while started.elapsed() < window {
                let (code, _) = conn.get(&paths[(c + done) % paths.len()]).await;
                assert_eq!(code, 200);
                done += 1;
            }
            done
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    let rps = total as f64 / started.elapsed().as_secs_f64();
    println!(
        "\nthroughput: {total} requests in {:.1} s over {connections} connections = {rps:.0} requests/s",
        started.elapsed().as_secs_f64()
    );
}
