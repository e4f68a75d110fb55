#!/usr/bin/env bash
# The one command behind docs/benchmarks.md: the same scenarios against sealrelay,
# mosquitto and rumqttd on this machine, a fresh broker per run, loopback only.
#
#   load-tests/compare.sh                 # full run, rewrites docs/benchmarks.md
#   DURATION=3 REPEAT=1 load-tests/compare.sh   # shorter traffic runs, one run per cell
#   BROKERS="sealrelay mosquitto" load-tests/compare.sh
#   RENDER_FROM=/tmp/sealrelay-bench.XXXX/results load-tests/compare.sh   # re-render only
#
# sealrelay gets real sealed envelopes and authenticated sessions; the others get the
# same sizes and rates on plain topics (--plain), with no authentication at all.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DURATION=${DURATION:-10}
REPEAT=${REPEAT:-3}
BROKERS=${BROKERS:-"sealrelay mosquitto rumqttd"}
WORK=$(mktemp -d /tmp/sealrelay-bench.XXXXXX)
RESULTS=${RENDER_FROM:-$WORK/results}
mkdir -p "$RESULTS"
MQTT_PORT=${MQTT_PORT:-18831}
HTTP_PORT=${HTTP_PORT:-18081}

# shellcheck source=load-tests/bench-lib.sh
. "$ROOT/load-tests/bench-lib.sh"
build_and_find_brokers
RUMQTTD=${RUMQTTD:-$ROOT/.bench/bin/rumqttd}
if [[ " $BROKERS " == *" rumqttd "* ]] && [ ! -x "$RUMQTTD" ]; then
  # Not --locked: its lockfile pins metrics 0.22.1, which current rustc rejects.
  cargo install rumqttd --version "^0.20" --root "$ROOT/.bench"
fi

PID=""
start_broker() {
  case $1 in
    sealrelay)
      start_sealrelay "$MQTT_PORT" "$HTTP_PORT" ;;
    mosquitto)
      # TCP_NODELAY as sealrelay does, so neither side pays Nagle's 40 ms.
      printf 'listener %s 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\nmax_queued_messages 10000\n' \
        "$MQTT_PORT" >"$WORK/mosquitto.conf"
      "$MOSQUITTO" -c "$WORK/mosquitto.conf" >"$WORK/mosquitto.log" 2>&1 &
      PID=$! ;;
    rumqttd)
      # Stock config, but without its 1 ms pause between accepted connections.
      cat >"$WORK/rumqttd.toml" <<EOF
id = 0
[router]
id = 0
max_connections = 20010
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10
[v4.1]
name = "v4-1"
listen = "127.0.0.1:$MQTT_PORT"
next_connection_delay_ms = 0
    [v4.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = 20480
    max_inflight_count = 100
    dynamic_filters = true
EOF
      "$RUMQTTD" -c "$WORK/rumqttd.toml" >"$WORK/rumqttd.log" 2>&1 &
      PID=$! ;;
  esac
  wait_for_port "$MQTT_PORT" "$1"
}


# run LABEL BROKER ARGS...: a fresh broker, one scenario, a JSON report.
run() {
  local label=$1 broker=$2 plain=()
  shift 2
  [ "$broker" = sealrelay ] || plain=(--plain)
  for i in $(seq "$REPEAT"); do
    start_broker "$broker"
    echo "== $label on $broker ($i/$REPEAT)" >&2
    "$LOAD" "${plain[@]}" --mqtt "127.0.0.1:$MQTT_PORT" --http "http://127.0.0.1:$HTTP_PORT" \
      --broker-pid "$PID" --broker-name "$broker" --json "$RESULTS/$label.$broker.$i.json" "$@" >&2 ||
      echo "compare.sh: $label on $broker failed" >&2
    stop_broker
  done
}

if [ -z "${RENDER_FROM:-}" ]; then
  git rev-parse --short HEAD >"$RESULTS/commit"
  echo "$DURATION" >"$RESULTS/duration"
  echo "$REPEAT" >"$RESULTS/repeat"
fi
DURATION=$(cat "$RESULTS/duration" 2>/dev/null || echo "$DURATION")
REPEAT=$(cat "$RESULTS/repeat" 2>/dev/null || echo 1)
[ -n "${RENDER_FROM:-}" ] || for broker in $BROKERS; do
  run a-pairs-qos0 "$broker" --consoles 100 --qos 0 --duration "$DURATION"
  run b-pairs-qos1 "$broker" --consoles 100 --qos 1 --duration "$DURATION"
  run c-fanout-qos1 "$broker" --instances-per-console 1000 --qos 1 --duration "$DURATION"
  run d-idle "$broker" --kind idle --sessions 10000 --duration 3
  run e-storm "$broker" --kind storm --sessions 5000
done
# Latency at half of sealrelay's closed-loop QoS 1 rate, the same open-loop rate for all.
HALF=$(cat "$RESULTS"/b-pairs-qos1.sealrelay*.json | grep -o '"messages_per_second": [0-9.]*' | awk '{print $2}' |
  sort -n | awk '{v[NR] = $1} END {printf "%d", v[int((NR + 1) / 2)] / 2}')
[ -n "${RENDER_FROM:-}" ] || for broker in $BROKERS; do
  run f-latency-qos1 "$broker" --consoles 100 --qos 1 --rate "$HALF" --duration "$DURATION"
done

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
{
  cat <<EOF
# Benchmarks

Written by \`load-tests/compare.sh\` (DURATION=$DURATION) on $(date -u +%Y-%m-%d -r "$RESULTS"): $(nproc) vCPU ($cpu),
$(free -g | awk '/Mem:/{print $2}') GiB, $(uname -sr), loopback only; broker and load tool share the machine.
Brokers: sealrelay $(cat "$RESULTS/commit" 2>/dev/null || echo unknown) (release build), $("$MOSQUITTO" -h 2>/dev/null | head -1 | sed 's/ is an MQTT.*//'), rumqttd 0.20 (\`cargo install\`).
Each cell is the median of $REPEAT runs, a fresh broker for each run.

| label | scenario (sealrelay-load flags) |
|---|---|
| a-pairs-qos0 | \`--consoles 100 --qos 0\` — 100 console→instance pairs, 256 B, closed loop, 10 in flight per pair |
| b-pairs-qos1 | \`--consoles 100 --qos 1\` — the same at QoS 1 |
| c-fanout-qos1 | \`--instances-per-console 1000 --qos 1\` — one console to 1,000 instances |
| d-idle | \`--kind idle --sessions 10000\` — 10,000 idle subscribed sessions; broker RSS growth per session |
| e-storm | \`--kind storm --sessions 5000\` — 5,000 clients connecting at once (authenticated on sealrelay) |
| f-latency-qos1 | \`--consoles 100 --qos 1 --rate $HALF\` — open loop at half of sealrelay's rate in b |

sealrelay relays real sealed envelopes (SDK-sealed before the clock starts) between
authenticated principals, checking each header and pairing; mosquitto and rumqttd relay the
same sizes on plain topics without authentication.

EOF
  echo "![throughput and latency per broker](benchmarks.svg)"
  echo
  "$LOAD" --summarize "$RESULTS" --chart "$ROOT/docs/benchmarks.svg"
  [ ! -f "$ROOT/load-tests/benchmarks-notes.md" ] || cat "$ROOT/load-tests/benchmarks-notes.md"
} >"$ROOT/docs/benchmarks.md.new"
mv "$ROOT/docs/benchmarks.md.new" "$ROOT/docs/benchmarks.md"
echo "compare.sh: wrote docs/benchmarks.md (raw reports in $RESULTS)" >&2
