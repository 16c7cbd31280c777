//! The message types `navarch analyze` reports, with istioctl's codes, levels and templates
//! (Istio's public list of analysis messages, as istiod 1.31-dev has it). One row per code
//! navarch analyzes; the templates keep Go's verbs (`%s`, `%q`, `%v`, `%d`), filled by
//! [`render`].

use serde::Serialize;

/// A message's level, as istioctl orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Level {
    Info,
    Warning,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Info => "Info",
            Level::Warning => "Warning",
            Level::Error => "Error",
        }
    }

    /// istioctl's `--output-threshold` / `--failure-threshold` words (case-insensitive).
    pub fn parse(word: &str) -> Option<Level> {
        match word.to_ascii_lowercase().as_str() {
            "info" => Some(Level::Info),
            "warning" | "warn" => Some(Level::Warning),
            "error" => Some(Level::Error),
            _ => None,
        }
    }
}

/// One kind of message: code, level and text template.
#[derive(Debug, PartialEq, Eq)]
pub struct MessageType {
    pub code: &'static str,
    pub name: &'static str,
    pub level: Level,
    pub template: &'static str,
}

pub const DEPRECATED: MessageType = MessageType {
    code: "IST0002",
    name: "Deprecated",
    level: Level::Warning,
    template: "Deprecated: %s",
};

pub const REFERENCED_RESOURCE_NOT_FOUND: MessageType = MessageType {
    code: "IST0101",
    name: "ReferencedResourceNotFound",
    level: Level::Error,
    template: "Referenced %s not found: %q",
};

pub const NAMESPACE_NOT_INJECTED: MessageType = MessageType {
    code: "IST0102",
    name: "NamespaceNotInjected",
    level: Level::Info,
    template: "The namespace is not enabled for Istio injection. Run 'kubectl label namespace %s istio-injection=enabled' to enable it, or 'kubectl label namespace %s istio-injection=disabled' to explicitly mark it as not needing injection.",
};

pub const SERVICE_ENTRY_ADDRESSES_REQUIRED: MessageType = MessageType {
    code: "IST0134",
    name: "ServiceEntryAddressesRequired",
    level: Level::Warning,
    template: "ServiceEntry addresses are required for this protocol.",
};

pub const SCHEMA_VALIDATION_ERROR: MessageType = MessageType {
    code: "IST0106",
    name: "SchemaValidationError",
    level: Level::Error,
    template: "Schema validation error: %v",
};

pub const CONFLICTING_MESH_GATEWAY_VIRTUAL_SERVICE_HOSTS: MessageType = MessageType {
    code: "IST0109",
    name: "ConflictingMeshGatewayVirtualServiceHosts",
    level: Level::Error,
    template: "The VirtualServices %s associated with mesh gateway define the same host %s which can lead to undefined behavior. This can be fixed by merging the conflicting VirtualServices into a single resource.",
};

pub const CONFLICTING_SIDECAR_WORKLOAD_SELECTORS: MessageType = MessageType {
    code: "IST0110",
    name: "ConflictingSidecarWorkloadSelectors",
    level: Level::Error,
    template: "The Sidecars %v in namespace %q select the same workload pod %q, which can lead to undefined behavior.",
};

pub const MULTIPLE_SIDECARS_WITHOUT_WORKLOAD_SELECTORS: MessageType = MessageType {
    code: "IST0111",
    name: "MultipleSidecarsWithoutWorkloadSelectors",
    level: Level::Error,
    template: "The Sidecars %v in namespace %q have no workload selector, which can lead to undefined behavior.",
};

pub const VIRTUAL_SERVICE_DESTINATION_PORT_SELECTOR_REQUIRED: MessageType = MessageType {
    code: "IST0112",
    name: "VirtualServiceDestinationPortSelectorRequired",
    level: Level::Error,
    template: "This VirtualService routes to a service %q that exposes multiple ports %v. Specifying a port in the destination is required to disambiguate.",
};

pub const PORT_NAME_IS_NOT_UNDER_NAMING_CONVENTION: MessageType = MessageType {
    code: "IST0118",
    name: "PortNameIsNotUnderNamingConvention",
    level: Level::Info,
    template: "Port name %s (port: %d, targetPort: %s) doesn't follow the naming convention of Istio port.",
};

pub const NO_SERVER_CERTIFICATE_VERIFICATION_DESTINATION_LEVEL: MessageType = MessageType {
    code: "IST0128",
    name: "NoServerCertificateVerificationDestinationLevel",
    level: Level::Warning,
    template: "DestinationRule %s in namespace %s has TLS mode set to %s but no caCertificates are set to validate server identity for host: %s",
};

pub const NO_SERVER_CERTIFICATE_VERIFICATION_PORT_LEVEL: MessageType = MessageType {
    code: "IST0129",
    name: "NoServerCertificateVerificationPortLevel",
    level: Level::Warning,
    template: "DestinationRule %s in namespace %s has TLS mode set to %s but no caCertificates are set to validate server identity for host: %s at port %s",
};

pub const VIRTUAL_SERVICE_UNREACHABLE_RULE: MessageType = MessageType {
    code: "IST0130",
    name: "VirtualServiceUnreachableRule",
    level: Level::Warning,
    template: "VirtualService rule %v not used (%s).",
};

pub const VIRTUAL_SERVICE_INEFFECTIVE_MATCH: MessageType = MessageType {
    code: "IST0131",
    name: "VirtualServiceIneffectiveMatch",
    level: Level::Info,
    template: "VirtualService rule %v match %v is not used (duplicate/overlapping match in rule %v).",
};

pub const VIRTUAL_SERVICE_HOST_NOT_FOUND_IN_GATEWAY: MessageType = MessageType {
    code: "IST0132",
    name: "VirtualServiceHostNotFoundInGateway",
    level: Level::Warning,
    template: "one or more host %v defined in VirtualService %s not found in Gateway %s.",
};

pub const ENVOY_FILTER_USES_REPLACE_OPERATION_INCORRECTLY: MessageType = MessageType {
    code: "IST0152",
    name: "EnvoyFilterUsesReplaceOperationIncorrectly",
    level: Level::Error,
    template: "The REPLACE operation is only valid for HTTP_FILTER and NETWORK_FILTER.",
};

pub const ENVOY_FILTER_USES_ADD_OPERATION_INCORRECTLY: MessageType = MessageType {
    code: "IST0153",
    name: "EnvoyFilterUsesAddOperationIncorrectly",
    level: Level::Error,
    template: "The ADD operation will be ignored when applyTo is set to ROUTE_CONFIGURATION, or HTTP_ROUTE.",
};

pub const ENVOY_FILTER_USES_REMOVE_OPERATION_INCORRECTLY: MessageType = MessageType {
    code: "IST0154",
    name: "EnvoyFilterUsesRemoveOperationIncorrectly",
    level: Level::Error,
    template: "The REMOVE operation will be ignored when applyTo is set to ROUTE_CONFIGURATION, or HTTP_ROUTE.",
};

pub const GATEWAY_PORT_NOT_DEFINED_ON_SERVICE: MessageType = MessageType {
    code: "IST0162",
    name: "GatewayPortNotDefinedOnService",
    level: Level::Warning,
    template: "The gateway is listening on a target port (port %d) that is not defined in the Service associated with its workload instances (Pod selector %s). If you need to access the gateway port through the gateway Service, it will not be available.",
};

/// `template` with Go's verbs filled from `args` in order: `%q` quotes (Go's `%q` of a
/// string), the others print the argument as it is; `%%` is a percent sign.
pub fn render(template: &str, args: &[String]) -> String {
    let mut out = String::with_capacity(template.len() + 16);
    let mut args = args.iter();
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some('q') => out.push_str(&format!("{:?}", args.next().map_or("", String::as_str))),
            Some(_) => out.push_str(args.next().map_or("", String::as_str)),
            None => out.push('%'),
        }
    }
    out
}

pub const POD_MISSING_PROXY: MessageType = MessageType {
    code: "IST0103",
    name: "PodMissingProxy",
    level: Level::Warning,
    template: "The pod %s is missing the Istio proxy. This can often be resolved by restarting or redeploying the workload.",
};

pub const MISPLACED_ANNOTATION: MessageType = MessageType {
    code: "IST0107",
    name: "MisplacedAnnotation",
    level: Level::Warning,
    template: "Misplaced annotation: %s can only be applied to %s",
};

pub const UNKNOWN_ANNOTATION: MessageType = MessageType {
    code: "IST0108",
    name: "UnknownAnnotation",
    level: Level::Warning,
    template: "Unknown annotation: %s",
};

pub const DEPLOYMENT_ASSOCIATED_TO_MULTIPLE_SERVICES: MessageType = MessageType {
    code: "IST0116",
    name: "DeploymentAssociatedToMultipleServices",
    level: Level::Warning,
    template: "This deployment %s is associated with multiple services using port %d but different protocols: %v",
};

pub const NAMESPACE_MULTIPLE_INJECTION_LABELS: MessageType = MessageType {
    code: "IST0123",
    name: "NamespaceMultipleInjectionLabels",
    level: Level::Warning,
    template: "The namespace has more than one type of injection labels %v, which may lead to undefined behavior. Make sure only one injection label exists.",
};

pub const INVALID_ANNOTATION: MessageType = MessageType {
    code: "IST0125",
    name: "InvalidAnnotation",
    level: Level::Warning,
    template: "Invalid annotation %s: %s",
};

pub const NO_MATCHING_WORKLOADS_FOUND: MessageType = MessageType {
    code: "IST0127",
    name: "NoMatchingWorkloadsFound",
    level: Level::Warning,
    template: "No matching workloads for this resource with the following labels: %s",
};

pub const DEPRECATED_ANNOTATION: MessageType = MessageType {
    code: "IST0135",
    name: "DeprecatedAnnotation",
    level: Level::Info,
    template: "Annotation %q has been deprecated%s and may not work in future Istio versions.",
};

pub const DEPLOYMENT_CONFLICTING_PORTS: MessageType = MessageType {
    code: "IST0137",
    name: "DeploymentConflictingPorts",
    level: Level::Warning,
    template: "This deployment %s is associated with multiple services %v using targetPort %q but different ports: %v.",
};

pub const GATEWAY_DUPLICATE_CERTIFICATE: MessageType = MessageType {
    code: "IST0138",
    name: "GatewayDuplicateCertificate",
    level: Level::Warning,
    template: "Duplicate certificate in multiple gateways %v may cause 404s if clients re-use HTTP2 connections.",
};

pub const INVALID_WEBHOOK: MessageType = MessageType {
    code: "IST0139",
    name: "InvalidWebhook",
    level: Level::Error,
    template: "%v",
};

pub const INGRESS_ROUTE_RULES_NOT_AFFECTED: MessageType = MessageType {
    code: "IST0140",
    name: "IngressRouteRulesNotAffected",
    level: Level::Warning,
    template: "Subset in virtual service %s has no effect on ingress gateway %s requests",
};

pub const INVALID_APPLICATION_UID: MessageType = MessageType {
    code: "IST0144",
    name: "InvalidApplicationUID",
    level: Level::Warning,
    template: "User ID (UID) 1337 is reserved for the sidecar proxy.",
};

pub const CONFLICTING_GATEWAYS: MessageType = MessageType {
    code: "IST0145",
    name: "ConflictingGateways",
    level: Level::Error,
    template: "Conflict with gateways %s (workload selector %s, port %s, hosts %v).",
};

pub const IMAGE_AUTO_WITHOUT_INJECTION_WARNING: MessageType = MessageType {
    code: "IST0146",
    name: "ImageAutoWithoutInjectionWarning",
    level: Level::Warning,
    template: "%s %s contains `image: auto` but does not match any Istio injection webhook selectors.",
};

pub const IMAGE_AUTO_WITHOUT_INJECTION_ERROR: MessageType = MessageType {
    code: "IST0147",
    name: "ImageAutoWithoutInjectionError",
    level: Level::Error,
    template: "%s %s contains `image: auto` but does not match any Istio injection webhook selectors.",
};

pub const NAMESPACE_INJECTION_ENABLED_BY_DEFAULT: MessageType = MessageType {
    code: "IST0148",
    name: "NamespaceInjectionEnabledByDefault",
    level: Level::Info,
    template: "is enabled for Istio injection, as Istio is installed with enableNamespacesByDefault as true.",
};

pub const JWT_CLAIM_BASED_ROUTING_WITHOUT_REQUEST_AUTH_N: MessageType = MessageType {
    code: "IST0149",
    name: "JwtClaimBasedRoutingWithoutRequestAuthN",
    level: Level::Error,
    template: "The virtual service uses the JWT claim based routing (key: %s) but found no request authentication for the gateway (%s) pod (%s). The request authentication must first be applied for the gateway pods to validate the JWT token and make the claims available for routing.",
};

pub const EXTERNAL_NAME_SERVICE_TYPE_INVALID_PORT_NAME: MessageType = MessageType {
    code: "IST0150",
    name: "ExternalNameServiceTypeInvalidPortName",
    level: Level::Warning,
    template: "Port name for ExternalName service is invalid. Proxy may prevent tcp named ports and unmatched traffic for ports serving TCP protocol from being forwarded correctly",
};

pub const ENVOY_FILTER_USES_RELATIVE_OPERATION: MessageType = MessageType {
    code: "IST0151",
    name: "EnvoyFilterUsesRelativeOperation",
    level: Level::Warning,
    template: "This EnvoyFilter does not have a priority and has a relative patch operation set which can cause the EnvoyFilter not to be applied. Using the INSERT_FIRST of ADD option or setting the priority may help in ensuring the EnvoyFilter is applied correctly.",
};

pub const ENVOY_FILTER_USES_RELATIVE_OPERATION_WITH_PROXY_VERSION: MessageType = MessageType {
    code: "IST0155",
    name: "EnvoyFilterUsesRelativeOperationWithProxyVersion",
    level: Level::Warning,
    template: "This EnvoyFilter does not have a priority and has a relative patch operation (NSTERT_BEFORE/AFTER, REPLACE, MERGE, DELETE) and proxyVersion set which can cause the EnvoyFilter not to be applied during an upgrade. Using the INSERT_FIRST or ADD option or setting the priority may help in ensuring the EnvoyFilter is applied correctly.",
};

pub const PODS_ISTIO_PROXY_IMAGE_MISMATCH_IN_NAMESPACE: MessageType = MessageType {
    code: "IST0158",
    name: "PodsIstioProxyImageMismatchInNamespace",
    level: Level::Warning,
    template: "The Istio proxy images of the pods running in the namespace do not match the image defined in the injection configuration (pod names: %v). This often happens after upgrading the Istio control-plane and can be fixed by redeploying the pods.",
};

pub const CONFLICTING_TELEMETRY_WORKLOAD_SELECTORS: MessageType = MessageType {
    code: "IST0159",
    name: "ConflictingTelemetryWorkloadSelectors",
    level: Level::Error,
    template: "The Telemetries %v in namespace %q select the same workload pod %q, which can lead to undefined behavior.",
};

pub const MULTIPLE_TELEMETRIES_WITHOUT_WORKLOAD_SELECTORS: MessageType = MessageType {
    code: "IST0160",
    name: "MultipleTelemetriesWithoutWorkloadSelectors",
    level: Level::Error,
    template: "The Telemetries %v in namespace %q have no workload selector, which can lead to undefined behavior.",
};

pub const INVALID_GATEWAY_CREDENTIAL: MessageType = MessageType {
    code: "IST0161",
    name: "InvalidGatewayCredential",
    level: Level::Error,
    template: "The credential referenced by the Gateway %s in namespace %s is invalid, which can cause the traffic not to work as expected.",
};

pub const INVALID_EXTERNAL_CONTROL_PLANE_CONFIG: MessageType = MessageType {
    code: "IST0163",
    name: "InvalidExternalControlPlaneConfig",
    level: Level::Warning,
    template: "The hostname (%s) that was provided for the webhook (%s) to reach the ingress gateway on the external control plane cluster %s. Traffic may not flow properly.",
};

pub const EXTERNAL_CONTROL_PLANE_ADDRESS_IS_NOT_A_HOSTNAME: MessageType = MessageType {
    code: "IST0164",
    name: "ExternalControlPlaneAddressIsNotAHostname",
    level: Level::Info,
    template: "The address (%s) that was provided for the webhook (%s) to reach the ingress gateway on the external control plane cluster is an IP address. This is not recommended for a production environment.",
};

pub const REFERENCED_INTERNAL_GATEWAY: MessageType = MessageType {
    code: "IST0165",
    name: "ReferencedInternalGateway",
    level: Level::Warning,
    template: "Gateway reference in VirtualService %s is to an implementation-generated internal Gateway: %s.",
};

pub const INEFFECTIVE_POLICY: MessageType = MessageType {
    code: "IST0167",
    name: "IneffectivePolicy",
    level: Level::Warning,
    template: "The policy has no impact: %s.",
};

pub const NEGATIVE_CONDITION_STATUS: MessageType = MessageType {
    code: "IST0171",
    name: "NegativeConditionStatus",
    level: Level::Warning,
    template: "A condition with a negative status is present: type=%s, reason=%s, message=%s.",
};

pub const DESTINATION_RULE_SUBSET_NOT_SELECT_PODS: MessageType = MessageType {
    code: "IST0173",
    name: "DestinationRuleSubsetNotSelectPods",
    level: Level::Error,
    template: "The Subset %s defined in the DestinationRule does not select any pods. Which may lead to 503 UH (NoHealthyUpstream).",
};

pub const UNKNOWN_DESTINATION_RULE_HOST: MessageType = MessageType {
    code: "IST0174",
    name: "UnknownDestinationRuleHost",
    level: Level::Warning,
    template: "The host %s defined in the DestinationRule does not match any services in the mesh.",
};

pub const JWKS_URI_FETCH_UNRESTRICTED: MessageType = MessageType {
    code: "IST0175",
    name: "JwksUriFetchUnrestricted",
    level: Level::Warning,
    template: "BLOCKED_CIDRS_IN_JWKS_URIS is not configured but %d RequestAuthentication resource(s) exist (%s). Consider configuring it to restrict JWKS URI fetches to trusted networks.",
};

pub const CONFLICTING_SERVICE_ENTRY_PROTOCOL: MessageType = MessageType {
    code: "IST0177",
    name: "ConflictingServiceEntryProtocol",
    level: Level::Warning,
    template: "Multiple ServiceEntries (%s) define the same host %q and port %d with conflicting protocols (%s).",
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_take_their_arguments_in_order_and_quote_q() {
        assert_eq!(
            render(
                REFERENCED_RESOURCE_NOT_FOUND.template,
                &["host+subset in destinationrule".into(), "httpbin+v3".into()]
            ),
            "Referenced host+subset in destinationrule not found: \"httpbin+v3\""
        );
        assert_eq!(render("100%% %d", &["7".into()]), "100% 7");
    }
}
