// A JavaScript console (this SDK + MQTT.js over WebSocket) and a Rust `sealrelay agent`,
// through a real broker, driven by tests/js_sdk.rs: the user is registered and the instance
// added here (key pair, token, bundle, escrow copy, keyring pin), the Rust agent logs in with
// the token, and a request sealed here comes back answered and correlated.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, writeFileSync } from "node:fs";
import * as c from "../src/crypto.js";
import { Api, Identity } from "../src/identity.js";
import { Console, NotConnectedError } from "../src/console.js";
import { Agent } from "../src/agent.js";

const cases = JSON.parse(process.env.SRTEST_JS_CONSOLE ?? "null");
/** @param {number} ms */
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

test("a JS console asks a Rust agent over WebSocket", { skip: cases === null && "run through tests/js_sdk.rs", timeout: 60_000 }, async () => {
  await c.ready();
  const api = new Api(cases.http);
  const me = await Identity.register(api, cases.user, cases.password);
  const { id, token } = await me.addInstance(api);
  writeFileSync(cases.token_file, token);
  for (let i = 0; i < 200 && !existsSync(cases.ready_file); i++) await sleep(100);
  assert.ok(existsSync(cases.ready_file), "the Rust agent never started");

  // Log in again from scratch, as a browser tab would: the keyring comes from the server.
  const tab = await Identity.login(api, cases.user, cases.password);
  assert.equal(tab.keyring?.version, 1n);
  const console = await Console.connect(tab, cases.ws);
  try {
    let sent = false;
    const reply = await console.request(c.toHex(id), new TextEncoder().encode("hello from js"), 10_000, () => (sent = true));
    assert.equal(new TextDecoder().decode(reply), "hello from js");
    assert.ok(sent, "the broker's PUBACK was reported before the reply");
    // An instance that never connected: the broker says so (PUBACK 0x10) and the request
    // fails then, not when its reply times out.
    const { id: silent } = await tab.addInstance(api);
    const started = Date.now();
    await assert.rejects(console.request(c.toHex(silent), new TextEncoder().encode("anyone?"), 30_000), NotConnectedError);
    assert.ok(Date.now() - started < 5_000, `answered after ${Date.now() - started} ms`);

    // A JavaScript agent: it reports what it does not answer (an anonymous envelope, whose
    // sender is not proven) instead of dropping it in silence, and its session outlives its
    // connection — a request sent while it is away waits for it and is answered on return.
    const { id: jsId, token: jsToken } = await tab.addInstance(api);
    const peer = c.toHex(jsId);
    const agent = await Agent.login(api, jsToken);
    try {
      /** @type {import("../src/agent.js").Unopened[]} */
      const unopened = [];
      const serve = () => agent.serve(cases.ws, (p) => p, { onUnopened: (u) => unopened.push(u) });
      await serve();
      assert.equal(new TextDecoder().decode(await console.request(peer, new TextEncoder().encode("ping"))), "ping");
      const pinned = tab.keyring?.pins.get(peer) ?? assert.fail("the new instance is pinned");
      await console.client.publishAsync(`sr/v1/inbox/${peer}`, /** @type {any} */ (c.sealAnonymous(tab.id, jsId, pinned, new TextEncoder().encode("who am I?"))), { qos: 1 });
      for (let i = 0; i < 100 && unopened.length === 0; i++) await sleep(50);
      assert.deepEqual(unopened.map((u) => u.from), [c.toHex(tab.id)]);
      assert.match(unopened[0].reason, /not sender-authenticated/);
      agent.client?.end(true); // the connection drops; the session stays
      await sleep(200);
      const waiting = console.request(peer, new TextEncoder().encode("while you were away"), 15_000);
      await sleep(500);
      await serve();
      assert.equal(new TextDecoder().decode(await waiting), "while you were away");
    } finally {
      await agent.close();
    }
  } finally {
    await console.close();
    for (const who of [me, tab]) who.wipe();
  }
});
