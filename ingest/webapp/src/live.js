// Live status of one video: WebSocket on events_url, else Server-Sent Events on the same URL,
// else polling GET videos/<id> every 2 s, until COMPLETED or FAILED (or deleted).

import { SessionEndedError, errorFrom } from './api.js';

const TERMINAL = new Set(['COMPLETED', 'FAILED']);
const POLL_MS = 2000;
/** How long a freshly uploaded video may answer 404 while its resource is being created. */
const APPEAR_WITHIN_MS = 120000;
/** Streams (WebSocket/SSE) open at once; each holds a server thread. Others poll. */
const MAX_STREAMS = 4;
const MAX_RECONNECTS = 5;

let openStreams = 0;

/**
 * Follow a video. handlers: onDocument(doc), onDeleted(), onError(message).
 * options.stream=false polls only. Returns an object with stop().
 */
export function follow(session, videoId, handlers, { stream = true } = {}) {
  const follower = new Follower(session, videoId, handlers, stream);
  follower.start();
  return follower;
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    if (signal.aborted) { resolve(); return; }
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done);
  });
}

/** ws://host/x → http://host/x, wss:// → https:// (the SSE fallback is the same URL). */
export function httpUrlOf(eventsUrl) {
  return String(eventsUrl).replace(/^ws(s?):/i, 'http$1:');
}

class Follower {
  constructor(session, videoId, handlers, stream) {
    this.session = session;
    this.id = videoId;
    this.handlers = handlers;
    this.mode = stream ? 'ws' : 'poll'; // ws → sse → poll, never back
    this.stopped = false;
    this.seen = false;
    this.lastDoc = null;
    this.ws = null;
    this.es = null;
    this.holdsStream = false;
    this.reconnects = 0;
    this.controller = new AbortController();
  }

  async start() {
    const doc = await this.fetchDoc(true);
    if (doc && !this.emit(doc)) this.connect();
  }

  stop() {
    if (this.stopped) return;
    this.stopped = true;
    this.controller.abort();
    this.closeStreams();
  }

  /** Hand a document on; true when following is over (terminal or deleted). */
  emit(doc) {
    if (this.stopped || !doc || typeof doc !== 'object') return true;
    if (doc.deleted) {
      this.handlers.onDeleted?.();
      this.stop();
      return true;
    }
    this.seen = true;
    this.lastDoc = doc;
    this.handlers.onDocument?.(doc);
    if (TERMINAL.has(doc.status)) {
      this.stop();
      return true;
    }
    return false;
  }

  fail(message) {
    if (this.stopped) return;
    this.handlers.onError?.(message);
    this.stop();
  }

  connect() {
    if (this.stopped) return;
    let url = this.lastDoc?.events_url;
    // A proxy that forgot X-Forwarded-Proto yields ws:// on an https page: browsers block that.
    if (url && window.location.protocol === 'https:') url = url.replace(/^ws:/i, 'wss:');
    if (url && this.mode === 'ws' && typeof WebSocket === 'function' && this.takeStream()) return this.openWebSocket(url);
    if (url && this.mode !== 'poll' && typeof EventSource === 'function' && this.takeStream()) {
      this.mode = 'sse';
      return this.openEventSource(httpUrlOf(url));
    }
    this.poll();
  }

  /** A stream broke before sending anything: next transport. */
  fallback() {
    this.closeStreams();
    this.mode = this.mode === 'ws' ? 'sse' : 'poll';
    this.connect();
  }

  /** A stream broke after working: fetch a fresh document (and events URL) and reconnect. */
  async reconnect() {
    this.closeStreams();
    this.reconnects += 1;
    if (this.reconnects > MAX_RECONNECTS) this.mode = 'poll';
    const doc = await this.fetchDoc(false);
    if (doc && !this.emit(doc)) this.connect();
  }

  openWebSocket(url) {
    let received = false;
    let ws;
    try {
      ws = new WebSocket(url);
    } catch {
      this.fallback();
      return;
    }
    this.ws = ws;
    ws.addEventListener('message', (event) => {
      received = true;
      let doc;
      try { doc = JSON.parse(event.data); } catch { return; }
      this.emit(doc);
    });
    ws.addEventListener('close', () => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.releaseStream();
      if (this.stopped) return;
      if (received) this.reconnect();
      else this.fallback();
    });
  }

  openEventSource(url) {
    let received = false;
    let errors = 0;
    let es;
    try {
      es = new EventSource(url);
    } catch {
      this.fallback();
      return;
    }
    this.es = es;
    const onDoc = (event) => {
      received = true;
      errors = 0;
      let doc;
      try { doc = JSON.parse(event.data); } catch { return; }
      this.emit(doc);
    };
    es.addEventListener('status', onDoc);
    es.addEventListener('message', onDoc);
    es.addEventListener('deleted', () => this.emit({ id: this.id, deleted: true }));
    es.addEventListener('error', (event) => {
      if (this.es !== es || this.stopped) return;
      if (typeof event.data === 'string') {
        // The server's own `error` event: the stream is over; carry on by polling.
        this.mode = 'poll';
        this.fallback();
        return;
      }
      errors += 1;
      if (!received) this.fallback();
      else if (es.readyState === EventSource.CLOSED || errors > 3) this.reconnect();
      // else: EventSource reconnects by itself.
    });
  }

  async poll() {
    this.mode = 'poll';
    while (!this.stopped) {
      await sleep(POLL_MS, this.controller.signal);
      if (this.stopped) return;
      const doc = await this.fetchDoc(false);
      if (!doc || this.emit(doc)) return;
    }
  }

  /**
   * GET videos/<id>, retrying through network trouble, 5xx and 429 (Retry-After). A 404 is
   * retried for a while on the first fetch (the resource is still being created); later it
   * means the video was deleted. Null when following is over.
   */
  async fetchDoc(first) {
    const { signal } = this.controller;
    let delay = 1000;
    const since = Date.now();
    while (!this.stopped) {
      let res;
      try {
        res = await this.session.fetch(`videos/${encodeURIComponent(this.id)}`, {
          headers: { Accept: 'application/json' },
          signal,
        });
      } catch (err) {
        if (this.stopped || err?.name === 'AbortError') return null;
        if (err instanceof SessionEndedError) { this.fail(err.message); return null; }
        await sleep(delay, signal); // offline or the server is unreachable: keep trying
        delay = Math.min(delay * 2, 10000);
        continue;
      }
      if (res.ok) {
        try { return await res.json(); } catch { /* truncated: try again */ }
      } else if (res.status === 404 && first && !this.seen && Date.now() - since < APPEAR_WITHIN_MS) {
        await res.text().catch(() => '');
      } else if (res.status === 404 && this.seen) {
        await res.text().catch(() => '');
        this.emit({ id: this.id, deleted: true });
        return null;
      } else {
        const err = await errorFrom(res);
        if (res.status === 429) {
          await sleep((err.retryAfter ?? 5) * 1000, signal);
          continue;
        }
        if (res.status < 500) { this.fail(err.message); return null; }
      }
      await sleep(delay, signal);
      delay = Math.min(delay * 1.5, 5000);
    }
    return null;
  }

  takeStream() {
    if (this.holdsStream) return true;
    if (openStreams >= MAX_STREAMS) return false;
    openStreams += 1;
    this.holdsStream = true;
    return true;
  }

  releaseStream() {
    if (!this.holdsStream) return;
    this.holdsStream = false;
    openStreams -= 1;
  }

  closeStreams() {
    const { ws, es } = this;
    this.ws = null;
    this.es = null;
    if (ws && ws.readyState <= WebSocket.OPEN) ws.close(1000);
    es?.close();
    this.releaseStream();
  }
}
