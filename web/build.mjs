// Builds web/dist from web/src: the page, its style sheet, and one script bundling the console
// with the SDK, libsodium (WebAssembly inlined) and MQTT.js, so the content security policy
// can allow 'self' and nothing else. The broker compiles web/dist into its binary; the output
// is committed, and .ci/run rebuilds it and fails if it differs.
import { build } from "esbuild";
import { copyFile, mkdir } from "node:fs/promises";

const here = new URL(".", import.meta.url).pathname;
await mkdir(`${here}dist`, { recursive: true });
await build({
  entryPoints: [`${here}src/app.js`],
  outfile: `${here}dist/console.js`,
  bundle: true,
  format: "esm",
  platform: "browser",
  target: "es2022",
  minify: true,
  legalComments: "eof",
  logLevel: "warning",
});
for (const file of ["index.html", "console.css", "favicon.svg"]) await copyFile(`${here}src/${file}`, `${here}dist/${file}`);
