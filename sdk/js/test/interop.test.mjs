// Cross-language logins through a real broker, driven by tests/js_sdk.rs (which starts the
// broker and passes SRTEST_JS_INTEROP as JSON): a user registered here logs in with the
// Rust SDK, and a user the Rust SDK registered logs in here — the same key on both sides;
// both registered by invite.
import { test } from "node:test";
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import * as c from "../src/crypto.js";
import { Agent } from "../src/agent.js";
import { Api, ApiError, Identity, KeyringRollbackError, NotPinnedError, PinMismatchError } from "../src/identity.js";

const cases = JSON.parse(process.env.SRTEST_JS_INTEROP ?? "null");

test("register here, log in there; registered there, log in here", { skip: cases === null && "run through tests/js_sdk.rs" }, async () => {
  await c.ready();
  const api = new Api(cases.http);
  await assert.rejects(Identity.register(api, cases.js_user, cases.password), (e) => e instanceof ApiError && e.status === 403 && /invite only/.test(e.message));
  const mine = await Identity.register(api, cases.js_user, cases.password, { invite: cases.invite });
  const again = await Identity.login(api, cases.js_user, cases.password);
  assert.equal(again.witness, mine.witness);
  await assert.rejects(Identity.login(api, cases.js_user, cases.password + "!"), (e) => e instanceof ApiError && e.status === 401);
  const theirs = await Identity.login(api, cases.rust_user, cases.password);
  assert.equal(theirs.witness, cases.rust_witness);
  assert.equal(c.toHex(theirs.id), cases.rust_id);
  // The keyring's refusals are distinct errors a console can show for what they are.
  const { id: added } = await mine.addInstance(api);
  const [listed] = await mine.instances(api);
  assert.ok(mine.keyring);
  assert.deepEqual([listed.id, listed.pin], [c.toHex(added), "pinned"]);
  assert.throws(() => mine.checkServedKey(listed.id, new Uint8Array(32).fill(9)), PinMismatchError);
  assert.throws(() => mine.checkServedKey(cases.rust_id, new Uint8Array(32)), NotPinnedError);
  assert.throws(() => mine.requireKeyringVersion(5), KeyringRollbackError);
  // Removing an instance drops its pin (keyring version moves on); pinning checks the witness.
  await mine.removeInstance(api, listed.id);
  assert.equal(mine.keyring.pins.has(listed.id), false);
  assert.equal(mine.keyring.version, 2n);
  const relogin = await Identity.login(api, cases.js_user, cases.password);
  assert.equal(relogin.keyring?.version, 2n, "the server holds what this console wrote");
  await assert.rejects(mine.pinInstance(api, listed.id, "00".repeat(16)), (e) => e instanceof ApiError && e.status === 404);
  relogin.wipe();
  const { id: second } = await mine.addInstance(api);
  const hexId = c.toHex(second);
  const { witness } = (await mine.instances(api)).find((i) => i.id === hexId) ?? assert.fail("the new instance is listed");
  await assert.rejects(mine.pinInstance(api, hexId, "00".repeat(16)), PinMismatchError);
  await mine.pinInstance(api, hexId, witness);
  assert.equal(mine.keyring.version, 4n);
  // Rotation keeps the instance's key under a new token; re-enrolment gives it a new key.
  const rotated = await mine.rotateToken(api, hexId);
  const agent = await Agent.login(api, rotated);
  assert.equal(c.toHex(c.publicKeyOf(agent.secret)), c.toHex(mine.keyring.pins.get(hexId) ?? assert.fail("pinned")));
  const reenrolled = await mine.reenrolInstance(api, hexId);
  await assert.rejects(Agent.login(api, rotated), (e) => e instanceof ApiError && e.status === 401);
  const fresh = await Agent.login(api, reenrolled);
  assert.equal(c.toHex(c.publicKeyOf(fresh.secret)), c.toHex(mine.keyring.pins.get(hexId) ?? assert.fail("pinned")));
  assert.equal(mine.keyring.version, 5n);
  // Two consoles of one user, each with the keyring it read at login: the second's write
  // conflicts and is merged (re-read, its pin applied again), not refused; the first learns
  // of the second's pin by re-reading.
  const tabA = await Identity.login(api, cases.js_user, cases.password);
  const tabB = await Identity.login(api, cases.js_user, cases.password);
  const { id: fromA } = await tabA.addInstance(api);
  const { id: fromB } = await tabB.addInstance(api);
  assert.equal(tabB.keyring?.version, 7n);
  for (const peer of [hexId, c.toHex(fromA), c.toHex(fromB)]) assert.ok(tabB.keyring?.pins.has(peer), `tab B keeps ${peer}`);
  assert.equal(await tabA.refreshKeyring(api), true);
  assert.ok(tabA.keyring?.pins.has(c.toHex(fromB)), "tab A sees tab B's pin");
  assert.equal(await tabA.refreshKeyring(api), false, "nothing new the second time");
  assert.deepEqual((await tabA.instances(api)).map((i) => i.pin), ["pinned", "pinned", "pinned"]);
  tabA.wipe();
  tabB.wipe();

  // A change of password re-wraps the same key: the new password logs in to it, the old no longer does.
  await mine.changePassword(api, cases.password + " changed");
  const changed = await Identity.login(api, cases.js_user, cases.password + " changed");
  assert.equal(changed.witness, mine.witness);
  await assert.rejects(Identity.login(api, cases.js_user, cases.password), (e) => e instanceof ApiError && e.status === 401);
  await mine.changePassword(api, cases.password);
  // Someone else changes it: the password from before the first change of the grace period
  // undoes that (protocol §7.8), back to the same key, and only once.
  await mine.changePassword(api, "an intruder's choice");
  const { identity: back, changedAt } = await Identity.rollBack(api, cases.js_user, cases.password);
  assert.equal(back.witness, mine.witness);
  assert.ok(changedAt > 1_700_000_000, `changed_at ${changedAt}`);
  await assert.rejects(Identity.login(api, cases.js_user, "an intruder's choice"), (e) => e instanceof ApiError && e.status === 401);
  await assert.rejects(Identity.rollBack(api, cases.js_user, cases.password), /nothing to roll back for/);
  writeFileSync(cases.out, JSON.stringify({ id: c.toHex(mine.id), witness: mine.witness }));
  for (const who of [mine, again, theirs, changed, back]) who.wipe();
});
