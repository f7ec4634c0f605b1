#!/usr/bin/env bash
# Runs the shared fio jobs on ext4 over four stacks in one run and prints a
# table of IOPS (MB/s for the sequential rows) with Lamina's ratio to each:
#   limit    raw sparse file on a direct-I/O loop device
#   ceiling  the same file behind fuse-ceiling (FUSE + loop, no format)
#   qemu     qemu-storage-daemon's FUSE export of a qcow2 image, loop without direct I/O
#   lamina   `lamina mount`
# For each stack it also records the time from starting the stack (server,
# loop device, mount) to a mounted filesystem, and the server's RSS after
# mount, right after the fio run and after 3 s idle. With the lamina stack
# it then runs latency.sh (median mount and umount time, online snapshot
# pause).
#
# Usage (root): benches/system/compare.sh [--stacks limit,ceiling,qemu,lamina]
#                 [--passes N] [--out DIR]
# With --passes N (default 1) the stacks run N times, in reverse order on
# even passes, and the table shows the mean. On a shared machine, this
# spreads the load of other processes more evenly over the stacks.
# Environment: FIO_RUNTIME=SECONDS shortens each fio job (main.fio has 15 s),
#   for trial runs; BENCH_REF=DIR is the folder with main.fio, prep.fio and
#   fuse-ceiling.c (default: ../shared/bench beside the repo).
# Writes STACK.PASS.json (fio), resources.txt, table.md, machine.txt and
# latency.txt to DIR (default: a new /tmp/lamina-bench-results.* folder).
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
ref=${BENCH_REF:-$repo/../shared/bench}
lamina=$repo/target/release/lamina
stacks=limit,ceiling,qemu,lamina
passes=1
out=
while [ $# -gt 0 ]; do
  case "$1" in
    --stacks) stacks=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --passes) passes=$2; shift 2 ;;
    *) echo "compare.sh: unknown argument '$1'; see the header of $0" >&2; exit 2 ;;
  esac
done
IFS=, read -r -a wanted <<<"$stacks"
[[ $passes =~ ^[1-9][0-9]*$ ]] || { echo "compare.sh: --passes needs a positive integer, not '$passes'" >&2; exit 2; }

# Checks the tools before anything is created and prints what to install.
check_tools() {
  local missing=() s
  [ "$(id -u)" -eq 0 ] || { echo "compare.sh: run as root (loop devices, mounts)" >&2; exit 1; }
  command -v fio >/dev/null || missing+=("fio (apt-get install fio)")
  command -v mkfs.ext4 >/dev/null || missing+=("mkfs.ext4 (apt-get install e2fsprogs)")
  command -v python3 >/dev/null || missing+=("python3 (apt-get install python3)")
  for s in "${wanted[@]}"; do
    case "$s" in
      limit) ;;
      ceiling)
        command -v gcc >/dev/null || missing+=("gcc (apt-get install gcc)")
        pkg-config --exists fuse3 2>/dev/null || missing+=("libfuse3 headers (apt-get install libfuse3-dev pkg-config)") ;;
      qemu)
        command -v qemu-storage-daemon >/dev/null || missing+=("qemu-storage-daemon (apt-get install qemu-utils)")
        command -v qemu-img >/dev/null || missing+=("qemu-img (apt-get install qemu-utils)") ;;
      lamina)
        [ -x "$lamina" ] || missing+=("$lamina (cargo build --release -p lamina-cli)") ;;
      *) echo "compare.sh: unknown stack '$s'; stacks are limit, ceiling, qemu, lamina" >&2; exit 2 ;;
    esac
  done
  for f in main.fio prep.fio fuse-ceiling.c; do
    [ -f "$ref/$f" ] || missing+=("$ref/$f (set BENCH_REF to the folder of the shared fio jobs)")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    printf 'compare.sh: missing: %s\n' "${missing[@]}" >&2
    exit 1
  fi
}
check_tools

work=$(mktemp -d /tmp/lamina-bench.XXXXXX)
out=${out:-$(mktemp -d /tmp/lamina-bench-results.XXXXXX)}
mkdir -p "$out"
size=2G
mkfs_opts=(-q -F -E nodiscard,lazy_itable_init=0,lazy_journal_init=0)
export LAMINA_HOME=$work/home

# The job file, with a shorter runtime when FIO_RUNTIME is set.
main_fio=$ref/main.fio
if [ -n "${FIO_RUNTIME:-}" ]; then
  main_fio=$work/main.fio
  sed "s/^runtime=.*/runtime=$FIO_RUNTIME/" "$ref/main.fio" >"$main_fio"
fi

# Teardown state of the stack that is up, so that a failure or a signal
# cleans it.
mnt=$work/mnt loopdev="" srvpid="" fuse_export="" lamina_disk=""
mkdir -p "$mnt"
cleanup() {
  set +e
  if [ -n "$lamina_disk" ]; then
    "$lamina" umount "$lamina_disk" >/dev/null 2>&1 || "$lamina" umount --force "$lamina_disk"
  fi
  if [ -n "$mnt" ] && mountpoint -q "$mnt"; then umount "$mnt" || umount -l "$mnt"; fi
  if [ -n "$loopdev" ]; then losetup -d "$loopdev"; fi
  if [ -n "$fuse_export" ] && grep -q " $fuse_export " /proc/self/mountinfo; then
    umount "$fuse_export" || umount -l "$fuse_export"
  fi
  if [ -n "$srvpid" ]; then kill "$srvpid" 2>/dev/null; wait "$srvpid" 2>/dev/null; fi
  loopdev="" srvpid="" fuse_export="" lamina_disk=""
  set -e
}
trap 'cleanup; rm -rf "$work"' EXIT
trap 'exit 130' INT TERM HUP

# Milliseconds since START, an $EPOCHREALTIME value.
ms_since() {
  local now=$EPOCHREALTIME
  awk -v a="$1" -v b="$now" 'BEGIN { printf "%.1f", (b - a) * 1000 }'
}

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

record() { echo "pass$pass $*" >>"$out/resources.txt"; }

# Fills the test file, runs the jobs and records the server's RSS around them.
run_fio() { # NAME [SERVER_PID]
  local name=$1 pid=${2:-}
  FIODIR=$mnt fio "$ref/prep.fio" >/dev/null
  [ -z "$pid" ] || record "$name rss_kib_before_fio $(rss_kib "$pid")"
  FIODIR=$mnt fio --output-format=json "$main_fio" >"$out/$name.$pass.json"
  if [ -n "$pid" ]; then
    record "$name rss_kib_after_fio $(rss_kib "$pid")"
    sleep 3
    record "$name rss_kib_idle_3s_after_fio $(rss_kib "$pid")"
  fi
}

wait_for_mount() {
  local path=$1
  for _ in $(seq 1000); do
    grep -q " $path " /proc/self/mountinfo && return 0
    sleep 0.005
  done
  echo "compare.sh: $path was not mounted within 5 s" >&2
  return 1
}

# Creates ext4 on DEVICE and leaves it unmounted.
make_fs() { mkfs.ext4 "${mkfs_opts[@]}" "$1"; }

# Each stack: build the image with ext4 (untimed), tear down, then time
# bringing the stack up to a mounted filesystem, run fio, tear down.

up_limit() {
  loopdev=$(losetup --direct-io=on -f --show "$work/raw.img")
  [ -n "${1:-}" ] || mount "$loopdev" "$mnt"
}

bench_limit() {
  truncate -s $size "$work/raw.img"
  up_limit nomount; make_fs "$loopdev"; cleanup
  local t0=$EPOCHREALTIME
  up_limit
  record "limit mount_ms $(ms_since "$t0")"
  run_fio limit
  cleanup; rm -f "$work/raw.img"
}

up_ceiling() {
  fuse_export=$work/export; touch "$fuse_export"
  "$work/fuse-ceiling" "$work/raw.img" "$fuse_export" 1 &
  srvpid=$!
  wait_for_mount "$fuse_export"
  loopdev=$(losetup --direct-io=on -f --show "$fuse_export")
  [ -n "${1:-}" ] || mount "$loopdev" "$mnt"
}

bench_ceiling() {
  # shellcheck disable=SC2046 # pkg-config prints several flags
  gcc -O2 -Wall -o "$work/fuse-ceiling" "$ref/fuse-ceiling.c" $(pkg-config --cflags --libs fuse3)
  truncate -s $size "$work/raw.img"
  up_ceiling nomount; make_fs "$loopdev"; cleanup
  local t0=$EPOCHREALTIME
  up_ceiling
  record "ceiling mount_ms $(ms_since "$t0")"
  record "ceiling rss_kib_after_mount $(rss_kib "$srvpid")"
  run_fio ceiling "$srvpid"
  cleanup; rm -f "$work/raw.img" "$work/export"
}

up_qemu() {
  fuse_export=$work/export; touch "$fuse_export"
  qemu-storage-daemon \
    --blockdev driver=file,node-name=file0,filename="$work/img.qcow2" \
    --blockdev driver=qcow2,node-name=top,file=file0 \
    --export type=fuse,id=exp0,node-name=top,mountpoint="$fuse_export",writable=on &
  srvpid=$!
  wait_for_mount "$fuse_export"
  # Direct I/O stays off: qemu-storage-daemon 10.0.2's FUSE export mixes up
  # the payloads of concurrent FUSE writes that one direct write of 1 MiB or
  # more is split into, and mkfs.ext4 then makes a filesystem that does not
  # mount.
  loopdev=$(losetup -f --show "$fuse_export")
  [ -n "${1:-}" ] || mount "$loopdev" "$mnt"
}

bench_qemu() {
  qemu-img create -q -f qcow2 "$work/img.qcow2" $size
  up_qemu nomount; make_fs "$loopdev"; cleanup
  local t0=$EPOCHREALTIME
  up_qemu
  record "qemu mount_ms $(ms_since "$t0")"
  record "qemu rss_kib_after_mount $(rss_kib "$srvpid")"
  run_fio qemu "$srvpid"
  cleanup; rm -f "$work/img.qcow2" "$work/export"
}

lamina_pid() {
  "$lamina" list --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["pid"])'
}

bench_lamina() {
  "$lamina" init "$work/disk" --size $size --fs ext4
  local t0=$EPOCHREALTIME pid
  lamina_disk=$work/disk
  "$lamina" mount "$work/disk" --target "$mnt"
  record "lamina mount_ms $(ms_since "$t0")"
  pid=$(lamina_pid)
  record "lamina rss_kib_after_mount $(rss_kib "$pid")"
  run_fio lamina "$pid"
  t0=$EPOCHREALTIME
  "$lamina" umount "$work/disk"
  record "lamina umount_ms $(ms_since "$t0")"
  lamina_disk=""
  rm -rf "$work/disk"
}

machine_info() {
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "commit: $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "nproc: $(nproc)"
  echo "cpu: $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
  echo "memory: $(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
  echo "kernel: $(uname -r)"
  echo "fio: $(fio --version)"
  echo "temp fs: $(df -T /tmp | awk 'NR == 2 {print $2 " on " $1}')"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "fio runtime per job: ${FIO_RUNTIME:-main.fio default} s"
  echo "passes: $passes"
  echo "stacks: ${wanted[*]}"
}

machine_info >"$out/machine.txt"
: >"$out/resources.txt"
for pass in $(seq "$passes"); do
  order=("${wanted[@]}")
  if [ $(( pass % 2 )) -eq 0 ]; then
    order=()
    for (( i = ${#wanted[@]} - 1; i >= 0; i-- )); do order+=("${wanted[i]}"); done
  fi
  for s in "${order[@]}"; do
    echo "== pass $pass: $s ($(date -u +%H:%M:%S), load $(cut -d' ' -f1 /proc/loadavg))"
    "bench_$s"
  done
done

python3 "$repo/benches/system/table.py" "$out" "${wanted[@]}" | tee "$out/table.md"
echo
cat "$out/resources.txt"
if printf '%s\n' "${wanted[@]}" | grep -qx lamina; then
  echo
  echo "== lamina latency"
  "$repo/benches/system/latency.sh" | tee "$out/latency.txt"
fi
echo
echo "results in $out"
