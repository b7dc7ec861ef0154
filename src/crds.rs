//! The CustomResourceDefinitions, generated from the Rust types in [`crate::api`].
//! `meshplane crds` prints them; `crds/` holds the committed copy that CI
//! compares against this output.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::api::{DataDomain, DataPlatform, DataProduct, GovernancePolicy};

/// Every CRD meshplane serves, in a stable order.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![DataDomain::crd(), DataProduct::crd(), GovernancePolicy::crd(), DataPlatform::crd()]
}

/// One multi-document YAML stream of every CRD, as committed in `crds/`.
pub fn to_yaml() -> Result<String, serde_saphyr::ser::Error> {
    let mut out = String::new();
    for crd in all() {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&crd)?);
    }
    Ok(out)
}
