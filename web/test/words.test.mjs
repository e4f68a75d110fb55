// The console's sentences (web/src/words.js) are the ones docs/console.md lists, and the API
// has no error code they do not answer. Runs without a browser or a broker.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { ApiError, NotConnectedError } from "@sealrelay/sdk";
import { API_WORDS, LINK_WORDS, OFFLINE, PUBACK_WORDS, SIGN_OUT_WORDS, UNREACHABLE, sentence } from "../src/words.js";

const docs = (/** @type {string} */ file) => readFileSync(new URL(`../../docs/${file}`, import.meta.url), "utf8");

/** What the user was doing, as docs/console.md's table says it. */
const DOING = {
  login: "logging in",
  register: "registering",
  reset: "completing a reset",
  rollback: "undoing a change of password",
  password: "changing the password",
  instances: "adding, re-enrolling or removing an instance; refreshing",
  activity: "reading what the server holds",
  send: "sending",
  "*": "anything else",
};

/** The tables docs/console.md must carry, word for word. */
export function tables() {
  const rows = Object.entries(API_WORDS).flatMap(([code, words]) =>
    Object.entries(words).map(([doing, text]) => `| \`${code}\` | ${DOING[/** @type {keyof DOING} */ (doing)]} | ${text} |`),
  );
  return [
    "| API error | while | the console says |",
    "|---|---|---|",
    ...rows,
    `| no answer (\`fetch\` fails) | anything | ${UNREACHABLE} |`,
    "",
    "| MQTT | the console says |",
    "|---|---|",
    `| PUBACK 0x10 (no session) | ${OFFLINE} |`,
    ...Object.entries(PUBACK_WORDS).map(([code, text]) => `| PUBACK 0x${Number(code).toString(16)} | ${text} |`),
    ...Object.entries(LINK_WORDS).map(([state, text]) => `| link \`${state}\` | ${text} |`),
    ...Object.entries(SIGN_OUT_WORDS).map(([reason, text]) => `| DISCONNECT \`${reason === "*" ? "any other reason" : reason}\` | ${text} |`),
  ].join("\n");
}

test("docs/console.md lists every sentence the console says, word for word", () => {
  const expected = tables();
  assert.ok(docs("console.md").includes(expected), `docs/console.md must contain:\n\n${expected}\n`);
});

test("every error code of the API has words", () => {
  const codes = [...docs("http-api.md").matchAll(/^\| \d{3} \| `([a-z_]+)` \|/gm)].map((m) => m[1]);
  assert.ok(codes.length >= 10, `found ${codes.length} codes in docs/http-api.md`);
  for (const code of codes) assert.ok(API_WORDS[code]?.["*"], `no words for ${code}`);
});

test("a sentence is chosen by the code and what the user was doing", () => {
  const taken = new ApiError(409, "conflict", "name taken");
  assert.equal(sentence(taken, "register"), "That name is taken: choose another.");
  assert.equal(sentence(taken, "instances"), API_WORDS.conflict["*"]);
  assert.equal(sentence(new ApiError(401, "unauthorized", "x"), "login"), "Wrong name or password.");
  assert.equal(sentence(new ApiError(418, "teapot", "x"), "login"), "The server refused (HTTP 418): try again, or reload the page.");
  assert.equal(sentence(new TypeError("Failed to fetch"), "login"), UNREACHABLE);
  assert.equal(sentence(new NotConnectedError("ab"), "send"), "Not delivered: the instance is offline.");
  assert.equal(sentence(Object.assign(new Error("Publish error: Not authorized"), { code: 0x87 }), "send"), PUBACK_WORDS[0x87]);
  assert.equal(sentence(new Error("no reply from ab within 10000 ms"), "send"), "No reply within 10 s: the broker delivered it, but the instance did not answer.");
});

