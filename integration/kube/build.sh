#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager (k8s.io/kubernetes at $K8S_VERSION) and etcd
# (go.etcd.io/etcd at $ETCD_VERSION) from the official Go modules, into a cache directory that
# later runs reuse. Prints the directory holding the binaries on its last line.
#
# k8s.io/kubernetes cannot be `go install`ed: its go.mod replaces its staging modules with local
# paths. We build it from a module of our own that requires k8s.io/kubernetes and replaces every
# staging module it lists with the published module at the matching v0.Y.Z.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.34.4}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.6}"
CACHE="${NAVARCH_KUBE_CACHE:-$HOME/.cache/navarch/kube}"
OUT="$CACHE/bin-$K8S_VERSION-etcd-$ETCD_VERSION"

log() { echo "[kube-build] $*" >&2; }

if [[ -x "$OUT/kube-apiserver" && -x "$OUT/kube-controller-manager" && -x "$OUT/kubectl" && -x "$OUT/etcd" ]]; then
  log "cached binaries in $OUT"
  echo "$OUT"
  exit 0
fi
command -v go >/dev/null || { log "go is not installed; install Go >= 1.24 and retry"; exit 1; }
mkdir -p "$OUT"
export CGO_ENABLED=0

# Writes a go.mod at $1 requiring $2@$3 and replacing each module that $2's own go.mod replaces
# with a local path by the published module at version $4.
make_module() {
  local dir="$1" mod="$2" ver="$3" staging_ver="$4"
  shift 4 # the rest: main packages to build, pinned through a tools file
  mkdir -p "$dir"
  rm -f "$dir/go.mod" "$dir/go.sum"
  local gomod
  gomod="$(cd "$dir" && go mod download -json "$mod@$ver" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
  [[ -f "$gomod" ]] || { log "could not download $mod@$ver's go.mod"; exit 1; }
  local goversion
  goversion="$(sed -n 's/^go \([0-9.]*\).*/\1/p' "$gomod" | head -n1)"
  {
    echo "module navarch.local/kubebuild"
    echo
    echo "go $goversion"
    echo
    echo "require $mod $ver"
    echo
    # Lines like `k8s.io/api => ./staging/src/k8s.io/api` (in a replace block or one-line form).
    sed -n 's#^[[:space:]]*\(replace[[:space:]]\+\)\{0,1\}\([^[:space:]]\+\)[[:space:]]\+=>[[:space:]]\+\./.*#\2#p' "$gomod" |
      while read -r staged; do
        if [[ -n "$staging_ver" ]]; then echo "replace $staged => $staged $staging_ver"; fi
      done
  } >"$dir/go.mod"
  {
    echo "//go:build tools"
    echo
    echo "package kubebuild"
    echo
    echo "import ("
    for pkg in "$@"; do echo "	_ \"$pkg\""; done
    echo ")"
  } >"$dir/tools.go"
  rm -f "$dir/doc.go"
  log "resolving $mod $ver"
  (cd "$dir" && go mod tidy -e >&2)
}

build_kube() {
  local dir="$CACHE/src-$K8S_VERSION"
  local staging="v0.${K8S_VERSION#v1.}"
  make_module "$dir" k8s.io/kubernetes "$K8S_VERSION" "$staging" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kubectl
  for cmd in kube-apiserver kube-controller-manager kubectl; do
    log "building $cmd (first run only; several minutes on 2 cores)"
    (cd "$dir" && go build -trimpath -ldflags "-s -w \
      -X k8s.io/component-base/version.gitVersion=$K8S_VERSION \
      -X k8s.io/component-base/version.gitMajor=1 \
      -X k8s.io/component-base/version.gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2) \
      -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION" \
      -o "$OUT/$cmd" "k8s.io/kubernetes/cmd/$cmd")
  done
}

build_etcd() {
  local dir="$CACHE/src-etcd-$ETCD_VERSION"
  # etcd's sibling modules are published at the same version: no replaces needed.
  make_module "$dir" go.etcd.io/etcd/server/v3 "$ETCD_VERSION" "" go.etcd.io/etcd/server/v3
  log "building etcd $ETCD_VERSION"
  (cd "$dir" && go build -trimpath -ldflags "-s -w" -o "$OUT/etcd" go.etcd.io/etcd/server/v3)
}

[[ -x "$OUT/etcd" ]] || build_etcd
[[ -x "$OUT/kube-apiserver" && -x "$OUT/kube-controller-manager" && -x "$OUT/kubectl" ]] || build_kube
log "built into $OUT"
echo "$OUT"
