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
