//! GovernancePolicy against the real control plane: every rule refused under
//! Enforce, warned under Warn, recorded under Audit; policies that arrive
//! after products; agreement between `meshplane lint` and the API server on
//! a generated corpus; lint on the examples.

mod support;

use std::time::Duration;

use kube::api::{Api, PostParams};
use meshplane::api::DataProduct;
use support::*;

/// Every rule on, as one policy body.
const ALL_RULES: &str = "    requireOwner: true\n    requireDescription: true\n    requireDocumentation: true\n    \
    namePattern: \"^dp-[a-z0-9-]+$\"\n    classification: {piiRequiresConfidential: true, restrictedRequiresConsumers: true, publicForbidsPII: true}\n    \
    allowedStorageClasses: [standard, encrypted]\n    maxStorageSize: 100Gi\n    allowedRegistries: [registry.example.com/]\n    \
    requireResourceLimits: true\n    requireFreshnessForStable: true\n    deprecationNoticeDays: 30\n";

fn policy(name: &str, enforcement: &str, label: &str) -> String {
    format!(
        "apiVersion: meshplane.dev/v1alpha1\nkind: GovernancePolicy\nmetadata: {{name: {name}}}\nspec:\n  enforcement: {enforcement}\n  \
         domainSelector: {{matchLabels: {{governance-test: {label}}}}}\n  rules:\n{ALL_RULES}"
    )
}

fn today_plus(days: i64) -> String {
    let today = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).date();
    today.checked_add(jiff::Span::new().days(days)).unwrap().to_string()
}

/// A product that complies with every rule, with `change` applied to its spec lines.
fn compliant_spec() -> Vec<String> {
    [
        "  owner: team",
        "  description: a product",
        "  documentation: https://docs.example.com/p",
        "  classification: Internal",
        "  containsPII: false",
        "  lifecycle: Experimental",
        "  storage: [{name: data, kind: Volume, size: 10Gi, storageClass: standard}]",
        "  pipelines: [{name: run, image: registry.example.com/etl:1, schedule: \"@daily\", resources: {limits: {cpu: \"1\", memory: 1Gi}}}]",
    ]
    .map(String::from)
    .to_vec()
}

fn manifest(namespace: &str, name: &str, spec: &[String]) -> String {
    format!(
        "apiVersion: meshplane.dev/v1alpha1\nkind: DataProduct\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n{}\n",
        spec.join("\n")
    )
}

/// One violating variant per rule: (rule, the spec line to replace by prefix, its replacement, a fragment of the message).
fn violations() -> Vec<(&'static str, String, &'static str)> {
    let without = |prefix: &str| compliant_spec().into_iter().filter(|l| !l.starts_with(prefix)).collect::<Vec<_>>().join("\n");
    let with = |prefix: &str, line: &str| {
        compliant_spec().into_iter().map(|l| if l.starts_with(prefix) { line.to_string() } else { l }).collect::<Vec<_>>().join("\n")
    };
    vec![
        ("require-owner", without("  owner:"), "spec.owner is required"),
        ("require-description", without("  description:"), "spec.description is required"),
        ("require-documentation", without("  documentation:"), "spec.documentation is required"),
        ("name-pattern", String::new(), "does not match"),
        ("pii-requires-confidential", with("  containsPII:", "  containsPII: true"), "must be Confidential or Restricted"),
        ("restricted-requires-consumers", with("  classification:", "  classification: Restricted"), "must list its consumers"),
        (
            "public-forbids-pii",
            with("  classification:", "  classification: Public\n  containsPII: true").replace("  containsPII: false\n", ""),
            "may not contain PII",
        ),
        (
            "allowed-storage-classes",
            with("  storage:", "  storage: [{name: data, kind: Volume, size: 10Gi, storageClass: fast}]"),
            "storage class `fast` is not allowed",
        ),
        (
            "max-storage-size",
            with("  storage:", "  storage: [{name: data, kind: Volume, size: 101Gi, storageClass: standard}]"),
            "exceeds the maximum of 100Gi",
        ),
        (
            "allowed-registries",
            with(
                "  pipelines:",
                "  pipelines: [{name: run, image: docker.io/etl:1, schedule: \"@daily\", resources: {limits: {cpu: \"1\", memory: 1Gi}}}]",
            ),
            "not from an allowed registry",
        ),
        (
            "require-resource-limits",
            with("  pipelines:", "  pipelines: [{name: run, image: registry.example.com/etl:1, schedule: \"@daily\"}]"),
            "must set CPU and memory limits",
        ),
        ("require-freshness-for-stable", with("  lifecycle:", "  lifecycle: Stable"), "must declare quality.freshness"),
        (
            "deprecation-notice",
            with("  lifecycle:", &format!("  lifecycle: Deprecated\n  sunset: \"{}\"", today_plus(29))),
            "sunset must be on or after",
        ),
    ]
}

async fn wait_enforced(ns: &str, probe: &str) {
    // The API server picks up a new admission policy within a moment.
    wait_until("the policy to be enforced", Duration::from_secs(30), || async {
        let out = kubectl_stdin(&["apply", "--dry-run=server", "-f", "-"], probe);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        (!out.status.success() || stderr.contains("Warning")).then_some(())
    })
    .await;
    let _ = ns;
}

#[tokio::test]
async fn every_rule_is_enforced_warned_or_audited_by_the_api_server() {
    operator();
    let client = cluster().await;
    let label = unique("rules");
    let mut namespaces = Vec::new();
    for mode in ["Enforce", "Warn", "Audit"] {
        let domain = format!("{label}-{}", mode.to_lowercase());
        let ns = ready_domain(&client, &domain, "  description: governance test\n").await;
        kubectl(&["label", "datadomain", &domain, &format!("governance-test={domain}")]);
        apply(&policy(&domain, mode, &domain));
        namespaces.push((mode, domain, ns));
    }
    for (mode, domain, ns) in &namespaces {
        wait_until("the policy to be Ready", Duration::from_secs(30), || async {
            let out = kubectl(&["get", "gp", domain, "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}"]);
            (out == "True").then_some(())
        })
        .await;
        if *mode != "Audit" {
            wait_enforced(ns, &manifest(ns, "probe", &compliant_spec()[1..])).await;
        }
        // A compliant product passes every mode.
        let out = kubectl_stdin(&["apply", "-f", "-"], &manifest(ns, "dp-fine", &compliant_spec()));
        assert!(out.status.success() && !String::from_utf8_lossy(&out.stderr).contains("Warning"), "{mode}: {out:?}");

        for (i, (rule, spec, fragment)) in violations().into_iter().enumerate() {
            let name = if rule == "name-pattern" { format!("bad-{i}") } else { format!("dp-{i}") };
            let spec = if spec.is_empty() { compliant_spec().join("\n") } else { spec };
            let out = kubectl_stdin(&["apply", "-f", "-"], &manifest(ns, &name, &[spec]));
            let stderr = String::from_utf8_lossy(&out.stderr).to_string();
            match *mode {
                "Enforce" => {
                    assert!(!out.status.success(), "{rule}: admitted under Enforce");
                    assert!(stderr.contains(fragment) && stderr.contains(&format!("rule {rule}")), "{rule}: {stderr}");
                    assert!(stderr.contains(&format!("policy `{domain}`")), "{rule}: {stderr}");
                }
                "Warn" => {
                    assert!(out.status.success(), "{rule}: refused under Warn: {stderr}");
                    assert!(stderr.contains("Warning") && stderr.contains(fragment), "{rule}: no warning: {stderr}");
                }
                _ => {
                    assert!(out.status.success() && !stderr.contains("Warning"), "{rule}: {stderr}");
                    let p = wait_product(&client, ns, &name, "PolicyCompliant", "False").await;
                    let condition = product_condition(&p, "PolicyCompliant");
                    assert_eq!(condition.reason, "PolicyViolation");
                    assert!(condition.message.contains(fragment), "{rule}: {}", condition.message);
                }
            }
        }
    }
    let (_, audit_domain, audit_ns) = &namespaces[2];
    // Exactly one Event per violating product: published with the status
    // that records the violation, not again by the pass after it.
    let jsonpath = "jsonpath={range .items[*]}{.involvedObject.name}{\"\\n\"}{end}";
    let events = kubectl(&["get", "events", "-n", audit_ns, "--field-selector", "reason=PolicyViolation", "-o", jsonpath]);
    let mut per_product = std::collections::BTreeMap::<&str, usize>::new();
    for name in events.lines() {
        *per_product.entry(name).or_default() += 1;
    }
    assert_eq!(per_product.len(), violations().len(), "an Event per audited violation: {per_product:?}");
    assert!(per_product.values().all(|n| *n == 1), "one Event per violation, not one per pass: {per_product:?}");
    let violating = kubectl(&["get", "gp", audit_domain, "-o", "jsonpath={.status.violations}"]);
    assert_eq!(violating, violations().len().to_string(), "the policy counts the products that violate it");
}

#[tokio::test]
async fn a_late_policy_reports_existing_products_and_its_removal_clears_them() {
    operator();
    let client = cluster().await;
    let domain = unique("late");
    let ns = ready_domain(&client, &domain, "  description: late policy\n").await;
    kubectl(&["label", "datadomain", &domain, &format!("governance-test={domain}")]);
    apply(&manifest(
        &ns,
        "dp-old",
        &["  storage: [{name: data, kind: Volume, size: 1Gi, storageClass: standard}]\n  pipelines: [{name: run, image: docker.io/etl:1, schedule: \"@daily\"}]".to_string()],
    ));
    let before = wait_product(&client, &ns, "dp-old", "Ready", "True").await;
    assert_eq!(product_condition(&before, "PolicyCompliant").status, "True");

    apply(&policy(&domain, "Enforce", &domain));
    let after = wait_product(&client, &ns, "dp-old", "PolicyCompliant", "False").await;
    let message = &product_condition(&after, "PolicyCompliant").message;
    assert!(
        message.contains("spec.owner is required") && message.contains("image `docker.io/etl:1` is not from an allowed registry"),
        "{message}"
    );
    // Reported, never changed: same spec, same generation, still Ready, still has its claim.
    assert_eq!(after.spec, before.spec);
    assert_eq!(after.metadata.generation, before.metadata.generation);
    assert_eq!(product_condition(&after, "Ready").status, "True");
    assert!(kubectl_output(&["get", "pvc", "dp-old-data", "-n", &ns]).status.success());
    // It can still be labelled (a metadata change is not judged).
    kubectl(&["label", "dataproduct", "dp-old", "-n", &ns, "reviewed=yes"]);
    let admission = format!("meshplane-{domain}");
    wait_until("the admission objects to exist", Duration::from_secs(30), || async {
        kubectl_output(&["get", "validatingadmissionpolicy", &admission]).status.success().then_some(())
    })
    .await;

    kubectl(&["delete", "gp", &domain]);
    wait_until("the admission objects to be collected", Duration::from_secs(30), || async {
        let vap = kubectl_output(&["get", "validatingadmissionpolicy", &admission]).status.success();
        let binding = kubectl_output(&["get", "validatingadmissionpolicybinding", &admission]).status.success();
        (!vap && !binding).then_some(())
    })
    .await;
    wait_product(&client, &ns, "dp-old", "PolicyCompliant", "True").await;
}

/// A small deterministic generator (xorshift), so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }
}

/// A schema-valid DataProduct spec that lands on either side of each rule's boundary.
fn generated_spec(rng: &mut Rng) -> Vec<String> {
    let mut spec = Vec::new();
    // Compliant choices are likelier, so that about half the corpus passes
    // while every boundary is still crossed many times.
    for (field, options) in [
        ("owner", &["team", "team", "team", "team", "team", "team", "team", "team", "team", "", "\"  \""][..]),
        ("description", &["d", "d", "d", "d", "d", "d", "d", "d", "d", "d", "d", ""][..]),
        (
            "documentation",
            &[
                "https://d",
                "https://d",
                "https://d",
                "https://d",
                "https://d",
                "https://d",
                "https://d",
                "https://d",
                "https://d",
                "https://d",
                "https://d",
                "",
            ][..],
        ),
        ("classification", &["", "Internal", "Internal", "Confidential", "Confidential", "Restricted", "Public"][..]),
        ("containsPII", &["", "false", "false", "false", "true"][..]),
    ] {
        let v = rng.pick(options);
        if !v.is_empty() {
            spec.push(format!("  {field}: {v}"));
        }
    }
    match rng.next() % 12 {
        0 => spec.push("  lifecycle: Stable".into()),
        1 => spec.push("  lifecycle: Stable\n  quality: {freshness: 1h}".into()),
        2 => {
            let days = *rng.pick(&[-1i64, 29, 30, 31, 400]);
            spec.push(format!("  lifecycle: Deprecated\n  sunset: \"{}\"", today_plus(days)));
        }
        _ => {}
    }
    if !rng.next().is_multiple_of(4) {
        spec.push("  access: {consumers: [{domain: someone}]}".into());
    }
    let mut storage = Vec::new();
    for i in 0..(rng.next() % 3 / 2 + rng.next() % 2) {
        let kind = rng.pick(&["Volume", "Volume", "Bucket"]);
        let size = rng.pick(&[
            "1Gi",
            "100Gi",
            "1Gi",
            "101Gi",
            "107374182400",
            "107374182401",
            "0.5Ti",
            "100000Mi",
            "102400Mi",
            "10Gi",
            "5Gi",
            "20Gi",
        ]);
        let class = rng.pick(&[
            ", storageClass: standard",
            ", storageClass: standard",
            ", storageClass: encrypted",
            ", storageClass: encrypted",
            "",
            ", storageClass: fast",
        ]);
        storage.push(format!("{{name: s{i}, kind: {kind}, size: {size}{class}}}"));
    }
    if !storage.is_empty() {
        spec.push(format!("  storage: [{}]", storage.join(", ")));
    }
    let mut pipelines = Vec::new();
    for i in 0..(rng.next() % 3 / 2 + rng.next() % 2) {
        let image = rng.pick(&[
            "registry.example.com/a:1",
            "registry.example.com/a:1",
            "registry.example.com/b",
            "registry.example.com/c/d:2",
            "registry.example.com/a:1",
            "registry.example.com/b",
            "registry.example.com/a:1",
            "docker.io/a:1",
            "registry.example.com",
            "registry.example.com.evil/a",
        ]);
        let limits = ", resources: {limits: {cpu: \"1\", memory: 1Gi}}";
        let choices = [
            limits,
            limits,
            limits,
            limits,
            limits,
            limits,
            limits,
            limits,
            "",
            ", resources: {limits: {cpu: \"1\"}}",
            ", resources: {requests: {cpu: \"1\", memory: 1Gi}}",
        ];
        let resources = rng.pick(&choices);
        pipelines.push(format!("{{name: p{i}, image: \"{image}\", schedule: \"@daily\"{resources}}}"));
    }
    if !pipelines.is_empty() {
        spec.push(format!("  pipelines: [{}]", pipelines.join(", ")));
    }
    if spec.is_empty() {
        spec.push("  tags: [generated]".into());
    }
    spec
}

#[tokio::test]
async fn lint_and_the_api_server_agree_on_a_generated_corpus() {
    operator();
    let client = cluster().await;
    let domain = unique("agree");
    let ns = ready_domain(&client, &domain, "  description: agreement\n").await;
    kubectl(&["label", "datadomain", &domain, &format!("governance-test={domain}")]);
    let policy_yaml = policy(&domain, "Enforce", &domain);
    apply(&policy_yaml);
    wait_enforced(&ns, &manifest(&ns, "dp-probe", &compliant_spec()[1..])).await;

    let mut rng = Rng(0x9e3779b97f4a7c15);
    let corpus: Vec<(String, String)> = (0..320)
        .map(|i| {
            let name = if rng.next().is_multiple_of(12) { format!("x{i}") } else { format!("dp-{i}") };
            (name.clone(), manifest(&ns, &name, &generated_spec(&mut rng)))
        })
        .collect();
    // meshplane lint sees the policy, the domain (for the selector) and the products.
    let domain_yaml = kubectl(&["get", "datadomain", &domain, "-o", "yaml"]);
    let mut files = vec![("policy.yaml".to_string(), policy_yaml), ("domain.yaml".to_string(), domain_yaml)];
    files.extend(corpus.iter().map(|(name, m)| (format!("{name}.yaml"), m.clone())));
    let findings = meshplane::lint::lint(&files, "dm-");
    let schema_errors: Vec<_> = findings.iter().filter(|f| f.rule == "schema" && f.file != "domain.yaml").collect();
    assert!(schema_errors.is_empty(), "the generator made schema-invalid manifests: {schema_errors:?}");

    let api = Api::<DataProduct>::namespaced(client.clone(), &ns);
    let dry_run = PostParams { dry_run: true, ..Default::default() };
    let (mut denied, mut disagreements) = (0, Vec::new());
    for (name, m) in &corpus {
        let product: DataProduct = serde_saphyr::from_str(m).unwrap();
        let server_denies = match api.create(&dry_run, &product).await {
            Ok(_) => false,
            Err(kube::Error::Api(s)) if s.message.contains("ValidatingAdmissionPolicy") => true,
            Err(e) => panic!("the API server refused {name} for another reason: {e}\n{m}"),
        };
        let file = format!("{name}.yaml");
        let lint_denies = findings.iter().any(|f| f.file == file && f.severity == "error");
        denied += server_denies as usize;
        if server_denies != lint_denies {
            disagreements.push(format!("{name}: server denies={server_denies}, lint denies={lint_denies}\n{m}"));
        }
    }
    // How often each rule's boundary was crossed (lint's findings per rule).
    let mut per_rule = std::collections::BTreeMap::<String, usize>::new();
    for f in findings.iter().filter(|f| f.rule != "schema") {
        *per_rule.entry(f.rule.clone()).or_default() += 1;
    }
    println!(
        "agreement: {} manifests, {denied} denied, {} disagreements; violations per rule: {per_rule:?}",
        corpus.len(),
        disagreements.len()
    );
    assert!(corpus.len() >= 300);
    assert!(denied > 30 && denied < corpus.len() - 30, "the corpus should sit on both sides of the rules: {denied} denied");
    assert_eq!(per_rule.len(), 13, "every rule is crossed: {per_rule:?}");
    assert!(per_rule.values().all(|n| *n >= 5), "every rule is crossed several times: {per_rule:?}");
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n---\n"));
}

#[tokio::test]
async fn lint_passes_the_examples_and_points_at_a_bad_line() {
    let binary = env!("CARGO_BIN_EXE_meshplane");
    let out = std::process::Command::new(binary).args(["lint", "examples/"]).current_dir(repo_root()).output().unwrap();
    assert!(out.status.success(), "lint examples/: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));

    let out = std::process::Command::new(binary)
        .args(["lint", "examples/policies.yaml", "examples/domains.yaml", "tests/fixtures/bad-product.yaml"])
        .current_dir(repo_root())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("tests/fixtures/bad-product.yaml:14: allowed-storage-classes: storage class `premium` is not allowed")),
        "{stdout}"
    );
    let out = std::process::Command::new(binary)
        .args(["lint", "--output", "json", "examples/policies.yaml", "tests/fixtures/bad-product.yaml"])
        .current_dir(repo_root())
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(json.as_array().unwrap().iter().any(|f| f["rule"] == "allowed-storage-classes" && f["line"] == 14));
}
