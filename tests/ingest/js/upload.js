// Drive tus-js-client (the real npm package) for the ingest tests.
// Usage: node upload.js '<json options>'; prints one JSON line: {done|aborted|error, url}.
'use strict';
const fs = require('fs');
const tus = require('tus-js-client');

const opts = JSON.parse(process.argv[2]);
const data = fs.readFileSync(opts.file);
let stopped = false;

function out(result) {
  process.stdout.write(JSON.stringify(result) + '\n');
}

const upload = new tus.Upload(data, {
  endpoint: opts.endpoint,
  uploadUrl: opts.uploadUrl || null,
  headers: opts.headers || {},
  chunkSize: opts.chunkSize || Infinity,
  parallelUploads: opts.parallel || 1,
  metadata: opts.metadata || {},
  uploadDataDuringCreation: Boolean(opts.withUpload),
  storeFingerprintForResuming: false,
  retryDelays: null,
  onProgress(sent) {
    if (opts.stopAfter && sent >= opts.stopAfter && !stopped) {
      stopped = true;
      // abort() tears down the request in flight: the server sees a cut connection mid-PATCH.
      upload.abort(false).then(() => out({ aborted: true, url: upload.url }));
    }
  },
  onSuccess() {
    out({ done: true, url: upload.url });
  },
  onError(err) {
    out({ error: String(err), url: upload.url });
    process.exitCode = 1;
  },
});
upload.start();
