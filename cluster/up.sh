#!/usr/bin/env bash
# Starts the local control plane: etcd, kube-apiserver (RBAC, client
# certificates, service-account tokens, bound to 127.0.0.1), kube-controller-
# manager, kube-scheduler and kwok with fake Nodes, plus a default
# StorageClass backed by a pool of static hostPath PersistentVolumes; and
# PostgreSQL on 127.0.0.1 (cluster/postgres.sh), the first data engine of
# meshplane's data plane, with meshplane's admin credentials in
# postgres/admin.env. Writes kubeconfig in its state folder (target/cluster,
# the developer's; the tests start theirs in target/cluster-test). A second
# call reports the running cluster, starting PostgreSQL again if it was
# stopped (cluster/postgres.sh stop), on its data.
#
# Settings (environment): NODES (fake nodes, default 2), PV_POOL (static
# volumes, default 300), MESHPLANE_CLUSTER_DIR (state folder), PROFILING=true
# (the API server serves /debug/pprof, e.g. `kubectl get --raw
# '/debug/pprof/profile?seconds=30' > cpu.pprof`, then `go tool pprof -top`),
# AUDIT=false (no audit log; by default every write request is logged, as
# one JSON line with who wrote what, to logs/audit.log in the state folder),
# POSTGRES=false (no PostgreSQL; by default it runs, installed with apt-get
# when missing, which needs root).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

NODES=${NODES:-2}
PV_POOL=${PV_POOL:-300}
PROFILING=${PROFILING:-false}
AUDIT=${AUDIT:-true}
POSTGRES=${POSTGRES:-true}
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

kubectl() { "$(bin_path kubectl)" --kubeconfig "$KUBECONFIG_FILE" "$@"; }

report() {
  local server postgres="" data=""
  server=$(sed -n 's/^ *server: //p' "$KUBECONFIG_FILE" | head -n1)
  if pid_alive "$PIDS/postgres.pid"; then
    postgres="PostgreSQL on 127.0.0.1:$(sed -n 's/^PGPORT=//p' "$POSTGRES_ADMIN_ENV"), database meshplane; meshplane's admin: $POSTGRES_ADMIN_ENV
"
    data=" (PostgreSQL's data too)"
  fi
  cat <<EOF
local control plane is running ($KUBERNETES_VERSION) at $server
  export KUBECONFIG=$KUBECONFIG_FILE
  export PATH=$KUBERNETES_BIN:$HELM_BIN:\$PATH
  kubectl get nodes
${postgres}logs: $LOGS/   stop and remove it$data: $(down_command)
EOF
}

running() {
  local c
  for c in "${COMPONENTS[@]}"; do pid_alive "$PIDS/$c.pid" || return 1; done
  [ -f "$KUBECONFIG_FILE" ] && kubectl get --raw /readyz >/dev/null 2>&1
}

if running; then
  if [ "$POSTGRES" = true ] && ! pid_alive "$PIDS/postgres.pid"; then
    "$CLUSTER_SRC/postgres.sh" start >/dev/null
  fi
  report
  exit 0
fi
if compgen -G "$PIDS/*.pid" >/dev/null; then
  log "a previous cluster in $STATE is partly running; stopping it first"
  "$CLUSTER_SRC/down.sh"
fi

require_tools go openssl curl
"$CLUSTER_SRC/build.sh"
[ "$POSTGRES" != true ] || "$CLUSTER_SRC/postgres.sh" install

start=$SECONDS
rm -rf "$STATE"
mkdir -p "$PKI" "$LOGS" "$PIDS" "$STATE/etcd" "$STATE/volumes"

# --- certificates -----------------------------------------------------------
log "generating certificates"
(
  cd "$PKI"
  openssl_quiet() { openssl "$@" 2>/dev/null; }
  openssl_quiet req -x509 -newkey rsa:2048 -nodes -days 3650 -keyout ca.key -out ca.crt -subj "/CN=meshplane-local-ca"
  # A certificate signed by the CA: $1 file stem, $2 subject, $3 optional SANs.
  sign() {
    local ext=""
    openssl_quiet req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2"
    printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n' >"$1.ext"
    if [ -n "${3:-}" ]; then
      printf 'extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=%s\n' "$3" >>"$1.ext"
    else
      printf 'extendedKeyUsage=clientAuth\n' >>"$1.ext"
    fi
    openssl_quiet x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -out "$1.crt" -extfile "$1.ext"
    rm -f "$1.csr" "$1.ext"
  }
  sign apiserver "/CN=kube-apiserver" "IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  sign admin "/O=system:masters/CN=meshplane-admin"
  sign controller-manager "/CN=system:kube-controller-manager"
  sign scheduler "/CN=system:kube-scheduler"
  sign kwok "/O=system:masters/CN=kwok"
  openssl_quiet genrsa -out sa.key 2048
  openssl_quiet rsa -in sa.key -pubout -out sa.pub
)

# --- ports ------------------------------------------------------------------
pick_port ETCD_PORT 2379
pick_port ETCD_PEER_PORT 2380
pick_port APISERVER_PORT 6443
pick_port KCM_PORT 10257
pick_port SCHEDULER_PORT 10259
pick_port KWOK_PORT 10247
SERVER="https://127.0.0.1:$APISERVER_PORT"

# A kubeconfig for one client certificate.
write_kubeconfig() {
  local file=$1 user=$2
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: meshplane-local
  cluster:
    server: $SERVER
    certificate-authority: $PKI/ca.crt
users:
- name: $user
  user:
    client-certificate: $PKI/$user.crt
    client-key: $PKI/$user.key
contexts:
- name: meshplane-local
  context:
    cluster: meshplane-local
    user: $user
current-context: meshplane-local
EOF
}
write_kubeconfig "$STATE/controller-manager.kubeconfig" controller-manager
write_kubeconfig "$STATE/scheduler.kubeconfig" scheduler
write_kubeconfig "$STATE/kwok.kubeconfig" kwok
# The admin kubeconfig is written last: its presence means "cluster is up".

# Starts one component in its own session, so it outlives this script and
# `make`, recording its PID and binary for cluster-down, and its command line
# (shell-quoted) for cluster/restart.sh.
launch() {
  local name=$1
  shift
  local bin
  bin=$(bin_path "$name")
  printf '%q ' "$bin" "$@" >"$PIDS/$name.cmd"
  setsid "$bin" "$@" >"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$PIDS/$name.pid"
  readlink -f "$bin" >"$PIDS/$name.pid.exe"
}

# Polls a command until it succeeds, failing with the component's log tail.
wait_for() {
  local what=$1 deadline=$((SECONDS + $2)) logfile=$3
  shift 3
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
      tail -n 30 "$logfile" >&2 || true
      die "$what did not become ready in time; log: $logfile"
    fi
    sleep 0.2
  done
}

# --- etcd -------------------------------------------------------------------
log "starting etcd $ETCD_VERSION on 127.0.0.1:$ETCD_PORT"
launch etcd \
  --name local --data-dir "$STATE/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "local=http://127.0.0.1:$ETCD_PEER_PORT" \
  --quota-backend-bytes 8589934592 --unsafe-no-fsync --log-level warn
wait_for etcd 60 "$LOGS/etcd.log" curl -sf "http://127.0.0.1:$ETCD_PORT/health"

# --- kube-apiserver ---------------------------------------------------------
# The audit log records writes only (who, which verb, which object), once
# each: what tests read to attribute a write to the client that made it.
# meshplane's own GETs are logged too: it reads a child whole only when its
# cache cannot tell whether the child holds meshplane's fields, which the
# tests count.
audit=()
if [ "$AUDIT" = true ]; then
  cat >"$STATE/audit-policy.yaml" <<'EOF'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted]
rules:
- level: None
  resources: [{group: coordination.k8s.io, resources: [leases]}]
- level: Metadata
  users: ["system:serviceaccount:meshplane-system:meshplane"]
  verbs: [get]
- level: None
  verbs: [get, list, watch]
- level: Metadata
EOF
  audit=(--audit-policy-file "$STATE/audit-policy.yaml" --audit-log-path "$LOGS/audit.log"
    --audit-log-format json --audit-log-maxsize 0)
fi
log "starting kube-apiserver $KUBERNETES_VERSION on $SERVER"
launch kube-apiserver \
  --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$APISERVER_PORT" \
  --cert-dir "$PKI" --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
  --client-ca-file "$PKI/ca.crt" \
  --authorization-mode RBAC \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
  --api-audiences https://kubernetes.default.svc.cluster.local \
  --service-cluster-ip-range 10.0.0.0/24 \
  --allow-privileged=true \
  --enable-admission-plugins NamespaceLifecycle,LimitRanger,ServiceAccount,DefaultStorageClass,ResourceQuota,PodSecurity,StorageObjectInUseProtection,DefaultTolerationSeconds,MutatingAdmissionWebhook,ValidatingAdmissionWebhook,ValidatingAdmissionPolicy \
  --profiling="$PROFILING" "${audit[@]}" --v 1
write_kubeconfig "$STATE/admin.kubeconfig" admin
KUBECONFIG_FILE_READY=$KUBECONFIG_FILE
KUBECONFIG_FILE="$STATE/admin.kubeconfig"
# PostgreSQL (its initdb too) starts while the API server boots, which takes
# longer, on a port none of the ones picked above.
if [ "$POSTGRES" = true ]; then
  RESERVED_PORTS=$RESERVED_PORTS "$CLUSTER_SRC/postgres.sh" start >/dev/null
fi
wait_for kube-apiserver 120 "$LOGS/kube-apiserver.log" kubectl get --raw /readyz

# --- controllers, scheduler, kwok -------------------------------------------
log "starting kube-controller-manager, kube-scheduler and kwok"
launch kube-controller-manager \
  --kubeconfig "$STATE/controller-manager.kubeconfig" \
  --authentication-kubeconfig "$STATE/controller-manager.kubeconfig" \
  --authorization-kubeconfig "$STATE/controller-manager.kubeconfig" \
  --bind-address 127.0.0.1 --secure-port "$KCM_PORT" --cert-dir "$PKI/controller-manager" \
  --use-service-account-credentials=true \
  --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
  --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
  --controllers '*' --leader-elect=false \
  --concurrent-gc-syncs 10 --concurrent-namespace-syncs 5 --kube-api-qps 100 --kube-api-burst 200 \
  --resource-quota-sync-period 15s \
  --profiling=false --v 1
launch kube-scheduler \
  --kubeconfig "$STATE/scheduler.kubeconfig" \
  --authentication-kubeconfig "$STATE/scheduler.kubeconfig" \
  --authorization-kubeconfig "$STATE/scheduler.kubeconfig" \
  --bind-address 127.0.0.1 --secure-port "$SCHEDULER_PORT" --cert-dir "$PKI/scheduler" \
  --leader-elect=false --profiling=false --v 1
launch kwok \
  --kubeconfig "$STATE/kwok.kubeconfig" \
  --config "$KWOK_STAGES/stages.yaml" \
  --manage-all-nodes=false \
  --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
  --node-lease-duration-seconds 40 \
  --server-address "127.0.0.1:$KWOK_PORT" \
  --cidr 10.244.0.0/16 --node-ip 10.244.255.1

# --- nodes and storage ------------------------------------------------------
log "creating $NODES fake nodes, the default StorageClass and $PV_POOL PersistentVolumes"
{
  for i in $(seq 1 "$NODES"); do
    cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/hostname: kwok-node-$i
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    type: kwok
status:
  allocatable: {cpu: "64", memory: 256Gi, pods: "1000"}
  capacity: {cpu: "64", memory: 256Gi, pods: "1000"}
EOF
  done
  cat <<EOF
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: standard
  annotations:
    storageclass.kubernetes.io/is-default-class: "true"
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: Immediate
reclaimPolicy: Retain
EOF
} | kubectl apply -f - >/dev/null
"$CLUSTER_SRC/pv-pool.sh" 1 "$PV_POOL" | kubectl apply -f - >/dev/null

# Ready means usable: nodes Ready (kwok), the default ServiceAccount made
# (controller-manager), so a test's first Pod is not refused.
wait_for "fake nodes" 60 "$LOGS/kwok.log" kubectl wait --for=condition=Ready node --all --timeout=5s
wait_for kube-controller-manager 60 "$LOGS/kube-controller-manager.log" kubectl get serviceaccount default -n default

cp "$STATE/admin.kubeconfig" "$KUBECONFIG_FILE_READY.partial"
mv "$KUBECONFIG_FILE_READY.partial" "$KUBECONFIG_FILE_READY"
KUBECONFIG_FILE=$KUBECONFIG_FILE_READY
log "control plane ready in $((SECONDS - start))s"
report
