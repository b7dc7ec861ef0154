//! Federated governance, pure: each rule of a GovernancePolicy is defined
//! once here, as a Rust check and as the CEL expression the API server runs,
//! side by side so they cannot drift apart (a test feeds both the same
//! manifests). No client: the controller, `meshplane lint` and tests call in.

use jiff::civil::Date;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::api::policy::{GovernancePolicy, Rules};
use crate::api::product::{Classification, Lifecycle, StorageKind};
use crate::api::{DataDomain, DataProduct};
use crate::plumbing::quantity::parse_quantity;

/// One broken rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The policy's name.
    pub policy: String,
    /// The rule's name, such as `allowed-storage-classes`.
    pub rule: &'static str,
    /// The field at fault, such as `spec.storage[0].storageClass`.
    pub field: String,
    /// For a person: the rule, the field and what is allowed.
    pub message: String,
}

/// One rule, as the API server checks it: a CEL expression over `object`
/// (true means compliant) and a CEL message expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub rule: &'static str,
    pub expression: String,
    pub message_expression: String,
}

/// A CEL string literal of `s`.
pub fn cel_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn cel_list(items: &[String]) -> String {
    format!("[{}]", items.iter().map(|s| cel_string(s)).collect::<Vec<_>>().join(", "))
}

/// The earliest sunset a Deprecated product may carry on `today`.
pub fn earliest_sunset(today: Date, days: i32) -> Date {
    today.checked_add(jiff::Span::new().days(days as i64)).unwrap_or(today)
}

fn present(s: &Option<String>) -> bool {
    s.as_deref().is_some_and(|s| !s.trim().is_empty())
}

/// Evaluates one policy against one product. `today` fixes the date the
/// deprecation rule counts from, for both evaluations.
pub fn evaluate(policy: &GovernancePolicy, product: &DataProduct, today: Date) -> Vec<Violation> {
    let name = policy.metadata.name.as_deref().unwrap_or_default();
    let r = &policy.spec.rules;
    let spec = &product.spec;
    let mut out = Vec::new();
    let mut violation = |rule: &'static str, field: String, message: String| {
        out.push(Violation { policy: name.to_string(), rule, field, message: format!("{message} (policy `{name}`, rule {rule})") });
    };
    if r.require_owner && !present(&spec.owner) {
        violation("require-owner", "spec.owner".into(), "spec.owner is required".into());
    }
    if r.require_description && !present(&spec.description) {
        violation("require-description", "spec.description".into(), "spec.description is required".into());
    }
    if r.require_documentation && !present(&spec.documentation) {
        violation("require-documentation", "spec.documentation".into(), "spec.documentation is required".into());
    }
    if let Some(pattern) = &r.name_pattern {
        let product_name = product.metadata.name.as_deref().unwrap_or_default();
        let matches = regex::Regex::new(pattern).map(|re| re.is_match(product_name)).unwrap_or(false);
        if !matches {
            violation("name-pattern", "metadata.name".into(), format!("name `{product_name}` does not match `{pattern}`"));
        }
    }
    if let Some(c) = &r.classification {
        // Public + PII breaks both PII rules; the more specific one speaks first.
        if c.public_forbids_pii && spec.classification == Classification::Public && spec.contains_pii {
            violation("public-forbids-pii", "spec.containsPII".into(), "a Public product may not contain PII".into());
        }
        if c.pii_requires_confidential && spec.contains_pii && spec.classification < Classification::Confidential {
            violation(
                "pii-requires-confidential",
                "spec.classification".into(),
                format!("a product with containsPII must be Confidential or Restricted, not {:?}", spec.classification),
            );
        }
        if c.restricted_requires_consumers && spec.classification == Classification::Restricted && spec.access.consumers.is_empty() {
            violation(
                "restricted-requires-consumers",
                "spec.access.consumers".into(),
                "a Restricted product must list its consumers in spec.access.consumers".into(),
            );
        }
    }
    if !r.allowed_storage_classes.is_empty() {
        for (i, s) in spec.storage.iter().enumerate().filter(|(_, s)| s.kind == StorageKind::Volume) {
            if !s.storage_class.as_ref().is_some_and(|c| r.allowed_storage_classes.contains(c)) {
                let class = s.storage_class.as_deref().map(|c| format!("`{c}`")).unwrap_or_else(|| "(unset)".into());
                violation(
                    "allowed-storage-classes",
                    format!("spec.storage[{i}].storageClass"),
                    format!("storage class {class} is not allowed; allowed: {}", r.allowed_storage_classes.join(", ")),
                );
            }
        }
    }
    if let Some(max) = &r.max_storage_size {
        let limit = parse_quantity(&max.0);
        for (i, s) in spec.storage.iter().enumerate() {
            let asked = s.size.as_ref().map(|q| q.0.as_str()).unwrap_or_default();
            if let (Some(size), Some(limit)) = (parse_quantity(asked), limit)
                && size > limit
            {
                violation("max-storage-size", format!("spec.storage[{i}].size"), format!("size {asked} exceeds the maximum of {}", max.0));
            }
        }
    }
    if !r.allowed_registries.is_empty() {
        for (i, p) in spec.pipelines.iter().enumerate() {
            if !r.allowed_registries.iter().any(|reg| p.image.starts_with(reg.as_str())) {
                violation(
                    "allowed-registries",
                    format!("spec.pipelines[{i}].image"),
                    format!("image `{}` is not from an allowed registry; allowed: {}", p.image, r.allowed_registries.join(", ")),
                );
            }
        }
    }
    if r.require_resource_limits {
        for (i, p) in spec.pipelines.iter().enumerate() {
            let limits = p.resources.as_ref().and_then(|r| r.limits.as_ref());
            if !limits.is_some_and(|l| l.cpu.is_some() && l.memory.is_some()) {
                violation(
                    "require-resource-limits",
                    format!("spec.pipelines[{i}].resources.limits"),
                    format!("pipeline `{}` must set CPU and memory limits", p.name),
                );
            }
        }
    }
    if r.require_freshness_for_stable && spec.lifecycle == Lifecycle::Stable && spec.quality.as_ref().is_none_or(|q| q.freshness.is_none())
    {
        violation(
            "require-freshness-for-stable",
            "spec.quality.freshness".into(),
            "a Stable product must declare quality.freshness".into(),
        );
    }
    if let Some(days) = r.deprecation_notice_days
        && spec.lifecycle == Lifecycle::Deprecated
    {
        let earliest = earliest_sunset(today, days);
        let ok = spec.sunset.as_deref().is_some_and(|s| s >= earliest.to_string().as_str());
        if !ok {
            violation(
                "deprecation-notice",
                "spec.sunset".into(),
                format!("a Deprecated product's sunset must be on or after {earliest} ({days} days' notice)"),
            );
        }
    }
    out
}

/// The rules of a policy as CEL checks for a ValidatingAdmissionPolicy, in
/// the same order as [`evaluate`] tests them.
pub fn compile(policy: &GovernancePolicy, today: Date) -> Vec<Check> {
    let name = policy.metadata.name.as_deref().unwrap_or_default();
    let r: &Rules = &policy.spec.rules;
    let mut checks = Vec::new();
    // Every message ends the way evaluate's do.
    let suffix = |rule: &str| cel_string(&format!(" (policy `{name}`, rule {rule})"));
    let mut check = |rule: &'static str, expression: String, message: String| {
        checks.push(Check { rule, expression, message_expression: format!("{message} + {}", suffix(rule)) });
    };
    let required = |field: &str| format!("has(object.spec.{field}) && object.spec.{field}.trim() != ''");
    if r.require_owner {
        check("require-owner", required("owner"), cel_string("spec.owner is required"));
    }
    if r.require_description {
        check("require-description", required("description"), cel_string("spec.description is required"));
    }
    if r.require_documentation {
        check("require-documentation", required("documentation"), cel_string("spec.documentation is required"));
    }
    if let Some(pattern) = &r.name_pattern {
        check(
            "name-pattern",
            format!("object.metadata.name.matches({})", cel_string(pattern)),
            format!("'name `' + object.metadata.name + '` does not match `' + {} + '`'", cel_string(pattern)),
        );
    }
    let pii = "(has(object.spec.containsPII) && object.spec.containsPII)";
    let class = "(has(object.spec.classification) ? object.spec.classification : 'Internal')";
    if let Some(c) = &r.classification {
        if c.public_forbids_pii {
            check("public-forbids-pii", format!("!({class} == 'Public' && {pii})"), cel_string("a Public product may not contain PII"));
        }
        if c.pii_requires_confidential {
            check(
                "pii-requires-confidential",
                format!("!{pii} || {class} in ['Confidential', 'Restricted']"),
                format!("'a product with containsPII must be Confidential or Restricted, not ' + {class}"),
            );
        }
        if c.restricted_requires_consumers {
            check(
                "restricted-requires-consumers",
                format!(
                    "{class} != 'Restricted' || (has(object.spec.access) && has(object.spec.access.consumers) && size(object.spec.access.consumers) > 0)"
                ),
                cel_string("a Restricted product must list its consumers in spec.access.consumers"),
            );
        }
    }
    if !r.allowed_storage_classes.is_empty() {
        let allowed = cel_list(&r.allowed_storage_classes);
        let bad = format!("s.kind == 'Volume' && !(has(s.storageClass) && s.storageClass in {allowed})");
        check(
            "allowed-storage-classes",
            format!("!has(object.spec.storage) || !object.spec.storage.exists(s, {bad})"),
            format!(
                "'storage class ' + object.spec.storage.filter(s, {bad}).map(s, has(s.storageClass) ? '`' + s.storageClass + '`' : '(unset)').join(', ') + {}",
                cel_string(&format!(" is not allowed; allowed: {}", r.allowed_storage_classes.join(", ")))
            ),
        );
    }
    if let Some(max) = &r.max_storage_size {
        let limit = format!("quantity({})", cel_string(&max.0));
        let bad = format!("has(s.size) && quantity(string(s.size)).compareTo({limit}) > 0");
        check(
            "max-storage-size",
            format!("!has(object.spec.storage) || !object.spec.storage.exists(s, {bad})"),
            format!(
                "'size ' + object.spec.storage.filter(s, {bad}).map(s, string(s.size)).join(', ') + {}",
                cel_string(&format!(" exceeds the maximum of {}", max.0))
            ),
        );
    }
    if !r.allowed_registries.is_empty() {
        let allowed = cel_list(&r.allowed_registries);
        let bad = format!("!{allowed}.exists(r, p.image.startsWith(r))");
        check(
            "allowed-registries",
            format!("!has(object.spec.pipelines) || !object.spec.pipelines.exists(p, {bad})"),
            format!(
                "'image ' + object.spec.pipelines.filter(p, {bad}).map(p, '`' + p.image + '`').join(', ') + {}",
                cel_string(&format!(" is not from an allowed registry; allowed: {}", r.allowed_registries.join(", ")))
            ),
        );
    }
    if r.require_resource_limits {
        let bad = "!(has(p.resources) && has(p.resources.limits) && has(p.resources.limits.cpu) && has(p.resources.limits.memory))";
        check(
            "require-resource-limits",
            format!("!has(object.spec.pipelines) || !object.spec.pipelines.exists(p, {bad})"),
            format!(
                "'pipeline ' + object.spec.pipelines.filter(p, {bad}).map(p, '`' + p.name + '`').join(', ') + ' must set CPU and memory limits'"
            ),
        );
    }
    let lifecycle = "(has(object.spec.lifecycle) ? object.spec.lifecycle : 'Experimental')";
    if r.require_freshness_for_stable {
        check(
            "require-freshness-for-stable",
            format!("{lifecycle} != 'Stable' || (has(object.spec.quality) && has(object.spec.quality.freshness))"),
            cel_string("a Stable product must declare quality.freshness"),
        );
    }
    if let Some(days) = r.deprecation_notice_days {
        let earliest = earliest_sunset(today, days).to_string();
        check(
            "deprecation-notice",
            format!("{lifecycle} != 'Deprecated' || (has(object.spec.sunset) && object.spec.sunset >= {})", cel_string(&earliest)),
            cel_string(&format!("a Deprecated product's sunset must be on or after {earliest} ({days} days' notice)")),
        );
    }
    checks
}

/// Whether a label selector matches a set of labels (matchLabels and
/// matchExpressions with In, NotIn, Exists, DoesNotExist). No selector, or
/// an empty one, matches everything.
pub fn selector_matches(selector: Option<&LabelSelector>, labels: &std::collections::BTreeMap<String, String>) -> bool {
    let Some(selector) = selector else { return true };
    let labels_ok = selector.match_labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    let expressions_ok = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => !labels.get(&e.key).is_some_and(|v| values.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            _ => false,
        }
    });
    labels_ok && expressions_ok
}

/// Whether a policy applies to a domain.
pub fn selects(policy: &GovernancePolicy, domain: &DataDomain) -> bool {
    selector_matches(policy.spec.domain_selector.as_ref(), domain.metadata.labels.as_ref().unwrap_or(&Default::default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(rules: &str) -> GovernancePolicy {
        serde_saphyr::from_str(&format!("metadata: {{name: std}}\nspec:\n  rules: {rules}")).unwrap()
    }

    fn product(spec: &str) -> DataProduct {
        serde_saphyr::from_str(&format!("metadata: {{name: p, namespace: n}}\nspec: {spec}")).unwrap()
    }

    fn today() -> Date {
        Date::new(2026, 11, 25).unwrap()
    }

    fn rules_broken(p: &GovernancePolicy, spec: &str) -> Vec<&'static str> {
        evaluate(p, &product(spec), today()).into_iter().map(|v| v.rule).collect()
    }

    #[test]
    fn each_rule_at_its_boundary() {
        let all = policy(
            "{requireOwner: true, requireDescription: true, requireDocumentation: true, namePattern: '^p$', \
             classification: {piiRequiresConfidential: true, restrictedRequiresConsumers: true, publicForbidsPII: true}, \
             allowedStorageClasses: [standard], maxStorageSize: 100Gi, allowedRegistries: [reg.io/], requireResourceLimits: true, \
             requireFreshnessForStable: true, deprecationNoticeDays: 30}",
        );
        let ok = "{owner: o, description: d, documentation: u}";
        assert!(rules_broken(&all, ok).is_empty());
        assert_eq!(rules_broken(&all, "{owner: '  ', description: d, documentation: u}"), ["require-owner"]);
        assert_eq!(rules_broken(&all, "{owner: o, documentation: u}"), ["require-description"]);
        assert_eq!(rules_broken(&all, "{owner: o, description: d, documentation: u, containsPII: true}"), ["pii-requires-confidential"]);
        assert!(
            rules_broken(&all, "{owner: o, description: d, documentation: u, containsPII: true, classification: Confidential}").is_empty()
        );
        assert_eq!(
            rules_broken(&all, "{owner: o, description: d, documentation: u, containsPII: true, classification: Public}"),
            ["public-forbids-pii", "pii-requires-confidential"]
        );
        assert_eq!(
            rules_broken(&all, "{owner: o, description: d, documentation: u, classification: Restricted}"),
            ["restricted-requires-consumers"]
        );
        let storage = |class: &str, size: &str| {
            format!("{{owner: o, description: d, documentation: u, storage: [{{name: a, kind: Volume, size: {size}{class}}}]}}")
        };
        assert!(rules_broken(&all, &storage(", storageClass: standard", "100Gi")).is_empty(), "the maximum itself is allowed");
        assert_eq!(rules_broken(&all, &storage(", storageClass: standard", "107374182401")), ["max-storage-size"]);
        assert_eq!(rules_broken(&all, &storage("", "1Gi")), ["allowed-storage-classes"], "an unset class is not an allowed one");
        let pipeline = |image: &str, limits: &str| {
            format!(
                "{{owner: o, description: d, documentation: u, pipelines: [{{name: x, image: '{image}', schedule: '@daily'{limits}}}]}}"
            )
        };
        let limits = ", resources: {limits: {cpu: '1', memory: 1Gi}}";
        assert!(rules_broken(&all, &pipeline("reg.io/a", limits)).is_empty());
        assert_eq!(rules_broken(&all, &pipeline("reg.io", limits)), ["allowed-registries"]);
        assert_eq!(rules_broken(&all, &pipeline("reg.io/a", ", resources: {limits: {cpu: '1'}}")), ["require-resource-limits"]);
        assert_eq!(rules_broken(&all, "{owner: o, description: d, documentation: u, lifecycle: Stable}"), ["require-freshness-for-stable"]);
        let deprecated =
            |sunset: &str| format!("{{owner: o, description: d, documentation: u, lifecycle: Deprecated, sunset: '{sunset}'}}");
        assert!(rules_broken(&all, &deprecated("2026-12-25")).is_empty(), "exactly 30 days ahead");
        assert_eq!(rules_broken(&all, &deprecated("2026-12-24")), ["deprecation-notice"]);
    }

    #[test]
    fn the_name_pattern_reads_the_product_name() {
        let p = policy("{namePattern: '^[a-z]+$'}");
        let mut named = product("{}");
        named.metadata.name = Some("has-dash".into());
        assert_eq!(evaluate(&p, &named, today())[0].rule, "name-pattern");
        named.metadata.name = Some("plain".into());
        assert!(evaluate(&p, &named, today()).is_empty());
    }

    #[test]
    fn compiled_checks_follow_the_enabled_rules_in_order() {
        let p = policy("{requireOwner: true, maxStorageSize: 1Ti, deprecationNoticeDays: 7}");
        let checks = compile(&p, today());
        let rules: Vec<_> = checks.iter().map(|c| c.rule).collect();
        assert_eq!(rules, ["require-owner", "max-storage-size", "deprecation-notice"]);
        assert!(checks[1].expression.contains("quantity(\"1Ti\")"), "{}", checks[1].expression);
        assert!(checks[2].expression.contains("\"2026-12-02\""), "{}", checks[2].expression);
        assert!(checks.iter().all(|c| c.message_expression.contains("(policy `std`, rule ")));
    }

    #[test]
    fn cel_strings_are_escaped() {
        assert_eq!(cel_string(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(cel_string("^[a-z]+\\d$"), r#""^[a-z]+\\d$""#);
    }

    #[test]
    fn selectors_match_domain_labels() {
        use std::collections::BTreeMap;
        let labels = BTreeMap::from([("tier".to_string(), "prod".to_string())]);
        let selector: LabelSelector = serde_saphyr::from_str("matchLabels: {tier: prod}").unwrap();
        assert!(selector_matches(Some(&selector), &labels));
        let selector: LabelSelector = serde_saphyr::from_str("matchExpressions: [{key: tier, operator: NotIn, values: [prod]}]").unwrap();
        assert!(!selector_matches(Some(&selector), &labels));
        assert!(selector_matches(None, &labels));
    }
}
