#!/usr/bin/env bash
# Stops exactly the processes `cluster/up.sh` started (by their recorded PIDs,
# never by name), PostgreSQL among them, and the meshplane process the tests
# started, and removes the cluster's state folder, PostgreSQL's data with it:
# MESHPLANE_CLUSTER_DIR, by default the developer's target/cluster
# (`make test-cluster-down` names the tests' target/cluster-test).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

stopped=0
# Reverse start order: clients of the API server first (meshplane, also
# PostgreSQL's client, before PostgreSQL), etcd last.
COMPONENTS=(meshplane kwok kube-scheduler kube-controller-manager postgres kube-apiserver etcd)
for c in "${COMPONENTS[@]}"; do
  f="$PIDS/$c.pid"
  if pid_alive "$f"; then
    kill "-$(stop_signal "$c")" "$(cat "$f")" 2>/dev/null || true
    stopped=$((stopped + 1))
  fi
done
deadline=$((SECONDS + 20))
for c in "${COMPONENTS[@]}"; do
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
