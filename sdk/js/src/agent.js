// An instance for the JavaScript SDK (Node): logs in with its token — the bundle unwrapped
// here names its owner and pins the owner's key, and at login that pin is compared with the
// directory's answer (protocol §6: a difference means the owner was reset or the server lies,
// and the instance must be re-enrolled) — then answers each sender-authenticated request from
// its owner with a sealed reply that names the request (protocol §4.2), on a persistent
// session, so what is sent while it reconnects waits for it (§5.6). Anonymous envelopes get no
// answer (their sender is not proven), and every envelope it cannot or will not open is
// reported, never dropped in silence.

import mqtt from "mqtt";
import * as c from "./crypto.js";
import { Api } from "./identity.js";

/**
 * The owner key this instance's bundle pins is not the one the directory serves: the owner's
 * password was reset (a new key), or the server is lying. Either way the instance must be
 * re-enrolled before it trusts anything.
 */
export class OwnerKeyChangedError extends Error {
  /**
   * @param {string} owner
   * @param {string} pinned
   * @param {string} served
   */
  constructor(owner, pinned, served) {
    super(`the directory serves owner ${owner} a key (witness ${served}) other than the one this instance was enrolled with (witness ${pinned}): the owner's password was reset, or the server is lying — re-enrol this instance`);
    this.owner = owner;
    this.pinned = pinned;
    this.served = served;
  }
}

/**
 * An envelope the agent did not answer: who the header says sent it, and why.
 * @typedef {{ from: string, reason: string }} Unopened
 */

/** How long the broker keeps the agent's session between connections, by default (s). */
const SESSION_EXPIRY_SECS = 3600;

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
    const served = c.fromB64((await api.call("GET", `/v1/principals/${c.toHex(owner)}/key`, { auth })).public_key);
    if (c.toHex(served) !== c.toHex(ownerPublic)) {
      c.wipe(secret);
      throw new OwnerKeyChangedError(c.toHex(owner), c.witness(ownerPublic), c.witness(served));
    }
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
    /**
     * The newest envelope version the owner has sent: what `notify` seals in (protocol §4.3);
     * the current one until the owner is heard from.
     * @type {number | undefined}
     */
    this.ownerVersion = undefined;
  }

  /**
   * Connects to `url` and answers every request from the owner with `handler(payload)`'s
   * bytes until `close()`. Resolves once subscribed. The session is persistent (Clean Start 0,
   * `expirySecs`; the broker may grant less), so requests sent while the agent reconnects
   * wait for it. `onUnopened` hears of every envelope that gets no answer — not from the
   * owner, not sender-authenticated, forged, replayed, or sealed to a key this instance no
   * longer has — with its claimed sender and why (never its contents); by default a warning
   * on the console.
   * @param {string} url
   * @param {(payload: Uint8Array) => Uint8Array} handler
   * @param {{ expirySecs?: number, onUnopened?: (u: Unopened) => void }} [options]
   */
  async serve(url, handler, { expirySecs = SESSION_EXPIRY_SECS, onUnopened = (u) => console.warn(`sealrelay agent: an envelope from ${u.from} was not answered: ${u.reason}`) } = {}) {
    const client = mqtt.connect(url, {
      protocolVersion: 5,
      username: this.auth.login,
      password: this.auth.secret,
      clientId: `agent-${this.auth.login}`,
      clean: false,
      properties: { sessionExpiryInterval: expirySecs },
      timerVariant: "native",
    });
    this.client = client;
    // Listening before the CONNACK: a resumed session's waiting envelopes may arrive in the
    // same read as the CONNACK, before an `await` on the connection would resume.
    client.on("message", (_topic, data) => {
      const envelope = new Uint8Array(data);
      const from = c.toHex(envelope.subarray(2, 18));
      let opened;
      try {
        opened = c.openEnvelope(this.id, this.secret, envelope, this.ownerPublic, this.guard);
      } catch (e) {
        return onUnopened({ from, reason: e instanceof Error ? e.message : String(e) });
      }
      if (!opened.authenticated) return onUnopened({ from, reason: "it is not sender-authenticated (kind 1): its sender is not proven, so it is not answered" });
      if (c.toHex(opened.sender) !== c.toHex(this.owner)) return onUnopened({ from, reason: "it is not from this instance's owner" });
      // Newest version the owner has shown it opens (an older console of the same user
      // may be asking), and the answer in the version of its request (protocol §4.3).
      this.ownerVersion = Math.max(this.ownerVersion ?? 0, opened.version);
      const { envelope: reply } = c.sealAuthenticated(this.id, this.secret, this.owner, this.ownerPublic, handler(opened.payload), opened.messageId, opened.version);
      client.publish(`sr/v1/inbox/${c.toHex(this.owner)}`, /** @type {any} */ (reply), { qos: 1 });
    });
    try {
      await new Promise((resolve, reject) => {
        client.once("connect", resolve);
        client.once("error", reject);
      });
    } catch (e) {
      client.end(true);
      throw e;
    }
    await client.subscribeAsync(`sr/v1/inbox/${c.toHex(this.id)}`, { qos: 1 });
  }

  /**
   * Seals `payload` to the owner, under the owner key this instance's bundle pins, and sends
   * it unasked (a status push; it answers nothing). Needs `serve` first.
   * @param {Uint8Array} payload
   */
  async notify(payload) {
    if (!this.client) throw new Error("the agent is not connected: call serve() first");
    const { envelope } = c.sealAuthenticated(this.id, this.secret, this.owner, this.ownerPublic, payload, null, this.ownerVersion ?? c.VERSION);
    await this.client.publishAsync(`sr/v1/inbox/${c.toHex(this.owner)}`, /** @type {any} */ (envelope), { qos: 1 });
  }

  async close() {
    await this.client?.endAsync();
    c.wipe(this.secret);
  }
}

export { Api };
