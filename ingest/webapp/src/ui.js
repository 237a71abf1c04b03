// DOM helpers and human formatting. No state beyond the live region.

/** The element with this id; throws early if the page and the script disagree. */
export function byId(id) {
  const el = document.getElementById(id);
  if (!el) throw new Error(`vidup: #${id} is missing from index.html`);
  return el;
}

/**
 * Create an element: h('p', { className: 'note', dataset: { testid: 'x' } }, 'text', child).
 * Keys that are element properties are set as properties, everything else as attributes
 * (never `style`: the page runs under `style-src 'self'`).
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value == null || value === false) continue;
    if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key === 'className' || key === 'textContent' || key === 'hidden' || key === 'type' || key === 'id') el[key] = value;
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children) {
    if (child == null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

/** Set text only when it changed (avoids needless layout and screen-reader chatter). */
export function setText(el, text) {
  const value = text == null ? '' : String(text);
  if (el.textContent !== value) el.textContent = value;
}

let announcer = null;
let announceTimer = 0;

/** Say something in the page's polite live region. */
export function announce(message) {
  announcer ??= document.getElementById('announcer');
  if (!announcer) return;
  // Clear first so the same sentence twice is announced twice.
  announcer.textContent = '';
  clearTimeout(announceTimer);
  announceTimer = setTimeout(() => { announcer.textContent = message; }, 50);
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

/** 1536 → "1.5 KiB", 67108864 → "64 MiB" (binary units: limits are usually set in MiB). */
export function formatBytes(bytes) {
  if (!Number.isFinite(bytes) || bytes < 0) return '–';
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  const digits = unit === 0 || value >= 100 ? 0 : 1;
  return `${value.toFixed(digits).replace(/\.0$/, '')} ${UNITS[unit]}`;
}

export function formatSpeed(bytesPerSecond) {
  if (!Number.isFinite(bytesPerSecond) || bytesPerSecond <= 0) return '–';
  return `${formatBytes(bytesPerSecond)}/s`;
}

/** Seconds → "m:ss" (or "h:mm:ss" from an hour on). */
export function formatDuration(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return '';
  const total = Math.round(seconds);
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = String(total % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${s}` : `${m}:${s}`;
}

/** Seconds left → "45 s left", "3 min left", "1 h 5 min left". */
export function formatEta(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return '';
  if (seconds < 60) return `${Math.max(1, Math.round(seconds))} s left`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min left`;
  const h = Math.floor(seconds / 3600);
  return `${h} h ${Math.round((seconds % 3600) / 60)} min left`;
}

const relative = typeof Intl !== 'undefined' && Intl.RelativeTimeFormat
  ? new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' })
  : null;

/** RFC 3339 → "5 minutes ago" (falls back to the locale date). */
export function formatWhen(rfc3339) {
  const t = Date.parse(rfc3339 || '');
  if (!Number.isFinite(t)) return '';
  const diff = (t - Date.now()) / 1000;
  const abs = Math.abs(diff);
  if (!relative || abs > 7 * 86400) return new Date(t).toLocaleString();
  if (abs < 60) return relative.format(Math.round(diff), 'second');
  if (abs < 3600) return relative.format(Math.round(diff / 60), 'minute');
  if (abs < 86400) return relative.format(Math.round(diff / 3600), 'hour');
  return relative.format(Math.round(diff / 86400), 'day');
}

/** A server's plain-text error body, trimmed to one readable line. */
export function cleanBody(text) {
  const line = String(text || '').replace(/\s+/g, ' ').trim();
  return line.length > 300 ? `${line.slice(0, 297)}…` : line;
}

/** "Friendly explanation (server said: body)". */
export function withBody(explanation, body) {
  const detail = cleanBody(body);
  return detail ? `${explanation} (server said: ${detail})` : explanation;
}
