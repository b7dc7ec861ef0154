//! `Bucket` storage: a COSI BucketClaim and a BucketAccess
//! (objectstorage.k8s.io/v1alpha1), whose driver writes the credentials
//! Secret that pipelines mount.

use k8s_openapi::api::core::v1::{SecretVolumeSource, Volume, VolumeMount};
use kube::api::DynamicObject;
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::json;

use super::{Backend, Explanation, Lookup, ProductRef, StorageState, Wiring, env, env_name, object_meta};
use crate::api::product::{Mount, Storage};

pub struct Bucket;

const GROUP: &str = "objectstorage.k8s.io";
const VERSION: &str = "v1alpha1";

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, VERSION, kind), plural)
}

fn claim_name(product: &str, storage: &str) -> String {
    format!("{product}-{storage}")
}

fn secret_name(product: &str, storage: &str) -> String {
    format!("{product}-{storage}-credentials")
}

impl Backend for Bucket {
    fn api_resources(&self) -> Vec<ApiResource> {
        vec![resource("BucketClaim", "bucketclaims"), resource("BucketAccess", "bucketaccesses")]
    }

    fn render(&self, product: &ProductRef<'_>, storage: &Storage) -> Vec<DynamicObject> {
        let name = claim_name(product.name, &storage.name);
        let class = storage.storage_class.clone().unwrap_or_default();
        let access_class = storage.bucket_access_class.clone().unwrap_or_else(|| class.clone());
        let [claim_ar, access_ar] = [resource("BucketClaim", "bucketclaims"), resource("BucketAccess", "bucketaccesses")];
        let mut claim = DynamicObject::new(&name, &claim_ar).data(json!({
            "spec": {"bucketClassName": class, "protocols": ["S3"]}
        }));
        claim.metadata = object_meta(product, name.clone(), &storage.name);
        let mut access = DynamicObject::new(&name, &access_ar).data(json!({
            "spec": {
                "bucketClaimName": name,
                "bucketAccessClassName": access_class,
                "credentialsSecretName": secret_name(product.name, &storage.name),
                "protocol": "S3",
            }
        }));
        access.metadata = object_meta(product, name, &storage.name);
        vec![claim, access]
    }

    fn wiring(&self, product: &ProductRef<'_>, storage: &Storage, _: Option<&Mount>) -> Wiring {
        let volume = format!("bucket-{}", storage.name);
        let path = format!("/var/run/meshplane/buckets/{}", storage.name);
        Wiring {
            volumes: vec![Volume {
                name: volume.clone(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(secret_name(product.name, &storage.name)),
                    // The pod starts before the driver has written credentials.
                    optional: Some(true),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            mounts: vec![VolumeMount { name: volume, mount_path: path.clone(), read_only: Some(true), ..Default::default() }],
            env: vec![
                env(env_name(&["MESHPLANE_STORAGE", &storage.name, "CREDENTIALS"]), path),
                env(env_name(&["MESHPLANE_STORAGE", &storage.name, "BUCKET_CLAIM"]), claim_name(product.name, &storage.name)),
            ],
        }
    }

    fn credentials(&self, product: &ProductRef<'_>, storage: &Storage) -> Vec<String> {
        vec![secret_name(product.name, &storage.name)]
    }

    fn state(&self, storage: &Storage, current: &[Option<DynamicObject>]) -> StorageState {
        let flag = |i: usize, field: &str| {
            current.get(i).and_then(Option::as_ref).and_then(|o| o.data.get("status")?.get(field)?.as_bool()).unwrap_or(false)
        };
        if current.iter().any(Option::is_none) {
            return StorageState { ready: false, reason: "Pending", message: format!("bucket `{}` not created yet", storage.name) };
        }
        match (flag(0, "bucketReady"), flag(1, "accessGranted")) {
            (true, true) => StorageState {
                ready: true,
                reason: "BucketReady",
                message: format!("bucket `{}` is ready and access granted", storage.name),
            },
            (false, _) => StorageState {
                ready: false,
                reason: "BucketPending",
                message: format!("waiting for the COSI driver to provision bucket `{}`", storage.name),
            },
            (true, false) => StorageState {
                ready: false,
                reason: "BucketAccessPending",
                message: format!("waiting for the COSI driver to grant access to bucket `{}`", storage.name),
            },
        }
    }

    fn explain(&self, _: &Lookup<'_>, _: &StorageState, _: &[Option<DynamicObject>]) -> Explanation {
        Explanation::Nothing
    }
}
