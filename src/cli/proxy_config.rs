//! `navarch proxy-config cluster|listener|route|endpoint|secret|bootstrap|all PROXY`: istioctl's
//! tables, filters and `-o json|yaml|short` over a proxy's config: what the control plane
//! serves it (`/debug/config_dump?proxyID=`), or with `--envoy-admin URL` what a live Envoy
//! holds (its `/config_dump`, and `/clusters?format=json` for endpoints). `--diff` compares the
//! two, resource by resource (beyond istioctl).
//!
//! The tables are pure functions of config-dump JSON ([`Dump`]); fetching and printing are
//! [`run`]'s.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};

#[derive(Debug, Args, Clone)]
pub struct ProxyConfigArgs {
    /// cluster, listener, route, endpoint, secret, bootstrap or all (istioctl's aliases too).
    #[arg(value_parser = ["cluster", "clusters", "c", "listener", "listeners", "l", "route", "routes", "r", "endpoint", "endpoints", "ep", "secret", "secrets", "s", "bootstrap", "b", "all"])]
    pub kind: String,
    /// The proxy: `pod.namespace` or its node id (as `navarch proxy-status` lists them).
    pub proxy: String,
    /// The control plane's debug URL.
    #[arg(long, env = "NAVARCH_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// Read a live Envoy's admin API instead (e.g. http://127.0.0.1:15000).
    #[arg(long = "envoy-admin", env = "NAVARCH_ENVOY_ADMIN")]
    pub envoy_admin: Option<String>,
    /// Compare what the control plane sent with what the Envoy at --envoy-admin runs.
    #[arg(long)]
    pub diff: bool,
    /// short (tables), json or yaml.
    #[arg(short = 'o', long, default_value = "short", value_parser = ["short", "json", "yaml"])]
    pub output: String,
    /// Clusters whose name contains this service FQDN.
    #[arg(long)]
    pub fqdn: Option<String>,
    /// Clusters (with this port), listeners and endpoints of this port.
    #[arg(long, default_value_t = 0)]
    pub port: u32,
    /// Clusters whose name contains this subset.
    #[arg(long)]
    pub subset: Option<String>,
    /// Clusters of this direction (inbound or outbound).
    #[arg(long)]
    pub direction: Option<String>,
    /// Listeners with this address; endpoints with this address.
    #[arg(long)]
    pub address: Option<String>,
    /// Listeners of this type (HTTP, TCP, HTTP+TCP).
    #[arg(long = "type")]
    pub listener_type: Option<String>,
    /// The route configuration with this name.
    #[arg(long)]
    pub name: Option<String>,
    /// Endpoints of this cluster.
    #[arg(long)]
    pub cluster: Option<String>,
    /// Endpoints with this health status (HEALTHY, UNHEALTHY, ...).
    #[arg(long)]
    pub status: Option<String>,
    /// Listener and route tables with their matches and destinations (istioctl's default).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub verbose: bool,
}

pub async fn run(args: ProxyConfigArgs) -> anyhow::Result<()> {
    let kind = canonical(&args.kind);
    if args.diff {
        let Some(admin) = &args.envoy_admin else {
            bail!(
                "--diff compares the control plane with a live Envoy: pass --envoy-admin URL too"
            );
        };
        let sent = Dump::from_server(&args.server, &args.proxy).await?;
        let live = Dump::from_envoy(admin).await?;
        let text = diff(&sent, &live, kind, &SENT_VS_RUNNING);
        if text.is_empty() {
            println!(
                "the Envoy at {admin} runs what {} sent {}",
                args.server, args.proxy
            );
        } else {
            print!("{text}");
        }
        return Ok(());
    }
    let dump = match &args.envoy_admin {
        Some(admin) => Dump::from_envoy(admin).await?,
        None => Dump::from_server(&args.server, &args.proxy).await?,
    };
    let filter = Filter::from(&args);
    if kind == "bootstrap" {
        let Some(bootstrap) = &dump.bootstrap else {
            bail!(
                "the control plane does not hold {}'s bootstrap (the proxy wrote it); read it from the Envoy: --envoy-admin URL",
                args.proxy
            );
        };
        return print_value(bootstrap, &args.output);
    }
    if args.output != "short" {
        let items = match kind {
            "cluster" => Value::Array(dump.clusters(&filter).into_iter().cloned().collect()),
            "listener" => Value::Array(dump.listeners(&filter).into_iter().cloned().collect()),
            "route" => Value::Array(dump.routes(&filter).into_iter().cloned().collect()),
            "secret" => Value::Array(dump.secret_rows().iter().map(SecretRow::to_json).collect()),
            "endpoint" => Value::Array(
                dump.endpoint_rows(&filter)
                    .iter()
                    .map(EndpointRow::to_json)
                    .collect(),
            ),
            _ => dump.raw.clone(),
        };
        return print_value(&items, &args.output);
    }
    let out = match kind {
        "cluster" => cluster_table(&dump, &filter, false),
        "listener" => listener_table(&dump, &filter, false),
        "route" => route_table(&dump, &filter, false),
        "endpoint" => endpoint_table(&dump, &filter, false),
        "secret" => secret_table(&dump, false),
        _ => [
            cluster_table(&dump, &filter, true),
            listener_table(&dump, &filter, true),
            route_table(&dump, &filter, true),
            endpoint_table(&dump, &filter, true),
            secret_table(&dump, true),
        ]
        .join("\n"),
    };
    print!("{out}");
    Ok(())
}

fn canonical(kind: &str) -> &'static str {
    match kind {
        "cluster" | "clusters" | "c" => "cluster",
        "listener" | "listeners" | "l" => "listener",
        "route" | "routes" | "r" => "route",
        "endpoint" | "endpoints" | "ep" => "endpoint",
        "secret" | "secrets" | "s" => "secret",
        "bootstrap" | "b" => "bootstrap",
        _ => "all",
    }
}

fn print_value(v: &Value, output: &str) -> anyhow::Result<()> {
    if output == "yaml" {
        print!("{}", serde_saphyr::to_string(v)?);
    } else {
        println!("{}", serde_json::to_string_pretty(v)?);
    }
    Ok(())
}

async fn get_json(url: &str, what: &str) -> anyhow::Result<Value> {
    let resp = reqwest::get(url)
        .await
        .with_context(|| format!("GET {url}: is {what} running there?"))?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp.text().await.unwrap_or_default();
        bail!("GET {url}: HTTP {status}: {}", body.trim());
    }
    resp.json()
        .await
        .with_context(|| format!("GET {url}: not JSON"))
}

/// One proxy's config dump, and (from a live Envoy) its `/clusters` host statuses.
#[derive(Debug, Clone, Default)]
pub struct Dump {
    pub raw: Value,
    pub bootstrap: Option<Value>,
    /// `(cluster, address, port, status, failed outlier check)` from a live Envoy.
    pub host_statuses: Option<Vec<EndpointRow>>,
}

/// One row of the endpoint table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct EndpointRow {
    pub address: String,
    pub port: u32,
    pub cluster: String,
    pub status: String,
    pub failed_outlier_check: bool,
}

impl EndpointRow {
    fn endpoint(&self) -> String {
        if self.port == 0 {
            self.address.clone()
        } else {
            format!("{}:{}", self.address, self.port)
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "cluster": self.cluster,
            "address": self.address,
            "port": self.port,
            "healthStatus": self.status,
            "failedOutlierCheck": self.failed_outlier_check,
        })
    }
}

impl Dump {
    pub async fn from_server(server: &str, proxy: &str) -> anyhow::Result<Dump> {
        let url = format!(
            "{}/debug/config_dump?proxyID={proxy}",
            server.trim_end_matches('/')
        );
        let raw = get_json(&url, "`navarch discovery` (pass --server URL)").await?;
        Ok(Dump::new(raw, None))
    }

    pub async fn from_envoy(admin: &str) -> anyhow::Result<Dump> {
        let admin = admin.trim_end_matches('/');
        let raw = get_json(
            &format!("{admin}/config_dump?include_eds"),
            "Envoy's admin API (pass --envoy-admin URL)",
        )
        .await?;
        let clusters = get_json(
            &format!("{admin}/clusters?format=json"),
            "Envoy's admin API",
        )
        .await?;
        Ok(Dump::new(raw, Some(&clusters)))
    }

    /// A dump from its JSON, with a live Envoy's `/clusters?format=json` when there is one.
    pub fn new(raw: Value, clusters: Option<&Value>) -> Dump {
        let bootstrap = section(&raw, "BootstrapConfigDump").map(|b| b["bootstrap"].clone());
        let host_statuses = clusters.map(|c| {
            c["cluster_statuses"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|cs| {
                    let cluster = cs["name"].as_str().unwrap_or_default().to_string();
                    cs["host_statuses"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(move |h| {
                            let sock = &h["address"]["socket_address"];
                            EndpointRow {
                                address: sock["address"]
                                    .as_str()
                                    .map(str::to_string)
                                    .or_else(|| {
                                        h["address"]["pipe"]["path"]
                                            .as_str()
                                            .map(|p| format!("unix://{p}"))
                                    })
                                    .unwrap_or_else(|| "unknown".into()),
                                port: sock["port_value"].as_u64().unwrap_or(0) as u32,
                                cluster: cluster.clone(),
                                status: h["health_status"]["eds_health_status"]
                                    .as_str()
                                    .unwrap_or("UNKNOWN")
                                    .to_string(),
                                failed_outlier_check: h["health_status"]["failed_outlier_check"]
                                    .as_bool()
                                    .unwrap_or(false),
                            }
                        })
                })
                .collect()
        });
        Dump {
            raw,
            bootstrap,
            host_statuses,
        }
    }

    fn all_clusters(&self) -> Vec<&Value> {
        self.resources(&CLUSTERS, true)
    }

    /// The clusters `filter` keeps, in istioctl's order (FQDN, subset, port, direction).
    pub fn clusters(&self, filter: &Filter) -> Vec<&Value> {
        let mut out: Vec<&Value> = self
            .all_clusters()
            .into_iter()
            .filter(|c| filter.keeps_cluster(name(c)))
            .collect();
        out.sort_by_key(|c| {
            let (direction, subset, fqdn, port) = subset_key(name(c));
            (fqdn, subset, port, direction)
        });
        out
    }

    fn all_listeners(&self) -> Vec<&Value> {
        self.resources(&LISTENERS, true)
    }

    /// The listeners `filter` keeps, by port, address, then type.
    pub fn listeners(&self, filter: &Filter) -> Vec<&Value> {
        let mut out: Vec<&Value> = self
            .all_listeners()
            .into_iter()
            .filter(|l| filter.keeps_listener(l))
            .collect();
        out.sort_by_key(|l| (listener_port(l), listener_address(l), listener_type(l)));
        out
    }

    fn all_routes(&self) -> Vec<&Value> {
        self.resources(&ROUTES, true)
    }

    /// The route configurations `filter` keeps; numbered ones (ports) in numeric order.
    pub fn routes(&self, filter: &Filter) -> Vec<&Value> {
        let mut out: Vec<&Value> = self
            .all_routes()
            .into_iter()
            .filter(|r| filter.name.as_deref().is_none_or(|n| n == name(r)))
            .collect();
        // istioctl's sort compares numbered names only; a stable sort by (not a number, the
        // number) keeps the others in dump order after the numbered ones' places.
        out.sort_by_key(|r| name(r).parse::<u64>().map_or((1, 0), |n| (0, n)));
        out
    }

    fn all_endpoint_configs(&self) -> Vec<&Value> {
        self.resources(&ENDPOINTS, true)
    }

    /// The resources of one kind: those Envoy got over xDS, and with `with_static` those of
    /// its bootstrap too.
    fn resources(&self, lists: &Lists, with_static: bool) -> Vec<&Value> {
        let s = section(&self.raw, lists.section);
        let from = |(list, path): (&'static str, &'static [&'static str])| {
            s.and_then(|s| s[list].as_array())
                .into_iter()
                .flatten()
                .map(move |e| path.iter().fold(e, |v, k| &v[*k]))
                .filter(|v| v.is_object())
        };
        let mut out: Vec<&Value> = from(lists.dynamic).collect();
        if with_static {
            out.extend(from(lists.fixed));
        }
        out
    }
    /// The endpoint rows: a live Envoy's host statuses, or the control plane's EDS (an
    /// endpoint without a health status is HEALTHY, as Envoy counts it).
    pub fn endpoint_rows(&self, filter: &Filter) -> Vec<EndpointRow> {
        let mut rows: Vec<EndpointRow> = match &self.host_statuses {
            Some(rows) => rows.clone(),
            None => self
                .all_endpoint_configs()
                .into_iter()
                .flat_map(|cla| {
                    let cluster = cla["cluster_name"].as_str().unwrap_or_default().to_string();
                    cla["endpoints"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .flat_map(|l| l["lb_endpoints"].as_array().into_iter().flatten())
                        .map(move |e| {
                            let sock = &e["endpoint"]["address"]["socket_address"];
                            EndpointRow {
                                address: sock["address"].as_str().unwrap_or("unknown").to_string(),
                                port: sock["port_value"].as_u64().unwrap_or(0) as u32,
                                cluster: cluster.clone(),
                                status: match e["health_status"].as_str() {
                                    None | Some("UNKNOWN") => "HEALTHY".to_string(),
                                    Some(s) => s.to_string(),
                                },
                                failed_outlier_check: false,
                            }
                        })
                })
                .collect(),
        };
        rows.retain(|r| filter.keeps_endpoint(r));
        rows.sort_by(|a, b| {
            (&a.address, a.port, &a.cluster).cmp(&(&b.address, b.port, &b.cluster))
        });
        rows
    }
}

/// One row of the secret table (istioctl's `SecretItem`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRow {
    pub name: String,
    pub kind: String,
    pub state: String,
    pub valid: bool,
    pub serial: String,
    pub not_after: String,
    pub not_before: String,
}

impl SecretRow {
    fn to_json(&self) -> Value {
        json!({
            "resource_name": self.name,
            "type": self.kind,
            "state": self.state,
            "cert_valid": self.valid,
            "serial_number": self.serial,
            "not_after": self.not_after,
            "not_before": self.not_before,
        })
    }
}

impl Dump {
    /// The dump's SDS secrets, active then warming, each described by its first certificate
    /// (the chain's leaf, or the trusted CA).
    pub fn secret_rows(&self) -> Vec<SecretRow> {
        use base64::Engine as _;
        let s = section(&self.raw, "SecretsConfigDump");
        let mut out = Vec::new();
        for (list, state) in [
            ("dynamic_active_secrets", "ACTIVE"),
            ("dynamic_warming_secrets", "WARMING"),
        ] {
            for entry in s.and_then(|s| s[list].as_array()).into_iter().flatten() {
                let secret = &entry["secret"];
                let bytes = secret["tls_certificate"]["certificate_chain"]["inline_bytes"]
                    .as_str()
                    .or_else(|| secret["validation_context"]["trusted_ca"]["inline_bytes"].as_str())
                    .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok());
                let mut row = SecretRow {
                    name: entry["name"].as_str().unwrap_or_default().to_string(),
                    kind: String::new(),
                    state: state.to_string(),
                    valid: false,
                    serial: String::new(),
                    not_after: String::new(),
                    not_before: String::new(),
                };
                if let Some((_, pem)) = bytes
                    .as_deref()
                    .and_then(|b| x509_parser::pem::parse_x509_pem(b).ok())
                    && let Ok(cert) = pem.parse_x509()
                {
                    let rfc3339 = |t: x509_parser::time::ASN1Time| {
                        t.to_datetime()
                            .format(&time::format_description::well_known::Rfc3339)
                            .unwrap_or_default()
                    };
                    let validity = cert.validity();
                    row.kind = if cert.is_ca() { "CA" } else { "Cert Chain" }.into();
                    row.valid = validity.is_valid();
                    row.serial = format!("{:032x}", cert.tbs_certificate.serial);
                    row.not_after = rfc3339(validity.not_after);
                    row.not_before = rfc3339(validity.not_before);
                }
                out.push(row);
            }
        }
        out
    }
}

fn secret_table(dump: &Dump, with_name: bool) -> String {
    let rows = dump.secret_rows();
    if rows.is_empty() {
        return "No secret items to show.\n".into();
    }
    let mut table = vec![
        [
            "RESOURCE NAME",
            "TYPE",
            "STATUS",
            "VALID CERT",
            "SERIAL NUMBER",
            "NOT AFTER",
            "NOT BEFORE",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>(),
    ];
    for r in rows {
        let name = if with_name {
            format!("secret/{}", r.name)
        } else {
            r.name
        };
        table.push(vec![
            name,
            r.kind,
            r.state,
            r.valid.to_string(),
            r.serial,
            r.not_after,
            r.not_before,
        ]);
    }
    tabwrite(&table)
}

/// Where one kind's resources stand in a config dump: its section, then for the dynamic and
/// the static list the path from an entry to the resource.
struct Lists {
    section: &'static str,
    dynamic: (&'static str, &'static [&'static str]),
    fixed: (&'static str, &'static [&'static str]),
}

const CLUSTERS: Lists = Lists {
    section: "ClustersConfigDump",
    dynamic: ("dynamic_active_clusters", &["cluster"]),
    fixed: ("static_clusters", &["cluster"]),
};
const LISTENERS: Lists = Lists {
    section: "ListenersConfigDump",
    dynamic: ("dynamic_listeners", &["active_state", "listener"]),
    fixed: ("static_listeners", &["listener"]),
};
const ROUTES: Lists = Lists {
    section: "RoutesConfigDump",
    dynamic: ("dynamic_route_configs", &["route_config"]),
    fixed: ("static_route_configs", &["route_config"]),
};
const ENDPOINTS: Lists = Lists {
    section: "EndpointsConfigDump",
    dynamic: ("dynamic_endpoint_configs", &["endpoint_config"]),
    fixed: ("static_endpoint_configs", &["endpoint_config"]),
};

/// The config dump section whose `@type` is `envoy.admin.v3.<kind>`.
fn section<'a>(raw: &'a Value, kind: &str) -> Option<&'a Value> {
    raw["configs"].as_array()?.iter().find(|c| {
        c["@type"]
            .as_str()
            .is_some_and(|t| t.rsplit('.').next() == Some(kind))
    })
}

fn name(v: &Value) -> &str {
    v["name"].as_str().unwrap_or_default()
}

/// istioctl's filters.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub fqdn: Option<String>,
    pub port: u32,
    pub subset: Option<String>,
    pub direction: Option<String>,
    pub address: Option<String>,
    pub listener_type: Option<String>,
    pub name: Option<String>,
    pub cluster: Option<String>,
    pub status: Option<String>,
    pub verbose: bool,
}

impl From<&ProxyConfigArgs> for Filter {
    fn from(a: &ProxyConfigArgs) -> Filter {
        Filter {
            fqdn: a.fqdn.clone(),
            port: a.port,
            subset: a.subset.clone(),
            direction: a.direction.clone(),
            address: a.address.clone(),
            listener_type: a.listener_type.clone(),
            name: a.name.clone(),
            cluster: a.cluster.clone(),
            status: a.status.clone(),
            verbose: a.verbose,
        }
    }
}

impl Filter {
    /// Substring matches on the cluster name, as istioctl's.
    fn keeps_cluster(&self, name: &str) -> bool {
        self.fqdn.as_deref().is_none_or(|f| name.contains(f))
            && self.direction.as_deref().is_none_or(|d| name.contains(d))
            && self.subset.as_deref().is_none_or(|s| name.contains(s))
            && (self.port == 0 || name.contains(&format!("|{}|", self.port)))
    }

    fn keeps_listener(&self, l: &Value) -> bool {
        self.address.as_deref().is_none_or(|a| {
            listener_addresses(l)
                .iter()
                .any(|x| x.eq_ignore_ascii_case(a))
        }) && (self.port == 0 || listener_port(l) == self.port)
            && self
                .listener_type
                .as_deref()
                .is_none_or(|t| listener_type(l).eq_ignore_ascii_case(t))
    }

    fn keeps_endpoint(&self, r: &EndpointRow) -> bool {
        self.address
            .as_deref()
            .is_none_or(|a| r.address.eq_ignore_ascii_case(a))
            && (self.port == 0 || r.port == self.port)
            && self
                .cluster
                .as_deref()
                .is_none_or(|c| r.cluster.eq_ignore_ascii_case(c))
            && self
                .status
                .as_deref()
                .is_none_or(|s| r.status.eq_ignore_ascii_case(s))
    }
}

/// `direction|port|subset|fqdn` → (direction, subset, fqdn, port); other names are the FQDN.
fn subset_key(name: &str) -> (String, String, String, u32) {
    let parts: Vec<&str> = name.split('|').collect();
    if parts.len() > 3 {
        (
            parts[0].to_string(),
            parts[2].to_string(),
            parts[3].to_string(),
            parts[1].parse().unwrap_or(0),
        )
    } else {
        (String::new(), String::new(), name.to_string(), 0)
    }
}

/// `/apis/networking.istio.io/v1/namespaces/<ns>/<kind>/<name>` in a resource's
/// `metadata.filter_metadata.istio.config` as `name.namespace` (istioctl's management column).
fn management(v: &Value) -> String {
    let Some(path) = v["metadata"]["filter_metadata"]["istio"]["config"].as_str() else {
        return String::new();
    };
    let pieces: Vec<&str> = path.split('/').collect();
    if path.starts_with("/apis/networking.istio.io/") {
        if pieces.len() != 8 {
            return String::new();
        }
        return format!("{}.{}", pieces[7], pieces[5]);
    }
    "<unknown>".into()
}

/// Go's `tabwriter` with istioctl's settings (min width 0, tab width 8, padding 5, spaces):
/// each column as wide as its widest cell plus 5; the last column unpadded.
fn tabwrite(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0; columns];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i + 1 < r.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i + 1 < r.len() {
                line.push_str(&format!("{c:<w$}", w = widths[i] + 5));
            } else {
                line.push_str(c);
            }
        }
        out.push_str(line.trim_end_matches(' '));
        out.push('\n');
    }
    out
}

fn cluster_table(dump: &Dump, filter: &Filter, with_name: bool) -> String {
    let mut rows = vec![];
    let header = [
        "SERVICE FQDN",
        "PORT",
        "SUBSET",
        "DIRECTION",
        "TYPE",
        "DESTINATION RULE",
    ];
    let mut h: Vec<String> = header.iter().map(|s| s.to_string()).collect();
    if with_name {
        h.insert(0, "NAME".into());
    }
    rows.push(h);
    for c in dump.clusters(filter) {
        let n = name(c);
        // Proto JSON leaves out the default, STATIC.
        let kind = c["type"].as_str().unwrap_or("STATIC").to_string();
        let mut row = if n.split('|').count() > 3 {
            let (direction, subset, fqdn, port) = subset_key(n);
            let subset = if subset.is_empty() {
                "-".into()
            } else {
                subset
            };
            vec![
                fqdn,
                port.to_string(),
                subset,
                direction,
                kind,
                management(c),
            ]
        } else {
            vec![
                n.to_string(),
                "-".into(),
                "-".into(),
                "-".into(),
                kind,
                management(c),
            ]
        };
        if with_name {
            row.insert(0, format!("cluster/{n}"));
        }
        rows.push(row);
    }
    tabwrite(&rows)
}

fn listener_addresses(l: &Value) -> Vec<String> {
    let mut out = vec![listener_address(l)];
    out.extend(
        l["additional_addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a["address"]["socket_address"]["address"].as_str())
            .map(str::to_string),
    );
    out
}

fn listener_address(l: &Value) -> String {
    l["address"]["socket_address"]["address"]
        .as_str()
        .or_else(|| l["address"]["pipe"]["path"].as_str())
        .unwrap_or_default()
        .to_string()
}

fn listener_port(l: &Value) -> u32 {
    l["address"]["socket_address"]["port_value"]
        .as_u64()
        .unwrap_or(0) as u32
}

fn filter_chains(l: &Value) -> Vec<&Value> {
    let mut out: Vec<&Value> = l["filter_chains"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    if l["default_filter_chain"].is_object() {
        out.push(&l["default_filter_chain"]);
    }
    out
}

const HCM: &str = "envoy.filters.network.http_connection_manager";
const TCP_PROXY: &str = "envoy.filters.network.tcp_proxy";

fn listener_type(l: &Value) -> String {
    let (mut http, mut tcp) = (0, 0);
    for chain in filter_chains(l) {
        for f in chain["filters"].as_array().into_iter().flatten() {
            match f["name"].as_str() {
                Some(HCM) => http += 1,
                Some(TCP_PROXY) if !blackhole(f) => tcp += 1,
                _ => {}
            }
        }
    }
    match (http > 0, tcp > 0) {
        (true, false) => "HTTP",
        (true, true) => "HTTP+TCP",
        (false, true) => "TCP",
        (false, false) => "UNKNOWN",
    }
    .into()
}

fn blackhole(tcp_proxy: &Value) -> bool {
    tcp_proxy["typed_config"]
        .to_string()
        .contains("BlackHoleCluster")
}

/// istioctl's description of a filter chain match.
fn chain_match(m: &Value) -> String {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect()
    };
    let mut descrs = vec![];
    let sni = strings(&m["server_names"]);
    if !sni.is_empty() {
        descrs.push(format!("SNI: {}", sni.join(",")));
    }
    if let Some(t) = m["transport_protocol"].as_str().filter(|t| !t.is_empty()) {
        descrs.push(format!("Trans: {t}"));
    }
    let alpn = strings(&m["application_protocols"]);
    if !alpn.is_empty() {
        let known: [(&str, &[&str]); 4] = [
            (
                "App: HTTP TLS",
                &[
                    "http/1.0",
                    "http/1.1",
                    "h2c",
                    "istio-http/1.0",
                    "istio-http/1.1",
                    "istio-h2",
                ],
            ),
            (
                "App: Istio HTTP Plain",
                &["istio", "istio-http/1.0", "istio-http/1.1", "istio-h2"],
            ),
            ("App: TCP TLS", &["istio-peer-exchange", "istio"]),
            ("App: HTTP", &["http/1.0", "http/1.1", "h2c"]),
        ];
        match known.iter().find(|(_, p)| *p == alpn.as_slice()) {
            Some((d, _)) => descrs.push(d.to_string()),
            None => descrs.push(format!("App: {}", alpn.join(","))),
        }
    }
    let port = m["destination_port"]
        .as_u64()
        .map(|p| format!(":{p}"))
        .unwrap_or_default();
    let prefixes: Vec<String> = m["prefix_ranges"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            format!(
                "{}/{}",
                p["address_prefix"].as_str().unwrap_or_default(),
                p["prefix_len"].as_u64().unwrap_or(0)
            )
        })
        .collect();
    if !prefixes.is_empty() {
        descrs.push(format!("Addr: {}{port}", prefixes.join(",")));
    } else if !port.is_empty() {
        descrs.push(format!("Addr: *{port}"));
    }
    if descrs.is_empty() {
        "ALL".into()
    } else {
        descrs.join("; ")
    }
}

/// istioctl's description of where a chain's traffic goes.
fn chain_destination(chain: &Value) -> String {
    for f in chain["filters"].as_array().into_iter().flatten() {
        let config = &f["typed_config"];
        match f["name"].as_str() {
            Some(HCM) => {
                if config["route_config"].is_object() {
                    return describe_route_config(&config["route_config"]);
                }
                if let Some(rds) = config["rds"]["route_config_name"]
                    .as_str()
                    .filter(|n| !n.is_empty())
                {
                    return format!("Route: {rds}");
                }
                return "HTTP".into();
            }
            Some(TCP_PROXY) if !blackhole(f) => {
                let cluster = config["cluster"].as_str().unwrap_or_default();
                return if cluster.contains("Cluster") {
                    cluster.to_string()
                } else {
                    format!("Cluster: {cluster}")
                };
            }
            _ => {}
        }
    }
    "Non-HTTP/Non-TCP".into()
}

fn describe_route_config(rc: &Value) -> String {
    let vhosts: Vec<&Value> = rc["virtual_hosts"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    if let [vh] = vhosts.as_slice()
        && vh["domains"] == json!(["*"])
        && let Some([r]) = vh["routes"].as_array().map(Vec::as_slice)
        && r["match"]["prefix"] == "/"
        && let Some(cluster) = r["route"]["cluster"].as_str()
    {
        return if cluster.contains("Cluster") {
            cluster.to_string()
        } else {
            format!("Cluster: {cluster}")
        };
    }
    let described: Vec<String> = vhosts
        .iter()
        .map(|vh| {
            let routes: Vec<String> = vh["routes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| describe_match(&r["match"]))
                .collect();
            let domains = if vh["domains"] == json!(["*"]) {
                String::new()
            } else {
                vh["domains"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join("/")
            };
            if domains.is_empty() {
                routes.join(", ")
            } else {
                format!("{domains} {}", routes.join(", "))
            }
        })
        .collect();
    format!("Inline Route: {}", described.join("; "))
}

fn describe_match(m: &Value) -> String {
    let mut conds = vec![];
    if let Some(p) = m["prefix"].as_str().filter(|p| !p.is_empty()) {
        conds.push(format!("{p}*"));
    }
    if let Some(p) = m["path_separated_prefix"]
        .as_str()
        .filter(|p| !p.is_empty())
    {
        conds.push(format!("PathPrefix:{p}"));
    }
    if let Some(p) = m["path"].as_str().filter(|p| !p.is_empty()) {
        conds.push(p.to_string());
    }
    if let Some(r) = m["safe_regex"]["regex"].as_str() {
        conds.push(format!("regex {r}"));
    }
    conds.join(" ")
}

fn listener_table(dump: &Dump, filter: &Filter, with_name: bool) -> String {
    let mut header: Vec<String> = ["ADDRESSES", "PORT"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    if with_name {
        header.insert(0, "NAME".into());
    }
    if filter.verbose {
        header.extend(["MATCH".into(), "DESTINATION".into()]);
    } else {
        header.push("TYPE".into());
    }
    let mut rows = vec![header];
    for l in dump.listeners(filter) {
        let addresses = listener_addresses(l).join(",");
        let port = listener_port(l).to_string();
        let prefix = |mut row: Vec<String>| {
            if with_name {
                row.insert(0, format!("listener/{}", name(l)));
            }
            row
        };
        if filter.verbose {
            let mut matches: Vec<(String, String)> = filter_chains(l)
                .into_iter()
                .map(|c| (chain_match(&c["filter_chain_match"]), chain_destination(c)))
                .collect();
            // istioctl sorts by destination, descending (a stable sort).
            matches.sort_by(|a, b| b.1.cmp(&a.1));
            for (m, d) in matches {
                rows.push(prefix(vec![addresses.clone(), port.clone(), m, d]));
            }
        } else {
            rows.push(prefix(vec![addresses, port, listener_type(l)]));
        }
    }
    tabwrite(&rows)
}

/// istioctl's domain column: one domain as is; else those without a port, the short forms
/// of cluster-local names dropped when the short form is there, at most two then "+ N more...".
fn describe_domains(domains: &[&str]) -> String {
    match domains {
        [] => return String::new(),
        [one] => return one.to_string(),
        _ => {}
    }
    let without_port: Vec<&str> = domains
        .iter()
        .copied()
        .filter(|d| !d.contains(':') || (d.matches(':').count() > 2 && d.ends_with(']')))
        .collect();
    let unique: BTreeSet<&str> = without_port.iter().copied().collect();
    let kept: Vec<&str> = without_port
        .iter()
        .copied()
        .filter(|h| {
            let full = h.strip_suffix(".svc.cluster.local");
            let partial = h.strip_suffix(".svc");
            !(full.is_some_and(|s| unique.contains(s))
                || partial.is_some_and(|s| unique.contains(s)))
        })
        .collect();
    if kept.len() > 2 {
        format!("{} + {} more...", kept[..2].join(", "), kept.len() - 2)
    } else {
        kept.join(", ")
    }
}

fn route_table(dump: &Dump, filter: &Filter, with_name: bool) -> String {
    let mut header: Vec<String> = if filter.verbose {
        ["NAME", "VHOST NAME", "DOMAINS", "MATCH", "VIRTUAL SERVICE"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    } else {
        vec!["NAME".into(), "VIRTUAL HOSTS".into()]
    };
    if with_name {
        // istioctl prefixes the NAME cells with `route/` instead of adding a column.
        header[0] = "NAME".into();
    }
    let mut rows = vec![header];
    for rc in dump.routes(filter) {
        let rc_name = if with_name {
            format!("route/{}", name(rc))
        } else {
            name(rc).to_string()
        };
        let vhosts: Vec<&Value> = rc["virtual_hosts"]
            .as_array()
            .into_iter()
            .flatten()
            .collect();
        if !filter.verbose {
            rows.push(vec![rc_name, vhosts.len().to_string()]);
            continue;
        }
        for vh in vhosts {
            let domains: Vec<&str> = vh["domains"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let domains = describe_domains(&domains);
            let routes: Vec<&Value> = vh["routes"].as_array().into_iter().flatten().collect();
            for r in &routes {
                if r["route"]["cluster"] == "PassthroughCluster" {
                    continue;
                }
                rows.push(vec![
                    rc_name.clone(),
                    name(vh).to_string(),
                    domains.clone(),
                    describe_match(&r["match"]),
                    management(r),
                ]);
            }
            if routes.is_empty() {
                rows.push(vec![
                    rc_name.clone(),
                    name(vh).to_string(),
                    domains.clone(),
                    "/*".into(),
                    "404".into(),
                ]);
            }
        }
    }
    tabwrite(&rows)
}

fn endpoint_table(dump: &Dump, filter: &Filter, with_name: bool) -> String {
    let mut rows = vec![
        ["ENDPOINT", "STATUS", "OUTLIER CHECK", "CLUSTER"]
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>(),
    ];
    for r in dump.endpoint_rows(filter) {
        let endpoint = if with_name {
            format!("endpoint/{}", r.endpoint())
        } else {
            r.endpoint()
        };
        rows.push(vec![
            endpoint,
            r.status.clone(),
            if r.failed_outlier_check {
                "FAILED"
            } else {
                "OK"
            }
            .into(),
            r.cluster.clone(),
        ]);
    }
    tabwrite(&rows)
}

/// `kind` → name → resource JSON, of what the control plane serves (dynamic resources only:
/// what came over xDS). Envoy's own static resources are not the control plane's.
fn by_name(dump: &Dump, kind: &str) -> BTreeMap<String, Value> {
    let lists = match kind {
        "cluster" => &CLUSTERS,
        "listener" => &LISTENERS,
        "route" => &ROUTES,
        _ => return endpoints_by_cluster(dump),
    };
    dump.resources(lists, false)
        .into_iter()
        .filter(|v| !name(v).is_empty())
        .map(|v| (name(v).to_string(), proto_defaults_dropped(v)))
        .collect()
}

/// The endpoints of each EDS cluster as `address:port health` lines: Envoy's dump of
/// endpoints is its own view (locality weights summed, policies at Envoy's defaults, static
/// clusters' assignments too), so what is compared is the hosts of the clusters the control
/// plane serves endpoints for.
fn endpoints_by_cluster(dump: &Dump) -> BTreeMap<String, Value> {
    let eds: BTreeSet<&str> = dump
        .all_clusters()
        .into_iter()
        .filter(|c| c["type"] == "EDS")
        .map(name)
        .collect();
    dump.all_endpoint_configs()
        .into_iter()
        .filter_map(|cla| {
            let cluster = cla["cluster_name"].as_str()?;
            eds.contains(cluster).then_some(())?;
            let mut hosts: Vec<String> = cla["endpoints"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|l| l["lb_endpoints"].as_array().into_iter().flatten())
                .map(|e| {
                    let sock = &e["endpoint"]["address"]["socket_address"];
                    let health = e["health_status"].as_str().unwrap_or("UNKNOWN");
                    format!(
                        "{}:{} {health}",
                        sock["address"].as_str().unwrap_or("unknown"),
                        sock["port_value"].as_u64().unwrap_or(0)
                    )
                })
                .collect();
            hosts.sort();
            Some((cluster.to_string(), json!(hosts)))
        })
        .collect()
}

/// A resource's JSON as proto3 means it: fields at their default (`0`, `false`, `""`, `{}`,
/// `[]`) dropped, and numbers in one form (Envoy prints `100.0` where the control plane wrote
/// `100`), so two renderings of the same message compare equal.
fn proto_defaults_dropped(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), proto_defaults_dropped(v)))
                .filter(|(_, v)| !is_default(v))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(proto_defaults_dropped).collect()),
        // One form per value: integral numbers as integers, the rest as floats.
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Value::from(f as i64),
            Some(f) => serde_json::Number::from_f64(f).map_or_else(|| v.clone(), Value::Number),
            None => v.clone(),
        },
        _ => v.clone(),
    }
}

fn is_default(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
    }
}

/// How a diff names a resource only the new side has, one that changed, and one only the old
/// side has.
pub struct DiffWords {
    pub added: &'static str,
    pub changed: &'static str,
    pub removed: &'static str,
}

/// `proxy-config --diff`'s words: the new side is what the control plane sent, the old what
/// Envoy runs.
pub const SENT_VS_RUNNING: DiffWords = DiffWords {
    added: "sent, Envoy does not run it",
    changed: "Envoy runs another version",
    removed: "Envoy runs it, not sent",
};

/// What differs between the `new` and the `old` config (`proxy-config --diff`: what the
/// control plane sent and what Envoy runs): per type, resources only one side has, and a line
/// diff of the JSON of those both have but with different contents, named with `words`. Empty
/// when they agree.
pub fn diff(new: &Dump, old: &Dump, kind: &str, words: &DiffWords) -> String {
    let kinds: &[&str] = match kind {
        "all" | "bootstrap" => &["cluster", "listener", "route", "endpoint"],
        "cluster" => &["cluster"],
        "listener" => &["listener"],
        "route" => &["route"],
        _ => &["endpoint"],
    };
    let mut out = String::new();
    for k in kinds {
        let a = by_name(new, k);
        let b = by_name(old, k);
        for (n, v) in &a {
            match b.get(n) {
                None => out.push_str(&format!("+ {k} {n}: {}\n", words.added)),
                Some(w) if v != w => {
                    out.push_str(&format!("~ {k} {n}: {}\n", words.changed));
                    let left = serde_json::to_string_pretty(w).unwrap_or_default();
                    let right = serde_json::to_string_pretty(v).unwrap_or_default();
                    let d = similar::TextDiff::from_lines(&left, &right);
                    for change in d.iter_all_changes() {
                        let sign = match change.tag() {
                            similar::ChangeTag::Delete => "-",
                            similar::ChangeTag::Insert => "+",
                            similar::ChangeTag::Equal => continue,
                        };
                        out.push_str(&format!("    {sign} {}", change.value()));
                        if !change.value().ends_with('\n') {
                            out.push('\n');
                        }
                    }
                }
                Some(_) => {}
            }
        }
        for n in b.keys().filter(|n| !a.contains_key(*n)) {
            out.push_str(&format!("- {k} {n}: {}\n", words.removed));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dump() -> Dump {
        Dump::new(
            json!({"configs": [
                {"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump", "dynamic_active_clusters": [
                    {"cluster": {"name": "outbound|8000|v1|httpbin.testns1.svc.cluster.local", "type": "EDS",
                        "metadata": {"filter_metadata": {"istio": {"config": "/apis/networking.istio.io/v1/namespaces/testns1/destination-rule/httpbin"}}}}},
                    {"cluster": {"name": "BlackHoleCluster", "type": "STATIC"}},
                    {"cluster": {"name": "outbound|8000||httpbin.testns1.svc.cluster.local", "type": "EDS"}},
                ]},
                {"@type": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump", "dynamic_route_configs": [
                    {"route_config": {"name": "8000", "virtual_hosts": [
                        {"name": "httpbin.testns1.svc.cluster.local:8000", "domains": ["httpbin.testns1.svc.cluster.local", "httpbin", "httpbin.testns1.svc", "httpbin.testns1", "10.0.0.1"],
                         "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "x"},
                           "metadata": {"filter_metadata": {"istio": {"config": "/apis/networking.istio.io/v1/namespaces/testns1/virtual-service/httpbin"}}}}]},
                        {"name": "allow_any", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "PassthroughCluster"}}]},
                    ]}}
                ]},
            ]}),
            None,
        )
    }

    #[test]
    fn cluster_rows_are_istioctls_sorted_by_fqdn_subset_port() {
        let t = cluster_table(&dump(), &Filter::default(), false);
        let lines: Vec<&str> = t.lines().collect();
        // Go tabwriter's columns: the widest cell plus 5 spaces.
        let fqdn = "httpbin.testns1.svc.cluster.local";
        assert_eq!(lines[0].find("PORT"), Some(fqdn.len() + 5), "{t}");
        assert!(
            lines[0].ends_with("DIRECTION     TYPE       DESTINATION RULE"),
            "{t}"
        );
        assert!(lines[1].starts_with("BlackHoleCluster "), "{t}");
        assert!(
            lines[2].starts_with("httpbin.testns1.svc.cluster.local     8000     -  "),
            "{t}"
        );
        assert!(lines[3].ends_with("EDS        httpbin.testns1"), "{t}");
        let f = Filter {
            subset: Some("v1".into()),
            ..Filter::default()
        };
        assert_eq!(cluster_table(&dump(), &f, false).lines().count(), 2);
    }

    #[test]
    fn routes_name_their_virtual_service_and_skip_passthrough() {
        let t = route_table(
            &dump(),
            &Filter {
                verbose: true,
                ..Filter::default()
            },
            false,
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2, "{t}");
        assert!(
            lines[1].contains("httpbin.testns1.svc.cluster.local:8000"),
            "{t}"
        );
        // The .svc and .svc.cluster.local forms of a listed short name are left out.
        assert!(
            lines[1].contains("httpbin, httpbin.testns1 + 1 more..."),
            "{t}"
        );
        let cells: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(cells[cells.len() - 2..], ["/*", "httpbin.testns1"], "{t}");
    }

    #[test]
    fn a_diff_names_what_only_one_side_has_and_what_changed() {
        let sent = dump();
        let mut raw = sent.raw.clone();
        raw["configs"][0]["dynamic_active_clusters"][1]["cluster"]["type"] = "STRICT_DNS".into();
        raw["configs"][0]["dynamic_active_clusters"]
            .as_array_mut()
            .unwrap()
            .remove(0);
        let live = Dump::new(raw, None);
        let d = diff(&sent, &live, "cluster", &SENT_VS_RUNNING);
        assert!(
            d.contains("+ cluster outbound|8000|v1|httpbin.testns1.svc.cluster.local: sent"),
            "{d}"
        );
        assert!(d.contains("~ cluster BlackHoleCluster"), "{d}");
        assert!(d.contains("-   \"type\": \"STRICT_DNS\""), "{d}");
        assert!(d.contains("+   \"type\": \"STATIC\""), "{d}");
        assert_eq!(diff(&sent, &sent, "all", &SENT_VS_RUNNING), "");
    }
}
