//! The catalog's web pages for people: search with filters, a product page,
//! a domain page and a lineage picture (SVG drawn on the server). Plain HTML,
//! no script: it works without JavaScript. Pure: data in, HTML out; the HTTP
//! module calls these with what the caller may see.

use std::fmt::Write;

use super::{DomainSummary, Lineage, ProductDetail, ProductSummary};

/// Escapes text for HTML.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <title>{} · meshplane catalog</title><style>{STYLE}</style></head><body>\
         <header><a href=\"/\">meshplane catalog</a> · <a href=\"/lineage\">lineage</a></header><main>{body}</main></body></html>",
        escape(title)
    )
}

const STYLE: &str = "body{font:16px/1.5 system-ui,sans-serif;margin:0;color:#1b1f24}header{background:#1b1f24;padding:.6em 1em}\
header a{color:#fff;text-decoration:none;font-weight:600}main{max-width:60em;margin:1em auto;padding:0 1em}\
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:.3em .5em;border-bottom:1px solid #ddd}\
.tag{background:#eef;border-radius:.3em;padding:0 .3em;margin-right:.2em}form input,form select{margin:0 .3em .3em 0}\
.ok{color:#176f2c}.no{color:#a0141e}";

/// Percent-encodes a query string component.
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The search page: a form (a GET, so results have a URL) and the results.
/// `results` is one page (at most `limit`) of `total` matches, from `offset`.
pub fn search(
    params: &std::collections::BTreeMap<String, String>,
    results: &[ProductSummary],
    (total, offset, limit): (usize, usize, usize),
    domains: &[String],
) -> String {
    let value = |k: &str| escape(params.get(k).map(String::as_str).unwrap_or_default());
    let select = |name: &str, options: &[&str]| {
        let current = params.get(name).map(String::as_str).unwrap_or_default();
        let mut s = format!("<select name=\"{name}\"><option value=\"\">any {name}</option>");
        for o in options {
            let selected = if *o == current { " selected" } else { "" };
            let _ = write!(s, "<option{selected}>{}</option>", escape(o));
        }
        s + "</select>"
    };
    let domain_names: Vec<&str> = domains.iter().map(String::as_str).collect();
    let mut body = format!(
        "<h1>Data products</h1><form method=\"get\" action=\"/\"><input name=\"q\" value=\"{}\" placeholder=\"search names, descriptions, tags, fields\" size=\"40\">\
         {}{}{}<input name=\"tag\" value=\"{}\" placeholder=\"tag\"><input name=\"owner\" value=\"{}\" placeholder=\"owner\"><button>Search</button></form>",
        value("q"),
        select("domain", &domain_names),
        select("classification", &["Public", "Internal", "Confidential", "Restricted"]),
        select("lifecycle", &["Experimental", "Stable", "Deprecated"]),
        value("tag"),
        value("owner"),
    );
    let _ = write!(
        body,
        "<p>{total} products{}</p><table><tr><th>Product</th><th>Domain</th><th>Owner</th><th>Classification</th><th>Lifecycle</th><th>Ready</th></tr>",
        if results.len() < total { format!(", showing {} to {}", offset + 1, offset + results.len()) } else { String::new() }
    );
    for p in results {
        let tags: String = p.tags.iter().map(|t| format!("<span class=\"tag\">{}</span>", escape(t))).collect();
        let domain = p.domain.as_deref().unwrap_or_default();
        let _ = write!(
            body,
            "<tr><td><a href=\"/products/{ns}/{name}\">{name}</a><br><small>{desc}</small> {tags}</td><td><a href=\"/domains/{domain}\">{domain}</a></td>\
             <td>{owner}</td><td>{class:?}</td><td>{life:?}</td><td class=\"{cls}\">{ready}</td></tr>",
            ns = escape(&p.namespace),
            name = escape(&p.name),
            desc = escape(p.description.as_deref().unwrap_or_default()),
            domain = escape(domain),
            owner = escape(p.owner.as_deref().unwrap_or_default()),
            class = p.classification,
            life = p.lifecycle,
            cls = if p.ready { "ok" } else { "no" },
            ready = if p.ready { "yes" } else { "no" },
        );
    }
    body.push_str("</table>");
    // Paging links keep every other parameter of the search.
    let link = |offset: usize, label: &str| {
        let mut query: Vec<String> =
            params.iter().filter(|(k, _)| k.as_str() != "offset").map(|(k, v)| format!("{}={}", url_encode(k), url_encode(v))).collect();
        query.push(format!("offset={offset}"));
        format!("<a href=\"/?{}\">{label}</a> ", escape(&query.join("&")))
    };
    if offset > 0 {
        body.push_str(&link(offset.saturating_sub(limit), "previous"));
    }
    if offset + results.len() < total {
        body.push_str(&link(offset + results.len(), "next"));
    }
    page("Data products", &body)
}

/// One product: what it is, its ports and schemas, quality, runs, lineage and access.
pub fn product(p: &ProductDetail) -> String {
    let s = &p.summary;
    let mut body = format!(
        "<h1>{}</h1><p>{}</p><table><tr><th>Domain</th><td><a href=\"/domains/{d}\">{d}</a></td></tr><tr><th>Owner</th><td>{}</td></tr>\
         <tr><th>Classification</th><td>{:?}{}</td></tr><tr><th>Lifecycle</th><td>{:?}{}</td></tr><tr><th>Documentation</th><td>{}</td></tr>\
         <tr><th>Ready</th><td class=\"{}\">{}</td></tr></table>",
        escape(&s.name),
        escape(s.description.as_deref().unwrap_or_default()),
        escape(s.owner.as_deref().unwrap_or_default()),
        s.classification,
        if p.contains_pii { " · contains PII" } else { "" },
        s.lifecycle,
        p.sunset.as_deref().map(|d| format!(" · sunset {}", escape(d))).unwrap_or_default(),
        p.documentation.as_deref().map(|u| format!("<a href=\"{0}\">{0}</a>", escape(u))).unwrap_or_default(),
        if s.ready { "ok" } else { "no" },
        if s.ready { "yes" } else { "no" },
        d = escape(s.domain.as_deref().unwrap_or_default()),
    );
    for port in &p.output_ports {
        let _ = write!(
            body,
            "<h2>Port {} ({})</h2><p>{}</p><table><tr><th>Field</th><th>Type</th><th>Description</th><th>PII</th></tr>",
            escape(&port.name),
            escape(&port.format),
            escape(port.description.as_deref().unwrap_or_default())
        );
        for f in &port.schema {
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{:?}</td><td>{}</td><td>{}</td></tr>",
                escape(&f.name),
                f.type_,
                escape(f.description.as_deref().unwrap_or_default()),
                if f.pii { "yes" } else { "" }
            );
        }
        body.push_str("</table>");
    }
    if let Some(f) = p.quality.as_ref().and_then(|q| q.freshness.as_deref()) {
        let _ = write!(body, "<h2>Quality</h2><p>Freshness: newest successful run at most {} old.</p>", escape(f));
    }
    if !p.pipelines.is_empty() {
        body.push_str(
            "<h2>Pipelines</h2><table><tr><th>Pipeline</th><th>Kind</th><th>Last run</th><th>Last success</th><th>Result</th></tr>",
        );
        for r in &p.pipelines {
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&r.name),
                escape(&r.kind),
                escape(r.last_schedule_time.as_deref().unwrap_or("-")),
                escape(r.last_successful_time.as_deref().unwrap_or("-")),
                escape(r.last_result.as_deref().unwrap_or("-"))
            );
        }
        body.push_str("</table>");
    }
    if !p.inputs.is_empty() {
        body.push_str("<h2>Inputs</h2><ul>");
        for i in &p.inputs {
            let _ = write!(body, "<li>{}/{} · {}</li>", escape(&i.domain), escape(&i.product), escape(&i.state));
        }
        body.push_str("</ul>");
    }
    let _ = write!(body, "<h2>Access</h2><p>{}</p>", escape(&p.access));
    page(&s.name, &body)
}

/// One domain and its products.
pub fn domain(d: &DomainSummary, products: &[ProductSummary]) -> String {
    let mut body = format!(
        "<h1>{}</h1><p>{}</p><p>Namespace {} · {} products</p><ul>",
        escape(d.display_name.as_deref().unwrap_or(&d.name)),
        escape(d.description.as_deref().unwrap_or_default()),
        escape(d.namespace.as_deref().unwrap_or("-")),
        d.data_products
    );
    for p in products {
        let _ = write!(
            body,
            "<li><a href=\"/products/{}/{}\">{}</a> {}</li>",
            escape(&p.namespace),
            escape(&p.name),
            escape(&p.name),
            escape(p.description.as_deref().unwrap_or_default())
        );
    }
    page(&d.name, &(body + "</ul>"))
}

/// The lineage picture: one column per domain, an arrow per input.
pub fn lineage(graph: &Lineage) -> String {
    let mut domains: Vec<&str> = graph.nodes.iter().map(|n| n.domain.as_str()).collect();
    domains.sort();
    domains.dedup();
    let (col, row, w, h) = (240.0, 60.0, 200.0, 36.0);
    let mut rows = std::collections::BTreeMap::<&str, usize>::new();
    let mut at = std::collections::BTreeMap::<&str, (f64, f64)>::new();
    for n in &graph.nodes {
        let c = domains.iter().position(|d| *d == n.domain).unwrap_or(0) as f64;
        let r = rows.entry(n.domain.as_str()).or_default();
        at.insert(n.id.as_str(), (20.0 + c * col, 50.0 + *r as f64 * row));
        *r += 1;
    }
    let height = 80.0 + rows.values().copied().max().unwrap_or(0) as f64 * row;
    let width = 40.0 + domains.len().max(1) as f64 * col;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"13\">\
         <defs><marker id=\"a\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"6\" markerHeight=\"6\" orient=\"auto\"><path d=\"M0,0L10,5L0,10z\"/></marker></defs>"
    );
    for (i, d) in domains.iter().enumerate() {
        let _ = write!(svg, "<text x=\"{}\" y=\"30\" font-weight=\"bold\">{}</text>", 20.0 + i as f64 * col, escape(d));
    }
    for n in &graph.nodes {
        let (x, y) = at[n.id.as_str()];
        let _ = write!(
            svg,
            "<a href=\"/domains/{d}\"><rect x=\"{x}\" y=\"{y}\" width=\"{w}\" height=\"{h}\" rx=\"6\" fill=\"#eef\" stroke=\"#557\"/>\
             <text x=\"{}\" y=\"{}\">{}</text></a>",
            x + 8.0,
            y + 23.0,
            escape(&n.product),
            d = escape(&n.domain)
        );
    }
    // Edges are drawn over the boxes, so none hides behind one. Between
    // columns an edge leaves the side facing its target; within a column it
    // leaves and enters on the right and bows out into the gap, so it never
    // seems to pass through the boxes between.
    for e in &graph.edges {
        if let (Some(&(x1, y1)), Some(&(x2, y2))) = (at.get(e.from.as_str()), at.get(e.to.as_str())) {
            let colour = if e.state == "Granted" { "#176f2c" } else { "#a0141e" };
            let (y1, y2) = (y1 + h / 2.0, y2 + h / 2.0);
            let (start, end, c1, c2) = if x1 == x2 {
                let bow = x1 + w + 12.0 + ((y2 - y1).abs() / row).min(2.0) * 8.0;
                ((x1 + w, y1), (x2 + w, y2), (bow, y1), (bow, y2))
            } else if x1 < x2 {
                let mid = (x1 + w + x2) / 2.0;
                ((x1 + w, y1), (x2, y2), (mid, y1), (mid, y2))
            } else {
                let mid = (x1 + x2 + w) / 2.0;
                ((x1, y1), (x2 + w, y2), (mid, y1), (mid, y2))
            };
            let _ = write!(
                svg,
                "<path class=\"edge\" d=\"M{},{} C{},{} {},{} {},{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" marker-end=\"url(#a)\"><title>{}</title></path>",
                start.0,
                start.1,
                c1.0,
                c1.1,
                c2.0,
                c2.1,
                end.0,
                end.1,
                escape(&e.state)
            );
        }
    }
    page("Lineage", &format!("<h1>Lineage</h1>{svg}</svg><p>Green: granted input; red: not found or access denied.</p>"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(escape("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }

    #[test]
    fn the_search_page_keeps_the_query_and_lists_results() {
        let params = std::collections::BTreeMap::from([
            ("q".to_string(), "<orders>".to_string()),
            ("classification".to_string(), "Public".to_string()),
        ]);
        let result = ProductSummary {
            name: "orders".into(),
            namespace: "dm-shop".into(),
            domain: Some("shop".into()),
            owner: Some("team".into()),
            description: None,
            classification: crate::api::product::Classification::Public,
            lifecycle: crate::api::product::Lifecycle::Stable,
            tags: vec!["sales".into()],
            ready: true,
        };
        let html = search(&params, &[result], (1, 0, 100), &[]);
        assert!(html.contains("value=\"&lt;orders&gt;\"") && html.contains("<option selected>Public</option>"));
        assert!(html.contains("href=\"/products/dm-shop/orders\"") && html.contains("1 products") && !html.contains("<script"));
    }
}
