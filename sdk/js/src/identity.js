// Registration and login for the JavaScript SDK (docs/http-api.md, docs/protocol.md §2–3):
// the key pair is made here, wrapped under the password here, and unwrapped here at login;
// the server only ever receives the public key, the wrapped key, the salt and the derived
// auth secret. Uses fetch (browsers, Node 20) and ./crypto.js; never sends the password.

import _sodium from "libsodium-wrappers-sumo";
import * as c from "./crypto.js";

/** An HTTP API error with the server's code and message (its JSON error body). */
export class ApiError extends Error {
  /**
   * @param {number} status
   * @param {string} code
   * @param {string} message
   */
  constructor(status, code, message) {
    super(`server answered ${status} ${code}: ${message}`);
    this.status = status;
    this.code = code;
  }
}

/** The JSON API at `base` (http(s)://host:port). */
export class Api {
  /**
   * @param {string} base
   */
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
    /** @type {Record<string, string>} */
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (auth) headers.Authorization = "Basic " + btoa(`${auth.login}:${auth.secret}`);
    const response = await fetch(this.base + path, {
      method,
      headers,
      // Credentials are only ever the Authorization header set here: no cookies, and no
      // browser login prompt when a 401 answers with `WWW-Authenticate: Basic`.
      credentials: "omit",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const json = await response.json().catch(() => null);
    if (!response.ok) {
      throw new ApiError(response.status, json?.error ?? "unknown", json?.message ?? `HTTP ${response.status} without a JSON error body`);
    }
    return json;
  }

  /**
   * @param {string} name
   * @returns {Promise<c.KdfParams & { salt: string }>}
   */
  prelogin(name) {
    return this.call("POST", "/v1/prelogin", { body: { name } });
  }
}

/** The directory's key for `peer` is not the pinned one: refused, never used. */
export class PinMismatchError extends Error {
  /**
   * @param {string} peer
   * @param {string} pinned
   * @param {string} served
   */
  constructor(peer, pinned, served) {
    super(`the server's key for ${peer} (witness ${served}) is not the key pinned for it (witness ${pinned}); refusing it. Either the server is substituting keys, or its key was replaced (a password reset or a re-enrolment): compare witnesses out of band before trusting the new key`);
    this.peer = peer;
    this.pinned = pinned;
    this.served = served;
  }
}

/** `peer` is not in the keyring, so the server's word alone cannot vouch for its key. */
export class NotPinnedError extends Error {
  /**
   * @param {string} peer
   */
  constructor(peer) {
    super(`${peer} is not in your keyring: compare its witness out of band and pin it, or re-enrol it`);
    this.peer = peer;
  }
}

/** The server served a keyring older than one this client already saw. */
export class KeyringRollbackError extends Error {
  /**
   * @param {bigint} seen
   * @param {bigint} served
   */
  constructor(seen, served) {
    super(`the server served keyring version ${served}, older than version ${seen} already seen for this key: refusing a rolled-back keyring`);
    this.seen = seen;
    this.served = served;
  }
}

/**
 * One entry of `GET /v1/instances` (docs/http-api.md).
 * @typedef {{ id: string, public_key: string, witness: string, created_at: number, online: boolean, last_seen: number | null, owner_copy: string | null, stale_owner_key: boolean }} InstanceView
 */

/**
 * An instance as `Identity.instances` lists it: the directory's view, how its key stands
 * against this user's keyring, and the name the user gave it (from the sealed keyring; null when none).
 * @typedef {InstanceView & { name: string | null, pin: "pinned" | "unpinned" | "mismatch", pinnedWitness?: string }} InstanceEntry
 */

/**
 * The strongest of the advertised parameters and the client floor, member by member.
 * @param {c.KdfParams} advertised
 * @returns {c.KdfParams}
 */
function strongest(advertised) {
  return {
    memory_kib: Math.max(advertised.memory_kib, c.CLIENT_FLOOR.memory_kib),
    iterations: Math.max(advertised.iterations, c.CLIENT_FLOOR.iterations),
    parallelism: 1,
  };
}

/**
 * `secret` (user `id`'s private key) wrapped under a key derived from `password` with a
 * fresh salt at `params` (protocol §2): the login secret and the request fields that carry
 * them (registration, reset, change of password).
 * @param {c.KdfParams} params
 * @param {Uint8Array} id
 * @param {Uint8Array} secret
 * @param {string} password
 */
async function wrapUserKey(params, id, secret, password) {
  const salt = _sodium.randombytes_buf(16);
  const keys = await c.deriveFromPassword(password, salt, params);
  const bundle = c.encodeBundle({ secret });
  const auth = c.authSecret(keys);
  const fields = {
    wrapped_key: c.b64(c.wrap(keys, id, bundle)),
    auth_secret: auth,
    kdf: { salt: c.b64(salt), ...params },
    key_proof: await c.keyProof(secret),
  };
  c.wipe(bundle);
  c.wipeKeys(keys);
  return { auth, fields };
}

/**
 * A fresh key pair for user `id` wrapped under `password`, for registration and reset.
 * @param {Api} api
 * @param {string} name
 * @param {Uint8Array} id
 * @param {string} password
 */
async function freshUserKey(api, name, id, password) {
  const secret = _sodium.crypto_box_keypair().privateKey;
  const { auth, fields } = await wrapUserKey(strongest(await api.prelogin(name)), id, secret, password);
  return { secret, auth, body: { public_key: c.b64(c.publicKeyOf(secret)), ...fields } };
}

/**
 * The keyring in a `GET /v1/me` answer, opened and checked against the version the server
 * states; undefined when the user has none yet.
 * @param {Uint8Array} id
 * @param {Uint8Array} secret
 * @param {{ keyring?: string | null, keyring_version: number }} me
 */
async function servedKeyring(id, secret, me) {
  if (!me.keyring) return undefined;
  const ring = await c.openKeyring(id, secret, c.fromB64(me.keyring));
  if (ring.version !== BigInt(me.keyring_version)) {
    throw new Error(`the keyring says version ${ring.version} but the server says ${me.keyring_version}: refusing it`);
  }
  return ring;
}

/**
 * A logged-in principal: its id, its private key (unwrapped locally) and its login secret.
 * `wipe()` it when done.
 */
export class Identity {
  /**
   * @param {Uint8Array} id
   * @param {string} login
   * @param {Uint8Array} secret
   * @param {string} authSecret
   */
  constructor(id, login, secret, authSecret) {
    this.id = id;
    this.login = login;
    this.secret = secret;
    this.authSecret = authSecret;
    /** @type {c.Keyring | undefined} the pinned keys, once read or written */
    this.keyring = undefined;
  }

  get publicKey() {
    return c.publicKeyOf(this.secret);
  }

  get witness() {
    return c.witness(this.publicKey);
  }

  /** Zeroes the private key and drops the login secret and pins: log out. */
  wipe() {
    c.wipe(this.secret);
    this.authSecret = "";
    this.keyring = undefined;
  }

  /**
   * Creates a user: a fresh key pair wrapped under a key derived from `password` with a
   * fresh salt, at the server's advertised KDF parameters or the client floor if stronger.
   * `invite` is the operator's one-time code, for a server with `auth.registration = "invite"`.
   * @param {Api} api
   * @param {string} name
   * @param {string} password
   * @param {{ invite?: string }} [options]
   */
  static async register(api, name, password, { invite } = {}) {
    await _sodium.ready;
    const id = _sodium.randombytes_buf(16);
    const { secret, auth, body } = await freshUserKey(api, name, id, password);
    const code = invite?.trim() ? { invite: invite.trim() } : {};
    await api.call("POST", "/v1/users", { body: { name, user_id: c.toHex(id), ...body, ...code } });
    return new Identity(id, name, secret, auth);
  }

  /**
   * Undoes the last change of `name`'s password within the server's grace period (protocol
   * §7.8), for when someone else made it: the wrap the change replaced is fetched with
   * `previousPassword`'s login secret and opened here, and the key proof of the key inside
   * authorises the rollback. Every other session of the user is closed.
   * @returns {Promise<{ identity: Identity, changedAt: number }>} the user logged in with
   *   `previousPassword` again, and when the undone change was made (unix seconds)
   * @param {Api} api
   * @param {string} name
   * @param {string} previousPassword
   */
  static async rollBack(api, name, previousPassword) {
    await _sodium.ready;
    const spec = await api.call("POST", "/v1/prelogin/previous", { body: { name } });
    const keys = await c.deriveFromPassword(previousPassword, c.fromB64(spec.salt), spec);
    const auth = c.authSecret(keys);
    const previous = await api.call("POST", "/v1/users/previous", { body: { name, auth_secret: auth } }).catch((e) => {
      c.wipeKeys(keys);
      if (e?.status === 403) {
        throw new Error(`nothing to roll back for ${name} with that password: it is not the password before the last change, or the change is older than the server keeps`);
      }
      throw e;
    });
    const id = c.idFromHex(previous.id);
    const { secret } = c.decodeBundle(c.unwrap(keys, id, c.fromB64(previous.wrapped_key)));
    c.wipeKeys(keys);
    if (c.toHex(c.publicKeyOf(secret)) !== c.toHex(c.fromB64(previous.public_key))) {
      c.wipe(secret);
      throw new Error("the server's public key for the previous wrap is not the one it holds: refusing it");
    }
    const keyProof = await c.keyProof(secret);
    c.wipe(secret);
    await api.call("POST", "/v1/users/rollback", { body: { name, auth_secret: auth, key_proof: keyProof } });
    return { identity: await Identity.login(api, name, previousPassword), changedAt: previous.changed_at };
  }

  /**
   * Completes an operator-issued reset (protocol §7.5) with `code` (`srr1.<user id>.<secret>`):
   * a **new** key pair wrapped under `newPassword`. What was sealed to the old key stays
   * unreadable ({@link c.StaleKeyError}); the instances returned still pin the old key and
   * must be re-enrolled.
   * @returns {Promise<{ identity: Identity, staleInstances: string[] }>}
   * @param {Api} api
   * @param {string} name
   * @param {string} code
   * @param {string} newPassword
   */
  static async completeReset(api, name, code, newPassword) {
    await _sodium.ready;
    const parts = code.trim().split(".");
    if (parts.length !== 3 || parts[0] !== "srr1") {
      throw new Error("a reset code has the form srr1.<32 hex user id>.<secret>, as `sealrelay admin reset-user` prints it");
    }
    const id = c.idFromHex(parts[1]);
    const { secret, auth, body } = await freshUserKey(api, name, id, newPassword);
    const done = await api.call("POST", "/v1/users/reset", { body: { name, reset_code: code.trim(), ...body } });
    return { identity: new Identity(id, name, secret, auth), staleInstances: done.stale_instances };
  }

  /**
   * Refuses a keyring older than `seen` (the newest version this client remembers for this
   * server, user and key); persist `this.keyring.version` between runs to use it.
   * @param {bigint | number} seen
   * @param {c.Keyring} [ring] the keyring to check, when not the one held
   */
  requireKeyringVersion(seen, ring = this.keyring) {
    const held = ring?.version ?? 0n;
    if (held < BigInt(seen)) throw new KeyringRollbackError(BigInt(seen), held);
  }

  /**
   * The pinned key for `peer` (hex) if the directory's `served` key agrees with it.
   * @param {string} peer
   * @param {Uint8Array} served
   */
  checkServedKey(peer, served) {
    const pinned = this.keyring?.pins.get(peer);
    if (!pinned) throw new NotPinnedError(peer);
    if (c.toHex(pinned) !== c.toHex(served)) {
      throw new PinMismatchError(peer, c.witness(pinned), c.witness(served));
    }
    return pinned;
  }

  /**
   * This user's instances (`GET /v1/instances`), each with `pin`: "pinned" (the directory's
   * key is the pinned one), "unpinned", or "mismatch" with the pinned key's `pinnedWitness`.
   * @param {Api} api
   * @returns {Promise<InstanceEntry[]>}
   */
  async instances(api) {
    /** @type {{ instances: InstanceView[] }} */
    const { instances } = await api.call("GET", "/v1/instances", { auth: this.auth });
    return instances.map((i) => {
      const name = this.keyring?.names.get(i.id) ?? null;
      try {
        this.checkServedKey(i.id, c.fromB64(i.public_key));
        return { ...i, name, pin: "pinned" };
      } catch (e) {
        if (e instanceof PinMismatchError) return { ...i, name, pin: "mismatch", pinnedWitness: e.pinned };
        return { ...i, name, pin: "unpinned" };
      }
    });
  }

  /**
   * Everything the server holds about this principal and, for a user, its instances
   * (`GET /v1/me/activity`, docs/accounting.md): stored values by size and hash, pairings,
   * sessions live and past, hourly usage, failed logins against its name.
   * @param {Api} api
   * @param {number} [since] unix seconds; the server's retention period when absent
   */
  activity(api, since) {
    const query = since === undefined ? "" : `?since=${Math.floor(since)}`;
    return api.call("GET", `/v1/me/activity${query}`, { auth: this.auth });
  }

  /**
   * Writes the keyring with `change` applied to a copy of the pins, at the stored version
   * plus one, with `send` (the request that carries it). When another console wrote first
   * (409 `keyring_conflict`), re-reads the keyring and applies `change` to it again: pins are
   * a set, so each write's own change merges with the other's.
   * @param {Api} api
   * @param {(pins: Map<string, Uint8Array>, names: Map<string, string>) => void} change
   * @param {(keyring: { version: number, keyring: string }) => Promise<unknown>} [send]
   */
  async #writeKeyring(api, change, send = (keyring) => api.call("PUT", "/v1/me/keyring", { auth: this.auth, body: keyring })) {
    for (let attempt = 1; ; attempt++) {
      const pins = new Map(this.keyring?.pins);
      const names = new Map(this.keyring?.names);
      change(pins, names);
      // A name goes with its pin.
      for (const id of names.keys()) if (!pins.has(id)) names.delete(id);
      try {
        await send(await this.#sealedNext(pins, names));
      } catch (e) {
        if (!(e instanceof ApiError && e.code === "keyring_conflict") || attempt === 3) throw e;
        await this.refreshKeyring(api);
        continue;
      }
      this.keyring = { version: this.#nextVersion(), pins, names };
      return;
    }
  }

  /**
   * Re-reads the keyring the server holds (another console of this user may have written
   * it), refusing one older than the one held; true when it changed.
   * @param {Api} api
   */
  async refreshKeyring(api) {
    const me = await api.call("GET", "/v1/me", { auth: this.auth });
    if (c.toHex(c.fromB64(me.public_key)) !== c.toHex(this.publicKey)) {
      throw new Error("the server's public key for this account is not the one this console holds: log in again");
    }
    const ring = await servedKeyring(this.id, this.secret, me);
    this.requireKeyringVersion(this.keyring?.version ?? 0n, ring);
    if ((ring?.version ?? 0n) === (this.keyring?.version ?? 0n)) return false;
    this.keyring = ring;
    return true;
  }

  /**
   * Pins an instance enrolled before keyrings, after its witness (`sealrelay agent` prints
   * it) was compared out of band: refused unless the directory's key has that witness.
   * @param {Api} api
   * @param {string} peer
   * @param {string} witness
   */
  async pinInstance(api, peer, witness) {
    const view = await api.call("GET", `/v1/principals/${peer}/key`, { auth: this.auth });
    const served = c.fromB64(view.public_key);
    if (c.witness(served) !== witness) throw new PinMismatchError(peer, witness, c.witness(served));
    await this.#writeKeyring(api, (pins) => pins.set(peer, served));
  }

  /**
   * Names one of this user's pinned instances (`peer`, hex; an empty name clears it) in the
   * sealed keyring: the server stores it without learning it, every console of the user
   * shows it.
   * @param {Api} api
   * @param {string} peer
   * @param {string} name
   */
  async renameInstance(api, peer, name) {
    const named = c.checkName(name);
    if (!this.keyring?.pins.has(peer)) throw new NotPinnedError(peer);
    await this.#writeKeyring(api, (pins, names) => {
      if (!pins.has(peer)) return;
      if (named) names.set(peer, named);
      else names.delete(peer);
    });
  }

  /**
   * Removes one of this user's instances (its token dies at once) and drops its pin.
   * @param {Api} api
   * @param {string} peer
   */
  async removeInstance(api, peer) {
    await api.call("DELETE", `/v1/instances/${peer}`, { auth: this.auth });
    if (this.keyring?.pins.has(peer)) await this.#writeKeyring(api, (pins) => pins.delete(peer));
  }

  /**
   * Changes the password: the same private key re-wrapped under a key from the new
   * password with a fresh salt; the server swaps it at once and closes other sessions.
   * @param {Api} api
   * @param {string} newPassword
   */
  async changePassword(api, newPassword) {
    const params = strongest((await api.call("GET", "/v1/me", { auth: this.auth })).kdf_recommended ?? (await api.prelogin(this.login)));
    const { auth, fields } = await wrapUserKey(params, this.id, this.secret, newPassword);
    await api.call("POST", "/v1/me/password", { auth: this.auth, body: fields });
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
   * `name`, if given, is kept in the sealed keyring: the server never learns it.
   * @param {Api} api
   * @param {{ name?: string }} [options]
   * @returns {Promise<{ id: Uint8Array, token: string }>}
   */
  async addInstance(api, { name = "" } = {}) {
    const named = c.checkName(name);
    const id = _sodium.randombytes_buf(16);
    const { token, publicKey, body } = await this.#enrol(id);
    await this.#writeKeyring(
      api,
      (pins, names) => {
        pins.set(c.toHex(id), publicKey);
        if (named) names.set(c.toHex(id), named);
      },
      (keyring) => api.call("POST", "/v1/instances", { auth: this.auth, body: { instance_id: c.toHex(id), ...body, keyring } }),
    );
    return { id, token };
  }

  /**
   * A new key pair and token for instance `peer` (hex): after this user's password reset, or
   * when the instance's host is no longer trusted. The old token dies; the new key is pinned.
   * @param {Api} api
   * @param {string} peer
   */
  async reenrolInstance(api, peer) {
    const { token, publicKey, body } = await this.#enrol(c.idFromHex(peer));
    await this.#writeKeyring(
      api,
      (pins) => pins.set(peer, publicKey),
      (keyring) => api.call("POST", `/v1/instances/${peer}/reenrol`, { auth: this.auth, body: { ...body, keyring } }),
    );
    return token;
  }

  /**
   * A new token for instance `peer` (hex), the same key: the bundle comes from this user's
   * escrow copy, checked to name this user as owner and to hold the listed key, and is
   * re-wrapped under the new token. The old token dies at once.
   * @param {Api} api
   * @param {string} peer
   */
  async rotateToken(api, peer) {
    /** @type {{ instances: InstanceView[] }} */
    const { instances } = await api.call("GET", "/v1/instances", { auth: this.auth });
    const view = instances.find((i) => i.id === peer);
    if (!view) throw new Error(`${peer} is not one of your instances`);
    if (!view.owner_copy) throw new Error(`instance ${peer} has no escrow copy: re-enrol it`);
    const id = c.idFromHex(peer);
    const escrow = await c.escrowKeys(this.secret);
    const bundle = c.unwrap(escrow, id, c.fromB64(view.owner_copy));
    c.wipeKeys(escrow);
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
    c.wipeKeys(keys);
    c.wipe(bundle);
    c.wipe(decoded.secret);
    return token;
  }

  /**
   * A key pair and token for instance `id`, and the enrolment body (protocol §3).
   * @param {Uint8Array} id
   */
  async #enrol(id) {
    const pair = _sodium.crypto_box_keypair();
    const token = `srt1.${c.toHex(id)}.${c.b64url(_sodium.randombytes_buf(32))}`;
    const { keys } = await c.tokenKeys(token);
    const bundle = c.encodeBundle({ secret: pair.privateKey, owner: this.id, ownerPublic: this.publicKey });
    const escrow = await c.escrowKeys(this.secret);
    const body = {
      public_key: c.b64(pair.publicKey),
      wrapped_key: c.b64(c.wrap(keys, id, bundle)),
      auth_secret: c.authSecret(keys),
      owner_copy: c.b64(c.wrap(escrow, id, bundle)),
    };
    c.wipeKeys(keys);
    c.wipeKeys(escrow);
    c.wipe(bundle);
    c.wipe(pair.privateKey);
    return { token, publicKey: pair.publicKey, body };
  }

  /**
   * @returns {bigint}
   */
  #nextVersion() {
    return (this.keyring?.version ?? 0n) + 1n;
  }

  /**
   * The keyring body the server takes at the next version.
   * @param {Map<string, Uint8Array>} pins
   * @param {Map<string, string>} names
   */
  async #sealedNext(pins, names) {
    const version = this.#nextVersion();
    return { version: Number(version), keyring: c.b64(await c.sealKeyring(this.id, this.secret, version, pins, names)) };
  }

  /**
   * Logs a user in: prelogin, derive, fetch the wrapped key, unwrap it here.
   * @param {Api} api
   * @param {string} name
   * @param {string} password
   */
  static async login(api, name, password) {
    await _sodium.ready;
    const spec = await api.prelogin(name);
    const keys = await c.deriveFromPassword(password, c.fromB64(spec.salt), spec);
    const auth = c.authSecret(keys);
    const me = await api.call("GET", "/v1/me", { auth: { login: name, secret: auth } });
    const id = c.idFromHex(me.id);
    const { secret } = c.decodeBundle(c.unwrap(keys, id, c.fromB64(me.wrapped_key)));
    c.wipeKeys(keys);
    if (c.toHex(c.publicKeyOf(secret)) !== c.toHex(c.fromB64(me.public_key))) {
      throw new Error("the server's public key for this account is not the one the wrapped key holds: refusing it");
    }
    if (!me.key_proof_recorded) {
      // An account from before key proofs: record it, so a captured login secret alone can
      // no longer change this account's password. 409: another client recorded it first.
      const body = { key_proof: await c.keyProof(secret) };
      await api.call("PUT", "/v1/me/key-proof", { auth: { login: name, secret: auth }, body }).catch((e) => {
        if (e?.status !== 409) throw e;
      });
    }
    const identity = new Identity(id, name, secret, auth);
    identity.keyring = await servedKeyring(id, secret, me);
    return identity;
  }
}
