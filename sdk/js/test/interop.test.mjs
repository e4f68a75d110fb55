// Cross-language logins through a real broker, driven by tests/js_sdk.rs (which starts the
// broker and passes SEALRELAY_JS_INTEROP as JSON): a user registered here logs in with the
// Rust SDK, and a user the Rust SDK registered logs in here — the same key on both sides.
import { test } from "node:test";
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import * as c from "../src/crypto.js";
import { Api, ApiError, Identity, KeyringRollbackError, NotPinnedError, PinMismatchError } from "../src/identity.js";

const cases = JSON.parse(process.env.SEALRELAY_JS_INTEROP ?? "null");

test("register here, log in there; registered there, log in here", { skip: cases === null && "run through tests/js_sdk.rs" }, async () => {
  await c.ready();
  const api = new Api(cases.http);
  const mine = await Identity.register(api, cases.js_user, cases.password);
  const again = await Identity.login(api, cases.js_user, cases.password);
  assert.equal(again.witness, mine.witness);
  await assert.rejects(Identity.login(api, cases.js_user, cases.password + "!"), (e) => e instanceof ApiError && e.status === 401);
  const theirs = await Identity.login(api, cases.rust_user, cases.password);
  assert.equal(theirs.witness, cases.rust_witness);
  assert.equal(c.toHex(theirs.id), cases.rust_id);
  // The keyring's refusals are distinct errors a console can show for what they are.
  const { id: added } = await mine.addInstance(api);
  const [listed] = await mine.instances(api);
  assert.deepEqual([listed.id, listed.pin], [c.toHex(added), "pinned"]);
  assert.throws(() => mine.checkServedKey(listed.id, new Uint8Array(32).fill(9)), PinMismatchError);
  assert.throws(() => mine.checkServedKey(cases.rust_id, new Uint8Array(32)), NotPinnedError);
  assert.throws(() => mine.requireKeyringVersion(5), KeyringRollbackError);
  // A change of password re-wraps the same key: the new password logs in to it, the old no longer does.
  await mine.changePassword(api, cases.password + " changed");
  const changed = await Identity.login(api, cases.js_user, cases.password + " changed");
  assert.equal(changed.witness, mine.witness);
  await assert.rejects(Identity.login(api, cases.js_user, cases.password), (e) => e instanceof ApiError && e.status === 401);
  await mine.changePassword(api, cases.password);
  writeFileSync(cases.out, JSON.stringify({ id: c.toHex(mine.id), witness: mine.witness }));
  for (const who of [mine, again, theirs, changed]) who.wipe();
});
