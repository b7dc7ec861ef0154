//! The product's descriptor: a ConfigMap that says what the product is,
//! for its consumers and the catalog.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::json;

use super::{descriptor_name, meta};
use crate::keys;
use crate::product::validate::ValidProduct;
use crate::storage::{self};

/// What the product is and how to reach it, for the catalog and consumers.
pub fn render_descriptor(valid: &ValidProduct<'_>) -> ConfigMap {
    let spec = &valid.product.spec;
    let product_ref = valid.product_ref();
    let ports: Vec<_> = spec
        .output_ports
        .iter()
        .map(|port| {
            let backing = port.storage.as_ref().and_then(|name| spec.storage.iter().find(|s| &s.name == name)).map(|s| {
                let objects = storage::backend(s.kind).render(&product_ref, s);
                json!({
                    "name": s.name,
                    "kind": s.kind,
                    "objects": objects.iter().map(|o| json!({
                        "kind": o.types.as_ref().map(|t| t.kind.clone()),
                        "name": o.metadata.name,
                    })).collect::<Vec<_>>(),
                    "credentials": storage::backend(s.kind).credentials(&product_ref, s),
                })
            });
            json!({
                "name": port.name,
                "format": port.format,
                "description": port.description,
                "storage": backing,
                "schema": port.schema,
            })
        })
        .collect();
    let owner = spec.owner.as_deref().unwrap_or("the domain's owners");
    let descriptor = json!({
        "apiVersion": format!("{}/{}", keys::GROUP, keys::VERSION),
        "kind": "DataProductDescriptor",
        "name": valid.name,
        "domain": valid.domain_name,
        "namespace": valid.namespace,
        "owner": spec.owner,
        "description": spec.description,
        "documentation": spec.documentation,
        "lifecycle": spec.lifecycle,
        "sunset": spec.sunset,
        "classification": spec.classification,
        "containsPII": spec.contains_pii,
        "tags": spec.tags,
        "outputPorts": ports,
        "inputs": spec.inputs,
        "quality": spec.quality,
        "access": {
            "consumers": spec.access.consumers,
            "howToRequest": format!(
                "ask {owner} to add your domain to spec.access.consumers of DataProduct {} in namespace {}",
                valid.name, valid.namespace
            ),
        },
    });
    ConfigMap {
        metadata: meta(valid, descriptor_name(valid.name), "descriptor"),
        data: Some(BTreeMap::from([(
            "descriptor.json".to_string(),
            serde_json::to_string_pretty(&descriptor).expect("a descriptor serializes"),
        )])),
        ..Default::default()
    }
}
