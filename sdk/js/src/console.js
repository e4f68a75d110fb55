// A console's messaging for the JavaScript SDK: MQTT.js (over ws/wss in a browser, any
// transport in Node) logged in with the derived secret, subscribed to the own inbox; requests
// are sealed here (kind 2) to a key from the keyring — never the directory's word alone — and
// answered by the reply that names them (protocol §4.2); other messages are not the answer.
// The link's state is reported as it changes, so a page can say what is happening rather than
// spin: a session the server ended for good (protocol §5.5) is not retried.

import mqtt from "mqtt";
import * as c from "./crypto.js";

/**
 * What the link is doing: `connected`; `reconnecting` (retrying on its own); `signed_out`
 * (the server ended the session for a reason retrying cannot fix: the password was changed or
 * reset, the account deleted — log in again); `refused` (the broker turned the login away).
 * `code` is the MQTT 5 reason code and `reason` the broker's label (protocol §5.5); `attempt`
 * counts the tries since the link was last up (1 for the first), so a page can tell a restart
 * from a broker it cannot reach.
 * @typedef {{ state: "connected" | "reconnecting" | "signed_out" | "refused", code?: number, reason?: string, attempt?: number }} LinkState
 */

/**
 * A message this console cannot open because it was sealed to a previous key of its user
 * (after a reset): who sent it and both witnesses.
 * @typedef {{ from: string, error: c.StaleKeyError }} StaleMessage
 */

/** DISCONNECT codes after which reconnecting with the same secret cannot succeed. */
const FINAL_DISCONNECT = new Set([0x87, 0x8e, 0x98]);
/** CONNACK codes that refuse these credentials (not a passing capacity or rate limit). */
const FINAL_CONNACK = new Set([0x84, 0x85, 0x86, 0x87, 0x8c]);

/** MQTT 5 PUBACK 0x10: accepted, but the recipient has no session to deliver it to (§5.5). */
const NO_SESSION = 0x10;

/** The recipient has no session (not connected, nothing queued for it): nothing was delivered. */
export class NotConnectedError extends Error {
  /** @param {string} peer */
  constructor(peer) {
    super(`${peer} is not connected, and no session of it keeps messages: nothing was delivered`);
    this.peer = peer;
  }
}

export class Console {
  /**
   * Connects `identity` to the broker at `url` (mqtt://, ws://, wss://). `onState` hears every
   * later change of the link; `onStale` hears of messages sealed to a previous key. A login
   * that neither succeeds nor fails within `connectTimeoutMs` (a socket blocked by a content
   * security policy or a TLS error never settles in a browser) is an error.
   * @param {import("./identity.js").Identity} identity
   * @param {string} url
   * @param {{ onState?: (s: LinkState) => void, onStale?: (m: StaleMessage) => void, connectTimeoutMs?: number } & import("mqtt").IClientOptions} [options]
   */
  static async connect(identity, url, options = {}) {
    const { onState = () => {}, onStale = () => {}, connectTimeoutMs = 15_000, ...mqttOptions } = options;
    const client = mqtt.connect(url, {
      protocolVersion: 5,
      username: identity.login,
      password: identity.authSecret,
      clientId: `console-${c.toHex(identity.id).slice(0, 8)}-${c.toHex(c.randomBytes(3))}`,
      timerVariant: "native",
      reconnectPeriod: 2_000,
      ...mqttOptions,
    });
    // Held from the first byte: a resumed session's waiting envelopes may arrive in the same
    // read as the CONNACK, before an `await` on the connection would resume.
    /** @type {Uint8Array[]} */
    const early = [];
    /** @param {string} _topic @param {Uint8Array} envelope */
    const hold = (_topic, envelope) => early.push(new Uint8Array(envelope));
    client.on("message", hold);
    try {
      await new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`${url}: no answer to the MQTT login within ${connectTimeoutMs} ms (blocked socket, untrusted certificate, or the broker is down)`)), connectTimeoutMs);
        client.once("connect", () => resolve(clearTimeout(timer)));
        client.once("error", (e) => reject(Object.assign(new Error(`${url}: ${e.message}`), { code: /** @type {any} */ (e).code })));
      });
    } catch (e) {
      client.end(true);
      throw e;
    }
    const console = new Console(identity, client, onState, onStale);
    // No event can come between these: the console's own listener takes over from here.
    client.off("message", hold);
    for (const envelope of early) console.#receive(envelope);
    await client.subscribeAsync(`sr/v1/inbox/${c.toHex(identity.id)}`, { qos: 1 });
    return console;
  }

  /**
   * @param {import("./identity.js").Identity} identity
   * @param {import("mqtt").MqttClient} client
   * @param {(s: LinkState) => void} onState
   * @param {(m: StaleMessage) => void} onStale
   */
  constructor(identity, client, onState, onStale) {
    this.identity = identity;
    this.client = client;
    this.guard = new c.ReplayGuard();
    /** @type {Map<string, { peer: string, version: number, resolve: (payload: Uint8Array) => void }>} message id hex → request in flight (Maps keep insertion order: the oldest first) */
    this.pending = new Map();
    /**
     * Peer (hex id) → the newest envelope version it has sent, sender-authenticated: what it
     * opens, so what requests to it are sealed in (protocol §4.3).
     * @type {Map<string, number>}
     */
    this.peerVersions = new Map();
    /**
     * MQTT packet id → the reason code of its last PUBACK. MQTT.js settles a publish answered
     * 0x10 as a success without the code; the PUBACK is seen here first, the settled publish
     * names its packet id, and the entry is taken then (ids are reused, so at most 65,535).
     * @type {Map<number, number>}
     */
    this.pubacks = new Map();
    client.on("packetreceive", (packet) => {
      if (packet.cmd === "puback" && packet.messageId !== undefined) this.pubacks.set(packet.messageId, packet.reasonCode ?? 0);
    });
    this.onStale = onStale;
    client.on("message", (_topic, envelope) => this.#receive(new Uint8Array(envelope)));
    let attempt = 0;
    client.on("connect", () => {
      attempt = 0;
      onState({ state: "connected" });
    });
    client.on("reconnect", () => onState({ state: "reconnecting", attempt: ++attempt }));
    client.on("disconnect", (packet) => {
      const code = packet.reasonCode ?? 0;
      const reason = packet.properties?.reasonString;
      if (FINAL_DISCONNECT.has(code)) {
        client.end(true);
        onState({ state: "signed_out", code, reason });
      } else {
        onState({ state: "reconnecting", code, reason });
      }
    });
    client.on("error", (e) => {
      const code = /** @type {any} */ (e).code;
      if (FINAL_CONNACK.has(code)) {
        client.end(true);
        onState({ state: "refused", code, reason: e.message });
      }
    });
  }

  /**
   * The pinned key of `peer` (hex id), or an error: never the server's word alone.
   * @param {string} peer
   */
  keyOf(peer) {
    const key = this.identity.keyring?.pins.get(peer);
    if (!key) throw new Error(`${peer} is not in your keyring: compare its witness out of band and pin it`);
    return key;
  }

  /** @param {Uint8Array} envelope */
  #receive(envelope) {
    try {
      const header = c.parseHeader(envelope);
      // The sender's pinned key, if any: the witness is checked before it is needed.
      const senderKey = this.identity.keyring?.pins.get(c.toHex(header.sender)) ?? null;
      const opened = c.openEnvelope(this.identity.id, this.identity.secret, envelope, senderKey, this.guard);
      if (!opened.authenticated) return;
      const peer = c.toHex(opened.sender);
      // A peer opens at least the newest version it has sent (protocol §4.3).
      this.peerVersions.set(peer, Math.max(this.peerVersions.get(peer) ?? 0, opened.version));
      const waiter = opened.inReplyTo
        ? this.pending.get(c.toHex(opened.inReplyTo))
        : // A version-1 reply cannot name its request: the oldest version-1 request to that
          // peer takes it, as version-1 consoles did.
          opened.version === 1 && [...this.pending.values()].find((w) => w.peer === peer && w.version === 1);
      if (waiter && waiter.peer === peer) waiter.resolve(opened.payload);
    } catch (e) {
      // Sealed to the key this user had before a reset: say so, with both witnesses. Anything
      // else that does not open is not the answer to anything.
      if (e instanceof c.StaleKeyError) this.onStale({ from: c.toHex(envelope.subarray(2, 18)), error: e });
    }
  }

  /**
   * Seals `payload` to instance `peer` (hex id) and resolves with its reply's payload.
   * `onSent` hears when the broker has taken it for delivery. Rejects at once with
   * {@link NotConnectedError} when the broker has nobody to deliver it to, and after
   * `timeoutMs` when no reply comes.
   * @param {string} peer
   * @param {Uint8Array} payload
   * @param {number} [timeoutMs]
   * @param {() => void} [onSent]
   */
  async request(peer, payload, timeoutMs = 10_000, onSent = () => {}) {
    const to = c.idFromHex(peer);
    // The newest version the peer has shown it opens; the current one until it is heard.
    const version = this.peerVersions.get(peer) ?? c.VERSION;
    const { envelope, messageId } = c.sealAuthenticated(this.identity.id, this.identity.secret, to, this.keyOf(peer), payload, null, version);
    const key = c.toHex(messageId);
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    let timer;
    /** @type {Promise<Uint8Array>} */
    const answer = new Promise((resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`no reply from ${peer} within ${timeoutMs} ms`)), timeoutMs);
      this.pending.set(key, { peer, version, resolve });
    });
    try {
      const sent = await this.client.publishAsync(`sr/v1/inbox/${peer}`, /** @type {any} */ (envelope), { qos: 1 });
      const code = sent?.messageId === undefined ? 0 : this.pubacks.get(sent.messageId);
      if (sent?.messageId !== undefined) this.pubacks.delete(sent.messageId);
      if (code === NO_SESSION) throw new NotConnectedError(peer);
      onSent();
      return await answer;
    } finally {
      // A request that failed before its answer leaves that promise unsettled, never rejected.
      clearTimeout(timer);
      this.pending.delete(key);
    }
  }

  close() {
    return this.client.endAsync();
  }
}
