// The SDK's one entry: `import { Identity, Console, Agent, crypto } from "@sealrelay/sdk"`.
// Each module is also its own entry (`@sealrelay/sdk/identity`, …) for a bundle that wants
// less. Re-exports only: what each name does is in its module.

export * as crypto from "./crypto.js";
export { Api, ApiError, Identity, KeyringRollbackError, NotPinnedError, PinMismatchError } from "./identity.js";
export { Console, NotConnectedError } from "./console.js";
export { Agent, OwnerKeyChangedError } from "./agent.js";
export { MIN_PASSWORD_CHARS, weakPassword } from "./password.js";
