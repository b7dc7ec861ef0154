# shellcheck shell=bash
# Shared settings of the local control plane: pinned versions, where binaries
# are cached, where the running cluster keeps its state. Sourced by the other
# scripts in this folder; defines nothing that runs on its own.

# One Kubernetes release, the one k8s-openapi's `v1_34` feature targets.
KUBERNETES_VERSION=v1.34.4
# The staging modules (k8s.io/api, client-go, ...) are published as v0.x.y.
KUBERNETES_STAGING_VERSION=v0.34.4
ETCD_VERSION=v3.6.16
KWOK_VERSION=v0.7.0
HELM_VERSION=v3.19.5

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CLUSTER_SRC="$REPO_ROOT/cluster"
CACHE_ROOT="${MESHPLANE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshplane}"
# Each component lives in a folder keyed by its version, so a version bump
# builds anew and a warm cache never rebuilds.
KUBERNETES_BIN="$CACHE_ROOT/kubernetes-$KUBERNETES_VERSION/bin"
ETCD_BIN="$CACHE_ROOT/etcd-$ETCD_VERSION/bin"
KWOK_BIN="$CACHE_ROOT/kwok-$KWOK_VERSION/bin"
HELM_BIN="$CACHE_ROOT/helm-$HELM_VERSION/bin"
# kstatus: a small client of sigs.k8s.io/cli-utils' status library (GitOps health).
KSTATUS_VERSION=v0.37.2
# Keyed by its source too: it is ours, and changes without a version bump.
KSTATUS_BIN="$CACHE_ROOT/kstatus-$KSTATUS_VERSION-$(cat "$(dirname "${BASH_SOURCE[0]}")"/modules/kstatus/{go.mod,go.sum,main.go} | sha256sum | cut -c1-8)/bin"
KWOK_STAGES="$CACHE_ROOT/kwok-$KWOK_VERSION/stages"
# PostgreSQL is not built: it is Debian's package (cluster/postgres.sh installs
# it), whose server binaries live in /usr/lib/postgresql/<major>/bin. The
# newest major installed is the one used (15 on Debian 12).
postgres_bin_dir() {
  local newest
  newest=$(printf '%s\n' /usr/lib/postgresql/*/bin/postgres | sort -V | tail -n1)
  [ -x "$newest" ] && dirname "$newest"
}

# The state folder (state, ports, logs, PIDs) of the cluster a script acts on:
# the developer's, target/cluster, unless MESHPLANE_CLUSTER_DIR names another.
# The tests run on a cluster of their own, target/cluster-test (or
# MESHPLANE_TEST_CLUSTER_DIR), so what a developer applies never decides a test;
# the Makefile and tests/support hand its folder to these scripts.
DEV_STATE="$REPO_ROOT/target/cluster"
TEST_STATE="${MESHPLANE_TEST_CLUSTER_DIR:-$REPO_ROOT/target/cluster-test}"
STATE="${MESHPLANE_CLUSTER_DIR:-$DEV_STATE}"
PKI="$STATE/pki"
LOGS="$STATE/logs"
PIDS="$STATE/pids"
KUBECONFIG_FILE="$STATE/kubeconfig"
# PostgreSQL's data, socket and credentials (cluster/postgres.sh). admin.env
# holds the connection details of meshplane's admin role, superuser.env those
# of the bootstrap superuser, as KEY=VALUE lines named as libpq's variables.
POSTGRES_STATE="$STATE/postgres"
POSTGRES_ADMIN_ENV="$POSTGRES_STATE/admin.env"
POSTGRES_SUPERUSER_ENV="$POSTGRES_STATE/superuser.env"

# Every binary the scripts and tests use, in the order `bin_path` knows them.
bin_path() {
  case "$1" in
    kube-apiserver | kube-controller-manager | kube-scheduler | kubectl) echo "$KUBERNETES_BIN/$1" ;;
    etcd) echo "$ETCD_BIN/etcd" ;;
    kwok) echo "$KWOK_BIN/kwok" ;;
    helm) echo "$HELM_BIN/helm" ;;
    kstatus) echo "$KSTATUS_BIN/kstatus" ;;
    postgres | initdb | pg_isready | psql)
      local dir
      dir=$(postgres_bin_dir) || { echo "PostgreSQL is not installed: cluster/postgres.sh install (as root)" >&2; return 1; }
      echo "$dir/$1"
      ;;
    *) echo "unknown binary $1" >&2; return 1 ;;
  esac
}

# The command that stops the cluster in $STATE, for messages.
down_command() {
  case "$STATE" in
    "$DEV_STATE") echo "make cluster-down" ;;
    "$REPO_ROOT/target/cluster-test") echo "make test-cluster-down" ;;
    *) echo "MESHPLANE_CLUSTER_DIR=$STATE cluster/down.sh" ;;
  esac
}

# The signal that stops a component cleanly and soon. PostgreSQL's SIGTERM is
# a "smart" shutdown, which waits for every client to disconnect; SIGINT is
# its fast one (clients disconnected, a checkpoint, exit).
stop_signal() {
  case "$1" in
    postgres) echo INT ;;
    *) echo TERM ;;
  esac
}

# Installs Debian packages (as root). The package lists are refreshed only
# when needed: a warm machine installs without touching the network for them.
apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y "$@"; then
    log "apt-get install failed; updating the package lists and trying again"
    apt-get update
    apt-get install -y "$@"
  fi
}

log() { printf '\033[1m==>\033[0m %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Fails at once, naming what is missing and how to install it.
require_tools() {
  local missing=()
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local t
  for t in "${missing[@]}"; do
    case "$t" in
      go) echo "missing: go (install Go 1.24 or newer: apt-get install golang-go, or the official toolchain)" >&2 ;;
      cargo) echo "missing: cargo (install Rust with rustup: rustup toolchain install stable)" >&2 ;;
      openssl) echo "missing: openssl (apt-get install -y openssl)" >&2 ;;
      curl) echo "missing: curl (apt-get install -y curl)" >&2 ;;
      *) echo "missing: $t (apt-get install -y $t)" >&2 ;;
    esac
  done
  exit 1
}

# Sets the variable named $1 to a TCP port on 127.0.0.1 that nothing listens
# on and no earlier call picked, trying the preferred port $2 first so a lone
# cluster keeps familiar ports.
pick_port() {
  local var=$1 port=$2 tries=0
  while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || case " ${RESERVED_PORTS:-} " in *" $port "*) true ;; *) false ;; esac; do
    port=$((port + 1))
    tries=$((tries + 1))
    [ "$tries" -lt 200 ] || die "no free port near $2"
  done
  RESERVED_PORTS="${RESERVED_PORTS:-} $port"
  printf -v "$var" '%s' "$port"
}

# Gone means exited and its files (listening sockets) closed: the process
# is reaped or a zombie. Its executable link vanishes earlier, while the
# sockets are still open.
exited() {
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 0
  [ -z "$state" ] || [ "$state" = Z ]
}

# True when the PID in the given file is alive and still runs the binary we
# started (a recycled PID running something else does not count).
pid_alive() {
  local file=$1 pid exe
  [ -f "$file" ] || return 1
  pid=$(cat "$file")
  [ -n "$pid" ] && [ -d "/proc/$pid" ] || return 1
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
  # A binary rebuilt while its process runs reads "<path> (deleted)".
  [ "${exe% (deleted)}" = "$(cat "$file.exe" 2>/dev/null)" ]
}
