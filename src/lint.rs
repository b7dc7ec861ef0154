//! `meshplane lint`: offline checks of DataDomain, DataProduct and
//! GovernancePolicy manifests, for a GitOps repository's pull requests.
//! Pure over file contents: the CLI reads the files and prints findings.
//!
//! Each document is checked against its CRD's OpenAPI schema (types, enums,
//! patterns, lengths, ranges, required and unknown fields, duplicate list
//! keys) and every DataProduct against the policies found in the same files,
//! with the rules the API server enforces (`crate::governance`). CEL rules of
//! the CRDs are the API server's alone.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::api::policy::Enforcement;
use crate::api::{DataDomain, DataProduct, GovernancePolicy};
use crate::governance;

/// One finding, printed as `file:line: rule: message`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub file: String,
    pub line: usize,
    pub rule: String,
    pub message: String,
    /// `error` (fails the lint), `warning` or `info`.
    pub severity: &'static str,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}: {}", self.file, self.line, self.rule, self.message)
    }
}

/// One YAML document of a file, with the line it starts on (1-based).
struct Document {
    file: String,
    first_line: usize,
    text: String,
    value: Value,
}

fn split_documents(file: &str, content: &str, findings: &mut Vec<Finding>) -> Vec<Document> {
    let mut docs = Vec::new();
    let mut start = 1;
    let mut current = String::new();
    let mut flush = |start: usize, text: &str, findings: &mut Vec<Finding>| {
        if text.lines().all(|l| l.trim().is_empty() || l.trim_start().starts_with('#')) {
            return;
        }
        match serde_saphyr::from_str::<Value>(text) {
            Ok(value) => docs.push(Document { file: file.to_string(), first_line: start, text: text.to_string(), value }),
            Err(e) => findings.push(Finding {
                file: file.to_string(),
                line: start,
                rule: "yaml".into(),
                message: format!("not valid YAML: {e}"),
                severity: "error",
            }),
        }
    };
    for (i, line) in content.lines().enumerate() {
        if line.starts_with("---") {
            flush(start, &current, findings);
            current.clear();
            start = i + 2;
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    flush(start, &current, findings);
    docs
}

/// The line of a field (`spec.storage[0].storageClass`) in a document: the
/// first line, at or after its parent's, that names the last key. Falls back
/// to the nearest parent found, then to the document's first line.
fn line_of(doc: &Document, field: &str) -> usize {
    let mut line = 0;
    for segment in field.split('.') {
        let (key, index) = match segment.split_once('[') {
            Some((k, rest)) => (k, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (segment, None),
        };
        let pattern = format!("{key}:");
        let found = doc.text.lines().enumerate().skip(line).find(|(_, l)| {
            let t = l.trim_start().trim_start_matches("- ").trim_start_matches('{').trim_start();
            t.starts_with(&pattern) || l.contains(&format!(" {pattern}")) || l.contains(&format!("{{{pattern}"))
        });
        if let Some((i, _)) = found {
            line = i;
        }
        if let Some(n) = index {
            // Step to the n-th list item below the key.
            let items: Vec<usize> =
                doc.text.lines().enumerate().skip(line + 1).filter(|(_, l)| l.trim_start().starts_with("- ")).map(|(i, _)| i).collect();
            if let Some(i) = items.get(n) {
                line = *i;
            }
        }
    }
    doc.first_line + line
}

/// Lints the given files (path, content).
pub fn lint(files: &[(String, String)], namespace_prefix: &str) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut docs = Vec::new();
    for (path, content) in files {
        docs.extend(split_documents(path, content, &mut findings));
    }
    let schemas: BTreeMap<String, Value> = crate::crds::all()
        .into_iter()
        .filter_map(|crd| {
            let schema = crd.spec.versions.first()?.schema.as_ref()?.open_api_v3_schema.as_ref()?;
            Some((crd.spec.names.kind.clone(), serde_json::to_value(schema).ok()?))
        })
        .collect();

    let mut domains: Vec<DataDomain> = Vec::new();
    let mut products: Vec<(usize, DataProduct)> = Vec::new();
    let mut policies: Vec<GovernancePolicy> = Vec::new();
    for (i, doc) in docs.iter().enumerate() {
        let api_version = doc.value.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
        let kind = doc.value.get("kind").and_then(Value::as_str).unwrap_or_default();
        if !api_version.starts_with("meshplane.dev/") {
            continue;
        }
        let Some(schema) = schemas.get(kind) else {
            findings.push(finding(doc, 0, "schema", format!("unknown kind {kind} in meshplane.dev")));
            continue;
        };
        if api_version != format!("{}/{}", crate::keys::GROUP, crate::keys::VERSION) {
            findings.push(finding(doc, 0, "schema", format!("apiVersion {api_version} is not served; use meshplane.dev/v1alpha1")));
            continue;
        }
        let mut problems = Vec::new();
        check_schema(schema, &doc.value, "", true, &mut problems);
        let clean = problems.is_empty();
        for (field, message) in problems {
            let line = line_of(doc, field.trim_start_matches('.'));
            findings.push(Finding {
                file: doc.file.clone(),
                line,
                rule: "schema".into(),
                message: format!("{field}: {message}"),
                severity: "error",
            });
        }
        if !clean {
            continue;
        }
        let parsed = match kind {
            "DataDomain" => serde_json::from_value(doc.value.clone()).map(|d| domains.push(d)),
            "DataProduct" => serde_json::from_value(doc.value.clone()).map(|p| products.push((i, p))),
            "GovernancePolicy" => serde_json::from_value(doc.value.clone()).map(|p| policies.push(p)),
            "DataPlatform" => serde_json::from_value::<crate::api::DataPlatform>(doc.value.clone()).map(|_| ()),
            _ => Ok(()),
        };
        if let Err(e) = parsed {
            findings.push(finding(doc, 0, "schema", e.to_string()));
        }
    }

    let today = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).date();
    for (i, product) in &products {
        let doc = &docs[*i];
        let namespace = product.metadata.namespace.as_deref().unwrap_or_default();
        let domain = domains.iter().find(|d| crate::domain::validate::namespace_name(d, &settings(namespace_prefix)) == namespace);
        for policy in &policies {
            let applies = match domain {
                Some(d) => governance::selects(policy, d),
                // Without the domain in the files, only policies for every domain are known to apply.
                None => policy.spec.domain_selector.as_ref().is_none_or(|s| s.match_labels.is_none() && s.match_expressions.is_none()),
            };
            if !applies {
                continue;
            }
            for v in governance::evaluate(policy, product, today) {
                let severity = match policy.spec.enforcement {
                    Enforcement::Enforce => "error",
                    Enforcement::Warn => "warning",
                    Enforcement::Audit => "info",
                };
                findings.push(Finding {
                    file: doc.file.clone(),
                    line: line_of(doc, &v.field),
                    rule: v.rule.into(),
                    message: v.message,
                    severity,
                });
            }
        }
    }
    findings.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    findings
}

fn settings(prefix: &str) -> crate::domain::settings::DomainSettings {
    crate::domain::settings::DomainSettings { namespace_prefix: prefix.to_string(), ..Default::default() }
}

fn finding(doc: &Document, line: usize, rule: &str, message: String) -> Finding {
    Finding { file: doc.file.clone(), line: doc.first_line + line, rule: rule.into(), message, severity: "error" }
}

/// Checks a JSON document against a structural schema (the OpenAPI v3
/// subset CRDs use): `(field path, problem)` for each problem found.
pub fn schema_problems(schema: &Value, value: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    check_schema(schema, value, "", false, &mut out);
    out
}

/// Checks a value against a structural OpenAPI v3 schema, collecting
/// `(field path, problem)`. `k8s_object` skips a Kubernetes object's
/// apiVersion, kind, metadata and status at the root (the CRD schema does
/// not describe them).
fn check_schema(schema: &Value, value: &Value, path: &str, k8s_object: bool, out: &mut Vec<(String, String)>) {
    let here = if path.is_empty() { "(root)".to_string() } else { path.trim_start_matches('.').to_string() };
    if value.is_null() {
        if schema.get("nullable").and_then(Value::as_bool) != Some(true) && !path.is_empty() {
            out.push((here, "must not be null".into()));
        }
        return;
    }
    if schema.get("x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true) {
        if !(value.is_string() || value.is_i64() || value.is_u64()) {
            out.push((here, "must be an integer or a string".into()));
        } else if let Some(s) = value.as_str()
            && crate::plumbing::quantity::parse_quantity(s).is_none()
        {
            out.push((here, format!("`{s}` is not a quantity")));
        }
        return;
    }
    if schema.get("x-kubernetes-preserve-unknown-fields").and_then(Value::as_bool) == Some(true) && schema.get("properties").is_none() {
        return;
    }
    if let Some(enumeration) = schema.get("enum").and_then(Value::as_array)
        && !enumeration.contains(value)
    {
        let allowed: Vec<String> = enumeration.iter().map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())).collect();
        out.push((here.clone(), format!("unsupported value {value}; allowed: {}", allowed.join(", "))));
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("object") => {
            let Some(object) = value.as_object() else {
                out.push((here, "must be an object".into()));
                return;
            };
            for required in schema.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
                if !object.contains_key(required) {
                    out.push((
                        format!("{}.{required}", here.trim_start_matches("(root)")).trim_start_matches('.').to_string(),
                        "is required".into(),
                    ));
                }
            }
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            for (key, v) in object {
                let child = format!("{path}.{key}");
                if k8s_object && path.is_empty() && matches!(key.as_str(), "apiVersion" | "kind" | "metadata" | "status") {
                    continue;
                }
                match (properties.and_then(|p| p.get(key)), additional) {
                    (Some(s), _) => check_schema(s, v, &child, k8s_object, out),
                    (None, Some(a)) if a.is_object() => check_schema(a, v, &child, k8s_object, out),
                    _ if properties.is_some() => {
                        out.push((child.trim_start_matches('.').to_string(), "unknown field; the API server would drop it".into()))
                    }
                    _ => {}
                }
            }
        }
        Some("array") => {
            let Some(items) = value.as_array() else {
                out.push((here, "must be a list".into()));
                return;
            };
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
                && items.len() as u64 > max
            {
                out.push((here.clone(), format!("must have at most {max} items")));
            }
            if let Some(keys) = schema.get("x-kubernetes-list-map-keys").and_then(Value::as_array) {
                let mut seen = std::collections::BTreeSet::new();
                for (i, item) in items.iter().enumerate() {
                    let key: Vec<String> =
                        keys.iter().filter_map(Value::as_str).map(|k| item.get(k).map(|v| v.to_string()).unwrap_or_default()).collect();
                    if !seen.insert(key.clone()) {
                        out.push((format!("{here}[{i}]"), format!("duplicate entry {}", key.join(", "))));
                    }
                }
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check_schema(item_schema, item, &format!("{path}[{i}]"), k8s_object, out);
                }
            }
        }
        Some("string") => {
            let Some(s) = value.as_str() else {
                out.push((here, "must be a string".into()));
                return;
            };
            let len = s.chars().count() as u64;
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
                && len < min
            {
                out.push((here.clone(), format!("must be at least {min} characters")));
            }
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
                && len > max
            {
                out.push((here.clone(), format!("must be at most {max} characters")));
            }
            if let Some(pattern) = schema.get("pattern").and_then(Value::as_str)
                && regex::Regex::new(pattern).is_ok_and(|re| !re.is_match(s))
            {
                out.push((here, format!("`{s}` does not match {pattern}")));
            }
        }
        Some("integer") | Some("number") => {
            let Some(n) = value.as_f64() else {
                out.push((here, "must be a number".into()));
                return;
            };
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
                && n < min
            {
                out.push((here.clone(), format!("must be at least {min}")));
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
                && n > max
            {
                out.push((here, format!("must be at most {max}")));
            }
        }
        Some("boolean") if !value.is_boolean() => out.push((here, "must be true or false".into())),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = "apiVersion: meshplane.dev/v1alpha1\nkind: GovernancePolicy\nmetadata: {name: storage-standards}\n\
        spec:\n  rules:\n    allowedStorageClasses: [standard, encrypted]\n";

    #[test]
    fn a_policy_violation_names_the_file_line_and_rule() {
        let product = "# a product\napiVersion: meshplane.dev/v1alpha1\nkind: DataProduct\nmetadata:\n  name: p\n  namespace: dm-x\n\
            spec:\n  storage:\n    - name: a\n      kind: Volume\n      size: 1Gi\n      storageClass: fast\n";
        let files = vec![("policy.yaml".to_string(), POLICY.to_string()), ("p.yaml".to_string(), format!("---\n{product}"))];
        let findings = lint(&files, "dm-");
        assert_eq!(findings.len(), 1, "{findings:?}");
        let f = &findings[0];
        assert_eq!((f.file.as_str(), f.line, f.rule.as_str(), f.severity), ("p.yaml", 13, "allowed-storage-classes", "error"));
        assert!(f.message.contains("`fast` is not allowed") && f.message.contains("allowed: standard, encrypted"), "{}", f.message);
        assert_eq!(f.to_string(), format!("p.yaml:13: allowed-storage-classes: {}", f.message));
    }

    #[test]
    fn schema_problems_are_found_offline() {
        let doc = "apiVersion: meshplane.dev/v1alpha1\nkind: DataProduct\nmetadata: {name: p, namespace: n}\nspec:\n  classification: Secret\n  \
            storage: [{name: a, kind: Volume, size: lots}, {name: a, kind: Volume, size: 1Gi}]\n  colour: blue\n";
        let findings = lint(&[("p.yaml".to_string(), doc.to_string())], "dm-");
        let messages: Vec<String> = findings.iter().map(|f| f.message.clone()).collect();
        assert!(messages.iter().any(|m| m.starts_with("spec.classification: unsupported value")), "{messages:?}");
        assert!(messages.iter().any(|m| m.contains("`lots` is not a quantity")), "{messages:?}");
        assert!(messages.iter().any(|m| m.starts_with("spec.storage[1]: duplicate")), "{messages:?}");
        assert!(messages.iter().any(|m| m.starts_with("spec.colour: unknown field")), "{messages:?}");
        assert_eq!(findings.iter().find(|f| f.message.starts_with("spec.classification")).unwrap().line, 5);
    }

    #[test]
    fn warn_and_audit_policies_do_not_fail() {
        let policy = POLICY.replace("spec:\n", "spec:\n  enforcement: Warn\n");
        let product = "apiVersion: meshplane.dev/v1alpha1\nkind: DataProduct\nmetadata: {name: p, namespace: dm-x}\nspec:\n  storage: [{name: a, kind: Volume, size: 1Gi}]\n";
        let findings = lint(&[("a.yaml".into(), policy), ("b.yaml".into(), product.into())], "dm-");
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].severity, "warning");
    }
}
