#!/usr/bin/env bash
# Measures `lamina mount` and `lamina umount` times, the server's RSS right
# after mount, and the pause of an online snapshot, on a 2 GiB ext4 disk in
# a temp folder.
#
#   mount_ms    `lamina mount` start to return (the filesystem is mounted)
#   umount_ms   `lamina umount` start to return (the server has exited)
#   rss_kib     VmRSS of the server (pid from `lamina list --json`) 0.5 s
#               after mount
#   pause_ms    freeze to thaw inside the server, read from the server
#               log's "snapshot created" lines with its parts: freeze,
#               flush, switch (to a new top). presync_ms is the sync before
#               the freeze, while writes go on. Taken on an idle filesystem
#               and while fio writes 4 KiB blocks at queue depth 32.
#   load_*      IOPS and p99, p99.9 and max completion latency of the
#               write load, once without snapshots and once with the
#               snapshots taken during it: the stall that the writer
#               observes, which includes more than the freeze
#
# Usage (root): benches/system/latency.sh [--runs N] [--snapshots N]
# Prints one line per figure, "NAME median X (min Y, max Z, n N)".
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
lamina=${LAMINA:-$repo/target/release/lamina}
runs=10
snapshots=5
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    --snapshots) snapshots=$2; shift 2 ;;
    *) echo "latency.sh: unknown argument '$1'; see the header of $0" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" -eq 0 ] || { echo "latency.sh: run as root" >&2; exit 1; }
[ -x "$lamina" ] || { echo "latency.sh: no $lamina; run cargo build --release -p lamina-cli" >&2; exit 1; }
command -v fio >/dev/null || { echo "latency.sh: fio missing (apt-get install fio)" >&2; exit 1; }

work=$(mktemp -d /tmp/lamina-latency.XXXXXX)
export LAMINA_HOME=$work/home
disk=$work/disk
mnt=$work/mnt
mkdir -p "$mnt"
fiopid=""
cleanup() {
  set +e
  if [ -n "$fiopid" ]; then kill "$fiopid" 2>/dev/null; wait "$fiopid" 2>/dev/null; fi
  if "$lamina" list --json 2>/dev/null | grep -q '"pid"'; then
    "$lamina" umount "$disk" >/dev/null 2>&1 || "$lamina" umount --force "$disk"
  fi
  [ -n "${KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# Milliseconds since START, an $EPOCHREALTIME value.
ms_since() {
  local now=$EPOCHREALTIME
  awk -v a="$1" -v b="$now" 'BEGIN { printf "%.1f", (b - a) * 1000 }'
}

# NAME VALUE...: median, min, max of the values.
summary() {
  local name=$1; shift
  printf '%s\n' "$@" | sort -g | awk -v name="$name" '
    { v[NR] = $1 }
    END {
      if (NR == 0) { print name " none"; exit }
      m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
      printf "%s median %.1f (min %.1f, max %.1f, n %d)\n", name, m, v[1], v[NR], NR
    }'
}

server_field() { # FIELD of the one mount in `lamina list --json`
  "$lamina" list --json | python3 -c "import json,sys; print(json.load(sys.stdin)[0]['$1'])"
}

"$lamina" init "$disk" --size 2G --fs ext4 >/dev/null

mount_ms=() umount_ms=() rss=()
for _ in $(seq "$runs"); do
  t0=$EPOCHREALTIME
  "$lamina" mount "$disk" --target "$mnt"
  mount_ms+=("$(ms_since "$t0")")
  sleep 0.5
  rss+=("$(awk '/^VmRSS/ {print $2}' "/proc/$(server_field pid)/status")")
  t0=$EPOCHREALTIME
  "$lamina" umount "$disk"
  umount_ms+=("$(ms_since "$t0")")
done
summary "mount_ms" "${mount_ms[@]}"
summary "umount_ms" "${umount_ms[@]}"
summary "rss_kib_after_mount" "${rss[@]}"

# Snapshot pauses, idle and under a random write load.
"$lamina" mount "$disk" --target "$mnt"
log=$(server_field log)
fio --name=fill --directory="$mnt" --filename=snap.dat --size=512M --rw=write --bs=1M \
  --direct=1 --ioengine=libaio --iodepth=8 --end_fsync=1 >/dev/null

# FIELD SKIP: the values of FIELD in the "snapshot created" lines after the first SKIP.
field() { grep 'snapshot created.*pause_ms=' "$log" | tail -n "+$(( $2 + 1 ))" | grep -o " $1=[0-9.]*" | cut -d= -f2; }

# LABEL SKIP: summaries of the pause and its parts.
pauses() {
  local f values
  for f in pause_ms presync_ms freeze_ms flush_ms switch_ms; do
    mapfile -t values < <(field "$f" "$2")
    [ "${#values[@]}" -eq 0 ] || summary "snapshot_${f}_$1" "${values[@]}"
  done
}

before=$(grep -c 'snapshot created.*pause_ms=' "$log" || true)
for _ in $(seq "$snapshots"); do
  "$lamina" snapshot "$disk" >/dev/null
  sleep 0.5
done
pauses idle "$before"

# The write load, in the background: 4 KiB random writes at queue depth
# 32 for RUNTIME seconds, fio's JSON output in OUTPUT.
start_load() { # RUNTIME OUTPUT
  fio --name=load --directory="$mnt" --filename=snap.dat --size=512M --rw=randwrite --bs=4k \
    --direct=1 --ioengine=libaio --iodepth=32 --time_based --runtime="$1" \
    --output-format=json --output="$2" >/dev/null &
  fiopid=$!
}

# LABEL FILE: IOPS and completion latencies of a load run.
load_summary() {
  python3 - "$1" "$2" <<'EOF'
import json, sys
label, path = sys.argv[1], sys.argv[2]
job = json.load(open(path))["jobs"][0]["write"]
clat = job["clat_ns"]
print(f"load_{label} write_iops {job['iops']:.0f}, completion latency ms:"
      f" p99 {clat['percentile']['99.000000'] / 1e6:.1f},"
      f" p99.9 {clat['percentile']['99.900000'] / 1e6:.1f}, max {clat['max'] / 1e6:.1f}")
EOF
}

# Both loads start on a new, empty top (the idle snapshots above made
# one), so both copy clusters up from the parent as they write.
runtime=$(( snapshots * 2 + 4 ))
start_load "$runtime" "$work/load-plain.json"
wait "$fiopid"
fiopid=""
"$lamina" snapshot "$disk" >/dev/null

start_load "$runtime" "$work/load-snap.json"
sleep 2
before=$(grep -c 'snapshot created.*pause_ms=' "$log" || true)
snap_ms=()
for _ in $(seq "$snapshots"); do
  t0=$EPOCHREALTIME
  "$lamina" snapshot "$disk" >/dev/null
  snap_ms+=("$(ms_since "$t0")")
  sleep 1.5
done
wait "$fiopid"
fiopid=""
pauses under_load "$before"
summary "snapshot_command_ms_under_load" "${snap_ms[@]}"
load_summary without_snapshots "$work/load-plain.json"
load_summary with_snapshots "$work/load-snap.json"
"$lamina" umount "$disk"
