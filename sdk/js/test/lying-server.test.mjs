// A lying directory (issue 24): a real HTTP server on an ephemeral port that answers prelogin
// with KDF parameters outside the client bounds and records every request it is sent. Each
// path from a password to a login secret must refuse with a KdfRefusedError before it sends
// anything derived from the password: the server sees prelogin and nothing else.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import * as c from "../src/crypto.js";
import { Api, Identity } from "../src/identity.js";

/** @type {{ method: string, url: string, authorization?: string, body: string }[]} */
const seen = [];
/** What prelogin answers, set by each test. */
let advertised = { ...c.CLIENT_FLOOR };
const server = createServer((req, res) => {
  let body = "";
  req.on("data", (chunk) => (body += chunk));
  req.on("end", () => {
    seen.push({ method: req.method ?? "", url: req.url ?? "", authorization: req.headers.authorization, body });
    const prelogin = req.method === "POST" && (req.url === "/v1/prelogin" || req.url === "/v1/prelogin/previous");
    res.writeHead(prelogin ? 200 : 401, { "Content-Type": "application/json" });
    res.end(JSON.stringify(prelogin ? { salt: c.b64(new Uint8Array(16).fill(7)), ...advertised } : { error: "unauthorized", message: "lying server" }));
  });
});
/** @type {Api} */
let api;

before(async () => {
  await c.ready();
  await new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(undefined)));
  const address = server.address();
  assert.ok(address && typeof address === "object");
  api = new Api(`http://127.0.0.1:${address.port}`);
});
after(() => server.close());

/** Every request the lying server saw was a prelogin, without credentials, and carried no secret. */
function onlyPreloginWasSent() {
  assert.ok(seen.length > 0, "the client asked for prelogin");
  for (const r of seen) {
    assert.match(r.url, /^\/v1\/prelogin(\/previous)?$/, `${r.method} ${r.url} was sent after a refused derivation`);
    assert.equal(r.authorization, undefined, "no Authorization header");
    assert.doesNotMatch(r.body, /auth_secret|key_proof|wrapped_key/);
  }
  seen.length = 0;
}

const weak = { memory_kib: 8, iterations: 1, parallelism: 1 };
const costly = { memory_kib: 64 * 1048576, iterations: 3, parallelism: 1 };

test("login and rollback refuse parameters below the floor, and send nothing derived", async () => {
  advertised = weak;
  for (const attempt of [() => Identity.login(api, "alice", "a long passphrase"), () => Identity.rollBack(api, "alice", "a long passphrase")]) {
    await assert.rejects(attempt(), (e) => e instanceof c.KdfRefusedError && e.kind === "below_floor" && e.asked.memory_kib === 8 && /weaker key derivation \(Argon2id m = 8 KiB, t = 1/.test(e.message));
    onlyPreloginWasSent();
  }
});

test("login, rollback and registration refuse a ceiling-breaking memory size before allocating it", async () => {
  advertised = costly;
  const started = Date.now();
  for (const attempt of [
    () => Identity.login(api, "alice", "a long passphrase"),
    () => Identity.rollBack(api, "alice", "a long passphrase"),
    () => Identity.register(api, "alice", "a long passphrase"),
  ]) {
    await assert.rejects(attempt(), (e) => e instanceof c.KdfRefusedError && e.kind === "above_ceiling" && /costlier key derivation \(Argon2id m = 67108864 KiB/.test(e.message));
    onlyPreloginWasSent();
  }
  // Refused before Argon2id ran: 64 GiB would have failed or taken minutes.
  assert.ok(Date.now() - started < 5000);
});

test("the bounds are the protocol's, member by member", () => {
  assert.deepEqual(c.withinClientBounds(c.CLIENT_FLOOR), c.CLIENT_FLOOR);
  assert.deepEqual(c.withinClientBounds(c.CLIENT_CEILING), c.CLIENT_CEILING);
  for (const p of [weak, { memory_kib: 19455, iterations: 2, parallelism: 1 }, { memory_kib: 65536, iterations: 1, parallelism: 1 }, { memory_kib: 65536, iterations: 3, parallelism: 0 }]) {
    assert.throws(() => c.withinClientBounds(p), (e) => e instanceof c.KdfRefusedError && e.kind === "below_floor");
  }
  for (const p of [costly, { memory_kib: 65536, iterations: 11, parallelism: 1 }, { memory_kib: 65536, iterations: 3, parallelism: 17 }]) {
    assert.throws(() => c.withinClientBounds(p), (e) => e instanceof c.KdfRefusedError && e.kind === "above_ceiling");
  }
  // A server that sends no number, or a fraction, is below the floor: never derived with.
  assert.throws(() => c.withinClientBounds(/** @type {any} */ ({ memory_kib: "65536", iterations: 3, parallelism: 1 })), c.KdfRefusedError);
});
