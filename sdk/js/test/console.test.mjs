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

      // Protocol §4.3, with an older console on the same account: the agent answers a
      // version-1 request in version 1 (no reply field, which that console could not open).
      /** @type {Uint8Array[]} */
      const fromAgent = [];
      /** @param {string} _topic @param {Uint8Array} data */
      const listen = (_topic, data) => {
        if (c.toHex(data.subarray(2, 18)) === peer) fromAgent.push(new Uint8Array(data));
      };
      console.client.on("message", listen);
      const { envelope: old } = c.sealAuthenticated(tab.id, tab.secret, jsId, pinned, new TextEncoder().encode("old ping"), null, 1);
      await console.client.publishAsync(`sr/v1/inbox/${peer}`, /** @type {any} */ (old), { qos: 1 });
      for (let i = 0; i < 100 && fromAgent.length === 0; i++) await sleep(50);
      assert.equal(fromAgent[0]?.[0], 1, "a version-1 request is answered in version 1");
      const answer = c.openEnvelope(tab.id, tab.secret, fromAgent[0], pinned, new c.ReplayGuard());
      assert.deepEqual([answer.inReplyTo, new TextDecoder().decode(answer.payload)], [null, "old ping"]);
      console.client.off("message", listen);

      // An instance heard only in version 1 (an older agent: its push is sealed here by hand,
      // on its connection) is asked in version 1 by a console that has heard nothing newer
      // from it, and its answer, which cannot name the request, is taken.
      const later = await Console.connect(tab, cases.ws);
      try {
        later.client.on("message", listen);
        const push = c.sealAuthenticated(jsId, agent.secret, tab.id, c.publicKeyOf(tab.secret), new TextEncoder().encode("status: up"), null, 1);
        await agent.client?.publishAsync(`sr/v1/inbox/${c.toHex(tab.id)}`, /** @type {any} */ (push.envelope), { qos: 1 });
        for (let i = 0; i < 100 && later.peerVersions.get(peer) !== 1; i++) await sleep(50);
        assert.equal(later.peerVersions.get(peer), 1);
        fromAgent.length = 0;
        assert.equal(new TextDecoder().decode(await later.request(peer, new TextEncoder().encode("again"))), "again");
        assert.equal(fromAgent[0]?.[0], 1, "asked in version 1, so answered in it");
      } finally {
        await later.close();
      }
    } finally {
      await agent.close();
    }
  } finally {
    await console.close();
    for (const who of [me, tab]) who.wipe();
  }
});
