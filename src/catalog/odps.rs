//! Export of a DataProduct as an Open Data Product Standard (ODPS) v1.0.0
//! document (Bitol / LF AI & Data), mapping what meshplane knows onto the
//! standard's fields. Pure.

use serde_json::{Value, json};

use crate::api::DataProduct;
use crate::api::product::Lifecycle;

/// The ODPS version this export targets.
pub const ODPS_VERSION: &str = "v1.0.0";

fn custom(property: &str, value: Value) -> Value {
    json!({"property": property, "value": value})
}

/// The ODPS document of a product.
pub fn export(product: &DataProduct) -> Value {
    let spec = &product.spec;
    let status = product.status.clone().unwrap_or_default();
    let name = product.metadata.name.clone().unwrap_or_default();
    let namespace = product.metadata.namespace.clone().unwrap_or_default();
    let lifecycle = match spec.lifecycle {
        Lifecycle::Experimental => "draft",
        Lifecycle::Stable => "active",
        Lifecycle::Deprecated => "deprecated",
    };
    let mut doc = json!({
        "apiVersion": ODPS_VERSION,
        "kind": "DataProduct",
        "id": product.metadata.uid.clone().unwrap_or_else(|| format!("{namespace}/{name}")),
        "name": name,
        "status": lifecycle,
    });
    if let Some(domain) = &status.domain {
        doc["domain"] = json!(domain);
    }
    let mut description = serde_json::Map::new();
    if let Some(d) = &spec.description {
        description.insert("purpose".into(), json!(d));
    }
    let mut limits = vec![format!("classification {:?}", spec.classification)];
    if spec.contains_pii {
        limits.push("contains personally identifiable information".into());
    }
    if let Some(sunset) = &spec.sunset {
        limits.push(format!("deprecated, sunset {sunset}"));
    }
    description.insert("limitations".into(), json!(limits.join("; ")));
    description.insert(
        "usage".into(),
        json!(format!("Granted consumers read the descriptor ConfigMap {name}-descriptor in namespace {namespace}; access is requested from the owner.")),
    );
    doc["description"] = Value::Object(description);
    if let Some(url) = &spec.documentation {
        doc["authoritativeDefinitions"] = json!([{"type": "businessDefinition", "url": url}]);
    }
    if !spec.tags.is_empty() {
        doc["tags"] = json!(spec.tags);
    }
    let inputs: Vec<Value> = spec
        .inputs
        .iter()
        .map(|i| {
            let domain = i.domain.clone().or_else(|| status.domain.clone()).unwrap_or_default();
            let contract = match &i.port {
                Some(port) => format!("{domain}/{}/{port}", i.product),
                None => format!("{domain}/{}", i.product),
            };
            json!({"name": i.name, "version": crate::keys::VERSION, "contractId": contract})
        })
        .collect();
    if !inputs.is_empty() {
        doc["inputPorts"] = json!(inputs);
    }
    let outputs: Vec<Value> = spec
        .output_ports
        .iter()
        .map(|p| {
            let mut port = json!({"name": p.name, "type": p.format, "version": crate::keys::VERSION});
            if let Some(d) = &p.description {
                port["description"] = json!(d);
            }
            port
        })
        .collect();
    if !outputs.is_empty() {
        doc["outputPorts"] = json!(outputs);
    }
    if let Some(owner) = &spec.owner {
        doc["team"] = json!([{"username": owner, "role": "owner"}]);
        if owner.contains('@') && !owner.contains(' ') {
            doc["support"] = json!([{"channel": "owner", "url": format!("mailto:{owner}"), "tool": "email"}]);
        }
    }
    let mut props = vec![custom("classification", json!(spec.classification)), custom("containsPII", json!(spec.contains_pii))];
    if let Some(f) = spec.quality.as_ref().and_then(|q| q.freshness.clone()) {
        props.push(custom("freshness", json!(f)));
    }
    props.push(custom(
        "kubernetesObject",
        json!(format!(
            "{}/{} DataProduct {namespace}/{}",
            crate::keys::GROUP,
            crate::keys::VERSION,
            doc["name"].as_str().unwrap_or_default()
        )),
    ));
    doc["customProperties"] = json!(props);
    if let Some(created) = &product.metadata.creation_timestamp {
        doc["productCreatedTs"] = json!(created.0.to_string());
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_product_maps_onto_the_standard() {
        let p: DataProduct = serde_saphyr::from_str(
            "metadata: {name: orders, namespace: dm-shop, uid: u-1}\nspec: {owner: shop@example.com, description: Orders, documentation: 'https://docs/x', \
             lifecycle: Deprecated, sunset: '2027-01-01', containsPII: true, tags: [sales], inputs: [{name: users, domain: crm, product: users}], \
             outputPorts: [{name: table, format: Parquet}]}\nstatus: {domain: shop}",
        )
        .unwrap();
        let doc = export(&p);
        assert_eq!(
            (doc["apiVersion"].as_str(), doc["kind"].as_str(), doc["id"].as_str(), doc["status"].as_str()),
            (Some("v1.0.0"), Some("DataProduct"), Some("u-1"), Some("deprecated"))
        );
        assert_eq!(doc["inputPorts"][0]["contractId"], "crm/users");
        assert_eq!(doc["outputPorts"][0]["type"], "Parquet");
        assert_eq!(doc["support"][0]["url"], "mailto:shop@example.com");
        assert!(doc["description"]["limitations"].as_str().unwrap().contains("sunset 2027-01-01"));
    }
}
