// The list of videos: one card per video (uploads of this page and the tenant's library),
// newest first by created_at. The API pages in no particular order, so all pages are loaded
// (up to MAX_PAGES) and sorted here.

import { ApiError, countdown } from './api.js';
import { VideoCard } from './card.js';
import { follow } from './live.js';
import { announce, setText } from './ui.js';

const PAGE_SIZE = 50;
const MAX_PAGES = 20;
/** Library videos still processing are polled (uploads of this page get a live stream). */
const MAX_POLLED = 10;

const RATE_LIMIT_RETRIES = 3;

/** One page; waits out a 429 (Retry-After) a few times. */
async function getPage(session, path, signal, onWait) {
  for (let attempt = 0; ; attempt += 1) {
    try {
      return await session.getJson(path, { signal });
    } catch (err) {
      if (!(err instanceof ApiError) || err.status !== 429 || attempt >= RATE_LIMIT_RETRIES || signal?.aborted) throw err;
      await countdown(err.retryAfter ?? 5, (left) => onWait?.(`Rate limited, retrying in ${left} s.`), signal);
    }
  }
}

/** Every page of GET videos, newest first. `complete` is false when pages were left out. */
export async function loadVideos(session, { signal, onWait } = {}) {
  const items = [];
  let token = null;
  let pages = 0;
  do {
    const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (token) query.set('continue', token);
    const page = await getPage(session, `videos?${query}`, signal, onWait);
    items.push(...(Array.isArray(page.items) ? page.items : []));
    token = page.continue || null;
    pages += 1;
  } while (token && pages < MAX_PAGES);
  const seen = new Set();
  const unique = items.filter((doc) => doc && doc.id && !seen.has(doc.id) && seen.add(doc.id));
  unique.sort((a, b) => (Date.parse(b.created_at || '') || 0) - (Date.parse(a.created_at || '') || 0));
  return { items: unique, complete: !token };
}

export class VideoList {
  /**
   * @param {HTMLElement} listEl the <ul>
   * @param {HTMLElement} stateEl a line for "Loading…", "No videos yet", errors
   */
  constructor(session, listEl, stateEl, { onPlay }) {
    this.session = session;
    this.listEl = listEl;
    this.stateEl = stateEl;
    this.onPlay = onPlay;
    this.cards = new Map(); // video id → VideoCard
    this.followers = new Map(); // video id → follower
    this.loading = null;
    this.controller = null;
  }

  /** An upload's card goes on top until its video id is known. */
  addUploadCard(card) {
    this.listEl.prepend(card.el);
    this.updateEmpty();
  }

  /**
   * This upload card is video `videoId`. The server lists a video as soon as its resource exists
   * (as the last PATCH is answered, before the upload hears the answer), so a card a refresh
   * made for it meanwhile gives way to the upload's card. Called when the upload URL is known
   * and again on success (a parallel upload's id is only known then).
   */
  claim(videoId, card) {
    const listed = this.cards.get(videoId);
    if (listed && listed !== card) this.#drop(videoId);
    for (const [id, other] of this.cards) if (other === card && id !== videoId) this.cards.delete(id); // a stale resume URL
    this.cards.set(videoId, card);
  }

  /** An upload card went away (cancelled). */
  release(card) {
    if (card.videoId && this.cards.get(card.videoId) === card) this.#drop(card.videoId);
    this.updateEmpty();
  }

  /** Follow a just-uploaded video live (WebSocket → SSE → polling). */
  followUpload(card, videoId) {
    this.claim(videoId, card);
    this.#follow(videoId, card, true);
  }

  refresh() {
    this.loading ??= this.#refresh().finally(() => { this.loading = null; });
    return this.loading;
  }

  async #refresh() {
    this.controller?.abort();
    const controller = new AbortController();
    this.controller = controller;
    if (!this.cards.size) setText(this.stateEl, 'Loading videos…');
    let result;
    try {
      result = await loadVideos(this.session, {
        signal: controller.signal,
        onWait: (message) => setText(this.stateEl, message),
      });
    } catch (err) {
      if (err?.name !== 'AbortError' && !controller.signal.aborted) setText(this.stateEl, `Could not load your videos: ${err.message}`);
      return;
    }
    if (controller.signal.aborted) return;
    const ids = new Set();
    for (const doc of result.items) {
      ids.add(doc.id);
      let card = this.cards.get(doc.id);
      if (!card) {
        card = new VideoCard({ filename: doc.filename || doc.id, size: doc.size, onPlay: this.onPlay });
        this.cards.set(doc.id, card);
      }
      card.applyDocument(doc); // ignored while the card's upload is still running
      if (!card.terminal && !card.uploadActive && !this.followers.has(doc.id) && this.followers.size < MAX_POLLED) {
        this.#follow(doc.id, card, false);
      }
    }
    if (result.complete) {
      // Gone from the server (deleted elsewhere); keep uploads of this page that may still 404.
      for (const [id, card] of this.cards) {
        if (!ids.has(id) && !card.fromUpload) this.#drop(id);
      }
    }
    this.#order(result.items.map((doc) => this.cards.get(doc.id)));
    setText(this.stateEl, result.complete ? '' : `Showing the newest of the first ${PAGE_SIZE * MAX_PAGES} videos.`);
    this.updateEmpty(true);
  }

  /** Put cards in order (uploads without an id first) moving as few nodes as possible. */
  #order(sorted) {
    const active = document.activeElement;
    const keepFocus = active && this.listEl.contains(active) ? active : null;
    const placed = new Set(sorted.map((card) => card.el));
    const pinned = [...this.listEl.children].filter((el) => !placed.has(el));
    const wanted = [...pinned, ...sorted.map((card) => card.el)];
    wanted.forEach((el, index) => {
      const current = this.listEl.children[index];
      if (current !== el) this.listEl.insertBefore(el, current || null);
    });
    if (keepFocus && document.activeElement !== keepFocus && keepFocus.isConnected) keepFocus.focus({ preventScroll: true });
  }

  #follow(videoId, card, stream) {
    this.followers.get(videoId)?.stop();
    const name = () => card.filename || videoId;
    const follower = follow(this.session, videoId, {
      onDocument: (doc) => {
        const before = card.status;
        card.applyDocument(doc);
        if (stream && card.status !== before) {
          if (doc.status === 'COMPLETED') announce(`${name()} is ready to play.`);
          else if (doc.status === 'FAILED') announce(`${name()} failed: ${[doc.reason, doc.error].filter(Boolean).join(': ')}`);
        }
        if (doc.status === 'COMPLETED' || doc.status === 'FAILED') {
          this.followers.delete(videoId);
          if (stream) this.refresh();
        }
      },
      onDeleted: () => {
        this.followers.delete(videoId);
        announce(`${name()} was deleted.`);
        this.#drop(videoId);
        this.updateEmpty();
      },
      onError: (message) => {
        this.followers.delete(videoId);
        card.setNote(`Live status stopped: ${message}`);
      },
    }, { stream });
    this.followers.set(videoId, follower);
  }

  #drop(videoId) {
    this.followers.get(videoId)?.stop();
    this.followers.delete(videoId);
    this.cards.get(videoId)?.remove();
    this.cards.delete(videoId);
  }

  /** Show "No videos yet" instead of an empty list (not while the first load runs). */
  updateEmpty(loaded = false) {
    const empty = this.listEl.children.length === 0;
    this.listEl.hidden = empty;
    if (empty && (loaded || !this.loading)) setText(this.stateEl, 'No videos yet: upload one above.');
    else if (!empty && this.stateEl.textContent.startsWith('No videos')) setText(this.stateEl, '');
  }

  /** Sign-out: stop following and forget every card. */
  clear() {
    this.controller?.abort();
    for (const follower of this.followers.values()) follower.stop();
    this.followers.clear();
    this.cards.clear();
    this.listEl.replaceChildren();
    this.listEl.hidden = true;
    setText(this.stateEl, '');
  }
}
