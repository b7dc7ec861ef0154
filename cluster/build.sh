#!/usr/bin/env bash
# Builds the local control plane's binaries from the Go module proxy (no
# download site needed) into a cache outside the repo, keyed by version:
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubectl  (cluster/modules/kubernetes)
#   etcd                                                              (cluster/modules/etcd)
#   kwok, helm                                                        (go install at a pinned tag)
#   kstatus (a client of sigs.k8s.io/cli-utils' status library)       (cluster/modules/kstatus)
# plus kwok's node and pod stage configs, copied from its own module.
# A component whose binaries are cached is not rebuilt.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

require_tools go

export GOFLAGS="${GOFLAGS:--buildvcs=false}"
export CGO_ENABLED=0
BUILD_DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)

# Runs a `go build`/`go install` with -v output to a log and prints a line of
# progress every 30 seconds: the first build compiles thousands of packages.
run_go() {
  local name=$1 logfile=$2
  shift 2
  local start=$SECONDS
  "$@" >"$logfile" 2>&1 &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    for _ in $(seq 30); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 1
    done
    kill -0 "$pid" 2>/dev/null || break
    log "  $name: still building, $(grep -c . "$logfile" || true) packages compiled, $((SECONDS - start))s elapsed"
  done
  if ! wait "$pid"; then
    tail -n 40 "$logfile" >&2
    die "building $name failed; full log: $logfile"
  fi
  log "  $name: built in $((SECONDS - start))s"
}

# All needed binaries present and executable?
have() {
  local b
  for b in "$@"; do [ -x "$b" ] || return 1; done
}

build_kubernetes() {
  local out=$KUBERNETES_BIN
  have "$out/kube-apiserver" "$out/kube-controller-manager" "$out/kube-scheduler" "$out/kubectl" && return 0
  log "building Kubernetes $KUBERNETES_VERSION: kube-apiserver, kube-controller-manager, kube-scheduler, kubectl"
  log "  (the first build compiles ~2400 packages: about 6-10 minutes on 2 cores)"
  local major minor
  major=${KUBERNETES_VERSION#v}; major=${major%%.*}
  minor=${KUBERNETES_VERSION#v"$major".}; minor=${minor%%.*}
  # The version variables that `kubectl version`, /version and helm read;
  # without them the binaries call themselves v0.0.0-master.
  local ldflags="-s -w"
  local pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$BUILD_DATE"
  done
  local tmp="$out.partial"
  rm -rf "$tmp" && mkdir -p "$tmp" "$CACHE_ROOT/logs"
  (cd "$CLUSTER_SRC/modules/kubernetes" &&
    run_go kubernetes "$CACHE_ROOT/logs/kubernetes-build.log" \
      go build -v -trimpath -ldflags "$ldflags" -o "$tmp/" \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl)
  rm -rf "$out" && mv "$tmp" "$out"
}

build_etcd() {
  have "$ETCD_BIN/etcd" && return 0
  log "building etcd $ETCD_VERSION"
  local tmp="$ETCD_BIN.partial"
  rm -rf "$tmp" && mkdir -p "$tmp" "$CACHE_ROOT/logs"
  (cd "$CLUSTER_SRC/modules/etcd" &&
    run_go etcd "$CACHE_ROOT/logs/etcd-build.log" \
      go build -v -trimpath -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3)
  rm -rf "$ETCD_BIN" && mv "$tmp" "$ETCD_BIN"
}

build_kwok() {
  if ! have "$KWOK_BIN/kwok"; then
    log "building kwok $KWOK_VERSION"
    local tmp="$KWOK_BIN.partial"
    rm -rf "$tmp" && mkdir -p "$tmp" "$CACHE_ROOT/logs"
    GOBIN="$tmp" run_go kwok "$CACHE_ROOT/logs/kwok-build.log" \
      go install -v -trimpath -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v} -X sigs.k8s.io/kwok/pkg/consts.KubeVersion=${KUBERNETES_VERSION#v}" \
      "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
    rm -rf "$KWOK_BIN" && mv "$tmp" "$KWOK_BIN"
  fi
  if [ ! -s "$KWOK_STAGES/stages.yaml" ]; then
    # kwok's own stage configs: fake Nodes become Ready (and keep a Lease),
    # Pods become Running, and Pods owned by a Job complete.
    local dir
    dir=$(go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/.*"Dir": "\(.*\)",*/\1/p')
    [ -d "$dir" ] || die "could not locate the kwok module source"
    mkdir -p "$KWOK_STAGES"
    local f first=1
    : >"$KWOK_STAGES/stages.yaml.partial"
    for f in node/fast/node-initialize.yaml pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
      [ "$first" = 1 ] || echo '---' >>"$KWOK_STAGES/stages.yaml.partial"
      first=0
      cat "$dir/kustomize/stage/$f" >>"$KWOK_STAGES/stages.yaml.partial"
    done
    mv "$KWOK_STAGES/stages.yaml.partial" "$KWOK_STAGES/stages.yaml"
  fi
}

build_helm() {
  have "$HELM_BIN/helm" && return 0
  log "building helm $HELM_VERSION"
  local minor=${KUBERNETES_VERSION#v1.}
  minor=${minor%%.*}
  local ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  # helm's default capabilities (`.Capabilities.KubeVersion` in `helm template`)
  # and its lint rules follow the Kubernetes release we pin.
  local pkg
  for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
    ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$minor"
  done
  local tmp="$HELM_BIN.partial"
  rm -rf "$tmp" && mkdir -p "$tmp" "$CACHE_ROOT/logs"
  GOBIN="$tmp" run_go helm "$CACHE_ROOT/logs/helm-build.log" \
    go install -v -trimpath -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  rm -rf "$HELM_BIN" && mv "$tmp" "$HELM_BIN"
}

build_kstatus() {
  have "$KSTATUS_BIN/kstatus" && return 0
  log "building kstatus (sigs.k8s.io/cli-utils $KSTATUS_VERSION)"
  local tmp="$KSTATUS_BIN.partial"
  rm -rf "$tmp" && mkdir -p "$tmp" "$CACHE_ROOT/logs"
  (cd "$CLUSTER_SRC/modules/kstatus" &&
    run_go kstatus "$CACHE_ROOT/logs/kstatus-build.log" go build -v -trimpath -ldflags "-s -w" -o "$tmp/kstatus" .)
  rm -rf "$KSTATUS_BIN" && mv "$tmp" "$KSTATUS_BIN"
}

start=$SECONDS
build_kubernetes
build_etcd
build_kwok
build_helm
build_kstatus
log "binaries ready in $CACHE_ROOT ($((SECONDS - start))s)"
