#!/usr/bin/env bash
# A throw-away single-node Ceph on 127.0.0.1 for the S3 suites: one ceph-mon, one ceph-osd on memstore, one
# radosgw (beast). `ceph.sh start DIR MON_PORT RGW_PORT` prints `endpoint access-key secret-key`; `ceph.sh stop DIR`
# stops every daemon and removes DIR. Debian's ceph-mon, ceph-osd, radosgw and ceph-common packages.
set -euo pipefail
cmd=${1:?usage: ceph.sh start DIR MON_PORT RGW_PORT | stop DIR}
dir=${2:?state directory}
for b in ceph-mon ceph-osd radosgw radosgw-admin monmaptool ceph-authtool ceph; do
  command -v "$b" > /dev/null || { echo "ceph.sh: install Debian's ceph-mon ceph-osd radosgw ceph-common ($b missing)" >&2; exit 2; }
done
conf=$dir/ceph.conf
stop() {
  local pids=() p
  for p in "$dir"/*.pid; do [[ -f $p ]] && pids+=("$(cat "$p" 2> /dev/null)"); done
  for p in "${pids[@]}"; do kill "$p" 2> /dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2> /dev/null || break; sleep 0.1; done
    kill -9 "$p" 2> /dev/null || true
  done
}
wait_for() { # what, seconds, command…
  local what=$1 secs=$2; shift 2
  for _ in $(seq $((secs * 10))); do "$@" > /dev/null 2>&1 && return 0; sleep 0.1; done
  echo "ceph.sh: $what did not come up in ${secs}s (logs in $dir)" >&2; exit 1
}
case $cmd in
  start)
    mon_port=${3:?mon port}; rgw_port=${4:?rgw port}
    mkdir -p "$dir"/mon "$dir"/osd "$dir"/run
    fsid=$(cat /proc/sys/kernel/random/uuid)
    cat > "$conf" << CONF
[global]
fsid = $fsid
mon host = v1:127.0.0.1:$mon_port
public network = 127.0.0.0/8
auth cluster required = none
auth service required = none
auth client required = none
run dir = $dir/run
log file = $dir/\$name.log
pid file = $dir/\$name.pid
admin socket = $dir/run/\$name.asok
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
osd objectstore = memstore
memstore device bytes = 2147483648
osd data = $dir/osd
mon data = $dir/mon
osd crush chooseleaf type = 0
ms bind ipv6 = false
[client.rgw]
rgw frontends = beast endpoint=127.0.0.1:$rgw_port
rgw data = $dir/rgw
rgw dns name = 127.0.0.1
CONF
    monmaptool --create --fsid "$fsid" --addv a "[v1:127.0.0.1:$mon_port]" "$dir/monmap" > /dev/null
    ceph-authtool --create-keyring "$dir/keyring" --gen-key -n mon. --cap mon 'allow *' > /dev/null
    ceph-mon -c "$conf" -i a --mkfs --monmap "$dir/monmap" --keyring "$dir/keyring"
    ceph-mon -c "$conf" -i a
    wait_for ceph-mon 30 ceph -c "$conf" --connect-timeout 2 mon stat
    id=$(ceph -c "$conf" osd create)
    ceph-osd -c "$conf" -i "$id" --mkfs > "$dir/osd-mkfs.log" 2>&1
    ceph-osd -c "$conf" -i "$id"
    wait_for ceph-osd 60 sh -c "ceph -c '$conf' osd stat | grep -q '1 up'"
    mkdir -p "$dir/rgw"
    radosgw -c "$conf" -n client.rgw
    wait_for radosgw 90 curl -fsS "http://127.0.0.1:$rgw_port/"
    access=sluice-test secret=$(cat /proc/sys/kernel/random/uuid | tr -d -)
    radosgw-admin -c "$conf" user create --uid sluice --display-name sluice --access-key "$access" --secret-key "$secret" > /dev/null
    echo "http://127.0.0.1:$rgw_port $access $secret"
    ;;
  stop)
    [[ -d $dir ]] && stop
    rm -rf "$dir"
    ;;
  *) echo "usage: ceph.sh start DIR MON_PORT RGW_PORT | stop DIR" >&2; exit 2 ;;
esac
