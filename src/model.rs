//! The model: typed Istio API, the service registry, mesh config, proxies, and the immutable
//! per-push snapshot (`PushContext`).
//!
//! This is the ground floor. It does no I/O and never imports tonic, kube, axum or Envoy types:
//! sources fill it, translate reads it.

pub mod config;
pub mod credential;
pub mod duration;
pub mod gateway;
pub mod host;
pub mod istio;
pub mod mesh;
pub mod proxy;
pub mod push_context;
pub mod references;
pub mod registry;
