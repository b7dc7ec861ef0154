#!/usr/bin/env bash
# Stops exactly the processes `cluster/up.sh` started (by their recorded PIDs,
# never by name), and the meshplane process the tests started, and removes
# the cluster's state folder: MESHPLANE_CLUSTER_DIR, by default the
# developer's target/cluster (`make test-cluster-down` names the tests'
# target/cluster-test).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

stopped=0
# Reverse start order: clients of the API server first, etcd last.
for c in meshplane kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do
  f="$PIDS/$c.pid"
  if pid_alive "$f"; then
    kill -TERM "$(cat "$f")" 2>/dev/null || true
    stopped=$((stopped + 1))
  fi
done
deadline=$((SECONDS + 20))
for c in meshplane kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do
  f="$PIDS/$c.pid"
  while pid_alive "$f"; do
    if [ $SECONDS -ge $deadline ]; then
      kill -KILL "$(cat "$f")" 2>/dev/null || true
    fi
    sleep 0.1
  done
done
rm -rf "$STATE"
log "local control plane stopped ($stopped processes) and $STATE removed"
