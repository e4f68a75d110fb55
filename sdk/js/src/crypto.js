// The sealrelay client cryptography for JavaScript (browsers and Node 20), written from
// docs/protocol.md and checked against docs/test-vectors.json: Argon2id and HKDF key
// derivation, auth secrets and verifiers, wrapped bundles, escrow copies, keyrings, witnesses,
// and sealing and opening both envelope kinds with the replay guard.
//
// Uses libsodium's JavaScript build (sumo: Argon2id, crypto_box, sealed boxes,
// XChaCha20-Poly1305, SHA-256) and the Web Crypto API for HKDF (libsodium.js does not wrap
// its HKDF). No hand-written cryptography. Secret keys are Uint8Array(32); callers wipe them
// with `wipe()` when done, as the Rust SDK's Zeroizing does.

import _sodium from "libsodium-wrappers-sumo";

/** @type {typeof _sodium} */
let sodium;

/** Loads libsodium; every other function needs it done once. */
export async function ready() {
  await _sodium.ready;
  sodium = _sodium;
}

const text = new TextEncoder();
/** @param {ArrayLike<number>[]} parts */
const concat = (...parts) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
};
/** @param {Uint8Array} a @param {Uint8Array} b */
const equal = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);

/** Overwrites secret bytes in place. @param {Uint8Array} bytes */
export function wipe(bytes) {
  sodium.memzero(bytes);
}

/**
 * A principal id (16 bytes) from its 32-hex-character text form, lowercase only.
 * @param {string} hex
 */
export function idFromHex(hex) {
  if (!/^[0-9a-f]{32}$/.test(hex)) throw new Error("a principal id is 32 lowercase hex characters");
  return sodium.from_hex(hex);
}

/** @param {Uint8Array} bytes */
export const toHex = (bytes) => sodium.to_hex(bytes);
/** @param {number} n */
export const randomBytes = (n) => sodium.randombytes_buf(n);
/** @param {Uint8Array} bytes */
export const b64url = (bytes) => sodium.to_base64(bytes, sodium.base64_variants.URLSAFE_NO_PADDING);
/** @param {string} s */
export const fromB64url = (s) => sodium.from_base64(s, sodium.base64_variants.URLSAFE_NO_PADDING);
/** @param {Uint8Array} bytes */
export const b64 = (bytes) => sodium.to_base64(bytes, sodium.base64_variants.ORIGINAL);
/** @param {string} s */
export const fromB64 = (s) => sodium.from_base64(s, sodium.base64_variants.ORIGINAL);

/** @param {Uint8Array} ikm @param {Uint8Array} salt @param {string} info */
async function hkdf(ikm, salt, info) {
  // Web Crypto takes buffers it owns: a copy, wiped once imported.
  const material = new Uint8Array(ikm);
  const key = await globalThis.crypto.subtle.importKey("raw", material, "HKDF", false, ["deriveBits"]);
  material.fill(0);
  const bits = await globalThis.crypto.subtle.deriveBits(
    { name: "HKDF", hash: "SHA-256", salt: new Uint8Array(salt), info: text.encode(info) },
    key,
    256,
  );
  return new Uint8Array(bits);
}

/**
 * The wrap key and auth key split from one secret (protocol §2).
 * @typedef {{ wrapKey: Uint8Array, authKey: Uint8Array }} DerivedKeys
 */

/**
 * @param {Uint8Array} salt
 * @param {Uint8Array} ikm
 * @returns {Promise<DerivedKeys>}
 */
async function split(salt, ikm) {
  return {
    wrapKey: await hkdf(ikm, salt, "sealrelay/v1/wrap-key"),
    authKey: await hkdf(ikm, salt, "sealrelay/v1/auth-key"),
  };
}

/**
 * Argon2id parameters, as the API spells them.
 * @typedef {{ memory_kib: number, iterations: number, parallelism: number }} KdfParams
 */

/**
 * The weakest Argon2id parameters a client derives with, whatever a server asks (OWASP's
 * minimum), and the most it spends on one derivation (1 GiB, 10 passes, 16 lanes): protocol
 * §2.1, the same bounds as the Rust SDK's `sealrelay_wire::CLIENT_FLOOR` / `CLIENT_CEILING`.
 * @type {Readonly<KdfParams>}
 */
export const CLIENT_FLOOR = Object.freeze({ memory_kib: 19456, iterations: 2, parallelism: 1 });
/** @type {Readonly<KdfParams>} */
export const CLIENT_CEILING = Object.freeze({ memory_kib: 1048576, iterations: 10, parallelism: 16 });

/**
 * A server asked for KDF parameters outside the client bounds (protocol §2.1): nothing was
 * derived, so nothing derived from the password was sent. A server that asks this is
 * misconfigured or hostile.
 */
export class KdfRefusedError extends Error {
  /**
   * @param {"below_floor" | "above_ceiling"} kind
   * @param {KdfParams} asked
   */
  constructor(kind, asked) {
    const { memory_kib: m, iterations: t, parallelism: p } = asked;
    const [bound, word, limit] = kind === "below_floor" ? [CLIENT_FLOOR, "weaker", "at least"] : [CLIENT_CEILING, "costlier", "at most"];
    super(`the server asked for ${word} key derivation (Argon2id m = ${m} KiB, t = ${t}, p = ${p}) than this client accepts (${limit} m = ${bound.memory_kib} KiB, t = ${bound.iterations}, p = ${bound.parallelism}): refused, and the password was not used. A server that asks this is misconfigured or hostile; tell its operator`);
    this.name = "KdfRefusedError";
    this.kind = kind;
    this.asked = { memory_kib: m, iterations: t, parallelism: p };
  }
}

/**
 * `params` if a client may derive with them: from CLIENT_FLOOR to CLIENT_CEILING, member by
 * member; otherwise a KdfRefusedError.
 * @param {KdfParams} params
 * @returns {KdfParams}
 */
export function withinClientBounds(params) {
  const members = /** @type {const} */ (["memory_kib", "iterations", "parallelism"]);
  const valid = members.every((k) => Number.isSafeInteger(params[k]));
  if (!valid || members.some((k) => params[k] < CLIENT_FLOOR[k])) throw new KdfRefusedError("below_floor", params);
  if (members.some((k) => params[k] > CLIENT_CEILING[k])) throw new KdfRefusedError("above_ceiling", params);
  return params;
}

/**
 * Argon2id(password, salt) then HKDF (protocol §2.1). Parameters outside the client bounds
 * are refused before any work (KdfRefusedError). libsodium computes Argon2id with one lane
 * only, so parallelism must be 1 (the server's default); other values are refused rather
 * than silently derived differently.
 * @param {string} password
 * @param {Uint8Array} salt
 * @param {KdfParams} params
 * @returns {Promise<DerivedKeys>}
 */
export async function deriveFromPassword(password, salt, params) {
  const { memory_kib, iterations, parallelism } = withinClientBounds(params);
  if (parallelism !== 1) throw new Error("this SDK derives Argon2id with parallelism 1 only");
  const master = sodium.crypto_pwhash(
    32,
    text.encode(password),
    salt,
    iterations,
    memory_kib * 1024,
    sodium.crypto_pwhash_ALG_ARGON2ID13,
  );
  try {
    return await split(new Uint8Array(0), master);
  } finally {
    wipe(master);
  }
}

/**
 * An instance token `srt1.<id hex>.<b64url secret>` → its id and keys (protocol §2.2).
 * @param {string} token
 */
export async function tokenKeys(token) {
  const parts = token.trim().split(".");
  if (parts.length !== 3 || parts[0] !== "srt1") throw new Error("an instance token looks like srt1.<32 hex id>.<43 base64url chars>");
  const secret = fromB64url(parts[2]);
  if (secret.length !== 32) throw new Error("an instance token's secret is 32 bytes");
  try {
    return { instance: idFromHex(parts[1]), keys: await split(text.encode("sealrelay/v1/token"), secret) };
  } finally {
    wipe(secret);
  }
}

/** Zeroes both halves of derived keys once they are used. @param {DerivedKeys} keys */
export function wipeKeys(keys) {
  wipe(keys.wrapKey);
  wipe(keys.authKey);
}

/** Keys only the holder of `ownerSecret` can derive, for escrow copies (protocol §3). */
/** @param {Uint8Array} ownerSecret */
export const escrowKeys = (ownerSecret) => split(text.encode("sealrelay/v1/escrow"), ownerSecret);
/** Keys for the owner's keyring (protocol §3.1). */
/** @param {Uint8Array} ownerSecret */
export const keyringKeys = (ownerSecret) => split(text.encode("sealrelay/v1/keyring"), ownerSecret);

/**
 * The key proof (protocol §2.4): b64url of the auth half of keys split from the private key
 * with salt "sealrelay/v1/key-proof". A change of password must carry it once recorded.
 * @param {Uint8Array} ownerSecret
 */
export async function keyProof(ownerSecret) {
  const keys = await split(text.encode("sealrelay/v1/key-proof"), ownerSecret);
  const proof = authSecret(keys);
  wipeKeys(keys);
  return proof;
}

/** The login secret: b64url(auth key), the MQTT and HTTP Basic password (protocol §2.3). */
/** @param {DerivedKeys} keys */
export const authSecret = (keys) => b64url(keys.authKey);

/** What the server stores of an auth secret, as hex (protocol §2.3). @param {string} secret */
export function verifier(secret) {
  return toHex(sodium.crypto_hash_sha256(concat(text.encode("sealrelay/v1/verifier"), text.encode(secret))));
}

/** @param {Uint8Array} owner */
const bundleAad = (owner) => concat(text.encode("sealrelay/v1/bundle"), owner);

/**
 * nonce (24) || XChaCha20-Poly1305(wrapKey, bundle, aad = "sealrelay/v1/bundle" || owner id).
 * @param {DerivedKeys} keys
 * @param {Uint8Array} owner
 * @param {Uint8Array} bundle
 */
export function wrap(keys, owner, bundle) {
  const nonce = sodium.randombytes_buf(24);
  const ct = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(bundle, bundleAad(owner), null, nonce, keys.wrapKey);
  return concat(nonce, ct);
}

/**
 * Opens a wrapped blob; throws if the key is wrong or the blob was moved or altered.
 * @param {DerivedKeys} keys
 * @param {Uint8Array} owner
 * @param {Uint8Array} wrapped
 */
export function unwrap(keys, owner, wrapped) {
  if (wrapped.length < 24 + 16) throw new Error("the wrapped key is too short");
  try {
    return sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(null, wrapped.subarray(24), bundleAad(owner), wrapped.subarray(0, 24), keys.wrapKey);
  } catch {
    throw new Error("the wrapped key does not open with this password or token (wrong secret, or the bundle was altered)");
  }
}

/**
 * A key bundle: the secret key, and for an instance its owner's id and pinned public key.
 * @typedef {{ secret: Uint8Array, owner?: Uint8Array, ownerPublic?: Uint8Array }} Bundle
 */

/**
 * A user bundle `0x01 || secret` or an instance bundle `0x02 || secret || owner id || owner key`.
 * @param {Bundle} b
 */
export function encodeBundle(b) {
  if (!b.owner) return concat([1], b.secret);
  if (!b.ownerPublic) throw new Error("an instance bundle pins its owner's public key: ownerPublic is missing");
  return concat([2], b.secret, b.owner, b.ownerPublic);
}

/** @param {Uint8Array} bytes @returns {Bundle} */
export function decodeBundle(bytes) {
  if (bytes[0] === 1 && bytes.length === 33) return { secret: bytes.slice(1, 33) };
  if (bytes[0] === 2 && bytes.length === 81) {
    return { secret: bytes.slice(1, 33), owner: bytes.slice(33, 49), ownerPublic: bytes.slice(49, 81) };
  }
  throw new Error("the key bundle is malformed");
}

/** The public key of an X25519 secret key. */
/** @param {Uint8Array} secret */
export const publicKeyOf = (secret) => sodium.crypto_scalarmult_base(secret);

/**
 * Fingerprint of a public key: which key an envelope was sealed to (hex, protocol §4).
 * @param {Uint8Array} publicKey
 */
export function witness(publicKey) {
  return toHex(sodium.crypto_hash_sha256(concat(text.encode("sealrelay/v1/witness"), publicKey)).subarray(0, 16));
}

/**
 * A keyring: its version, the pinned public keys (id hex → key) and the names the user gave
 * them (id hex → name; unnamed peers are absent).
 * @typedef {{ version: bigint, pins: Map<string, Uint8Array>, names: Map<string, string> }} Keyring
 */

/** The longest name a peer may have, in bytes of UTF-8. */
export const MAX_NAME_BYTES = 100;

/**
 * `name` trimmed, if it can name a peer (at most 100 bytes of UTF-8, no control characters;
 * empty: no name); else throws saying why.
 * @param {string} name
 */
export function checkName(name) {
  const trimmed = name.trim();
  if (text.encode(trimmed).length > MAX_NAME_BYTES) throw new Error("that name cannot be used: longer than 100 bytes of UTF-8");
  if (/\p{Cc}/u.test(trimmed)) throw new Error("that name cannot be used: it contains a control character");
  return trimmed;
}

/**
 * Opens a sealed keyring (protocol §3.1): its version, pins and names. Format 2 carries
 * names; format 1 (pins only, from earlier clients) opens with none.
 * @param {Uint8Array} owner
 * @param {Uint8Array} ownerSecret
 * @param {Uint8Array} sealed
 * @returns {Promise<Keyring>}
 */
export async function openKeyring(owner, ownerSecret, sealed) {
  let plain;
  const keys = await keyringKeys(ownerSecret);
  try {
    plain = unwrap(keys, owner, sealed);
  } catch {
    throw new Error("the keyring does not open with this principal's key: the server altered it or sent another's");
  } finally {
    wipeKeys(keys);
  }
  const view = new DataView(plain.buffer, plain.byteOffset, plain.byteLength);
  if ((plain[0] !== 1 && plain[0] !== 2) || plain.length < 13) throw new Error("the keyring is malformed: unknown format or short header");
  const named = plain[0] === 2;
  const version = view.getBigUint64(1);
  const count = view.getUint32(9);
  const short = () => new Error("the keyring is malformed: entry count does not match its length");
  const pins = new Map();
  const names = new Map();
  let at = 13;
  for (let i = 0; i < count; i++) {
    if (at + 48 > plain.length) throw short();
    const id = toHex(plain.subarray(at, at + 16));
    pins.set(id, plain.slice(at + 16, at + 48));
    at += 48;
    if (!named) continue;
    const length = plain[at];
    if (length === undefined || at + 1 + length > plain.length) throw short();
    let name;
    try {
      name = new TextDecoder("utf-8", { fatal: true }).decode(plain.subarray(at + 1, at + 1 + length));
    } catch {
      throw new Error("the keyring is malformed: a name is not valid");
    }
    if (checkName(name) !== name) throw new Error("the keyring is malformed: a name is not valid");
    if (name) names.set(id, name);
    at += 1 + length;
  }
  if (at !== plain.length) throw short();
  return { version, pins, names };
}

/**
 * Seals a keyring: `0x02 || version || count || entries sorted by id`, each entry `id ||
 * key || name length (u8) || name` (protocol §3.1).
 * @param {Uint8Array} owner
 * @param {Uint8Array} ownerSecret
 * @param {bigint | number} version
 * @param {Map<string, Uint8Array>} pins
 * @param {Map<string, string>} [names]
 */
export async function sealKeyring(owner, ownerSecret, version, pins, names = new Map()) {
  const ids = [...pins.keys()].sort();
  const head = new Uint8Array(13);
  head[0] = 2;
  const view = new DataView(head.buffer);
  view.setBigUint64(1, BigInt(version));
  view.setUint32(9, ids.length);
  const plain = concat(
    head,
    ...ids.flatMap((id) => {
      const name = text.encode(checkName(names.get(id) ?? ""));
      return [idFromHex(id), /** @type {Uint8Array} */ (pins.get(id)), Uint8Array.of(name.length), name];
    }),
  );
  const keys = await keyringKeys(ownerSecret);
  try {
    return wrap(keys, owner, plain);
  } finally {
    wipeKeys(keys);
  }
}

export const HEADER_LEN = 54;
export const VERSION = 2;

/** The envelope's clear header (protocol §4). @param {Uint8Array} envelope */
export function parseHeader(envelope) {
  if (envelope.length < HEADER_LEN) throw new Error(`envelope is ${envelope.length} bytes, shorter than the header`);
  const version = envelope[0];
  if (version !== 1 && version !== 2) throw new Error(`envelope version ${version} is not supported`);
  const kind = envelope[1];
  if (kind !== 1 && kind !== 2) throw new Error(`envelope kind ${kind} is unknown`);
  const bodyLen = new DataView(envelope.buffer, envelope.byteOffset + 50, 4).getUint32(0);
  if (bodyLen !== envelope.length - HEADER_LEN) throw new Error("envelope length does not match its header");
  return {
    version,
    kind,
    sender: envelope.slice(2, 18),
    recipient: envelope.slice(18, 34),
    witness: toHex(envelope.subarray(34, 50)),
    bodyLen,
  };
}

/**
 * @param {1 | 2} kind
 * @param {Uint8Array} sender
 * @param {Uint8Array} recipient
 * @param {Uint8Array} recipientPublic
 * @param {Uint8Array} body
 * @param {number} [version]
 */
function encodeHeader(kind, sender, recipient, recipientPublic, body, version = VERSION) {
  const header = new Uint8Array(HEADER_LEN);
  header[0] = version;
  header[1] = kind;
  header.set(sender, 2);
  header.set(recipient, 18);
  header.set(sodium.from_hex(witness(recipientPublic)), 34);
  new DataView(header.buffer).setUint32(50, body.length);
  return concat(header, body);
}

/** The errors a console must tell apart (the Rust SDK's names). */
export class StaleKeyError extends Error {
  /** @param {string} sealedTo @param {string} current */
  constructor(sealedTo, current) {
    super(`envelope was sealed to a previous key of this principal (witness ${sealedTo}; current key ${current}); it cannot be opened by design — ask the sender to resend`);
    this.sealedTo = sealedTo;
    this.current = current;
  }
}

/**
 * Kind 1: libsodium `crypto_box_seal` to the recipient; its sender is not proven.
 * @param {Uint8Array} sender
 * @param {Uint8Array} recipient
 * @param {Uint8Array} recipientPublic
 * @param {Uint8Array} plaintext
 */
export function sealAnonymous(sender, recipient, recipientPublic, plaintext) {
  return encodeHeader(1, sender, recipient, recipientPublic, sodium.crypto_box_seal(plaintext, recipientPublic));
}

/**
 * Kind 2: `crypto_box_easy` from the sender's static key, ids repeated inside, a fresh
 * message id, the time, and `inReplyTo` (16 bytes) when answering a message. In envelope
 * `version` (protocol §4.3: a reply in its request's; 1 has no reply field, so `inReplyTo`
 * is left out of it).
 * @param {Uint8Array} sender
 * @param {Uint8Array} senderSecret
 * @param {Uint8Array} recipient
 * @param {Uint8Array} recipientPublic
 * @param {Uint8Array} plaintext
 * @param {Uint8Array | null} [inReplyTo]
 * @param {number} [version]
 * @returns {{ envelope: Uint8Array, messageId: Uint8Array }}
 */
export function sealAuthenticated(sender, senderSecret, recipient, recipientPublic, plaintext, inReplyTo = null, version = VERSION) {
  if (version !== 1 && version !== 2) throw new Error(`envelope version ${version} cannot be sealed: the versions are 1 and 2`);
  const messageId = sodium.randombytes_buf(16);
  const sentAt = new Uint8Array(8);
  new DataView(sentAt.buffer).setBigUint64(0, BigInt(Date.now()));
  const reply = version === 1 ? new Uint8Array(0) : (inReplyTo ?? new Uint8Array(16));
  const inner = concat(sender, recipient, messageId, sentAt, reply, plaintext);
  const nonce = sodium.randombytes_buf(24);
  const body = concat(nonce, sodium.crypto_box_easy(inner, nonce, recipientPublic, senderSecret));
  wipe(inner);
  return { envelope: encodeHeader(2, sender, recipient, recipientPublic, body, version), messageId };
}

/**
 * An opened envelope: its sender (proven when `authenticated`), payload, its envelope version
 * (a reply is sealed in it), and for kind 2 its message id, the id of the message it answers
 * and when it was sealed (Unix milliseconds).
 * @typedef {{ sender: Uint8Array, authenticated: boolean, payload: Uint8Array, version: number, messageId: Uint8Array | null, inReplyTo: Uint8Array | null, sentAtMs: number | null }} Opened
 */

/** Refuses an authenticated envelope seen before, or sent outside the window (ms). */
export class ReplayGuard {
  constructor(windowMs = 300_000) {
    this.windowMs = windowMs;
    this.seen = new Map();
  }

  /** @param {Uint8Array} sender @param {Uint8Array} messageId @param {number} sentMs */
  check(sender, messageId, sentMs, nowMs = Date.now()) {
    if (sentMs + this.windowMs < nowMs || sentMs > nowMs + this.windowMs) {
      throw new Error(`envelope is outside the accepted time window (sent ${sentMs} ms, now ${nowMs} ms)`);
    }
    const key = toHex(sender) + toHex(messageId);
    if (this.seen.has(key)) throw new Error(`envelope ${toHex(messageId)} was already received: replay refused`);
    this.seen.set(key, sentMs);
  }
}

/**
 * Opens an envelope addressed to `me` (protocol §4.2 steps 1–5). `senderPublic` is the key
 * this client trusts for the header's sender (kind 2 only).
 * @param {Uint8Array} me
 * @param {Uint8Array} mySecret
 * @param {Uint8Array} envelope
 * @param {Uint8Array | null} senderPublic
 * @param {ReplayGuard} guard
 * @returns {Opened}
 */
export function openEnvelope(me, mySecret, envelope, senderPublic, guard) {
  const header = parseHeader(envelope);
  if (!equal(header.recipient, me)) throw new Error(`envelope is addressed to ${toHex(header.recipient)}, not to this principal`);
  const current = witness(publicKeyOf(mySecret));
  if (header.witness !== current) throw new StaleKeyError(header.witness, current);
  const body = envelope.subarray(HEADER_LEN);
  if (header.kind === 1) {
    let payload;
    try {
      payload = sodium.crypto_box_seal_open(body, publicKeyOf(mySecret), mySecret);
    } catch {
      throw new Error("envelope body does not open with this principal's key: forged or corrupted");
    }
    return { sender: header.sender, authenticated: false, payload, version: header.version, messageId: null, inReplyTo: null, sentAtMs: null };
  }
  if (!senderPublic) throw new Error(`no public key is known for sender ${toHex(header.sender)}`);
  let inner;
  try {
    inner = sodium.crypto_box_open_easy(body.subarray(24), body.subarray(0, 24), senderPublic, mySecret);
  } catch {
    throw new Error(`envelope does not authenticate as coming from ${toHex(header.sender)}: forged or corrupted`);
  }
  const prefix = header.version === 1 ? 56 : 72;
  if (inner.length < prefix || !equal(inner.subarray(0, 16), header.sender) || !equal(inner.subarray(16, 32), me)) {
    throw new Error(`envelope does not authenticate as coming from ${toHex(header.sender)}: forged or corrupted`);
  }
  const messageId = inner.slice(32, 48);
  const sentMs = Number(new DataView(inner.buffer, inner.byteOffset + 48, 8).getBigUint64(0));
  guard.check(header.sender, messageId, sentMs);
  const reply = header.version === 1 ? null : inner.slice(56, 72);
  const inReplyTo = reply && reply.some((b) => b !== 0) ? reply : null;
  return { sender: header.sender, authenticated: true, payload: inner.slice(prefix), version: header.version, messageId, inReplyTo, sentAtMs: sentMs };
}
