//! istioctl's annotation analyzer: Istio annotations (`*istio.io/...`, and
//! `kubernetes.io/ingress.class`) on Namespaces, Services, Pods and Deployments that Istio does
//! not know (IST0108), that are deprecated (IST0135), that belong on another kind (IST0107), or
//! whose value the injector refuses (IST0125, with the injector's own check,
//! [`crate::inject::validate_annotation`]).
//!
//! Owns the table of Istio's resource annotations (names, the kinds they apply to, whether
//! deprecated: Istio's public annotation reference); reads [`Objects`](super::objects::Objects).

use super::{Context, Message, messages};

/// One Istio resource annotation.
struct Annotation {
    name: &'static str,
    deprecated: bool,
    /// The kinds it applies to; `Any` applies everywhere.
    resources: &'static [&'static str],
}

/// Istio's resource annotations (its public annotation reference).
const ANNOTATIONS: &[Annotation] = &[
    Annotation {
        name: "alpha.istio.io/canonical-serviceaccounts",
        deprecated: true,
        resources: &["Service"],
    },
    Annotation {
        name: "alpha.istio.io/kubernetes-serviceaccounts",
        deprecated: true,
        resources: &["Service"],
    },
    Annotation {
        name: "ambient.istio.io/bypass-inbound-capture",
        deprecated: false,
        resources: &["Pod"],
    },
    Annotation {
        name: "ambient.istio.io/dns-capture",
        deprecated: false,
        resources: &["Pod"],
    },
    Annotation {
        name: "ambient.istio.io/redirection",
        deprecated: false,
        resources: &["Pod"],
    },
    Annotation {
        name: "ambient.istio.io/waypoint-inbound-binding",
        deprecated: false,
        resources: &["GatewayClass", "Gateway"],
    },
    Annotation {
        name: "galley.istio.io/analyze-suppress",
        deprecated: false,
        resources: &["Any"],
    },
    Annotation {
        name: "gateway.istio.io/controller-version",
        deprecated: false,
        resources: &["Any"],
    },
    Annotation {
        name: "gateway.istio.io/name-override",
        deprecated: false,
        resources: &["Gateway"],
    },
    Annotation {
        name: "gateway.istio.io/service-account",
        deprecated: false,
        resources: &["Gateway"],
    },
    Annotation {
        name: "inject.istio.io/templates",
        deprecated: false,
        resources: &["Pod"],
    },
    Annotation {
        name: "istio.io/autoRegistrationGroup",
        deprecated: false,
        resources: &["WorkloadEntry"],
    },
    Annotation {
        name: "istio.io/connectedAt",
        deprecated: false,
        resources: &["WorkloadEntry"],
    },
    Annotation {
        name: "istio.io/disconnectedAt",
        deprecated: false,
        resources: &["WorkloadEntry"],
    },
    Annotation {
        name: "istio.io/dry-run",
        deprecated: false,
        resources: &["AuthorizationPolicy"],
    },
    Annotation {
        name: "istio.io/reroute-virtual-interfaces",
        deprecated: false,
        resources: &["Pod"],
    },
    Annotation {
        name: "istio.io/rev",
        deprecated: false,
        resources: &["Pod"],
    },
    Annotation {
        name: "istio.io/use-waypoint-canary-weight",
        deprecated: false,
        resources: &["Service", "ServiceEntry", "Namespace"],
    },
    Annotation {
        name: "istio.io/workloadController",
        deprecated: false,
        resources: &["WorkloadEntry"],
    },
    Annotation {
        name: "kubernetes.io/ingress.class",
        deprecated: false,
        resources: &["Ingress"],
    },
    Annotation {
        name: "networking.istio.io/exportTo",
        deprecated: false,
        resources: &["Service"],
    },
    Annotation {
        name: "networking.istio.io/service-type",
        deprecated: false,
        resources: &["Gateway"],
    },
    Annotation {
        name: "networking.istio.io/traffic-distribution",
        deprecated: false,
        resources: &["Namespace", "Service", "ServiceEntry"],
    },
    Annotation {
        name: "prometheus.istio.io/merge-metrics",
        deprecated: false,
        resources: &["Pod"],
    },
    Annotation {
        name: "proxy.istio.io/config",
        deprecated: false,
        resources: &["Pod"],
    },
    Annotation {
        name: "proxy.istio.io/overrides",
        deprecated: false,
        resources: &["Pod"],
    },
    Annotation {
        name: "readiness.status.sidecar.istio.io/applicationPorts",
        deprecated: false,
        resources: &["Pod"],
    },
    Annotation {
        name: "readiness.status.sidecar.istio.io/failureThreshold",
        deprecated: false,
        resources: &["Pod"],
    },
    Annotation {
        name: "readiness.status.sidecar.istio.io/initialDelaySeconds",
        deprecated: false,
        resources: &["Pod"],
    },
    Annotation {
        name: "readiness.status.sidecar.istio.io/periodSeconds",
        deprecated: false,
        resources: &["Pod"],
    },
    Annotation {
        name: "sidecar.istio.io/agentLogLevel",
        deprecated: false,
        resources: &["Pod"],
    },
    Annotation {
        name: "sidecar.istio.io/bootstrapOverride",
        deprecated: false,
        resources: &["Pod"],
    },
    Annotation {
        name: "sidecar.istio.io/componentLogLevel",
        deprecated: false,
        resources: &["Pod"],
    },
    Annotation {
        name: "sidecar.istio.io/discoveryAddress",
        deprecated: true,
        resources: &["Pod"],
    },
    Annotation {
        name: "sidecar.istio.io/extraStatTags",
        deprecated: true,
        resources: &["Pod"],
    },
    Annotation {
        name: "sidecar.istio.io/inject",
        deprecated: true,
        resources: &["Pod"],
    },
    Annotation {
        name: "sidecar.istio.io/interceptionMode",
        deprecated: false,
        resources: &["Pod"],
    },
    Annotation {
        name: "sidecar.istio.io/logLevel",
        deprecated: false,
        resources: &["Pod"],
    },
    Annotation {
        name: "sidecar.istio.io/nativeSidecar",
        deprecated: false,
        resources: &["Pod"],
    },
    Annotation {
        name: "sidecar.istio.io/proxyCPU",
        deprecated: false,
        resources: &["Pod"],
    },
    Annotation {
        name: "sidecar.istio.io/proxyCPULimit",
        deprecated: false,
        resources: &["Pod"],
    },
    Annotation {
        name: "sidecar.istio.io/proxyImage",
        deprecated: false,
        resources: &["Pod"],
    },
    Annotation {
        name: "sidecar.istio.io/proxyImageType",
        deprecated: false,
        resources: &["Pod"],
    },
    Annotation {
        name: "sidecar.istio.io/proxyMemory",
        deprecated: false,
        resources: &["Pod"],
    },
    Annotation {
        name: "sidecar.istio.io/proxyMemoryLimit",
        deprecated: false,
        resources: &["Pod"],
    },
    Annotation {
        name: "sidecar.istio.io/rewriteAppHTTPProbers",
        deprecated: false,
        resources: &["Pod"],
    },
    Annotation {
        name: "sidecar.istio.io/statsCompression",
        deprecated: true,
        resources: &["Pod"],
    },
    Annotation {
        name: "sidecar.istio.io/statsEvictionInterval",
        deprecated: false,
        resources: &["Pod"],
    },
    Annotation {
        name: "sidecar.istio.io/statsFlushInterval",
        deprecated: false,
        resources: &["Pod"],
    },
    Annotation {
        name: "sidecar.istio.io/statsHistogramBins",
        deprecated: false,
        resources: &["Pod"],
    },
    Annotation {
        name: "sidecar.istio.io/statsHistogramBuckets",
        deprecated: false,
        resources: &["Pod"],
    },
    Annotation {
        name: "sidecar.istio.io/statsInclusionPrefixes",
        deprecated: true,
        resources: &["Pod"],
    },
    Annotation {
        name: "sidecar.istio.io/statsInclusionRegexps",
        deprecated: true,
        resources: &["Pod"],
    },
    Annotation {
        name: "sidecar.istio.io/statsInclusionSuffixes",
        deprecated: true,
        resources: &["Pod"],
    },
    Annotation {
        name: "sidecar.istio.io/status",
        deprecated: false,
        resources: &["Pod"],
    },
    Annotation {
        name: "sidecar.istio.io/userVolume",
        deprecated: false,
        resources: &["Pod"],
    },
    Annotation {
        name: "sidecar.istio.io/userVolumeMount",
        deprecated: false,
        resources: &["Pod"],
    },
    Annotation {
        name: "status.sidecar.istio.io/port",
        deprecated: false,
        resources: &["Pod"],
    },
    Annotation {
        name: "topology.istio.io/controlPlaneClusters",
        deprecated: false,
        resources: &["Namespace"],
    },
    Annotation {
        name: "traffic.istio.io/nodeSelector",
        deprecated: false,
        resources: &["Service"],
    },
    Annotation {
        name: "traffic.sidecar.istio.io/excludeInboundPorts",
        deprecated: false,
        resources: &["Pod"],
    },
    Annotation {
        name: "traffic.sidecar.istio.io/excludeInterfaces",
        deprecated: false,
        resources: &["Pod"],
    },
    Annotation {
        name: "traffic.sidecar.istio.io/excludeOutboundIPRanges",
        deprecated: false,
        resources: &["Pod"],
    },
    Annotation {
        name: "traffic.sidecar.istio.io/excludeOutboundPorts",
        deprecated: false,
        resources: &["Pod"],
    },
    Annotation {
        name: "traffic.sidecar.istio.io/includeInboundPorts",
        deprecated: false,
        resources: &["Pod"],
    },
    Annotation {
        name: "traffic.sidecar.istio.io/includeOutboundIPRanges",
        deprecated: false,
        resources: &["Pod"],
    },
    Annotation {
        name: "traffic.sidecar.istio.io/includeOutboundPorts",
        deprecated: false,
        resources: &["Pod"],
    },
    Annotation {
        name: "traffic.sidecar.istio.io/kubevirtInterfaces",
        deprecated: true,
        resources: &["Pod"],
    },
];

/// Set by istiod, its controllers or injection on their own: never reported.
const ALWAYS_IGNORED: [&str; 3] = [
    "sidecar.istio.io/status",
    "gateway.istio.io/controller-version",
    "istio.io/rev",
];

fn istio_annotation(name: &str) -> bool {
    name == "kubernetes.io/ingress.class"
        || name
            .split('/')
            .next()
            .is_some_and(|prefix| prefix.ends_with("istio.io"))
}

/// IST0108, IST0135, IST0107 and IST0125 for the annotations of Namespaces, Services, Pods
/// and Deployments.
pub fn annotations(cx: &Context, out: &mut Vec<Message>) {
    for raw in &cx.objects.all {
        let kind = raw.resource.kind.as_str();
        let core = raw.group().is_empty() && matches!(kind, "Namespace" | "Service" | "Pod");
        if !(core || raw.group() == "apps" && kind == "Deployment") {
            continue;
        }
        for (name, value) in &raw.annotations {
            if !istio_annotation(name) || ALWAYS_IGNORED.contains(&name.as_str()) {
                continue;
            }
            let Some(def) = ANNOTATIONS.iter().find(|a| a.name == name) else {
                out.push(cx.raw_message(&messages::UNKNOWN_ANNOTATION, raw, vec![name.clone()]));
                continue;
            };
            if def.deprecated {
                let inject = name == crate::inject::INJECT_KEY;
                // The annotation beside the label that replaces it is not reported.
                if !(inject && raw.labels.contains_key(crate::inject::INJECT_KEY)) {
                    let extra = if inject {
                        " in favor of the \"sidecar.istio.io/inject\" label"
                    } else {
                        ""
                    };
                    out.push(cx.raw_message(
                        &messages::DEPRECATED_ANNOTATION,
                        raw,
                        vec![name.clone(), extra.into()],
                    ));
                }
            }
            if def.resources.contains(&"Any") {
                continue;
            }
            if !def.resources.contains(&kind) {
                out.push(cx.raw_message(
                    &messages::MISPLACED_ANNOTATION,
                    raw,
                    vec![name.clone(), def.resources.join(", ")],
                ));
                continue;
            }
            if let Some(Err(problem)) = crate::inject::validate_annotation(name, value) {
                out.push(cx.raw_message(
                    &messages::INVALID_ANNOTATION,
                    raw,
                    vec![name.clone(), problem],
                ));
            }
        }
    }
}
