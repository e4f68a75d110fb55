#!/usr/bin/env bash
# The accounting rows of docs/benchmarks.md: what live accounting costs the broker. One
# sealrelay, checkpointing every 5 s (accounting.checkpoint_secs), loopback only:
#
#   1. `idle`: SESSIONS subscribed sessions held for 30 s; then the mean and largest
#      checkpoint transaction (every live row and the hour's usage in one write), and the
#      rows the database holds;
#   2. `traffic`: 100 console→instance pairs, QoS 1, closed loop, 30 s, with nothing
#      scraping /metrics meanwhile: throughput, latency and the broker's peak RSS (the
#      histograms' samples are folded into buckets every second, so an unscraped broker
#      does not grow with its traffic).
#
#   load-tests/accounting-cost.sh                 # SESSIONS=10000
#   SESSIONS=2000 load-tests/accounting-cost.sh   # a quick look
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SESSIONS=${SESSIONS:-10000}
WORK=$(mktemp -d /tmp/sealrelay-accounting.XXXXXX)
MQTT_PORT=18861 HTTP_PORT=18093

# shellcheck source=load-tests/bench-lib.sh
. "$ROOT/load-tests/bench-lib.sh"
build_and_find_brokers
BENCH_SEALRELAY_ENV+=(SEALRELAY_ACCOUNTING_CHECKPOINT_SECS=5)
trap stop_broker EXIT

# checkpoint_figures: the checkpoint transactions' count, mean and the largest bucket they
# reached, from the broker's own histogram.
checkpoint_figures() {
  curl -s "http://127.0.0.1:$HTTP_PORT/metrics" | awk '
    /^sealrelay_accounting_write_seconds_count\{kind="checkpoint"\}/ { n = $2 }
    /^sealrelay_accounting_write_seconds_sum\{kind="checkpoint"\}/ { s = $2 }
    /^sealrelay_accounting_write_seconds_bucket\{kind="checkpoint",/ { k++; split($1, a, "\""); le[k] = a[4]; c[k] = $2 }
    END {
      top = "+Inf"
      for (i = 1; i <= k; i++) if (c[i] == n) { top = le[i]; break }
      printf "checkpoints %d, mean %.1f ms, each within %s s\n", n, (n ? 1000 * s / n : 0), top
    }'
}

start_sealrelay "$MQTT_PORT" "$HTTP_PORT"
wait_for_port "$MQTT_PORT" sealrelay
echo "== idle: $SESSIONS sessions, 30 s" >&2
"$LOAD" --kind idle --sessions "$SESSIONS" --duration 30 --mqtt "127.0.0.1:$MQTT_PORT" \
  --http "http://127.0.0.1:$HTTP_PORT" --broker-pid "$PID" --broker-name sealrelay \
  --json "$WORK/idle.json" >&2
echo "idle, $SESSIONS live sessions: $(checkpoint_figures)"
stop_broker

start_sealrelay "$MQTT_PORT" "$HTTP_PORT"
wait_for_port "$MQTT_PORT" sealrelay
echo "== traffic: 100 pairs, QoS 1, 30 s, unscraped" >&2
"$LOAD" --consoles 100 --qos 1 --duration 30 --mqtt "127.0.0.1:$MQTT_PORT" \
  --http "http://127.0.0.1:$HTTP_PORT" --broker-pid "$PID" --broker-name sealrelay \
  --json "$WORK/traffic.json"
echo "traffic, 200 live sessions: $(checkpoint_figures)"
stop_broker
echo "reports in $WORK" >&2
