//! The control plane's Prometheus metrics with istiod's names, types, labels and buckets
//! (`pilot_*`, `istio_build`, Go's `process_*`), built with the `prometheus-client` crate.
//!
//! Owns the instruments that are recorded as things happen ([`PilotMetrics`]: histograms and
//! labelled counters) and the text rendering. Values that are state, not events (connected
//! proxies, services, NACK counts kept by the xDS server) are passed in at scrape time as
//! [`Snapshot`]s. It never reaches into the server, the model or the sources itself.
//!
//! istiod exports through OpenTelemetry's Prometheus exporter without counter suffixes
//! (`pilot_xds_pushes`, not `pilot_xds_pushes_total`) in the Prometheus text format; the
//! crate writes OpenMetrics (counters with `_total`, `# EOF`). [`render`] turns that into
//! istiod's form, so Istio's dashboards and alerts find every series by its istiod name.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// `type="..."`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    pub r#type: &'static str,
}

/// `type="...",event="..."` (Kubernetes watch events).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeEventLabels {
    pub r#type: String,
    pub event: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    component: String,
    tag: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectLabels {
    r#type: String,
    config: String,
}

type Histograms = Family<TypeLabel, Histogram, fn() -> Histogram>;

// istiod's buckets (pilot/pkg/xds/monitoring.go, pkg/xds/monitoring.go).
const CONVERGENCE_BUCKETS: [f64; 8] = [0.1, 0.5, 1.0, 3.0, 5.0, 10.0, 20.0, 30.0];
const PUSH_TIME_BUCKETS: [f64; 9] = [0.01, 0.1, 0.5, 1.0, 3.0, 5.0, 10.0, 20.0, 30.0];
const PUSHCONTEXT_BUCKETS: [f64; 6] = [0.01, 0.1, 0.5, 1.0, 3.0, 5.0];
const SEND_TIME_BUCKETS: [f64; 8] = [0.01, 0.1, 1.0, 3.0, 5.0, 10.0, 20.0, 30.0];
const CONFIG_SIZE_BUCKETS: [f64; 6] = [1.0, 10000.0, 1000000.0, 4000000.0, 10000000.0, 40000000.0];

fn push_time_histogram() -> Histogram {
    Histogram::new(PUSH_TIME_BUCKETS)
}

fn config_size_histogram() -> Histogram {
    Histogram::new(CONFIG_SIZE_BUCKETS)
}

/// The instruments recorded as events happen, one set per control plane.
#[derive(Debug)]
pub struct PilotMetrics {
    /// `pilot_proxy_convergence_time`: from the first change of a push to a proxy having it.
    pub convergence: Histogram,
    /// `pilot_debounce_time`: from the first change entering the debounce to the push.
    pub debounce_time: Histogram,
    /// `pilot_pushcontext_init_seconds`: building a snapshot.
    pub pushcontext_init: Histogram,
    /// `pilot_xds_push_time{type}`: generating and sending one type to one proxy.
    pub push_time: Histograms,
    /// `pilot_proxy_queue_time`: a proxy's wait in its push queue.
    pub queue_time: Histogram,
    /// `pilot_xds_config_size_bytes{type}`: the size of each response.
    pub config_size: Histograms,
    /// `pilot_xds_send_time`: handing one response to the stream.
    pub send_time: Histogram,
    /// `pilot_push_triggers{type}`: why pushes happened.
    pub push_triggers: Family<TypeLabel, Counter>,
    /// `pilot_inbound_updates{type}`: updates received from the sources (`config`, `eds`).
    pub inbound_updates: Family<TypeLabel, Counter>,
    /// `pilot_k8s_cfg_events{type,event}`: watch events of Istio kinds.
    pub k8s_cfg_events: Family<TypeEventLabels, Counter>,
    /// `pilot_k8s_reg_events{type,event}`: watch events of registry kinds.
    pub k8s_reg_events: Family<TypeEventLabels, Counter>,
    /// `pilot_total_xds_internal_errors{type}`: responses that could not be built or sent.
    pub internal_errors: Family<TypeLabel, Counter>,
    /// `pilot_total_rejected_configs`: documents rejected by validation, each counted once
    /// when it first appears.
    pub rejected_configs: Counter,
}

impl Default for PilotMetrics {
    fn default() -> Self {
        PilotMetrics {
            convergence: Histogram::new(CONVERGENCE_BUCKETS),
            debounce_time: Histogram::new(PUSH_TIME_BUCKETS),
            pushcontext_init: Histogram::new(PUSHCONTEXT_BUCKETS),
            push_time: Family::new_with_constructor(push_time_histogram),
            queue_time: Histogram::new(CONVERGENCE_BUCKETS),
            config_size: Family::new_with_constructor(config_size_histogram),
            send_time: Histogram::new(SEND_TIME_BUCKETS),
            push_triggers: Family::default(),
            inbound_updates: Family::default(),
            k8s_cfg_events: Family::default(),
            k8s_reg_events: Family::default(),
            internal_errors: {
                // Every type has its series from the start (at zero), as the dashboards expect.
                let f: Family<TypeLabel, Counter> = Family::default();
                for t in ["cds", "eds", "lds", "rds"] {
                    let _ = f.get_or_create(&TypeLabel { r#type: t });
                }
                f
            },
            rejected_configs: Counter::default(),
        }
    }
}

impl PilotMetrics {
    pub fn count(family: &Family<TypeLabel, Counter>, kind: &'static str) {
        family.get_or_create(&TypeLabel { r#type: kind }).inc();
    }

    pub fn observe(family: &Histograms, kind: &'static str, value: f64) {
        family
            .get_or_create(&TypeLabel { r#type: kind })
            .observe(value);
    }

    /// A watch event of a Kubernetes kind: Istio kinds are config events, the others registry
    /// events (istiod's split).
    pub fn k8s_event(&self, kind: &str, event: &str, istio: bool) {
        let family = if istio {
            &self.k8s_cfg_events
        } else {
            &self.k8s_reg_events
        };
        family
            .get_or_create(&TypeEventLabels {
                r#type: kind.to_string(),
                event: event.to_string(),
            })
            .inc();
    }
}

/// What is state rather than events, read when scraped.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// Connected proxies by their Istio version (`pilot_xds{version}`).
    pub proxies_by_version: Vec<(String, i64)>,
    /// `pilot_services`, `pilot_virt_services`.
    pub services: i64,
    pub virtual_services: i64,
    /// Responses sent by type (`pilot_xds_pushes{type}`: cds, eds, lds, rds).
    pub pushes: Vec<(&'static str, u64)>,
    /// NACKs by type (`pilot_total_xds_rejects{type}`, and the old `pilot_xds_<type>_reject`).
    pub rejects: Vec<(&'static str, u64)>,
    /// NACKs by type and Istio object (`navarch_xds_rejects_by_config{type,config}`).
    pub rejects_by_config: Vec<(String, String, u64)>,
    /// Further plain series (name, type, help, value) navarch adds.
    pub extra: Vec<(&'static str, &'static str, &'static str, u64)>,
}

/// Renders `pilot` and `snapshot` in istiod's Prometheus text.
pub fn render(pilot: &PilotMetrics, snapshot: &Snapshot) -> String {
    let mut r = Registry::default();
    // Instruments are cheap handles onto shared values: registering clones reads them live.
    r.register(
        "pilot_proxy_convergence_time",
        "Delay in seconds between config change and a proxy receiving all required configuration.",
        pilot.convergence.clone(),
    );
    r.register(
        "pilot_debounce_time",
        "Delay in seconds between the first config enters debouncing and the merged push request is pushed into the push queue (includes pushcontext_init_seconds).",
        pilot.debounce_time.clone(),
    );
    r.register(
        "pilot_pushcontext_init_seconds",
        "Total time in seconds Pilot takes to init pushContext.",
        pilot.pushcontext_init.clone(),
    );
    r.register(
        "pilot_xds_push_time",
        "Total time in seconds Pilot takes to push lds, rds, cds and eds.",
        pilot.push_time.clone(),
    );
    r.register(
        "pilot_proxy_queue_time",
        "Time in seconds, a proxy is in the push queue before being dequeued.",
        pilot.queue_time.clone(),
    );
    r.register(
        "pilot_xds_config_size_bytes",
        "Distribution of configuration sizes pushed to clients",
        pilot.config_size.clone(),
    );
    r.register(
        "pilot_xds_send_time",
        "Total time in seconds Pilot takes to send generated configuration.",
        pilot.send_time.clone(),
    );
    r.register(
        "pilot_push_triggers",
        "Total number of times a push was triggered, labeled by reason for the push.",
        pilot.push_triggers.clone(),
    );
    r.register(
        "pilot_inbound_updates",
        "Total number of updates received by pilot.",
        pilot.inbound_updates.clone(),
    );
    r.register(
        "pilot_k8s_cfg_events",
        "Events from k8s config.",
        pilot.k8s_cfg_events.clone(),
    );
    r.register(
        "pilot_k8s_reg_events",
        "Events from k8s registry.",
        pilot.k8s_reg_events.clone(),
    );
    r.register(
        "pilot_total_xds_internal_errors",
        "Total number of internal XDS errors in pilot.",
        pilot.internal_errors.clone(),
    );

    let xds: Family<VersionLabel, Gauge> = Family::default();
    for (version, n) in &snapshot.proxies_by_version {
        xds.get_or_create(&VersionLabel {
            version: version.clone(),
        })
        .set(*n);
    }
    r.register(
        "pilot_xds",
        "Number of endpoints connected to this pilot using XDS.",
        xds,
    );
    let gauge = |v: i64| {
        let g: Gauge = Gauge::default();
        g.set(v);
        g
    };
    r.register(
        "pilot_services",
        "Total services known to pilot.",
        gauge(snapshot.services),
    );
    r.register(
        "pilot_virt_services",
        "Total virtual services known to pilot.",
        gauge(snapshot.virtual_services),
    );
    let by_type = |values: &[(&'static str, u64)]| {
        let f: Family<TypeLabel, Counter> = Family::default();
        for (t, n) in values {
            f.get_or_create(&TypeLabel { r#type: t }).inc_by(*n);
        }
        f
    };
    r.register(
        "pilot_xds_pushes",
        "Pilot build and send errors for lds, rds, cds and eds.",
        by_type(&snapshot.pushes),
    );
    r.register(
        "pilot_total_xds_rejects",
        "Total number of XDS responses from pilot rejected by proxy.",
        by_type(&snapshot.rejects),
    );
    for (t, n) in &snapshot.rejects {
        let help = match *t {
            "cds" => "Pilot rejected CDS configs.",
            "eds" => "Pilot rejected EDS.",
            "lds" => "Pilot rejected LDS.",
            "rds" => "Pilot rejected RDS.",
            _ => continue,
        };
        r.register(
            format!("pilot_xds_{t}_reject"),
            help,
            gauge(i64::try_from(*n).unwrap_or(i64::MAX)),
        );
    }
    r.register(
        "pilot_total_rejected_configs",
        "Total number of configs that Pilot had to reject or ignore.",
        pilot.rejected_configs.clone(),
    );
    let by_config: Family<RejectLabels, Counter> = Family::default();
    for (t, c, n) in &snapshot.rejects_by_config {
        by_config
            .get_or_create(&RejectLabels {
                r#type: t.clone(),
                config: c.clone(),
            })
            .inc_by(*n);
    }
    r.register(
        "navarch_xds_rejects_by_config",
        "NACKs by type and the Istio object the rejected config comes from.",
        by_config,
    );
    let build: Family<BuildLabels, Gauge> = Family::default();
    build
        .get_or_create(&BuildLabels {
            component: "pilot".into(),
            tag: env!("CARGO_PKG_VERSION").into(),
        })
        .set(1);
    r.register("istio_build", "Istio component build info", build);

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &r).expect("writing to a String");
    let mut out = istiod_text(&text);
    write_plain(&mut out, &snapshot.extra);
    write_process(&mut out);
    out
}

/// OpenMetrics text → istiod's Prometheus text: counters without the `_total` suffix, no
/// `# UNIT` or `# EOF` lines.
fn istiod_text(open_metrics: &str) -> String {
    let counters: BTreeSet<&str> = open_metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(open_metrics.len());
    for line in open_metrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        // The crate ends every help text with a period; istiod's have theirs.
        if line.starts_with("# HELP ")
            && let Some(trimmed) = line.strip_suffix("..")
        {
            out.push_str(trimmed);
            out.push_str(".\n");
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = &line[..name_end];
        match name.strip_suffix("_total") {
            Some(base) if !line.starts_with('#') && counters.contains(base) => {
                out.push_str(base);
                out.push_str(&line[name_end..]);
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

fn write_plain(out: &mut String, series: &[(&str, &str, &str, u64)]) {
    for (name, kind, help, value) in series {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
}

/// Go's process collector series from `/proc/self` (Linux); nothing elsewhere.
fn write_process(out: &mut String) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    // Fields after the command (which may hold spaces) in parentheses.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // /proc/[pid]/stat fields 14, 15 (utime, stime), 20 (threads), 22 (starttime), 23
    // (vsize), 24 (rss): indices from field 3 on.
    let ticks = 100.0; // USER_HZ on Linux
    let page = 4096.0;
    let cpu = (field(11) + field(12)) / ticks;
    let threads = field(17);
    let start_ticks = field(19);
    let vsize = field(20);
    let rss = field(21) * page;
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| {
                    l.strip_prefix("btime ")
                        .map(|v| v.trim().parse::<f64>().ok())
                })
                .flatten()
        })
        .unwrap_or(0.0);
    let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());
    let max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| {
                    l.split_whitespace()
                        .nth(3)
                        .and_then(|v| v.parse::<f64>().ok())
                })
        })
        .unwrap_or(0.0);
    for (name, kind, help, value) in [
        (
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            cpu,
        ),
        (
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            rss,
        ),
        (
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            vsize,
        ),
        (
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            boot + start_ticks / ticks,
        ),
        (
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            fds as f64,
        ),
        (
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            max_fds,
        ),
        (
            "process_threads",
            "gauge",
            "Number of OS threads in the process.",
            threads,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_keep_istiods_names_and_histograms_istiods_buckets() {
        let pilot = PilotMetrics::default();
        PilotMetrics::count(&pilot.push_triggers, "config");
        pilot.convergence.observe(0.2);
        PilotMetrics::observe(&pilot.config_size, "cds", 5000.0);
        let text = render(
            &pilot,
            &Snapshot {
                pushes: vec![("cds", 3)],
                proxies_by_version: vec![("1.24.0".into(), 2)],
                ..Snapshot::default()
            },
        );
        assert!(text.contains("# TYPE pilot_xds_pushes counter\n"), "{text}");
        assert!(
            text.contains("pilot_xds_pushes{type=\"cds\"} 3\n"),
            "{text}"
        );
        assert!(!text.contains("pilot_xds_pushes_total"), "{text}");
        assert!(
            text.contains("pilot_push_triggers{type=\"config\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("pilot_xds{version=\"1.24.0\"} 2\n"), "{text}");
        assert!(
            text.contains("pilot_proxy_convergence_time_bucket{le=\"0.5\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("pilot_proxy_convergence_time_count 1\n"),
            "{text}"
        );
        assert!(
            text.contains("pilot_xds_config_size_bytes_bucket{le=\"10000.0\",type=\"cds\"} 1")
                || text
                    .contains("pilot_xds_config_size_bytes_bucket{type=\"cds\",le=\"10000.0\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("istio_build{component=\"pilot\",tag=\""),
            "{text}"
        );
        assert!(!text.contains("# EOF"), "{text}");
    }
}
