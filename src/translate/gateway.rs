//! Router proxies (ingress and egress gateways): listeners per Gateway server port, the
//! `http.<port>` / `https.<port>.<portName>.<gateway>.<namespace>` route configurations, and
//! the TLS secrets a gateway terminates with, served over SDS on the ADS stream.
//!
//! Mirrors istiod's `buildGatewayListeners`, `buildGatewayHTTPRouteConfig` and its secret
//! generator for Kubernetes Secrets. Which servers and VirtualServices apply is decided in
//! `model::gateway`; this module only shapes Envoy config.

use crate::model::credential::{CA_SUFFIX, KUBERNETES_SECRET_PREFIX};
use crate::model::istio::gateway::{ServerTlsMode, ServerTlsSettings, TlsProtocol};
use crate::model::proxy::{InterceptionMode, Proxy};
use crate::model::push_context::PushContext;
use crate::translate::common::socket_address;
use crate::translate::filters::{
    http_connection_manager, listener_access_logs, network_filter, tcp_route_filter, tls_inspector,
};
use crate::translate::{ads_config_source, any, pb_duration};
use envoy_types::pb::google::protobuf::BoolValue;
use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::core::v3::{
    DataSource, TransportSocket, data_source::Specifier as DataSourceSpecifier,
    transport_socket::ConfigType as TransportSocketConfigType,
};
use envoy_types::pb::envoy::config::listener::v3::{
    FilterChain, FilterChainMatch, Listener, ListenerFilter,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, Rds,
    http_connection_manager::{
        ForwardClientCertDetails, RouteSpecifier, SetCurrentClientCertDetails,
    },
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig, Secret,
    TlsCertificate, TlsParameters,
    common_tls_context::{CombinedCertificateValidationContext, ValidationContextType},
    secret::Type as SecretType,
    tls_parameters::TlsProtocol as EnvoyTlsProtocol,
};

use crate::model::gateway::{
    GatewayServer, merged_servers, names_gateway, virtual_services_for_gateway,
};

/// ALPN that HTTPS gateway servers offer (istiod's `ALPNHttp`).
const ALPN_HTTP: [&str; 2] = ["h2", "http/1.1"];

/// Every listener of a router proxy: one per (port, bind) its Gateways' servers use.
pub fn build_gateway_listeners(proxy: &Proxy, push: &PushContext) -> Vec<Listener> {
    let servers = merged_servers(proxy, push);
    let mut by_port: BTreeMap<(u16, String), Vec<&GatewayServer>> = BTreeMap::new();
    for s in &servers {
        by_port
            .entry((s.listen_port, s.server.bind.clone()))
            .or_default()
            .push(s);
    }
    let mut out = Vec::new();
    for ((port, bind), servers) in by_port {
        // Named as istiod names it; bound on the proxy's own address without interception
        // (CONTRACT.md), so that gateways share a host on distinct loopback addresses.
        let name_bind = if bind.is_empty() { "0.0.0.0" } else { &bind };
        let address = if !bind.is_empty() {
            bind.clone()
        } else if proxy.interception_mode == InterceptionMode::None {
            proxy.primary_ip().to_string()
        } else {
            "0.0.0.0".to_string()
        };
        let name = format!("{name_bind}_{port}");
        let mut chains: Vec<FilterChain> = Vec::new();
        let mut plain_http_done = false;
        for s in &servers {
            if s.protocol.is_http() {
                if plain_http_done {
                    continue;
                }
                plain_http_done = true;
                chains.push(FilterChain {
                    filters: vec![hcm_filter(
                        proxy,
                        push,
                        &format!("outbound_{name}"),
                        &s.route_name,
                    )],
                    ..Default::default()
                });
            } else if s.is_http() {
                // HTTPS terminated here: one chain per server, told apart by SNI.
                let stat_prefix = if s.server.name.is_empty() {
                    format!("outbound_{name}")
                } else {
                    s.server.name.clone()
                };
                chains.push(FilterChain {
                    filter_chain_match: sni_match(&s.sni_hosts),
                    transport_socket: downstream_tls(proxy, s, true),
                    filters: vec![hcm_filter(proxy, push, &stat_prefix, &s.route_name)],
                    ..Default::default()
                });
            } else if s.is_passthrough() {
                chains.extend(passthrough_chains(proxy, push, s));
            } else {
                // Opaque TCP, or TLS terminated here and forwarded as TCP.
                if let Some(filter) = tcp_filter(proxy, push, s) {
                    chains.push(FilterChain {
                        filter_chain_match: s
                            .server
                            .tls
                            .as_ref()
                            .and_then(|_| sni_match(&s.sni_hosts)),
                        transport_socket: s
                            .server
                            .tls
                            .as_ref()
                            .and_then(|_| downstream_tls(proxy, s, false)),
                        filters: vec![filter],
                        ..Default::default()
                    });
                }
            }
        }
        if chains.is_empty() {
            tracing::debug!(
                listener = name,
                "gateway listener without filter chains; skipped"
            );
            continue;
        }
        let needs_sni = chains.iter().any(|c| {
            c.filter_chain_match
                .as_ref()
                .is_some_and(|m| !m.server_names.is_empty())
                || c.transport_socket.is_some()
        });
        out.push(Listener {
            name,
            address: Some(socket_address(&address, u32::from(port))),
            filter_chains: chains,
            listener_filters: if needs_sni {
                vec![tls_inspector()]
            } else {
                Vec::<ListenerFilter>::new()
            },
            listener_filters_timeout: Some(pb_duration(std::time::Duration::ZERO)),
            continue_on_listener_filters_timeout: true,
            access_log: listener_access_logs(push.mesh()),
            ..Default::default()
        });
    }
    out
}

/// `server_names` for SNI hosts; none for `*` (any name).
fn sni_match(sni_hosts: &[String]) -> Option<FilterChainMatch> {
    if sni_hosts.is_empty() || sni_hosts.iter().any(|h| h == "*") {
        return None;
    }
    Some(FilterChainMatch {
        server_names: sni_hosts.to_vec(),
        ..Default::default()
    })
}

/// The gateway flavour of the HCM (istiod's `buildGatewayConnectionManager`): the client
/// address is the remote address, and client certificate details are sanitized and set.
fn hcm_filter(
    proxy: &Proxy,
    push: &PushContext,
    stat_prefix: &str,
    route_name: &str,
) -> envoy_types::pb::envoy::config::listener::v3::Filter {
    let mut hcm: HttpConnectionManager = http_connection_manager(
        proxy,
        push,
        stat_prefix.to_string(),
        RouteSpecifier::Rds(Rds {
            config_source: Some(ads_config_source()),
            route_config_name: route_name.to_string(),
        }),
    );
    hcm.use_remote_address = Some(BoolValue { value: true });
    hcm.forward_client_cert_details = ForwardClientCertDetails::SanitizeSet as i32;
    hcm.set_current_client_cert_details = Some(SetCurrentClientCertDetails {
        subject: Some(BoolValue { value: true }),
        cert: true,
        dns: true,
        uri: true,
        ..Default::default()
    });
    network_filter("envoy.filters.network.http_connection_manager", any(&hcm))
}

fn tls_version(p: TlsProtocol) -> i32 {
    (match p {
        TlsProtocol::TlsAuto => EnvoyTlsProtocol::TlsAuto,
        TlsProtocol::TlsV1_0 => EnvoyTlsProtocol::TlSv10,
        TlsProtocol::TlsV1_1 => EnvoyTlsProtocol::TlSv11,
        TlsProtocol::TlsV1_2 => EnvoyTlsProtocol::TlSv12,
        TlsProtocol::TlsV1_3 => EnvoyTlsProtocol::TlSv13,
    }) as i32
}

fn sds_config(name: String) -> SdsSecretConfig {
    SdsSecretConfig {
        name,
        sds_config: Some(ads_config_source()),
    }
}

fn file(path: &str) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(DataSourceSpecifier::Filename(path.to_string())),
        ..Default::default()
    })
}

/// The SDS name of a `credentialName` (`kubernetes://<name>`).
pub fn credential_resource_name(credential_name: &str) -> String {
    if credential_name.starts_with(KUBERNETES_SECRET_PREFIX) {
        credential_name.to_string()
    } else {
        format!("{KUBERNETES_SECRET_PREFIX}{credential_name}")
    }
}

/// istiod's `BuildListenerTLSContext` for SIMPLE and MUTUAL servers: the key pair from SDS
/// (`credentialName`) or from files, TLS 1.2 at least unless the server says otherwise, and
/// for MUTUAL the client CA (`<credentialName>-cacert` over SDS, or `caCertificates`).
fn downstream_tls(proxy: &Proxy, s: &GatewayServer, http: bool) -> Option<TransportSocket> {
    let tls: &ServerTlsSettings = s.server.tls.as_ref()?;
    let mutual = matches!(
        tls.mode,
        ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual
    );
    if !matches!(tls.mode, ServerTlsMode::Simple) && !mutual {
        // ISTIO_MUTUAL needs the mesh's own certificates (the security issue).
        tracing::debug!(node = %proxy.id, gateway = %s.gateway, mode = ?tls.mode, "TLS mode not served yet; server left without TLS");
        return None;
    }
    let mut common = CommonTlsContext {
        alpn_protocols: if http {
            ALPN_HTTP.iter().map(|s| s.to_string()).collect()
        } else {
            Vec::new()
        },
        tls_params: Some(TlsParameters {
            tls_minimum_protocol_version: if tls.min_protocol_version == TlsProtocol::TlsAuto {
                EnvoyTlsProtocol::TlSv12 as i32
            } else {
                tls_version(tls.min_protocol_version)
            },
            tls_maximum_protocol_version: tls_version(tls.max_protocol_version),
            cipher_suites: tls.cipher_suites.clone(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let validation = CertificateValidationContext {
        verify_certificate_spki: tls.verify_certificate_spki.clone(),
        verify_certificate_hash: tls.verify_certificate_hash.clone(),
        ..Default::default()
    };
    if !tls.credential_name.is_empty() {
        let name = credential_resource_name(&tls.credential_name);
        common
            .tls_certificate_sds_secret_configs
            .push(sds_config(name.clone()));
        if mutual {
            common.validation_context_type =
                Some(ValidationContextType::CombinedValidationContext(
                    CombinedCertificateValidationContext {
                        default_validation_context: Some(validation),
                        validation_context_sds_secret_config: Some(sds_config(format!(
                            "{name}{CA_SUFFIX}"
                        ))),
                        ..Default::default()
                    },
                ));
        }
    } else {
        common.tls_certificates.push(TlsCertificate {
            certificate_chain: file(&tls.server_certificate),
            private_key: file(&tls.private_key),
            ..Default::default()
        });
        if mutual {
            common.validation_context_type = Some(ValidationContextType::ValidationContext(
                CertificateValidationContext {
                    trusted_ca: file(&tls.ca_certificates),
                    ..validation
                },
            ));
        }
    }
    let context = DownstreamTlsContext {
        common_tls_context: Some(common),
        require_client_certificate: Some(BoolValue {
            value: tls.mode == ServerTlsMode::Mutual,
        }),
        ..Default::default()
    };
    Some(TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(TransportSocketConfigType::TypedConfig(any(&context))),
    })
}

/// PASSTHROUGH: one chain per `tls` match of a bound VirtualService that fits the server, its
/// SNI hosts as `server_names` (istiod's `buildGatewayNetworkFiltersFromTLSRoutes`).
fn passthrough_chains(proxy: &Proxy, push: &PushContext, s: &GatewayServer) -> Vec<FilterChain> {
    let mut out = Vec::new();
    let mut seen: BTreeSet<Vec<String>> = BTreeSet::new();
    for vs in virtual_services_for_gateway(proxy, push, &s.gateway) {
        if s.matching_hosts(vs).is_empty() {
            continue;
        }
        for tls in &vs.spec.tls {
            for m in &tls.r#match {
                let applies = (m.port == 0 || m.port == u32::from(s.server_port))
                    && (m.gateways.is_empty()
                        || names_gateway(&m.gateways, &vs.meta.namespace, &s.gateway));
                if !applies || !seen.insert(m.sni_hosts.clone()) {
                    continue;
                }
                if let Some(filter) = tcp_route_filter(push, vs, &tls.route, s.server_port) {
                    out.push(FilterChain {
                        filter_chain_match: sni_match(&m.sni_hosts),
                        filters: vec![filter],
                        ..Default::default()
                    });
                }
            }
        }
    }
    out
}

/// TCP servers: the first `tcp` rule of a bound VirtualService that fits the server.
fn tcp_filter(
    proxy: &Proxy,
    push: &PushContext,
    s: &GatewayServer,
) -> Option<envoy_types::pb::envoy::config::listener::v3::Filter> {
    for vs in virtual_services_for_gateway(proxy, push, &s.gateway) {
        if s.matching_hosts(vs).is_empty() {
            continue;
        }
        for tcp in &vs.spec.tcp {
            let applies = tcp.r#match.is_empty()
                || tcp.r#match.iter().any(|m| {
                    (m.port == 0 || m.port == u32::from(s.server_port))
                        && (m.gateways.is_empty()
                            || names_gateway(&m.gateways, &vs.meta.namespace, &s.gateway))
                });
            if applies {
                return tcp_route_filter(push, vs, &tcp.route, s.server_port);
            }
        }
    }
    None
}

/// The SDS secrets a router proxy may fetch: each `credentialName` of its servers, from a
/// Secret in the proxy's own namespace (a gateway never reads another namespace's keys), and
/// `<name>-cacert` for MUTUAL servers (a Secret of that name, else the CA in the Secret).
pub fn build_secrets(proxy: &Proxy, push: &PushContext) -> Vec<Secret> {
    let mut names = BTreeSet::new();
    for s in merged_servers(proxy, push) {
        let Some(tls) = &s.server.tls else { continue };
        if tls.credential_name.is_empty() {
            continue;
        }
        let name = credential_resource_name(&tls.credential_name);
        if matches!(
            tls.mode,
            ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual
        ) {
            names.insert(format!("{name}{CA_SUFFIX}"));
        }
        names.insert(name);
    }
    let store = &push.store.secrets;
    let lookup = |secret: &str| store.get(&format!("{}/{secret}", proxy.namespace));
    let inline = |bytes: &[u8]| {
        Some(DataSource {
            specifier: Some(DataSourceSpecifier::InlineBytes(bytes.to_vec())),
            ..Default::default()
        })
    };
    let mut out = Vec::new();
    for name in names {
        let secret = name.trim_start_matches(KUBERNETES_SECRET_PREFIX);
        if let Some(base) = secret.strip_suffix(CA_SUFFIX) {
            let ca = lookup(secret)
                .and_then(|c| c.ca_certificate.clone())
                .or_else(|| lookup(base).and_then(|c| c.ca_certificate.clone()));
            match ca {
                Some(ca) => out.push(Secret {
                    name,
                    r#type: Some(SecretType::ValidationContext(
                        CertificateValidationContext {
                            trusted_ca: inline(&ca),
                            ..Default::default()
                        },
                    )),
                }),
                None => {
                    tracing::warn!(node = %proxy.id, secret = %format!("{}/{base}", proxy.namespace), "MUTUAL gateway server: no ca.crt in the Secret and no {base}{CA_SUFFIX} Secret; add the CA")
                }
            }
            continue;
        }
        match lookup(secret).filter(|c| c.has_key_pair()) {
            Some(c) => out.push(Secret {
                name,
                r#type: Some(SecretType::TlsCertificate(TlsCertificate {
                    certificate_chain: inline(&c.certificate_chain),
                    private_key: inline(&c.private_key),
                    ..Default::default()
                })),
            }),
            None => {
                tracing::warn!(node = %proxy.id, secret = %format!("{}/{secret}", proxy.namespace), "gateway credentialName: no Secret with tls.crt and tls.key in the gateway's namespace; create it")
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::translate::PASSTHROUGH_CLUSTER;
    use crate::translate::testing::{Target, get, shop_config, shop_ingress, shop_sidecar};

    #[test]
    fn a_gateway_serves_its_hosts_and_nothing_else() {
        let g = shop_config(&shop_ingress());
        let answer = g.simulate(&get(8080, "shop.example.com", "/")).unwrap();
        assert_eq!(answer.route_config, "http.8080");
        assert_eq!(
            answer.target,
            Target::Cluster("outbound|80|v1|web.shop.svc.cluster.local".into())
        );
        assert!(g.simulate(&get(8080, "unknown.example.com", "/")).is_err());
        assert!(
            g.simulate(&get(8080, "web.shop.svc.cluster.local", "/"))
                .is_err(),
            "mesh hosts are not exposed by the gateway"
        );
    }

    #[test]
    fn https_redirect_answers_plain_text_with_a_redirect() {
        let g = shop_config(&shop_ingress());
        let answer = g.simulate(&get(8080, "secure.example.com", "/x")).unwrap();
        assert_eq!(answer.target, Target::Redirect);
    }

    #[test]
    fn a_gateways_virtual_service_does_not_reach_sidecars() {
        let g = shop_config(&shop_sidecar());
        let answer = g.simulate(&get(80, "shop.example.com", "/")).unwrap();
        assert_eq!(answer.target, Target::Cluster(PASSTHROUGH_CLUSTER.into()));
    }
}
