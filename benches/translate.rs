//! `cargo bench`: config generation for one sidecar (CDS, EDS, LDS, RDS) on synthetic meshes of
//! 10, 100 and 1000 services (2 pods each, a DestinationRule and a 90/10 VirtualService per
//! service, 10 namespaces), with and without Sidecar isolation; and building the snapshot.
//! Plain timing loops (no benchmark framework): each case runs for about a second.

use std::time::{Duration, Instant};

use navarch::model::proxy::Proxy;
use navarch::model::push_context::PushContext;
use navarch::translate::{self, ResourceType};

fn snapshot(services: usize, isolation: bool) -> (PushContext, Duration) {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in navarch::cli::loadtest::mesh_files(services, 2, 10, isolation) {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let store =
        navarch::sources::files::load_store(&[dir.path().to_path_buf()], "istio-system", None)
            .unwrap();
    assert!(store.errors.is_empty(), "{:?}", store.errors);
    let t = Instant::now();
    let push = PushContext::new(store);
    (push, t.elapsed())
}

fn main() {
    let meta = serde_json::json!({"INTERCEPTION_MODE": "REDIRECT", "LABELS": {"app": "client"}});
    let proxy = Proxy::from_node(
        "sidecar~10.200.0.1~client-0.ns-0~ns-0.svc.cluster.local",
        meta.as_object().unwrap(),
    )
    .unwrap();
    println!(
        "{:>9} {:>10} {:>14} {:>12} {:>12} {:>14}",
        "services", "isolation", "snapshot (ms)", "config (ms)", "resources", "bytes"
    );
    for services in [10, 100, 1000] {
        for isolation in [false, true] {
            let (push, snapshot_time) = snapshot(services, isolation);
            let mut runs = 0u32;
            let mut resources = 0usize;
            let mut bytes = 0usize;
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(1) || runs < 3 {
                resources = 0;
                bytes = 0;
                for kind in ResourceType::PUSH_ORDER {
                    for r in translate::generate(kind, &proxy, &push, None) {
                        resources += 1;
                        bytes += r.resource.value.len();
                    }
                }
                runs += 1;
            }
            let per_run = start.elapsed() / runs;
            println!(
                "{services:>9} {isolation:>10} {:>14.2} {:>12.3} {resources:>12} {bytes:>14}",
                snapshot_time.as_secs_f64() * 1000.0,
                per_run.as_secs_f64() * 1000.0,
            );
        }
    }
}
