//! The encoded-resource cache: a type's resources are generated and encoded once per
//! (snapshot version, scope key) and shared by every proxy with that key.
//!
//! The scope key comes from translate (`ResourceType::scope_key`): the xds layer does not
//! decide what a resource depends on, it only remembers the answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use sha2::{Digest, Sha256};

use crate::translate::{Resource, ResourceType};

/// One type's generated resources for one scope.
#[derive(Debug)]
pub struct GeneratedResources {
    pub resources: Vec<Resource>,
}

/// Content version of a set of resources: equal bytes give equal versions, on every replica.
/// Hashes names and the per-resource digests made at generation, never the bytes again.
pub fn content_version<'a>(resources: impl IntoIterator<Item = &'a Resource>) -> String {
    let mut h = Sha256::new();
    for r in resources {
        h.update(r.name.as_bytes());
        h.update([0]);
        h.update(r.digest);
    }
    hex::encode(&h.finalize()[..8])
}

#[derive(Debug, Default)]
pub struct ResourceCache {
    /// (type, scope) -> (snapshot version, resources)
    entries: DashMap<(ResourceType, String), (String, Arc<GeneratedResources>)>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl ResourceCache {
    /// Returns the resources for (`kind`, `scope`) at `snapshot_version`, generating them with
    /// `generate` only when absent or stale.
    pub fn get_or_generate(
        &self,
        kind: ResourceType,
        scope: String,
        snapshot_version: &str,
        generate: impl FnOnce() -> Vec<Resource>,
    ) -> Arc<GeneratedResources> {
        let key = (kind, scope);
        if let Some(entry) = self.entries.get(&key)
            && entry.0 == snapshot_version
        {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return entry.1.clone();
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let generated = Arc::new(GeneratedResources {
            resources: generate(),
        });
        self.entries
            .insert(key, (snapshot_version.to_string(), generated.clone()));
        generated
    }

    /// Drops entries from snapshots other than `current`.
    pub fn retain_version(&self, current: &str) {
        self.entries.retain(|_, v| v.0 == current);
    }

    pub fn stats(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::Any;

    fn res(name: &str, bytes: &[u8]) -> Resource {
        Resource::from_any(
            name,
            Any {
                type_url: "t".into(),
                value: bytes.to_vec(),
            },
        )
    }

    #[test]
    fn generates_once_per_scope_and_version() {
        let cache = ResourceCache::default();
        let mut calls = 0;
        for _ in 0..3 {
            cache.get_or_generate(ResourceType::Cluster, "ns1".into(), "v1", || {
                calls += 1;
                vec![res("a", b"1")]
            });
        }
        assert_eq!(calls, 1);
        cache.get_or_generate(ResourceType::Cluster, "ns1".into(), "v2", || {
            calls += 1;
            vec![]
        });
        assert_eq!(calls, 2);
        assert_eq!(cache.stats(), (2, 2));
    }

    #[test]
    fn versions_follow_content() {
        let a = [res("a", b"1"), res("b", b"2")];
        let b = [res("a", b"1"), res("b", b"2")];
        let c = [res("a", b"1"), res("b", b"3")];
        assert_eq!(content_version(&a), content_version(&b));
        assert_ne!(content_version(&a), content_version(&c));
    }
}
