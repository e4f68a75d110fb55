// An instance for the JavaScript SDK (Node): logs in with its token — the bundle unwrapped
// here names its owner and pins the owner's key, so the directory is never asked for it —
// then answers each sender-authenticated request from its owner with a sealed reply that
// names the request (protocol §4.2). Anonymous envelopes get no answer: their sender is not
// proven.

import mqtt from "mqtt";
import * as c from "./crypto.js";
import { Api } from "./identity.js";

export class Agent {
  /** Logs the instance in with `token` at the API `api`. */
  static async login(api, token) {
    await c.ready();
    const { instance, keys } = await c.tokenKeys(token);
    const auth = { login: c.toHex(instance), secret: c.authSecret(keys) };
    const me = await api.call("GET", "/v1/me", { auth });
    const bundle = c.decodeBundle(c.unwrap(keys, instance, c.fromB64(me.wrapped_key)));
    if (!bundle.owner) throw new Error("this token's bundle is not an instance's");
    return new Agent(instance, bundle, auth);
  }

  constructor(id, bundle, auth) {
    this.id = id;
    this.secret = bundle.secret;
    this.owner = bundle.owner;
    this.ownerPublic = bundle.ownerPublic;
    this.auth = auth;
    this.guard = new c.ReplayGuard();
  }

  /**
   * Connects to `url` and answers every request from the owner with `handler(payload)`'s
   * bytes until `close()`. Resolves once subscribed.
   */
  async serve(url, handler) {
    this.client = await mqtt.connectAsync(url, {
      protocolVersion: 5,
      username: this.auth.login,
      password: this.auth.secret,
      clientId: `agent-${this.auth.login.slice(0, 8)}`,
      timerVariant: "native",
    });
    this.client.on("message", (_topic, data) => {
      let opened;
      try {
        opened = c.openEnvelope(this.id, this.secret, new Uint8Array(data), this.ownerPublic, this.guard);
      } catch {
        return; // not from the owner, forged, replayed or stale: never answered
      }
      if (!opened.authenticated || c.toHex(opened.sender) !== c.toHex(this.owner)) return;
      const { envelope } = c.sealAuthenticated(this.id, this.secret, this.owner, this.ownerPublic, handler(opened.payload), opened.messageId);
      this.client.publish(`sr/v1/inbox/${c.toHex(this.owner)}`, Buffer.from(envelope), { qos: 1 });
    });
    await this.client.subscribeAsync(`sr/v1/inbox/${c.toHex(this.id)}`, { qos: 1 });
  }

  async close() {
    await this.client?.endAsync();
    c.wipe(this.secret);
  }
}

export { Api };
