//! Pure functions from a validated spec to the Kubernetes objects it needs.
//! No client, no clock, no I/O: tests feed manifests and assert on objects.

pub mod domain;
pub mod product;
