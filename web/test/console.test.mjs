// The web console in a real headless Chromium (Debian's, driven by playwright-core) against a
// real broker over HTTPS and WSS, a real `sealrelay agent` and an instance written with the
// JavaScript SDK: register, log in, send and see the sealed reply; a wrong password; an
// operator reset (signed out, reset code, the stale-key state with both witnesses); a key the
// directory swapped (the pin-mismatch state); the broker restarting (reconnecting, then back).
// Every request and WebSocket frame the page makes is recorded and searched for the password,
// wrap keys, private keys and tokens.
//
// Run by tests/web_console.rs, which starts the broker and passes its addresses as JSON in
// SRTEST_WEB_CONSOLE; skipped when that is not set. Screenshots go to `cases.screenshots`.

import assert from "node:assert/strict";
import { execFile, execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { promisify } from "node:util";
import { chromium } from "playwright-core";
import { Agent, Api, Identity, OwnerKeyChangedError, crypto as c } from "@sealrelay/sdk";
import { API_WORDS, LINK_WORDS, UNREACHABLE } from "../src/words.js";

const cases = process.env.SRTEST_WEB_CONSOLE ? JSON.parse(process.env.SRTEST_WEB_CONSOLE) : null;
const skip = cases ? false : "run by tests/web_console.rs (cargo test), which starts the broker";
const api = cases && new Api(cases.http);
/** @type {import("playwright-core").Browser} */
let browser;

before(async () => {
  if (!cases) return;
  await c.ready();
  browser = await chromium.launch({ executablePath: cases.chromium });
});
after(() => browser?.close());

/** @typedef {import("playwright-core").Page} Page */
/** A secret in one encoding: text, or raw bytes. @typedef {{ label: string, text?: string, bytes?: Buffer }} Secret */

/**
 * What the test knows must never leave the page: `secrets` appear in no request, frame, URL,
 * storage or log line in any encoding; `authKeys` (auth keys and reset codes, which the
 * protocol sends to the broker to log in or authorise a reset; it keeps only verifiers) only
 * inside TLS to the broker, never in a URL, storage or a log line.
 */
class Secrets {
  /** @type {Secret[]} */
  secrets = [];
  /** @type {Secret[]} */
  authKeys = [];

  /**
   * @param {string} label @param {Uint8Array | string} value
   * @param {string} label
   * @param {Uint8Array | string} value
   */
  add(label, value) {
    this.secrets.push(...forms(label, value));
  }

  /**
   * A secret the protocol sends to the broker to log in or authorise (inside TLS only).
   * @param {string} label
   * @param {Uint8Array | string} value
   */
  credential(label, value) {
    this.authKeys.push(...forms(label, value));
  }

  /**
   * A password and the keys it derives under the account's current salt.
   * @param {string} name
   * @param {string} password
   */
  async password(name, password) {
    this.add(`password of ${name}`, password);
    const spec = await api.prelogin(name);
    const keys = await c.deriveFromPassword(password, c.fromB64(spec.salt), spec);
    this.add(`wrap key of ${name}`, keys.wrapKey);
    this.credential(`auth key of ${name}`, keys.authKey);
  }

  /**
   * The private key the page unwrapped for `name`, as the SDK unwraps it here.
   * @param {string} name
   * @param {string} password
   */
  async userKey(name, password) {
    const me = await Identity.login(api, name, password);
    this.add(`private key of ${name}`, me.secret);
  }

  /**
   * An instance token, its wrap key and the instance's private key.
   * @param {string} token
   */
  async token(token) {
    this.add("instance token", token);
    this.add("token secret", token.split(".")[2]);
    const { keys } = await c.tokenKeys(token);
    this.add("token wrap key", keys.wrapKey);
    this.credential("token auth key", keys.authKey);
    const agent = await Agent.login(api, token);
    this.add("instance private key", agent.secret);
  }
}

/**
 * The encodings a secret could travel in: text, URL-encoded, hex, base64, base64url, raw.
 * @param {string} label
 * @param {Uint8Array | string} value
 * @returns {Secret[]}
 */
function forms(label, value) {
  if (typeof value === "string") {
    return [
      { label, text: value },
      { label: `${label} (URL-encoded)`, text: encodeURIComponent(value) },
    ];
  }
  return [
    { label: `${label} (hex)`, text: c.toHex(value) },
    { label: `${label} (base64)`, text: c.b64(value) },
    { label: `${label} (base64url)`, text: c.b64url(value) },
    { label: `${label} (raw)`, bytes: Buffer.from(value) },
  ];
}

/**
 * Every request and WebSocket frame a page sends, every API answer and frame it receives, and
 * every console line it logs.
 */
class Recorder {
  /** @type {{ url: string, carried: Buffer, where: string }[]} */
  sent = [];
  /** @type {Promise<{ where: string, bytes: Buffer }>[]} */
  received = [];
  /** @type {string[]} */
  logs = [];

  /** @param {Page} page */
  constructor(page) {
    page.on("request", (r) => {
      const headers = Object.entries(r.headers()).map(([k, v]) => `${k}: ${v}`);
      // Basic credentials are base64 on the wire: decoded, so a secret in them is found.
      const basic = (r.headers().authorization ?? "").replace(/^Basic /, "");
      const carried = Buffer.concat([Buffer.from(headers.join("\n") + "\n" + Buffer.from(basic, "base64").toString("latin1") + "\n"), r.postDataBuffer() ?? Buffer.alloc(0)]);
      this.sent.push({ url: r.url(), carried, where: `${r.method()} ${r.url()}` });
    });
    page.on("websocket", (ws) => {
      this.sent.push({ url: ws.url(), carried: Buffer.alloc(0), where: `WebSocket ${ws.url()}` });
      ws.on("framesent", (f) => this.sent.push({ url: ws.url(), carried: Buffer.from(f.payload), where: `frame to ${ws.url()}` }));
      ws.on("framereceived", (f) => this.received.push(Promise.resolve({ where: `frame from ${ws.url()}`, bytes: Buffer.from(f.payload) })));
    });
    // The API's answers (the console's own files are the same for everyone).
    page.on("response", (r) => {
      if (!new URL(r.url()).pathname.startsWith("/v1/")) return;
      this.received.push(r.body().then((bytes) => ({ where: `answer to ${r.request().method()} ${r.url()}`, bytes }), () => ({ where: r.url(), bytes: Buffer.alloc(0) })));
    });
    page.on("console", (m) => this.logs.push(m.text()));
    page.on("pageerror", (e) => this.logs.push(`page error: ${e.message}`));
  }

  /**
   * Asserts nothing secret left the page, and the auth keys left only to the broker.
   * @param {Page} page
   * @param {Secrets} secrets
   */
  async check(page, secrets) {
    const site = new URL(cases.https).origin;
    const mqtt = new URL(cases.wss).origin;
    const storage = await page.evaluate(() => JSON.stringify({ local: { ...localStorage }, session: { ...sessionStorage } }));
    const traffic = [
      ...this.sent.map((s) => ({ where: s.where, text: s.url + "\n" + s.carried.toString("latin1"), bytes: s.carried })),
      ...(await Promise.all(this.received)).map((r) => ({ where: r.where, text: r.bytes.toString("latin1"), bytes: r.bytes })),
    ];
    const elsewhere = [
      ...this.sent.map((s) => ({ where: `URL ${s.url}`, text: s.url, bytes: Buffer.from(s.url) })),
      { where: "page URL", text: page.url(), bytes: Buffer.from(page.url()) },
      { where: "localStorage/sessionStorage", text: storage, bytes: Buffer.from(storage) },
      ...this.logs.map((l) => ({ where: `console line "${l}"`, text: l, bytes: Buffer.from(l) })),
    ];
    /** @param {Secret} secret @param {{ text: string, bytes: Buffer }} place */
    const found = (secret, place) => (secret.text !== undefined ? place.text.includes(secret.text) : !!secret.bytes && place.bytes.includes(secret.bytes));
    for (const secret of secrets.secrets) {
      for (const place of [...traffic, ...elsewhere]) assert.ok(!found(secret, place), `${secret.label} found in ${place.where}`);
    }
    for (const secret of secrets.authKeys) {
      for (const place of elsewhere) assert.ok(!found(secret, place), `${secret.label} found in ${place.where}`);
    }
    for (const s of this.sent) {
      assert.ok([site, mqtt].includes(new URL(s.url).origin), `the page talked to ${s.url}, not the broker`);
    }
    assert.ok(this.sent.some((s) => s.where.startsWith("frame to")), "no WebSocket frame was recorded: the check would be vacuous");
    // The one entry of sessionStorage: the name signed in on this tab (searched for every
    // secret above with the rest of storage), so that a reload can say it signed out.
    for (const key of Object.keys(JSON.parse(storage).session)) assert.equal(key, "sealrelay.signed-in-as");
    for (const key of Object.keys(JSON.parse(storage).local)) assert.match(key, /^sealrelay\.keyring-version\.[0-9a-f]{32}\.[0-9a-f]{32}$/);
  }
}

/**
 * A fresh browser context on the console, recorded from its first request.
 * @param {{ width: number, height: number }} [viewport]
 */
async function open(viewport = { width: 1100, height: 900 }) {
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport });
  const page = await context.newPage();
  const recorder = new Recorder(page);
  await page.goto(cases.https);
  await page.waitForSelector("#login:not([hidden])", { timeout: 30_000 });
  return { page, recorder };
}

/** axe-core, evaluated into a page to check what it shows. */
const axeSource = cases && readFileSync(new URL("../node_modules/axe-core/axe.min.js", import.meta.url), "utf8");

/**
 * Asserts axe-core finds no accessibility violation in what `page` shows now (evaluated by
 * the test harness, which the page's content security policy does not govern).
 * @param {Page} page
 * @param {string} screen
 */
async function accessible(page, screen) {
  if (!(await page.evaluate(() => "axe" in window))) await page.evaluate(axeSource);
  const result = await page.evaluate(() => /** @type {any} */ (window).axe.run(document, { resultTypes: ["violations"] }));
  const found = result.violations.map(
    (/** @type {any} */ v) => `${v.id} (${v.impact}): ${v.help} at ${v.nodes.map((/** @type {any} */ n) => n.target.join(" ")).join(", ")}`,
  );
  assert.deepEqual(found, [], `axe-core on the ${screen} screen`);
}

/** @param {Page} page @param {string} name */
const shot = (page, name) => page.screenshot({ path: join(cases.screenshots, `${name}.png`), fullPage: true });
/** @param {Page} page @param {string} selector */
const text = (page, selector) => page.locator(selector).innerText();
/**
 * Waits for `selector` to show; if it never does, fails with what the page says instead.
 * @param {Page} page
 * @param {string} selector
 */
async function visible(page, selector) {
  try {
    await page.waitForSelector(`${selector}:not([hidden])`, { timeout: 30_000 });
  } catch (e) {
    const says = await page.evaluate(() =>
      ["link", "login-error", "register-error", "reset-error", "rollback-error", "instances-error", "stale-alert", "pin-alert", "conversation"].map((id) => `#${id}: ${document.getElementById(id)?.textContent}`).join("\n"),
    );
    throw new Error(`${selector} never showed; the page says:\n${says}`, { cause: e });
  }
}

/**
 * @param {Page} page
 * @param {string} name
 * @param {string} password
 */
async function register(page, name, password) {
  await fillRegistration(page, name, password);
  await page.click("#register-form button:not([type=button])");
  await visible(page, "#account");
  await page.waitForSelector('#link[data-state="connected"]', { timeout: 30_000 });
}

/**
 * Opens the registration form from the login form and fills it in (the password twice, the
 * warning acknowledged), without submitting it.
 * @param {Page} page
 * @param {string} name
 * @param {string} password
 * @param {string} [again]
 */
async function fillRegistration(page, name, password, again = password) {
  if (await page.locator("#register").isHidden()) await page.click("#show-register");
  await page.fill("#register-form [name=name]", name);
  await page.fill("#register-form [name=password]", password);
  await page.fill("#register-form [name=again]", again);
  await page.check("#register-form [name=understood]");
}

/**
 * Fills the login form and logs in.
 * @param {Page} page
 * @param {string} name
 * @param {string} password
 */
async function submitLogin(page, name, password) {
  await page.fill("#login-form [name=name]", name);
  await page.fill("#login-form [name=password]", password);
  await page.click("#login-form button");
}

/**
 * A fresh recorded page with a user registered on it (the password among the secrets).
 * @param {string} name
 * @param {string} password
 */
async function registered(name, password) {
  const { page, recorder } = await open();
  const secrets = new Secrets();
  await register(page, name, password);
  await secrets.password(name, password);
  return { page, recorder, secrets };
}

/**
 * Adds an instance from the page; returns its id and the token the page showed once.
 * @param {Page} page
 */
async function addInstance(page) {
  await page.click("#add-instance");
  await visible(page, "#token-box");
  const token = (await text(page, "#token-text")).trim();
  const id = (await text(page, "#token-for")).trim();
  await page.click("#token-done");
  return { id, token };
}

/**
 * Sends `message` to the instance selected (the first offered, unless `to` names one) and
 * waits for the exchange to settle: its state ("answered" or "failed") and what it says.
 * @param {Page} page
 * @param {string} message
 * @param {string} [to]
 */
async function send(page, message, to) {
  if (to) await page.selectOption("#send-form select", to);
  await page.fill("#send-form [name=message]", message);
  await page.click("#send-form button");
  // The conversation just written to is on top, its newest exchange last.
  const newest = page.locator("#conversation section:first-child li.exchange:last-child");
  await page.locator("#conversation section:first-child li.exchange:last-child:is([data-state=answered], [data-state=failed])").waitFor({ timeout: 30_000 });
  const reply = newest.locator(".reply");
  return {
    state: await newest.getAttribute("data-state"),
    reply: (await reply.count()) ? (await reply.innerText()).replace(/^.*← /, "") : null,
    status: await newest.locator(".status").innerText(),
  };
}

/**
 * `sealrelay agent` (the Rust CLI) with `token`, resolved once it serves; or, given the
 * command the page showed, that command as a user would paste it (the token saved in the file
 * it names, the development CA given as the page says to for a private one).
 * @param {string} token
 * @param {string} [command]
 */
async function rustAgent(token, command) {
  /** @type {{ env: NodeJS.ProcessEnv, cwd?: string }} */
  let options = { env: { ...process.env, ...cases.cli_env, SEALRELAY_TOKEN: token } };
  let args = ["agent"];
  if (command) {
    const [program, ...rest] = command.split(" ");
    assert.equal(program, "sealrelay");
    const cwd = mkdtempSync(join(tmpdir(), "sealrelay-agent-"));
    writeFileSync(join(cwd, "sealrelay-token"), token, { mode: 0o600 });
    options = { env: { ...process.env, ...cases.cli_env, SEALRELAY_TOKEN: "" }, cwd };
    args = [...rest, "--ca-file", cases.dev_cert];
  }
  const child = spawn(cases.bin, args, { ...options, stdio: ["ignore", "pipe", "inherit"] });
  let out = "";
  await new Promise((resolve, reject) => {
    child.stdout.on("data", (d) => (out += d) && out.includes("serving") && resolve(undefined));
    child.once("exit", (code) => reject(new Error(`sealrelay agent exited with ${code}: ${out}`)));
  });
  return child;
}

test("register, add an instance, send to a Rust agent and see its sealed reply; log out wipes the view", { skip, timeout: 120_000 }, async () => {
  const { page, recorder } = await open();
  await shot(page, "01-login");
  await accessible(page, "login");
  const secrets = new Secrets();
  await register(page, "web-alice", "alice's browser password");
  await secrets.password("web-alice", "alice's browser password");
  await secrets.userKey("web-alice", "alice's browser password");
  // The token box: the token once, the agent's command for this broker (copied as shown),
  // and "online" once the agent that command starts has connected.
  await page.context().grantPermissions(["clipboard-read", "clipboard-write"], { origin: new URL(cases.https).origin });
  await page.click("#add-instance");
  await visible(page, "#token-box");
  const token = (await text(page, "#token-text")).trim();
  const id = (await text(page, "#token-for")).trim();
  await secrets.token(token);
  const command = (await text(page, "#token-command")).trim();
  assert.equal(command, `sealrelay agent --server ${new URL(cases.https).origin} --broker ${cases.wss} --token-file sealrelay-token`);
  await page.click("#token-copy");
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), command);
  const agent = await rustAgent(token, command);
  try {
    await page.waitForSelector('#token-status[data-state="online"]', { timeout: 30_000 });
    await shot(page, "01b-token-online");
    await accessible(page, "token");
    await page.click("#token-done");
    await page.click("#refresh");
    await page.waitForFunction((i) => document.querySelector(`tr[data-id="${i}"]`)?.textContent?.includes("online"), id, { timeout: 30_000 });
    assert.deepEqual(await send(page, "status?"), { state: "answered", reply: "status?", status: "answered" }, "the Rust agent echoes the request, sealed back to the page");
    assert.match(await text(page, `#conversation section[data-id="${id}"]`), /^Instance [0-9a-f]{8}…\s+\d{1,2}:\d{2}:\d{2}.* → status\?\s+\d{1,2}:\d{2}:\d{2}.* ← status\?\s+answered$/);
    assert.match(await text(page, `tr[data-id="${id}"]`), /pinned/);
    await shot(page, "02-reply");
    await accessible(page, "conversation");
    // What the server holds: the agent's session, live, with its counts; the stored wraps.
    await page.click("#activity-show");
    await visible(page, "#activity");
    const instance = await text(page, `#activity section[data-id="${id}"]`);
    assert.match(instance, /live/, "the agent's session is shown while it lasts");
    assert.match(instance, /tcp|tls|ws/);
    assert.match(await text(page, "#activity"), /wrapped_key \d+ B [0-9a-f]{16}…/);
    await shot(page, "02b-activity");
    await accessible(page, "activity");
  } finally {
    agent.kill();
  }
  await page.click("#logout");
  await visible(page, "#login");
  assert.equal(await page.locator("#conversation li").count(), 0, "the conversations are wiped");
  assert.equal(await page.locator("#instances tbody tr").count(), 0);
  assert.equal(await text(page, "#token-text"), "");
  assert.equal(await text(page, "#activity"), "", "the activity view is wiped too");
  await recorder.check(page, secrets);
});

test("a wrong password, or an unknown name, is refused with one clear message", { skip, timeout: 60_000 }, async () => {
  const { page, recorder, secrets } = await registered("web-bob", "bob's password");
  await page.click("#logout");
  for (const [name, password] of [["web-bob", "not bob's password"], ["web-nobody", "anything at all"]]) {
    secrets.add(`wrong password for ${name}`, password);
    await submitLogin(page, name, password);
    await visible(page, "#login-error");
    assert.equal(await text(page, "#login-error"), "Wrong name or password.");
    assert.equal(await page.inputValue("#login-form [name=password]"), "", "the password field is cleared");
  }
  await shot(page, "03-wrong-password");
  await accessible(page, "wrong password");
  await recorder.check(page, secrets);
});

test("registration is a form of its own, refuses what the CLI refuses in the CLI's words, and says what a forgotten password costs", { skip, timeout: 90_000 }, async () => {
  const { page, recorder } = await open();
  await page.click("#show-register");
  await visible(page, "#register");
  assert.ok(await page.locator("#login").isHidden(), "login and registration are separate forms");
  assert.match(await text(page, "#register-warning"), /operator cannot recover it.*new.*key.*unreadable for good/s);
  /** The CLI's refusal of `password` for `name`, without its prefix and its escape hatch. @param {string} name @param {string} password */
  const cliRefusal = async (name, password) => {
    const run = promisify(execFile)(cases.bin, ["user", "register", "--user", name], { env: { ...process.env, ...cases.cli_env, SEALRELAY_PASSWORD: password } });
    const failed = await run.then(() => null, (e) => e);
    assert.ok(failed, `the CLI accepted ${JSON.stringify(password)}`);
    return failed.stderr.match(/^sealrelay: (.*); --allow-weak-password takes it anyway$/m)?.[1] ?? `not a refusal: ${failed.stderr}`;
  };
  for (const weak of ["a", "qwertyuiop", "my web-kim password", "zzzzzzzzzzzz"]) {
    await fillRegistration(page, "web-kim", weak);
    const refusal = `Not accepted: ${await cliRefusal("web-kim", weak)}.`;
    assert.equal(await text(page, "#register-strength"), refusal, "the hint says it while the password is typed");
    await page.click("#register-form button:not([type=button])");
    await visible(page, "#register-error");
    assert.equal(await text(page, "#register-error"), refusal);
    assert.equal(await page.inputValue("#register-form [name=password]"), "", "the refused password is cleared");
  }
  await fillRegistration(page, "web-kim", "kim's long password", "kim's other password");
  await page.click("#register-form button:not([type=button])");
  await page.waitForFunction(() => document.getElementById("register-error")?.textContent === "The two passwords differ: type the same one twice.", null, { timeout: 10_000 });
  // Unacknowledged, the form does not go.
  await fillRegistration(page, "web-kim", "kim's long password");
  await page.uncheck("#register-form [name=understood]");
  await page.click("#register-form button:not([type=button])");
  assert.ok(!recorder.sent.some((s) => s.where === `POST ${cases.https}v1/users`), "nothing refused reached the server");
  await fillRegistration(page, "web-kim", "kim's long password");
  assert.match(await text(page, "#register-strength"), /^(Fair|Good|Strong)/);
  await shot(page, "00-register");
  await accessible(page, "registration");
  await page.click("#register-form button:not([type=button])");
  await visible(page, "#account");
  assert.ok(recorder.sent.some((s) => s.where === `POST ${cases.https}v1/users`));
  await page.click("#logout");
  assert.ok(await page.locator("#register-error").isHidden());
  // The server's refusals, in our words, under the form.
  for (const [name, code] of [["web-kim", "conflict"], ["0123456789abcdef0123456789abcdef", "bad_request"]]) {
    await fillRegistration(page, name, "kim's long password");
    await page.click("#register-form button:not([type=button])");
    await page.waitForFunction((t) => document.getElementById("register-error")?.textContent === t, API_WORDS[code].register, { timeout: 30_000 });
  }
  const secrets = new Secrets();
  await secrets.password("web-kim", "kim's long password");
  await recorder.check(page, secrets);
});

test("an operator reset signs the page out; the reset code sets a new key and the page shows what is stale", { skip, timeout: 120_000 }, async () => {
  const { page, recorder, secrets } = await registered("web-carol", "carol's first password");
  await secrets.userKey("web-carol", "carol's first password");
  const oldWitness = (await text(page, "#my-witness")).trim();
  const { id, token } = await addInstance(page);
  await secrets.token(token);
  // An instance written with the JavaScript SDK, still pinning carol's first key.
  const instance = await Agent.login(api, token);
  await instance.serve(cases.ws, (p) => p);
  try {
    assert.equal((await send(page, "before the reset")).reply, "before the reset");

    const run = await promisify(execFile)(cases.bin, [...cases.admin_args, "--name", "web-carol"], { cwd: cases.broker_dir, env: { ...process.env, ...cases.cli_env } });
    const code = (run.stdout + run.stderr).match(/srr1\.[0-9a-f]{32}\.[A-Za-z0-9_-]+/)?.[0];
    assert.ok(code, `no reset code in: ${run.stdout}`);
    secrets.credential("reset code", code);
    await visible(page, "#login-error");
    assert.match(await text(page, "#login-error"), /operator reset your password/);
    assert.equal(await page.locator("#link").getAttribute("data-state"), "signed_out");
    assert.ok(await page.locator("#reset").getAttribute("open") !== null, "the reset form is offered");
    await shot(page, "04-reset-signed-out");
    await accessible(page, "signed out for a reset");

    await page.fill("#reset-form [name=name]", "web-carol");
    await page.fill("#reset-form [name=code]", code);
    await page.fill("#reset-form [name=password]", "carol's new password");
    await page.fill("#reset-form [name=again]", "carol's new password");
    await page.click("#reset-form button");
    await visible(page, "#account");
    await secrets.password("web-carol", "carol's new password");
    await secrets.userKey("web-carol", "carol's new password");
    const newWitness = (await text(page, "#my-witness")).trim();
    assert.notEqual(newWitness, oldWitness, "a reset makes a new key");
    // An agent starting now with the old token finds its owner's key changed, and refuses.
    await assert.rejects(Agent.login(api, token), (e) => e instanceof OwnerKeyChangedError && e.pinned === oldWitness && e.served === newWitness);
    assert.match(await text(page, "#stale-alert"), new RegExp(`new key \\(witness ${newWitness}; it was ${oldWitness}\\).*${id}`));
    assert.match(await text(page, `tr[data-id="${id}"]`), /stale key/);
    await page.waitForSelector('#link[data-state="connected"]', { timeout: 30_000 });

    // The instance still seals to the old key: the page says so, naming both witnesses.
    await instance.notify(new TextEncoder().encode("status sealed to the old key"));
    await page.waitForFunction(() => document.getElementById("stale-alert")?.textContent?.includes("sealed to your previous key"), null, { timeout: 30_000 });
    assert.equal(
      await text(page, "#stale-alert"),
      `A message from ${id} was sealed to your previous key (witness ${oldWitness}); your key is now ${newWitness}. It cannot be opened, by design. Re-enrol that instance so it learns your new key.`,
    );
    await shot(page, "05-stale-key");
    await accessible(page, "stale key");

    // Re-enrolment from the page: asked first, naming the instance and what it ends (a
    // dismissed question changes nothing); then a new token, the instance pinned again, and
    // the stale-key notice gone with the state it described.
    let asked = "";
    page.once("dialog", (d) => ((asked = d.message()), d.dismiss()));
    await page.locator(`tr[data-id="${id}"] button`, { hasText: "Re-enrol" }).click();
    assert.match(asked, new RegExp(`Re-enrol instance ${id}\\?[\\s\\S]*token stops working`));
    assert.ok(await page.locator("#token-box").isHidden(), "dismissed: nothing happened");
    page.once("dialog", (d) => d.accept());
    await page.locator(`tr[data-id="${id}"] button`, { hasText: "Re-enrol" }).click();
    await visible(page, "#token-box");
    await secrets.token((await text(page, "#token-text")).trim());
    await page.waitForFunction((i) => document.querySelector(`tr[data-id="${i}"]`)?.textContent?.includes("pinned"), id, { timeout: 30_000 });
    await page.waitForSelector("#stale-alert", { state: "hidden", timeout: 10_000 });
  } finally {
    await instance.close();
  }
  await recorder.check(page, secrets);
});

test("two tabs of one user add instances without a conflict surfacing, and each learns the other's without a reload", { skip, timeout: 90_000 }, async () => {
  const a = await registered("web-tess", "tess's two-tab password");
  const b = await open();
  await submitLogin(b.page, "web-tess", "tess's two-tab password");
  await visible(b.page, "#account");
  const fromA = await addInstance(a.page);
  // Tab B still holds the keyring it read at login: its write conflicts, and the SDK re-reads,
  // merges and writes again (two requests), without a word to the user.
  const fromB = await addInstance(b.page);
  assert.equal(b.recorder.sent.filter((s) => s.where === `POST ${cases.https}v1/instances`).length, 2, "the conflicting write was retried");
  assert.ok(await b.page.locator("#instances-error").isHidden(), "no conflict surfaced");
  assert.match(await text(b.page, `tr[data-id="${fromA.id}"]`), /pinned/);
  await a.page.waitForFunction((i) => document.querySelector(`tr[data-id="${i}"]`)?.textContent?.includes("pinned"), fromB.id, { timeout: 30_000 });
  await shot(a.page, "06b-two-tabs");
  for (const token of [fromA.token, fromB.token]) await a.secrets.token(token);
  await a.recorder.check(a.page, a.secrets);
  await b.recorder.check(b.page, a.secrets);
});

/** Every row of the broker's database, as text (SQLite or PostgreSQL, whichever it runs on). */
function databaseDump() {
  if (cases.db_url) return execFileSync("pg_dump", ["--data-only", cases.db_url]);
  return execFileSync("python3", ["-c", "import sqlite3, sys\ndb = sqlite3.connect(sys.argv[1], timeout=10)\nsys.stdout.buffer.write('\\n'.join(db.iterdump()).encode())", cases.db]);
}

test("instances have names the server never learns: set at adding, renamed in the page and by the CLI, shown everywhere", { skip, timeout: 90_000 }, async () => {
  const { page, recorder, secrets } = await registered("web-nora", "nora's naming password");
  const names = ["Press line 7 — Zürich", "Kiln 3 · Basel", "Mixer nine"];
  for (const name of names) {
    secrets.add(`instance name ${name}`, name);
    secrets.add(`instance name ${name} (UTF-8)`, new TextEncoder().encode(name));
  }
  await page.fill("#new-instance-name", names[0]);
  const { id, token } = await addInstance(page);
  await secrets.token(token);
  assert.match(await text(page, `tr[data-id="${id}"]`), new RegExp(`^${names[0]}\\s+${id}`));
  assert.match(await text(page, "#send-form select"), new RegExp(`${names[0]} \\(`));
  // Renamed in the page: asked in a dialog, written into the sealed keyring.
  page.once("dialog", (d) => d.accept(names[1]));
  await page.locator(`tr[data-id="${id}"] button`, { hasText: "Rename" }).click();
  await page.waitForFunction(([i, n]) => document.querySelector(`tr[data-id="${i}"]`)?.textContent?.startsWith(n), [id, names[1]], { timeout: 30_000 });
  await shot(page, "13-named");
  await accessible(page, "named instance");
  // The CLI opens the same keyring: it lists the name, and its rename reaches the page.
  /** @param {string[]} args */
  const cli = (args) => promisify(execFile)(cases.bin, args, { env: { ...process.env, ...cases.cli_env, SEALRELAY_PASSWORD: "nora's naming password" } });
  assert.match((await cli(["instance", "list", "--user", "web-nora"])).stdout, new RegExp(`${id}  .*  ${names[1]}$`, "m"));
  await cli(["instance", "rename", "--user", "web-nora", "--instance", id, "--name", names[2]]);
  await page.click("#refresh");
  await page.waitForFunction(([i, n]) => document.querySelector(`tr[data-id="${i}"]`)?.textContent?.startsWith(n), [id, names[2]], { timeout: 30_000 });
  // Not in any request, answer or frame the page saw, nor in any row of the broker's database.
  await recorder.check(page, secrets);
  const dump = databaseDump();
  assert.ok(dump.includes(Buffer.from("web-nora")), "the dump holds the database's rows");
  const lower = dump.toString("latin1").toLowerCase();
  for (const name of names) {
    assert.ok(!dump.includes(Buffer.from(name)), `"${name}" is in the broker's database`);
    // Blobs are dumped in hex.
    assert.ok(!lower.includes(Buffer.from(name).toString("hex")), `"${name}" is in the broker's database, in a blob`);
  }
});

test("a key the directory swapped shows the pin mismatch, loudly, and the page will not seal to it", { skip, timeout: 60_000 }, async () => {
  const { page, recorder, secrets } = await registered("web-dave", "dave's password");
  const { id, token } = await addInstance(page);
  await secrets.token(token);
  const pinned = (await text(page, `tr[data-id="${id}"]`)).match(/pinned \(([0-9a-f]{32})\)/)?.[1];
  assert.ok(pinned, "the new instance is pinned, its witness shown");
  assert.equal(await page.locator("#send-form select option").count(), 1);
  // Never connected: marked offline, and a message to it is answered at once (the broker's
  // PUBACK says it has no session), not after the reply's timeout.
  assert.match(await text(page, "#send-form select"), /offline/);
  const started = Date.now();
  assert.deepEqual(await send(page, "anyone there?"), { state: "failed", reply: null, status: "Not delivered: the instance is offline." });
  assert.ok(Date.now() - started < 5_000, `answered after ${Date.now() - started} ms`);
  await shot(page, "06a-offline");
  await accessible(page, "offline");

  // The server lies: another key for the instance, written into the broker's own database.
  if (cases.db_url) {
    const swapped = randomBytes(32).toString("hex");
    execFileSync("psql", [cases.db_url, "-v", "ON_ERROR_STOP=1", "-qc", `UPDATE principals SET public_key = decode('${swapped}', 'hex') WHERE id = decode('${id}', 'hex')`]);
  } else {
    execFileSync("python3", ["-c", "import os, sqlite3, sys\ndb = sqlite3.connect(sys.argv[1], timeout=10)\ndb.execute('UPDATE principals SET public_key = ? WHERE id = ?', (os.urandom(32), bytes.fromhex(sys.argv[2])))\ndb.commit()", cases.db, id]);
  }
  await page.click("#refresh");
  await visible(page, "#pin-alert");
  const alert = await text(page, "#pin-alert");
  assert.match(alert, new RegExp(`KEY MISMATCH for instance ${id}`));
  assert.match(alert, new RegExp(`but you pinned ${pinned}\\.`));
  assert.match(alert, /refuses to use it/);
  assert.match(await text(page, `tr[data-id="${id}"]`), /MISMATCH/);
  assert.equal(await page.locator("#send-form select option").count(), 0, "the swapped key is not offered for sealing");
  assert.ok(await page.locator("#send-form button").isDisabled());
  await shot(page, "06-pin-mismatch");
  await accessible(page, "pin mismatch");
  await recorder.check(page, secrets);
});

test("a user registered in the browser logs in with the Rust CLI, and one the CLI registered logs in here", { skip, timeout: 60_000 }, async () => {
  const { page, recorder, secrets } = await registered("web-gina", "gina's password");
  /** @param {string[]} args @param {string} password */
  const cli = (args, password) =>
    promisify(execFile)(cases.bin, args, { env: { ...process.env, ...cases.cli_env, SEALRELAY_PASSWORD: password } });
  const { id } = await addInstance(page);
  const witness = (await text(page, `tr[data-id="${id}"]`)).match(/pinned \(([0-9a-f]{32})\)/)?.[1];
  // The Rust SDK unwraps the key the page wrapped, and opens the keyring the page sealed.
  const listed = await cli(["instance", "list", "--user", "web-gina"], "gina's password");
  assert.match(listed.stdout, new RegExp(`${id}  ${witness}  pinned`));
  await page.click("#logout");

  const made = await cli(["user", "register", "--user", "cli-hank"], "sixteen tons of coal");
  const hank = made.stdout.match(/key witness ([0-9a-f]{32})/)?.[1];
  assert.ok(hank, made.stdout);
  await secrets.password("cli-hank", "sixteen tons of coal");
  await submitLogin(page, "cli-hank", "sixteen tons of coal");
  await visible(page, "#account");
  assert.equal(await text(page, "#my-witness"), hank, "the page unwrapped the key the CLI made");
  await recorder.check(page, secrets);
});

test("the link says when the broker goes away and that it is back; a change of password keeps the key", { skip, timeout: 90_000 }, async () => {
  const { page, recorder, secrets } = await registered("web-erin", "erin's password");
  // The Rust side restarts the broker on the same ports when this file appears. Once the
  // broker has said goodbye the browser goes offline, so the retries find nobody: after three
  // the badge says the broker cannot be reached, whatever it said as it went.
  writeFileSync(cases.restart_request, "");
  await page.waitForSelector('#link[data-state="reconnecting"]', { timeout: 30_000 });
  await page.context().setOffline(true);
  assert.equal(await text(page, "#link"), LINK_WORDS.server_shutdown);
  await shot(page, "07-reconnecting");
  await page.waitForFunction((t) => document.getElementById("link")?.textContent === t, LINK_WORDS.unreachable, { timeout: 30_000 });
  await shot(page, "07b-unreachable");
  await page.context().setOffline(false);
  await page.waitForSelector('#link[data-state="connected"]', { timeout: 60_000 });
  assert.ok(existsSync(cases.restarted), "connected again only after the restart");

  // A change of password re-wraps the same key: the page reconnects with the new secret, and
  // the new password logs in to the same witness.
  const witness = await text(page, "#my-witness");
  await page.fill("#password-form [name=password]", "erin's new password");
  await page.fill("#password-form [name=again]", "erin's new password");
  await page.click("#password-form button");
  await visible(page, "#password-result");
  assert.match(await text(page, "#password-result"), /^Password changed/);
  await page.waitForSelector('#link[data-state="connected"]', { timeout: 30_000 });
  await secrets.password("web-erin", "erin's new password");
  await page.click("#logout");
  assert.ok(await page.locator("#password-result").isHidden(), "the notice went with the session it described");
  await submitLogin(page, "web-erin", "erin's new password");
  await visible(page, "#account");
  assert.equal(await text(page, "#my-witness"), witness);
  assert.ok(await page.locator("#password-result").isHidden(), "and does not greet the next login");

  // The change was not erin's: the password from before it undoes it, to the same key; the
  // changed password no longer logs in, and a second rollback finds nothing to undo.
  await page.click("#logout");
  await page.click("#rollback summary");
  await page.fill("#rollback-form [name=name]", "web-erin");
  await page.fill("#rollback-form [name=password]", "erin's password");
  await page.click("#rollback-form button");
  await visible(page, "#account");
  await page.waitForSelector('#link[data-state="connected"]', { timeout: 30_000 });
  assert.equal(await text(page, "#my-witness"), witness);
  await shot(page, "08-rolled-back");
  await accessible(page, "account after a rollback");
  await page.click("#logout");
  await submitLogin(page, "web-erin", "erin's new password");
  await page.waitForSelector("#login-error:not([hidden])", { timeout: 30_000 });
  assert.equal(await text(page, "#login-error"), "Wrong name or password.");
  await page.click("#rollback summary");
  await page.fill("#rollback-form [name=name]", "web-erin");
  await page.fill("#rollback-form [name=password]", "erin's password");
  await page.click("#rollback-form button");
  await page.waitForFunction(() => document.getElementById("rollback-error")?.textContent?.startsWith("Nothing to roll back for web-erin"), null, { timeout: 30_000 });
  await accessible(page, "nothing to roll back");
  await recorder.check(page, secrets);
});

test("an invite code typed at registration goes to the server with it, and is cleared", { skip, timeout: 60_000 }, async () => {
  const { page, recorder } = await open();
  await page.click("#show-register");
  await page.fill("#register-form [name=invite]", "sri1.an-invite-from-the-operator");
  await register(page, "web-ivy", "ivy's password");
  const sent = recorder.sent.find((s) => s.where === `POST ${cases.https}v1/users`);
  assert.ok(sent, "the registration was sent");
  assert.match(sent.carried.toString("latin1"), /"invite":"sri1\.an-invite-from-the-operator"/);
  await page.click("#logout");
  await page.click("#show-register");
  assert.equal(await page.inputValue("#register-form [name=invite]"), "");
});

test("on a 390 px phone screen nothing scrolls sideways, and focus follows the login and the token", { skip, timeout: 90_000 }, async () => {
  const { page, recorder } = await open({ width: 390, height: 844 });
  /** @param {string} screen */
  const fits = async (screen) => {
    const [wide, width] = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
    const culprits = await page.evaluate((w) => [...document.querySelectorAll("body *")].filter((e) => (!e.parentElement?.closest(".scroll") && e.getBoundingClientRect().right > w) || (getComputedStyle(e).overflowX === "visible" && e.scrollWidth > e.clientWidth + 1 && !e.closest(".scroll"))).slice(0, 8).map((e) => `${e.tagName}#${e.id}.${e.className} right ${Math.round(e.getBoundingClientRect().right)} scroll ${e.scrollWidth}/${e.clientWidth}`), width);
    assert.ok(wide <= width, `the ${screen} screen is ${wide} px wide in a ${width} px window: ${culprits.join(", ")}`);
  };
  await fits("login");
  await page.click("#show-register");
  await fits("registration");
  await register(page, "web-pia", "pia's phone password");
  assert.equal(await page.evaluate(() => document.activeElement?.id), "account-start", "focus went to the account, not <body>");
  await page.click("#add-instance");
  await visible(page, "#token-box");
  assert.equal(await page.evaluate(() => document.activeElement?.id), "token-box", "the token box has focus, so it is read out");
  const secrets = new Secrets();
  await secrets.password("web-pia", "pia's phone password");
  await secrets.token((await text(page, "#token-text")).trim());
  await fits("token");
  await shot(page, "11-phone-token");
  await page.click("#token-done");
  await send(page, "are you there?");
  await page.click("#activity-show");
  await visible(page, "#activity");
  await fits("account");
  await shot(page, "11-phone-account");
  await accessible(page, "phone account");
  await recorder.check(page, secrets);
});

test("a broker out of reach is said under the buttons and at login, in our words", { skip, timeout: 90_000 }, async () => {
  const { page, recorder, secrets } = await registered("web-uma", "uma's unreachable password");
  await page.context().setOffline(true);
  await page.click("#refresh");
  await page.waitForFunction((t) => document.getElementById("instances-error")?.textContent === t, UNREACHABLE, { timeout: 30_000 });
  await shot(page, "12-unreachable");
  await accessible(page, "unreachable");
  await page.context().setOffline(false);
  await page.click("#refresh");
  await page.waitForSelector("#instances-error", { state: "hidden", timeout: 30_000 });
  await page.click("#logout");
  await page.context().setOffline(true);
  await submitLogin(page, "web-uma", "uma's unreachable password");
  await page.waitForFunction((t) => document.getElementById("login-error")?.textContent === t, UNREACHABLE, { timeout: 30_000 });
  await page.context().setOffline(false);
  await recorder.check(page, secrets);
});

test("a second visit downloads under 10 KB: the page revalidated, the rest from the cache", { skip, timeout: 60_000 }, async () => {
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await context.newPage();
  /** Bytes the network carried (headers and encoded bodies) for one visit. */
  const visit = async () => {
    /** @type {import("playwright-core").Response[]} */
    const answers = [];
    const listen = (/** @type {import("playwright-core").Response} */ r) => answers.push(r);
    page.on("response", listen);
    await page.goto(cases.https);
    await page.waitForSelector("#login:not([hidden])", { timeout: 30_000 });
    page.off("response", listen);
    let bytes = 0;
    for (const r of answers) {
      const sizes = await r.request().sizes();
      bytes += sizes.responseBodySize + sizes.responseHeadersSize;
    }
    return { bytes, statuses: answers.map((r) => `${r.status()} ${new URL(r.url()).pathname}`) };
  };
  const cold = await visit();
  const warm = await visit();
  console.log(`console visit: cold ${cold.bytes} B (${cold.statuses.join(", ")}), warm ${warm.bytes} B (${warm.statuses.join(", ")})`);
  assert.ok(cold.bytes > 100_000, `the first visit fetched the script: ${cold.bytes} B`);
  assert.ok(cold.bytes < 400_000, `the script came compressed: ${cold.bytes} B`);
  assert.ok(warm.bytes < 10_000, `a second visit downloaded ${warm.bytes} B: ${warm.statuses.join(", ")}`);
  await context.close();
});

test("a reload says it signed the user out, with the name filled in; a logout does not", { skip, timeout: 60_000 }, async () => {
  const { page, recorder, secrets } = await registered("web-rita", "rita's long password");
  await page.reload();
  await visible(page, "#login-note");
  assert.match(await text(page, "#login-note"), /^Reloading the page signed you out: this console keeps your key in its memory only/);
  assert.equal(await page.inputValue("#login-form [name=name]"), "web-rita");
  await shot(page, "10-reloaded");
  await accessible(page, "reloaded");
  await submitLogin(page, "web-rita", "rita's long password");
  await visible(page, "#account");
  await page.click("#logout");
  assert.ok(await page.locator("#login-note").isHidden(), "the note went with the login");
  await page.reload();
  await visible(page, "#login");
  assert.ok(await page.locator("#login-note").isHidden(), "a logout is no surprise: nothing to say");
  await recorder.check(page, secrets);
});
