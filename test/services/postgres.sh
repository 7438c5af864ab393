#!/usr/bin/env bash
# A throw-away PostgreSQL on 127.0.0.1 for the scale-out suites: `postgres.sh start DIR PORT` prints the URL
# to use as SLUICE_TEST_PG_URL; `postgres.sh stop DIR` stops it and removes DIR. Debian's `postgresql` package.
set -euo pipefail
cmd=${1:?usage: postgres.sh start DIR PORT | stop DIR}
dir=${2:?data directory}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[[ -x $bin/initdb ]] || { echo "postgres.sh: install Debian's postgresql (no initdb found)" >&2; exit 2; }
# PostgreSQL refuses to run as root: run it as the packaged `postgres` user when we are root.
as_pg() { if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }
case $cmd in
  start)
    port=${3:?port}
    mkdir -p "$dir"
    [[ $(id -u) -eq 0 ]] && chown postgres: "$dir"
    as_pg "$bin/initdb" -D "$dir/data" -U sluice --auth=trust -E UTF8 > "$dir/initdb.log"
    as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir -c fsync=off -c max_connections=200" start > /dev/null
    as_pg "$bin/createdb" -h 127.0.0.1 -p "$port" -U sluice sluice
    echo "postgres://sluice@127.0.0.1:$port/sluice"
    ;;
  stop)
    [[ -d $dir/data ]] && as_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w stop > /dev/null || true
    rm -rf "$dir"
    ;;
  *) echo "usage: postgres.sh start DIR PORT | stop DIR" >&2; exit 2 ;;
esac
