//! The catalog API against the real control plane: products appear, change
//! and disappear within 2 seconds; search and filters return exactly the
//! expected sets; real ServiceAccount tokens decide who sees a Restricted
//! product; no token is 401, a malformed query 400.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::*;

fn token(namespace: &str, sa: &str) -> String {
    kubectl(&["create", "serviceaccount", sa, "-n", namespace]);
    kubectl(&["create", "token", sa, "-n", namespace, "--duration", "1h"]).trim().to_string()
}

fn get(addr: &str, path: &str, token: Option<&str>) -> (u16, Value) {
    let (code, body) = http_get_with(addr, path, token).expect("catalog reachable");
    (code, serde_json::from_str(&body).unwrap_or(Value::String(body)))
}

fn names(v: &Value) -> Vec<String> {
    let mut n: Vec<String> = v["items"].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap().to_string()).collect();
    n.sort();
    n
}

#[tokio::test]
async fn search_follows_the_cluster_within_two_seconds() {
    let addr = catalog();
    let client = cluster().await;
    let domain = unique("cat");
    let ns = ready_domain(&client, &domain, "").await;
    let t = token(&ns, "browser");
    apply(&product_manifest(
        &ns,
        "orders",
        "  owner: shop\n  tags: [sales, daily]\n  classification: Confidential\n  description: Every order placed\n  outputPorts: [{name: o, format: CSV, schema: [{name: customer_email, type: string}]}]\n",
    ));
    apply(&product_manifest(&ns, "refunds", "  owner: shop\n  tags: [sales]\n  lifecycle: Stable\n  quality: {freshness: 1h}\n"));
    apply(&product_manifest(&ns, "visits", "  owner: web\n  tags: [web]\n  classification: Public\n"));
    let path = |q: &str| format!("/api/v1/products?domain={domain}{q}");
    wait_until("three products to appear", Duration::from_secs(2), || async {
        (names(&get(&addr, &path(""), Some(&t)).1).len() == 3).then_some(())
    })
    .await;

    for (query, expected) in [
        ("&tag=sales", vec!["orders", "refunds"]),
        ("&owner=web", vec!["visits"]),
        ("&classification=Confidential", vec!["orders"]),
        ("&lifecycle=Stable", vec!["refunds"]),
        ("&q=ORDER", vec!["orders"]),
        ("&q=email", vec!["orders"]),
        ("&q=nothing-like-this", vec![]),
        ("&tag=sales&owner=web", vec![]),
    ] {
        let (code, body) = get(&addr, &path(query), Some(&t));
        assert_eq!(code, 200, "{query}: {body}");
        assert_eq!(names(&body), expected, "{query}");
    }
    // Pages: sorted by name, `total` counts every match.
    for (query, expected) in [("&limit=2", vec!["orders", "refunds"]), ("&limit=2&offset=2", vec!["visits"]), ("&offset=5", vec![])] {
        let (code, body) = get(&addr, &path(query), Some(&t));
        assert_eq!(code, 200, "{query}: {body}");
        assert_eq!(names(&body), expected, "{query}");
        assert_eq!(body["total"], 3, "{query}: {body}");
    }
    let (code, body) = get(&addr, &path("&limit=5000"), Some(&t));
    assert_eq!(code, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("`limit`"), "{body}");
    let (code, detail) = get(&addr, &format!("/api/v1/products/{ns}/orders"), Some(&t));
    assert_eq!(code, 200);
    assert_eq!(detail["outputPorts"][0]["schema"][0]["name"], "customer_email");
    assert!(detail["access"].as_str().unwrap().contains("spec.access.consumers"));
    // The Open Data Product Standard export validates against the ODPS
    // v1.0.0 constraints (tests/fixtures/odps-v1.0.0.schema.json).
    let (code, odps) = get(&addr, &format!("/api/v1/products/{ns}/orders/odps"), Some(&t));
    assert_eq!(code, 200, "{odps}");
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(repo_root().join("tests/fixtures/odps-v1.0.0.schema.json")).unwrap()).unwrap();
    let problems = meshplane::lint::schema_problems(&schema, &odps);
    assert!(problems.is_empty(), "the ODPS export breaks the standard: {problems:?}\n{odps}");
    // The check can fail: a document without its required id does.
    let mut broken = odps.clone();
    broken.as_object_mut().unwrap().remove("id");
    broken["colour"] = Value::String("blue".into());
    assert_eq!(meshplane::lint::schema_problems(&schema, &broken).len(), 2);
    for required in ["apiVersion", "kind", "id", "status"] {
        assert!(odps.get(required).is_some_and(|v| v.is_string()), "ODPS requires {required}: {odps}");
    }
    assert_eq!((odps["apiVersion"].as_str(), odps["kind"].as_str()), (Some("v1.0.0"), Some("DataProduct")));
    let allowed = [
        "apiVersion",
        "kind",
        "id",
        "name",
        "version",
        "status",
        "domain",
        "tenant",
        "authoritativeDefinitions",
        "description",
        "customProperties",
        "tags",
        "inputPorts",
        "outputPorts",
        "managementPorts",
        "support",
        "team",
        "productCreatedTs",
    ];
    assert!(odps.as_object().unwrap().keys().all(|k| allowed.contains(&k.as_str())), "{odps}");
    assert!(odps["customProperties"].as_array().unwrap().iter().all(|p| p["property"].is_string() && p.get("value").is_some()));
    let (_, domains) = get(&addr, "/api/v1/domains", Some(&t));
    assert!(domains["items"].as_array().unwrap().iter().any(|d| d["name"] == domain.as_str() && d["dataProducts"] == 3));

    // Changes and deletions follow as quickly.
    apply(&product_manifest(&ns, "visits", "  owner: web\n  tags: [web, sales]\n  classification: Public\n"));
    wait_until("the change to show", Duration::from_secs(2), || async {
        (names(&get(&addr, &path("&tag=sales"), Some(&t)).1) == ["orders", "refunds", "visits"]).then_some(())
    })
    .await;
    kubectl(&["delete", "dp", "refunds", "-n", &ns, "--wait=false"]);
    wait_until("the deletion to show", Duration::from_secs(2), || async {
        (names(&get(&addr, &path(""), Some(&t)).1) == ["orders", "visits"]).then_some(())
    })
    .await;
}

#[tokio::test]
async fn tokens_decide_who_sees_a_restricted_product() {
    let addr = catalog();
    let client = cluster().await;
    let domain = unique("secret");
    let ns = ready_domain(&client, &domain, "").await;
    let allowed = token(&ns, "auditor");
    let denied = token(&ns, "intern");
    apply(&product_manifest(
        &ns,
        "payroll",
        &format!(
            "  owner: hr\n  classification: Restricted\n  access: {{consumers: [{{subject: {{kind: ServiceAccount, name: auditor, namespace: {ns}}}}}]}}\n"
        ),
    ));
    apply(&product_manifest(&ns, "headcount", "  owner: hr\n"));
    wait_product(&client, &ns, "payroll", "AccessReady", "True").await;
    let path = format!("/api/v1/products?domain={domain}");
    wait_until("the auditor to see both", Duration::from_secs(10), || async {
        (names(&get(&addr, &path, Some(&allowed)).1) == ["headcount", "payroll"]).then_some(())
    })
    .await;
    assert_eq!(names(&get(&addr, &path, Some(&denied)).1), ["headcount"], "the intern must not see the Restricted product");
    assert_eq!(get(&addr, &format!("/api/v1/products/{ns}/payroll"), Some(&denied)).0, 404);
    assert_eq!(get(&addr, &format!("/api/v1/products/{ns}/payroll"), Some(&allowed)).0, 200);
    let (_, graph) = get(&addr, "/api/v1/lineage", Some(&denied));
    assert!(!graph.to_string().contains("payroll"), "the lineage graph hides it too");

    let (code, body) = get(&addr, &path, None);
    assert_eq!(code, 401, "{body}");
    assert_eq!(get(&addr, &path, Some("not-a-token")).0, 401);
    let (code, body) = get(&addr, "/api/v1/products?classification=Secret", Some(&allowed));
    assert_eq!(code, 400);
    assert!(body["error"].as_str().unwrap().contains("classification"), "{body}");
    // The API describes itself, and its paths are the ones served.
    let (code, doc) = get(&addr, "/api/v1/openapi.json", None);
    assert_eq!(code, 200);
    for path in doc["paths"].as_object().unwrap().keys() {
        let concrete = path.replace("{namespace}", &ns).replace("{name}", "payroll");
        assert_ne!(get(&addr, &concrete, Some(&allowed)).0, 404, "{path} is documented but not served");
    }
    let (code, body) = get(&addr, "/api/v1/products?colour=blue", Some(&allowed));
    assert_eq!(code, 400);
    assert!(body["error"].as_str().unwrap().contains("colour"), "{body}");
}

#[tokio::test]
async fn web_pages_work_without_javascript() {
    let addr = catalog();
    let client = cluster().await;
    let domain = unique("web");
    let ns = ready_domain(&client, &domain, "  displayName: Web Shop\n").await;
    let t = token(&ns, "reader");
    apply(&product_manifest(
        &ns,
        "clicks",
        "  owner: web-team\n  tags: [web]\n  description: Every <click>\n  outputPorts: [{name: events, format: Parquet, schema: [{name: page_url, type: string}]}]\n",
    ));
    apply(&product_manifest(&ns, "sessions", "  owner: web-team\n  inputs: [{name: clicks, product: clicks}]\n"));
    wait_product(&client, &ns, "sessions", "InputsReady", "True").await;

    let html = wait_until("the search page to list the product", Duration::from_secs(5), || async {
        let (code, body) = http_get_with(&addr, &format!("/?domain={domain}&tag=web"), Some(&t))?;
        (code == 200 && body.contains(&format!("/products/{ns}/clicks"))).then_some(body)
    })
    .await;
    assert!(html.contains("Every &lt;click&gt;"), "text is escaped");
    assert!(!html.contains("<script"), "no JavaScript");
    assert!(!html.contains("/sessions\""), "the filter applies: {html}");
    let (code, page) = http_get_with(&addr, &format!("/products/{ns}/clicks"), Some(&t)).unwrap();
    assert_eq!(code, 200);
    assert!(page.contains("page_url") && page.contains("spec.access.consumers"), "{page}");
    let (code, page) = http_get_with(&addr, &format!("/domains/{domain}"), Some(&t)).unwrap();
    assert!(code == 200 && page.contains("Web Shop") && page.contains("sessions"), "{page}");
    let (code, svg) = http_get_with(&addr, "/lineage", Some(&t)).unwrap();
    assert!(code == 200 && svg.contains("<svg") && svg.contains(">clicks<") && svg.contains(">sessions<"));
    // A browser without a token is sent to the login form.
    let (code, _) = http_get_with(&addr, "/", None).unwrap();
    assert_eq!(code, 303);
    let (code, form) = http_get_with(&addr, "/login", None).unwrap();
    assert!(code == 200 && form.contains("<form method=\"post\""));
}
