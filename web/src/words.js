// What the console says when something fails: one sentence per API error code (docs/http-api.md)
// and per action the user was taking, per MQTT refusal and per state of the link, in the user's
// words and saying what to do. docs/console.md carries the same table; web/test/words.test.mjs
// fails when the two differ or when the API has a code this table does not answer.
//
// Uses the SDK's error classes only; no DOM, so Node tests it without a browser.

import { ApiError, KeyringRollbackError, NotConnectedError, NotPinnedError, PinMismatchError } from "@sealrelay/sdk";

/**
 * What the user was doing: the form or button the sentence is shown next to.
 * @typedef {"login" | "register" | "reset" | "rollback" | "password" | "instances" | "activity" | "send"} Doing
 */

/**
 * API error code → sentence, by what the user was doing (`*`: anything else). Codes the console
 * cannot cause (`not_operator`, `method_not_allowed`) still have words: a different server may.
 * @type {Record<string, Partial<Record<Doing | "*", string>>>}
 */
export const API_WORDS = {
  bad_request: {
    register: "That name cannot be used: choose 1 to 64 characters of letters, digits and . _ @ - (not 32 hex digits).",
    "*": "The server could not use what this page sent: the page may be older than the server. Reload it and try again.",
  },
  unauthorized: {
    login: "Wrong name or password.",
    rollback: "Wrong name or password.",
    "*": "The server no longer takes this session's login (the password was changed or reset elsewhere): log in again.",
  },
  forbidden: {
    register: "This server registers by invitation: enter the invite code the operator gave you (it works once).",
    reset: "That reset code is wrong, used or expired: ask the operator for a new one.",
    rollback: "There is nothing to undo with that password: it is not the one before the last change, or the change is too old.",
    password: "The server refused the change: log out, log in again and retry.",
    instances: "The server refused: you may already have as many instances as the operator allows. Remove one first.",
    "*": "The server does not allow this for your account.",
  },
  not_found: {
    instances: "That instance no longer exists: it was removed, perhaps in another tab. Refresh to see the current list.",
    "*": "The server has no such thing any more: refresh, or log in again.",
  },
  conflict: {
    register: "That name is taken: choose another.",
    "*": "That already exists on the server: refresh and try again.",
  },
  keyring_conflict: {
    "*": "Another console of yours kept changing your instances at the same moment: refresh and try again.",
  },
  payload_too_large: {
    "*": "That is larger than the server takes.",
  },
  request_timeout: {
    "*": "The request reached the server too slowly and was dropped: check the connection and try again.",
  },
  rate_limited: {
    login: "Too many failed attempts: wait a minute and try again.",
    rollback: "Too many failed attempts: wait a minute and try again.",
    "*": "Too many attempts from this address: wait a while and try again.",
  },
  unavailable: {
    "*": "The server cannot reach its database right now: nothing changed. Try again in a minute.",
  },
  storage_full: {
    "*": "The server could not save it (its storage is full): nothing changed. Try again later, or tell the operator.",
  },
  not_operator: {
    "*": "That needs the operator's token, which this console does not use.",
  },
  method_not_allowed: {
    "*": "The server does not take this request: the page may be older than the server. Reload it.",
  },
};

/** PUBACK 0x10 (SDK `NotConnectedError`): nobody to deliver to, nothing kept. */
export const OFFLINE = "Not delivered: the instance is offline.";

/** The browser could not reach the server at all (fetch threw): down, restarting, or offline. */
export const UNREACHABLE = "Cannot reach the broker: it may be down or restarting, or this device is offline. Try again in a moment.";

/**
 * MQTT 5 PUBACK refusals of one message (protocol §5.5) → sentence.
 * @type {Record<number, string>}
 */
export const PUBACK_WORDS = {
  0x87: "Refused by the broker: this instance is not paired with you any more.",
  0x97: "The instance has more waiting than it may hold: try again when it has caught up.",
  0x99: "Refused by the broker as malformed: reload the page.",
};

/**
 * The link's states (SDK `LinkState`, protocol §5.5) → what the badge says.
 * @type {Record<string, string>}
 */
export const LINK_WORDS = {
  unlocking: "unlocking your key…",
  creating: "creating your key…",
  connecting: "connecting…",
  connected: "connected",
  reconnecting: "reconnecting…",
  server_shutdown: "broker restarting: reconnecting…",
  unreachable: "cannot reach the broker's MQTT over WebSocket: still trying every few seconds…",
  no_mqtt_url: "this broker serves no MQTT over WebSocket (wss) for the console at this address: open the console by a name its certificate covers, or set https.console_mqtt_url",
  refused: "the broker refused this login: log in again",
  signed_out: "signed out",
  idle: "not connected",
};

/**
 * Why the broker ended the session (DISCONNECT reason strings, protocol §5.5) → what the login
 * form says after it.
 * @type {Record<string, string>}
 */
export const SIGN_OUT_WORDS = {
  password_reset: "An operator reset your password: your key is being replaced. Enter the reset code you were given to set a new password.",
  credentials_changed:
    "Your password was changed in another console: log in with the new one. If that was not you, undo it below with the password you know (\"Someone changed my password\"), then change it.",
  password_rolled_back: "A change of your password was undone by the holder of the password before it: log in with that one.",
  account_deleted: "This account was deleted.",
  taken_over: "This account connected again elsewhere with the same session.",
  "*": "The broker ended this session: log in again.",
};

/**
 * One sentence for `error`, which came while the user was `doing` something.
 * @param {unknown} error
 * @param {Doing} doing
 */
export function sentence(error, doing) {
  if (error instanceof ApiError) {
    const words = API_WORDS[error.code];
    return words?.[doing] ?? words?.["*"] ?? `The server refused (HTTP ${error.status}): try again, or reload the page.`;
  }
  // fetch rejects with a TypeError, whatever the browser's wording, when nothing answered.
  if (error instanceof TypeError) return UNREACHABLE;
  if (error instanceof NotConnectedError) return OFFLINE;
  const code = /** @type {any} */ (error)?.code;
  if (doing === "send" && typeof code === "number" && PUBACK_WORDS[code]) return PUBACK_WORDS[code];
  if (error instanceof KeyringRollbackError || error instanceof PinMismatchError || error instanceof NotPinnedError) return `Refused: ${error.message}.`;
  const message = error instanceof Error ? error.message : String(error);
  if (doing === "send" && message.startsWith("no reply from")) return "No reply within 10 s: the broker delivered it, but the instance did not answer.";
  return message.charAt(0).toUpperCase() + message.slice(1);
}
