//! Renders Envoy protobuf messages as Envoy's canonical JSON (the shape `config_dump` and
//! bootstrap files use), expanding `Any` payloads by their type URL.
//!
//! Owns the descriptor pool compiled by build.rs from the Envoy API protos. It knows nothing of
//! Istio or of our model; it only turns bytes of a known message type into JSON.

use std::sync::LazyLock;

use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};

static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(
        include_bytes!(concat!(env!("OUT_DIR"), "/envoy_descriptor.bin")).as_slice(),
    )
    .expect("the Envoy descriptor set built by build.rs decodes")
});

/// Errors while rendering a message.
#[derive(Debug, thiserror::Error)]
pub enum ProtoJsonError {
    #[error("message type {0} is not in navarch's Envoy descriptor set")]
    UnknownType(String),
    #[error("decoding {type_name}: {source}")]
    Decode {
        type_name: String,
        source: prost::DecodeError,
    },
    #[error("rendering JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Renders an encoded message of the fully-qualified `type_name` (e.g.
/// `envoy.config.cluster.v3.Cluster`) as JSON, leaving out fields at their default value.
pub fn bytes_to_json(type_name: &str, bytes: &[u8]) -> Result<serde_json::Value, ProtoJsonError> {
    let desc = POOL
        .get_message_by_name(type_name)
        .ok_or_else(|| ProtoJsonError::UnknownType(type_name.to_string()))?;
    let msg = DynamicMessage::decode(desc, bytes).map_err(|source| ProtoJsonError::Decode {
        type_name: type_name.to_string(),
        source,
    })?;
    let options = SerializeOptions::new()
        .skip_default_fields(true)
        .use_proto_field_name(true);
    let value = msg.serialize_with_options(serde_json::value::Serializer, &options)?;
    Ok(value)
}

/// Renders a typed prost message as JSON.
pub fn to_json<M: prost::Name>(msg: &M) -> Result<serde_json::Value, ProtoJsonError> {
    bytes_to_json(&M::full_name(), &msg.encode_to_vec())
}

/// Renders a `google.protobuf.Any` as JSON with its `@type`.
pub fn any_to_json(
    any: &envoy_types::pb::google::protobuf::Any,
) -> Result<serde_json::Value, ProtoJsonError> {
    let type_name = any.type_url.rsplit('/').next().unwrap_or_default();
    let mut value = bytes_to_json(type_name, &any.value)?;
    if let serde_json::Value::Object(map) = &mut value {
        let mut with_type = serde_json::Map::new();
        with_type.insert("@type".into(), any.type_url.clone().into());
        with_type.extend(std::mem::take(map));
        *map = with_type;
    }
    Ok(value)
}

/// The same message with every map field's entries in a fixed order, so that equal messages
/// encode to equal bytes in every process. prost encodes map fields (e.g. `Struct.fields`,
/// `typed_per_filter_config`) from a `HashMap`, whose order is random per map; content
/// versions hash bytes, and replicas must agree on them. Reordering keeps every length, so
/// this is one pass over the bytes. Bytes that do not parse as `type_name` are returned as is.
pub fn canonical_bytes(type_name: &str, bytes: Vec<u8>) -> Vec<u8> {
    let Some(desc) = POOL.get_message_by_name(type_name) else {
        return bytes;
    };
    canonical_message(&desc, &bytes).unwrap_or(bytes)
}

fn read_varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *buf.get(*pos)?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// One field as found on the wire: its number, its whole encoding (tag included), and for
/// length-delimited fields where the payload starts.
struct WireField {
    number: u32,
    start: usize,
    payload: usize,
    end: usize,
    delimited: bool,
}

fn next_field(buf: &[u8], pos: &mut usize) -> Option<WireField> {
    let start = *pos;
    let key = read_varint(buf, pos)?;
    let number = u32::try_from(key >> 3).ok()?;
    let delimited = key & 7 == 2;
    match key & 7 {
        0 => {
            read_varint(buf, pos)?;
        }
        1 => *pos += 8,
        5 => *pos += 4,
        2 => {
            let len = usize::try_from(read_varint(buf, pos)?).ok()?;
            let payload = *pos;
            *pos += len;
            if *pos > buf.len() {
                return None;
            }
            return Some(WireField {
                number,
                start,
                payload,
                end: *pos,
                delimited,
            });
        }
        _ => return None,
    }
    (*pos <= buf.len()).then_some(WireField {
        number,
        start,
        payload: *pos,
        end: *pos,
        delimited,
    })
}

fn canonical_message(desc: &prost_reflect::MessageDescriptor, buf: &[u8]) -> Option<Vec<u8>> {
    use prost_reflect::Kind;
    let mut out = Vec::with_capacity(buf.len());
    let mut pos = 0;
    // Entries of the map field being read, canonicalized, waiting to be sorted.
    let mut map_run: Option<(u32, Vec<Vec<u8>>)> = None;
    let flush = |run: &mut Option<(u32, Vec<Vec<u8>>)>, out: &mut Vec<u8>| {
        if let Some((_, mut entries)) = run.take() {
            entries.sort();
            for e in entries {
                out.extend_from_slice(&e);
            }
        }
    };
    let is_any = desc.full_name() == "google.protobuf.Any";
    let mut any_type: Option<String> = None;
    while pos < buf.len() {
        let f = next_field(buf, &mut pos)?;
        let field = desc.get_field(f.number);
        let nested = match field.as_ref().map(|fd| fd.kind()) {
            Some(Kind::Message(m)) if f.delimited => Some(m),
            _ => None,
        };
        if is_any && f.number == 1 {
            any_type = std::str::from_utf8(&buf[f.payload..f.end])
                .ok()
                .map(|u| u.rsplit('/').next().unwrap_or_default().to_string());
        }
        let any_payload = (is_any && f.number == 2)
            .then(|| {
                any_type
                    .as_deref()
                    .and_then(|t| POOL.get_message_by_name(t))
            })
            .flatten();
        let encoded = match (nested.or(any_payload), f.delimited) {
            (Some(m), true) => {
                let mut e = buf[f.start..f.payload].to_vec();
                e.extend(canonical_message(&m, &buf[f.payload..f.end])?);
                e
            }
            _ => buf[f.start..f.end].to_vec(),
        };
        if field.as_ref().is_some_and(|fd| fd.is_map()) {
            match &mut map_run {
                Some((n, entries)) if *n == f.number => entries.push(encoded),
                _ => {
                    flush(&mut map_run, &mut out);
                    map_run = Some((f.number, vec![encoded]));
                }
            }
        } else {
            flush(&mut map_run, &mut out);
            out.extend(encoded);
        }
    }
    flush(&mut map_run, &mut out);
    Some(out)
}

#[cfg(test)]
mod canonical_tests {
    use super::*;
    use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
    use prost::{Message, Name};

    fn structure(keys: &[&str]) -> Struct {
        Struct {
            fields: keys
                .iter()
                .map(|k| {
                    (
                        k.to_string(),
                        Value {
                            kind: Some(Kind::StringValue(format!("value of {k}"))),
                        },
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn equal_maps_encode_to_equal_bytes() {
        use envoy_types::pb::envoy::config::core::v3::Metadata;
        let keys: Vec<String> = (0..20).map(|i| format!("key{i}")).collect();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let mut seen = std::collections::BTreeSet::new();
        let mut canonical = std::collections::BTreeSet::new();
        for _ in 0..8 {
            // A fresh HashMap each time: a fresh random order.
            let md = Metadata {
                filter_metadata: [("istio".to_string(), structure(&refs))]
                    .into_iter()
                    .collect(),
                ..Default::default()
            };
            let bytes = md.encode_to_vec();
            seen.insert(bytes.clone());
            let c = canonical_bytes(&Metadata::full_name(), bytes);
            assert_eq!(Metadata::decode(c.as_slice()).unwrap(), md, "same message");
            canonical.insert(c);
        }
        assert!(
            seen.len() > 1,
            "prost's map order varies (else this test proves nothing)"
        );
        assert_eq!(canonical.len(), 1, "canonical bytes are equal");
    }
}
