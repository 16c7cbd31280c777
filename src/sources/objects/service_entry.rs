//! ServiceEntries into registry services and endpoints: their hosts, ports, resolution and
//! endpoints (listed, or the WorkloadEntries and Pods a `workloadSelector` picks).

use super::*;

impl ObjectSet {
    /// ServiceEntries → registry services, one per host (istiod's `convertServices`), with
    /// endpoints from `endpoints`, from the WorkloadEntries and Pods `workloadSelector` picks in
    /// the entry's namespace, or (DNS resolutions without either) from the host itself
    /// (`convertServiceEntryToInstances`). The oldest entry keeps a hostname; a Kubernetes
    /// Service keeps its hostname unless it has no ports (a port-less headless Service yields
    /// no clusters in istiod, so the entry's ports serve the host, as in the seed's
    /// non-existent-service case).
    pub(super) fn add_service_entries(&self, store: &mut ConfigStore) {
        let mut entries = store.service_entries.clone();
        entries.sort_by(istio_order);
        let workload_entries = store.workload_entries.clone();
        for se in &entries {
            for host in &se.spec.hosts {
                if let Some(existing) = store.registry.services.get(host)
                    && (existing.source == ServiceSource::ServiceEntry
                        || !existing.ports.is_empty())
                {
                    continue;
                }
                let (service, endpoints) = self.convert_service_entry(se, host, &workload_entries);
                store.registry.endpoints.insert(host.clone(), endpoints);
                store.registry.services.insert(host.clone(), service);
            }
        }
    }

    pub(super) fn convert_service_entry(
        &self,
        se: &Config<ServiceEntry>,
        host: &str,
        workload_entries: &[Arc<Config<WorkloadEntry>>],
    ) -> (Service, Vec<Endpoint>) {
        let spec = &se.spec;
        let ns = se.meta.namespace.as_str();
        let ports: Vec<ServicePort> = spec
            .ports
            .iter()
            .filter_map(|p| {
                let port = u16::try_from(p.number).ok()?;
                let target = u16::try_from(p.target_port).ok().filter(|t| *t > 0);
                Some(ServicePort {
                    name: p.name.clone(),
                    port,
                    target_port: TargetPort::Number(target.unwrap_or(port)),
                    // istiod's `protocol.Parse` of the port's `protocol` field, never the name.
                    protocol: Protocol::parse(&p.protocol).unwrap_or(Protocol::Unsupported),
                })
            })
            .collect();
        let resolution = match spec.resolution {
            ServiceEntryResolution::None => Resolution::Passthrough,
            ServiceEntryResolution::Static => Resolution::ClientSideLb,
            ServiceEntryResolution::Dns => Resolution::DnsLb,
            ServiceEntryResolution::DnsRoundRobin => Resolution::DnsRoundRobinLb,
        };
        let service = Service {
            hostname: host.to_string(),
            name: host.to_string(),
            namespace: ns.to_string(),
            cluster_ip: spec.addresses.iter().find_map(|a| a.parse::<IpAddr>().ok()),
            ports: ports.clone(),
            selector: spec
                .workload_selector
                .as_ref()
                .map(|s| s.labels.clone())
                .filter(|l| !l.is_empty()),
            export_to: spec.export_to.clone(),
            labels: se.meta.labels.clone(),
            resolution,
            mesh_external: spec.location
                == crate::model::istio::service_entry::ServiceEntryLocation::MeshExternal,
            addresses: spec.addresses.clone(),
            source: ServiceSource::ServiceEntry,
        };
        // The workload port: the entry's own port map by port name, else targetPort, else
        // the service port.
        let port_for = |map: &BTreeMap<String, u32>, p: &ServicePort| -> u16 {
            map.get(&p.name)
                .and_then(|n| u16::try_from(*n).ok())
                .filter(|n| *n > 0)
                .unwrap_or(match p.target_port {
                    TargetPort::Number(n) => n,
                    TargetPort::Named(_) => p.port,
                })
        };
        let mut out = Vec::new();
        let mut push_entry = |we: &WorkloadEntry, workload: Option<String>| {
            let Some((address, hostname)) = entry_address(&we.address) else {
                return;
            };
            for p in &ports {
                out.push(Endpoint {
                    address,
                    hostname: hostname.clone(),
                    port: port_for(&we.ports, p),
                    service_port_name: p.name.clone(),
                    labels: we.labels.clone(),
                    ready: true,
                    workload: workload.clone(),
                    namespace: ns.to_string(),
                    weight: we.weight.max(1),
                });
            }
        };
        if let Some(selector) = &spec.workload_selector {
            for we in workload_entries.iter().filter(|we| {
                we.meta.namespace == ns && labels_match(&selector.labels, &we.spec.labels)
            }) {
                push_entry(&we.spec, Some(we.meta.name.clone()));
            }
            for pod in &self.pods {
                let labels = pod.metadata.labels.clone().unwrap_or_default();
                if namespace_of(&pod.metadata) != ns || !labels_match(&selector.labels, &labels) {
                    continue;
                }
                let Some(status) = &pod.status else { continue };
                if status.phase.as_deref() != Some("Running") {
                    continue;
                }
                let Some(ip) = status.pod_ip.clone() else {
                    continue;
                };
                let as_entry = WorkloadEntry {
                    address: ip,
                    labels,
                    ..Default::default()
                };
                push_entry(&as_entry, pod.metadata.name.clone());
            }
        } else if !spec.endpoints.is_empty() {
            for we in &spec.endpoints {
                push_entry(we, None);
            }
        } else if matches!(resolution, Resolution::DnsLb | Resolution::DnsRoundRobinLb) {
            push_entry(
                &WorkloadEntry {
                    address: host.to_string(),
                    ..Default::default()
                },
                None,
            );
        }
        (service, out)
    }
}
