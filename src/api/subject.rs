//! RBAC subjects as users write them in a DataDomain or a DataProduct.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Kinds of RBAC subject meshplane binds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
pub enum SubjectKind {
    User,
    Group,
    ServiceAccount,
}

impl SubjectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SubjectKind::User => "User",
            SubjectKind::Group => "Group",
            SubjectKind::ServiceAccount => "ServiceAccount",
        }
    }
}

/// A user, group or service account that is granted a role.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.kind == 'ServiceAccount' ? has(self.__namespace__) : !has(self.__namespace__)")
        .message("namespace is required for a ServiceAccount subject and not allowed for User or Group")
        .field_path(".namespace")
)]
pub struct Subject {
    /// Kind of subject: `User`, `Group` or `ServiceAccount`.
    pub kind: SubjectKind,
    /// Name of the user, group or service account, as the cluster's authenticator reports it.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Namespace of a `ServiceAccount` subject. Required for ServiceAccount, not allowed otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub namespace: Option<String>,
}

impl Subject {
    pub fn user(name: &str) -> Self {
        Subject { kind: SubjectKind::User, name: name.into(), namespace: None }
    }
    pub fn group(name: &str) -> Self {
        Subject { kind: SubjectKind::Group, name: name.into(), namespace: None }
    }
    pub fn service_account(namespace: &str, name: &str) -> Self {
        Subject { kind: SubjectKind::ServiceAccount, name: name.into(), namespace: Some(namespace.into()) }
    }
}
