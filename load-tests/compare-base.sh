#!/usr/bin/env bash
# sealrelay as it is against sealrelay at an earlier revision, side by side on this machine:
# what a change costs the broker per message. Runs alternate between the two builds, a fresh
# broker each run, loopback only; prints the median broker CPU per message (Δ utime+stime of
# the broker ÷ messages received) and msgs/s per scenario.
#
#   BASE=ac06b2c load-tests/compare-base.sh             # 3 runs of 10 s per cell
#   BASE=HEAD~2 DURATION=5 REPEAT=5 load-tests/compare-base.sh
#
# The base is built from a git worktree into target/base (release), the current tree into
# target/release.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BASE=${BASE:?"name the revision to compare with, e.g. BASE=HEAD~1"}
DURATION=${DURATION:-10}
REPEAT=${REPEAT:-3}
WORK=$(mktemp -d /tmp/sealrelay-base.XXXXXX)
MQTT_PORT=${MQTT_PORT:-18841}
HTTP_PORT=${HTTP_PORT:-18091}

# shellcheck source=load-tests/bench-lib.sh
. "$ROOT/load-tests/bench-lib.sh"
build_and_find_brokers
HEAD_BIN=$SEALRELAY
git worktree add -q --detach "$WORK/base" "$BASE"
PID=""
trap 'stop_broker; git -C "$ROOT" worktree remove --force "$WORK/base"' EXIT
(cd "$WORK/base" && CARGO_TARGET_DIR="$ROOT/target/base" cargo build --release -q -p sealrelay)
BASE_BIN=$ROOT/target/base/release/sealrelay

# scenario LABEL ARGS...: REPEAT runs of each build, alternating, one JSON report each.
scenario() {
  local label=$1
  shift
  for i in $(seq "$REPEAT"); do
    for build in head base; do
      if [ "$build" = head ]; then SEALRELAY=$HEAD_BIN; else SEALRELAY=$BASE_BIN; fi
      start_sealrelay "$MQTT_PORT" "$HTTP_PORT"
      wait_for_port "$MQTT_PORT" "sealrelay ($build)"
      echo "== $label on $build ($i/$REPEAT)" >&2
      "$LOAD" --mqtt "127.0.0.1:$MQTT_PORT" --http "http://127.0.0.1:$HTTP_PORT" \
        --broker-pid "$PID" --broker-name "$build" --json "$WORK/$label.$build.$i.json" "$@" >&2
      stop_broker
    done
  done
}

scenario qos0 --consoles 100 --qos 0 --duration "$DURATION"
scenario qos1 --consoles 100 --qos 1 --duration "$DURATION"
scenario qos1-20k --consoles 100 --qos 1 --rate 20000 --duration "$DURATION"

echo "sealrelay $(git rev-parse --short HEAD) (head) against $(git rev-parse --short "$BASE") (base); $(nproc) vCPU, $REPEAT runs of ${DURATION} s, medians"
echo "| scenario | build | broker µs/msg | msgs/s |"
echo "|---|---|---|---|"
for label in qos0 qos1 qos1-20k; do
  for build in head base; do
    python3 - "$WORK" "$label" "$build" <<'EOF'
import glob, json, statistics, sys
work, label, build = sys.argv[1:]
runs = [json.load(open(f)) for f in sorted(glob.glob(f"{work}/{label}.{build}.*.json"))]
cpu = statistics.median(r["broker_usage"]["cpu_seconds"] * 1e6 / r["received"] for r in runs)
rate = statistics.median(r["messages_per_second"] for r in runs)
print(f"| {label} | {build} | {cpu:.2f} | {rate:,.0f} |")
EOF
  done
done
