//! The encoded-resource cache: a type's resources are generated and encoded once per
//! (scope key, generation) and every stream of that scope sends the same bytes.
//!
//! An [`EncodedSet`] holds one type's resources for one scope already in wire form: each
//! resource as the `resources` field of a `DiscoveryResponse` (so a response is the
//! concatenation of shared slices), the response's shared fields, and, made the first time a
//! delta stream needs them, each resource as a delta `Resource` entry. Streams hold reference
//! counts (`bytes::Bytes`), never copies.
//!
//! The scope key comes from translate (`translate::scope_key`): the xds layer does not decide
//! what a resource depends on, it only remembers the answer. No protocol state lives here.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use bytes::{BufMut, Bytes, BytesMut};
use dashmap::DashMap;
use envoy_types::pb::envoy::config::core::v3::ControlPlane;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryResponse, DiscoveryResponse, Resource as DeltaResource,
};
use prost::Message;
use sha2::{Digest, Sha256};

use crate::resource_type::ResourceType;
use crate::status::format_version;
use crate::translate::{Resource, ScopeKey};

/// A stable 64-bit hash of a resource name (names are compared by hash on the hot path:
/// per-proxy name sets hold 8 bytes a name).
pub fn name_hash(name: &str) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    name.hash(&mut h);
    h.finish()
}

/// Content version of resources given as (name, digest): equal content gives equal versions,
/// on every replica. Hashes the per-resource digests made at generation, never the bytes.
pub fn content_version<'a>(resources: impl IntoIterator<Item = (&'a str, &'a [u8; 16])>) -> u64 {
    let mut h = Sha256::new();
    for (name, digest) in resources {
        h.update(name.as_bytes());
        h.update([0]);
        h.update(digest);
    }
    let d = h.finalize();
    u64::from_be_bytes(d[..8].try_into().expect("8 bytes"))
}

/// A delta resource's version: its digest, as 16 hex digits.
pub fn resource_version(digest: &[u8; 16]) -> String {
    hex::encode(&digest[..8])
}

/// A sorted set of resource-name hashes (what a proxy asked for, or what a set holds).
/// Proxies whose request equals a set's names share that set's `Arc`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NameSet(Arc<[u64]>);

impl NameSet {
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> NameSet {
        let mut hashes: Vec<u64> = names.iter().map(|n| name_hash(n.as_ref())).collect();
        hashes.sort_unstable();
        hashes.dedup();
        NameSet(hashes.into())
    }

    pub fn contains(&self, hash: u64) -> bool {
        self.0.binary_search(&hash).is_ok()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.0.iter().copied()
    }

    /// Whether `other` holds a hash this set lacks.
    pub fn lacks_any_of(&self, other: &NameSet) -> bool {
        other.iter().any(|h| !self.contains(h))
    }

    /// Shares `other`'s allocation when the sets are equal.
    pub fn shared_with(self, other: &NameSet) -> NameSet {
        if self == *other { other.clone() } else { self }
    }
}

/// One resource of a set: its name, digest and its encoding as a `DiscoveryResponse.resources`
/// field: the range `start..end` of `buf` (the set's contiguous buffer, an earlier set's when
/// spliced in, or a buffer of its own when encoded again).
#[derive(Debug, Clone)]
struct Entry {
    name: Arc<str>,
    hash: u64,
    digest: [u8; 16],
    buf: Bytes,
    start: u32,
    end: u32,
}

impl Entry {
    fn bytes(&self) -> Bytes {
        self.buf.slice(self.start as usize..self.end as usize)
    }

    fn len(&self) -> usize {
        (self.end - self.start) as usize
    }
}

/// What a SotW response carries apart from its nonce: the parts of one encoded
/// `DiscoveryResponse` (shared slices), its content version and sizes.
#[derive(Debug, Clone)]
pub struct SotwBody {
    pub version: u64,
    pub parts: Arc<[Bytes]>,
    /// Encoded length of all parts.
    pub len: usize,
    pub resources: usize,
}

/// One type's resources for one scope, encoded once and shared by every stream of the scope.
///
/// Each resource's bytes are shared with the set it came from: a set spliced from an earlier
/// one (endpoint churn) costs only the resources it replaced and a vector of handles. The
/// contiguous full response is made when a proxy first needs all of it.
#[derive(Debug)]
pub struct EncodedSet {
    pub kind: ResourceType,
    /// In generation order.
    entries: Vec<Entry>,
    /// Positions of `entries` sorted by name hash, for lookups.
    by_hash: Vec<(u64, u32)>,
    /// `type_url` and `control_plane`, shared by every response of this type.
    suffix: Bytes,
    names: NameSet,
    version: u64,
    /// Every resource back to back, as one response (made on first use).
    full: OnceLock<SotwBody>,
    /// Responses for proxies that asked for a subset, by the subset's version.
    subsets: Mutex<HashMap<u64, SotwBody>>,
    /// Each resource as a delta `Resource` entry (made the first time a delta stream asks).
    delta: OnceLock<Vec<Bytes>>,
    /// Diffs from earlier sets (delta streams holding one of them share its diff).
    diffs: Mutex<Vec<(Weak<EncodedSet>, Arc<SetDiff>)>>,
    diffs_computed: AtomicU64,
    /// How many of its resources were encoded for it (the rest were spliced in from an
    /// earlier set).
    pub encoded_count: u64,
}

/// What changed from one set to another.
#[derive(Debug, Default)]
pub struct SetDiff {
    /// Positions in the newer set of resources the older lacks or holds at another digest.
    pub changed: Vec<usize>,
    /// Resources of the older set the newer lacks: (name hash, name).
    pub removed: Vec<(u64, Arc<str>)>,
    /// The SotW response of only the changed resources, for proxies that want all of both
    /// sets (made once).
    partial: OnceLock<SotwBody>,
}

impl PartialEq for SetDiff {
    fn eq(&self, other: &Self) -> bool {
        self.changed == other.changed && self.removed == other.removed
    }
}

/// Diffs kept per set (one per distinct earlier set streams are at; a few at most).
const MAX_DIFFS: usize = 8;

/// A response of more slices than this is made contiguous (see `body_of`).
const MAX_BODY_PARTS: usize = 16;

/// A subset map larger than this is cleared rather than grown (distinct subsets are rare).
const MAX_SUBSETS: usize = 256;

fn encode<M: Message>(msg: &M) -> Bytes {
    let mut buf = BytesMut::with_capacity(msg.encoded_len());
    msg.encode(&mut buf).expect("BytesMut grows");
    buf.freeze()
}

/// `type_url` and `control_plane` of every SotW response of `kind`.
fn sotw_suffix(kind: ResourceType, control_plane: &str) -> Bytes {
    encode(&DiscoveryResponse {
        type_url: kind.type_url().to_string(),
        control_plane: Some(ControlPlane {
            identifier: control_plane.to_string(),
        }),
        ..Default::default()
    })
}

fn version_field(version: u64) -> Bytes {
    encode(&DiscoveryResponse {
        version_info: format_version(version),
        ..Default::default()
    })
}

/// The parts of a response holding `entries`: the version, the resources (adjacent ranges of
/// one buffer as one slice of it), the suffix.
fn body_of<'a>(
    version: u64,
    entries: impl IntoIterator<Item = &'a Entry>,
    suffix: &Bytes,
) -> SotwBody {
    let mut parts = vec![version_field(version)];
    let mut resources = 0;
    let mut run: Option<(&Bytes, u32, u32)> = None;
    for e in entries {
        resources += 1;
        run = match run.take() {
            Some((buf, s, end)) if buf.as_ptr() == e.buf.as_ptr() && end == e.start => {
                Some((buf, s, e.end))
            }
            Some((buf, s, end)) => {
                parts.push(buf.slice(s as usize..end as usize));
                Some((&e.buf, e.start, e.end))
            }
            None => Some((&e.buf, e.start, e.end)),
        };
    }
    if let Some((buf, s, end)) = run {
        parts.push(buf.slice(s as usize..end as usize));
    }
    if parts.len() > MAX_BODY_PARTS {
        // Resources from many buffers (a spliced set): copied into one buffer (once for the
        // bodies every proxy of a scope shares). Sent as it is, every part would be an HTTP/2
        // DATA frame queued on each stream, and hyper's per-stream frame queue keeps its peak
        // size.
        let mut buf = BytesMut::with_capacity(parts[1..].iter().map(Bytes::len).sum());
        for p in &parts[1..] {
            buf.put_slice(p);
        }
        parts.truncate(1);
        parts.push(buf.freeze());
    }
    parts.push(suffix.clone());
    SotwBody {
        version,
        len: parts.iter().map(Bytes::len).sum(),
        parts: parts.into(),
        resources,
    }
}

impl EncodedSet {
    /// Encodes `resources` into one contiguous buffer.
    pub fn new(kind: ResourceType, resources: Vec<Resource>, control_plane: &str) -> EncodedSet {
        let total: usize = resources
            .iter()
            .map(|r| {
                let any_len = r.resource.encoded_len();
                1 + prost::encoding::encoded_len_varint(any_len as u64) + any_len
            })
            .sum();
        let mut buf = BytesMut::with_capacity(total);
        let mut spans = Vec::with_capacity(resources.len());
        for r in &resources {
            let start = buf.len();
            prost::encoding::message::encode(2, &r.resource, &mut buf);
            spans.push(start..buf.len());
        }
        let buf = buf.freeze();
        let entries: Vec<Entry> = resources
            .into_iter()
            .zip(spans)
            .map(|(r, span)| Entry {
                hash: name_hash(&r.name),
                name: Arc::from(r.name),
                digest: r.digest,
                buf: buf.clone(),
                start: span.start as u32,
                end: span.end as u32,
            })
            .collect();
        let count = entries.len() as u64;
        let suffix = sotw_suffix(kind, control_plane);
        let set = Self::from_entries(kind, entries, suffix, count, None);
        // The whole buffer is at hand: the full response is that buffer, one part.
        let full = SotwBody {
            version: set.version,
            len: 0,
            parts: Arc::from([version_field(set.version), buf, set.suffix.clone()]),
            resources: set.entries.len(),
        };
        let full = SotwBody {
            len: full.parts.iter().map(Bytes::len).sum(),
            ..full
        };
        let _ = set.full.set(full);
        set
    }

    /// A set like `self` in which the resources `stale` picks are replaced by what
    /// `regenerate` makes for their names (a name it does not return is dropped); every other
    /// resource is shared with `self`, not copied. Only the replaced resources are encoded.
    pub fn splice(
        &self,
        stale: impl Fn(&str) -> bool,
        regenerate: impl FnOnce(&[String]) -> Vec<Resource>,
    ) -> EncodedSet {
        let names: Vec<String> = self
            .entries
            .iter()
            .filter(|e| stale(&e.name))
            .map(|e| e.name.to_string())
            .collect();
        let mut fresh: HashMap<String, Resource> = regenerate(&names)
            .into_iter()
            .map(|r| (r.name.clone(), r))
            .collect();
        let count = fresh.len() as u64;
        // The replaced resources are encoded back to back into one buffer, in set order, so
        // a response of only them (the partial EDS update) is one slice of it.
        let mut shared = BytesMut::new();
        let mut entries = Vec::with_capacity(self.entries.len());
        // Per new entry: the position in `self` it is shared from, or `None` when replaced.
        let mut kept_from = Vec::with_capacity(self.entries.len());
        for (i, e) in self.entries.iter().enumerate() {
            if stale(&e.name) {
                let Some(r) = fresh.remove(&*e.name) else {
                    continue;
                };
                let start = shared.len() as u32;
                prost::encoding::message::encode(2, &r.resource, &mut shared);
                kept_from.push(None);
                entries.push(Entry {
                    name: e.name.clone(),
                    hash: e.hash,
                    digest: r.digest,
                    buf: Bytes::new(),
                    start,
                    end: shared.len() as u32,
                });
            } else {
                kept_from.push(Some(i));
                entries.push(e.clone());
            }
        }
        let shared = shared.freeze();
        for (e, from) in entries.iter_mut().zip(&kept_from) {
            if from.is_none() {
                e.buf = shared.clone();
            }
        }
        let delta = self.delta.get().map(|old_delta| {
            entries
                .iter()
                .zip(&kept_from)
                .map(|(e, from)| from.map_or_else(|| delta_entry(e), |i| old_delta[i].clone()))
                .collect()
        });
        Self::from_entries(self.kind, entries, self.suffix.clone(), count, delta)
    }

    fn from_entries(
        kind: ResourceType,
        entries: Vec<Entry>,
        suffix: Bytes,
        encoded_count: u64,
        delta: Option<Vec<Bytes>>,
    ) -> EncodedSet {
        let mut by_hash: Vec<(u64, u32)> = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.hash, i as u32))
            .collect();
        by_hash.sort_unstable();
        let mut hashes: Vec<u64> = by_hash.iter().map(|(h, _)| *h).collect();
        hashes.dedup();
        let names = NameSet(hashes.into());
        let version = content_version(entries.iter().map(|e| (&*e.name, &e.digest)));
        let delta_cell = OnceLock::new();
        if let Some(d) = delta {
            let _ = delta_cell.set(d);
        }
        EncodedSet {
            kind,
            entries,
            by_hash,
            suffix,
            names,
            version,
            full: OnceLock::new(),
            subsets: Mutex::new(HashMap::new()),
            delta: delta_cell,
            diffs: Mutex::new(Vec::new()),
            diffs_computed: AtomicU64::new(0),
            encoded_count,
        }
    }

    /// The response holding only what changed since `older` (of what `wanted` selects),
    /// carrying the version of everything `wanted` selects: an EDS update of the clusters
    /// whose endpoints changed (SotW allows partial EDS and RDS responses; the proxy keeps
    /// the rest). Shared by every proxy that wants the whole set.
    pub fn sotw_since(&self, older: &Arc<EncodedSet>, wanted: Option<&NameSet>) -> SotwBody {
        let diff = self.diff_from(older);
        let whole = wanted.is_none_or(|w| *w == self.names);
        if whole {
            return diff
                .partial
                .get_or_init(|| self.sotw_positions(None, &diff.changed))
                .clone();
        }
        self.sotw_positions(wanted, &diff.changed)
    }

    fn sotw_positions(&self, wanted: Option<&NameSet>, positions: &[usize]) -> SotwBody {
        let version = self.version_of(wanted);
        body_of(
            version,
            positions
                .iter()
                .map(|&p| &self.entries[p])
                .filter(|e| wanted.is_none_or(|w| w.contains(e.hash))),
            &self.suffix,
        )
    }

    /// What changed from `older` to this set, computed once per pair.
    pub fn diff_from(&self, older: &Arc<EncodedSet>) -> Arc<SetDiff> {
        let mut diffs = self.diffs.lock().expect("diff cache lock");
        if let Some((_, d)) = diffs
            .iter()
            .find(|(w, _)| std::ptr::eq(w.as_ptr(), Arc::as_ptr(older)))
        {
            return d.clone();
        }
        self.diffs_computed.fetch_add(1, Ordering::Relaxed);
        let changed = self
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| older.digest_of(e.hash) != Some(&e.digest))
            .map(|(i, _)| i)
            .collect();
        let removed = older
            .entries
            .iter()
            .filter(|e| self.position(e.hash).is_none())
            .map(|e| (e.hash, e.name.clone()))
            .collect();
        let diff = Arc::new(SetDiff {
            changed,
            removed,
            partial: OnceLock::new(),
        });
        if diffs.len() >= MAX_DIFFS {
            diffs.remove(0);
        }
        // A Weak keeps the older set's allocation, so its address cannot be reused while the
        // entry exists.
        diffs.push((Arc::downgrade(older), diff.clone()));
        diff
    }

    /// How many diffs this set computed.
    pub fn diffs_computed(&self) -> u64 {
        self.diffs_computed.load(Ordering::Relaxed)
    }

    pub fn hash_at(&self, position: usize) -> u64 {
        self.entries[position].hash
    }

    /// The names this set holds.
    pub fn names(&self) -> &NameSet {
        &self.names
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Resource names, in generation order.
    pub fn resource_names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| &*e.name)
    }

    /// Encoded bytes of every resource (what the set's content weighs).
    pub fn encoded_bytes(&self) -> usize {
        self.entries.iter().map(Entry::len).sum()
    }

    /// The SotW response for a proxy that wants `wanted` (None: everything): the shared full
    /// response when it wants all of it, else a response of slices of the shared buffers
    /// (itself shared by every proxy that wants the same subset).
    pub fn sotw(&self, wanted: Option<&NameSet>) -> SotwBody {
        let Some(wanted) = wanted.filter(|w| **w != self.names) else {
            return self.full_body();
        };
        let picked: Vec<&Entry> = self
            .entries
            .iter()
            .filter(|e| wanted.contains(e.hash))
            .collect();
        if picked.len() == self.entries.len() {
            return self.full_body();
        }
        let version = content_version(picked.iter().map(|e| (&*e.name, &e.digest)));
        let mut subsets = self.subsets.lock().expect("subset cache lock");
        if let Some(body) = subsets.get(&version) {
            return body.clone();
        }
        let body = body_of(version, picked, &self.suffix);
        if subsets.len() >= MAX_SUBSETS {
            subsets.clear();
        }
        subsets.insert(version, body.clone());
        body
    }

    /// Everything, as one response: made once, from one contiguous buffer.
    fn full_body(&self) -> SotwBody {
        self.full
            .get_or_init(|| {
                let total = self.encoded_bytes();
                let mut buf = BytesMut::with_capacity(total);
                for e in &self.entries {
                    buf.put_slice(&e.buf[e.start as usize..e.end as usize]);
                }
                let parts = [
                    version_field(self.version),
                    buf.freeze(),
                    self.suffix.clone(),
                ];
                SotwBody {
                    version: self.version,
                    len: parts.iter().map(Bytes::len).sum(),
                    parts: Arc::from(parts),
                    resources: self.entries.len(),
                }
            })
            .clone()
    }

    /// Position of the resource named by `hash`.
    fn position(&self, hash: u64) -> Option<usize> {
        let i = self.by_hash.partition_point(|(h, _)| *h < hash);
        self.by_hash
            .get(i)
            .filter(|(h, _)| *h == hash)
            .map(|(_, p)| *p as usize)
    }

    /// The digest of the resource named by `hash`, if the set holds it.
    pub fn digest_of(&self, hash: u64) -> Option<&[u8; 16]> {
        self.position(hash).map(|p| &self.entries[p].digest)
    }

    /// Name, hash and digest of every resource, in generation order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64, &[u8; 16])> {
        self.entries.iter().map(|e| (&*e.name, e.hash, &e.digest))
    }

    /// The content version of the resources `wanted` selects (all when None).
    pub fn version_of(&self, wanted: Option<&NameSet>) -> u64 {
        match wanted.filter(|w| **w != self.names) {
            None => self.version,
            Some(w) => content_version(
                self.entries
                    .iter()
                    .filter(|e| w.contains(e.hash))
                    .map(|e| (&*e.name, &e.digest)),
            ),
        }
    }

    /// The encoded delta `resources` entries of the resources at `positions`.
    pub fn delta_slices(&self, positions: &[usize]) -> Vec<Bytes> {
        let d = self
            .delta
            .get_or_init(|| self.entries.iter().map(delta_entry).collect());
        positions.iter().map(|&p| d[p].clone()).collect()
    }

    /// Positions (generation order) of the resources whose hash `pick` accepts.
    pub fn positions(&self, mut pick: impl FnMut(u64, &[u8; 16]) -> bool) -> Vec<usize> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| pick(e.hash, &e.digest))
            .map(|(i, _)| i)
            .collect()
    }

    pub fn name_at(&self, position: usize) -> &str {
        &self.entries[position].name
    }
}

/// One resource as a `DeltaDiscoveryResponse.resources` entry (name, version, resource).
fn delta_entry(e: &Entry) -> Bytes {
    let bytes = e.bytes();
    let mut field = &bytes[..];
    // The SotW field holds the Any: decode it once to wrap it in a delta Resource.
    let any = DiscoveryResponse::decode(&mut field)
        .ok()
        .and_then(|r| r.resources.into_iter().next())
        .unwrap_or_default();
    let mut buf = BytesMut::new();
    prost::encoding::message::encode(
        2,
        &DeltaResource {
            name: e.name.to_string(),
            version: resource_version(&e.digest),
            resource: Some(any),
            ..Default::default()
        },
        &mut buf,
    );
    buf.freeze()
}

/// The head of a delta response: everything but the resources and the nonce.
pub fn delta_head(
    kind: ResourceType,
    system_version: u64,
    removed: Vec<String>,
    control_plane: &str,
) -> Bytes {
    encode(&DeltaDiscoveryResponse {
        system_version_info: format_version(system_version),
        type_url: kind.type_url().to_string(),
        removed_resources: removed,
        control_plane: Some(ControlPlane {
            identifier: control_plane.to_string(),
        }),
        ..Default::default()
    })
}

/// One cache slot: a generation and its set, made once by whichever stream asks first, and
/// the set of the generation before (what an endpoint-only change splices from).
#[derive(Debug)]
struct Slot {
    generation: String,
    set: OnceLock<Arc<EncodedSet>>,
    previous: Option<(String, Arc<EncodedSet>)>,
    /// Not of the current snapshot: dropped at the next push unless replaced before.
    stale: AtomicBool,
}

impl Slot {
    fn new(generation: &str, previous: Option<(String, Arc<EncodedSet>)>) -> Slot {
        Slot {
            generation: generation.to_string(),
            set: OnceLock::new(),
            previous,
            stale: AtomicBool::new(false),
        }
    }
}

/// How a set is made: from scratch, or from the previous generation's set.
pub type Generate<'a> = Box<dyn FnOnce(Option<(&str, &EncodedSet)>) -> EncodedSet + 'a>;

/// The cache: (type, scope) → the set for the current generation.
#[derive(Debug, Default)]
pub struct ResourceCache {
    entries: DashMap<(ResourceType, ScopeKey), Arc<Slot>>,
    hits: AtomicU64,
    misses: AtomicU64,
    /// Sets encoded since start (one per scope and generation: what "one encoding, many
    /// streams" counts).
    encodings: AtomicU64,
    /// Resources encoded since start (a splice encodes only the resources it replaces).
    encoded_resources: AtomicU64,
}

impl ResourceCache {
    /// The set for (`kind`, `scope`) at `generation`, generated and encoded with `generate`
    /// only when absent or stale. Streams of one scope that ask at once wait for a single
    /// generation instead of each making its own; other scopes are not held up.
    pub fn get_or_generate(
        &self,
        kind: ResourceType,
        scope: ScopeKey,
        generation: &str,
        control_plane: &str,
        generate: impl FnOnce() -> Vec<Resource>,
    ) -> Arc<EncodedSet> {
        self.get_or_make(
            kind,
            scope,
            generation,
            Box::new(|_| EncodedSet::new(kind, generate(), control_plane)),
        )
    }

    /// Like [`Self::get_or_generate`], but `make` is handed the previous generation's set
    /// (when the cache still has it) to build the new one from.
    pub fn get_or_make(
        &self,
        kind: ResourceType,
        scope: ScopeKey,
        generation: &str,
        make: Generate<'_>,
    ) -> Arc<EncodedSet> {
        let key = (kind, scope);
        let current = self
            .entries
            .get(&key)
            .filter(|s| s.generation == generation)
            .map(|s| s.clone());
        let slot = match current {
            Some(slot) => slot,
            None => {
                let mut entry = self
                    .entries
                    .entry(key)
                    .or_insert_with(|| Arc::new(Slot::new(generation, None)));
                if entry.generation != generation {
                    let previous = entry
                        .set
                        .get()
                        .map(|set| (entry.generation.clone(), set.clone()));
                    *entry = Arc::new(Slot::new(generation, previous));
                }
                entry.clone()
            }
        };
        let mut made = false;
        let set = slot
            .set
            .get_or_init(|| {
                made = true;
                let previous = slot.previous.as_ref().map(|(g, s)| (g.as_str(), &**s));
                let set = make(previous);
                self.encoded_resources
                    .fetch_add(set.encoded_count, Ordering::Relaxed);
                Arc::new(set)
            })
            .clone();
        if made {
            self.misses.fetch_add(1, Ordering::Relaxed);
            self.encodings.fetch_add(1, Ordering::Relaxed);
        } else {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        set
    }

    /// After a new snapshot: entries of neither `config` (CDS, LDS, RDS, SDS) nor `full`
    /// (EDS) become stale (kept one more push, so the next generation can be spliced from
    /// them); entries already stale are dropped.
    pub fn retain(&self, config: &str, full: &str) {
        self.entries.retain(|_, v| {
            if v.generation == config || v.generation == full {
                return true;
            }
            !v.stale.swap(true, Ordering::Relaxed)
        });
    }

    /// Resources encoded since start.
    pub fn encoded_resources(&self) -> u64 {
        self.encoded_resources.load(Ordering::Relaxed)
    }

    pub fn stats(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    /// How many sets were encoded since start.
    pub fn encodings(&self) -> u64 {
        self.encodings.load(Ordering::Relaxed)
    }

    /// Live sets and their encoded bytes.
    pub fn size(&self) -> (usize, usize) {
        let bytes = self
            .entries
            .iter()
            .filter_map(|e| e.set.get().map(|s| s.encoded_bytes()))
            .sum();
        (self.entries.len(), bytes)
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
                type_url: "type.googleapis.com/test".into(),
                value: bytes.to_vec(),
            },
        )
    }

    fn scope(ns: &str) -> ScopeKey {
        ScopeKey::for_test(ns)
    }

    fn concat(parts: &[Bytes]) -> Vec<u8> {
        parts.iter().flat_map(|p| p.iter().copied()).collect()
    }

    #[test]
    fn generates_once_per_scope_and_generation() {
        let cache = ResourceCache::default();
        let mut calls = 0;
        for _ in 0..3 {
            cache.get_or_generate(ResourceType::Cluster, scope("ns1"), "v1", "cp", || {
                calls += 1;
                vec![res("a", b"1")]
            });
        }
        assert_eq!(calls, 1);
        cache.get_or_generate(ResourceType::Cluster, scope("ns1"), "v2", "cp", || {
            calls += 1;
            vec![]
        });
        assert_eq!(calls, 2);
        assert_eq!(cache.stats(), (2, 2));
        assert_eq!(cache.encodings(), 2);
    }

    #[test]
    fn versions_follow_content() {
        let a = EncodedSet::new(
            ResourceType::Cluster,
            vec![res("a", b"1"), res("b", b"2")],
            "cp",
        );
        let b = EncodedSet::new(
            ResourceType::Cluster,
            vec![res("a", b"1"), res("b", b"2")],
            "other",
        );
        let c = EncodedSet::new(
            ResourceType::Cluster,
            vec![res("a", b"1"), res("b", b"3")],
            "cp",
        );
        assert_eq!(a.sotw(None).version, b.sotw(None).version);
        assert_ne!(a.sotw(None).version, c.sotw(None).version);
    }

    /// The shared parts decode to exactly the DiscoveryResponse built field by field.
    #[test]
    fn shared_parts_decode_to_the_response() {
        let resources = vec![res("a", b"1"), res("b", b"22"), res("c", b"333")];
        let expected_any: Vec<Any> = resources.iter().map(|r| r.resource.clone()).collect();
        let set = EncodedSet::new(ResourceType::Endpoint, resources, "cp-id");
        let full = set.sotw(None);
        let decoded = DiscoveryResponse::decode(&concat(&full.parts)[..]).unwrap();
        assert_eq!(
            decoded,
            DiscoveryResponse {
                version_info: format_version(full.version),
                resources: expected_any.clone(),
                type_url: ResourceType::Endpoint.type_url().into(),
                control_plane: Some(ControlPlane {
                    identifier: "cp-id".into()
                }),
                ..Default::default()
            }
        );
        assert_eq!(full.len, concat(&full.parts).len());

        // A subset: slices of the same buffer, its own version.
        let wanted = NameSet::from_names(&["a", "c"]);
        let sub = set.sotw(Some(&wanted));
        let decoded = DiscoveryResponse::decode(&concat(&sub.parts)[..]).unwrap();
        assert_eq!(
            decoded.resources,
            vec![expected_any[0].clone(), expected_any[2].clone()]
        );
        assert_eq!(decoded.version_info, format_version(sub.version));
        assert_ne!(sub.version, full.version);
        assert_eq!(sub.version, set.version_of(Some(&wanted)));
        // Asking for everything by name is the full response itself.
        let all = NameSet::from_names(&["c", "b", "a"]);
        assert!(Arc::ptr_eq(&set.sotw(Some(&all)).parts, &full.parts));
        // The shared buffer is referenced, not copied.
        assert_eq!(sub.parts[1].as_ptr(), full.parts[1].as_ptr());
    }

    /// A spliced set shares every resource it does not replace with the set it came from,
    /// encodes only the replaced ones, and its responses decode to the new content.
    #[test]
    fn splicing_shares_unchanged_resources_and_encodes_only_the_replaced() {
        let old = EncodedSet::new(
            ResourceType::Endpoint,
            vec![res("a", b"1"), res("b", b"2"), res("c", b"3")],
            "cp",
        );
        let new = old.splice(
            |name| name == "b",
            |names| {
                assert_eq!(names, ["b".to_string()]);
                vec![res("b", b"22")]
            },
        );
        assert_eq!(new.encoded_count, 1);
        assert_eq!(new.entries[0].buf.as_ptr(), old.entries[0].buf.as_ptr());
        assert_eq!(new.entries[2].buf.as_ptr(), old.entries[2].buf.as_ptr());
        assert_ne!(new.entries[1].buf.as_ptr(), old.entries[1].buf.as_ptr());
        let fresh = EncodedSet::new(
            ResourceType::Endpoint,
            vec![res("a", b"1"), res("b", b"22"), res("c", b"3")],
            "cp",
        );
        assert_eq!(new.version_of(None), fresh.version_of(None));
        let decoded = DiscoveryResponse::decode(&concat(&new.sotw(None).parts)[..]).unwrap();
        let expected = DiscoveryResponse::decode(&concat(&fresh.sotw(None).parts)[..]).unwrap();
        assert_eq!(decoded, expected);
        // Only b changed: the partial response names b alone, at the whole set's version.
        let old = Arc::new(old);
        let partial = new.sotw_since(&old, None);
        let decoded = DiscoveryResponse::decode(&concat(&partial.parts)[..]).unwrap();
        assert_eq!(decoded.resources.len(), 1);
        assert_eq!(decoded.resources[0].value, b"22");
        assert_eq!(decoded.version_info, format_version(new.version_of(None)));
    }

    /// However many resources a splice replaced, a response of only them is one slice, and a
    /// response whose resources come from many buffers is one contiguous buffer: few HTTP/2
    /// frames per stream, whatever the churn.
    #[test]
    fn responses_of_spliced_sets_are_few_parts() {
        let names: Vec<String> = (0..40).map(|i| format!("r{i:02}")).collect();
        let old = Arc::new(EncodedSet::new(
            ResourceType::Endpoint,
            names.iter().map(|n| res(n, b"old")).collect(),
            "cp",
        ));
        let even = |n: &str| n[1..].parse::<u32>().unwrap() % 2 == 0;
        let new = old.splice(even, |stale| stale.iter().map(|n| res(n, b"new")).collect());
        let partial = new.sotw_since(&old, None);
        assert_eq!(
            partial.parts.len(),
            3,
            "version, the replaced resources, suffix"
        );
        let decoded = DiscoveryResponse::decode(&concat(&partial.parts)[..]).unwrap();
        assert_eq!(decoded.resources.len(), 20);
        assert!(decoded.resources.iter().all(|r| r.value == b"new"));
        // All but the last: 39 alternating runs of two buffers, made one.
        let wanted =
            NameSet::from_names(&names[..39].iter().map(String::as_str).collect::<Vec<_>>());
        let sub = new.sotw(Some(&wanted));
        assert_eq!(sub.parts.len(), 3);
        let decoded = DiscoveryResponse::decode(&concat(&sub.parts)[..]).unwrap();
        let got: Vec<&[u8]> = decoded.resources.iter().map(|r| &r.value[..]).collect();
        let expected: Vec<&[u8]> = (0..39)
            .map(|i| if i % 2 == 0 { &b"new"[..] } else { &b"old"[..] })
            .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn delta_entries_decode_to_named_versioned_resources() {
        let resources = vec![res("a", b"1"), res("b", b"22")];
        let digests: Vec<[u8; 16]> = resources.iter().map(|r| r.digest).collect();
        let set = EncodedSet::new(ResourceType::Cluster, resources, "cp");
        let mut msg = delta_head(ResourceType::Cluster, 7, vec!["gone".into()], "cp").to_vec();
        for s in set.delta_slices(&[0, 1]) {
            msg.extend_from_slice(&s);
        }
        let decoded = DeltaDiscoveryResponse::decode(&msg[..]).unwrap();
        assert_eq!(decoded.system_version_info, format_version(7));
        assert_eq!(decoded.removed_resources, vec!["gone".to_string()]);
        assert_eq!(decoded.resources.len(), 2);
        assert_eq!(decoded.resources[1].name, "b");
        assert_eq!(decoded.resources[1].version, resource_version(&digests[1]));
        assert_eq!(decoded.resources[1].resource.as_ref().unwrap().value, b"22");
    }
}
