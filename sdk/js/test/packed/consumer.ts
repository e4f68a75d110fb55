// A strict TypeScript program using the SDK as its users get it: `npm pack`'s tarball installed
// into a fresh project (tests/js_sdk.rs builds the project around this file), through the
// package's entries and generated types only. Registers, adds an instance, serves it with the
// JavaScript agent and asks it something through a console.
import { Agent, Api, Console, Identity, crypto } from "@sealrelay/sdk";
import { weakPassword } from "@sealrelay/sdk/password";

const cases: { http: string; ws: string; user: string; password: string } = JSON.parse(process.env.SRTEST_PACKED ?? "{}");
await crypto.ready();
const api = new Api(cases.http);
if (weakPassword(cases.password, cases.user)) throw new Error("the test's password is below the floor");
const me = await Identity.register(api, cases.user, cases.password);
const { id, token } = await me.addInstance(api, { name: "packed" });
const agent = await Agent.login(api, token);
await agent.serve(cases.ws, (request: Uint8Array) => new TextEncoder().encode(`echo: ${new TextDecoder().decode(request)}`));
const link = await Console.connect(me, cases.ws);
const reply = await link.request(crypto.toHex(id), new TextEncoder().encode("hello from a package"));
console.log(new TextDecoder().decode(reply));
await link.close();
await agent.close();
me.wipe();
