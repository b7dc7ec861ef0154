//! A GovernancePolicy compiled into the API server's own admission objects:
//! a ValidatingAdmissionPolicy (the rules as CEL) and its binding (which
//! namespaces, and Deny, Warn or Audit). Pure.

use std::collections::BTreeMap;

use jiff::civil::Date;
use k8s_openapi::api::admissionregistration::v1::{
    MatchCondition, MatchResources, NamedRuleWithOperations, ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    ValidatingAdmissionPolicyBindingSpec, ValidatingAdmissionPolicySpec, Validation,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement, ObjectMeta};

use crate::api::policy::{Enforcement, GovernancePolicy};
use crate::governance::compile;
use crate::keys;
use crate::plumbing::controller_owner;

/// The name of both admission objects of a policy.
pub fn admission_name(policy: &str) -> String {
    format!("meshplane-{policy}")
}

/// Which DataProduct requests the policy judges: creations, and updates that
/// change the spec. Metadata-only updates (a finalizer removed, a label) pass,
/// so a product that predates a policy can still be deleted or labelled.
fn spec_changes() -> Vec<MatchCondition> {
    vec![MatchCondition {
        name: "spec-written".into(),
        expression: "request.operation == 'CREATE' || oldObject == null || object.spec != oldObject.spec".into(),
    }]
}

fn products() -> MatchResources {
    MatchResources {
        resource_rules: Some(vec![NamedRuleWithOperations {
            api_groups: Some(vec![keys::GROUP.into()]),
            api_versions: Some(vec!["*".into()]),
            resources: Some(vec!["dataproducts".into()]),
            operations: Some(vec!["CREATE".into(), "UPDATE".into()]),
            ..Default::default()
        }]),
        ..Default::default()
    }
}

fn meta(policy: &GovernancePolicy) -> ObjectMeta {
    let name = policy.metadata.name.as_deref().unwrap_or_default();
    ObjectMeta {
        name: Some(admission_name(name)),
        labels: Some(BTreeMap::from([
            (keys::LABEL_MANAGED_BY.to_string(), keys::MANAGED_BY.to_string()),
            (keys::LABEL_POLICY.to_string(), name.to_string()),
        ])),
        owner_references: Some(vec![controller_owner::<GovernancePolicy>(name, policy.metadata.uid.as_deref().unwrap_or_default())]),
        ..Default::default()
    }
}

/// The ValidatingAdmissionPolicy of a policy's rules, as of `today` (the
/// deprecation rule's date is fixed at compile time; the controller
/// recompiles daily).
pub fn render_policy(policy: &GovernancePolicy, today: Date) -> ValidatingAdmissionPolicy {
    let validations = compile(policy, today)
        .into_iter()
        .map(|c| Validation {
            expression: c.expression,
            message_expression: Some(c.message_expression),
            message: Some(format!("violates rule {} of policy {}", c.rule, policy.metadata.name.as_deref().unwrap_or_default())),
            reason: Some("Invalid".into()),
        })
        .collect::<Vec<_>>();
    ValidatingAdmissionPolicy {
        metadata: meta(policy),
        spec: Some(ValidatingAdmissionPolicySpec {
            failure_policy: Some("Fail".into()),
            match_constraints: Some(products()),
            match_conditions: Some(spec_changes()),
            // A policy with no rule enabled still gets a (trivially true)
            // validation: the API server requires at least one.
            validations: Some(if validations.is_empty() {
                vec![Validation { expression: "true".into(), ..Default::default() }]
            } else {
                validations
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The binding: the selected domains' namespaces (by meshplane's
/// `meshplane.dev/domain` namespace label), and what a violation does.
pub fn render_binding(policy: &GovernancePolicy, selected_domains: Option<&[String]>) -> ValidatingAdmissionPolicyBinding {
    let name = policy.metadata.name.as_deref().unwrap_or_default();
    let requirement = |operator: &str, values: Option<Vec<String>>| LabelSelectorRequirement {
        key: keys::LABEL_DOMAIN.into(),
        operator: operator.into(),
        values,
    };
    let expressions = match selected_domains {
        // Every domain.
        None => vec![requirement("Exists", None)],
        Some([]) => vec![requirement("Exists", None), requirement("DoesNotExist", None)], // matches no namespace
        Some(domains) => vec![requirement("In", Some(domains.to_vec()))],
    };
    let action = match policy.spec.enforcement {
        Enforcement::Enforce => "Deny",
        Enforcement::Warn => "Warn",
        Enforcement::Audit => "Audit",
    };
    ValidatingAdmissionPolicyBinding {
        metadata: meta(policy),
        spec: Some(ValidatingAdmissionPolicyBindingSpec {
            policy_name: Some(admission_name(name)),
            validation_actions: Some(vec![action.into()]),
            match_resources: Some(MatchResources {
                namespace_selector: Some(LabelSelector { match_expressions: Some(expressions), ..Default::default() }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(rules: &str) -> GovernancePolicy {
        serde_saphyr::from_str(&format!("metadata: {{name: std}}\nspec:\n  rules: {rules}")).unwrap()
    }

    fn today() -> Date {
        Date::new(2026, 11, 25).unwrap()
    }

    #[test]
    fn bindings_carry_the_enforcement_and_the_scope() {
        let mut p = policy("{requireOwner: true}");
        p.spec.enforcement = Enforcement::Warn;
        let binding = render_binding(&p, Some(&["orders".to_string()]));
        let spec = binding.spec.unwrap();
        assert_eq!(spec.validation_actions, Some(vec!["Warn".to_string()]));
        let expr = &spec.match_resources.unwrap().namespace_selector.unwrap().match_expressions.unwrap()[0];
        assert_eq!(
            (expr.key.as_str(), expr.operator.as_str(), expr.values.clone()),
            ("meshplane.dev/domain", "In", Some(vec!["orders".to_string()]))
        );
        let vap = render_policy(&p, today());
        assert_eq!(vap.spec.unwrap().validations.unwrap().len(), 1);
    }
}
