//! Cross-object checks that a single document's validation cannot make: a VirtualService
//! destination naming a subset that no DestinationRule defines is rejected with an error that
//! names the field, so it never reaches Envoy as a route to a cluster that does not exist.
//!
//! Pure: takes the store, moves offending objects into its errors. No I/O.

use crate::model::config::{Config, ConfigError, MissingReference};
use crate::model::host::Hostname;
use crate::model::istio::VirtualService;
use crate::model::istio::virtual_service::Destination;
use crate::model::push_context::{ConfigStore, resolve_short_name};

/// Removes VirtualServices that reference undefined subsets, recording one error per
/// reference. Deterministic: errors follow document order.
pub fn reject_dangling_subsets(store: &mut ConfigStore) {
    let mut kept = Vec::with_capacity(store.virtual_services.len());
    for vs in std::mem::take(&mut store.virtual_services) {
        let errors = dangling_subsets(store, &vs);
        if errors.is_empty() {
            kept.push(vs);
        } else {
            store.errors.extend(errors);
        }
    }
    store.virtual_services = kept;
}

fn dangling_subsets(store: &ConfigStore, vs: &Config<VirtualService>) -> Vec<ConfigError> {
    let mut refs: Vec<(String, &Destination)> = Vec::new();
    for (i, http) in vs.spec.http.iter().enumerate() {
        for (j, rd) in http.route.iter().enumerate() {
            if let Some(d) = &rd.destination {
                refs.push((format!("spec.http[{i}].route[{j}].destination.subset"), d));
            }
        }
        if let Some(d) = &http.mirror {
            refs.push((format!("spec.http[{i}].mirror.subset"), d));
        }
        for (j, m) in http.mirrors.iter().enumerate() {
            if let Some(d) = &m.destination {
                refs.push((format!("spec.http[{i}].mirrors[{j}].destination.subset"), d));
            }
        }
    }
    for (i, tcp) in vs.spec.tcp.iter().enumerate() {
        for (j, rd) in tcp.route.iter().enumerate() {
            if let Some(d) = &rd.destination {
                refs.push((format!("spec.tcp[{i}].route[{j}].destination.subset"), d));
            }
        }
    }
    for (i, tls) in vs.spec.tls.iter().enumerate() {
        for (j, rd) in tls.route.iter().enumerate() {
            if let Some(d) = &rd.destination {
                refs.push((format!("spec.tls[{i}].route[{j}].destination.subset"), d));
            }
        }
    }
    refs.into_iter()
        .filter(|(_, d)| !d.subset.is_empty())
        .filter_map(|(field, d)| {
            let host = resolve_short_name(&d.host, &vs.meta.namespace);
            let defined = store.destination_rules.iter().any(|dr| {
                Hostname::new(&host)
                    .subset_of(resolve_short_name(&dr.spec.host, &dr.meta.namespace).as_str())
                    && dr.spec.subsets.iter().any(|s| s.name == d.subset)
            });
            (!defined).then(|| ConfigError {
                source: vs.meta.source.clone(),
                document: None,
                kind: Some("VirtualService".into()),
                namespace: Some(vs.meta.namespace.clone()),
                name: Some(vs.meta.name.clone()),
                field: Some(field),
                message: format!(
                    "subset {:?} of host {host} is not defined by any DestinationRule (IST0101); add it to a DestinationRule's subsets or remove it from the VirtualService",
                    d.subset
                ),
                missing: Some(MissingReference {
                    what: "host+subset in destinationrule".into(),
                    value: format!("{}+{}", d.host, d.subset),
                }),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::{ConfigKind, ConfigMeta};
    use crate::model::istio::DestinationRule;

    fn meta(kind: ConfigKind, name: &str) -> ConfigMeta {
        ConfigMeta {
            kind,
            api_version: "networking.istio.io/v1".into(),
            name: name.into(),
            namespace: "testns1".into(),
            labels: Default::default(),
            annotations: Default::default(),
            creation_timestamp: None,
            resource_version: None,
            source: format!("{name}.yaml"),
        }
    }

    fn vs(name: &str, subset: &str) -> Config<VirtualService> {
        let spec: VirtualService = serde_json::from_value(serde_json::json!({
            "hosts": ["httpbin"],
            "http": [{"route": [{"destination": {"host": "httpbin", "subset": subset}}]}]
        }))
        .unwrap();
        Config {
            meta: meta(ConfigKind::VirtualService, name),
            spec,
        }
    }

    #[test]
    fn undefined_subsets_reject_the_virtual_service_with_the_field() {
        let dr: DestinationRule = serde_json::from_value(serde_json::json!({
            "host": "httpbin.testns1.svc.cluster.local",
            "subsets": [{"name": "v1", "labels": {"version": "v1"}}]
        }))
        .unwrap();
        let mut store = ConfigStore {
            destination_rules: vec![
                Config {
                    meta: meta(ConfigKind::DestinationRule, "dr"),
                    spec: dr,
                }
                .into(),
            ],
            virtual_services: vec![vs("good", "v1").into(), vs("bad", "v3").into()],
            ..Default::default()
        };
        reject_dangling_subsets(&mut store);
        let names: Vec<&str> = store
            .virtual_services
            .iter()
            .map(|v| v.meta.name.as_str())
            .collect();
        assert_eq!(names, ["good"]);
        assert_eq!(store.errors.len(), 1);
        let e = &store.errors[0];
        assert_eq!(e.name.as_deref(), Some("bad"));
        assert_eq!(
            e.field.as_deref(),
            Some("spec.http[0].route[0].destination.subset")
        );
        assert!(e.to_string().starts_with("bad.yaml: VirtualService testns1/bad: field spec.http[0].route[0].destination.subset: subset \"v3\""), "{e}");
    }
}
