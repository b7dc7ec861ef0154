#!/usr/bin/env bash
# PostgreSQL for the local control plane: the first data engine of
# meshplane's data plane, a real server on 127.0.0.1 that cluster/up.sh starts
# beside the API server and cluster/down.sh stops with the rest. It can run
# alone too (MESHPLANE_CLUSTER_DIR names the state folder, as for every
# script here).
#
#   cluster/postgres.sh install   Debian's postgresql, when missing (needs root)
#   cluster/postgres.sh start     the server; initdb on a state folder's first start
#   cluster/postgres.sh stop      stops it by its recorded PID; keeps its data
#
# What start leaves in the state folder: postgres/data (the data directory),
# postgres/run (the server's Unix socket, reachable by its user only),
# postgres/admin.env (meshplane's admin role: not a superuser; it may create
# roles, and schemas in the database `meshplane`), postgres/superuser.env
# (the bootstrap superuser, for setup and for tests that inspect the
# server), logs/postgres.log, and pids/postgres.{pid,pid.exe,cmd}, so
# cluster/restart.sh can restart it. Both env files are mode 0600, KEY=VALUE
# lines without quotes (PGHOST, PGPORT, PGDATABASE, PGUSER, PGPASSWORD,
# PGSSLMODE and DATABASE_URL), which `set -a; . admin.env` and
# `kubectl create secret generic --from-env-file` both read.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

DATA="$POSTGRES_STATE/data"
SOCKET_DIR="$POSTGRES_STATE/run"
PID_FILE="$PIDS/postgres.pid"
DATABASE=meshplane
ADMIN=meshplane_admin
SUPERUSER=bootstrap
PACKAGES=(postgresql)

# PostgreSQL refuses to run as root. As root (CI), initdb and the server run
# as the `postgres` system user Debian's package creates; otherwise as the
# user running this.
if [ "$(id -u)" -eq 0 ]; then
  SERVER_USER=postgres
  AS_SERVER_USER=(setpriv --reuid=postgres --regid=postgres --init-groups)
else
  SERVER_USER=$(id -un)
  AS_SERVER_USER=()
fi
# initdb and the server run with an empty environment (their user can read
# their process's environment, which then holds nothing of ours) and in the
# state folder: postgres resolves its own path from its working directory and
# fails where its user cannot enter it, as when cluster/restart.sh runs from
# a folder of root's.
SERVER_ENV=(env -i -C "$POSTGRES_STATE" PATH=/usr/bin:/bin)

install_postgres() {
  if postgres_bin_dir >/dev/null; then
    return 0
  fi
  command -v apt-get >/dev/null 2>&1 \
    || die "PostgreSQL is missing and there is no apt-get: install its server (initdb, postgres, pg_isready, psql) in /usr/lib/postgresql/<major>/bin"
  [ "$(id -u)" -eq 0 ] \
    || die "PostgreSQL is missing; installing it needs root: sudo $0 install (or: sudo apt-get install -y ${PACKAGES[*]}), or start the cluster without it: POSTGRES=false"
  # Debian's package would create and start a server of its own (cluster
  # "main" on 5432). The local control plane runs its own, so
  # postgresql-common goes first and is told to create no cluster.
  log "installing ${PACKAGES[*]}, with create_main_cluster = false in /etc/postgresql-common/createcluster.conf (no system-wide server)"
  apt_install postgresql-common
  sed -i 's/^#\?[[:space:]]*create_main_cluster[[:space:]]*=.*/create_main_cluster = false/' /etc/postgresql-common/createcluster.conf
  apt_install "${PACKAGES[@]}"
  postgres_bin_dir >/dev/null || die "apt-get installed ${PACKAGES[*]} but there is no /usr/lib/postgresql/<major>/bin/postgres"
}

# As root, the server's user must reach its data through every parent folder
# (a CI checkout may sit in /root, mode 0700): each parent it cannot enter
# gets the search bit for others (entering, not listing), said aloud.
let_server_user_in() {
  [ "$(id -u)" -eq 0 ] || return 0
  "${AS_SERVER_USER[@]}" test -x "$POSTGRES_STATE" && return 0
  local dir=$POSTGRES_STATE parents=()
  while [ "$dir" != / ]; do
    parents=("$dir" "${parents[@]}")
    dir=$(dirname "$dir")
  done
  for dir in "${parents[@]}"; do
    if ! "${AS_SERVER_USER[@]}" test -x "$dir"; then
      log "chmod o+x $dir, so that the $SERVER_USER user reaches $POSTGRES_STATE"
      chmod o+x "$dir"
    fi
  done
}

# An env file (mode 0600) for one role, in libpq's variable names.
write_env() {
  local file=$1 user=$2 password=$3
  (
    umask 077
    cat >"$file.partial" <<EOF
PGHOST=127.0.0.1
PGPORT=$PORT
PGDATABASE=$DATABASE
PGUSER=$user
PGPASSWORD=$password
PGSSLMODE=disable
DATABASE_URL=postgresql://$user:$password@127.0.0.1:$PORT/$DATABASE?sslmode=disable
EOF
  )
  mv "$file.partial" "$file"
}

# The value of KEY $2 in env file $1; empty when either is missing.
env_value() { [ ! -f "$1" ] || sed -n "s/^$2=//p" "$1"; }

# A fresh data directory: passwords only (SCRAM), on loopback only, the
# socket inside the state folder.
init_data() {
  local bin=$1 password=$2
  rm -rf "$DATA" "$SOCKET_DIR"
  mkdir -m 700 "$DATA" "$SOCKET_DIR"
  chown "$SERVER_USER:" "$DATA" "$SOCKET_DIR"
  # initdb reads the password from a file its user can open (not a pipe of
  # ours), deleted at once.
  local pwfile="$POSTGRES_STATE/bootstrap.pw"
  (umask 077; printf '%s\n' "$password" >"$pwfile")
  chown "$SERVER_USER:" "$pwfile"
  printf '\n==> initdb by cluster/postgres.sh at %s\n' "$(date -u +%FT%TZ)" >>"$LOGS/postgres.log"
  # -N: no fsync, like etcd's --unsafe-no-fsync; the data is a scratch copy.
  if ! "${AS_SERVER_USER[@]}" "${SERVER_ENV[@]}" "$bin/initdb" -N -D "$DATA" -U "$SUPERUSER" --pwfile="$pwfile" \
    -A scram-sha-256 -E UTF8 --no-locale >>"$LOGS/postgres.log" 2>&1; then
    rm -f "$pwfile"
    tail -n 20 "$LOGS/postgres.log" >&2
    die "initdb failed; log: $LOGS/postgres.log"
  fi
  rm -f "$pwfile"

  # A Unix socket's path (the folder, then /.s.PGSQL.<port>) is at most 107
  # bytes; a state folder too deep for one gets none (every client here uses
  # TCP).
  local sockets=$SOCKET_DIR
  if [ $((${#SOCKET_DIR} + 15)) -gt 107 ]; then
    log "$SOCKET_DIR is too long a path for a Unix socket; the server listens on TCP only"
    sockets=""
  fi
  cat >>"$DATA/postgresql.conf" <<EOF

# --- cluster/postgres.sh ----------------------------------------------------
listen_addresses = '127.0.0.1'
unix_socket_directories = '${sockets//\'/\'\'}'
unix_socket_permissions = 0700
password_encryption = 'scram-sha-256'
# A scratch server, like etcd with --unsafe-no-fsync: a killed server loses
# nothing (the kernel holds every write), only a machine crash would.
fsync = off
full_page_writes = off
EOF
  cat >"$DATA/pg_hba.conf" <<'EOF'
# cluster/postgres.sh: a password (SCRAM) for every connection, TCP on
# 127.0.0.1 only. The socket's folder admits the server's user only.
# TYPE  DATABASE  USER  ADDRESS       METHOD
local   all       all                 scram-sha-256
host    all       all   127.0.0.1/32  scram-sha-256
EOF
}

# Roles and the database, as the bootstrap superuser. meshplane's admin is no
# superuser and owns no database: it logs in, creates roles, and creates
# schemas in `meshplane` (CREATE on it, granted by its owner, the bootstrap
# superuser); it may pass CONNECT and TEMPORARY on to the roles it makes.
# PUBLIC, the roles meshplane makes among them, loses CONNECT and TEMPORARY
# on every database that accepts connections, and CREATE in every public
# schema (already PostgreSQL 15's default there; explicit for older majors). The statements arrive on
# stdin, so no password is on a command line.
set_up_roles() {
  local bin=$1 super_password=$2 admin_password=$3
  env -i PATH=/usr/bin:/bin PGPASSWORD="$super_password" "$bin/psql" -X -q -v ON_ERROR_STOP=1 \
    -h 127.0.0.1 -p "$PORT" -U "$SUPERUSER" -d template1 <<EOF
-- A failing statement is not logged: this one holds a password.
SET log_min_error_statement = panic;
-- template1 first: CREATE DATABASE copies it.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
\\connect postgres
SET log_min_error_statement = panic;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
REVOKE CONNECT, TEMPORARY ON DATABASE postgres, template1 FROM PUBLIC;
CREATE ROLE $ADMIN LOGIN CREATEROLE NOSUPERUSER NOCREATEDB NOREPLICATION NOBYPASSRLS PASSWORD '$admin_password';
CREATE DATABASE $DATABASE;
REVOKE ALL ON DATABASE $DATABASE FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE $DATABASE TO $ADMIN WITH GRANT OPTION;
GRANT CREATE ON DATABASE $DATABASE TO $ADMIN;
EOF
}

start_postgres() {
  if pid_alive "$PID_FILE"; then
    PORT=$(env_value "$POSTGRES_ADMIN_ENV" PGPORT)
    report
    return 0
  fi
  require_tools openssl
  install_postgres
  local bin major
  bin=$(postgres_bin_dir)
  major=$(basename "$(dirname "$bin")")
  mkdir -p "$LOGS" "$PIDS" "$POSTGRES_STATE"
  # Entered by the server's user, listed by no one else; the env files in it
  # are 0600.
  chmod 711 "$POSTGRES_STATE"
  let_server_user_in

  # admin.env is written last: a data directory without it is a setup that
  # did not finish, whose passwords are lost, and is made anew.
  local fresh=true super_password admin_password
  if [ -f "$DATA/PG_VERSION" ] && [ -f "$POSTGRES_ADMIN_ENV" ]; then
    [ "$(cat "$DATA/PG_VERSION")" = "$major" ] \
      || die "$DATA holds PostgreSQL $(cat "$DATA/PG_VERSION")'s data, but $major is installed: remove the state folder ($(down_command))"
    fresh=false
    super_password=$(env_value "$POSTGRES_SUPERUSER_ENV" PGPASSWORD)
    admin_password=$(env_value "$POSTGRES_ADMIN_ENV" PGPASSWORD)
  elif [ -e "$DATA" ]; then
    log "the setup of $DATA did not finish; making it anew"
  fi
  # The port of a previous start when it is free, so credentials handed out
  # stay valid; else 5432 or the next free one.
  local previous_port
  previous_port=$(env_value "$POSTGRES_ADMIN_ENV" PGPORT)
  pick_port PORT "${previous_port:-5432}"

  local start
  start=$(date +%s.%N)
  if [ "$fresh" = true ]; then
    log "initdb: PostgreSQL $major in $DATA, as the $SERVER_USER user"
    super_password=$(openssl rand -hex 24)
    admin_password=$(openssl rand -hex 24)
    init_data "$bin" "$super_password"
  fi

  log "starting PostgreSQL $major on 127.0.0.1:$PORT"
  local cmd=("${AS_SERVER_USER[@]}" "${SERVER_ENV[@]}" "$bin/postgres" -D "$DATA" -p "$PORT")
  printf '%q ' "${cmd[@]}" >"$PIDS/postgres.cmd"
  printf '\n==> started by cluster/postgres.sh at %s\n' "$(date -u +%FT%TZ)" >>"$LOGS/postgres.log"
  setsid "${cmd[@]}" >>"$LOGS/postgres.log" 2>&1 </dev/null &
  local pid=$!
  echo "$pid" >"$PID_FILE"
  readlink -f "$bin/postgres" >"$PID_FILE.exe"

  # exited, not pid_alive, tells a failed start: the process is setpriv or
  # env for a moment before it becomes postgres.
  local deadline=$((SECONDS + 30))
  until "$bin/pg_isready" -q -h 127.0.0.1 -p "$PORT" -t 1; do
    if exited "$pid" || [ $SECONDS -ge $deadline ]; then
      tail -n 30 "$LOGS/postgres.log" >&2
      exited "$pid" || kill -KILL "$pid" 2>/dev/null || true
      die "PostgreSQL did not become ready; log: $LOGS/postgres.log"
    fi
    sleep 0.1
  done

  write_env "$POSTGRES_SUPERUSER_ENV" "$SUPERUSER" "$super_password"
  if [ "$fresh" = true ] && ! set_up_roles "$bin" "$super_password" "$admin_password"; then
    stop_postgres
    die "setting up the roles failed; log: $LOGS/postgres.log"
  fi
  write_env "$POSTGRES_ADMIN_ENV" "$ADMIN" "$admin_password"
  log "PostgreSQL ready in $(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')s"
  report
}

report() {
  local stop="cluster/postgres.sh stop"
  [ "$STATE" = "$DEV_STATE" ] || stop="MESHPLANE_CLUSTER_DIR=$STATE $stop"
  cat <<EOF
PostgreSQL is running on 127.0.0.1:$PORT, database $DATABASE
  meshplane's admin ($ADMIN): $POSTGRES_ADMIN_ENV, e.g. (set -a; . $POSTGRES_ADMIN_ENV; psql)
  bootstrap superuser ($SUPERUSER): $POSTGRES_SUPERUSER_ENV
log: $LOGS/postgres.log   stop it: $stop   remove it with the cluster: $(down_command)
EOF
}

stop_postgres() {
  # The PID file goes, so up.sh sees no part of a cluster running; its .exe
  # and .cmd stay for cluster/restart.sh, which may start it again.
  if ! pid_alive "$PID_FILE"; then
    rm -f "$PID_FILE"
    log "PostgreSQL in $STATE is not running"
    return 0
  fi
  local pid deadline=$((SECONDS + 30))
  pid=$(cat "$PID_FILE")
  kill "-$(stop_signal postgres)" "$pid"
  while pid_alive "$PID_FILE"; do
    if [ $SECONDS -ge $deadline ]; then
      log "PostgreSQL did not stop within 30s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    sleep 0.1
  done
  rm -f "$PID_FILE"
  log "PostgreSQL stopped (PID $pid); its data stays in $DATA"
}

case "${1:-}" in
  install)
    install_postgres
    log "PostgreSQL is installed: $("$(bin_path postgres)" --version)"
    ;;
  start) start_postgres ;;
  stop) stop_postgres ;;
  *) die "usage: cluster/postgres.sh install|start|stop" ;;
esac
