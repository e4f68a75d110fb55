// Builds web/dist from web/src: the page, its style sheet, its icon and one script bundling the
// console with the SDK, libsodium (WebAssembly inlined) and MQTT.js, so the content security
// policy can allow 'self' and nothing else. The broker compiles web/dist into its binary; the
// output is committed, and .ci/run rebuilds it and fails if it differs.
//
// A visit should cost one small revalidated page: every file but the page is served at a path
// naming its content's hash (cached as immutable: a new build is a new path), each file comes
// precompressed (gzip and brotli, at their best), and `assets.json` tells the broker which
// path serves which file and the page's ETag. File names in dist stay fixed, so the broker's
// `include_bytes!` never changes; only the paths in assets.json and index.html do.
import { build } from "esbuild";
import { createHash } from "node:crypto";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { brotliCompressSync, constants, gzipSync } from "node:zlib";

const here = new URL(".", import.meta.url).pathname;
const dist = `${here}dist/`;
await mkdir(dist, { recursive: true });
await build({
  entryPoints: [`${here}src/app.js`],
  outfile: `${dist}console.js`,
  bundle: true,
  format: "esm",
  platform: "browser",
  target: "es2022",
  minify: true,
  legalComments: "eof",
  logLevel: "warning",
});

/** @param {string | Buffer} bytes */
const hash = (bytes) => createHash("sha256").update(bytes).digest("hex").slice(0, 16);

/**
 * Writes `file` into dist with its gzip and brotli forms.
 * @param {string} file
 * @param {Buffer} body
 */
async function emit(file, body) {
  await writeFile(`${dist}${file}`, body);
  await writeFile(`${dist}${file}.gz`, gzipSync(body, { level: 9 }));
  await writeFile(`${dist}${file}.br`, brotliCompressSync(body, { params: { [constants.BROTLI_PARAM_QUALITY]: 11, [constants.BROTLI_PARAM_SIZE_HINT]: body.length } }));
}

const types = {
  "console.js": "text/javascript; charset=utf-8",
  "console.css": "text/css; charset=utf-8",
  "favicon.svg": "image/svg+xml",
};
/** @type {{ path: string, file: string, media_type: string, immutable: boolean }[]} */
const assets = [];
let page = await readFile(`${here}src/index.html`, "utf8");
for (const [file, media_type] of Object.entries(types)) {
  const body = file === "console.js" ? await readFile(`${dist}${file}`) : await readFile(`${here}src/${file}`);
  const [stem, ext] = file.split(".");
  const path = `/${stem}.${hash(body)}.${ext}`;
  assets.push({ path, file, media_type, immutable: true });
  // The page names each file exactly once, as href="file" or src="file".
  const reference = new RegExp(`(href|src)="${file.replace(".", "\\.")}"`, "g");
  if ((page.match(reference) ?? []).length !== 1) throw new Error(`index.html must name ${file} once as href= or src=`);
  page = page.replace(reference, `$1="${path}"`);
  await emit(file, body);
}
const html = Buffer.from(page);
await emit("index.html", html);
assets.unshift({ path: "/", file: "index.html", media_type: "text/html; charset=utf-8", immutable: false });
await writeFile(`${dist}assets.json`, JSON.stringify({ page_etag: `"${hash(html)}"`, assets }, null, 2) + "\n");
