//! The catalog: what consumers search, read and use to ask for access. The
//! Kubernetes API is the source of truth; entries are read straight from the
//! operator's watch caches (kept current by watch events), so there is no
//! second database. This module is pure: queries over slices of objects.

pub mod http;
pub mod index;
pub mod odps;
pub mod web;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::api::product::{Classification, Lifecycle, OutputPort};
use crate::api::{DataDomain, DataProduct};

/// A product as the catalog lists it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProductSummary {
    pub name: String,
    pub namespace: String,
    pub domain: Option<String>,
    pub owner: Option<String>,
    pub description: Option<String>,
    pub classification: Classification,
    pub lifecycle: Lifecycle,
    pub tags: Vec<String>,
    pub ready: bool,
}

/// Everything a consumer needs to decide about one product.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProductDetail {
    #[serde(flatten)]
    pub summary: ProductSummary,
    pub documentation: Option<String>,
    #[serde(rename = "containsPII")]
    pub contains_pii: bool,
    pub sunset: Option<String>,
    pub output_ports: Vec<OutputPort>,
    pub quality: Option<crate::api::product::Quality>,
    pub pipelines: Vec<crate::api::product::PipelineStatus>,
    pub inputs: Vec<crate::api::product::InputStatus>,
    pub consumers: Vec<crate::api::product::Consumer>,
    pub conditions: Vec<crate::api::Condition>,
    /// How to get access, for a person.
    pub access: String,
}

/// A domain as the catalog lists it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DomainSummary {
    pub name: String,
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub namespace: Option<String>,
    pub data_products: i32,
}

/// A search: every set field must match.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Query {
    /// Free text: matched, case-insensitively, against the name, description,
    /// tags and schema field names.
    pub text: Option<String>,
    pub domain: Option<String>,
    pub tag: Option<String>,
    pub classification: Option<Classification>,
    pub owner: Option<String>,
    pub lifecycle: Option<Lifecycle>,
}

/// A query parameter with a value the catalog does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("query parameter `{parameter}`: `{value}` is not one of {allowed}")]
pub struct QueryError {
    pub parameter: &'static str,
    pub value: String,
    pub allowed: &'static str,
}

impl Query {
    /// Builds a query from URL parameters; unknown enum values are errors.
    pub fn parse(params: &BTreeMap<String, String>) -> Result<Query, QueryError> {
        let get = |k: &str| params.get(k).filter(|v| !v.is_empty()).cloned();
        let classification = match get("classification") {
            Some(v) => Some(serde_json::from_value(serde_json::Value::String(v.clone())).map_err(|_| QueryError {
                parameter: "classification",
                value: v,
                allowed: "Public, Internal, Confidential, Restricted",
            })?),
            None => None,
        };
        let lifecycle = match get("lifecycle") {
            Some(v) => Some(serde_json::from_value(serde_json::Value::String(v.clone())).map_err(|_| QueryError {
                parameter: "lifecycle",
                value: v,
                allowed: "Experimental, Stable, Deprecated",
            })?),
            None => None,
        };
        Ok(Query { text: get("q"), domain: get("domain"), tag: get("tag"), classification, owner: get("owner"), lifecycle })
    }
}

fn ready(product: &DataProduct) -> bool {
    let conditions = product.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    crate::api::conditions::status_of(conditions, crate::api::conditions::READY) == Some("True")
}

pub fn summary(product: &DataProduct) -> ProductSummary {
    ProductSummary {
        name: product.metadata.name.clone().unwrap_or_default(),
        namespace: product.metadata.namespace.clone().unwrap_or_default(),
        domain: product.status.as_ref().and_then(|s| s.domain.clone()),
        owner: product.spec.owner.clone(),
        description: product.spec.description.clone(),
        classification: product.spec.classification,
        lifecycle: product.spec.lifecycle,
        tags: product.spec.tags.clone(),
        ready: ready(product),
    }
}

pub fn detail(product: &DataProduct) -> ProductDetail {
    let spec = &product.spec;
    let status = product.status.clone().unwrap_or_default();
    let name = product.metadata.name.clone().unwrap_or_default();
    let namespace = product.metadata.namespace.clone().unwrap_or_default();
    let owner = spec.owner.clone().unwrap_or_else(|| "the domain's owners".into());
    ProductDetail {
        summary: summary(product),
        documentation: spec.documentation.clone(),
        contains_pii: spec.contains_pii,
        sunset: spec.sunset.clone(),
        output_ports: spec.output_ports.clone(),
        quality: spec.quality.clone(),
        pipelines: status.pipelines,
        inputs: status.inputs,
        consumers: spec.access.consumers.clone(),
        conditions: status.conditions,
        access: format!(
            "Ask {owner} to add your domain to spec.access.consumers of DataProduct {name} in namespace {namespace}; your pipelines then read its descriptor ConfigMap {name}-descriptor."
        ),
    }
}

/// A domain, given how many products its namespace holds (`by_namespace`).
pub fn domain_summary(domain: &DataDomain, by_namespace: &BTreeMap<String, usize>) -> DomainSummary {
    let namespace = domain.status.as_ref().and_then(|s| s.namespace.clone());
    DomainSummary {
        name: domain.metadata.name.clone().unwrap_or_default(),
        display_name: domain.spec.display_name.clone(),
        description: domain.spec.description.clone(),
        data_products: namespace.as_ref().and_then(|ns| by_namespace.get(ns)).copied().unwrap_or_default() as i32,
        namespace,
    }
}

/// The lineage graph: products as nodes, inputs as edges (upstream -> downstream).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Lineage {
    pub nodes: Vec<LineageNode>,
    pub edges: Vec<LineageEdge>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LineageNode {
    /// `domain/product`.
    pub id: String,
    pub domain: String,
    pub product: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LineageEdge {
    pub from: String,
    pub to: String,
    /// `Granted`, `NotFound` or `AccessDenied`.
    pub state: String,
}

pub fn lineage(products: &[&DataProduct]) -> Lineage {
    let mut nodes = BTreeMap::new();
    let mut edges = Vec::new();
    for p in products {
        let Some(domain) = p.status.as_ref().and_then(|s| s.domain.clone()) else { continue };
        let name = p.metadata.name.clone().unwrap_or_default();
        let id = format!("{domain}/{name}");
        nodes.insert(id.clone(), LineageNode { id: id.clone(), domain: domain.clone(), product: name });
        for input in p.status.as_ref().map(|s| s.inputs.as_slice()).unwrap_or_default() {
            let from = format!("{}/{}", input.domain, input.product);
            nodes.entry(from.clone()).or_insert_with(|| LineageNode {
                id: from.clone(),
                domain: input.domain.clone(),
                product: input.product.clone(),
            });
            edges.push(LineageEdge { from, to: id.clone(), state: input.state.clone() });
        }
    }
    Lineage { nodes: nodes.into_values().collect(), edges }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product(yaml: &str) -> DataProduct {
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn free_text_and_filters_must_all_match() {
        let p = product(
            "metadata: {name: order-events, namespace: dm-orders}\nspec: {owner: team, tags: [sales], classification: Confidential, \
             outputPorts: [{name: o, format: CSV, schema: [{name: customer_email, type: string}]}]}\nstatus: {domain: orders}",
        );
        let index = index::Index::default();
        index.apply(&kube::runtime::watcher::Event::Apply(p));
        let hit = |params: &[(&str, &str)]| {
            let query = Query::parse(&params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()).unwrap();
            !index.search(&query).is_empty()
        };
        assert!(hit(&[("q", "ORDER")]));
        assert!(hit(&[("q", "email")]), "schema field names are searched");
        assert!(hit(&[("tag", "sales"), ("domain", "orders"), ("classification", "Confidential"), ("owner", "team")]));
        assert!(!hit(&[("tag", "sales"), ("domain", "other")]));
        assert!(!hit(&[("lifecycle", "Stable")]));
        let bad = Query::parse(&BTreeMap::from([("classification".to_string(), "Secret".to_string())])).unwrap_err();
        assert!(bad.to_string().contains("`classification`") && bad.to_string().contains("Restricted"), "{bad}");
    }

    #[test]
    fn lineage_links_inputs_to_their_consumers() {
        let up = product("metadata: {name: raw, namespace: a}\nspec: {}\nstatus: {domain: a}");
        let down = product(
            "metadata: {name: clean, namespace: b}\nspec: {}\nstatus: {domain: b, inputs: [{name: raw, domain: a, product: raw, state: Granted}]}",
        );
        let graph = lineage(&[&up, &down]);
        assert_eq!(graph.nodes.len(), 2);
        assert_eq!(graph.edges, [LineageEdge { from: "a/raw".into(), to: "b/clean".into(), state: "Granted".into() }]);
    }
}
