// An instance for the JavaScript SDK (Node): logs in with its token — the bundle unwrapped
// here names its owner and pins the owner's key, so the directory is never asked for it —
// then answers each sender-authenticated request from its owner with a sealed reply that
// names the request (protocol §4.2). Anonymous envelopes get no answer: their sender is not
// proven.

import mqtt from "mqtt";
import * as c from "./crypto.js";
import { Api } from "./identity.js";

export class Agent {
  /**
   * Logs the instance in with `token` at the API `api`.
   * @param {Api} api
   * @param {string} token
   */
  static async login(api, token) {
    await c.ready();
    const { instance, keys } = await c.tokenKeys(token);
    const auth = { login: c.toHex(instance), secret: c.authSecret(keys) };
    const me = await api.call("GET", "/v1/me", { auth });
    const bundle = c.decodeBundle(c.unwrap(keys, instance, c.fromB64(me.wrapped_key)));
    c.wipeKeys(keys);
    const { secret, owner, ownerPublic } = bundle;
    if (!owner || !ownerPublic) throw new Error("this token's bundle is not an instance's");
    return new Agent(instance, { secret, owner, ownerPublic }, auth);
  }

  /**
   * @param {Uint8Array} id
   * @param {Required<c.Bundle>} bundle
   * @param {{ login: string, secret: string }} auth
   */
  constructor(id, bundle, auth) {
    this.id = id;
    this.secret = bundle.secret;
    this.owner = bundle.owner;
    this.ownerPublic = bundle.ownerPublic;
    this.auth = auth;
    this.guard = new c.ReplayGuard();
    /** @type {import("mqtt").MqttClient | undefined} set by `serve` */
    this.client = undefined;
  }

  /**
   * Connects to `url` and answers every request from the owner with `handler(payload)`'s
   * bytes until `close()`. Resolves once subscribed.
   * @param {string} url
   * @param {(payload: Uint8Array) => Uint8Array} handler
   */
  async serve(url, handler) {
    const client = await mqtt.connectAsync(url, {
      protocolVersion: 5,
      username: this.auth.login,
      password: this.auth.secret,
      clientId: `agent-${this.auth.login.slice(0, 8)}`,
      timerVariant: "native",
    });
    this.client = client;
    client.on("message", (_topic, data) => {
      let opened;
      try {
        opened = c.openEnvelope(this.id, this.secret, new Uint8Array(data), this.ownerPublic, this.guard);
      } catch {
        return; // not from the owner, forged, replayed or stale: never answered
      }
      if (!opened.authenticated || c.toHex(opened.sender) !== c.toHex(this.owner)) return;
      const { envelope } = c.sealAuthenticated(this.id, this.secret, this.owner, this.ownerPublic, handler(opened.payload), opened.messageId);
      client.publish(`sr/v1/inbox/${c.toHex(this.owner)}`, /** @type {any} */ (envelope), { qos: 1 });
    });
    await client.subscribeAsync(`sr/v1/inbox/${c.toHex(this.id)}`, { qos: 1 });
  }

  /**
   * Seals `payload` to the owner, under the owner key this instance's bundle pins, and sends
   * it unasked (a status push; it answers nothing). Needs `serve` first.
   * @param {Uint8Array} payload
   */
  async notify(payload) {
    if (!this.client) throw new Error("the agent is not connected: call serve() first");
    const { envelope } = c.sealAuthenticated(this.id, this.secret, this.owner, this.ownerPublic, payload);
    await this.client.publishAsync(`sr/v1/inbox/${c.toHex(this.owner)}`, /** @type {any} */ (envelope), { qos: 1 });
  }

  async close() {
    await this.client?.endAsync();
    c.wipe(this.secret);
  }
}

export { Api };
