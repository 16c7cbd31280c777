//! Sources turn the outside world (config files, a Kubernetes cluster, the bundled sandbox) into
//! model updates: `ObjectSet`s the push loop merges into `ConfigStore`s and freezes into snapshots.
//!
//! Sources parse and validate; they never build Envoy config and never talk to proxies.

pub mod bundled;
pub mod files;
pub mod kube;
pub mod objects;
