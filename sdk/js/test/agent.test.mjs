// An instance written with this SDK, in Node, answering the Rust CLI's `sealrelay send`:
// driven by tests/js_sdk.rs, which adds the instance with the Rust SDK, passes its token, and
// runs the CLI once this agent says it is serving (a file appears).
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, writeFileSync } from "node:fs";
import { Agent, Api } from "../src/agent.js";

const cases = JSON.parse(process.env.SRTEST_JS_AGENT ?? "null");
/** @param {number} ms */
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

test("a JS instance answers the Rust CLI", { skip: cases === null && "run through tests/js_sdk.rs", timeout: 60_000 }, async () => {
  const agent = await Agent.login(new Api(cases.http), cases.token);
  let asked = 0;
  await agent.serve(cases.mqtt, (payload) => {
    asked += 1;
    return new TextEncoder().encode("js says: " + new TextDecoder().decode(payload));
  });
  writeFileSync(cases.serving_file, "");
  for (let i = 0; i < 300 && !existsSync(cases.done_file); i++) await sleep(100);
  await agent.close();
  assert.ok(existsSync(cases.done_file), "the Rust side never finished");
  assert.equal(asked, 1);
});
