//! `navarch iptables`: the REDIRECT rules of Istio's `istio-init` container (istio-iptables),
//! rendered as `iptables-restore` input for the `nat` table.
//!
//! This module owns the rule set: the chains `ISTIO_INBOUND` (PREROUTING → which inbound
//! ports go to the inbound capture port), `ISTIO_IN_REDIRECT` (REDIRECT to 15006),
//! `ISTIO_OUTPUT` (OUTPUT → what stays out of Envoy: the proxy's own UID/GID, 127.0.0.1, the
//! inbound passthrough source 127.0.0.6, excluded ports and ranges) and `ISTIO_REDIRECT`
//! (REDIRECT to 15001), in istio-iptables' order and with its flag names and defaults.
//! Only REDIRECT inbound interception: TPROXY is refused.
//!
//! Everything here is pure except [`run`], the one function that executes anything (through
//! its helper `exec`: `iptables-save` to see what is installed, `iptables-restore --noflush`
//! to change it).

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use clap::Args;

/// The inbound passthrough cluster's source address (Envoy → app on the pod's own IP).
const INBOUND_PASSTHROUGH_SOURCE: &str = "127.0.0.6/32";
/// The address Envoy-aware apps and containers of one pod use to talk to each other.
const LOOPBACK: &str = "127.0.0.1/32";
/// The chains this module creates, in creation order.
pub const CHAINS: [&str; 4] = [
    "ISTIO_INBOUND",
    "ISTIO_REDIRECT",
    "ISTIO_IN_REDIRECT",
    "ISTIO_OUTPUT",
];

/// Flags of `navarch iptables`, named as istio-iptables' (short and long), each also read
/// from `NAVARCH_<FLAG>`.
#[derive(Debug, Args, Clone, PartialEq, Eq)]
pub struct IptablesArgs {
    /// The Envoy port all redirected outbound TCP traffic goes to.
    #[arg(short = 'p', long, env = "NAVARCH_ENVOY_PORT", default_value_t = 15001)]
    pub envoy_port: u16,
    /// The port all redirected inbound TCP traffic goes to.
    #[arg(
        short = 'z',
        long,
        env = "NAVARCH_INBOUND_CAPTURE_PORT",
        default_value_t = 15006
    )]
    pub inbound_capture_port: u16,
    /// The tunnel port for inbound TCP traffic (HBONE), never captured.
    #[arg(
        short = 'e',
        long,
        env = "NAVARCH_INBOUND_TUNNEL_PORT",
        default_value_t = 15008
    )]
    pub inbound_tunnel_port: u16,
    /// UIDs (comma-separated) whose traffic is not redirected: the proxy's.
    #[arg(short = 'u', long, env = "NAVARCH_PROXY_UID", default_value = "1337")]
    pub proxy_uid: String,
    /// GIDs (comma-separated) whose traffic is not redirected.
    #[arg(short = 'g', long, env = "NAVARCH_PROXY_GID", default_value = "1337")]
    pub proxy_gid: String,
    /// Inbound interception mode: only REDIRECT is supported (TPROXY is refused).
    #[arg(
        short = 'm',
        long,
        env = "NAVARCH_ISTIO_INBOUND_INTERCEPTION_MODE",
        default_value = "REDIRECT"
    )]
    pub istio_inbound_interception_mode: String,
    /// Outbound IP ranges (CIDRs, comma-separated) to redirect to Envoy; `*` for all, empty
    /// for none.
    #[arg(
        short = 'i',
        long,
        env = "NAVARCH_ISTIO_SERVICE_CIDR",
        default_value = "*"
    )]
    pub istio_service_cidr: String,
    /// Outbound IP ranges (CIDRs, comma-separated) never redirected.
    #[arg(
        short = 'x',
        long,
        env = "NAVARCH_ISTIO_SERVICE_EXCLUDE_CIDR",
        default_value = ""
    )]
    pub istio_service_exclude_cidr: String,
    /// Inbound ports (comma-separated) to redirect to Envoy; `*` for all, empty for none.
    #[arg(
        short = 'b',
        long,
        env = "NAVARCH_ISTIO_INBOUND_PORTS",
        default_value = "*"
    )]
    pub istio_inbound_ports: String,
    /// Inbound ports (comma-separated) not redirected; only with `--istio-inbound-ports '*'`.
    #[arg(
        short = 'd',
        long,
        env = "NAVARCH_ISTIO_LOCAL_EXCLUDE_PORTS",
        default_value = "15090,15021,15020"
    )]
    pub istio_local_exclude_ports: String,
    /// Outbound ports (comma-separated) redirected even outside `--istio-service-cidr` (not
    /// for the proxy's ids, 127.0.0.1 or the excluded ranges).
    #[arg(
        short = 'q',
        long,
        env = "NAVARCH_ISTIO_OUTBOUND_PORTS",
        default_value = ""
    )]
    pub istio_outbound_ports: String,
    /// Outbound ports (comma-separated) never redirected.
    #[arg(
        short = 'o',
        long,
        env = "NAVARCH_ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE",
        default_value = ""
    )]
    pub istio_local_outbound_ports_exclude: String,
    /// Print the rules (`iptables-restore` input) and change nothing.
    #[arg(short = 'n', long, env = "NAVARCH_DRY_RUN")]
    pub dry_run: bool,
    /// Remove the chains and the jumps to them instead of installing them.
    #[arg(long, alias = "cleanup-only", env = "NAVARCH_CLEAN")]
    pub clean: bool,
}

impl Default for IptablesArgs {
    fn default() -> Self {
        IptablesArgs {
            envoy_port: 15001,
            inbound_capture_port: 15006,
            inbound_tunnel_port: 15008,
            proxy_uid: "1337".into(),
            proxy_gid: "1337".into(),
            istio_inbound_interception_mode: "REDIRECT".into(),
            istio_service_cidr: "*".into(),
            istio_service_exclude_cidr: String::new(),
            istio_inbound_ports: "*".into(),
            istio_local_exclude_ports: "15090,15021,15020".into(),
            istio_outbound_ports: String::new(),
            istio_local_outbound_ports_exclude: String::new(),
            dry_run: false,
            clean: false,
        }
    }
}

/// What is wrong with the flags, or with running the iptables tools.
#[derive(Debug, thiserror::Error)]
pub enum IptablesError {
    #[error(
        "--istio-inbound-interception-mode {0}: only REDIRECT is supported (TPROXY needs mangle-table rules and policy routing navarch does not install)"
    )]
    Mode(String),
    #[error("{flag}: {value:?} is not a port (1-65535)")]
    Port { flag: &'static str, value: String },
    #[error("{flag}: {value:?} is not a numeric id")]
    Id { flag: &'static str, value: String },
    #[error("{flag}: {value:?} is not an IPv4 CIDR (IPv6 rules are not rendered)")]
    Cidr { flag: &'static str, value: String },
    #[error("--istio-service-exclude-cidr cannot be '*'")]
    ExcludeWildcard,
    #[error(
        "{binary} not found: install iptables (Debian/Ubuntu package `iptables`), or run with --dry-run to print the rules"
    )]
    Missing { binary: &'static str },
    #[error("running {binary}: {source}")]
    Spawn {
        binary: &'static str,
        source: std::io::Error,
    },
    #[error("{binary} failed ({status}): {stderr}")]
    Failed {
        binary: &'static str,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

/// Outbound ranges: everything, or these CIDRs.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ranges {
    All,
    Cidrs(Vec<String>),
}

/// The flags, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Plan {
    envoy_port: u16,
    inbound_capture_port: u16,
    inbound_tunnel_port: u16,
    uids: Vec<String>,
    gids: Vec<String>,
    include: Ranges,
    exclude: Vec<String>,
    /// `None`: all inbound ports (`*`).
    inbound_ports: Option<Vec<u16>>,
    inbound_exclude: Vec<u16>,
    outbound_include_ports: Vec<u16>,
    outbound_exclude_ports: Vec<u16>,
}

/// istio-iptables' list splitting: comma-separated, blanks trimmed, empty items dropped.
fn split(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').map(str::trim).filter(|s| !s.is_empty())
}

fn ports(flag: &'static str, list: &str) -> Result<Vec<u16>, IptablesError> {
    split(list)
        .map(|p| match p.parse::<u16>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(IptablesError::Port {
                flag,
                value: p.into(),
            }),
        })
        .collect()
}

fn ids(flag: &'static str, list: &str) -> Result<Vec<String>, IptablesError> {
    split(list)
        .map(|id| match id.parse::<u32>() {
            Ok(n) => Ok(n.to_string()),
            Err(_) => Err(IptablesError::Id {
                flag,
                value: id.into(),
            }),
        })
        .collect()
}

/// `a.b.c.d/n` (or a bare address, as /32), normalized to its network address.
fn cidr(flag: &'static str, s: &str) -> Result<(Ipv4Addr, u8), IptablesError> {
    let bad = || IptablesError::Cidr {
        flag,
        value: s.into(),
    };
    let (addr, len) = s.split_once('/').unwrap_or((s, "32"));
    let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    if len > 32 {
        return Err(bad());
    }
    let mask = if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    };
    Ok((Ipv4Addr::from(u32::from(addr) & mask), len))
}

fn cidrs(flag: &'static str, list: &str) -> Result<Vec<(Ipv4Addr, u8)>, IptablesError> {
    split(list).map(|c| cidr(flag, c)).collect()
}

fn show(cidrs: &[(Ipv4Addr, u8)]) -> Vec<String> {
    cidrs.iter().map(|(a, n)| format!("{a}/{n}")).collect()
}

impl IptablesArgs {
    fn plan(&self) -> Result<Plan, IptablesError> {
        let mode = self.istio_inbound_interception_mode.trim();
        if mode != "REDIRECT" {
            return Err(IptablesError::Mode(mode.to_string()));
        }
        if self.istio_service_exclude_cidr.trim() == "*" {
            return Err(IptablesError::ExcludeWildcard);
        }
        let include = if self.istio_service_cidr.trim() == "*" {
            Ranges::All
        } else {
            Ranges::Cidrs(show(&cidrs(
                "--istio-service-cidr",
                &self.istio_service_cidr,
            )?))
        };
        let inbound_ports = if self.istio_inbound_ports.trim() == "*" {
            None
        } else {
            Some(ports("--istio-inbound-ports", &self.istio_inbound_ports)?)
        };
        Ok(Plan {
            envoy_port: self.envoy_port,
            inbound_capture_port: self.inbound_capture_port,
            inbound_tunnel_port: self.inbound_tunnel_port,
            uids: ids("--proxy-uid", &self.proxy_uid)?,
            gids: ids("--proxy-gid", &self.proxy_gid)?,
            include,
            exclude: show(&cidrs(
                "--istio-service-exclude-cidr",
                &self.istio_service_exclude_cidr,
            )?),
            inbound_ports,
            inbound_exclude: ports(
                "--istio-local-exclude-ports",
                &self.istio_local_exclude_ports,
            )?,
            outbound_include_ports: ports("--istio-outbound-ports", &self.istio_outbound_ports)?,
            outbound_exclude_ports: ports(
                "--istio-local-outbound-ports-exclude",
                &self.istio_local_outbound_ports_exclude,
            )?,
        })
    }
}

impl Plan {
    /// The nat table rules, `-A CHAIN ...` lines in istio-iptables' order.
    fn rules(&self) -> Vec<String> {
        let mut r = Vec::new();
        let tunnel = self.inbound_tunnel_port;
        r.push(format!(
            "-A ISTIO_INBOUND -p tcp --dport {tunnel} -j RETURN"
        ));
        r.push(format!(
            "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports {}",
            self.envoy_port
        ));
        r.push(format!(
            "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports {}",
            self.inbound_capture_port
        ));

        // Inbound: an empty port list captures nothing (and PREROUTING gets no jump).
        match &self.inbound_ports {
            None => {
                r.push("-A PREROUTING -p tcp -j ISTIO_INBOUND".into());
                for port in &self.inbound_exclude {
                    r.push(format!("-A ISTIO_INBOUND -p tcp --dport {port} -j RETURN"));
                }
                r.push("-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT".into());
            }
            Some(ports) if !ports.is_empty() => {
                r.push("-A PREROUTING -p tcp -j ISTIO_INBOUND".into());
                for port in ports {
                    r.push(format!(
                        "-A ISTIO_INBOUND -p tcp --dport {port} -j ISTIO_IN_REDIRECT"
                    ));
                }
            }
            Some(_) => {}
        }

        // Outbound.
        r.push("-A OUTPUT -j ISTIO_OUTPUT".into());
        for port in &self.outbound_exclude_ports {
            r.push(format!("-A ISTIO_OUTPUT -p tcp --dport {port} -j RETURN"));
            r.push(format!("-A ISTIO_OUTPUT -p udp --dport {port} -j RETURN"));
        }
        r.push(format!(
            "-A ISTIO_OUTPUT -o lo -s {INBOUND_PASSTHROUGH_SOURCE} -j RETURN"
        ));
        // A loopback range asked for explicitly keeps the app's own loopback traffic captured.
        let include_loopback = match &self.include {
            Ranges::All => false,
            Ranges::Cidrs(c) => c.iter().any(|c| c.starts_with("127.")),
        };
        for (owner, values) in [("--uid-owner", &self.uids), ("--gid-owner", &self.gids)] {
            for id in values {
                // The proxy calling the pod's own IP (app → VIP → Envoy → same pod): inbound.
                r.push(format!(
                    "-A ISTIO_OUTPUT -o lo ! -d {LOOPBACK} -p tcp ! --dport {tunnel} -m owner {owner} {id} -j ISTIO_IN_REDIRECT"
                ));
                // Anyone else on lo (the app calling itself by endpoint address): untouched.
                if !include_loopback {
                    r.push(format!(
                        "-A ISTIO_OUTPUT -o lo -m owner ! {owner} {id} -j RETURN"
                    ));
                }
                // The proxy's own outbound traffic: never back into the proxy.
                r.push(format!("-A ISTIO_OUTPUT -m owner {owner} {id} -j RETURN"));
            }
        }
        r.push(format!("-A ISTIO_OUTPUT -d {LOOPBACK} -j RETURN"));
        for c in &self.exclude {
            r.push(format!("-A ISTIO_OUTPUT -d {c} -j RETURN"));
        }
        for port in &self.outbound_include_ports {
            r.push(format!(
                "-A ISTIO_OUTPUT -p tcp --dport {port} -j ISTIO_REDIRECT"
            ));
        }
        match &self.include {
            Ranges::All => r.push("-A ISTIO_OUTPUT -j ISTIO_REDIRECT".into()),
            Ranges::Cidrs(c) => {
                for c in c {
                    r.push(format!("-A ISTIO_OUTPUT -d {c} -j ISTIO_REDIRECT"));
                }
            }
        }
        r
    }
}

/// The `iptables-restore --noflush` input that installs the rules (dry-run prints this).
/// Declaring the chains (`:NAME - [0:0]`) creates them or empties them, so applying it twice
/// leaves one copy; [`render_apply`] also drops existing jumps from PREROUTING/OUTPUT.
pub fn render(args: &IptablesArgs) -> Result<String, IptablesError> {
    let plan = args.plan()?;
    let mut out = String::from("*nat\n");
    for chain in CHAINS {
        let _ = writeln!(out, ":{chain} - [0:0]");
    }
    for rule in plan.rules() {
        out.push_str(&rule);
        out.push('\n');
    }
    out.push_str("COMMIT\n");
    Ok(out)
}

/// The jumps into our chains from built-in chains in `iptables-save -t nat` output, as the
/// `-D` lines that remove them.
fn delete_jumps(saved: &str) -> Vec<String> {
    saved
        .lines()
        .filter_map(|l| l.strip_prefix("-A "))
        .filter(|rest| {
            let chain = rest.split_whitespace().next().unwrap_or_default();
            !CHAINS.contains(&chain) && CHAINS.iter().any(|c| rest.ends_with(&format!("-j {c}")))
        })
        .map(|rest| format!("-D {rest}"))
        .collect()
}

/// Our chains present in `iptables-save -t nat` output.
fn existing_chains(saved: &str) -> Vec<&'static str> {
    CHAINS
        .into_iter()
        .filter(|c| {
            let decl = format!(":{c} ");
            saved.lines().any(|l| l.starts_with(&decl))
        })
        .collect()
}

/// What applying pipes to `iptables-restore --noflush`, given the current `iptables-save -t
/// nat` output: the old jumps removed, then the chains (re)declared and filled, in one
/// transaction.
pub fn render_apply(args: &IptablesArgs, saved: &str) -> Result<String, IptablesError> {
    let rules = render(args)?;
    let deletes = delete_jumps(saved);
    if deletes.is_empty() {
        return Ok(rules);
    }
    let mut out = String::from("*nat\n");
    for d in deletes {
        out.push_str(&d);
        out.push('\n');
    }
    out.push_str(rules.trim_start_matches("*nat\n"));
    Ok(out)
}

/// The `iptables-restore --noflush` input that removes our jumps and chains from what
/// `iptables-save -t nat` showed; `None` when none of it is installed.
pub fn render_clean(saved: &str) -> Option<String> {
    let deletes = delete_jumps(saved);
    let chains = existing_chains(saved);
    if deletes.is_empty() && chains.is_empty() {
        return None;
    }
    let mut out = String::from("*nat\n");
    for d in deletes {
        out.push_str(&d);
        out.push('\n');
    }
    for c in &chains {
        let _ = writeln!(out, "-F {c}");
    }
    for c in &chains {
        let _ = writeln!(out, "-X {c}");
    }
    out.push_str("COMMIT\n");
    Some(out)
}

/// Runs one iptables tool with `input` on stdin; its stdout.
fn exec(binary: &'static str, args: &[&str], input: Option<&str>) -> Result<String, IptablesError> {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let mut child = Command::new(binary)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => IptablesError::Missing { binary },
            _ => IptablesError::Spawn { binary, source },
        })?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .map_err(|source| IptablesError::Spawn { binary, source })?;
    }
    let out = child
        .wait_with_output()
        .map_err(|source| IptablesError::Spawn { binary, source })?;
    if !out.status.success() {
        return Err(IptablesError::Failed {
            binary,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `navarch iptables`: prints (`--dry-run`), installs, or removes (`--clean`) the rules in
/// this network namespace. The only function here that runs anything.
pub fn run(args: &IptablesArgs) -> Result<(), IptablesError> {
    if args.dry_run {
        if args.clean {
            println!(
                "# --clean: removes the jumps to and the chains {CHAINS:?} from the nat table"
            );
        } else {
            print!("{}", render(args)?);
        }
        return Ok(());
    }
    // Flags are checked before anything runs.
    let rules = (!args.clean).then(|| render(args)).transpose()?;
    let saved = exec("iptables-save", &["-t", "nat"], None)?;
    let input = match rules {
        Some(_) => Some(render_apply(args, &saved)?),
        None => render_clean(&saved),
    };
    match input {
        Some(input) => {
            exec("iptables-restore", &["--noflush"], Some(&input))?;
            eprint!("navarch iptables: applied with iptables-restore --noflush:\n{input}");
        }
        None => eprintln!("navarch iptables: nothing to clean"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(f: impl FnOnce(&mut IptablesArgs)) -> String {
        let mut args = IptablesArgs::default();
        f(&mut args);
        render(&args).expect("valid flags")
    }

    #[test]
    fn default_flags_are_istio_inits() {
        insta::assert_snapshot!(with(|_| {}));
    }

    #[test]
    fn clap_defaults_match_default() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cmd {
            #[command(flatten)]
            args: IptablesArgs,
        }
        let parsed = Cmd::parse_from(["iptables"]).args;
        assert_eq!(parsed, IptablesArgs::default());
        let parsed = Cmd::parse_from([
            "iptables",
            "-p",
            "16001",
            "-z",
            "16006",
            "-u",
            "7",
            "-g",
            "8",
            "-m",
            "REDIRECT",
            "-i",
            "10.0.0.0/8",
            "-x",
            "10.1.0.0/16",
            "-b",
            "80",
            "-d",
            "",
            "-q",
            "443",
            "-o",
            "25",
            "-n",
        ])
        .args;
        assert_eq!(parsed.envoy_port, 16001);
        assert_eq!(parsed.istio_service_cidr, "10.0.0.0/8");
        assert_eq!(parsed.istio_local_outbound_ports_exclude, "25");
        assert!(parsed.dry_run);
    }

    #[test]
    fn include_and_exclude_variations() {
        insta::assert_snapshot!(
            "ranges_and_ports",
            with(|a| {
                a.istio_service_cidr = "10.96.0.0/12, 192.168.1.7".into();
                a.istio_service_exclude_cidr = "10.100.0.0/16".into();
                a.istio_inbound_ports = "8080,9090".into();
                a.istio_outbound_ports = "3306".into();
                a.istio_local_outbound_ports_exclude = "25,587".into();
            })
        );
        insta::assert_snapshot!(
            "ports_and_ids",
            with(|a| {
                a.envoy_port = 16001;
                a.inbound_capture_port = 16006;
                a.proxy_uid = "1337,1338".into();
                a.proxy_gid = "2000".into();
                a.istio_local_exclude_ports = "15020,8081".into();
            })
        );
    }

    #[test]
    fn empty_lists_capture_nothing() {
        let rules = with(|a| {
            a.istio_inbound_ports = String::new();
            a.istio_service_cidr = String::new();
        });
        assert!(!rules.contains("PREROUTING"), "{rules}");
        assert!(!rules.contains("-A ISTIO_INBOUND -p tcp -j"), "{rules}");
        assert!(!rules.contains("-j ISTIO_REDIRECT"), "{rules}");
        // Still declared, so a later run and --clean find them.
        assert!(rules.contains(":ISTIO_REDIRECT - [0:0]"));
    }

    #[test]
    fn loopback_in_the_include_ranges_keeps_app_loopback_traffic_captured() {
        let rules = with(|a| a.istio_service_cidr = "127.0.0.0/8".into());
        assert!(!rules.contains("! --uid-owner"), "{rules}");
        assert!(!rules.contains("! --gid-owner"), "{rules}");
        assert!(rules.contains("-A ISTIO_OUTPUT -d 127.0.0.0/8 -j ISTIO_REDIRECT"));
        let rules = with(|_| {});
        assert!(rules.contains("-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN"));
    }

    #[test]
    fn bad_flags_are_refused_with_the_flag_named() {
        let err = |f: fn(&mut IptablesArgs)| {
            let mut a = IptablesArgs::default();
            f(&mut a);
            render(&a).expect_err("refused").to_string()
        };
        let e = err(|a| a.istio_inbound_interception_mode = "TPROXY".into());
        assert!(e.contains("only REDIRECT"), "{e}");
        let e = err(|a| a.istio_local_exclude_ports = "15090,http".into());
        assert!(
            e.contains("--istio-local-exclude-ports") && e.contains("http"),
            "{e}"
        );
        let e = err(|a| a.istio_service_cidr = "fd00::/8".into());
        assert!(e.contains("--istio-service-cidr"), "{e}");
        let e = err(|a| a.istio_service_cidr = "10.0.0.0/33".into());
        assert!(e.contains("10.0.0.0/33"), "{e}");
        let e = err(|a| a.istio_service_exclude_cidr = "*".into());
        assert!(e.contains("cannot be '*'"), "{e}");
        let e = err(|a| a.proxy_uid = "envoy".into());
        assert!(e.contains("--proxy-uid"), "{e}");
    }

    #[test]
    fn cidrs_are_normalized() {
        let rules = with(|a| a.istio_service_exclude_cidr = "10.1.2.3/16,10.9.9.9".into());
        assert!(
            rules.contains("-A ISTIO_OUTPUT -d 10.1.0.0/16 -j RETURN"),
            "{rules}"
        );
        assert!(
            rules.contains("-A ISTIO_OUTPUT -d 10.9.9.9/32 -j RETURN"),
            "{rules}"
        );
    }

    /// What `iptables-save -t nat` shows after the default rules were applied (nft backend).
    const SAVED: &str = "# Generated by iptables-save v1.8.9 (nf_tables)
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:ISTIO_INBOUND - [0:0]
:ISTIO_IN_REDIRECT - [0:0]
:ISTIO_OUTPUT - [0:0]
:ISTIO_REDIRECT - [0:0]
:KUBE-SEP - [0:0]
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A PREROUTING -j KUBE-SEP
-A OUTPUT -j ISTIO_OUTPUT
-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN
-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -j ISTIO_REDIRECT
COMMIT
";

    #[test]
    fn reapplying_replaces_the_jumps_and_chains() {
        let input = render_apply(&IptablesArgs::default(), SAVED).unwrap();
        let fresh = render(&IptablesArgs::default()).unwrap();
        assert!(
            input.starts_with(
                "*nat\n-D PREROUTING -p tcp -j ISTIO_INBOUND\n-D OUTPUT -j ISTIO_OUTPUT\n:ISTIO_INBOUND"
            ),
            "{input}"
        );
        assert!(input.ends_with(fresh.trim_start_matches("*nat\n")));
        assert!(!input.contains("KUBE-SEP"), "{input}");
        // Nothing installed yet: just the rules.
        assert_eq!(render_apply(&IptablesArgs::default(), "").unwrap(), fresh);
    }

    #[test]
    fn clean_removes_only_ours() {
        insta::assert_snapshot!(render_clean(SAVED).unwrap(), @r"
        *nat
        -D PREROUTING -p tcp -j ISTIO_INBOUND
        -D OUTPUT -j ISTIO_OUTPUT
        -F ISTIO_INBOUND
        -F ISTIO_REDIRECT
        -F ISTIO_IN_REDIRECT
        -F ISTIO_OUTPUT
        -X ISTIO_INBOUND
        -X ISTIO_REDIRECT
        -X ISTIO_IN_REDIRECT
        -X ISTIO_OUTPUT
        COMMIT
        ");
        assert_eq!(
            render_clean("*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n"),
            None
        );
    }
}
