#!/usr/bin/env bash
# Starts the services the scale-out suites use (PostgreSQL and a single-node Ceph RGW, on 127.0.0.1 under DIR)
# and prints the environment those suites read. `eval "$(test/services/up.sh DIR)"`; `test/services/down.sh DIR`.
set -euo pipefail
dir=${1:-/tmp/sluice-services}
here=$(dirname "$0")
mkdir -p "$dir"
pg=$("$here/postgres.sh" start "$dir/postgres" 55432)
# A single-node Ceph now and then fails its first start on a busy machine: one clean retry.
ceph_start() { "$here/ceph.sh" start "$dir/ceph" 56789 57480 2>> "$dir/ceph-start.log"; }
if ! s3=$(ceph_start); then
  "$here/ceph.sh" stop "$dir/ceph"
  s3=$(ceph_start) || { echo "up.sh: Ceph did not start (see $dir/ceph-start.log)" >&2; tail -20 "$dir/ceph-start.log" >&2; exit 1; }
fi
read -r endpoint access secret <<< "$s3"
printf 'export SLUICE_TEST_PG_URL=%q\n' "$pg"
printf 'export SLUICE_TEST_S3_ENDPOINT=%q SLUICE_TEST_S3_ACCESS_KEY=%q SLUICE_TEST_S3_SECRET_KEY=%q\n' "$endpoint" "$access" "$secret"
