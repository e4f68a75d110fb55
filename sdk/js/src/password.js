// The floor for a new password, the Rust client's (crates/client/src/password.rs) rule for
// rule and word for word, from the same list of common passwords. The password is all that
// stands between a stolen database and the user's private key, and the server never sees it,
// so only a client can hold this line. Uses nothing but the generated list.

import COMMON from "./common-passwords.js";

/** The fewest characters (Unicode code points) a new password may have. */
export const MIN_PASSWORD_CHARS = 10;

const common = new Set(COMMON);

/**
 * Why `password` may not become the new password of `login`, in the Rust client's words; or
 * null when it clears the floor.
 * @param {string} password
 * @param {string} login
 * @returns {string | null}
 */
export function weakPassword(password, login) {
  const chars = [...password];
  if (chars.length < MIN_PASSWORD_CHARS) {
    return `the new password has ${chars.length} characters; use at least ${MIN_PASSWORD_CHARS} (a few unrelated words make a strong one)`;
  }
  const lower = password.toLowerCase();
  if (common.has(lower)) return "the new password is one of the commonest passwords, the first a guesser tries; choose another";
  const name = login.trim().toLowerCase();
  if ([...name].length >= 3 && lower.includes(name)) return "the new password contains the account name; choose one that does not";
  if (chars.every((ch) => ch === chars[0])) return "the new password is one character repeated; choose another";
  return null;
}
