#!/usr/bin/env bash
# The churn rows of docs/benchmarks.md: instances on a flaky network. 20 console→instance
# pairs at 1,000 QoS 1 messages a second in total for 10 s; every instance drops its
# connection (no DISCONNECT) every 2 s, staggered, and returns 500 ms later with its
# persistent session (clean session 0). sealrelay keeps the queue in memory only; mosquitto
# holds the same sessions in memory (its default `persistence false`). A fresh broker per
# run, loopback only. Prints a markdown table of medians: reconnects, messages delivered once,
# redelivered, never delivered, and the broker's CPU and peak RSS.
#
#   load-tests/compare-churn.sh                   # REPEAT=3
#   REPEAT=1 load-tests/compare-churn.sh          # a quick look
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
REPEAT=${REPEAT:-3}
WORK=$(mktemp -d /tmp/sealrelay-churn.XXXXXX)
MQTT_PORT=18851 HTTP_PORT=18092
SCENARIO=(--consoles 20 --qos 1 --rate 1000 --duration 10 --churn 2 --away 500)

# shellcheck source=load-tests/bench-lib.sh
. "$ROOT/load-tests/bench-lib.sh"
build_and_find_brokers

PID=""
for broker in sealrelay mosquitto; do
  for i in $(seq "$REPEAT"); do
    if [ "$broker" = sealrelay ]; then
      start_sealrelay "$MQTT_PORT" "$HTTP_PORT"
      plain=()
    else
      printf 'listener %s 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\npersistence false\nmax_queued_messages 10000\n' \
        "$MQTT_PORT" >"$WORK/mosquitto.conf"
      "$MOSQUITTO" -c "$WORK/mosquitto.conf" >"$WORK/mosquitto.log" 2>&1 &
      PID=$!
      plain=(--plain)
    fi
    wait_for_port "$MQTT_PORT" "$broker"
    echo "== churn on $broker ($i/$REPEAT)" >&2
    "$LOAD" "${plain[@]}" "${SCENARIO[@]}" --mqtt "127.0.0.1:$MQTT_PORT" --http "http://127.0.0.1:$HTTP_PORT" \
      --broker-pid "$PID" --broker-name "$broker" --json "$WORK/churn.$broker.$i.json" >&2 ||
      echo "compare-churn.sh: run $i on $broker failed" >&2
    stop_broker
  done
done

# The median of one JSON field over a broker's runs.
median() {
  cat "$WORK"/churn."$1".*.json | grep -o "\"$2\": [0-9.]*" | awk '{print $2}' | sort -n |
    awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'
}
echo "| broker | sent | reconnects | delivered once | redelivered | never delivered | broker CPU s | broker peak RSS KiB |"
echo "|---|---|---|---|---|---|---|---|"
for broker in sealrelay mosquitto; do
  echo "| $broker | $(median "$broker" sent) | $(median "$broker" blinks) | $(median "$broker" received) | $(median "$broker" duplicates) | $(median "$broker" lost) | $(median "$broker" cpu_seconds) | $(median "$broker" peak_rss_kib) |"
done
echo "compare-churn.sh: raw reports in $WORK" >&2
