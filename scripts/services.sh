#!/usr/bin/env bash
# Make sure the services the tests need are up, on loopback only. PostgreSQL runs on this machine
# (127.0.0.1:5432, user postgres, trust auth); start it when it is down. The tests themselves start
# a moto S3 server and an `mlflow server` subprocess on free loopback ports and stop them afterwards.
set -euo pipefail
pg_up() { python3 - <<'PY'
import socket, sys
s = socket.socket(); s.settimeout(1)
try:
    s.connect(("127.0.0.1", 5432)); sys.exit(0)
except OSError:
    sys.exit(1)
PY
}
if pg_up; then
  echo "services: PostgreSQL is up on 127.0.0.1:5432"
else
  echo "services: starting PostgreSQL"
  if command -v pg_ctlcluster >/dev/null 2>&1; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  fi
  for _ in $(seq 1 30); do pg_up && break; sleep 1; done
  pg_up || { echo "services: PostgreSQL is not reachable on 127.0.0.1:5432" >&2; exit 2; }
  echo "services: PostgreSQL is up on 127.0.0.1:5432"
fi
