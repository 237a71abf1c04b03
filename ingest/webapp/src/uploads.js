// tus uploads: one UploadJob per file, at most MAX_ACTIVE sending at once. Resumes uploads
// interrupted by a reload (tus-js-client's fingerprint storage in localStorage), renews the
// token on 401, honours Retry-After on 429 and keeps retrying through lost connections.

import { Upload, defaultOptions as tusDefaults } from 'tus-js-client';
import { SessionEndedError, countdown, retryAfterSeconds } from './api.js';
import { VideoCard } from './card.js';
import { announce, cleanBody, formatBytes, withBody } from './ui.js';

const MiB = 1024 * 1024;
const CHUNK_SIZE = 8 * MiB;
const PARALLEL_FROM = 64 * MiB;
const RETRY_DELAYS = [0, 1000, 3000, 5000, 10000, 20000];
const MAX_ACTIVE = 3;
/** Rounds of our own retrying (after tus-js-client's) before asking the person. */
const MAX_ROUNDS = 30;
const VIDEO_EXT = /\.(mp4|m4v|mov|mkv|webm|avi|wmv|flv|mpe?g|ts|mts|m2ts|3gp|ogv)$/i;

export function isVideoFile(file) {
  return (file.type || '').startsWith('video/') || VIDEO_EXT.test(file.name || '');
}

function statusOf(err) {
  return err?.originalResponse ? err.originalResponse.getStatus() : 0;
}

function bodyOf(err) {
  return cleanBody(err?.originalResponse?.getBody?.() || '');
}

function headerOf(err, name) {
  return err?.originalResponse?.getHeader?.(name) ?? null;
}

function sessionEnded(err) {
  return err instanceof SessionEndedError || err?.causingError instanceof SessionEndedError;
}

/** The last path segment of the upload URL names the video. */
export function videoIdFromUrl(url) {
  try {
    return new URL(url, document.baseURI).pathname.split('/').filter(Boolean).pop() || null;
  } catch {
    return null;
  }
}

export class Uploader {
  /**
   * @param {import('./api.js').Session} session
   * @param {{ addCard: (card: VideoCard) => void, onUploaded: (job: UploadJob, videoId: string|null) => void,
   *           onUploadUrl?: (job: UploadJob, videoId: string) => void, onRemoved?: (job: UploadJob) => void,
   *           onPlay: (doc: object) => void }} hooks
   */
  constructor(session, hooks) {
    this.session = session;
    this.hooks = hooks;
    this.jobs = new Set();
    this.waiting = [];
    this.active = new Set();
    this.maxSize = null; // Tus-Max-Size, per upload endpoint
    this.maxSizeFor = '';
  }

  /**
   * Queue files; returns how many were skipped. `onlyVideos` skips files that don't look like
   * video (for drops; what the person picked in the file dialog is theirs to choose, and the
   * server reports media it can't read as InvalidMedia).
   */
  add(fileList, { onlyVideos = false } = {}) {
    let rejected = 0;
    for (const file of Array.from(fileList || [])) {
      if (onlyVideos && !isVideoFile(file)) {
        rejected += 1;
        continue;
      }
      const card = new VideoCard({ filename: file.name, size: file.size, onPlay: this.hooks.onPlay });
      const job = new UploadJob(this, file, card);
      this.jobs.add(job);
      this.hooks.addCard(card);
      this.request(job);
    }
    return rejected;
  }

  /** Ask for a sending slot; the job starts now or when one frees up. */
  request(job) {
    if (this.active.has(job) || this.waiting.includes(job)) return;
    if (this.active.size < MAX_ACTIVE) {
      this.active.add(job);
      job.run();
    } else {
      this.waiting.push(job);
      job.waitForSlot();
    }
  }

  release(job) {
    this.active.delete(job);
    this.waiting = this.waiting.filter((j) => j !== job);
    while (this.active.size < MAX_ACTIVE && this.waiting.length) {
      const next = this.waiting.shift();
      this.active.add(next);
      next.run();
    }
  }

  forget(job) {
    this.release(job);
    this.jobs.delete(job);
  }

  /** Stop everything without deleting anything on the server (sign-out): resumable later. */
  stopAll() {
    for (const job of this.jobs) job.stop();
    this.jobs.clear();
    this.waiting = [];
    this.active.clear();
  }

  /** Resume uploads that stopped because the sign-in ended. */
  resumeAfterSignIn() {
    for (const job of this.jobs) if (job.state === 'signed-out') job.resume();
  }

  /** Tus-Max-Size from OPTIONS on the endpoint (null if unknown). Cached per endpoint. */
  async fetchMaxSize() {
    const endpoint = this.session.uploadUrl;
    if (this.maxSizeFor === endpoint) return this.maxSize;
    try {
      const res = await fetch(endpoint, {
        method: 'OPTIONS',
        headers: { Authorization: `Bearer ${await this.session.validToken()}`, 'Tus-Resumable': '1.0.0' },
        cache: 'no-store',
      });
      const max = Number.parseInt(res.headers.get('Tus-Max-Size') || '', 10);
      this.maxSize = res.ok && max > 0 ? max : null;
      this.maxSizeFor = endpoint;
    } catch {
      return null; // not cached: the creation POST's 413 is the real check anyway
    }
    return this.maxSize;
  }
}

export class UploadJob {
  constructor(uploader, file, card) {
    this.uploader = uploader;
    this.session = uploader.session;
    this.file = file;
    this.card = card;
    this.parallel = file.size >= PARALLEL_FROM ? 2 : 1;
    this.upload = null;
    this.state = 'new'; // waiting, uploading, paused, retrying, signed-out, failed, done, cancelled
    this.rounds = 0;
    this.unauthorized = 0;
    this.firstLaunch = true;
    this.wait = null; // AbortController of a retry wait
    this.speed = NaN;
    this.lastSample = null;

    card.showUpload(file.size);
    this.pauseBtn = card.addAction('Pause', 'pause-button', () => this.togglePause());
    this.cancelBtn = card.addAction('Cancel', 'cancel-button', () => this.cancel(), 'danger');
  }

  waitForSlot() {
    this.state = 'waiting';
    this.card.setStatus('Waiting');
    this.card.setNote('Waiting for other uploads to finish.');
  }

  /** Called by the uploader when this job has a slot. */
  async run() {
    this.state = 'uploading';
    this.card.setStatus('Uploading');
    this.card.setNote('');
    this.card.setAlert('');
    this.pauseBtn.textContent = 'Pause';
    this.pauseBtn.hidden = false;
    try {
      if (this.firstLaunch) {
        const max = await this.uploader.fetchMaxSize();
        if (this.state !== 'uploading') return;
        if (max && this.file.size > max) {
          this.fail(`This file is larger than the server's limit (${formatBytes(max)}).`, { retry: false });
          return;
        }
      }
      await this.launch();
    } catch (err) {
      this.onError(err);
    }
  }

  /** A new tus Upload, resumed from a stored previous one when there is one. */
  async launch() {
    if (this.upload && this.parallel === 1 && this.upload.url) {
      this.upload.start(); // same object: continues from upload.url with a HEAD
      return;
    }
    if (this.upload) this.upload.abort(); // parallel: stop the other part before starting anew
    const upload = new Upload(this.file, this.options());
    this.upload = upload;
    const previous = await upload.findPreviousUploads();
    if (this.upload !== upload || this.state !== 'uploading') return;
    if (previous.length) {
      previous.sort((a, b) => String(b.creationTime).localeCompare(String(a.creationTime)));
      upload.resumeFromPreviousUpload(previous[0]);
      this.knowUrl(previous[0].uploadUrl);
      if (this.firstLaunch) this.noteResume(previous[0]);
    }
    this.firstLaunch = false;
    upload.start();
  }

  options() {
    const session = this.session;
    return {
      endpoint: session.uploadUrl,
      chunkSize: CHUNK_SIZE,
      retryDelays: RETRY_DELAYS,
      parallelUploads: this.parallel,
      removeFingerprintOnSuccess: true,
      storeFingerprintForResuming: true,
      metadata: { filename: this.file.name, filetype: this.file.type || 'application/octet-stream' },
      onBeforeRequest: async (req) => {
        req.setHeader('Authorization', `Bearer ${await session.validToken()}`);
      },
      onAfterResponse: (req, res) => {
        const status = res.getStatus();
        if (status >= 200 && status < 300 && this.state === 'uploading' && this.retryNote) {
          this.retryNote = false;
          this.card.setNote('');
        }
      },
      onUploadUrlAvailable: () => this.knowUrl(this.upload?.url),
      onShouldRetry: (err, attempt, options) => this.shouldRetry(err, options),
      onProgress: (sent, total) => this.onProgress(sent, total),
      onSuccess: () => this.onSuccess(),
      onError: (err) => this.onError(err),
    };
  }

  /** A single upload's URL names its video: the card takes that id at once (the server lists
   * the video while it uploads). A parallel upload's parts have ids of their own; its video id
   * comes with onSuccess. */
  knowUrl(url) {
    const id = this.parallel === 1 && url ? videoIdFromUrl(url) : null;
    if (id && id !== this.card.videoId) {
      this.card.setVideoId(id);
      this.uploader.hooks.onUploadUrl?.(this, id);
    }
  }

  /** tus-js-client's own retry (a part of a parallel upload, or a single upload). */
  shouldRetry(err, options) {
    if (sessionEnded(err)) return false;
    // The parent of a parallel upload: we restart it ourselves, after stopping both parts.
    if (options.parallelUploads > 1) return false;
    const status = statusOf(err);
    if (status === 401 || status === 413 || status === 429) return false; // handled in onError
    if (status >= 400 && status < 500 && status !== 409 && status !== 423) return false;
    this.noteRetry(status);
    return true;
  }

  noteRetry(status) {
    this.retryNote = true;
    if (status === 0) {
      this.card.setNote(navigator.onLine === false ? 'You are offline: connection lost, retrying…' : 'Connection lost, retrying…');
    } else {
      this.card.setNote(`The server is busy (HTTP ${status}), retrying…`);
    }
  }

  async noteResume(previous) {
    const urls = previous.uploadUrl ? [previous.uploadUrl] : previous.parallelUploadUrls || [];
    let offset = 0;
    try {
      const token = await this.session.validToken();
      for (const url of urls) {
        const res = await fetch(url, { method: 'HEAD', headers: { Authorization: `Bearer ${token}`, 'Tus-Resumable': '1.0.0' }, cache: 'no-store' });
        if (!res.ok) return; // gone: tus-js-client starts a new upload
        offset += Number.parseInt(res.headers.get('Upload-Offset') || '0', 10) || 0;
      }
    } catch {
      this.card.setNote('Resuming the previous upload of this file.');
      return;
    }
    if (!urls.length) return;
    const pct = Math.min(100, Math.floor((offset / Math.max(1, this.file.size)) * 100));
    this.card.setNote(`Resuming at ${pct} %.`);
    announce(`${this.file.name}: resuming at ${pct} %.`);
  }

  onProgress(sent, total) {
    const now = performance.now();
    this.rounds = 0;
    this.unauthorized = 0;
    if (this.lastSample) {
      const dt = (now - this.lastSample.t) / 1000;
      if (dt >= 0.25) {
        const rate = Math.max(0, sent - this.lastSample.sent) / dt;
        // Exponential moving average with a ~3 s time constant.
        const alpha = 1 - Math.exp(-dt / 3);
        this.speed = Number.isFinite(this.speed) ? this.speed + alpha * (rate - this.speed) : rate;
        this.lastSample = { t: now, sent };
      }
    } else {
      this.lastSample = { t: now, sent };
    }
    const eta = this.speed > 0 ? (total - sent) / this.speed : NaN;
    this.scheduleRender(sent, total, eta);
  }

  scheduleRender(sent, total, eta) {
    this.pending = [sent, total, eta];
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      const [s, t, e] = this.pending;
      this.card.updateUpload(s, t, this.speed, e);
    });
  }

  onSuccess() {
    const id = videoIdFromUrl(this.upload.url);
    this.state = 'done';
    if (this.frame) cancelAnimationFrame(this.frame);
    this.frame = 0;
    this.card.finishUpload();
    this.card.setNote('');
    this.card.setAlert('');
    this.pauseBtn.remove();
    this.cancelBtn.remove();
    this.uploader.forget(this);
    if (id) this.card.setVideoId(id);
    this.card.setStatus('Pending');
    announce(`${this.file.name} uploaded; processing will start shortly.`);
    this.uploader.hooks.onUploaded(this, id);
  }

  async onError(err) {
    if (!['uploading', 'retrying'].includes(this.state)) return;
    const status = statusOf(err);
    const body = bodyOf(err);
    if (this.parallel > 1 && this.upload) this.upload.abort(); // the sibling part may still be sending

    if (sessionEnded(err)) {
      this.state = 'signed-out';
      this.card.setStatus('Paused');
      this.card.setNote('');
      this.card.setAlert('Your sign-in has ended: sign in again and this upload continues.');
      this.pauseBtn.textContent = 'Resume';
      this.uploader.release(this);
      return;
    }
    if (status === 401) {
      this.unauthorized += 1;
      if (this.unauthorized <= 2) {
        this.card.setNote('Renewing the upload token…');
        try {
          await this.session.renew();
          return this.retryNow();
        } catch (renewErr) {
          return this.onError(renewErr instanceof SessionEndedError ? renewErr : err);
        }
      }
      return this.fail(withBody('The server refused the upload token: sign in again.', body));
    }
    if (status === 413) {
      const max = this.uploader.maxSize;
      return this.fail(withBody(`This file is larger than the server's limit${max ? ` (${formatBytes(max)})` : ''}.`, body), { retry: false });
    }
    if (status === 429) {
      const seconds = retryAfterSeconds(headerOf(err, 'Retry-After'));
      return this.retryAfter(seconds, (left) => `Rate limited, retrying in ${left} s.`);
    }
    if (status === 410 || status === 404) {
      // The upload expired or vanished on the server: start over with a fresh one.
      this.upload = null;
      return this.retryAfter(0, () => 'The earlier upload expired on the server; starting again.');
    }
    if (status === 403) return this.fail(withBody('The server refused this upload.', body));
    if (status >= 400 && status < 500 && status !== 409 && status !== 423) {
      return this.fail(withBody(`The upload failed (HTTP ${status}).`, body));
    }
    if (status === 0 && !err?.originalRequest) {
      // Not an HTTP failure (e.g. the file can't be read any more).
      return this.fail(`The upload stopped: ${err?.message || err}.`);
    }
    // Network trouble or a 5xx: keep trying (tus-js-client already retried with backoff).
    this.rounds += 1;
    if (this.rounds > MAX_ROUNDS) return this.fail(withBody('The upload kept failing; check your connection and press Retry.', body));
    if (navigator.onLine === false) {
      this.state = 'retrying';
      this.card.setNote('You are offline: connection lost, retrying when you are back online.');
      this.retryNote = true;
      await waitOnline(this.newWait().signal);
      if (this.state !== 'retrying') return;
      return this.retryNow();
    }
    const seconds = RETRY_DELAYS[Math.min(this.rounds, RETRY_DELAYS.length - 1)] / 1000 || 1;
    const text = status ? `The server is busy (HTTP ${status}), retrying in` : 'Connection lost, retrying in';
    return this.retryAfter(seconds, (left) => `${text} ${left} s.`);
  }

  newWait() {
    this.wait?.abort();
    this.wait = new AbortController();
    return this.wait;
  }

  async retryAfter(seconds, message) {
    this.state = 'retrying';
    this.retryNote = true;
    const { signal } = this.newWait();
    await countdown(seconds, (left) => this.card.setNote(message(left)), signal);
    if (signal.aborted || this.state !== 'retrying') return;
    this.card.setNote(message(0).replace(/ in 0 s\.$/, '…'));
    this.retryNow();
  }

  retryNow() {
    if (!['uploading', 'retrying'].includes(this.state)) return;
    this.state = 'uploading';
    this.card.setStatus('Uploading');
    this.launch().catch((err) => this.onError(err));
  }

  fail(message, { retry = true } = {}) {
    this.state = 'failed';
    this.wait?.abort();
    this.card.setStatus('Failed');
    this.card.setNote('');
    this.card.setAlert(message);
    this.pauseBtn.textContent = 'Retry';
    this.pauseBtn.hidden = !retry;
    if (!retry) this.cancelBtn.textContent = 'Dismiss';
    this.uploader.release(this);
    announce(`${this.file.name}: ${message}`);
  }

  togglePause() {
    if (this.state === 'uploading' || this.state === 'retrying' || this.state === 'waiting') this.pause();
    else this.resume();
  }

  pause() {
    this.wait?.abort();
    this.upload?.abort();
    this.state = 'paused';
    this.speed = NaN;
    this.lastSample = null;
    this.card.setStatus('Paused');
    this.card.setNote('');
    this.pauseBtn.textContent = 'Resume';
    this.uploader.release(this);
    announce(`${this.file.name} paused.`);
  }

  resume() {
    if (!['paused', 'failed', 'signed-out'].includes(this.state)) return;
    this.cancelBtn.textContent = 'Cancel';
    if (!this.session.signedIn) {
      this.card.setAlert('Sign in again to continue this upload.');
      return;
    }
    this.rounds = 0;
    this.unauthorized = 0;
    this.card.setAlert('');
    this.pauseBtn.textContent = 'Pause';
    this.state = 'new';
    this.uploader.request(this);
  }

  /** Stop the upload and delete what the server has of it (tus termination). */
  async cancel() {
    const upload = this.upload;
    this.stop();
    this.state = 'cancelled';
    this.uploader.forget(this);
    this.card.remove();
    this.uploader.hooks.onRemoved?.(this);
    announce(`Upload of ${this.file.name} cancelled.`);
    if (!upload) return;
    try {
      await upload.abort(true);
    } catch { /* already gone, or offline: the server expires unfinished uploads */ }
    try {
      // A parallel upload's entry is not removed by abort(true): drop every stored resume point.
      for (const previous of await upload.findPreviousUploads()) {
        await tusDefaults.urlStorage.removeUpload(previous.urlStorageKey);
      }
    } catch { /* nothing stored */ }
  }

  /** Abort without terminating (sign-out): the file can be resumed later. */
  stop() {
    this.wait?.abort();
    this.upload?.abort();
    if (this.frame) cancelAnimationFrame(this.frame);
    this.state = 'stopped';
  }
}

function waitOnline(signal) {
  return new Promise((resolve) => {
    if (navigator.onLine !== false || signal.aborted) { resolve(); return; }
    const done = () => {
      window.removeEventListener('online', done);
      signal.removeEventListener('abort', done);
      resolve();
    };
    window.addEventListener('online', done);
    signal.addEventListener('abort', done);
  });
}

