#!/usr/bin/env bash
# Times the container life cycle through the release lamctl: create,
# start --wait until booted, and stop, RUNS times (default 5) for each of
# the busybox and debian-12 templates. Then it starts MANY debian-12
# containers at once (default 30), each with `lamctl start N --wait`, and
# checks that `systemctl is-system-running` reports running or degraded in
# every one. Run as root: sudo benches/containers/timings.sh
#
# Everything lives under a new temp LAMINA_HOME, removed on exit; every
# container is stopped and destroyed on exit, also on failure. Templates
# come from LAMINA_TEMPLATE_CACHE=DIR when it has them and are built there
# otherwise (debian-12 needs a Debian mirror and about two minutes).
# Containers get 2 GB disks; CTIDs are 74001 and up.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ "$(id -u)" -ne 0 ]; then
  echo "timings.sh: containers need root (mounts, namespaces, cgroups); run: sudo $0" >&2
  exit 1
fi
runs=${RUNS:-5}
many=${MANY:-30}

scripts/install-deps
cargo build --release -p lamina-cli
lamctl=$PWD/target/release/lamctl
LAMINA_HOME=$(mktemp -d /tmp/lamina-timings.XXXXXX)
export LAMINA_HOME
cache="$LAMINA_HOME/template/cache"
mkdir -p "$cache"

ctids=()
cleanup() {
  for ctid in "${ctids[@]}"; do
    "$lamctl" stop "$ctid" --fast >/dev/null 2>&1 || true
    "$lamctl" destroy "$ctid" >/dev/null 2>&1 || true
  done
  # Never remove the home while anything is mounted under it.
  if ! grep -qF " $LAMINA_HOME/" /proc/self/mountinfo; then
    rm -rf "$LAMINA_HOME"
  else
    echo "timings.sh: mounts left under $LAMINA_HOME" >&2
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# Milliseconds since the epoch.
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# Prints "min / median / max ms" of the arguments.
summary() {
  printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 }
    END { printf "%d / %d / %d ms\n", v[1], v[int((NR + 1) / 2)], v[NR] }'
}

get_template() {
  local name=$1 file=$2
  local source=${LAMINA_TEMPLATE_CACHE:-$cache}
  if [ ! -f "$source/$file" ]; then
    scripts/make-template "$name" --cache "$source" >/dev/null
  fi
  if [ "$source" != "$cache" ]; then
    cp "$source/$file" "$cache/"
  fi
}

# Fails unless systemd in container $1 finished booting.
check_booted() {
  local state
  state=$("$lamctl" exec2 "$1" systemctl is-system-running --wait || true)
  case "$state" in
    running | degraded) ;;
    *) echo "timings.sh: container $1 is $state" >&2; exit 1 ;;
  esac
}

# Times create, start --wait and stop of template $1, RUNS times.
time_template() {
  local template=$1 ctid=$2
  local creates=() starts=() stops=() t0 t1 t2 t3 t4
  ctids+=("$ctid")
  for _ in $(seq "$runs"); do
    t0=$(now_ms)
    "$lamctl" create "$ctid" --ostemplate "$template" --diskspace 2G >/dev/null
    t1=$(now_ms)
    "$lamctl" start "$ctid" --wait >/dev/null
    t2=$(now_ms)
    if [ "$template" = debian-12 ]; then
      check_booted "$ctid"
    fi
    t3=$(now_ms)
    "$lamctl" stop "$ctid" >/dev/null
    t4=$(now_ms)
    "$lamctl" destroy "$ctid" >/dev/null
    creates+=($((t1 - t0)))
    starts+=($((t2 - t1)))
    stops+=($((t4 - t3)))
  done
  echo "$template create (min / median / max of $runs): $(summary "${creates[@]}")"
  echo "$template start --wait:                        $(summary "${starts[@]}")"
  echo "$template stop:                                $(summary "${stops[@]}")"
}

get_template busybox busybox.tar.gz
get_template debian-12 debian-12.tar.zst
time_template busybox 74001
time_template debian-12 74002

many_ctids=()
for i in $(seq "$many"); do
  many_ctids+=($((74100 + i)))
done
ctids+=("${many_ctids[@]}")
t0=$(now_ms)
for ctid in "${many_ctids[@]}"; do
  "$lamctl" create "$ctid" --ostemplate debian-12 --diskspace 2G >/dev/null
done
t1=$(now_ms)
pids=()
for ctid in "${many_ctids[@]}"; do
  "$lamctl" start "$ctid" --wait >/dev/null &
  pids+=($!)
done
failed=0
for pid in "${pids[@]}"; do
  wait "$pid" || failed=$((failed + 1))
done
t2=$(now_ms)
if [ "$failed" -ne 0 ]; then
  echo "timings.sh: $failed of $many starts failed" >&2
  exit 1
fi
for ctid in "${many_ctids[@]}"; do
  check_booted "$ctid"
done
t3=$(now_ms)
pids=()
for ctid in "${many_ctids[@]}"; do
  "$lamctl" stop "$ctid" >/dev/null &
  pids+=($!)
done
for pid in "${pids[@]}"; do
  wait "$pid" || failed=$((failed + 1))
done
t4=$(now_ms)
if [ "$failed" -ne 0 ]; then
  echo "timings.sh: $failed of $many stops failed" >&2
  exit 1
fi
for ctid in "${many_ctids[@]}"; do
  "$lamctl" destroy "$ctid" >/dev/null
done
echo "$many debian-12 creates, one after another: $((t1 - t0)) ms"
echo "$many debian-12 start --wait at once, all booted: $((t2 - t1)) ms"
echo "$many debian-12 stops at once: $((t4 - t3)) ms"
