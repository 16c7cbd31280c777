//! Build script: compiles the protos we author (proto/) and a descriptor set of the Envoy API
//! messages we emit, so that `protojson` can render any resource (including `Any` payloads) as
//! Envoy's canonical JSON for config dumps, golden tests and bootstrap files.
//!
//! The Envoy .proto sources come from the `envoy-types` crate we already depend on; we find its
//! unpacked source (see `envoy_types_proto_dir`) instead of copying them into this repository.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The Envoy API files whose messages we emit or read back (their imports come along).
const ENVOY_ROOTS: &[&str] = &[
    "envoy/config/bootstrap/v3/bootstrap.proto",
    "envoy/config/cluster/v3/cluster.proto",
    "envoy/config/endpoint/v3/endpoint.proto",
    "envoy/config/listener/v3/listener.proto",
    "envoy/config/route/v3/route.proto",
    "envoy/admin/v3/config_dump.proto",
    "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto",
    "envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.proto",
    "envoy/extensions/filters/http/router/v3/router.proto",
    "envoy/extensions/filters/http/fault/v3/fault.proto",
    "envoy/extensions/filters/http/cors/v3/cors.proto",
    "envoy/extensions/filters/http/grpc_stats/v3/config.proto",
    "envoy/extensions/request_id/uuid/v3/uuid.proto",
    "envoy/extensions/retry/host/previous_hosts/v3/previous_hosts.proto",
    "envoy/extensions/retry/priority/previous_priorities/v3/previous_priorities_config.proto",
    "envoy/extensions/filters/listener/original_dst/v3/original_dst.proto",
    "envoy/extensions/filters/listener/original_src/v3/original_src.proto",
    "envoy/extensions/filters/listener/tls_inspector/v3/tls_inspector.proto",
    "envoy/extensions/filters/listener/http_inspector/v3/http_inspector.proto",
    "envoy/extensions/upstreams/http/v3/http_protocol_options.proto",
    "envoy/extensions/transport_sockets/tls/v3/tls.proto",
    "envoy/extensions/access_loggers/file/v3/file.proto",
    "envoy/service/discovery/v3/discovery.proto",
];

/// Where the `envoy-types` crate's `proto/` directory is, without needing anything that a plain
/// `cargo build` has not downloaded (a fresh machine has only the packages it builds, not the
/// dev-dependencies that `cargo metadata --offline` would want):
/// 1. `NAVARCH_ENVOY_PROTO_DIR`, if set (vendored or unusual layouts);
/// 2. the registry's source directory under `CARGO_HOME` (default `~/.cargo`), at the version
///    Cargo.lock pins: cargo unpacks every package of the build there before compiling;
/// 3. `cargo metadata` (allowed to download), for source replacement and other layouts.
fn envoy_types_proto_dir() -> PathBuf {
    println!("cargo:rerun-if-env-changed=NAVARCH_ENVOY_PROTO_DIR");
    if let Some(dir) = std::env::var_os("NAVARCH_ENVOY_PROTO_DIR") {
        return PathBuf::from(dir);
    }
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    if let Some(dir) = locked_version(&manifest.join("Cargo.lock"), "envoy-types")
        .and_then(|version| registry_source_dir(&format!("envoy-types-{version}")))
    {
        return dir.join("proto");
    }
    proto_dir_from_cargo_metadata(&manifest)
}

/// The version Cargo.lock pins for `package` (the first entry of that name).
fn locked_version(lock: &Path, package: &str) -> Option<String> {
    let text = std::fs::read_to_string(lock).ok()?;
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.trim() == format!("name = \"{package}\"") {
            let version = lines.next()?.trim().strip_prefix("version = \"")?;
            return Some(version.trim_end_matches('"').to_string());
        }
    }
    None
}

/// `$CARGO_HOME/registry/src/<index>/<dir>`, for whichever index holds it.
fn registry_source_dir(dir: &str) -> Option<PathBuf> {
    println!("cargo:rerun-if-env-changed=CARGO_HOME");
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))?;
    let mut found: Vec<PathBuf> = std::fs::read_dir(cargo_home.join("registry").join("src"))
        .ok()?
        .filter_map(|index| Some(index.ok()?.path().join(dir)))
        .filter(|candidate| candidate.join("proto").join("data-plane-api").is_dir())
        .collect();
    found.sort();
    found.into_iter().next()
}

fn proto_dir_from_cargo_metadata(manifest: &Path) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--filter-platform",
        ])
        .arg(std::env::var("TARGET").expect("TARGET"))
        .arg("--manifest-path")
        .arg(manifest.join("Cargo.toml"))
        .output()
        .expect("run cargo metadata to locate envoy-types");
    assert!(
        out.status.success(),
        "could not find the envoy-types crate's proto files: not under CARGO_HOME's registry \
         sources and `cargo metadata` failed ({}); set NAVARCH_ENVOY_PROTO_DIR to that crate's \
         proto/ directory",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("cargo metadata JSON");
    let pkg = meta["packages"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "envoy-types"))
        .expect("envoy-types in cargo metadata");
    let manifest_path = PathBuf::from(pkg["manifest_path"].as_str().expect("manifest_path"));
    manifest_path.parent().expect("crate dir").join("proto")
}

fn main() {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let protoc = protoc_bin_vendored::protoc_bin_path().expect("vendored protoc");
    // 1. Envoy descriptor set for JSON rendering.
    let envoy = envoy_types_proto_dir();
    let includes = [
        "data-plane-api",
        "xds",
        "googleapis",
        "protoc-gen-validate",
        "cel-spec",
        "opentelemetry-proto",
        "client_model",
    ];
    let mut cmd = Command::new(&protoc);
    for inc in includes {
        cmd.arg(format!("-I{}", envoy.join(inc).display()));
    }
    let descriptor = out_dir.join("envoy_descriptor.bin");
    cmd.arg("--include_imports")
        .arg(format!("--descriptor_set_out={}", descriptor.display()))
        .args(ENVOY_ROOTS);
    let status = cmd.status().expect("run protoc");
    assert!(status.success(), "protoc failed on the Envoy API protos");

    // 2. Our own protos: plain messages, serde-enabled so the debug API and the CLI share them.
    let mut config = prost_build::Config::new();
    // istiod omits empty fields (`omitempty`); sentTime is always present.
    for field in [
        "SyncStatus.cluster_id",
        "SyncStatus.proxy",
        "SyncStatus.proxy_type",
        "SyncStatus.proxy_version",
        "SyncStatus.istio_version",
        "SyncStatus.cluster_sent",
        "SyncStatus.cluster_acked",
        "SyncStatus.listener_sent",
        "SyncStatus.listener_acked",
        "SyncStatus.route_sent",
        "SyncStatus.route_acked",
        "SyncStatus.endpoint_sent",
        "SyncStatus.endpoint_acked",
        "SyncStatus.extensionconfig_sent",
        "SyncStatus.extensionconfig_acked",
        "SyncStatus.node_id",
        "ResourceSyncStatus.sent",
        "ResourceSyncStatus.acked",
        "ResourceSyncStatus.sent_version",
        "ResourceSyncStatus.acked_version",
        "ResourceSyncStatus.last_error",
        "ResourceSyncStatus.acked_time",
    ] {
        config.field_attribute(
            format!(".navarch.v1.{field}"),
            "#[serde(skip_serializing_if = \"String::is_empty\")]",
        );
    }
    config.field_attribute(
        ".navarch.v1.ResourceSyncStatus.last_error_sources",
        "#[serde(skip_serializing_if = \"Vec::is_empty\")]",
    );
    config.field_attribute(
        ".navarch.v1.SyncStatus.resources",
        "#[serde(skip_serializing_if = \"::std::collections::BTreeMap::is_empty\")]",
    );
    config.btree_map(["."]);
    config
        .protoc_executable(&protoc)
        .type_attribute(".", "#[derive(serde::Serialize, serde::Deserialize)]")
        .type_attribute(
            ".navarch.v1.ResourceSyncStatus",
            "#[serde(rename_all = \"camelCase\")]",
        )
        .type_attribute(".navarch.v1.SyncStatus", "#[serde(default)]")
        .type_attribute(".navarch.v1.ResourceSyncStatus", "#[serde(default)]")
        .compile_protos(&["proto/navarch/v1/sync.proto"], &["proto"])
        .expect("compile proto/navarch");
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=Cargo.lock");
}
