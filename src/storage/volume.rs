//! `Volume` storage: a PersistentVolumeClaim.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, Volume, VolumeMount, VolumeResourceRequirements,
};
use kube::ResourceExt;
use kube::api::DynamicObject;
use kube::core::ApiResource;

use super::{Backend, Explanation, Lookup, ProductRef, SETTLING, StorageState, Wiring, env, env_name, object_meta};
use crate::api::product::{Mount, Storage};

pub struct VolumeClaim;

pub fn claim_name(product: &str, storage: &str) -> String {
    format!("{product}-{storage}")
}

fn claim(current: &[Option<DynamicObject>]) -> Option<PersistentVolumeClaim> {
    let object = current.first()?.as_ref()?;
    serde_json::to_value(object).ok().and_then(|v| serde_json::from_value(v).ok())
}

impl Backend for VolumeClaim {
    fn api_resources(&self) -> Vec<ApiResource> {
        vec![ApiResource::erase::<PersistentVolumeClaim>(&())]
    }

    fn render(&self, product: &ProductRef<'_>, storage: &Storage) -> Vec<DynamicObject> {
        let class = storage.storage_class.as_deref().or(product.default_class).map(str::to_string);
        let pvc = PersistentVolumeClaim {
            metadata: object_meta(product, claim_name(product.name, &storage.name), &storage.name),
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteOnce".into()]),
                storage_class_name: class,
                resources: Some(VolumeResourceRequirements {
                    requests: storage.size.clone().map(|size| BTreeMap::from([("storage".to_string(), size)])),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let value = serde_json::to_value(&pvc).expect("a claim serializes");
        let mut object: DynamicObject = serde_json::from_value(value).expect("a claim is an object");
        object.types = Some(kube::api::TypeMeta { api_version: "v1".into(), kind: "PersistentVolumeClaim".into() });
        vec![object]
    }

    fn wiring(&self, product: &ProductRef<'_>, storage: &Storage, mount: Option<&Mount>) -> Wiring {
        let Some(mount) = mount else {
            return Wiring::default();
        };
        let volume = format!("storage-{}", storage.name);
        Wiring {
            volumes: vec![Volume {
                name: volume.clone(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim_name(product.name, &storage.name),
                    read_only: mount.read_only.then_some(true),
                }),
                ..Default::default()
            }],
            mounts: vec![VolumeMount {
                name: volume,
                mount_path: mount.path.clone(),
                read_only: mount.read_only.then_some(true),
                ..Default::default()
            }],
            env: vec![env(env_name(&["MESHPLANE_STORAGE", &storage.name, "PATH"]), mount.path.clone())],
        }
    }

    fn credentials(&self, _: &ProductRef<'_>, _: &Storage) -> Vec<String> {
        Vec::new()
    }

    fn state(&self, storage: &Storage, current: &[Option<DynamicObject>]) -> StorageState {
        let Some(pvc) = claim(current) else {
            return StorageState { ready: false, reason: "Pending", message: format!("claim for `{}` not created yet", storage.name) };
        };
        let phase = pvc.status.and_then(|s| s.phase).unwrap_or_else(|| "Pending".into());
        match phase.as_str() {
            "Bound" => {
                StorageState { ready: true, reason: "Bound", message: format!("claim {} is Bound", pvc.metadata.name.unwrap_or_default()) }
            }
            "Lost" => StorageState {
                ready: false,
                reason: "ClaimLost",
                message: format!("claim {} lost its volume", pvc.metadata.name.unwrap_or_default()),
            },
            _ => StorageState {
                ready: false,
                reason: "ClaimPending",
                message: format!("claim {} is Pending", pvc.metadata.name.unwrap_or_default()),
            },
        }
    }

    fn explain(&self, lookup: &Lookup<'_>, state: &StorageState, current: &[Option<DynamicObject>]) -> Explanation {
        let Some(pvc) = claim(current) else {
            return Explanation::Nothing;
        };
        let name = pvc.name_any();
        // A class that binds on first use is waiting by design.
        if let Some(class) = pvc.spec.as_ref().and_then(|s| s.storage_class_name.clone()) {
            match (lookup.storage_class)(&class) {
                Some(sc) if sc.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer") => {
                    return Explanation::State(StorageState {
                        ready: true,
                        reason: "WaitForFirstConsumer",
                        message: format!(
                            "WaitForFirstConsumer: claim {name} binds when the first pod that uses it is scheduled (class {class})"
                        ),
                    });
                }
                Some(_) => {}
                None => {
                    let message = format!("claim {name} names storage class `{class}`, which does not exist");
                    return Explanation::State(StorageState { message, ..state.clone() });
                }
            }
        }
        // A new claim is normally binding: the reason is read from its
        // Events only once it has waited longer than that.
        let Some(created) = pvc.metadata.creation_timestamp.as_ref().map(|t| t.0) else {
            return Explanation::Nothing;
        };
        if lookup.now.duration_since(created).as_secs_f64() < SETTLING.as_secs_f64() {
            return Explanation::Nothing;
        }
        Explanation::Events { kind: "PersistentVolumeClaim", what: "claim", name }
    }
}
