//! meshplane: a Kubernetes operator that makes a cluster a self-serve data-mesh
//! platform. `main.rs` only parses arguments; everything lives here.
//!
//! One folder per kind ([`domain`], [`product`], [`policy`], [`platform`]); what the three
//! controllers share in [`operator`]; generic Kubernetes plumbing in
//! [`plumbing`]; every change to the cluster made by [`write`].
#![forbid(unsafe_code)]

pub mod api;
pub mod catalog;
pub mod crds;
pub mod domain;
pub mod error;
pub mod governance;
pub mod keys;
pub mod leader;
pub mod lint;
pub mod operator;
pub mod platform;
pub mod plumbing;
pub mod policy;
pub mod product;
pub mod run;
pub mod server;
pub mod storage;
pub mod telemetry;
pub mod write;
