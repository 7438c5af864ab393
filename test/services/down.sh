#!/usr/bin/env bash
# Stops what up.sh started under DIR.
set -uo pipefail
dir=${1:-/tmp/sluice-services}
here=$(dirname "$0")
"$here/ceph.sh" stop "$dir/ceph"
"$here/postgres.sh" stop "$dir/postgres"
rm -rf "$dir"
