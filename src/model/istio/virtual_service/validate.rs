//! VirtualService validation, as istiod's `ValidateVirtualService`: routes, matches,
//! destinations and weights, redirects, direct responses, retries, rewrites, CORS, faults,
//! mirrors, header names and values. Reads the types of `virtual_service` and reports into
//! `Errors`; it builds nothing.

use super::*;

// ---------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------

/// What a route's validation needs to know about its VirtualService.
struct RouteContext<'a> {
    /// The VirtualService has no hosts: it is a delegate.
    delegate: bool,
    /// It is bound only to gateways (not to `mesh`).
    gateway_only: bool,
    hosts: &'a [String],
}

const MESH_GATEWAY: &str = "mesh";

/// The [`L4Match`] of a [`TlsMatchAttributes`] or an [`L4MatchAttributes`]:
/// the two types name these fields alike but share no type for them.
macro_rules! l4_match_of {
    ($m:expr) => {
        L4Match {
            destination_subnets: &$m.destination_subnets,
            port: $m.port,
            source_labels: &$m.source_labels,
            gateways: &$m.gateways,
        }
    };
}

impl VirtualService {
    /// Validates the spec as istiod does; empty means valid.
    pub fn validate(&self) -> Vec<ValidationError> {
        validate_spec(|path, errs| self.validate_at(path, errs))
    }

    /// Whether this is a delegate VirtualService (no hosts).
    pub fn is_delegate(&self) -> bool {
        self.hosts.is_empty()
    }

    /// Whether this applies only to gateways: it lists gateways, and none of
    /// them is `mesh`.
    pub fn is_gateway_only(&self) -> bool {
        !self.gateways.is_empty() && !self.gateways.iter().any(|g| g == MESH_GATEWAY)
    }

    fn validate_at(&self, path: &FieldPath, errs: &mut Errors) {
        if self.is_delegate() {
            if !self.gateways.is_empty() {
                errs.add(
                    &path.field("gateways"),
                    "delegate virtual service must have no gateways specified",
                );
            }
            if !self.tls.is_empty() {
                errs.add(
                    &path.field("tls"),
                    "delegate virtual service must have no tls route specified",
                );
            }
            if !self.tcp.is_empty() {
                errs.add(
                    &path.field("tcp"),
                    "delegate virtual service must have no tcp route specified",
                );
            }
        }
        validate_gateway_names(&self.gateways, &path.field("gateways"), errs);
        self.validate_hosts(path, errs);
        if self.http.is_empty() && self.tcp.is_empty() && self.tls.is_empty() {
            errs.add(
                &path.field("http"),
                "http, tcp or tls must be provided in virtual service",
            );
        }
        let ctx = RouteContext {
            delegate: self.is_delegate(),
            gateway_only: self.is_gateway_only(),
            hosts: &self.hosts,
        };
        for (i, route) in self.http.iter().enumerate() {
            route.validate_at(&path.field("http").index(i), errs, &ctx);
        }
        for (i, route) in self.tls.iter().enumerate() {
            route.validate_at(&path.field("tls").index(i), errs, &ctx);
        }
        for (i, route) in self.tcp.iter().enumerate() {
            route.validate_at(&path.field("tcp").index(i), errs);
        }
        validate_export_to(
            &self.export_to,
            ExportToOwner::Other,
            &path.field("exportTo"),
            errs,
        );
    }

    fn validate_hosts(&self, path: &FieldPath, errs: &mut Errors) {
        let gateway_only = self.is_gateway_only();
        let sni = self
            .tls
            .iter()
            .any(|t| t.r#match.iter().any(|m| !m.sni_hosts.is_empty()));
        let mut all_valid = true;
        for (i, host) in self.hosts.iter().enumerate() {
            let at = path.field("hosts").index(i);
            let result = if gateway_only {
                validate_gateway_bound_domain(sni, host)
            } else {
                validate_wildcard_domain(host)
            };
            match result {
                Err(message) if !is_ip_address(host) => {
                    errs.add(&at, message);
                    all_valid = false;
                }
                Err(_) => {}
                Ok(()) if !gateway_only && host == "*" => {
                    errs.add(
                        &at,
                        "wildcard host * is not allowed for virtual services bound to the mesh gateway",
                    );
                    all_valid = false;
                }
                Ok(()) => {}
            }
        }
        if !all_valid {
            return;
        }
        for (i, a) in self.hosts.iter().enumerate() {
            for (j, b) in self.hosts.iter().enumerate().skip(i + 1) {
                if Hostname::new(a).matches(b.as_str()) {
                    errs.add(
                        &path.field("hosts").index(j),
                        format!("duplicate hosts in virtual service: {a} & {b}"),
                    );
                }
            }
        }
    }
}

/// Host validation for gateway-bound VirtualServices, which may also use
/// the auto-generated SNI form `outbound_.<port>_.<subset>_.<host>`.
fn validate_gateway_bound_domain(sni: bool, domain: &str) -> Result<(), String> {
    if sni && domain.starts_with("outbound_") {
        let parts: Vec<&str> = domain.split('_').collect();
        let format = "outbound_.<PORT>_._.<HOSTNAME>";
        if parts.len() < 4 {
            return Err(format!(
                "domain name {domain} invalid, should follow '{format}' format"
            ));
        }
        let port = parts[1].trim_matches('.');
        let host = parts[3].trim_matches('.');
        if !port.bytes().any(|b| b.is_ascii_digit()) {
            return Err(format!(
                "domain name {domain:?} invalid (label {port:?} invalid). should follow {format} format"
            ));
        }
        if !host.bytes().any(|b| b.is_ascii_alphabetic()) {
            return Err(format!(
                "domain name {domain:?} invalid (label {host:?} invalid). should follow {format} format"
            ));
        }
        return Ok(());
    }
    validate_wildcard_domain(domain)
}

impl HttpRoute {
    fn validate_at(&self, path: &FieldPath, errs: &mut Errors, ctx: &RouteContext<'_>) {
        self.validate_conflicts(path, errs, ctx);
        for (i, m) in self.r#match.iter().enumerate() {
            m.validate_at(&path.field("match").index(i), errs, ctx);
        }
        if let Some(headers) = &self.headers {
            headers.validate_at(&path.field("headers"), errs);
        }
        if let Some(cors) = &self.cors_policy {
            cors.validate_at(&path.field("corsPolicy"), errs);
        }
        if let Some(fault) = &self.fault {
            fault.validate_at(&path.field("fault"), errs);
        }
        self.validate_mirroring(path, errs);
        if let Some(redirect) = &self.redirect {
            redirect.validate_at(&path.field("redirect"), errs);
        }
        if let Some(direct) = &self.direct_response {
            direct.validate_at(&path.field("directResponse"), errs);
        }
        if let Some(retries) = &self.retries {
            retries.validate_at(&path.field("retries"), errs);
        }
        if let Some(rewrite) = &self.rewrite {
            rewrite.validate_at(&path.field("rewrite"), errs);
        }
        self.validate_authority_rewrite(path, errs);
        validate_http_route_destinations(&self.route, &path.field("route"), errs);
        if let Some(timeout) = &self.timeout {
            errs.check(&path.field("timeout"), validate_duration(timeout));
        }
    }

    /// Exactly one way of answering: route, redirect, direct response, or
    /// (for a root route) delegate.
    fn validate_conflicts(&self, path: &FieldPath, errs: &mut Errors, ctx: &RouteContext<'_>) {
        if self.mirror.is_some() && !self.mirrors.is_empty() {
            errs.add(
                &path.field("mirrors"),
                "HTTP route cannot contain both mirror and mirrors",
            );
        }
        if ctx.delegate {
            if self.delegate.is_some() {
                errs.add(
                    &path.field("delegate"),
                    "delegate HTTP route cannot contain delegate",
                );
            }
        } else if self.delegate.is_some() {
            // A root route may only delegate.
            if self.redirect.is_some() {
                errs.add(
                    &path.field("redirect"),
                    format!("root HTTP route {} must not specify redirect", self.name),
                );
            }
            if !self.route.is_empty() {
                errs.add(
                    &path.field("route"),
                    format!("root HTTP route {} must not specify route", self.name),
                );
            }
            return;
        }
        // A redirect or a direct response answers alone: (conflicting, field, istiod's message).
        let (route, fault, rewrite) = (
            !self.route.is_empty(),
            self.fault.is_some(),
            self.rewrite.is_some(),
        );
        let conflicts: &[(bool, &str, &str)] = if self.redirect.is_some() {
            &[
                (
                    route,
                    "redirect",
                    "HTTP route cannot contain both route and redirect",
                ),
                (
                    fault,
                    "fault",
                    "HTTP route cannot contain both fault and redirect",
                ),
                (
                    rewrite,
                    "rewrite",
                    "HTTP route rule cannot contain both rewrite and redirect",
                ),
                (
                    self.direct_response.is_some(),
                    "directResponse",
                    "HTTP route rule cannot contain both direct_response and redirect",
                ),
            ]
        } else if self.direct_response.is_some() {
            &[
                (
                    route,
                    "directResponse",
                    "HTTP route cannot contain both route and direct_response",
                ),
                (
                    fault,
                    "fault",
                    "HTTP route cannot contain both fault and direct_response",
                ),
                (
                    rewrite,
                    "rewrite",
                    "HTTP route rule cannot contain both rewrite and direct_response",
                ),
            ]
        } else {
            if !route {
                errs.add(
                    &path.field("route"),
                    "HTTP route, redirect or direct_response is required",
                );
            }
            &[]
        };
        for (conflicting, field, message) in conflicts {
            if *conflicting {
                errs.add(&path.field(field), *message);
            }
        }
    }

    fn validate_mirroring(&self, path: &FieldPath, errs: &mut Errors) {
        if let Some(value) = self.mirror_percent
            && value > 100
        {
            errs.add(
                &path.field("mirrorPercent"),
                format!("mirror_percent must have a max value of 100 (it has {value})"),
            );
        }
        if let Some(p) = &self.mirror_percentage {
            errs.check(
                &path.field("mirrorPercentage"),
                validate_mirror_percentage(p),
            );
        }
        if let Some(mirror) = &self.mirror {
            mirror.validate_at(&path.field("mirror"), errs);
        }
        for (i, policy) in self.mirrors.iter().enumerate() {
            let at = path.field("mirrors").index(i);
            match &policy.destination {
                None => errs.add(
                    &at.field("destination"),
                    "destination is required for mirrors",
                ),
                Some(d) => d.validate_at(&at.field("destination"), errs),
            }
            if let Some(p) = &policy.percentage {
                errs.check(&at.field("percentage"), validate_mirror_percentage(p));
            }
        }
    }

    /// The authority may be rewritten in only one place.
    fn validate_authority_rewrite(&self, path: &FieldPath, errs: &mut Errors) {
        let mut current = self
            .rewrite
            .as_ref()
            .map(|r| r.authority.as_str())
            .unwrap_or_default();
        let Some(request) = self.headers.as_ref().and_then(|h| h.request.as_ref()) else {
            return;
        };
        let at = path.field("headers").field("request");
        let candidates = request
            .set
            .iter()
            .map(|kv| ("set", kv))
            .chain(request.add.iter().map(|kv| ("add", kv)));
        for (op, (name, value)) in candidates {
            if !is_authority_header(name) {
                continue;
            }
            if !current.is_empty() {
                errs.add(
                    &at.field(op).key(name),
                    format!(
                        "authority header cannot be set multiple times: have {current:?}, attempting to set {value:?}"
                    ),
                );
                return;
            }
            current = value;
        }
    }
}

fn validate_mirror_percentage(p: &Percent) -> Result<(), String> {
    if p.value > 100.0 {
        Err(format!(
            "mirror percentage must have a max value of 100 (it has {})",
            p.value
        ))
    } else if p.value < 0.0 || p.value.is_nan() {
        Err(format!(
            "mirror percentage must have a min value of 0 (it has {})",
            p.value
        ))
    } else {
        Ok(())
    }
}

impl HttpMatchRequest {
    fn validate_at(&self, path: &FieldPath, errs: &mut Errors, ctx: &RouteContext<'_>) {
        for (name, m) in &self.headers {
            let at = path.field("headers").key(name);
            self.validate_header_match_key(name, &at, errs, ctx);
            errs.check(&at, validate_string_match(m));
        }
        for (name, m) in &self.without_headers {
            let at = path.field("withoutHeaders").key(name);
            self.validate_header_match_key(name, &at, errs, ctx);
            // `*` is not a regex here: it means "present".
            if m.regex() != Some("*") {
                errs.check(&at, validate_string_match(m));
            }
        }
        // An empty URI prefix is allowed (it matches everything); the
        // other string matches need a non-empty prefix.
        if let Some(uri) = &self.uri {
            errs.check(&path.field("uri"), validate_string_match_regex(uri));
        }
        for (field, m) in [
            ("scheme", &self.scheme),
            ("method", &self.method),
            ("authority", &self.authority),
        ] {
            if let Some(m) = m {
                errs.check(&path.field(field), validate_string_match(m));
            }
        }
        for (name, m) in &self.query_params {
            errs.check(
                &path.field("queryParams").key(name),
                validate_string_match(m),
            );
        }
        if self.port != 0 {
            errs.check(&path.field("port"), validate_port(self.port));
        }
        validate_labels(&self.source_labels, &path.field("sourceLabels"), errs);
        validate_gateway_names(&self.gateways, &path.field("gateways"), errs);
        if !self.source_namespace.is_empty() && !is_dns1123_label(&self.source_namespace) {
            errs.add(
                &path.field("sourceNamespace"),
                format!("sourceNamespace match {} is invalid", self.source_namespace),
            );
        }
    }

    fn validate_header_match_key(
        &self,
        name: &str,
        at: &FieldPath,
        errs: &mut Errors,
        ctx: &RouteContext<'_>,
    ) {
        errs.check(at, validate_header_name_or_jwt_claim(name));
        if !ctx.gateway_only && is_jwt_claim_route(name) {
            errs.add(
                at,
                format!(
                    "JWT claim based routing (key: {name}) is only supported for gateway, found no gateways: {:?}",
                    self.gateways
                ),
            );
        }
    }
}

impl Headers {
    fn validate_at(&self, path: &FieldPath, errs: &mut Errors) {
        if let Some(request) = &self.request {
            request.validate_at(&path.field("request"), errs, true);
        }
        if let Some(response) = &self.response {
            response.validate_at(&path.field("response"), errs, false);
        }
    }
}

impl HeaderOperations {
    /// `request` allows setting the authority (`:authority`/`host`) with
    /// `set`/`add`; `response` does not.
    fn validate_at(&self, path: &FieldPath, errs: &mut Errors, request: bool) {
        for (op, map) in [("set", &self.set), ("add", &self.add)] {
            for (name, value) in map {
                let at = path.field(op).key(name);
                let name_check = if request {
                    validate_header_name_with_authority(name)
                } else {
                    validate_header_operation_name(name)
                };
                errs.check(&at, name_check);
                errs.check(&at, validate_header_value(value));
            }
        }
        for (i, name) in self.remove.iter().enumerate() {
            errs.check(
                &path.field("remove").index(i),
                validate_header_operation_name(name),
            );
        }
    }
}

impl Destination {
    pub(in crate::model::istio) fn validate_at(&self, path: &FieldPath, errs: &mut Errors) {
        let host = path.field("host");
        if self.host == "*" {
            errs.add(&host, format!("invalid destination host {}", self.host));
        } else {
            errs.check(&host, validate_wildcard_domain(&self.host));
        }
        if !self.subset.is_empty() {
            errs.check(&path.field("subset"), validate_subset_name(&self.subset));
        }
        if let Some(port) = &self.port {
            port.validate_at(&path.field("port"), errs);
        }
    }
}

/// Per-destination weights must not be negative, and several destinations must not all weigh
/// zero (istiod's rules). navarch also holds several destinations to the API's documented
/// contract that their weights sum to 100 (istiod 1.24 accepts other sums and treats weights
/// as relative): a split that does not add up is almost always a typo, and it is reported with
/// the field instead of silently skewing traffic. A single destination's weight is ignored.
fn validate_weights(weights: &[i32], path: &FieldPath, errs: &mut Errors) {
    for (i, weight) in weights.iter().enumerate() {
        if *weight < 0 {
            errs.add(
                &path.index(i).field("weight"),
                format!("weight {weight} < 0"),
            );
        }
    }
    let total: i64 = weights.iter().map(|w| i64::from(*w)).sum();
    if weights.len() > 1 && total == 0 {
        errs.add(path, "total destination weight = 0");
    } else if weights.len() > 1 && weights.iter().all(|w| *w >= 0) && total != 100 {
        errs.add(
            path,
            format!("total destination weight {total} != 100; make the weights of the destinations sum to 100"),
        );
    }
}

fn validate_required_destination(dest: Option<&Destination>, path: &FieldPath, errs: &mut Errors) {
    match dest {
        None => errs.add(path, "destination is required"),
        Some(d) => d.validate_at(path, errs),
    }
}

fn validate_http_route_destinations(
    routes: &[HttpRouteDestination],
    path: &FieldPath,
    errs: &mut Errors,
) {
    for (i, rd) in routes.iter().enumerate() {
        let at = path.index(i);
        validate_required_destination(rd.destination.as_ref(), &at.field("destination"), errs);
        if let Some(headers) = &rd.headers {
            headers.validate_at(&at.field("headers"), errs);
        }
    }
    let weights: Vec<i32> = routes.iter().map(|r| r.weight).collect();
    validate_weights(&weights, path, errs);
}

fn validate_route_destinations(routes: &[RouteDestination], path: &FieldPath, errs: &mut Errors) {
    for (i, rd) in routes.iter().enumerate() {
        validate_required_destination(
            rd.destination.as_ref(),
            &path.index(i).field("destination"),
            errs,
        );
    }
    let weights: Vec<i32> = routes.iter().map(|r| r.weight).collect();
    validate_weights(&weights, path, errs);
}

impl TlsRoute {
    fn validate_at(&self, path: &FieldPath, errs: &mut Errors, ctx: &RouteContext<'_>) {
        if self.r#match.is_empty() {
            errs.add(
                &path.field("match"),
                "TLS route must have at least one match condition",
            );
        }
        for (i, m) in self.r#match.iter().enumerate() {
            m.validate_at(&path.field("match").index(i), errs, ctx);
        }
        if self.route.is_empty() {
            errs.add(&path.field("route"), "TLS route is required");
        }
        validate_route_destinations(&self.route, &path.field("route"), errs);
    }
}

impl TlsMatchAttributes {
    fn validate_at(&self, path: &FieldPath, errs: &mut Errors, ctx: &RouteContext<'_>) {
        if self.sni_hosts.is_empty() {
            errs.add(
                &path.field("sniHosts"),
                "TLS match must have at least one SNI host",
            );
        }
        for (i, sni) in self.sni_hosts.iter().enumerate() {
            errs.check(
                &path.field("sniHosts").index(i),
                validate_sni_host(sni, ctx),
            );
        }
        l4_match_of!(self).validate_at(path, errs);
    }
}

/// An SNI host must be a valid (wildcard) domain covered by one of the
/// VirtualService's hosts. IP addresses are tolerated (istiod only warns).
fn validate_sni_host(sni: &str, ctx: &RouteContext<'_>) -> Result<(), String> {
    let syntax = if ctx.gateway_only {
        validate_gateway_bound_domain(true, sni)
    } else {
        validate_wildcard_domain(sni)
    };
    if let Err(message) = syntax {
        return if is_ip_address(sni) {
            Ok(())
        } else {
            Err(message)
        };
    }
    if ctx
        .hosts
        .iter()
        .any(|h| Hostname::new(sni).subset_of(h.as_str()))
    {
        Ok(())
    } else {
        Err(format!(
            "SNI host {sni:?} is not a compatible subset of any of the virtual service hosts: [{}]",
            ctx.hosts.join(", ")
        ))
    }
}

impl TcpRoute {
    fn validate_at(&self, path: &FieldPath, errs: &mut Errors) {
        for (i, m) in self.r#match.iter().enumerate() {
            m.validate_at(&path.field("match").index(i), errs);
        }
        if self.route.is_empty() {
            errs.add(&path.field("route"), "TCP route is required");
        }
        validate_route_destinations(&self.route, &path.field("route"), errs);
    }
}

impl L4MatchAttributes {
    fn validate_at(&self, path: &FieldPath, errs: &mut Errors) {
        l4_match_of!(self).validate_at(path, errs);
    }
}

/// The fields a TLS match shares with a TCP (L4) match, borrowed.
struct L4Match<'a> {
    destination_subnets: &'a [String],
    port: u32,
    source_labels: &'a BTreeMap<String, String>,
    gateways: &'a [String],
}

impl L4Match<'_> {
    fn validate_at(&self, path: &FieldPath, errs: &mut Errors) {
        for (i, subnet) in self.destination_subnets.iter().enumerate() {
            errs.check(
                &path.field("destinationSubnets").index(i),
                validate_ip_subnet(subnet),
            );
        }
        if self.port != 0 {
            errs.check(&path.field("port"), validate_port(self.port));
        }
        validate_labels(self.source_labels, &path.field("sourceLabels"), errs);
        validate_gateway_names(self.gateways, &path.field("gateways"), errs);
    }
}

impl HttpRedirect {
    fn validate_at(&self, path: &FieldPath, errs: &mut Errors) {
        if self.uri.is_empty()
            && self.authority.is_empty()
            && self.port.is_none()
            && self.derive_port.is_none()
            && self.scheme.is_empty()
        {
            errs.add(
                path,
                "redirect must specify URI, authority, scheme, or port",
            );
        }
        if self.port.is_some() && self.derive_port.is_some() {
            errs.add(
                &path.field("derivePort"),
                "only one of port or derivePort may be set",
            );
        }
        if self.redirect_code != 0 && !(300..=399).contains(&self.redirect_code) {
            errs.add(
                &path.field("redirectCode"),
                format!(
                    "{} is not a valid redirect code, must be 3xx",
                    self.redirect_code
                ),
            );
        }
        if !self.scheme.is_empty() && self.scheme != "http" && self.scheme != "https" {
            errs.add(
                &path.field("scheme"),
                r#"invalid redirect scheme, must be "http" or "https""#,
            );
        }
        if let Some(port) = self.port
            && port > 0
        {
            errs.check(&path.field("port"), validate_port(port));
        }
    }
}

/// Direct response bodies above this size are rejected.
const MAX_DIRECT_RESPONSE_BODY: usize = 1024 * 1024;

impl HttpDirectResponse {
    fn validate_at(&self, path: &FieldPath, errs: &mut Errors) {
        if let Some(body) = &self.body {
            body.validate_at(&path.field("body"), errs);
        }
        errs.check(
            &path.field("status"),
            validate_http_status(self.status.into()),
        );
    }
}

impl HttpBody {
    fn validate_at(&self, path: &FieldPath, errs: &mut Errors) {
        if self.string.is_some() && self.bytes.is_some() {
            errs.add(path, "only one of string or bytes may be set");
        }
        let size = match (&self.string, &self.bytes) {
            (Some(s), _) => s.len(),
            (None, Some(b)) => match decode_base64(b) {
                Some(decoded) => decoded.len(),
                None => {
                    errs.add(&path.field("bytes"), "bytes must be valid base64");
                    0
                }
            },
            (None, None) => 0,
        };
        if size > MAX_DIRECT_RESPONSE_BODY {
            errs.add(
                path,
                "large direct_responses may impact control plane performance, must be less than 1MB",
            );
        }
    }
}

fn validate_http_status(status: i64) -> Result<(), String> {
    if (200..=599).contains(&status) {
        Ok(())
    } else {
        Err(format!("HTTP status {status} is not in range 200-599"))
    }
}

impl HttpRetry {
    fn validate_at(&self, path: &FieldPath, errs: &mut Errors) {
        if self.attempts < 0 {
            errs.add(&path.field("attempts"), "attempts cannot be negative");
        }
        if self.attempts == 0
            && (self.per_try_timeout.is_some()
                || !self.retry_on.is_empty()
                || self.retry_remote_localities.is_some())
        {
            errs.add(
                &path.field("attempts"),
                "http retry policy configured when attempts are set to 0 (disabled)",
            );
        }
        if let Some(timeout) = &self.per_try_timeout {
            errs.check(&path.field("perTryTimeout"), validate_duration(timeout));
        }
        if !self.retry_on.is_empty() {
            for policy in self.retry_on.split(',') {
                let is_status = known_status_code(policy).is_some();
                if !is_status && !SUPPORTED_RETRY_ON_POLICIES.contains(&policy) {
                    errs.add(
                        &path.field("retryOn"),
                        format!("{policy:?} is not a valid retryOn policy"),
                    );
                }
            }
        }
    }
}

/// Envoy `x-envoy-retry-on` and `x-envoy-retry-grpc-on` conditions.
const SUPPORTED_RETRY_ON_POLICIES: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "envoy-ratelimited",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

impl HttpRewrite {
    fn validate_at(&self, path: &FieldPath, errs: &mut Errors) {
        if !self.uri.is_empty() && self.uri_regex_rewrite.is_some() {
            errs.add(
                path,
                "rewrite may only contain one of URI or UriRegexRewrite",
            );
        }
        if self.uri.is_empty() && self.uri_regex_rewrite.is_none() && self.authority.is_empty() {
            errs.add(
                path,
                "rewrite must specify at least one of URI, UriRegexRewrite, or authority. Only one of URI or UriRegexRewrite may be specified",
            );
        }
        if let Some(re) = &self.uri_regex_rewrite {
            let at = path.field("uriRegexRewrite");
            if re.r#match.is_empty() || re.rewrite.is_empty() {
                errs.add(
                    &at,
                    "UriRegexRewrite requires both Rewrite and Match fields to be specified",
                );
            } else {
                errs.check(&at.field("match"), validate_regex(&re.r#match));
            }
        }
    }
}

/// Methods accepted in `allowMethods`.
const SUPPORTED_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE",
];

impl CorsPolicy {
    fn validate_at(&self, path: &FieldPath, errs: &mut Errors) {
        for (i, origin) in self.allow_origins.iter().enumerate() {
            let at = path.field("allowOrigins").index(i);
            let value = match origin {
                StringMatch::Any => "",
                StringMatch::Exact(s) | StringMatch::Prefix(s) | StringMatch::Regex(s) => s,
            };
            if value.is_empty() {
                errs.add(&at, "'' is not a valid match type for CORS allow origins");
            } else {
                errs.check(&at, validate_string_match_regex(origin));
            }
        }
        for (i, method) in self.allow_methods.iter().enumerate() {
            if !SUPPORTED_METHODS.contains(&method.as_str()) {
                errs.add(
                    &path.field("allowMethods").index(i),
                    format!("{method:?} is not a supported HTTP method"),
                );
            }
        }
        for (field, names) in [
            ("allowHeaders", &self.allow_headers),
            ("exposeHeaders", &self.expose_headers),
        ] {
            for (i, name) in names.iter().enumerate() {
                errs.check(&path.field(field).index(i), validate_cors_header_name(name));
            }
        }
        if let Some(max_age) = &self.max_age {
            let at = path.field("maxAge");
            errs.check(&at, validate_duration(max_age));
            if max_age.as_std().subsec_nanos() > 0 {
                errs.add(
                    &at,
                    "max_age duration is accurate only to seconds precision",
                );
            }
        }
    }
}

/// gRPC status names accepted by `abort.grpcStatus`, in code order (`OK` = 0 …
/// `UNAUTHENTICATED` = 16).
pub const SUPPORTED_GRPC_STATUS: &[&str] = &[
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

impl HttpFaultInjection {
    fn validate_at(&self, path: &FieldPath, errs: &mut Errors) {
        if self.abort.is_none() && self.delay.is_none() {
            errs.add(
                path,
                "HTTP fault injection must have an abort and/or a delay",
            );
        }
        if let Some(abort) = &self.abort {
            abort.validate_at(&path.field("abort"), errs);
        }
        if let Some(delay) = &self.delay {
            delay.validate_at(&path.field("delay"), errs);
        }
    }
}

impl HttpFaultInjectionAbort {
    fn validate_at(&self, path: &FieldPath, errs: &mut Errors) {
        if let Some(p) = &self.percentage {
            errs.check(&path.field("percentage"), validate_percentage(p));
        }
        let set = [
            self.http_status.is_some(),
            self.grpc_status.is_some(),
            self.http2_error.is_some(),
        ]
        .iter()
        .filter(|s| **s)
        .count();
        if set > 1 {
            errs.add(
                path,
                "only one of httpStatus, grpcStatus or http2Error may be set",
            );
        }
        if let Some(status) = self.http_status {
            errs.check(
                &path.field("httpStatus"),
                validate_http_status(status.into()),
            );
        }
        if let Some(status) = &self.grpc_status
            && !SUPPORTED_GRPC_STATUS.contains(&status.as_str())
        {
            errs.add(
                &path.field("grpcStatus"),
                format!(
                    "gRPC status {status:?} is not supported. See https://github.com/grpc/grpc/blob/master/doc/statuscodes.md for a list of supported codes, for example 'NOT_FOUND'"
                ),
            );
        }
        if self.http2_error.is_some() {
            errs.add(
                &path.field("http2Error"),
                "HTTP/2 abort fault injection not supported yet",
            );
        }
    }
}

impl HttpFaultInjectionDelay {
    fn validate_at(&self, path: &FieldPath, errs: &mut Errors) {
        if let Some(p) = &self.percentage {
            errs.check(&path.field("percentage"), validate_percentage(p));
        }
        errs.check(&path.field("percent"), validate_percent(self.percent));
        if self.fixed_delay.is_some() && self.exponential_delay.is_some() {
            errs.add(
                path,
                "only one of fixedDelay or exponentialDelay may be set",
            );
        }
        if let Some(d) = &self.fixed_delay {
            errs.check(&path.field("fixedDelay"), validate_duration(d));
        }
        if let Some(d) = &self.exponential_delay {
            let at = path.field("exponentialDelay");
            errs.check(&at, validate_duration(d));
            errs.add(&at, "exponentialDelay not supported yet");
        }
    }
}

// ---------------------------------------------------------------------------
// Header name and value checks
// ---------------------------------------------------------------------------

/// Prefix of header-match keys that route on JWT claims.
const JWT_CLAIM_HEADER: &str = "@request.auth.claims";

/// `@request.auth.claims.<a>.<b>` or `@request.auth.claims[<a>][<b>]`.
fn is_jwt_claim_route(name: &str) -> bool {
    let Some(prefix) = name.get(..JWT_CLAIM_HEADER.len()) else {
        return false;
    };
    if !prefix.eq_ignore_ascii_case(JWT_CLAIM_HEADER) {
        return false;
    }
    let rest = &name[JWT_CLAIM_HEADER.len()..];
    (rest.starts_with('.') && rest.len() > 1)
        || (rest.starts_with('[') && rest.ends_with(']') && rest.len() > 2)
}

/// RFC 7230 `tchar`s: the characters allowed in a header name.
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

const PSEUDO_HEADERS: &[&str] = &[":method", ":scheme", ":authority", ":path", ":status"];

fn validate_header_name_or_jwt_claim(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("header name cannot be empty".to_owned());
    }
    if is_jwt_claim_route(name) || PSEUDO_HEADERS.contains(&name) || is_token(name) {
        Ok(())
    } else {
        Err(format!("header name {name} is not a valid header name"))
    }
}

fn validate_cors_header_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("header name cannot be empty".to_owned());
    }
    if name == "*" || is_token(name) {
        Ok(())
    } else {
        Err(format!("header name {name} is not a valid header name"))
    }
}

/// A request header that may be added or set; the authority is allowed.
fn validate_header_name_with_authority(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("header name cannot be empty".to_owned());
    }
    if is_internal_header(name) && !is_authority_header(name) {
        return Err(format!(
            r#"invalid header {name:?}: header cannot have ":" prefix"#
        ));
    }
    Ok(())
}

/// A header that may be removed, or a response header that may be changed.
fn validate_header_operation_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("header name cannot be empty".to_owned());
    }
    if name.eq_ignore_ascii_case("host") {
        return Err(format!("invalid header {name:?}: cannot set Host header"));
    }
    if is_internal_header(name) {
        return Err(format!(
            r#"invalid header {name:?}: header cannot have ":" prefix"#
        ));
    }
    Ok(())
}

/// A header value Envoy accepts: no control characters, and `%` only as
/// `%%` or around a well-formed `%VARIABLE%` / `%VARIABLE(args)%`.
pub(super) fn validate_header_value(value: &str) -> Result<(), String> {
    if value
        .bytes()
        .any(|b| matches!(b, 0x00..=0x08 | 0x0a..=0x1f | 0x7f))
    {
        return Err(format!("header value configuration {value} is invalid"));
    }
    check_header_variables(value).map_err(|e| format!("header value configuration: {e}"))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum VariableState {
    Literal,
    Name,
    ExpectArray,
    ExpectString,
    InString,
    ExpectDelimiterOrEnd,
    ExpectArgsEnd,
    ExpectVariableEnd,
}

/// Mirrors the checks of Envoy's header formatter parser.
fn check_header_variables(value: &str) -> Result<(), String> {
    use VariableState as S;
    let bytes = value.as_bytes();
    let mut state = S::Literal;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let next = bytes.get(i + 1).copied();
        state = match (state, c) {
            (S::Literal, b'%') => match next {
                None => return Err("invalid header configuration. Un-escaped %".to_owned()),
                Some(b'%') => {
                    i += 1;
                    S::Literal
                }
                Some(_) => S::Name,
            },
            (S::Literal, _) => S::Literal,
            (S::Name, b'%') => S::Literal,
            (S::Name, b'(') => S::ExpectArray,
            (S::Name, _) => S::Name,
            (S::ExpectArray, b'[') => S::ExpectString,
            (S::ExpectArray, b' ') => S::ExpectArray,
            (S::ExpectArray, _) => S::InString,
            (S::ExpectDelimiterOrEnd, b',') => S::ExpectString,
            (S::ExpectDelimiterOrEnd, b']') => S::ExpectArgsEnd,
            (S::ExpectDelimiterOrEnd, b' ') => S::ExpectDelimiterOrEnd,
            (S::ExpectDelimiterOrEnd, _) => {
                return Err(
                    "invalid header configuration. Expecting ',', ']', or whitespace".to_owned(),
                );
            }
            (S::ExpectString, b'"') => S::InString,
            (S::ExpectString, b' ') => S::ExpectString,
            (S::ExpectString, _) => {
                return Err("invalid header configuration. Expecting '\"'".to_owned());
            }
            (S::InString, b'\\') => {
                if next.is_none() {
                    return Err(
                        "invalid header configuration. Un-terminated backslash in JSON string"
                            .to_owned(),
                    );
                }
                i += 1;
                S::InString
            }
            (S::InString, b')') => S::ExpectVariableEnd,
            (S::InString, b'"') => S::ExpectDelimiterOrEnd,
            (S::InString, _) => S::InString,
            (S::ExpectArgsEnd, b')') => S::ExpectVariableEnd,
            (S::ExpectArgsEnd, b' ') => S::ExpectArgsEnd,
            (S::ExpectArgsEnd, _) => {
                return Err("invalid header configuration. Expecting ')' or whitespace".to_owned());
            }
            (S::ExpectVariableEnd, b'%') => S::Literal,
            (S::ExpectVariableEnd, b' ') => S::ExpectVariableEnd,
            (S::ExpectVariableEnd, _) => {
                return Err("invalid header configuration. Expecting '%' or whitespace".to_owned());
            }
        };
        i += 1;
    }
    if state == S::Literal {
        Ok(())
    } else {
        Err(format!(
            "invalid header configuration. Un-terminated variable expression '{value}'"
        ))
    }
}

/// Decodes protobuf-JSON `bytes`: standard or URL-safe base64, with or
/// without padding.
pub(super) fn decode_base64(input: &str) -> Option<Vec<u8>> {
    fn sextet(c: u8) -> Option<u32> {
        Some(u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        }))
    }
    let trimmed = input.trim_end_matches('=');
    let padding = input.len() - trimmed.len();
    if padding > 2 || (padding > 0 && !input.len().is_multiple_of(4)) || trimmed.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(trimmed.len() * 3 / 4);
    for chunk in trimmed.as_bytes().chunks(4) {
        let mut acc = 0u32;
        for &c in chunk {
            acc = (acc << 6) | sextet(c)?;
        }
        acc <<= 6 * (4 - chunk.len() as u32);
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}
