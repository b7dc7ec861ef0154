#!/usr/bin/env bash
# `make bench`: the scale benchmark (benches/scale.rs) at each size, each on a
# fresh local control plane of its own (target/bench/cluster-<D>x<N>, with a
# PersistentVolume pool big enough for the operator's and the floor's claims),
# torn down afterwards. Results: target/bench/scale-<D>x<N>.json and a table
# on stdout, the cluster's logs in target/bench/logs-<D>x<N>/; BENCHMARKS.md
# records them.
#
#   BENCH_SIZES="50x1000 1000x5000"   sizes as <domains>x<products>
#   BENCH_STEADY_SECS=600             the steady-state window
#   BENCH_CONCURRENCY=8               parallel applies (the operator's default)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
require_tools cargo go openssl curl

sizes=${BENCH_SIZES:-"50x1000 1000x5000"}
# Build first, so no size waits for the compiler with a cluster running.
cargo bench --bench scale --no-run

for size in $sizes; do
  domains=${size%x*}
  products=${size#*x}
  export MESHPLANE_CLUSTER_DIR="$REPO_ROOT/target/bench/cluster-$size"
  # benches/scale.rs finds its cluster as the tests do, through tests/support.
  export MESHPLANE_TEST_CLUSTER_DIR=$MESHPLANE_CLUSTER_DIR
  "$CLUSTER_SRC/down.sh" >/dev/null 2>&1 || true
  log "size $size: starting a control plane with $((2 * products + 100)) PersistentVolumes"
  # The logs (the operator's, the API server's) outlive the cluster.
  keep_logs() { rm -rf "$REPO_ROOT/target/bench/logs-$size"; cp -r "$MESHPLANE_CLUSTER_DIR/logs" "$REPO_ROOT/target/bench/logs-$size" || true; }
  trap 'keep_logs; "$CLUSTER_SRC/down.sh"' EXIT
  # The scale benchmark uses no data engine.
  AUDIT=false POSTGRES=false PV_POOL=$((2 * products + 100)) "$CLUSTER_SRC/up.sh"
  BENCH_DOMAINS=$domains BENCH_PRODUCTS=$products cargo bench --bench scale
  keep_logs
  "$CLUSTER_SRC/down.sh"
  trap - EXIT
done
