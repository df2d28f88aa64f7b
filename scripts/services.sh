#!/usr/bin/env bash
# The loopback services of production mode, for development and `make test`:
#   PostgreSQL   127.0.0.1:5432 (user postgres, trust auth; runs on this machine: started if down)
#   S3           a moto server on 127.0.0.1:$PROMPTREG_S3_PORT (default 19000), bucket promptreg-services
#   MLflow       `mlflow server` on 127.0.0.1:$PROMPTREG_MLFLOW_PORT (default 15000), backend store
#                PostgreSQL database promptreg_services_mlflow, artifacts proxied to s3://promptreg-services/mlflow
# plus the registry database promptreg_services (migrated with `promptreg db upgrade`).
#
#   scripts/services.sh [start]   start what is not already running (a healthy server already listening
#                                 on a port is reused, whoever started it), write .services/env
#   scripts/services.sh stop      stop everything this script started (never a server it found running)
#   scripts/services.sh stop-last stop what the latest `start` started (`make test` runs it afterwards)
#   scripts/services.sh status
#
# `source .services/env` points promptreg, MLflow and boto3 at these services. State (pids, logs, the
# env file) lives in .services/ (git-ignored). moto keeps objects in memory: whenever this script
# starts it, it also recreates the two databases above, so they never refer to lost objects.
# The tests do not depend on these servers: their fixtures create fresh databases and buckets per run
# (tests/fixtures/services.py); they only need PostgreSQL and the admin database `test`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${PROMPTREG_SERVICES_DIR:-$ROOT/.services}"
PY="${PY:-$ROOT/.venv/bin/python}"
case "$PY" in /*) ;; *) PY="$ROOT/$PY" ;; esac
BIN="$(dirname "$PY")"
PG_PORT=5432
S3_PORT="${PROMPTREG_S3_PORT:-19000}"
MLFLOW_PORT="${PROMPTREG_MLFLOW_PORT:-15000}"
BUCKET=promptreg-services
REGISTRY_DB=promptreg_services
MLFLOW_DB=promptreg_services_mlflow
PG_BASE="postgresql+psycopg://postgres@127.0.0.1:$PG_PORT"
S3_URL="http://127.0.0.1:$S3_PORT"
MLFLOW_URL="http://127.0.0.1:$MLFLOW_PORT"
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-testing}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-testing}"
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"

say() { echo "services: $*"; }
die() { echo "services: $*" >&2; exit 2; }

mkdir -p "$STATE"
exec 9>"$STATE/lock"
flock 9   # one start/stop at a time per checkout

# ---- probes (exit 0 when healthy) --------------------------------------------------------------
port_open() {  # port
  "$PY" - "$1" <<'PY' 2>/dev/null
import socket, sys
s = socket.socket(); s.settimeout(1)
try:
    s.connect(("127.0.0.1", int(sys.argv[1]))); sys.exit(0)
except OSError:
    sys.exit(1)
PY
}
pg_up() { port_open "$PG_PORT"; }
s3_up() {
  "$PY" - "$S3_URL" <<'PY' 2>/dev/null
import sys, boto3
from botocore.config import Config
c = boto3.client("s3", endpoint_url=sys.argv[1], config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=5))
c.list_buckets()
PY
}
mlflow_up() {
  "$PY" - "$MLFLOW_URL/health" <<'PY' 2>/dev/null
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=3) as r:
    sys.exit(0 if r.status == 200 else 1)
PY
}
wait_for() {  # probe seconds what logfile
  local i
  for ((i = 0; i < $2 * 2; i++)); do "$1" && return 0; sleep 0.5; done
  die "$3 did not come up in $2 s${4:+ (log: $4)}"
}
alive() { [[ -f "$STATE/$1.pid" ]] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; }

sql() {  # database statement...  (as user postgres, autocommit)
  "$PY" - "$PG_BASE/$1" "${@:2}" <<'PY'
import sys
from sqlalchemy import create_engine
eng = create_engine(sys.argv[1], isolation_level="AUTOCOMMIT")
with eng.connect() as c:
    for stmt in sys.argv[2:]:
        c.exec_driver_sql(stmt)
eng.dispose()
PY
}
db_exists() {
  "$PY" - "$PG_BASE/postgres" "$1" <<'PY'
import sys
from sqlalchemy import create_engine, text
eng = create_engine(sys.argv[1])
with eng.connect() as c:
    found = c.execute(text("select 1 from pg_database where datname = :n"), {"n": sys.argv[2]}).first()
eng.dispose()
sys.exit(0 if found else 1)
PY
}
fresh_db() { sql postgres "DROP DATABASE IF EXISTS \"$1\" WITH (FORCE)" "CREATE DATABASE \"$1\""; }

# Start "$@" in its own session (so that stopping it stops its children too); pid -> $STATE/$name.pid
spawn() {  # name command...
  local name="$1"; shift
  rm -f "$STATE/$name.pid"
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$STATE/$name.pid" "$@" >"$STATE/$name.log" 2>&1 </dev/null 9>&- &
  local i
  for ((i = 0; i < 50; i++)); do [[ -s "$STATE/$name.pid" ]] && return 0; sleep 0.1; done
  die "could not start $name"
}

stop_one() {  # name
  local name="$1" pid i
  if [[ "$name" == postgres ]]; then
    if [[ -f "$STATE/postgres.started" ]]; then
      say "stopping PostgreSQL (started by this script)"
      # shellcheck disable=SC2046
      pg_ctlcluster --skip-systemctl-redirect $(cat "$STATE/postgres.started") stop || true
      rm -f "$STATE/postgres.started"
    fi
    return 0
  fi
  [[ -f "$STATE/$name.pid" ]] || return 0
  pid="$(cat "$STATE/$name.pid")"
  if kill -0 "$pid" 2>/dev/null; then
    say "stopping $name (pid $pid)"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 40; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$STATE/$name.pid"
}

# ---- start -------------------------------------------------------------------------------------
start() {
  [[ -x "$PY" ]] || die "no Python at $PY (run \`make setup\` first)"
  local started=() s3_fresh=0

  # PostgreSQL
  if pg_up; then
    say "PostgreSQL is up on 127.0.0.1:$PG_PORT"
  else
    say "starting PostgreSQL"
    command -v pg_ctlcluster >/dev/null 2>&1 || die "PostgreSQL is down and pg_ctlcluster is not installed"
    local ver
    ver="$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n1)"
    [[ -n "$ver" ]] || die "PostgreSQL is down and no cluster is configured under /etc/postgresql"
    pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
    wait_for pg_up 30 "PostgreSQL on 127.0.0.1:$PG_PORT" "/var/log/postgresql/postgresql-$ver-main.log"
    echo "$ver main" >"$STATE/postgres.started"
    started+=(postgres)
    say "PostgreSQL is up on 127.0.0.1:$PG_PORT"
  fi
  # the tests' admin database (tests/fixtures/services.py connects to it to create fresh databases)
  db_exists test || sql postgres 'CREATE DATABASE "test"'

  # S3 (moto)
  if s3_up; then
    say "S3 is up on $S3_URL$(alive moto && echo ' (ours)' || echo ' (reused)')"
  else
    port_open "$S3_PORT" && die "127.0.0.1:$S3_PORT is taken by something that is not an S3 server (set PROMPTREG_S3_PORT)"
    say "starting moto S3 on $S3_URL"
    spawn moto "$BIN/moto_server" -H 127.0.0.1 -p "$S3_PORT"
    wait_for s3_up 60 "moto S3 on $S3_URL" "$STATE/moto.log"
    started+=(moto); s3_fresh=1
  fi
  "$PY" - "$S3_URL" "$BUCKET" <<'PY'
import sys, boto3
c = boto3.client("s3", endpoint_url=sys.argv[1])
if sys.argv[2] not in {b["Name"] for b in c.list_buckets().get("Buckets", [])}:
    c.create_bucket(Bucket=sys.argv[2])
PY

  # MLflow server (PostgreSQL backend store, artifacts proxied to the bucket)
  if mlflow_up && ((s3_fresh)) && alive mlflow; then
    say "S3 was restarted: restarting our MLflow server on a fresh backend database"
    stop_one mlflow
  fi
  if mlflow_up; then
    say "MLflow is up on $MLFLOW_URL$(alive mlflow && echo ' (ours)' || echo ' (reused)')"
  else
    port_open "$MLFLOW_PORT" && die "127.0.0.1:$MLFLOW_PORT is taken by something that is not an MLflow server (set PROMPTREG_MLFLOW_PORT)"
    say "starting mlflow server on $MLFLOW_URL"
    fresh_db "$MLFLOW_DB"
    # MLflow's job runner (huey consumers for GenAI scorers) is not used by promptreg: ~8 processes saved
    MLFLOW_S3_ENDPOINT_URL="$S3_URL" AWS_ENDPOINT_URL="$S3_URL" MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false \
      spawn mlflow "$BIN/mlflow" server --backend-store-uri "$PG_BASE/$MLFLOW_DB" \
      --artifacts-destination "s3://$BUCKET/mlflow" --host 127.0.0.1 --port "$MLFLOW_PORT" --workers 1
    wait_for mlflow_up 180 "mlflow server on $MLFLOW_URL" "$STATE/mlflow.log"
    started+=(mlflow)
  fi

  # the registry database
  if ((s3_fresh)) || ! db_exists "$REGISTRY_DB"; then
    fresh_db "$REGISTRY_DB"
  fi
  "$BIN/promptreg" --db-url "$PG_BASE/$REGISTRY_DB" db upgrade | sed 's/^/services: /'

  cat >"$STATE/env" <<EOF
# written by scripts/services.sh: \`source .services/env\` to use the loopback services
export PROMPTREG_DB_URL=$PG_BASE/$REGISTRY_DB
export MLFLOW_TRACKING_URI=$MLFLOW_URL
export PROMPTREG_ARTIFACT_URI=s3://$BUCKET/registry
export MLFLOW_S3_ENDPOINT_URL=$S3_URL
export AWS_ENDPOINT_URL=$S3_URL
export AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID
export AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY
export AWS_DEFAULT_REGION=$AWS_DEFAULT_REGION
EOF
  printf '%s\n' "${started[@]+"${started[@]}"}" >"$STATE/last-started"
  say "ready (${started[*]:-nothing new started}); \`source .services/env\` to use them"
}

stop_names() {  # names...  (in reverse start order)
  local name
  for name in mlflow moto postgres; do
    [[ " $* " == *" $name "* ]] && stop_one "$name"
  done
  return 0
}

case "${1:-start}" in
  start) start ;;
  stop) stop_names mlflow moto postgres; rm -f "$STATE/last-started" "$STATE/env" ;;
  stop-last)
    if [[ -s "$STATE/last-started" ]]; then
      # shellcheck disable=SC2046
      stop_names $(cat "$STATE/last-started")
      rm -f "$STATE/env"
    fi
    rm -f "$STATE/last-started" ;;
  status)
    pg_up && say "PostgreSQL up" || say "PostgreSQL down"
    s3_up && say "S3 up on $S3_URL$(alive moto && echo ' (ours)')" || say "S3 down"
    mlflow_up && say "MLflow up on $MLFLOW_URL$(alive mlflow && echo ' (ours)')" || say "MLflow down" ;;
  *) die "usage: scripts/services.sh [start|stop|stop-last|status]" ;;
esac
