// docs/test-vectors.json against the JavaScript SDK, as crates/client/tests/vectors.rs checks
// it against the Rust one: recompute what is deterministic, open what is sealed.
import { test, before } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import * as c from "../src/crypto.js";

const v = JSON.parse(readFileSync(new URL("../../../docs/test-vectors.json", import.meta.url), "utf8"));
/** @param {string} s */
const hex = (s) => Uint8Array.from(Buffer.from(s, "hex"));

before(c.ready);

/** @param {any} p a principal of the vectors */
function checkPrincipal(p) {
  const secret = hex(p.secret_key);
  assert.equal(c.toHex(c.publicKeyOf(secret)), p.public_key);
  assert.equal(c.witness(c.publicKeyOf(secret)), p.witness);
  assert.equal(c.verifier(p.auth_secret), p.verifier);
  return secret;
}

test("the user vector derives and unwraps", async () => {
  const u = v.user;
  const secret = checkPrincipal(u);
  const keys = await c.deriveFromPassword(u.password, hex(u.salt), u.kdf);
  assert.equal(c.authSecret(keys), u.auth_secret);
  assert.equal(await c.keyProof(secret), u.key_proof);
  const bundle = c.encodeBundle({ secret });
  assert.equal(c.toHex(bundle), u.bundle);
  const id = c.idFromHex(u.id);
  assert.deepEqual(c.unwrap(keys, id, c.fromB64(u.wrapped_key_b64)), bundle);
  assert.throws(() => c.unwrap(keys, new Uint8Array(16), c.fromB64(u.wrapped_key_b64)), /does not open/);
  // And the other way: what this SDK wraps, the same keys open.
  assert.deepEqual(c.unwrap(keys, id, c.wrap(keys, id, bundle)), bundle);
});

test("the instance vector derives from its token and its owner copy opens", async () => {
  const i = v.instance;
  const secret = checkPrincipal(i);
  const { instance, keys } = await c.tokenKeys(i.token);
  assert.equal(c.toHex(instance), i.id);
  assert.equal(c.authSecret(keys), i.auth_secret);
  const ownerSecret = hex(v.user.secret_key);
  const bundle = c.encodeBundle({ secret, owner: c.idFromHex(v.user.id), ownerPublic: c.publicKeyOf(ownerSecret) });
  assert.equal(c.toHex(bundle), i.bundle);
  assert.deepEqual(c.unwrap(keys, instance, c.fromB64(i.wrapped_key_b64)), bundle);
  assert.deepEqual(c.unwrap(await c.escrowKeys(ownerSecret), instance, c.fromB64(i.owner_copy_b64)), bundle);
  const decoded = c.decodeBundle(bundle);
  assert.equal(c.toHex(decoded.owner ?? assert.fail("an instance bundle names its owner")), v.user.id);
});

test("the keyring vectors open to their version, pins and names", async () => {
  for (const k of [v.keyring, v.keyring_pins_only]) {
    const ring = await c.openKeyring(c.idFromHex(k.owner), hex(v.user.secret_key), c.fromB64(k.sealed_b64));
    assert.equal(ring.version, BigInt(k.version));
    assert.equal(ring.pins.size, k.entries.length);
    for (const e of k.entries) {
      assert.equal(c.toHex(ring.pins.get(e.id) ?? assert.fail(`${e.id} is pinned`)), e.public_key);
      assert.equal(ring.names.get(e.id) ?? "", e.name);
    }
  }
});

test("what JS seals as a keyring, the vector's way, opens to the same pins and names", async () => {
  const k = v.keyring;
  const owner = c.idFromHex(k.owner);
  const pins = new Map(k.entries.map((/** @type {any} */ e) => [e.id, hex(e.public_key)]));
  const names = new Map(k.entries.filter((/** @type {any} */ e) => e.name).map((/** @type {any} */ e) => [e.id, e.name]));
  const sealed = await c.sealKeyring(owner, hex(v.user.secret_key), BigInt(k.version), pins, names);
  const ring = await c.openKeyring(owner, hex(v.user.secret_key), sealed);
  assert.deepEqual([...ring.names], [...names]);
  assert.throws(() => c.checkName("x".repeat(101)), /longer than 100 bytes/);
  assert.throws(() => c.checkName("tab\there"), /control character/);
  assert.equal(c.checkName("  Press line 7 "), "Press line 7");
});

test("both envelope kinds and a reply parse and open; what JS seals, JS opens", () => {
  const principals = [v.user, v.instance];
  /** @param {string} id */
  const secretOf = (id) => hex(principals.find((p) => p.id === id)?.secret_key);
  // The vectors are older than the replay window: opened with a guard as wide as time, and
  // with the default window and the clock set to each one's sent_at_ms (protocol §4.3).
  const guard = new c.ReplayGuard(Number.MAX_SAFE_INTEGER / 2);
  for (const e of v.envelopes) {
    const bytes = hex(e.envelope);
    const header = c.parseHeader(bytes);
    assert.equal(header.version, e.version);
    assert.equal(header.kind, e.kind);
    const opened = c.openEnvelope(c.idFromHex(e.recipient), secretOf(e.recipient), bytes, c.publicKeyOf(secretOf(e.sender)), guard);
    assert.equal(c.toHex(opened.payload), e.plaintext);
    assert.equal(opened.authenticated, e.kind === 2);
    if (e.kind === 2) {
      assert.equal(opened.messageId && c.toHex(opened.messageId), e.message_id);
      assert.equal(opened.inReplyTo && c.toHex(opened.inReplyTo), e.in_reply_to);
      assert.equal(opened.sentAtMs, e.sent_at_ms);
      assert.equal(opened.version, e.version);
      const atThatTime = new c.ReplayGuard();
      assert.doesNotThrow(() => atThatTime.check(opened.sender, /** @type {Uint8Array} */ (opened.messageId), e.sent_at_ms, e.sent_at_ms));
    }
  }
  const [user, instance] = [c.idFromHex(v.user.id), c.idFromHex(v.instance.id)];
  const [userSecret, instanceSecret] = [secretOf(v.user.id), secretOf(v.instance.id)];
  const { envelope, messageId } = c.sealAuthenticated(user, userSecret, instance, c.publicKeyOf(instanceSecret), new TextEncoder().encode("from js"));
  const fresh = new c.ReplayGuard();
  const opened = c.openEnvelope(instance, instanceSecret, envelope, c.publicKeyOf(userSecret), fresh);
  assert.deepEqual([Buffer.from(opened.payload).toString(), opened.messageId && c.toHex(opened.messageId)], ["from js", c.toHex(messageId)]);
  assert.throws(() => c.openEnvelope(instance, instanceSecret, envelope, c.publicKeyOf(userSecret), fresh), /replay/);
  const anon = c.sealAnonymous(user, instance, c.publicKeyOf(instanceSecret), new TextEncoder().encode("anon"));
  assert.equal(Buffer.from(c.openEnvelope(instance, instanceSecret, anon, null, fresh).payload).toString(), "anon");
});

test("an envelope sealed to a replaced key is a StaleKeyError naming both witnesses", () => {
  const e = v.envelopes[0];
  const other = new Uint8Array(32).fill(7);
  assert.throws(
    () => c.openEnvelope(c.idFromHex(e.recipient), other, hex(e.envelope), null, new c.ReplayGuard()),
    (err) => err instanceof c.StaleKeyError && err.sealedTo !== err.current,
  );
});

test("the KDF bounds are the protocol's and refuse each case as listed", () => {
  const b = v.kdf_bounds;
  assert.deepEqual({ ...c.CLIENT_FLOOR }, b.floor);
  assert.deepEqual({ ...c.CLIENT_CEILING }, b.ceiling);
  for (const { kdf, refused } of b.cases) {
    if (refused === null) {
      assert.deepEqual(c.withinClientBounds(kdf), kdf);
    } else {
      assert.throws(() => c.withinClientBounds(kdf), (e) => e instanceof c.KdfRefusedError && e.kind === refused, JSON.stringify(kdf));
    }
  }
});
