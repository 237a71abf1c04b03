// The session: API key (sessionStorage only) → short-lived upload token, renewed before it
// expires, plus fetch wrappers that carry the token. Every URL is relative to the page's base,
// so the ingest can be mounted under a path prefix.

import { cleanBody, withBody } from './ui.js';

const KEY_STORAGE = 'vidup.apiKey';
const SCOPE = ['upload', 'read'];
/** Renew when this share of the token's lifetime has passed. */
const RENEW_AT = 0.8;
/** Sign-in/renewal attempts while the server answers 429. */
const MAX_RATE_LIMITED = 3;

/** An absolute URL for a path relative to the page (never to the origin's root). */
export function apiUrl(path) {
  return new URL(path, document.baseURI).href;
}

export class ApiError extends Error {
  constructor(message, { status = 0, body = '', retryAfter = null } = {}) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.body = body;
    this.retryAfter = retryAfter;
  }
}

/** The session can't get a token any more: the person must sign in again. */
export class SessionEndedError extends Error {
  constructor(message = 'Your sign-in has ended: sign in again to continue.') {
    super(message);
    this.name = 'SessionEndedError';
  }
}

/** Retry-After (delta seconds or an HTTP date) → whole seconds, capped at an hour. */
export function retryAfterSeconds(value, fallback = 5) {
  if (value == null || String(value).trim() === '') return fallback;
  const n = Number(value);
  if (Number.isFinite(n) && n >= 0) return Math.min(Math.ceil(n), 3600);
  const t = Date.parse(value);
  if (Number.isFinite(t)) return Math.min(Math.max(0, Math.ceil((t - Date.now()) / 1000)), 3600);
  return fallback;
}

/** An ApiError for a non-2xx response, its text/plain body kept for the person to read. */
export async function errorFrom(res, explain = explainStatus) {
  const body = cleanBody(await res.text().catch(() => ''));
  const retryAfter = res.headers.has('Retry-After') ? retryAfterSeconds(res.headers.get('Retry-After')) : null;
  return new ApiError(explain(res.status, body, retryAfter), { status: res.status, body, retryAfter });
}

/** A friendly sentence for a status answered by the videos API. */
export function explainStatus(status, body, retryAfter) {
  if (status === 401) return withBody('The server did not accept your sign-in: sign in again.', body);
  if (status === 403) return withBody('You are not allowed to see this.', body);
  if (status === 404) return withBody('Not found: it may have been deleted.', body);
  if (status === 429) return withBody(`Too many requests: rate limited, retrying in ${retryAfter ?? 5} s.`, body);
  if (status >= 500) return withBody(`The server had a problem (HTTP ${status}); try again shortly.`, body);
  return withBody(`The request failed (HTTP ${status}).`, body);
}

function explainTokenError(status, body, retryAfter) {
  if (status === 401) return withBody('That API key was not accepted. Check it and try again.', body);
  if (status === 403) return withBody('This API key may not issue upload tokens.', body);
  if (status === 429) return withBody(`Too many sign-in attempts: rate limited, retrying in ${retryAfter ?? 5} s.`, body);
  if (status === 503) return withBody('The server cannot issue upload tokens right now (they may not be configured); ask its operator.', body);
  if (status >= 500) return withBody(`The server had a problem (HTTP ${status}); try again shortly.`, body);
  return withBody(`Signing in failed (HTTP ${status}).`, body);
}

/** Wait `seconds`, calling tick(secondsLeft) each second; resolves early if signal aborts. */
export function countdown(seconds, tick, signal) {
  return new Promise((resolve) => {
    let left = Math.max(0, Math.ceil(seconds));
    const step = () => {
      if (signal?.aborted || left <= 0) { resolve(); return; }
      tick?.(left);
      left -= 1;
      setTimeout(step, 1000);
    };
    step();
  });
}

function readStoredKey() {
  try { return sessionStorage.getItem(KEY_STORAGE); } catch { return null; }
}

function storeKey(key) {
  try {
    if (key) sessionStorage.setItem(KEY_STORAGE, key);
    else sessionStorage.removeItem(KEY_STORAGE);
  } catch { /* storage disabled: the key just isn't remembered across reloads */ }
}

/**
 * Events: `signedin` (detail: {tenant}), `renewed`, `signedout`, `ended` (detail: {message}:
 * renewal failed for good; uploads wait for a new sign-in).
 */
export class Session extends EventTarget {
  key = null;
  token = null;
  tenant = '';
  uploadUrl = '';
  scope = [];
  /** Local clock (ms) at which the token expires / should be renewed. */
  expiresAtMs = 0;
  renewAtMs = 0;

  #renewing = null;
  #timer = 0;
  #generation = 0;

  static storedKey() {
    return readStoredKey();
  }

  get signedIn() {
    return Boolean(this.token);
  }

  /** Trade the key for a token. Throws ApiError (status 0 = network) with a sentence to show. */
  async signIn(rawKey, { onWait } = {}) {
    const key = String(rawKey || '').trim();
    if (!key) throw new ApiError('Enter your API key.');
    const generation = ++this.#generation;
    this.#clearTimer();
    const grant = await this.#requestToken(key, onWait, generation);
    if (generation !== this.#generation) throw new ApiError('Sign-in was cancelled.');
    this.key = key;
    storeKey(key);
    this.#apply(grant);
    this.dispatchEvent(new CustomEvent('signedin', { detail: { tenant: this.tenant } }));
    return this;
  }

  signOut() {
    this.#generation += 1;
    this.#clearTimer();
    this.#renewing = null;
    this.key = null;
    this.token = null;
    this.tenant = '';
    this.uploadUrl = '';
    this.expiresAtMs = 0;
    this.renewAtMs = 0;
    storeKey(null);
    this.dispatchEvent(new Event('signedout'));
  }

  /** Renew the token now (one request at a time). Throws SessionEndedError if the key is refused. */
  renew() {
    this.#renewing ??= this.#doRenew().finally(() => { this.#renewing = null; });
    return this.#renewing;
  }

  /** Renew if the timer slept through its moment (laptop lid, background tab). */
  checkRenewal() {
    if (this.key && this.token && Date.now() >= this.renewAtMs) this.renew().catch(() => {});
  }

  /** A token valid for the next request: waits for a renewal in flight or due. */
  async validToken() {
    if (this.#renewing) await this.#renewing;
    if (!this.token) throw new SessionEndedError();
    if (Date.now() >= this.expiresAtMs - 2000 && this.key) {
      try {
        await this.renew();
      } catch (err) {
        // Renewal failed for now (offline?): the current token may still have a moment left.
        if (err instanceof SessionEndedError || Date.now() >= this.expiresAtMs) throw err;
      }
    }
    if (!this.token) throw new SessionEndedError();
    return this.token;
  }

  /**
   * fetch(path relative to the page) with `Authorization: Bearer <token>`. On 401 (e.g. "upload
   * token expired") renews once and retries. Network errors reject with ApiError status 0.
   */
  async fetch(path, init = {}) {
    for (let attempt = 0; ; attempt += 1) {
      const token = await this.validToken();
      const headers = new Headers(init.headers || {});
      headers.set('Authorization', `Bearer ${token}`);
      let res;
      try {
        res = await fetch(apiUrl(path), { cache: 'no-store', credentials: 'same-origin', ...init, headers });
      } catch (err) {
        if (err?.name === 'AbortError') throw err;
        throw new ApiError('Could not reach the server: connection lost, retrying.', { status: 0 });
      }
      if (res.status === 401 && attempt === 0 && this.key) {
        await res.text().catch(() => '');
        if (token === this.token) await this.renew(); // else someone renewed meanwhile
        continue;
      }
      return res;
    }
  }

  /** GET JSON; throws ApiError with a friendly message on any non-2xx answer. */
  async getJson(path, init = {}) {
    const res = await this.fetch(path, { ...init, headers: { Accept: 'application/json', ...(init.headers || {}) } });
    if (!res.ok) throw await errorFrom(res);
    return res.json();
  }

  async #doRenew() {
    const generation = this.#generation;
    if (!this.key) throw new SessionEndedError();
    try {
      const grant = await this.#requestToken(this.key, null, generation);
      if (generation !== this.#generation) throw new SessionEndedError('Signed out.');
      this.#apply(grant);
      this.dispatchEvent(new Event('renewed'));
    } catch (err) {
      if (generation !== this.#generation || err instanceof SessionEndedError) throw err;
      if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
        const message = 'Your sign-in could not be renewed (the API key was refused): sign in again.';
        this.#end(message);
        throw new SessionEndedError(message);
      }
      // Transient (offline, 5xx, rate limit): the key is still good; try again soon. Callers
      // see a network-like error and retry (an expired token alone never signs the person out).
      const left = this.expiresAtMs - Date.now();
      this.#schedule(left > 0 ? Math.min(15000, Math.max(1000, left / 3)) : 5000);
      throw err;
    }
  }

  #end(message) {
    this.#clearTimer();
    this.token = null;
    this.key = null;
    storeKey(null);
    this.dispatchEvent(new CustomEvent('ended', { detail: { message } }));
  }

  async #requestToken(key, onWait, generation) {
    for (let attempt = 0; ; attempt += 1) {
      let res;
      try {
        res = await fetch(apiUrl('api/uploads'), {
          method: 'POST',
          headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json', Accept: 'application/json' },
          body: JSON.stringify({ scope: SCOPE }),
          cache: 'no-store',
          credentials: 'same-origin',
        });
      } catch {
        throw new ApiError('Could not reach the server: check your connection and try again.', { status: 0 });
      }
      if (res.ok) return this.#parseGrant(res);
      const err = await errorFrom(res, explainTokenError);
      if (res.status === 429 && attempt < MAX_RATE_LIMITED && generation === this.#generation) {
        await countdown(err.retryAfter ?? 5, (left) => onWait?.(`Rate limited: retrying in ${left} s.`));
        if (generation !== this.#generation) throw err;
        continue;
      }
      throw err;
    }
  }

  async #parseGrant(res) {
    let data;
    try { data = await res.json(); } catch { data = null; }
    if (!data || typeof data.token !== 'string' || !data.token || typeof data.upload_url !== 'string') {
      throw new ApiError('The server sent an unexpected answer to the sign-in request.', { status: res.status });
    }
    // Lifetime from the server's clock (Date header) so a skewed local clock doesn't matter.
    const serverNow = Date.parse(res.headers.get('Date') || '') || Date.now();
    const expiresAt = Number(data.expires_at);
    const lifetimeMs = Number.isFinite(expiresAt) ? Math.max(0, expiresAt * 1000 - serverNow) : 10 * 60 * 1000;
    return {
      token: data.token,
      tenant: String(data.tenant || ''),
      uploadUrl: new URL(data.upload_url, document.baseURI).href,
      scope: Array.isArray(data.scope) ? data.scope : SCOPE,
      lifetimeMs,
    };
  }

  #apply(grant) {
    const now = Date.now();
    this.token = grant.token;
    this.tenant = grant.tenant;
    this.uploadUrl = grant.uploadUrl;
    this.scope = grant.scope;
    this.expiresAtMs = now + grant.lifetimeMs;
    this.#schedule(Math.max(1000, grant.lifetimeMs * RENEW_AT));
  }

  #schedule(delayMs) {
    this.#clearTimer();
    const delay = Math.min(delayMs, 2 ** 31 - 1);
    this.renewAtMs = Date.now() + delay;
    this.#timer = setTimeout(() => { this.renew().catch(() => {}); }, delay);
  }

  #clearTimer() {
    clearTimeout(this.#timer);
    this.#timer = 0;
  }
}
