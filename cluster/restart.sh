#!/usr/bin/env bash
# Restarts one component of the running local control plane, as a crash
# would: kills it (SIGKILL by default; --signal TERM for a clean stop) by its
# recorded PID, starts it again with the command line cluster/up.sh recorded,
# appending to its log and updating its PID file, and waits until the API
# server answers /readyz again (for etcd, also etcd's own /health). A
# component that is not running is simply started again. Acts on the cluster
# in MESHPLANE_CLUSTER_DIR (the chaos suite passes the tests' own,
# target/cluster-test), by default the developer's target/cluster.
#
#   cluster/restart.sh [--signal KILL|TERM] [--timeout SECONDS] etcd|kube-apiserver|kube-controller-manager|kube-scheduler|kwok
#
# Prints the seconds from the kill until ready. The chaos suite uses it.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

signal=KILL
timeout=120
while [ $# -gt 1 ]; do
  case "$1" in
    --signal) signal=$2; shift 2 ;;
    --timeout) timeout=$2; shift 2 ;;
    *) die "unknown option $1" ;;
  esac
done
[ $# -eq 1 ] || die "usage: cluster/restart.sh [--signal KILL|TERM] [--timeout SECONDS] COMPONENT"
name=$1
case "$name" in
  etcd | kube-apiserver | kube-controller-manager | kube-scheduler | kwok) ;;
  *) die "cannot restart $name: not a component of the local control plane" ;;
esac
pid_file="$PIDS/$name.pid"
cmd_file="$PIDS/$name.cmd"
[ -f "$KUBECONFIG_FILE" ] || die "the local cluster in $STATE is not running; start it with: MESHPLANE_CLUSTER_DIR=$STATE cluster/up.sh"
[ -f "$cmd_file" ] || die "no recorded command line for $name ($cmd_file); the cluster predates it: stop it ($(down_command)) and start it again"

# The recorded command line, back into an array (it was written with %q).
eval "cmd=($(cat "$cmd_file"))"

# Gone means exited and its files (listening sockets) closed: the process
# is reaped or a zombie. Its executable link vanishes earlier, while the
# sockets are still open.
exited() {
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 0
  [ -z "$state" ] || [ "$state" = Z ]
}

start=$(date +%s.%N)
if pid_alive "$pid_file"; then
  pid=$(cat "$pid_file")
  kill "-$signal" "$pid"
  deadline=$((SECONDS + 30))
  until exited "$pid"; do
    if [ $SECONDS -ge $deadline ]; then
      kill -KILL "$pid" 2>/dev/null || true
    fi
    sleep 0.05
  done
else
  log "$name was not running; starting it"
fi

# Starts it again; a port the old process held can take a moment to be
# free, so a start that dies at once is retried.
relaunch() {
  printf '\n==> %s restarted by cluster/restart.sh (signal %s) at %s\n' "$name" "$signal" "$(date -u +%FT%TZ)" >>"$LOGS/$name.log"
  setsid "${cmd[@]}" >>"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$pid_file"
}
relaunch
attempts=1

kubectl() { "$(bin_path kubectl)" --kubeconfig "$KUBECONFIG_FILE" "$@"; }
etcd_url=$(sed -n 's/.*--listen-client-urls \([^ ]*\).*/\1/p' "$PIDS/etcd.cmd")
deadline=$((SECONDS + timeout))
until { [ "$name" != etcd ] || curl -sf "$etcd_url/health" >/dev/null 2>&1; } &&
  kubectl get --raw /readyz >/dev/null 2>&1; do
  if [ $SECONDS -ge $deadline ]; then
    tail -n 30 "$LOGS/$name.log" >&2 || true
    die "$name did not become ready within ${timeout}s after the restart; log: $LOGS/$name.log"
  fi
  if ! pid_alive "$pid_file"; then
    if [ $attempts -ge 5 ]; then
      tail -n 30 "$LOGS/$name.log" >&2
      die "$name exited after the restart ($attempts attempts); log: $LOGS/$name.log"
    fi
    sleep 1
    relaunch
    attempts=$((attempts + 1))
  fi
  sleep 0.1
done
end=$(date +%s.%N)
awk -v s="$start" -v e="$end" 'BEGIN { printf "%.1f\n", e - s }'
log "$name restarted and ready"
