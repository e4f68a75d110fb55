// A console's messaging for the JavaScript SDK: MQTT.js (over ws/wss in a browser, any
// transport in Node) logged in with the derived secret, subscribed to the own inbox; requests
// are sealed here (kind 2) to a key from the keyring — never the directory's word alone — and
// answered by the reply that names them (protocol §4.2); other messages are not the answer.

import mqtt from "mqtt";
import * as c from "./crypto.js";

export class Console {
  /** Connects `identity` to the broker at `url` (mqtt://, ws://, wss://). */
  static async connect(identity, url, options = {}) {
    const client = await mqtt.connectAsync(url, {
      protocolVersion: 5,
      username: identity.login,
      password: identity.authSecret,
      clientId: `console-${c.toHex(identity.id).slice(0, 8)}-${Math.random().toString(16).slice(2, 8)}`,
      timerVariant: "native",
      ...options,
    });
    const console = new Console(identity, client);
    await client.subscribeAsync(`sr/v1/inbox/${c.toHex(identity.id)}`, { qos: 1 });
    return console;
  }

  constructor(identity, client) {
    this.identity = identity;
    this.client = client;
    this.guard = new c.ReplayGuard();
    /** message id hex → resolve(payload) of requests in flight */
    this.pending = new Map();
    client.on("message", (_topic, envelope) => this.#receive(new Uint8Array(envelope)));
  }

  /** The pinned key of `peer` (hex id), or an error: never the server's word alone. */
  keyOf(peer) {
    const key = this.identity.keyring?.pins.get(peer);
    if (!key) throw new Error(`${peer} is not in your keyring: compare its witness out of band and pin it`);
    return key;
  }

  #receive(envelope) {
    try {
      const header = c.parseHeader(envelope);
      const opened = c.openEnvelope(this.identity.id, this.identity.secret, envelope, header.kind === 2 ? this.keyOf(c.toHex(header.sender)) : null, this.guard);
      const waiter = opened.authenticated && opened.inReplyTo && this.pending.get(c.toHex(opened.inReplyTo));
      if (waiter && waiter.peer === c.toHex(opened.sender)) waiter.resolve(opened.payload);
    } catch {
      // Not for a request of ours, or it does not open: not the answer to anything.
    }
  }

  /** Seals `payload` to instance `peer` (hex id) and resolves with its reply's payload. */
  async request(peer, payload, timeoutMs = 10_000) {
    const to = c.idFromHex(peer);
    const { envelope, messageId } = c.sealAuthenticated(this.identity.id, this.identity.secret, to, this.keyOf(peer), payload);
    const key = c.toHex(messageId);
    const answer = new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no reply from ${peer} within ${timeoutMs} ms`)), timeoutMs);
      this.pending.set(key, { peer, resolve: (p) => { clearTimeout(timer); resolve(p); } });
    });
    try {
      await this.client.publishAsync(`sr/v1/inbox/${peer}`, Buffer.from(envelope), { qos: 1 });
      return await answer;
    } finally {
      this.pending.delete(key);
    }
  }

  close() {
    return this.client.endAsync();
  }
}
