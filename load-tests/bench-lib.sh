# Shared by compare.sh, compare-tls.sh and compare-churn.sh (sourced, not run): the release
# binaries and mosquitto, sealrelay started for a benchmark, waiting for a broker started in
# the background as $PID, and stopping it.

# Builds sealrelay and the load tool; sets LOAD, SEALRELAY and MOSQUITTO (installed if absent).
build_and_find_brokers() {
  cargo build --release -q -p sealrelay -p sealrelay-load
  LOAD=$ROOT/target/release/sealrelay-load
  SEALRELAY=$ROOT/target/release/sealrelay
  MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
  if [ ! -x "$MOSQUITTO" ]; then
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq && $sudo apt-get install -y -qq mosquitto
    MOSQUITTO=/usr/sbin/mosquitto
  fi
}

# wait_for_port PORT NAME: returns once something accepts on 127.0.0.1:PORT (10 s at most).
wait_for_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "$(basename "$0"): $2 did not start; its log is in $WORK" >&2
  return 1
}

stop_broker() {
  kill "$PID" 2>/dev/null || true
  wait "$PID" 2>/dev/null || true
}

# What sealrelay runs with in a benchmark: the KDF floor, warnings only, and the abuse limits
# a benchmark would trip lifted (it measures the broker, not its limits).
BENCH_SEALRELAY_ENV=(
  SEALRELAY_KDF_MEMORY_KIB=19456 SEALRELAY_KDF_ITERATIONS=2 SEALRELAY_LOG_LEVEL=warn
  SEALRELAY_AUTH_MAX_FAILURES_PER_IP=1000000 SEALRELAY_MQTT_MAX_CONNECTIONS_PER_IP=1000000
  SEALRELAY_MQTT_CONNECTS_PER_IP_PER_MINUTE=1000000 SEALRELAY_MQTT_CONNECTS_PER_PRINCIPAL_PER_MINUTE=1000000
  SEALRELAY_MQTT_PUBLISHES_PER_SECOND=0 SEALRELAY_MQTT_BYTES_PER_SECOND=0
  SEALRELAY_AUTH_REGISTRATIONS_PER_IP_PER_HOUR=1000000 SEALRELAY_AUTH_PRELOGINS_PER_IP_PER_MINUTE=1000000
  SEALRELAY_HTTP_MAX_CONNECTIONS_PER_IP=1000000
)

# start_sealrelay MQTT_PORT HTTP_PORT: sealrelay in the background as $PID, its database in
# $WORK, plain TCP and HTTP only.
start_sealrelay() {
  rm -f "$WORK"/sr.db* "$WORK/sr.key"
  (cd "$WORK" && exec env "${BENCH_SEALRELAY_ENV[@]}" SEALRELAY_MQTT_LISTEN="127.0.0.1:$1" \
    SEALRELAY_HTTP_LISTEN="127.0.0.1:$2" SEALRELAY_ADMIN_LISTEN=127.0.0.1:0 \
    SEALRELAY_MQTTS_LISTEN= SEALRELAY_WS_LISTEN= SEALRELAY_WSS_LISTEN= SEALRELAY_HTTPS_LISTEN= \
    SEALRELAY_DIRECTORY_DATABASE=sr.db SEALRELAY_DIRECTORY_PRELOGIN_KEY_FILE=sr.key \
    "$SEALRELAY" serve) >"$WORK/sealrelay.log" 2>&1 &
  PID=$!
}
