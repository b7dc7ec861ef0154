#!/usr/bin/env bash
# Restarts one component of the running local control plane, as a crash
# would: kills it (SIGKILL by default; --signal TERM for a clean stop) by its
# recorded PID, starts it again with the command line cluster/up.sh recorded,
# appending to its log and updating its PID file, and waits until the API
# server answers /readyz again (for etcd, also etcd's own /health; for
# PostgreSQL, only pg_isready, since it may run without the rest). A
# component that is not running is simply started again. Acts on the cluster
# in MESHPLANE_CLUSTER_DIR (the chaos suite passes the tests' own,
# target/cluster-test), by default the developer's target/cluster.
#
#   cluster/restart.sh [--signal KILL|TERM] [--timeout SECONDS] etcd|kube-apiserver|kube-controller-manager|kube-scheduler|kwok|postgres
#
# TERM means a clean stop: for PostgreSQL that is SIGINT, its fast shutdown
# (its SIGTERM waits for every client to leave). Prints the seconds from the
# kill until ready. The chaos suite uses it.
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
  etcd | kube-apiserver | kube-controller-manager | kube-scheduler | kwok | postgres) ;;
  *) die "cannot restart $name: not a component of the local control plane" ;;
esac
pid_file="$PIDS/$name.pid"
cmd_file="$PIDS/$name.cmd"
[ "$name" = postgres ] || [ -f "$KUBECONFIG_FILE" ] || die "the local cluster in $STATE is not running; start it with: MESHPLANE_CLUSTER_DIR=$STATE cluster/up.sh"
[ -f "$cmd_file" ] || die "no recorded command line for $name ($cmd_file); the cluster predates it: stop it ($(down_command)) and start it again"

# The recorded command line, back into an array (it was written with %q).
eval "cmd=($(cat "$cmd_file"))"
[ "$signal" != TERM ] || signal=$(stop_signal "$name")

# The PIDs of the live processes whose parent is $1.
children() {
  local f line fields
  for f in /proc/[0-9]*/stat; do
    read -r line 2>/dev/null <"$f" || continue
    # Fields after the command name, which may hold spaces: state, ppid.
    read -r -a fields <<<"${line##*) }"
    [ "${fields[1]}" = "$1" ] && [ "${fields[0]}" != Z ] && echo "${f//[^0-9]/}"
  done
  return 0
}

start=$(date +%s.%N)
if pid_alive "$pid_file"; then
  pid=$(cat "$pid_file")
  # PostgreSQL's server processes outlive a killed postmaster for a moment,
  # and a new postmaster must not start beside them: they are waited for.
  server_processes=()
  [ "$name" != postgres ] || read -r -a server_processes <<<"$(children "$pid" | tr '\n' ' ')"
  kill "-$signal" "$pid"
  deadline=$((SECONDS + 30))
  for p in "$pid" "${server_processes[@]}"; do
    until exited "$p"; do
      if [ $SECONDS -ge $deadline ]; then
        kill -KILL "$p" 2>/dev/null || true
      fi
      sleep 0.05
    done
  done
  # A killed postmaster leaves its lock files (postmaster.pid, and its
  # socket's .lock) naming it. A new one ignores a dead PID there, but not a
  # zombie, which it takes for a running server (a container whose PID 1
  # reaps no orphans keeps it one): with every server process gone, the
  # stale files go too.
  if [ "$name" = postgres ]; then
    for lock_file in "$POSTGRES_STATE/data/postmaster.pid" "$POSTGRES_STATE"/run/.s.PGSQL.*.lock; do
      [ "$(head -n1 "$lock_file" 2>/dev/null)" != "$pid" ] || rm -f "$lock_file"
    done
  fi
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
ready() {
  case "$name" in
    postgres)
      "$(bin_path pg_isready)" -q -h 127.0.0.1 -p "$(sed -n 's/.* -p \([0-9]*\).*/\1/p' "$cmd_file")" -t 1
      ;;
    etcd)
      curl -sf "$(sed -n 's/.*--listen-client-urls \([^ ]*\).*/\1/p' "$cmd_file")/health" >/dev/null 2>&1 &&
        kubectl get --raw /readyz >/dev/null 2>&1
      ;;
    *) kubectl get --raw /readyz >/dev/null 2>&1 ;;
  esac
}
deadline=$((SECONDS + timeout))
until ready; do
  if [ $SECONDS -ge $deadline ]; then
    tail -n 30 "$LOGS/$name.log" >&2 || true
    die "$name did not become ready within ${timeout}s after the restart; log: $LOGS/$name.log"
  fi
  # exited, not pid_alive: a process just started may still be setsid or,
  # for PostgreSQL, setpriv or env, not yet its binary.
  if exited "$(cat "$pid_file")"; then
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
