// Registration and login for the JavaScript SDK (docs/http-api.md, docs/protocol.md §2–3):
// the key pair is made here, wrapped under the password here, and unwrapped here at login;
// the server only ever receives the public key, the wrapped key, the salt and the derived
// auth secret. Uses fetch (browsers, Node 20) and ./crypto.js; never sends the password.

import _sodium from "libsodium-wrappers-sumo";
import * as c from "./crypto.js";

/** An HTTP API error with the server's code and message (its JSON error body). */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(`server answered ${status} ${code}: ${message}`);
    this.status = status;
    this.code = code;
  }
}

/** The JSON API at `base` (http(s)://host:port). */
export class Api {
  constructor(base) {
    this.base = base.replace(/\/+$/, "");
  }

  /**
   * One API call; a 4xx/5xx answer is thrown as an ApiError.
   * @param {string} method
   * @param {string} path
   * @param {{ auth?: { login: string, secret: string }, body?: unknown }} [options]
   */
  async call(method, path, { auth, body } = {}) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (auth) headers.Authorization = "Basic " + btoa(`${auth.login}:${auth.secret}`);
    const response = await fetch(this.base + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const json = await response.json().catch(() => null);
    if (!response.ok) {
      throw new ApiError(response.status, json?.error ?? "unknown", json?.message ?? `HTTP ${response.status} without a JSON error body`);
    }
    return json;
  }

  prelogin(name) {
    return this.call("POST", "/v1/prelogin", { body: { name } });
  }
}

/** The directory's key for `peer` is not the pinned one: refused, never used. */
export class PinMismatchError extends Error {
  constructor(peer, pinned, served) {
    super(`the server's key for ${peer} (witness ${served}) is not the key pinned for it (witness ${pinned}); refusing it. Either the server is substituting keys, or its key was replaced (a password reset or a re-enrolment): compare witnesses out of band before trusting the new key`);
    Object.assign(this, { peer, pinned, served });
  }
}

/** `peer` is not in the keyring, so the server's word alone cannot vouch for its key. */
export class NotPinnedError extends Error {
  constructor(peer) {
    super(`${peer} is not in your keyring: compare its witness out of band and pin it, or re-enrol it`);
    this.peer = peer;
  }
}

/** The server served a keyring older than one this client already saw. */
export class KeyringRollbackError extends Error {
  constructor(seen, served) {
    super(`the server served keyring version ${served}, older than version ${seen} already seen for this key: refusing a rolled-back keyring`);
    Object.assign(this, { seen, served });
  }
}

/** The strongest of the advertised parameters and the client floor, member by member. */
function strongest(advertised) {
  return {
    memory_kib: Math.max(advertised.memory_kib, c.CLIENT_MIN_KDF.memory_kib),
    iterations: Math.max(advertised.iterations, c.CLIENT_MIN_KDF.iterations),
    parallelism: 1,
  };
}

/**
 * A logged-in principal: its id, its private key (unwrapped locally) and its login secret.
 * `wipe()` it when done.
 */
export class Identity {
  constructor(id, login, secret, authSecret) {
    this.id = id;
    this.login = login;
    this.secret = secret;
    this.authSecret = authSecret;
  }

  get publicKey() {
    return c.publicKeyOf(this.secret);
  }

  get witness() {
    return c.witness(this.publicKey);
  }

  wipe() {
    c.wipe(this.secret);
  }

  /**
   * Creates a user: a fresh key pair wrapped under a key derived from `password` with a
   * fresh salt, at the server's advertised KDF parameters or the client floor if stronger.
   */
  static async register(api, name, password) {
    await _sodium.ready;
    const params = strongest(await api.prelogin(name));
    const id = _sodium.randombytes_buf(16);
    const secret = _sodium.crypto_box_keypair().privateKey;
    const salt = _sodium.randombytes_buf(16);
    const keys = await c.deriveFromPassword(password, salt, params);
    const bundle = c.encodeBundle({ secret });
    const auth = c.authSecret(keys);
    await api.call("POST", "/v1/users", {
      body: {
        name,
        user_id: c.toHex(id),
        public_key: c.b64(c.publicKeyOf(secret)),
        wrapped_key: c.b64(c.wrap(keys, id, bundle)),
        auth_secret: auth,
        kdf: { salt: c.b64(salt), ...params },
      },
    });
    c.wipe(bundle);
    c.wipe(keys.wrapKey);
    return new Identity(id, name, secret, auth);
  }

  /**
   * Refuses a keyring older than `seen` (the newest version this client remembers for this
   * server, user and key); persist `this.keyring.version` between runs to use it.
   */
  requireKeyringVersion(seen) {
    const held = this.keyring?.version ?? 0n;
    if (held < BigInt(seen)) throw new KeyringRollbackError(BigInt(seen), held);
  }

  /** The pinned key for `peer` (hex) if the directory's `served` key agrees with it. */
  checkServedKey(peer, served) {
    const pinned = this.keyring?.pins.get(peer);
    if (!pinned) throw new NotPinnedError(peer);
    if (c.toHex(pinned) !== c.toHex(served)) {
      throw new PinMismatchError(peer, c.witness(pinned), c.witness(served));
    }
    return pinned;
  }

  /** This user's instances, each with whether the directory's key agrees with its pin. */
  async instances(api) {
    const { instances } = await api.call("GET", "/v1/instances", { auth: this.auth });
    return instances.map((i) => {
      let pin = "pinned";
      try {
        this.checkServedKey(i.id, c.fromB64(i.public_key));
      } catch (e) {
        pin = e instanceof NotPinnedError ? "unpinned" : "mismatch";
      }
      return { ...i, pin };
    });
  }

  /**
   * Writes the keyring with `change` applied to a copy of the pins, at the stored version
   * plus one (the server refuses any other: another console wrote first — log in again).
   */
  async #writeKeyring(api, change) {
    const pins = new Map(this.keyring?.pins ?? []);
    change(pins);
    await api.call("PUT", "/v1/me/keyring", { auth: this.auth, body: await this.#sealedNext(pins) });
    this.keyring = { version: this.#nextVersion(), pins };
  }

  /**
   * Pins an instance enrolled before keyrings, after its witness (`sealrelay agent` prints
   * it) was compared out of band: refused unless the directory's key has that witness.
   */
  async pinInstance(api, peer, witness) {
    const view = await api.call("GET", `/v1/principals/${peer}/key`, { auth: this.auth });
    const served = c.fromB64(view.public_key);
    if (c.witness(served) !== witness) throw new PinMismatchError(peer, witness, c.witness(served));
    await this.#writeKeyring(api, (pins) => pins.set(peer, served));
  }

  /** Removes one of this user's instances (its token dies at once) and drops its pin. */
  async removeInstance(api, peer) {
    await api.call("DELETE", `/v1/instances/${peer}`, { auth: this.auth });
    if (this.keyring?.pins.has(peer)) await this.#writeKeyring(api, (pins) => pins.delete(peer));
  }

  /**
   * Changes the password: the same private key re-wrapped under a key from the new
   * password with a fresh salt; the server swaps it at once and closes other sessions.
   */
  async changePassword(api, newPassword) {
    const params = strongest((await api.call("GET", "/v1/me", { auth: this.auth })).kdf_recommended ?? (await api.prelogin(this.login)));
    const salt = _sodium.randombytes_buf(16);
    const keys = await c.deriveFromPassword(newPassword, salt, params);
    const bundle = c.encodeBundle({ secret: this.secret });
    const auth = c.authSecret(keys);
    await api.call("POST", "/v1/me/password", {
      auth: this.auth,
      body: { wrapped_key: c.b64(c.wrap(keys, this.id, bundle)), auth_secret: auth, kdf: { salt: c.b64(salt), ...params } },
    });
    c.wipe(bundle);
    c.wipe(keys.wrapKey);
    this.authSecret = auth;
  }

  /** The Basic login for API calls. */
  get auth() {
    return { login: this.login, secret: this.authSecret };
  }

  /**
   * Creates an instance owned by this user: its key pair and token are made here, its
   * bundle (pinning this user's key) wrapped under the token, an escrow copy wrapped for this
   * user, and the new key pinned in this user's keyring — all in one request. Returns the
   * instance id and its token, shown once.
   */
  async addInstance(api) {
    const id = _sodium.randombytes_buf(16);
    const { token, publicKey, body } = await this.#enrol(id);
    const pins = this.#pinsWith(c.toHex(id), publicKey);
    body.keyring = await this.#sealedNext(pins);
    await api.call("POST", "/v1/instances", { auth: this.auth, body: { instance_id: c.toHex(id), ...body } });
    this.keyring = { version: this.#nextVersion(), pins };
    return { id, token };
  }

  /**
   * A new key pair and token for instance `peer` (hex): after this user's password reset, or
   * when the instance's host is no longer trusted. The old token dies; the new key is pinned.
   */
  async reenrolInstance(api, peer) {
    const { token, publicKey, body } = await this.#enrol(c.idFromHex(peer));
    const pins = this.#pinsWith(peer, publicKey);
    body.keyring = await this.#sealedNext(pins);
    await api.call("POST", `/v1/instances/${peer}/reenrol`, { auth: this.auth, body });
    this.keyring = { version: this.#nextVersion(), pins };
    return token;
  }

  /**
   * A new token for instance `peer` (hex), the same key: the bundle comes from this user's
   * escrow copy, checked to name this user as owner and to hold the listed key, and is
   * re-wrapped under the new token. The old token dies at once.
   */
  async rotateToken(api, peer) {
    const { instances } = await api.call("GET", "/v1/instances", { auth: this.auth });
    const view = instances.find((i) => i.id === peer);
    if (!view) throw new Error(`${peer} is not one of your instances`);
    if (!view.owner_copy) throw new Error(`instance ${peer} has no escrow copy: re-enrol it`);
    const id = c.idFromHex(peer);
    const bundle = c.unwrap(await c.escrowKeys(this.secret), id, c.fromB64(view.owner_copy));
    const decoded = c.decodeBundle(bundle);
    if (!decoded.owner || c.toHex(decoded.owner) !== c.toHex(this.id) || c.b64(c.publicKeyOf(decoded.secret)) !== view.public_key) {
      throw new Error(`the escrow copy of ${peer} does not hold the instance's key`);
    }
    const token = `srt1.${peer}.${c.b64url(_sodium.randombytes_buf(32))}`;
    const { keys } = await c.tokenKeys(token);
    await api.call("POST", `/v1/instances/${peer}/token`, {
      auth: this.auth,
      body: { wrapped_key: c.b64(c.wrap(keys, id, bundle)), auth_secret: c.authSecret(keys) },
    });
    c.wipe(bundle);
    c.wipe(decoded.secret);
    return token;
  }

  /** A key pair and token for instance `id`, and the enrolment body (protocol §3). */
  async #enrol(id) {
    const pair = _sodium.crypto_box_keypair();
    const token = `srt1.${c.toHex(id)}.${c.b64url(_sodium.randombytes_buf(32))}`;
    const { keys } = await c.tokenKeys(token);
    const bundle = c.encodeBundle({ secret: pair.privateKey, owner: this.id, ownerPublic: this.publicKey });
    const body = {
      public_key: c.b64(pair.publicKey),
      wrapped_key: c.b64(c.wrap(keys, id, bundle)),
      auth_secret: c.authSecret(keys),
      owner_copy: c.b64(c.wrap(await c.escrowKeys(this.secret), id, bundle)),
    };
    c.wipe(bundle);
    c.wipe(pair.privateKey);
    return { token, publicKey: pair.publicKey, body };
  }

  #pinsWith(peer, publicKey) {
    return new Map(this.keyring?.pins ?? []).set(peer, publicKey);
  }

  #nextVersion() {
    return (this.keyring?.version ?? 0n) + 1n;
  }

  /** The keyring body the server takes at the next version. */
  async #sealedNext(pins) {
    const version = this.#nextVersion();
    return { version: Number(version), keyring: c.b64(await c.sealKeyring(this.id, this.secret, version, pins)) };
  }

  /** Logs a user in: prelogin, derive, fetch the wrapped key, unwrap it here. */
  static async login(api, name, password) {
    await _sodium.ready;
    const spec = await api.prelogin(name);
    const keys = await c.deriveFromPassword(password, c.fromB64(spec.salt), spec);
    const auth = c.authSecret(keys);
    const me = await api.call("GET", "/v1/me", { auth: { login: name, secret: auth } });
    const id = c.idFromHex(me.id);
    const { secret } = c.decodeBundle(c.unwrap(keys, id, c.fromB64(me.wrapped_key)));
    c.wipe(keys.wrapKey);
    if (c.toHex(c.publicKeyOf(secret)) !== c.toHex(c.fromB64(me.public_key))) {
      throw new Error("the server's public key for this account is not the one the wrapped key holds: refusing it");
    }
    const identity = new Identity(id, name, secret, auth);
    if (me.keyring) {
      const ring = await c.openKeyring(id, secret, c.fromB64(me.keyring));
      if (ring.version !== BigInt(me.keyring_version)) {
        throw new Error(`the keyring says version ${ring.version} but the server says ${me.keyring_version}: refusing it`);
      }
      identity.keyring = ring;
    }
    return identity;
  }
}
