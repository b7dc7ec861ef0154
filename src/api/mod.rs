//! meshplane's custom resource types, one file per kind, plus the types they
//! share. Pure data: nothing here talks to a cluster, so the CLI, the
//! controllers, the catalog and tests all reuse these types.

pub mod conditions;
pub mod domain;
pub mod platform;
pub mod policy;
pub mod product;
pub mod subject;

pub use conditions::Condition;
pub use domain::{DataDomain, DataDomainSpec, DataDomainStatus};
pub use platform::{DataPlatform, DataPlatformSpec, DataPlatformStatus};
pub use policy::{GovernancePolicy, GovernancePolicySpec, GovernancePolicyStatus};
pub use product::{DataProduct, DataProductSpec, DataProductStatus};
pub use subject::{Subject, SubjectKind};
