#!/usr/bin/env bash
# The TLS rows of docs/benchmarks.md: sealrelay and mosquitto each over plain TCP, MQTT over
# TLS and MQTT over WebSocket-TLS, with the same certificate and the same scenario (100
# console→instance pairs, 256 B, QoS 1, closed loop), a fresh broker per run, loopback only.
# Prints a markdown table of medians: throughput, p99 latency, broker CPU per message, and
# what TLS costs each broker against its own plain-TCP figure.
#
#   load-tests/compare-tls.sh                      # DURATION=10 REPEAT=3
#   DURATION=3 REPEAT=1 load-tests/compare-tls.sh  # a quick look
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DURATION=${DURATION:-10}
REPEAT=${REPEAT:-3}
WORK=$(mktemp -d /tmp/sealrelay-tls.XXXXXX)
chmod 755 "$WORK" # mosquitto drops to its own user before it reads the certificate
TCP_PORT=18841 TLS_PORT=18842 WSS_PORT=18843 HTTP_PORT=18091

# shellcheck source=load-tests/bench-lib.sh
. "$ROOT/load-tests/bench-lib.sh"
build_and_find_brokers

# One self-signed end-entity certificate for both brokers (P-256, like sealrelay's
# development one; not a CA certificate, which rustls refuses as a server certificate).
cat >"$WORK/openssl.cnf" <<CNF
[req]
distinguished_name = dn
x509_extensions = leaf
prompt = no
[dn]
CN = 127.0.0.1
[leaf]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
CNF
openssl req -x509 -config "$WORK/openssl.cnf" -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
  -nodes -days 2 -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
chmod 644 "$WORK/key.pem" "$WORK/cert.pem"

PID=""
start_broker() {
  case $1 in
    sealrelay)
      (cd "$WORK" && rm -rf data && exec env "${BENCH_SEALRELAY_ENV[@]}" \
        SEALRELAY_MQTT_LISTEN="127.0.0.1:$TCP_PORT" SEALRELAY_MQTTS_LISTEN="127.0.0.1:$TLS_PORT" \
        SEALRELAY_WSS_LISTEN="127.0.0.1:$WSS_PORT" SEALRELAY_WS_LISTEN= SEALRELAY_HTTPS_LISTEN= \
        SEALRELAY_HTTP_LISTEN="127.0.0.1:$HTTP_PORT" SEALRELAY_ADMIN_LISTEN=127.0.0.1:0 \
        SEALRELAY_TLS_CERT_FILE="$WORK/cert.pem" SEALRELAY_TLS_KEY_FILE="$WORK/key.pem" \
        "$SEALRELAY" serve) >"$WORK/sealrelay.log" 2>&1 &
      PID=$! ;;
    mosquitto)
      # TCP_NODELAY as sealrelay does; socket_domain ipv4 or a websockets listener binds [::].
      cat >"$WORK/mosquitto.conf" <<CONF
allow_anonymous true
set_tcp_nodelay true
max_queued_messages 10000
listener $TCP_PORT 127.0.0.1
listener $TLS_PORT 127.0.0.1
certfile $WORK/cert.pem
keyfile $WORK/key.pem
listener $WSS_PORT 127.0.0.1
protocol websockets
socket_domain ipv4
certfile $WORK/cert.pem
keyfile $WORK/key.pem
CONF
      "$MOSQUITTO" -c "$WORK/mosquitto.conf" >"$WORK/mosquitto.log" 2>&1 &
      PID=$! ;;
  esac
  wait_for_port "$TLS_PORT" "$1"
}


for broker in sealrelay mosquitto; do
  plain=()
  [ "$broker" = sealrelay ] || plain=(--plain)
  for transport in tcp tls wss; do
    case $transport in
      tcp) url=mqtt://127.0.0.1:$TCP_PORT ;;
      tls) url=mqtts://127.0.0.1:$TLS_PORT ;;
      wss) url=wss://127.0.0.1:$WSS_PORT/mqtt ;;
    esac
    for i in $(seq "$REPEAT"); do
      start_broker "$broker"
      echo "== $broker over $transport ($i/$REPEAT)" >&2
      "$LOAD" "${plain[@]}" --mqtt "$url" --ca-file "$WORK/cert.pem" --http "http://127.0.0.1:$HTTP_PORT" \
        --broker-pid "$PID" --broker-name "$broker" --consoles 100 --qos 1 --duration "$DURATION" \
        --json "$WORK/$broker.$transport.$i.json" >&2 || echo "compare-tls.sh: $broker over $transport failed" >&2
      stop_broker
    done
  done
done

# Medians per cell.
median() { sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
cell() { # broker transport jq-expression
  cat "$WORK/$1.$2".*.json 2>/dev/null | jq -r "$3" | median
}
echo
echo "| broker | transport | msgs/s | p99 ms | broker µs CPU/msg | lost | TLS cost vs own TCP |"
echo "|---|---|---|---|---|---|---|"
for broker in sealrelay mosquitto; do
  base=$(cell "$broker" tcp .messages_per_second)
  for transport in tcp tls wss; do
    rate=$(cell "$broker" "$transport" .messages_per_second)
    p99=$(cell "$broker" "$transport" '.latency_us.p99 / 1000')
    cpu=$(cell "$broker" "$transport" '(.broker_usage.cpu_seconds / .received) * 1e6')
    lost=$(cell "$broker" "$transport" .lost)
    cost=$(awk -v r="$rate" -v b="$base" 'BEGIN {if (b > 0) printf "%.0f%%", (1 - r / b) * 100; else print "-"}')
    printf '| %s | %s | %.0f | %.1f | %.1f | %s | %s |\n' "$broker" "$transport" "$rate" "$p99" "$cpu" "$lost" \
      "$([ "$transport" = tcp ] && echo - || echo "$cost")"
  done
done
echo
echo "Results: $WORK"
