#!/usr/bin/env bash
# The cluster rows of docs/benchmarks.md: one sealrelay node (a single broker, no NATS)
# against two and three nodes of a cluster, on one PostgreSQL directory and one nats-server
# (all on this machine, loopback only). Consoles
# publish on node 1 and their instances receive on the last node, so with two or three nodes
# every message crosses NATS. Two scenarios: 100 pairs closed loop (the most the setup
# carries) and an open loop at a fixed rate (latency at equal load). Prints a markdown table
# of medians: throughput, p50 and p99 end to end, CPU per message of the broker nodes
# together and of nats-server.
#
#   load-tests/compare-cluster.sh                      # DURATION=10 REPEAT=3 RATE=2000
#   DURATION=3 REPEAT=1 load-tests/compare-cluster.sh  # a quick look
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DURATION=${DURATION:-10}
REPEAT=${REPEAT:-3}
RATE=${RATE:-2000}
WORK=$(mktemp -d /tmp/sealrelay-cluster.XXXXXX)
chmod 755 "$WORK"
NATS_PORT=14222 PG_PORT=15432

# shellcheck source=load-tests/bench-lib.sh
. "$ROOT/load-tests/bench-lib.sh"
build_and_find_brokers
NATS_SERVER=$(command -v nats-server || echo /usr/sbin/nats-server)

# PostgreSQL: a throwaway cluster (as the postgres user when run as root: it refuses root).
pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
as_pg=()
if [ "$(id -u)" -eq 0 ]; then
  chown postgres "$WORK"
  as_pg=(runuser -u postgres --)
fi
"${as_pg[@]}" "$pg_bin/initdb" -D "$WORK/pg" -A trust -U sealrelay -N >/dev/null
"${as_pg[@]}" "$pg_bin/pg_ctl" -D "$WORK/pg" -l "$WORK/pg.log" -w start \
  -o "-p $PG_PORT -k $WORK -c listen_addresses=127.0.0.1 -c fsync=off" >/dev/null
"$NATS_SERVER" -a 127.0.0.1 -p "$NATS_PORT" --user sealrelay --pass bench >"$WORK/nats.log" 2>&1 &
NATS_PID=$!
PIDS=()
cleanup() {
  kill "${PIDS[@]}" "$NATS_PID" 2>/dev/null || true
  "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$WORK/pg" -m immediate stop >/dev/null 2>&1 || true
}
trap cleanup EXIT
wait_for_port "$NATS_PORT" nats-server
head -c 32 /dev/urandom >"$WORK/prelogin.key"
chmod 600 "$WORK/prelogin.key"

# start_nodes N RUN: N nodes on a fresh database, node n on MQTT 1883n, HTTP 1808n.
start_nodes() {
  local db="bench_$2"
  psql -h 127.0.0.1 -p "$PG_PORT" -U sealrelay -d postgres -qc "CREATE DATABASE $db" >/dev/null
  PIDS=()
  # One node is the single broker users run (no NATS); two or more are a cluster.
  local cluster=()
  [ "$1" -eq 1 ] || cluster=(SEALRELAY_CLUSTER_NATS_URL="nats://127.0.0.1:$NATS_PORT"
    SEALRELAY_CLUSTER_NATS_USER=sealrelay NATS_PASSWORD=bench)
  for n in $(seq "$1"); do
    mkdir -p "$WORK/node$n"
    (cd "$WORK/node$n" && exec env "${BENCH_SEALRELAY_ENV[@]}" "${cluster[@]}" \
      SEALRELAY_MQTT_LISTEN="127.0.0.1:1883$n" SEALRELAY_HTTP_LISTEN="127.0.0.1:1808$n" \
      SEALRELAY_ADMIN_LISTEN=127.0.0.1:0 SEALRELAY_MQTTS_LISTEN= SEALRELAY_WS_LISTEN= \
      SEALRELAY_WSS_LISTEN= SEALRELAY_HTTPS_LISTEN= \
      SEALRELAY_DIRECTORY_URL="postgres://sealrelay@127.0.0.1:$PG_PORT/$db" \
      SEALRELAY_DIRECTORY_PRELOGIN_KEY_FILE="$WORK/prelogin.key" \
      "$SEALRELAY" serve) >"$WORK/node$n.$2.log" 2>&1 &
    PIDS+=($!)
    wait_for_port "1883$n" "node $n"
  done
  sleep 2 # the nodes find each other (heartbeats every second)
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

for nodes in 1 2 3; do
  for scenario in closed open; do
    case $scenario in
      closed) args=(--consoles 100 --qos 1) ;;
      open) args=(--consoles 100 --qos 1 --rate "$RATE") ;;
    esac
    for i in $(seq "$REPEAT"); do
      run="n${nodes}_${scenario}_$i"
      start_nodes "$nodes" "$run"
      echo "== $nodes node(s), $scenario loop ($i/$REPEAT)" >&2
      pids=$(IFS=,; echo "${PIDS[*]}")
      nats_before=$(cpu_ticks "$NATS_PID")
      "$LOAD" --mqtt "mqtt://127.0.0.1:18831" --receive-at "mqtt://127.0.0.1:1883$nodes" \
        --http "http://127.0.0.1:18081" --broker-pid "$pids" --broker-name "$nodes-node" \
        --duration "$DURATION" --json "$WORK/$run.json" "${args[@]}" >&2 ||
        echo "compare-cluster.sh: $run failed" >&2
      echo $(($(cpu_ticks "$NATS_PID") - nats_before)) >"$WORK/$run.nats"
      kill "${PIDS[@]}" 2>/dev/null || true
      wait "${PIDS[@]}" 2>/dev/null || true
    done
  done
done

median() { sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
cell() { # nodes scenario jq-expression
  cat "$WORK/n$1_$2"_*.json 2>/dev/null | jq -r "$3" | median
}
nats_cell() { # nodes scenario: NATS µs of CPU per received message
  for f in "$WORK/n$1_$2"_*.json; do
    ticks=$(cat "${f%.json}.nats")
    jq -r --argjson t "$ticks" '($t / 100 / .received) * 1e6' "$f"
  done | median
}
echo
echo "| nodes | load | msgs/s | p50 ms | p99 ms | nodes' µs CPU/msg | nats-server µs CPU/msg | lost |"
echo "|---|---|---|---|---|---|---|---|"
for nodes in 1 2 3; do
  for scenario in closed open; do
    label=$([ "$scenario" = closed ] && echo "100 pairs, closed loop" || echo "100 pairs, $RATE msg/s")
    printf '| %s | %s | %.0f | %.2f | %.2f | %.1f | %.1f | %s |\n' "$nodes" "$label" \
      "$(cell "$nodes" "$scenario" .messages_per_second)" \
      "$(cell "$nodes" "$scenario" '.latency_us.p50 / 1000')" \
      "$(cell "$nodes" "$scenario" '.latency_us.p99 / 1000')" \
      "$(cell "$nodes" "$scenario" '(.broker_usage.cpu_seconds / .received) * 1e6')" \
      "$(nats_cell "$nodes" "$scenario")" \
      "$(cell "$nodes" "$scenario" .lost)"
  done
done
echo
echo "Results: $WORK"
