"""An instance written with Eclipse paho-mqtt (PyPI), a client sealrelay did not write,
speaking MQTT 5 over WebSocket (optionally TLS) to the broker.

It logs in, subscribes to its own inbox and prints SUBSCRIBED; prints RECEIVED <hex> for
the first envelope it gets; then publishes the envelope in the file given (sealed by the
Rust SDK) to --reply-topic at QoS 1, prints PUBLISHED <reason code> and exits 0.
Everything is bounded by --timeout seconds; any failure exits 1 with one line on stderr.
"""
import argparse
import sys
import threading

import paho.mqtt.client as mqtt


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", default="/mqtt")
    p.add_argument("--cafile")
    p.add_argument("--username", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--inbox", required=True)
    p.add_argument("--reply-topic", required=True)
    p.add_argument("--reply-file", required=True)
    p.add_argument("--timeout", type=float, default=15)
    a = p.parse_args()

    got = threading.Event()
    subscribed = threading.Event()
    acked = threading.Event()
    result = {}

    c = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id="paho-instance",
        protocol=mqtt.MQTTv5,
        transport="websockets",
    )
    c.ws_set_options(path=a.path)
    if a.cafile:
        c.tls_set(ca_certs=a.cafile)
    c.username_pw_set(a.username, a.password)

    def on_connect(client, userdata, flags, reason, properties):
        if reason.is_failure:
            print(f"CONNACK refused: {reason}", file=sys.stderr)
            return
        client.subscribe(a.inbox, qos=1)

    def on_subscribe(client, userdata, mid, reasons, properties):
        result["suback"] = [int(r.value) for r in reasons]
        print(f"SUBSCRIBED {result['suback']}", flush=True)
        subscribed.set()

    def on_message(client, userdata, msg):
        if not got.is_set():
            print(f"RECEIVED {msg.payload.hex()}", flush=True)
            got.set()

    def on_publish(client, userdata, mid, reason, properties):
        result["puback"] = int(reason.value)
        acked.set()

    c.on_connect = on_connect
    c.on_subscribe = on_subscribe
    c.on_message = on_message
    c.on_publish = on_publish
    c.connect(a.host, a.port, keepalive=30)
    c.loop_start()
    try:
        for event, what in ((subscribed, "SUBACK"), (got, "an envelope")):
            if not event.wait(a.timeout):
                print(f"no {what} within {a.timeout}s", file=sys.stderr)
                return 1
        with open(a.reply_file, "rb") as f:
            c.publish(a.reply_topic, f.read(), qos=1)
        if not acked.wait(a.timeout):
            print("no PUBACK", file=sys.stderr)
            return 1
        print(f"PUBLISHED {result['puback']}", flush=True)
        return 0
    finally:
        c.disconnect()
        c.loop_stop()


if __name__ == "__main__":
    sys.exit(main())
