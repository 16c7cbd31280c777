//! The bundled default config (testdata/sandbox, compiled into the binary) that `discovery`
//! serves when it is given no `--config-dir` and no cluster.

use std::path::Path;

use crate::model::mesh::MeshConfig;
use crate::model::push_context::ConfigStore;
use crate::sources::files::parse_documents;
use crate::sources::objects::{ObjectSet, Origin};

/// (file name, contents) of the sandbox.
pub const SANDBOX: &[(&str, &str)] = &[
    (
        "namespace.yaml",
        include_str!("../../testdata/sandbox/namespace.yaml"),
    ),
    (
        "httpbin.yaml",
        include_str!("../../testdata/sandbox/httpbin.yaml"),
    ),
    (
        "sleep.yaml",
        include_str!("../../testdata/sandbox/sleep.yaml"),
    ),
    (
        "destinationrule.yaml",
        include_str!("../../testdata/sandbox/destinationrule.yaml"),
    ),
    (
        "virtualservice-90-10.yaml",
        include_str!("../../testdata/sandbox/virtualservice-90-10.yaml"),
    ),
    (
        "gateway.yaml",
        include_str!("../../testdata/sandbox/gateway.yaml"),
    ),
    (
        "egress.yaml",
        include_str!("../../testdata/sandbox/egress.yaml"),
    ),
];

/// The sandbox as a ConfigStore.
pub fn load_store(system_namespace: &str, mesh: Option<&MeshConfig>) -> ConfigStore {
    let mut set = ObjectSet::default();
    for (name, text) in SANDBOX {
        let source = format!("bundled:testdata/sandbox/{name}");
        match parse_documents(Path::new(name), text) {
            Ok(docs) => {
                for (i, doc) in docs.into_iter().enumerate() {
                    set.add_document(
                        &Origin {
                            source: source.clone(),
                            document: Some(i),
                        },
                        doc,
                    );
                }
            }
            Err(e) => set.store.errors.push(*e),
        }
    }
    set.into_store(system_namespace, mesh)
}
