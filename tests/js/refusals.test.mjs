// MQTT.js 5.16 with its default reconnect, on MQTT 3.1.1 and 5.0, publishing envelopes the
// broker must refuse (malformed, to an unpaired principal, with a spoofed sender) and then a
// valid one, all at QoS 1. MQTT.js resends every unacknowledged QoS 1 publish after each
// reconnect, so a refusal that closed the session would loop for ever; here each refusal must
// be answered once, the session must stay up, and the valid envelope must go through.
//
// tests/mqttjs.rs starts the broker, makes the principals and the envelopes, and runs this
// file with SRTEST_JS_CASES (JSON) in the environment; the Rust side then checks the
// broker's counters and that the valid envelopes arrived.
import { test } from "node:test";
import assert from "node:assert/strict";
import mqtt from "mqtt";

const cases = JSON.parse(process.env.SRTEST_JS_CASES ?? "null");
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

for (const version of [4, 5]) {
  test(`MQTT.js over MQTT ${version === 4 ? "3.1.1" : "5.0"}: refusals answer the message, not the session`, {
    skip: cases === null && "run through tests/mqttjs.rs",
    timeout: 30_000,
  }, async () => {
    let connects = 0;
    const client = await mqtt.connectAsync(cases.url, {
      protocolVersion: version,
      username: cases.login,
      password: cases.secret,
      clientId: `mqttjs-${version}`,
      timerVariant: "native",
    });
    connects += 1;
    client.on("connect", () => (connects += 1));
    try {
      for (const c of cases.refused) {
        const sent = client.publishAsync(c.topic, Buffer.from(c.hex, "hex"), { qos: 1 });
        if (version === 5) {
          // MQTT 5: the PUBACK carries the code and the label, and MQTT.js reports it.
          await assert.rejects(sent, (err) => err.code === c.code, `${c.name}: PUBACK 0x${c.code.toString(16)}`);
        } else {
          // 3.1.1 has no negative PUBACK: acknowledged and dropped.
          await sent;
        }
      }
      const valid = cases.valid[String(version)];
      await client.publishAsync(valid.topic, Buffer.from(valid.hex, "hex"), { qos: 1 });
      // Long enough for MQTT.js's default reconnect (1 s) to have looped twice.
      await sleep(2500);
      assert.equal(client.connected, true, "the session stayed up");
      assert.equal(connects, 1, "no reconnect, so no resend loop");
    } finally {
      await client.endAsync();
    }
  });
}
