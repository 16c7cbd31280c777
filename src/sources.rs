//! Sources turn the outside world (files today, a Kubernetes cluster next) into model updates:
//! complete `ConfigStore`s the push loop freezes into snapshots.
//!
//! Sources parse and validate; they never build Envoy config and never talk to proxies.

pub mod bundled;
pub mod files;
pub mod kube;
pub mod objects;
