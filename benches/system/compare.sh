#!/usr/bin/env bash
# Runs the shared fio jobs on ext4 over four stacks in one run and prints a
# table of IOPS (MB/s for the sequential rows) with Lamina's ratio to each:
#   limit    raw sparse file on a direct-I/O loop device
#   ceiling  the same file behind fuse-ceiling (FUSE + loop, no format)
#   qemu     qemu-storage-daemon's FUSE export of a qcow2 image, loop without direct I/O
#   lamina   `lamina mount`
# It also measures mount-to-ready and umount time for `lamina mount` and the
# server's idle and post-run RSS.
#
# Usage (root): benches/system/compare.sh [--stacks limit,ceiling,qemu,lamina] [--out DIR]
# Needs: fio, qemu-storage-daemon, libfuse3-dev, gcc, a release build of lamina
# (cargo build --release -p lamina-cli), and ../shared/bench beside the repo
# (override with BENCH_REF=DIR).
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
ref=${BENCH_REF:-$repo/../shared/bench}
stacks=limit,ceiling,qemu,lamina
out=
while [ $# -gt 0 ]; do
  case "$1" in
    --stacks) stacks=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "compare.sh: unknown argument '$1'; see the header of $0" >&2; exit 2 ;;
  esac
done

lamina=$repo/target/release/lamina
work=$(mktemp -d /tmp/lamina-bench.XXXXXX)
out=${out:-$work/results}
mkdir -p "$out"
size=2G
mkfs_opts=(-q -F -E nodiscard,lazy_itable_init=0,lazy_journal_init=0)

# Teardown state of the stack that is up, so a failure cleans it.
mnt="" loopdev="" fusepid="" fuse_export="" lamina_disk=""
cleanup() {
  set +e
  if [ -n "$lamina_disk" ]; then "$lamina" umount "$lamina_disk" >/dev/null 2>&1 || "$lamina" umount --force "$lamina_disk"; fi
  if [ -n "$mnt" ] && mountpoint -q "$mnt"; then umount "$mnt"; fi
  if [ -n "$loopdev" ]; then losetup -d "$loopdev"; fi
  if [ -n "$fuse_export" ] && grep -q " $fuse_export " /proc/self/mountinfo; then umount "$fuse_export"; fi
  if [ -n "$fusepid" ]; then kill "$fusepid" 2>/dev/null; wait "$fusepid" 2>/dev/null; fi
  mnt="" loopdev="" fusepid="" fuse_export="" lamina_disk=""
}
trap 'cleanup; rm -rf "$work"' EXIT

now_ms() { date +%s%3N; }

run_fio() {
  local name=$1
  FIODIR=$mnt fio "$ref/prep.fio" >/dev/null
  FIODIR=$mnt fio --output-format=json "$ref/main.fio" >"$out/$name.json"
}

wait_for_mount() {
  local path=$1
  for _ in $(seq 100); do
    grep -q " $path " /proc/self/mountinfo && return 0
    sleep 0.05
  done
  echo "compare.sh: $path was not mounted within 5 s" >&2
  return 1
}

bench_limit() {
  truncate -s $size "$work/raw.img"
  loopdev=$(losetup --direct-io=on -f --show "$work/raw.img")
  mkfs.ext4 "${mkfs_opts[@]}" "$loopdev"
  mnt=$work/mnt; mkdir -p "$mnt"
  local t0; t0=$(now_ms)
  mount "$loopdev" "$mnt"
  echo "limit mount_ms $(( $(now_ms) - t0 ))" >>"$out/latency.txt"
  run_fio limit
  cleanup; rm -f "$work/raw.img"
}

bench_ceiling() {
  gcc -O2 -Wall -o "$work/fuse-ceiling" "$ref/fuse-ceiling.c" $(pkg-config --cflags --libs fuse3)
  truncate -s $size "$work/raw.img"
  fuse_export=$work/export; touch "$fuse_export"
  "$work/fuse-ceiling" "$work/raw.img" "$fuse_export" 1 &
  fusepid=$!
  wait_for_mount "$fuse_export"
  loopdev=$(losetup --direct-io=on -f --show "$fuse_export")
  mkfs.ext4 "${mkfs_opts[@]}" "$loopdev"
  mnt=$work/mnt; mkdir -p "$mnt"
  mount "$loopdev" "$mnt"
  run_fio ceiling
  cleanup; rm -f "$work/raw.img" "$work/export"
}

bench_qemu() {
  qemu-img create -q -f qcow2 "$work/img.qcow2" $size
  fuse_export=$work/export; touch "$fuse_export"
  local t0; t0=$(now_ms)
  qemu-storage-daemon \
    --blockdev driver=file,node-name=file0,filename="$work/img.qcow2" \
    --blockdev driver=qcow2,node-name=top,file=file0 \
    --export type=fuse,id=exp0,node-name=top,mountpoint="$fuse_export",writable=on &
  fusepid=$!
  wait_for_mount "$fuse_export"
  # Direct I/O stays off: qemu-storage-daemon 10.0.2's FUSE export mixes up
  # payloads of concurrent split direct writes (see ../shared/bench/README.md).
  loopdev=$(losetup -f --show "$fuse_export")
  mkfs.ext4 "${mkfs_opts[@]}" "$loopdev"
  mnt=$work/mnt; mkdir -p "$mnt"
  mount "$loopdev" "$mnt"
  echo "qemu mount_ms $(( $(now_ms) - t0 )) (daemon start to fs mounted, includes mkfs)" >>"$out/latency.txt"
  grep VmRSS /proc/$fusepid/status | awk '{print "qemu idle_rss_kib", $2}' >>"$out/latency.txt"
  run_fio qemu
  grep VmRSS /proc/$fusepid/status | awk '{print "qemu after_rss_kib", $2}' >>"$out/latency.txt"
  cleanup; rm -f "$work/img.qcow2" "$work/export"
}

bench_lamina() {
  export LAMINA_HOME=$work/home
  "$lamina" init "$work/disk" --size $size --fs ext4
  mnt=$work/mnt; mkdir -p "$mnt"
  local t0 t1 pid
  t0=$(now_ms)
  "$lamina" mount "$work/disk" --target "$mnt"
  t1=$(now_ms)
  lamina_disk=$work/disk
  echo "lamina mount_ms $(( t1 - t0 ))" >>"$out/latency.txt"
  pid=$("$lamina" list --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["pid"])')
  sleep 1
  grep VmRSS /proc/$pid/status | awk '{print "lamina idle_rss_kib", $2}' >>"$out/latency.txt"
  run_fio lamina
  grep VmRSS /proc/$pid/status | awk '{print "lamina after_rss_kib", $2}' >>"$out/latency.txt"
  t0=$(now_ms)
  "$lamina" umount "$work/disk"
  echo "lamina umount_ms $(( $(now_ms) - t0 ))" >>"$out/latency.txt"
  lamina_disk=""
  mnt=""
  rm -rf "$work/disk"
}

: >"$out/latency.txt"
IFS=, read -r -a wanted <<<"$stacks"
for s in "${wanted[@]}"; do
  echo "== $s"
  "bench_$s"
done

python3 "$repo/benches/system/table.py" "$out" "${wanted[@]}"
cat "$out/latency.txt"
