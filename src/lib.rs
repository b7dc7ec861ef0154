//! meshplane: a Kubernetes operator that makes a cluster a self-serve data-mesh
//! platform. `main.rs` only parses arguments; everything lives here.
#![forbid(unsafe_code)]

pub mod api;
pub mod apply;
pub mod catalog;
pub mod controllers;
pub mod crds;
pub mod governance;
pub mod keys;
pub mod leader;
pub mod lint;
pub mod owned;
pub mod render;
pub mod run;
pub mod server;
pub mod storage;
pub mod telemetry;
