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

/// Parses Envoy JSON of `type_name` into encoded protobuf bytes (used to read bootstrap files
/// and golden inputs back).
pub fn json_to_bytes(type_name: &str, json: &serde_json::Value) -> Result<Vec<u8>, ProtoJsonError> {
    use prost::Message;
    let desc = POOL
        .get_message_by_name(type_name)
        .ok_or_else(|| ProtoJsonError::UnknownType(type_name.to_string()))?;
    let msg = DynamicMessage::deserialize(desc, json)?;
    Ok(msg.encode_to_vec())
}
