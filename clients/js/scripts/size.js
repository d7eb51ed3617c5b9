// Prints the SDK's size as an app ships it: bundled, minified (esbuild) and gzipped (level 9).
import { build } from "esbuild";
import { gzipSync } from "node:zlib";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
for (const [name, entry, external] of [
  ["@kuda/client", "src/index.js", []],
  ["@kuda/client/react", "react/index.js", ["react", "../src/index.js"]],
]) {
  const out = await build({ entryPoints: [root + entry], bundle: true, minify: true, format: "esm", write: false, external, target: "es2020" });
  const code = out.outputFiles[0].contents;
  console.log(`${name}: ${code.length} bytes minified, ${gzipSync(code, { level: 9 }).length} bytes gzipped`);
}
