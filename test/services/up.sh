#!/usr/bin/env bash
# Starts the services the scale-out suites use (PostgreSQL and a single-node Ceph RGW, on 127.0.0.1 under DIR)
# and prints the environment those suites read. `eval "$(test/services/up.sh DIR)"`; `test/services/down.sh DIR`.
set -euo pipefail
dir=${1:-/tmp/sluice-services}
here=$(dirname "$0")
mkdir -p "$dir"
pg=$("$here/postgres.sh" start "$dir/postgres" 55432)
read -r endpoint access secret < <("$here/ceph.sh" start "$dir/ceph" 56789 57480 2> "$dir/ceph-start.log")
printf 'export SLUICE_TEST_PG_URL=%q\n' "$pg"
printf 'export SLUICE_TEST_S3_ENDPOINT=%q SLUICE_TEST_S3_ACCESS_KEY=%q SLUICE_TEST_S3_SECRET_KEY=%q\n' "$endpoint" "$access" "$secret"
