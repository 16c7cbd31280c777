//! Which Istio objects a generated resource comes from, read back from the metadata the
//! builders put on it (`filter_metadata.istio.config`, istiod's
//! `/apis/networking.istio.io/v1/namespaces/<ns>/<kind>/<name>`): what a NACK is traced to.
//!
//! Pure: generated resources in, `Kind namespace/name` out. Which objects go into a resource
//! is the builders' business; this module only reads what they wrote.

use std::collections::BTreeSet;

use serde_json::Value;

use super::Resource;

/// The Istio objects behind the resources a proxy rejected, as `Kind namespace/name`
/// (`VirtualService testns1/httpbin`), narrowed as far as `error` (Envoy's error_detail)
/// allows: to the parts of the config that contain a value the error quotes, else to the
/// resources the error names, else every resource of the response.
pub fn rejected_sources(resources: &[Resource], error: &str) -> Vec<String> {
    let json: Vec<(&str, Value)> = resources
        .iter()
        .filter_map(|r| {
            Some((
                r.name.as_str(),
                crate::protojson::any_to_json(&r.resource).ok()?,
            ))
        })
        .collect();
    let quoted = quoted_fragments(error);
    // The parts (route, cluster, ...) that carry their source and contain a quoted value.
    let mut by_fragment = BTreeSet::new();
    for (_, v) in &json {
        tagged_parts(v, &mut |part, source| {
            if quoted.iter().any(|q| holds(part, q)) {
                by_fragment.insert(source);
            }
        });
    }
    if !by_fragment.is_empty() {
        return by_fragment.into_iter().collect();
    }
    let named: Vec<&Value> = json
        .iter()
        .filter(|(n, _)| !n.is_empty() && error.contains(n))
        .map(|(_, v)| v)
        .collect();
    let scope: Vec<&Value> = if named.is_empty() {
        json.iter().map(|(_, v)| v).collect()
    } else {
        named
    };
    let mut all = BTreeSet::new();
    for v in scope {
        tagged_parts(v, &mut |_, source| {
            all.insert(source);
        });
    }
    all.into_iter().collect()
}

/// Calls `f` with every JSON object that carries an Istio source in its metadata.
fn tagged_parts(v: &Value, f: &mut impl FnMut(&Value, String)) {
    match v {
        Value::Object(m) => {
            if let Some(source) = m
                .get("metadata")
                .and_then(|md| md["filter_metadata"]["istio"]["config"].as_str())
                .and_then(source_of)
            {
                f(v, source);
            }
            for child in m.values() {
                tagged_parts(child, f);
            }
        }
        Value::Array(a) => a.iter().for_each(|c| tagged_parts(c, f)),
        _ => {}
    }
}

/// Whether a string somewhere in `v` contains `fragment`.
fn holds(v: &Value, fragment: &str) -> bool {
    match v {
        Value::String(s) => s.contains(fragment),
        Value::Object(m) => m.values().any(|c| holds(c, fragment)),
        Value::Array(a) => a.iter().any(|c| holds(c, fragment)),
        _ => false,
    }
}

/// `/apis/<group>/<version>/namespaces/<ns>/<kind>/<name>` → `Kind ns/name`.
fn source_of(path: &str) -> Option<String> {
    let p: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let ["apis", _, _, "namespaces", ns, kind, name] = p.as_slice() else {
        return None;
    };
    let kind: String = kind
        .split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect();
    Some(format!("{kind} {ns}/{name}"))
}

/// What an error quotes (`'...'` or `"..."`), at least 3 characters long.
fn quoted_fragments(error: &str) -> Vec<String> {
    let mut out = Vec::new();
    for q in ['\'', '"'] {
        let parts: Vec<&str> = error.split(q).collect();
        out.extend(
            parts
                .iter()
                .skip(1)
                .step_by(2)
                .filter(|s| s.len() >= 3)
                .map(|s| s.to_string()),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource_type::ResourceType;
    use crate::translate::testing::{SHOP, push_from_yaml, shop_sidecar};

    /// `SHOP` and a second service whose VirtualService has a regex Envoy may refuse: both
    /// VirtualServices' routes are in route configuration `80`.
    const WITH_REGEX: &str = r#"
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec:
  selector: {app: api}
  ports: [{name: http, port: 80}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api-regex, namespace: shop}
spec:
  hosts: [api.shop.svc.cluster.local]
  http:
  - match: [{uri: {regex: "/(abcdefghij){1,40}"}}]
    route: [{destination: {host: api.shop.svc.cluster.local}}]
"#;

    #[test]
    fn a_rejected_route_is_traced_to_the_virtual_service_whose_value_the_error_quotes() {
        let push = push_from_yaml(&format!("{SHOP}{WITH_REGEX}"), None);
        let routes = crate::translate::generate(ResourceType::Route, &shop_sidecar(), &push, None);
        assert_eq!(
            rejected_sources(
                &routes,
                "Invalid regex '/(abcdefghij){1,40}': pattern exceeds maximum program size"
            ),
            ["VirtualService shop/api-regex"]
        );
        // An error that quotes nothing of the config: every VirtualService behind the response.
        assert_eq!(
            rejected_sources(&routes, "something went wrong"),
            ["VirtualService shop/api-regex", "VirtualService shop/web"]
        );
        let clusters =
            crate::translate::generate(ResourceType::Cluster, &shop_sidecar(), &push, None);
        assert_eq!(
            rejected_sources(&clusters, "outbound|80|v1|web.shop.svc.cluster.local: bad"),
            ["DestinationRule shop/web"],
            "an error naming a resource blames what made that resource"
        );
    }

    #[test]
    fn paths_become_kind_namespace_name() {
        assert_eq!(
            source_of("/apis/networking.istio.io/v1/namespaces/testns1/virtual-service/httpbin"),
            Some("VirtualService testns1/httpbin".into())
        );
        assert_eq!(
            source_of("/apis/networking.istio.io/v1/namespaces/a/destination-rule/b"),
            Some("DestinationRule a/b".into())
        );
        assert_eq!(source_of("/other"), None);
    }

    #[test]
    fn quoted_values_narrow_the_blame() {
        assert_eq!(
            quoted_fragments("Invalid regex '/(ab){1,40}': program size"),
            ["/(ab){1,40}"]
        );
        assert!(quoted_fragments("no quotes").is_empty());
    }
}
