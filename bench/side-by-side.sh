#!/usr/bin/env bash
# navarch and istiod side by side, on this machine, in one run: both control planes read the
# same real kube-apiserver (on loopback) holding the same synthetic mesh, and are driven by the
# same simulated sidecars (`navarch loadtest --kube`), without and with Sidecar isolation.
# Then navarch's RSS slope per idle proxy (20 services, 2000 → 10,000 proxies) and, from the
# benchmark build (`--features alloc-count`), its allocations per push. Prints one table.
#
# Builds what is missing: the Kubernetes binaries (integration/kube/build.sh), istiod
# (pilot-discovery from its Go module, about 10 minutes on 2 cores), navarch (release, and the
# alloc-count build in target/alloc-count). Every long phase prints progress.
#
# Knobs (environment): SERVICES PROXIES NAMESPACES CHURN_RATE CHURN_SECONDS, ISTIOD_BIN (an
# existing pilot-discovery), SKIP_ISTIOD=1, SKIP_SLOPE=1, SKIP_ALLOCS=1, OUT (results dir),
# SKIP_EDS_DEBOUNCE_OFF=1, QUIET_WAIT (seconds to wait for a load average below 1.5 before each
# run, default 120; 0 = do not wait).
set -euo pipefail
cd "$(dirname "$0")/.."

SERVICES="${SERVICES:-1000}"
PROXIES="${PROXIES:-2000}"
NAMESPACES="${NAMESPACES:-10}"
CHURN_RATE="${CHURN_RATE:-50}"
CHURN_SECONDS="${CHURN_SECONDS:-60}"
SLOPE_SERVICES="${SLOPE_SERVICES:-20}"
SLOPE_FROM="${SLOPE_FROM:-2000}"
SLOPE_TO="${SLOPE_TO:-10000}"
ISTIO_MODULE="istio.io/istio/pilot/cmd/pilot-discovery@v0.0.0-20260827124520-eed52ebb66ad"
OUT="${OUT:-bench/results/$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$OUT"

log() { echo "[side-by-side $(date -u +%H:%M:%S)] $*" >&2; }

# Waits (up to QUIET_WAIT seconds, default 120) until the 1-minute load average is below 1.5:
# other work on the same two cores would be measured too. Logs the load either way.
wait_quiet() {
  local waited=0 max="${QUIET_WAIT:-120}"
  while awk '{exit !($1 >= 1.5)}' /proc/loadavg && (( waited < max )); do
    log "load average $(cut -d' ' -f1-3 /proc/loadavg): waiting for a quieter machine ($waited/${max}s)"
    sleep 20; waited=$((waited + 20))
  done
  log "load average $(cut -d' ' -f1-3 /proc/loadavg)"
}

# Runs "$@" with a line every 30 s while it is still going (builds print little on their own).
with_heartbeat() {
  local what="$1"; shift
  local start=$SECONDS
  ( while sleep 30; do log "$what: still going after $((SECONDS - start))s"; done ) &
  local beat=$!
  local rc=0
  "$@" || rc=$?
  kill "$beat" 2>/dev/null || true
  wait "$beat" 2>/dev/null || true
  return "$rc"
}

log "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -sr); date $(date -u)"
log "results in $OUT"

log "Kubernetes binaries (integration/kube/build.sh; cached after the first build)"
KUBE_BIN="$(with_heartbeat "kube build" bash integration/kube/build.sh | tail -n1)"
export NAVARCH_KUBE_BIN="$KUBE_BIN"
log "kube binaries in $KUBE_BIN"

CONTROL_PLANES=(--control-plane navarch)
if [[ "${SKIP_ISTIOD:-}" != 1 ]]; then
  ISTIOD_BIN="${ISTIOD_BIN:-$(go env GOPATH)/bin/pilot-discovery}"
  if [[ ! -x "$ISTIOD_BIN" ]]; then
    log "building istiod: go install -tags vtprotobuf,disable_pgv $ISTIO_MODULE (about 10 minutes on 2 cores)"
    with_heartbeat "istiod build" go install -tags vtprotobuf,disable_pgv "$ISTIO_MODULE"
    ISTIOD_BIN="$(go env GOPATH)/bin/pilot-discovery"
  fi
  log "istiod: $ISTIOD_BIN"
  CONTROL_PLANES+=(--control-plane istiod --istiod-bin "$ISTIOD_BIN")
fi

log "navarch release build (cargo build --release)"
with_heartbeat "cargo build --release" cargo build --release --quiet
NAVARCH="$PWD/target/release/navarch"

# The file descriptors of 10,000 connections on each side.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

COMMON=(--kube --services "$SERVICES" --proxies "$PROXIES" --namespaces "$NAMESPACES"
        --churn-rate "$CHURN_RATE" --churn-seconds "$CHURN_SECONDS")

# isolation-no-eds-debounce: endpoint-only changes pushed --debounce-after from the first one
# (navarch --enable-eds-debounce false, istiod PILOT_ENABLE_EDS_DEBOUNCE=false), so continuous
# churn is not paced by the 10 s debounce cap. SKIP_EDS_DEBOUNCE_OFF=1 leaves it out.
MODES=(no-isolation isolation)
[[ "${SKIP_EDS_DEBOUNCE_OFF:-}" != 1 ]] && MODES+=(isolation-no-eds-debounce)
for mode in "${MODES[@]}"; do
  extra=()
  [[ "$mode" == isolation* ]] && extra=(--sidecar-isolation)
  [[ "$mode" == *no-eds-debounce ]] && extra+=(--eds-debounce false)
  wait_quiet
  log "side by side, $mode: $NAVARCH loadtest ${COMMON[*]} ${extra[*]} ${CONTROL_PLANES[*]}"
  "$NAVARCH" loadtest "${COMMON[@]}" "${extra[@]}" "${CONTROL_PLANES[@]}" \
    --json "$OUT/$mode.json" 2>&1 | tee "$OUT/$mode.log" || log "$mode run failed (see $OUT/$mode.log); going on"
done

if [[ "${SKIP_SLOPE:-}" != 1 ]]; then
  wait_quiet
  log "navarch RSS slope: $SLOPE_SERVICES services, $SLOPE_FROM then $SLOPE_TO idle proxies"
  "$NAVARCH" loadtest --kube --services "$SLOPE_SERVICES" --proxies "$SLOPE_TO" --rss-at "$SLOPE_FROM" \
    --namespaces "$NAMESPACES" --churn-rate 0 --control-plane navarch \
    --json "$OUT/slope.json" 2>&1 | tee "$OUT/slope.log" || log "slope run failed (see $OUT/slope.log); going on"
fi

if [[ "${SKIP_ALLOCS:-}" != 1 ]]; then
  log "navarch benchmark build with allocation counts (target/alloc-count; its RSS is not the default build's)"
  if [[ ! -d target/alloc-count/release && -d target/release ]]; then
    mkdir -p target/alloc-count && cp -a target/release target/alloc-count/  # reuse compiled dependencies
  fi
  with_heartbeat "cargo build --features alloc-count" \
    env CARGO_TARGET_DIR=target/alloc-count cargo build --release --quiet --features alloc-count
  for mode in no-isolation isolation; do
    extra=()
    [[ "$mode" == isolation ]] && extra=(--sidecar-isolation)
    wait_quiet
    log "allocations, $mode: navarch (alloc-count build) loadtest ${COMMON[*]} ${extra[*]}"
    target/alloc-count/release/navarch loadtest "${COMMON[@]}" "${extra[@]}" --control-plane navarch \
      --json "$OUT/allocs-$mode.json" 2>&1 | tee "$OUT/allocs-$mode.log" || log "allocs $mode run failed; going on"
  done
fi

log "summary"
python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
def load(name):
    p = os.path.join(out, name)
    return json.load(open(p)) if os.path.exists(p) else None
cols = []  # (label, run)
for mode, label in (("no-isolation", "no isolation"), ("isolation", "Sidecar per namespace"),
                    ("isolation-no-eds-debounce", "Sidecar per namespace, EDS debounce off")):
    d = load(mode + ".json")
    for run in (d or {}).get("runs", []):
        cols.append((f"{run['controlPlane']}, {label}", run, mode))
if not cols:
    sys.exit("no results")
d = load("no-isolation.json") or load("isolation.json")
print(f"\n{d['mesh']['services']} services × {d['mesh']['podsPerService']} pods, {d['mesh']['namespaces']} namespaces, "
      f"{d['proxies']} proxies ({d['xds']}, {d['proxiesPerConnection']} per connection), config in a kube-apiserver\n")
print("| | " + " | ".join(c[0] for c in cols) + " |")
print("|---|" + "---|" * len(cols))
def row(label, f):
    vals = []
    for _, r, mode in cols:
        try:
            vals.append(f(r, mode))
        except (KeyError, TypeError):
            vals.append("-")
    print(f"| {label} | " + " | ".join(vals) + " |")
row("steady RSS (MiB)", lambda r, m: f"{r['steadyRssMiB']:.0f}")
row("peak RSS (MiB)", lambda r, m: f"{r['server']['peakRssMiB']:.0f}")
row("all synced (s)", lambda r, m: f"{r['connect']['allSyncedSeconds']:.1f} ({r['connect']['connected']}/{d['proxies']})")
row("server CPU s to sync", lambda r, m: f"{r['connect']['syncCpuSeconds']:.1f}")
row("VS change p50 / p99 (ms)", lambda r, m: "{:.0f} / {:.0f}{}".format(
    r['virtualServiceChange']['summary']['p50Ms'], r['virtualServiceChange']['summary']['p99Ms'],
    f", {r['virtualServiceChange']['missing']} missed" if r['virtualServiceChange']['missing'] else ""))
row("churn EDS p50 / p99 (ms)", lambda r, m: "{:.0f} / {:.0f} (at {:.1f}/s; {} missed, {} non-EDS)".format(
    r['endpointChurn']['summary']['p50Ms'], r['endpointChurn']['summary']['p99Ms'],
    r['endpointChurn']['achievedRatePerSecond'],
    r['endpointChurn']['missingProxyUpdates'], r['endpointChurn']['nonEdsResponses']))
def allocs(key):
    def f(r, m):
        if r['controlPlane'] == 'navarch':
            a = load(f"allocs-{m}.json")
            r = a['runs'][0] if a else r
        section = 'virtualServiceChange' if key == 'allocationsPerResponse' else 'endpointChurn'
        v = r[section][key]
        return "-" if v is None else f"{v:.0f}"
    return f
row("allocations per VS-change response", allocs("allocationsPerResponse"))
row("allocations per churn change", allocs("allocationsPerChange"))
row("server CPU s, whole run", lambda r, m: f"{r['server']['cpuSeconds']:.1f}")
s = load("slope.json")
if s:
    r = s["runs"][0]
    pts = ", ".join(f"{p['proxies']} proxies {p['rssMiB']:.0f} MiB" for p in r["rssPoints"])
    print(f"\nnavarch RSS slope at {s['mesh']['services']} services: {r['rssSlopeKiBPerProxy']:.1f} KiB per idle proxy ({pts})")
print("\n(allocations: navarch from its alloc-count build, counted by stats_alloc; istiod from go_memstats_mallocs_total)")
PY
log "done; raw results in $OUT"
