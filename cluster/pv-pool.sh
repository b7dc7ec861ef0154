#!/usr/bin/env bash
# Prints PersistentVolume manifests pv-$1 .. pv-$2 of the default StorageClass:
# hostPath volumes under the cluster's state folder, which the controller-
# manager's binder matches to claims. Benchmarks grow the pool with it:
#   cluster/pv-pool.sh 301 5000 | kubectl apply -f -
set -euo pipefail
source "$(dirname "$0")/lib.sh"
for i in $(seq "$1" "$2"); do
  cat <<YAML
---
apiVersion: v1
kind: PersistentVolume
metadata:
  name: pv-$i
  labels:
    meshplane.dev/local-pool: "true"
spec:
  storageClassName: standard
  capacity: {storage: 100Gi}
  accessModes: [ReadWriteOnce, ReadWriteMany, ReadOnlyMany]
  persistentVolumeReclaimPolicy: Retain
  hostPath: {path: $STATE/volumes/pv-$i, type: DirectoryOrCreate}
YAML
done
