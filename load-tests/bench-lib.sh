# Shared by compare.sh and compare-tls.sh (sourced, not run): the release binaries and
# mosquitto, waiting for a broker started in the background as $PID, and stopping it.

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
