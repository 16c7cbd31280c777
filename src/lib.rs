//! navarch: an Istio-compatible control plane. Istio's API and behaviour (reference: Istio
//! 1.24), served to Envoy over ADS.
//!
//! Layers, arrows pointing down (see ARCHITECTURE.md):
//! `cli` / `app` → `sources`, `xds`, `admin` → `translate` → `model`, `status`, `protojson`;
//! `supervise` (task supervision and health) is used by `app`, `sources` and `admin` and uses
//! none of them.

pub mod admin;
pub mod alloc_count;
pub mod analysis;
pub mod app;
pub mod bootstrap;
pub mod cli;
pub mod ctrlz;
pub mod envoy;
pub mod inject;
pub mod install;
pub mod iptables;
pub mod localkube;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod protojson;
pub mod resource_type;
pub mod sources;
pub mod status;
pub mod supervise;
pub mod translate;
pub mod webhook;
pub mod xds;

/// Messages compiled from `proto/` by build.rs.
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/navarch.v1.rs"));
}
