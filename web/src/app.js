// The sealrelay web console: the page a user logs in with. Everything secret happens here,
// through the JavaScript SDK: the password is stretched and the private key unwrapped in this
// page, every message is sealed here before it leaves, and replies are opened here. The broker
// serves this file and relays sealed bytes; it never sees the password, the auth key or a
// private key, and this page never writes one to storage, the URL or the console log.
//
// Uses the SDK (sdk/js) and the DOM only; bundled by build.mjs into one script, so the
// content security policy can forbid every inline and third-party script. Text from the
// server or from instances is only ever set as text, never as HTML.

import { Api, Console, Identity, crypto as c, weakPassword } from "@sealrelay/sdk";
import { LINK_WORDS, SIGN_OUT_WORDS, sentence } from "./words.js";

/** @param {string} id */
const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));
/** @param {string} id */
const form = (id) => /** @type {HTMLFormElement} */ (document.getElementById(id));
/** @param {HTMLFormElement} f @param {string} name */
const field = (f, name) => /** @type {HTMLInputElement} */ (f.elements.namedItem(name));

const api = new Api(location.origin);

/**
 * The logged-in user, or null: the identity (private key), the MQTT link, and the instances
 * last listed.
 * @type {{ identity: Identity, link: Console | null, instances: import("@sealrelay/sdk/identity").InstanceEntry[] } | null}
 */
let session = null;
/** @type {string | null} the witness of the key this page last held, kept across a reset */
let previousWitness = null;
/** @type {{ mqtt_url: string | null }} */
let site = { mqtt_url: null };

/**
 * The link indicator: what the connection is doing, in words.
 * @param {string} state
 * @param {string} text
 */
function link(state, text) {
  $("link").dataset.state = state;
  $("link").textContent = text;
}

/** @param {HTMLElement} el @param {string | null} text */
function say(el, text) {
  el.hidden = !text;
  el.textContent = text ?? "";
}

/**
 * @param {"login" | "register" | "account"} view
 */
function show(view) {
  for (const id of ["login", "register", "account"]) $(id).hidden = view !== id;
}

/**
 * A hint while a new password is typed: the floor's objection (the CLI's, word for word),
 * else a rough strength from its length and the kinds of characters in it.
 * @param {string} password
 * @param {string} login
 * @returns {{ level: string, text: string }}
 */
function strength(password, login) {
  if (!password) return { level: "", text: "" };
  const refused = refusal(password, login);
  if (refused) return { level: "refused", text: refused };
  /** @type {[RegExp, number][]} */
  const kinds = [[/[a-z]/, 26], [/[A-Z]/, 26], [/[0-9]/, 10], [/[^A-Za-z0-9]/, 33]];
  const pool = kinds.reduce((n, [kind, size]) => (kind.test(password) ? n + size : n), 0);
  const bits = [...password].length * Math.log2(pool);
  if (bits < 60) return { level: "fair", text: "Fair: accepted, but another word or two would make it much harder to guess." };
  if (bits < 90) return { level: "good", text: "Good." };
  return { level: "strong", text: "Strong." };
}

/**
 * Keeps the hint under `f`'s new password up to date as it is typed.
 * @param {HTMLFormElement} f
 * @param {string} hint the hint's element id
 * @param {() => string} login the account name the password is for
 */
function hintStrength(f, hint, login) {
  const update = () => {
    const { level, text } = strength(field(f, "password").value, login());
    $(hint).dataset.level = level;
    $(hint).textContent = text;
  };
  f.addEventListener("input", update);
  f.addEventListener("reset", () => setTimeout(update));
}

/**
 * The new password of `f` (its `password` and `again` fields, both cleared at once) for
 * `login`, or the sentence saying why it cannot be.
 * @param {HTMLFormElement} f
 * @param {string} login
 * @returns {{ password: string, refused?: undefined } | { refused: string }}
 */
function newPassword(f, login) {
  const [password, again] = take(f, "password", "again");
  if (password !== again) return { refused: "The two passwords differ: type the same one twice." };
  const refused = refusal(password, login);
  if (refused) return { refused };
  return { password };
}

/**
 * Why `password` may not be `login`'s new one, as the page says it (the CLI's words), or null.
 * @param {string} password
 * @param {string} login
 */
function refusal(password, login) {
  const weak = weakPassword(password, login);
  return weak && `Not accepted: ${weak}.`;
}

/**
 * Where this browser keeps the newest keyring version it saw for this user and key (a reset
 * makes a new key, and its keyring starts again): a number and a public fingerprint, no secret.
 * @param {Identity} identity
 */
const keyringSeenKey = (identity) => `sealrelay.keyring-version.${c.toHex(identity.id)}.${identity.witness}`;

/**
 * @param {Identity} identity
 */
function rememberKeyring(identity) {
  if (identity.keyring) localStorage.setItem(keyringSeenKey(identity), String(identity.keyring.version));
}

/**
 * @param {Identity} identity
 * @param {string[]} [staleInstances]
 */
async function enter(identity, staleInstances = []) {
  // Only the name, so that a reload can say what it did: the key never touches storage.
  sessionStorage.setItem(SIGNED_IN, identity.login);
  say($("login-note"), null);
  identity.requireKeyringVersion(BigInt(localStorage.getItem(keyringSeenKey(identity)) ?? "0"));
  rememberKeyring(identity);
  session = { identity, link: null, instances: [] };
  $("who").textContent = identity.login;
  $("my-witness").textContent = identity.witness;
  say($("stale-alert"), staleInstances.length
    ? `Your password was reset, so you have a new key (witness ${identity.witness}${previousWitness && previousWitness !== identity.witness ? `; it was ${previousWitness}` : ""}). ` +
      `${staleInstances.length} instance(s) still hold your previous key and cannot talk to you until you re-enrol them: ${staleInstances.join(", ")}.`
    : null);
  previousWitness = identity.witness;
  show("account");
  // Focus where the account starts, so keyboards and screen readers follow the login.
  $("account-start").focus();
  await refresh();
  await connect();
}

// Online state and last-seen times change on their own: redraw while logged in.
setInterval(() => session && refresh().catch(() => {}), 15_000);

async function connect() {
  if (!session) return;
  if (!site.mqtt_url) return link("failed", LINK_WORDS.no_mqtt_url);
  link("connecting", LINK_WORDS.connecting);
  const current = session;
  try {
    current.link = await Console.connect(current.identity, site.mqtt_url, { onState, onStale });
    link("connected", LINK_WORDS.connected);
  } catch (e) {
    link("failed", `not connected: ${sentence(e, "send")}`);
  }
}

/** @param {import("@sealrelay/sdk/console").LinkState} s */
function onState(s) {
  if (s.state === "connected") return link("connected", LINK_WORDS.connected);
  if (s.state === "reconnecting") {
    // Three tries without luck is no restart: say the broker cannot be reached.
    if ((s.attempt ?? 0) >= 3) return link("reconnecting", LINK_WORDS.unreachable);
    // Each retry reports again, without the reason the broker gave when it went: keep that.
    if ($("link").dataset.state === "reconnecting" && !s.reason) return;
    return link("reconnecting", s.reason === "server_shutdown" ? LINK_WORDS.server_shutdown : LINK_WORDS.reconnecting);
  }
  if (s.state === "refused") return logout(`The broker refused this login (${s.reason ?? `code 0x${(s.code ?? 0).toString(16)}`}): log in again.`);
  const why = SIGN_OUT_WORDS[s.reason ?? ""] ?? SIGN_OUT_WORDS["*"];
  logout(why, s.reason === "password_reset" ? "reset" : s.reason === "credentials_changed" ? "rollback" : null);
}

/** @param {import("@sealrelay/sdk/console").StaleMessage} m */
function onStale({ from, error }) {
  say($("stale-alert"),
    `A message from ${from} was sealed to your previous key (witness ${error.sealedTo}); your key is now ${error.current}. ` +
    "It cannot be opened, by design. Re-enrol that instance so it learns your new key.");
}

/**
 * Re-reads the keyring and the instance list and redraws them, loudly refusing any key that
 * is not the pinned one.
 */
async function refresh() {
  if (!session) return;
  // Another tab of this user may have pinned or dropped an instance since.
  if (await session.identity.refreshKeyring(api)) rememberKeyring(session.identity);
  const instances = await session.identity.instances(api);
  session.instances = instances;
  const body = /** @type {HTMLTableSectionElement} */ ($("instances").querySelector("tbody"));
  body.replaceChildren(...instances.map(row));
  $("no-instances").hidden = instances.length > 0;
  // The "re-enrol" notice belongs to instances holding the previous key: it goes with them.
  if (!instances.some((i) => i.stale_owner_key)) say($("stale-alert"), null);
  const mismatched = instances.filter((i) => i.pin === "mismatch");
  say($("pin-alert"), mismatched.length
    ? mismatched.map((i) => `KEY MISMATCH for instance ${i.id}: the server now serves a key with witness ${i.witness}, but you pinned ${i.pinnedWitness}. ` +
      "This console refuses to use it. Either the server is substituting keys or the instance was re-enrolled elsewhere: compare witnesses out of band before anything else.").join("\n")
    : null);
  const to = /** @type {HTMLSelectElement} */ (form("send-form").elements.namedItem("to"));
  const usable = instances.filter((i) => i.pin === "pinned" && !i.stale_owner_key);
  to.replaceChildren(...usable.map((i) => new Option(`${i.name ?? `${i.id.slice(0, 8)}…`} (${i.witness}) · ${i.online ? "online" : "offline"}`, i.id)));
  // A conversation is headed by the name its instance has now.
  for (const section of $("conversation").children) {
    const id = /** @type {HTMLElement} */ (section).dataset.id ?? "";
    /** @type {HTMLElement} */ (section.querySelector("h3")).textContent = threadTitle(id);
  }
  /** @type {HTMLButtonElement} */ (form("send-form").querySelector("button")).disabled = usable.length === 0;
}

/**
 * How an instance is called in sentences: its name and id, or its id.
 * @param {import("@sealrelay/sdk/identity").InstanceEntry} i
 */
const called = (i) => (i.name ? `"${i.name}" (${i.id})` : i.id);

/**
 * The heading of the conversation with instance `id`: its name now, or its short id.
 * @param {string} id
 */
function threadTitle(id) {
  const name = session?.instances.find((i) => i.id === id)?.name;
  return name ?? `Instance ${id.slice(0, 8)}…`;
}

/**
 * @param {import("@sealrelay/sdk/identity").InstanceEntry} i
 */
function seen(i) {
  if (i.online) return "online";
  if (!i.last_seen) return "never connected";
  return `last seen ${new Date(i.last_seen * 1000).toLocaleString()}`;
}

/**
 * @param {import("@sealrelay/sdk/identity").InstanceEntry} i
 */
function row(i) {
  const tr = document.createElement("tr");
  tr.dataset.id = i.id;
  /** @param {string} text @param {string} [cls] */
  const cell = (text, cls) => {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    tr.append(td);
    return td;
  };
  const who = cell(i.name ?? "", "name");
  who.append(el("code", i.id));
  who.title = `witness ${i.witness}`;
  if (i.stale_owner_key) cell("stale key: it holds your previous key — re-enrol it", "stale");
  else cell(i.pin === "pinned" ? `pinned (${i.witness})` : i.pin === "unpinned" ? "not pinned" : "MISMATCH", `pin-${i.pin}`);
  cell(seen(i));
  const actions = cell("");
  /** @param {string} label @param {() => Promise<unknown>} act */
  const button = (label, act) => {
    const b = document.createElement("button");
    b.className = "secondary";
    b.textContent = label;
    b.addEventListener("click", () => guarded(act));
    actions.append(b, " ");
  };
  button("Re-enrol", async () => {
    if (!session || !confirm(`Re-enrol instance ${called(i)}?\n\nIts current token stops working at once: the running agent is disconnected and must be started again with the new token shown next.`)) return;
    await showToken(i.id, await session.identity.reenrolInstance(api, i.id));
  });
  button("Rename", async () => {
    if (!session) return;
    const name = prompt(`A name for instance ${i.id} (kept sealed in your keyring: the server never learns it; empty for none):`, i.name ?? "");
    if (name === null) return;
    await session.identity.renameInstance(api, i.id, name);
    await refresh();
  });
  button("Remove", async () => {
    if (!session || !confirm(`Remove instance ${called(i)}?\n\nIts token and its key are deleted: the running agent is disconnected for good. To use that machine again, add it as a new instance.`)) return;
    await session.identity.removeInstance(api, i.id);
    await refresh();
  });
  return tr;
}

/** @param {number | null | undefined} unix */
const at = (unix) => (unix ? new Date(unix * 1000).toLocaleString() : "never");

/**
 * An element with text content only (nothing from the server is ever parsed as HTML).
 * @param {string} tag
 * @param {string} [text]
 * @param {(Node | string)[]} [children]
 */
function el(tag, text, children = []) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  e.append(...children);
  return e;
}

/**
 * A table of `rows` under `head`, scrolling sideways on its own when the screen is narrow.
 * @param {string[]} head
 * @param {(string | number)[][]} rows
 */
function table(head, rows) {
  const wrap = el("div", undefined, [el("table", undefined, [
    el("thead", undefined, [el("tr", undefined, head.map((h) => el("th", h)))]),
    el("tbody", undefined, rows.map((r) => el("tr", undefined, r.map((v) => el("td", String(v)))))),
  ])]);
  wrap.className = "scroll";
  // A region that scrolls must be reachable by keyboard to be scrolled.
  wrap.tabIndex = 0;
  return wrap;
}

/** Fetches what the server holds about this user and its instances, and shows it. */
async function showActivity() {
  if (!session) return;
  say($("activity-error"), null);
  let report;
  try {
    report = await session.identity.activity(api);
  } catch (e) {
    return say($("activity-error"), `Could not read it: ${sentence(e, "activity")}`);
  }
  /** @param {any} p */
  const principal = (p) => {
    const section = el("section");
    section.dataset.id = p.id;
    section.append(
      el("h3", `${p.kind === "user" ? "Your account" : "Instance"} ${p.login}`),
      el("p", `id ${p.id} · witness ${p.witness} · created ${at(p.created_at)} · key last changed ${at(p.changed_at)} · last seen ${at(p.last_seen)}`),
      el("p", `stored (size and SHA-256, never the bytes): ${p.stored.map((/** @type {any} */ b) => `${b.column} ${b.bytes} B ${b.sha256.slice(0, 16)}…`).join(", ")}`),
      el("h4", `Sessions (${p.sessions.length})`),
      table(
        ["address", "via", "client id", "state", "connected", "until", "envelopes in / out", "wire bytes in / out"],
        p.sessions.map((/** @type {any} */ x) => [
          x.ip,
          x.transport ? `${x.transport} ${x.protocol_version}` : "-",
          x.client_id ?? "-",
          x.sessions > 1 ? `${x.close_reason} ×${x.sessions}` : x.close_reason,
          at(x.connected_at),
          at(x.disconnected_at),
          `${x.messages_in} / ${x.messages_out}`,
          `${x.wire_bytes_in} / ${x.wire_bytes_out}`,
        ]),
      ),
      el("h4", `Usage per hour (${p.usage.length})`),
      table(
        ["hour", "sessions", "envelopes in / out", "envelope bytes in / out", "wire bytes in / out"],
        p.usage.map((/** @type {any} */ u) => [
          at(u.hour_start),
          u.sessions,
          `${u.messages_in} / ${u.messages_out}`,
          `${u.bytes_in} / ${u.bytes_out}`,
          `${u.wire_bytes_in} / ${u.wire_bytes_out}`,
        ]),
      ),
      el("h4", `Failed logins against this name (${p.login_failures.length})`),
      table(
        ["hour", "from", "why", "how many", "last"],
        p.login_failures.map((/** @type {any} */ f) => [at(f.hour_start), f.ip, f.reason, f.failures, at(f.last_at)]),
      ),
    );
    return section;
  };
  $("activity").replaceChildren(
    el("p", `As of ${at(report.generated_at)}, from ${at(report.since)} on.`),
    ...report.principals.map(principal),
    ...report.held.map((/** @type {any} */ h) => el("p", `Kept until ${at(h.expires_at)}: ${h.what}.`)),
  );
  $("activity").hidden = false;
}

/**
 * Runs an action on the instances, showing its failure under their buttons.
 * @param {() => Promise<unknown>} act
 */
async function guarded(act) {
  try {
    await act();
    say($("instances-error"), null);
    if (session) rememberKeyring(session.identity);
  } catch (e) {
    say($("instances-error"), sentence(e, "instances"));
  }
}

/** @param {Date} [when] */
const clock = (when = new Date()) => when.toLocaleTimeString();

/**
 * The conversation with instance `id`, moved to the top: the most recent first.
 * @param {string} id
 */
function thread(id) {
  let section = [...$("conversation").children].find((s) => /** @type {HTMLElement} */ (s).dataset.id === id);
  if (!section) {
    section = el("section", undefined, [el("h3", threadTitle(id)), el("ol")]);
    section.className = "thread";
    /** @type {HTMLElement} */ (section).dataset.id = id;
  }
  $("conversation").prepend(section);
  return /** @type {HTMLOListElement} */ (section.querySelector("ol"));
}

/**
 * One request in its conversation, oldest first: what was sent and when, then its state
 * (sending, sent, answered, failed) and the reply with its time.
 * @param {string} id
 * @param {string} message
 */
function exchange(id, message) {
  const status = el("p");
  status.className = "status";
  const li = el("li", undefined, [el("p", undefined, [el("time", clock()), ` → ${message}`]), status]);
  li.className = "exchange";
  thread(id).append(li);
  /** @param {"sending" | "sent" | "answered" | "failed"} state @param {string} text */
  const set = (state, text) => {
    li.dataset.state = state;
    status.textContent = text;
  };
  set("sending", "sending…");
  return {
    set,
    /** @param {string} text */
    reply(text) {
      const reply = el("p", undefined, [el("time", clock()), ` ← ${text}`]);
      reply.className = "reply";
      status.before(reply);
      set("answered", "answered");
    },
  };
}

/**
 * @param {string} id
 * @param {string} token
 */
function showToken(id, token) {
  $("token-for").textContent = id;
  $("token-text").textContent = token;
  // The command names this broker's own addresses; the token stays out of it (a command
  // line lands in shell history and process lists).
  $("token-command").textContent =
    `sealrelay agent --server ${location.origin} --broker ${site.mqtt_url ?? "<this broker's MQTT URL>"} --token-file sealrelay-token`;
  $("token-status").dataset.state = "waiting";
  $("token-status").textContent = "Waiting for the instance to connect…";
  $("token-box").hidden = false;
  // Focused, so a screen reader reads the token and what to do with it.
  $("token-box").focus();
  watchToken(id);
  return refresh();
}

/**
 * Refreshes every two seconds while the token box shows `id`, until the instance connects:
 * then the box says so.
 * @param {string} id
 */
function watchToken(id) {
  const timer = setInterval(async () => {
    const current = session;
    if (!current || $("token-box").hidden || $("token-for").textContent !== id) return clearInterval(timer);
    await refresh().catch(() => {});
    if (current.instances.some((i) => i.id === id && i.online)) {
      clearInterval(timer);
      $("token-status").dataset.state = "online";
      $("token-status").textContent = "Online: the instance is connected.";
    }
  }, 2_000);
}

/** The sessionStorage entry naming who is signed in on this tab (a name, never a secret). */
const SIGNED_IN = "sealrelay.signed-in-as";

/**
 * Ends the session: closes the link, zeroes the private key, clears every view of it.
 * @param {string | null} [message]
 * @param {"reset" | "rollback" | null} [offer] the form to open under the message
 */
function logout(message = null, offer = null) {
  const ending = session;
  session = null;
  sessionStorage.removeItem(SIGNED_IN);
  ending?.link?.close();
  ending?.identity.wipe();
  $("instances").querySelectorAll("tbody > tr").forEach((n) => n.remove());
  $("conversation").replaceChildren();
  say($("instances-error"), null);
  $("activity").replaceChildren();
  $("activity").hidden = true;
  say($("activity-error"), null);
  $("token-text").textContent = "";
  $("token-box").hidden = true;
  for (const f of document.forms) f.reset();
  /** @type {HTMLInputElement} */ ($("new-instance-name")).value = "";
  say($("pin-alert"), null);
  say($("stale-alert"), null);
  say($("password-result"), null);
  for (const id of ["register-error", "reset-error", "rollback-error"]) say($(id), null);
  say($("login-error"), message);
  // The form that answers the message, open: a reset code, or undoing a change.
  /** @type {HTMLDetailsElement} */ ($("reset")).open = offer === "reset";
  /** @type {HTMLDetailsElement} */ ($("rollback")).open = offer === "rollback";
  link(message ? "signed_out" : "idle", message ? LINK_WORDS.signed_out : LINK_WORDS.idle);
  show("login");
  field(form("login-form"), "name").focus();
}

/**
 * Reads a form's fields and clears the password ones at once, before any await.
 * @param {HTMLFormElement} f
 * @param {string[]} names
 */
function take(f, ...names) {
  const values = names.map((n) => field(f, n).value);
  for (const input of f.querySelectorAll("input[type=password]")) /** @type {HTMLInputElement} */ (input).value = "";
  // The strength hint follows the (now empty) field.
  f.dispatchEvent(new Event("input"));
  return values;
}

/** @param {HTMLFormElement} f @param {(ev: SubmitEvent) => Promise<void>} handler */
function onSubmit(f, handler) {
  f.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const buttons = f.querySelectorAll("button");
    buttons.forEach((b) => (b.disabled = true));
    try {
      await handler(/** @type {SubmitEvent} */ (ev));
    } finally {
      buttons.forEach((b) => (b.disabled = false));
    }
  });
}

function wire() {
  onSubmit(form("login-form"), async () => {
    const [name, password] = take(form("login-form"), "name", "password");
    say($("login-error"), null);
    link("connecting", LINK_WORDS.unlocking);
    try {
      await enter(await Identity.login(api, name, password));
    } catch (e) {
      link("idle", LINK_WORDS.idle);
      say($("login-error"), sentence(e, "login"));
    }
  });

  const registration = form("register-form");
  hintStrength(registration, "register-strength", () => field(registration, "name").value);
  onSubmit(registration, async () => {
    const name = field(registration, "name").value;
    const chosen = newPassword(registration, name);
    const invite = field(registration, "invite").value;
    if (chosen.refused !== undefined) return say($("register-error"), chosen.refused);
    say($("register-error"), null);
    link("connecting", LINK_WORDS.creating);
    try {
      await enter(await Identity.register(api, name, chosen.password, { invite }));
      registration.reset();
    } catch (e) {
      link("idle", LINK_WORDS.idle);
      say($("register-error"), sentence(e, "register"));
    }
  });
  $("show-register").addEventListener("click", () => {
    say($("login-error"), null);
    say($("login-note"), null);
    show("register");
    field(registration, "name").focus();
  });
  $("show-login").addEventListener("click", () => {
    say($("register-error"), null);
    show("login");
    field(form("login-form"), "name").focus();
  });

  const reset = form("reset-form");
  hintStrength(reset, "reset-strength", () => field(reset, "name").value);
  onSubmit(reset, async () => {
    const [name, code] = [field(reset, "name").value, field(reset, "code").value];
    const chosen = newPassword(reset, name);
    if (chosen.refused !== undefined) return say($("reset-error"), chosen.refused);
    field(reset, "code").value = "";
    say($("reset-error"), null);
    try {
      const { identity, staleInstances } = await Identity.completeReset(api, name, code, chosen.password);
      /** @type {HTMLDetailsElement} */ ($("reset")).open = false;
      await enter(identity, staleInstances);
    } catch (e) {
      say($("reset-error"), sentence(e, "reset"));
    }
  });

  onSubmit(form("rollback-form"), async () => {
    const [name, password] = take(form("rollback-form"), "name", "password");
    say($("rollback-error"), null);
    link("connecting", "unlocking your previous key…");
    try {
      const { identity } = await Identity.rollBack(api, name, password);
      /** @type {HTMLDetailsElement} */ ($("rollback")).open = false;
      await enter(identity);
    } catch (e) {
      link("idle", LINK_WORDS.idle);
      say($("rollback-error"), sentence(e, "rollback"));
    }
  });

  onSubmit(form("send-form"), async () => {
    const [to, message] = take(form("send-form"), "to", "message");
    field(form("send-form"), "message").value = "";
    const shown = exchange(to, message);
    if (!session?.link) return shown.set("failed", "Not sent: not connected to the broker. Wait for the link to come back, or log in again.");
    try {
      const reply = await session.link.request(to, new TextEncoder().encode(message), 10_000, () => shown.set("sent", "sent, waiting for the reply…"));
      shown.reply(new TextDecoder().decode(reply));
    } catch (e) {
      shown.set("failed", sentence(e, "send"));
    }
  });

  hintStrength(form("password-form"), "password-strength", () => session?.identity.login ?? "");
  onSubmit(form("password-form"), async () => {
    const current = session;
    if (!current) return;
    const chosen = newPassword(form("password-form"), current.identity.login);
    if (chosen.refused !== undefined) return say($("password-result"), `${chosen.refused} Nothing changed.`);
    const password = chosen.password;
    // Our own session is closed by the change like every other: end it first, then reconnect
    // with the new secret.
    await current.link?.close();
    current.link = null;
    try {
      await current.identity.changePassword(api, password);
      say($("password-result"), "Password changed: your key is the same, re-wrapped under the new password. Other consoles were signed out.");
    } catch (e) {
      say($("password-result"), `Not changed: ${sentence(e, "password")}`);
    }
    await connect();
  });

  $("add-instance").addEventListener("click", () =>
    guarded(async () => {
      if (!session) return;
      const name = /** @type {HTMLInputElement} */ ($("new-instance-name"));
      const { id, token } = await session.identity.addInstance(api, { name: name.value });
      name.value = "";
      await showToken(c.toHex(id), token);
    }),
  );
  $("token-copy").addEventListener("click", () =>
    guarded(() => navigator.clipboard.writeText($("token-command").textContent ?? "")),
  );
  $("token-done").addEventListener("click", () => {
    $("token-text").textContent = "";
    $("token-box").hidden = true;
  });
  $("refresh").addEventListener("click", () => guarded(refresh));
  $("activity-show").addEventListener("click", () => showActivity());
  $("logout").addEventListener("click", () => logout());
}

async function boot() {
  await c.ready();
  site = await fetch("/console.json").then((r) => r.json());
  wire();
  $("booting").hidden = true;
  show("login");
  // A reload drops the key this page held in memory: say so, rather than seem to forget.
  const was = sessionStorage.getItem(SIGNED_IN);
  sessionStorage.removeItem(SIGNED_IN);
  if (was) {
    field(form("login-form"), "name").value = was;
    say($("login-note"), "Reloading the page signed you out: this console keeps your key in its memory only, never in the browser's storage. Log in again.");
    field(form("login-form"), "password").focus();
  }
}

boot().catch((e) => say($("booting"), `The console could not start: ${sentence(e, "login")}`));
