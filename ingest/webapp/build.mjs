// Build the vidup webapp: bundle src/main.js and src/app.css with content-hashed names, copy
// the hls.js worker and the icon (hashed too), and write index.html + manifest.json.
//
//   node build.mjs                      → ../vidup_ingest/webapp/static/ (relative to this file)
//   VIDUP_WEBAPP_OUT=/some/dir node build.mjs
//
// The output directory is emptied first. Its files are flat: the server serves index.html at
// GET / and every other file at GET /app/<file>, so index.html refers to them as "app/<file>"
// (relative, so the page also works under an ingress path prefix).

import { createHash } from 'node:crypto';
import { mkdir, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { basename, dirname, extname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import * as esbuild from 'esbuild';

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);
const outDir = process.env.VIDUP_WEBAPP_OUT
  ? resolve(process.env.VIDUP_WEBAPP_OUT)
  : resolve(here, '../vidup_ingest/webapp/static');
const URL_PREFIX = 'app/';

function contained(parent, child) {
  const rel = relative(parent, child);
  return rel === '' || (!rel.startsWith('..') && !isAbsolute(rel));
}

/** Refuse to empty a directory that holds the sources (or the filesystem root). */
function checkOutDir(dir) {
  if (dir === resolve(sep) || contained(dir, here) || contained(join(here, 'src'), dir) || contained(join(here, 'node_modules'), dir)) {
    throw new Error(`refusing to empty ${dir}: choose a dedicated output directory (VIDUP_WEBAPP_OUT)`);
  }
}

const hashOf = (data) => createHash('sha256').update(data).digest('hex');

/** Write `data` as <stem>-<hash><ext> in the output dir; returns the file name. */
async function emitHashed(stem, ext, data) {
  const name = `${stem}-${hashOf(data).slice(0, 10)}${ext}`;
  await writeFile(join(outDir, name), data);
  return name;
}

async function main() {
  const started = performance.now();
  checkOutDir(outDir);
  await rm(outDir, { recursive: true, force: true });
  await mkdir(outDir, { recursive: true });

  // hls.js transmuxes in a worker loaded from our own origin (no blob: worker under the CSP).
  const workerSource = await readFile(require.resolve('hls.js/dist/hls.worker.js'), 'utf8');
  const worker = await emitHashed('hls.worker', '.js', workerSource.replace(/\n?\/\/# sourceMappingURL=\S+\s*$/, '\n'));
  const favicon = await emitHashed('favicon', '.svg', await readFile(join(here, 'src/favicon.svg')));

  const result = await esbuild.build({
    absWorkingDir: here,
    entryPoints: [
      { in: 'src/main.js', out: 'app' },
      { in: 'src/app.css', out: 'app' },
    ],
    outdir: outDir,
    entryNames: '[name]-[hash]',
    chunkNames: '[name]-[hash]',
    splitting: true, // hls.js is a dynamic import: its own file, loaded on demand
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2020',
    minify: true,
    sourcemap: true,
    metafile: true,
    charset: 'utf8',
    legalComments: 'eof',
    define: { __HLS_WORKER__: JSON.stringify(worker) },
    logLevel: 'warning',
  });

  const outputs = Object.entries(result.metafile.outputs);
  const outputFor = (entry, ext) => {
    const found = outputs.find(([file, meta]) => meta.entryPoint === entry && file.endsWith(ext));
    if (!found) throw new Error(`esbuild produced no ${ext} output for ${entry}`);
    return basename(found[0]);
  };
  const appJs = outputFor('src/main.js', '.js');
  const appCss = outputFor('src/app.css', '.css');
  // Chunks app.js imports statically (shared helpers): preload them, no request waterfall.
  const jsMeta = outputs.find(([file]) => basename(file) === appJs)[1];
  const preload = jsMeta.imports
    .filter((imp) => imp.kind === 'import-statement' && !imp.external)
    .map((imp) => `<link rel="modulepreload" href="${URL_PREFIX}${basename(imp.path)}">`)
    .join('\n  ');

  const substitutions = {
    '%APP_JS%': URL_PREFIX + appJs,
    '%APP_CSS%': URL_PREFIX + appCss,
    '%FAVICON%': URL_PREFIX + favicon,
    '%PRELOAD%': preload,
  };
  let html = await readFile(join(here, 'src/index.html'), 'utf8');
  html = html.replace(/%[A-Z_]+%/g, (placeholder) => {
    if (!(placeholder in substitutions)) throw new Error(`src/index.html: unknown placeholder ${placeholder}`);
    return substitutions[placeholder];
  });
  await writeFile(join(outDir, 'index.html'), html);

  const files = [];
  for (const name of (await readdir(outDir)).sort()) {
    const data = await readFile(join(outDir, name));
    files.push({ name, bytes: data.length, sha256: hashOf(data) });
  }
  const manifest = {
    description: 'vidup webapp build: serve index.html at / and every other file at /app/<name>',
    url_prefix: URL_PREFIX,
    index: 'index.html',
    entrypoints: { 'app.js': appJs, 'app.css': appCss, 'hls.worker.js': worker, 'favicon.svg': favicon },
    // Names with a content hash never change content: serve them with a long, immutable cache.
    immutable: [...outputs.map(([file]) => basename(file)), worker, favicon].sort(),
    files,
  };
  await writeFile(join(outDir, 'manifest.json'), `${JSON.stringify(manifest, null, 2)}\n`);

  const width = Math.max(...files.map((f) => f.name.length), 'manifest.json'.length);
  console.log(`vidup webapp → ${outDir}`);
  for (const { name, bytes } of [...files, { name: 'manifest.json', bytes: (await stat(join(outDir, 'manifest.json'))).size }]) {
    const gz = ['.js', '.css', '.html', '.svg'].includes(extname(name)) ? `  (gzip ${kb(gzipSync(await readFile(join(outDir, name)), { level: 9 }).length)})` : '';
    console.log(`  ${name.padEnd(width)}  ${kb(bytes).padStart(9)}${gz}`);
  }
  console.log(`built in ${Math.round(performance.now() - started)} ms`);
}

const kb = (bytes) => `${(bytes / 1024).toFixed(1)} KiB`;

main().catch((err) => {
  console.error(err?.message || err);
  process.exit(1);
});
