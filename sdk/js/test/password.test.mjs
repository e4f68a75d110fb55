// The JavaScript floor for new passwords refuses what the Rust one refuses, for the same
// reasons (crates/client/src/password.rs has the same cases).
import assert from "node:assert/strict";
import { test } from "node:test";
import { weakPassword } from "../src/password.js";
import COMMON from "../src/common-passwords.js";

test("the floor refuses what a guesser tries first", () => {
  const check = (/** @type {string} */ p) => weakPassword(p, "alice");
  assert.match(check("a") ?? "", /has 1 characters; use at least 10/);
  assert.match(check("ünïcödé12") ?? "", /has 9 characters/);
  assert.match(check("qwertyuiop") ?? "", /commonest/);
  assert.match(check("Password123") ?? "", /commonest/);
  assert.match(check("ALICE-in-wonderland") ?? "", /contains the account name/);
  assert.match(check("xxxxxxxxxxxx") ?? "", /one character repeated/);
  assert.equal(check("correct horse battery"), null);
  assert.equal(check("ünïcödé123"), null);
  assert.ok(COMMON.length > 1000);
});
