//! Object names and metadata as Kubernetes checks them (DNS-1123 labels and subdomains,
//! DNS-1035 labels) and the `ConfigMeta` of an Istio object, with the error naming what is wrong.

use super::*;

/// Kubernetes' DNS-1123 label (`[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters):
/// namespaces.
pub(super) fn dns1123_label(s: &str) -> Result<(), String> {
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let b = s.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| alnum(*c) || *c == b'-')
        && alnum(b[0])
        && alnum(b[b.len() - 1]);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a DNS-1123 label: at most 63 lower-case letters, digits or '-', starting and ending with a letter or digit"
        ))
    }
}

/// Kubernetes' DNS-1123 subdomain (DNS-1123 labels joined by '.', at most 253 characters):
/// the names of most objects, Istio's included.
pub(super) fn dns1123_subdomain(s: &str) -> Result<(), String> {
    if s.len() <= 253 && s.split('.').all(|l| dns1123_label(l).is_ok()) {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a DNS-1123 subdomain: at most 253 lower-case letters, digits, '-' or '.', each '.'-separated part starting and ending with a letter or digit"
        ))
    }
}

/// Kubernetes' DNS-1035 label (a DNS-1123 label that starts with a letter): Service names.
pub(super) fn dns1035_label(s: &str) -> Result<(), String> {
    match dns1123_label(s) {
        Ok(()) if s.as_bytes()[0].is_ascii_lowercase() => Ok(()),
        _ => Err(format!(
            "{s:?} is not a DNS-1035 label: at most 63 lower-case letters, digits or '-', starting with a letter and ending with a letter or digit"
        )),
    }
}

/// `metadata.name` (required, by `name_rule`) and `metadata.namespace` (a DNS-1123 label when
/// given) as Kubernetes would accept them.
pub(super) fn check_names(
    origin: &Origin,
    doc: &Value,
    name_rule: fn(&str) -> Result<(), String>,
) -> Result<(), Box<ConfigError>> {
    let meta = doc.get("metadata");
    let err =
        |field: &str, message: String| Box::new(origin.error(doc, Some(field.into()), message));
    match meta.and_then(|m| m.get("name")) {
        None | Some(Value::Null) => {
            return Err(err("metadata.name", "metadata.name is required".into()));
        }
        Some(Value::String(name)) if name.is_empty() => {
            return Err(err("metadata.name", "metadata.name is required".into()));
        }
        Some(Value::String(name)) => name_rule(name).map_err(|m| err("metadata.name", m))?,
        Some(other) => {
            return Err(err(
                "metadata.name",
                format!("invalid type: {}, expected a string", json_type(other)),
            ));
        }
    }
    match meta.and_then(|m| m.get("namespace")) {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(ns)) => dns1123_label(ns).map_err(|m| err("metadata.namespace", m)),
        Some(other) => Err(err(
            "metadata.namespace",
            format!("invalid type: {}, expected a string", json_type(other)),
        )),
    }
}

pub(super) fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "sequence",
        Value::Object(_) => "map",
    }
}

pub(super) fn config_meta(
    origin: &Origin,
    kind: ConfigKind,
    api_version: &str,
    doc: &Value,
) -> Result<ConfigMeta, Box<ConfigError>> {
    check_names(origin, doc, dns1123_subdomain)?;
    let meta = doc.get("metadata").cloned().unwrap_or(Value::Null);
    let name = meta.get("name").and_then(Value::as_str).unwrap_or_default();
    let map = |key: &str| -> BTreeMap<String, String> {
        meta.get(key)
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default()
    };
    let s = |key: &str| meta.get(key).and_then(Value::as_str).map(str::to_string);
    Ok(ConfigMeta {
        kind,
        api_version: api_version.to_string(),
        name: name.to_string(),
        namespace: s("namespace").unwrap_or_else(|| "default".into()),
        labels: map("labels"),
        annotations: map("annotations"),
        creation_timestamp: s("creationTimestamp"),
        resource_version: s("resourceVersion"),
        source: origin.source.clone(),
    })
}
