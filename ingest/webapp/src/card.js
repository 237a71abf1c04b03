// One card per video or upload, used by the upload queue and the library alike.

import { formatBytes, formatDuration, formatEta, formatSpeed, formatWhen, h, setText } from './ui.js';

const TERMINAL = new Set(['COMPLETED', 'FAILED']);
let serial = 0;

export class VideoCard {
  /** @param {{filename?: string, size?: number, onPlay?: (doc: object) => void}} init */
  constructor({ filename = '', size = null, onPlay = null } = {}) {
    const uid = `card-${++serial}`;
    this.filename = filename;
    this.size = size;
    this.videoId = null;
    this.doc = null;
    this.onPlay = onPlay;
    this.progress = 0; // transcode %, never shown going backwards
    this.uploadShown = 0; // bytes, never shown going backwards
    this.fromUpload = false;
    this.uploadActive = false; // while true, status documents wait (the card says Uploading/Paused)

    this.titleEl = h('h3', { className: 'card-title', id: `${uid}-title` });
    this.img = h('img', { className: 'poster', alt: '', width: 320, height: 180, decoding: 'async', loading: 'lazy', hidden: true });
    this.durationEl = h('span', { className: 'duration', dataset: { testid: 'video-duration' }, hidden: true });
    this.metaEl = h('p', { className: 'meta' });

    this.uploadBar = h('progress', { max: 100, value: 0, 'aria-label': 'Upload progress', dataset: { testid: 'upload-progress' } });
    this.statsEl = h('p', { className: 'stats', dataset: { testid: 'upload-stats' } });
    this.uploadBlock = h('div', { className: 'upload', hidden: true }, this.uploadBar, this.statsEl);

    this.statusEl = h('span', { className: 'status', dataset: { testid: 'video-status' } });
    this.tpctEl = h('span', { className: 'tpct', dataset: { testid: 'video-progress' } });
    this.transcodeBar = h('progress', { className: 'transcode', max: 100, value: 0, 'aria-label': 'Processing progress', hidden: true });
    this.reasonEl = h('p', { className: 'reason', dataset: { testid: 'video-error' }, hidden: true });
    this.noteEl = h('p', { className: 'note', dataset: { testid: 'video-note' } });
    this.alertEl = h('p', { className: 'alert', role: 'alert', dataset: { testid: 'upload-error' } });
    this.actions = h('div', { className: 'actions' });

    this.playBtn = h('button', { type: 'button', className: 'primary', 'aria-describedby': this.titleEl.id, dataset: { testid: 'play-button' }, hidden: true }, 'Play');
    this.playBtn.addEventListener('click', () => { if (this.doc) this.onPlay?.(this.doc); });
    this.actions.append(this.playBtn);

    this.el = h('li', { className: 'card', dataset: { testid: 'video-card' }, 'aria-labelledby': this.titleEl.id },
      h('div', { className: 'thumb' }, this.img, this.durationEl),
      h('div', { className: 'card-body' },
        this.titleEl,
        this.metaEl,
        this.uploadBlock,
        h('p', { className: 'state' }, this.statusEl, ' ', this.tpctEl),
        this.transcodeBar,
        this.reasonEl,
        this.noteEl,
        this.alertEl,
        this.actions));
    this.setFilename(filename);
    this.#renderMeta();
  }

  setFilename(name) {
    this.filename = name || this.filename || 'Untitled video';
    this.el.dataset.filename = this.filename;
    setText(this.titleEl, this.filename);
    this.titleEl.title = this.filename;
    this.uploadBar.setAttribute('aria-label', `Upload progress of ${this.filename}`);
    this.transcodeBar.setAttribute('aria-label', `Processing progress of ${this.filename}`);
    this.img.alt = `Poster of ${this.filename}`;
  }

  setVideoId(id) {
    this.videoId = id;
    this.el.dataset.videoId = id;
  }

  /** Local states: Waiting, Uploading, Paused, Failed (before the server has the video). */
  setStatus(text) {
    setText(this.statusEl, text);
    this.el.dataset.status = text.toLowerCase();
  }

  get status() {
    return this.statusEl.textContent;
  }

  setNote(text) {
    setText(this.noteEl, text || '');
  }

  setAlert(text) {
    setText(this.alertEl, text || '');
  }

  /** A button in the action row (before Play). */
  addAction(label, testid, onClick, className = '') {
    const btn = h('button', { type: 'button', className, 'aria-describedby': this.titleEl.id, dataset: { testid } }, label);
    btn.addEventListener('click', onClick);
    this.actions.insertBefore(btn, this.playBtn);
    return btn;
  }

  showUpload(total) {
    this.fromUpload = true;
    this.uploadActive = true;
    this.size = total;
    this.uploadBlock.hidden = false;
    this.uploadBar.max = Math.max(1, total);
    this.updateUpload(0, total, NaN, NaN);
    this.#renderMeta();
  }

  /** Bytes sent of total, smoothed speed (B/s) and seconds left. */
  updateUpload(sent, total, speed, eta) {
    this.uploadShown = Math.max(this.uploadShown, Math.min(sent, total));
    const shown = this.uploadShown;
    const pct = total > 0 ? Math.floor((shown / total) * 100) : 0;
    this.uploadBar.max = Math.max(1, total);
    this.uploadBar.value = shown;
    const parts = [`${formatBytes(shown)} of ${formatBytes(total)}`, `${pct} %`];
    if (shown < total && speed > 0) parts.push(formatSpeed(speed), formatEta(eta));
    setText(this.statsEl, parts.filter(Boolean).join(' · '));
  }

  /** The upload is done: its bar gives way to the processing one (one progress bar per stage). */
  finishUpload() {
    this.uploadActive = false;
    this.uploadBlock.remove();
  }

  /** Apply a status document. Ignores stale ones: progress never goes back, terminal stays. */
  applyDocument(doc) {
    if (!doc || typeof doc !== 'object' || this.uploadActive) return;
    const wasTerminal = this.doc && TERMINAL.has(this.doc.status);
    if (wasTerminal && !TERMINAL.has(doc.status)) return;
    this.doc = { ...this.doc, ...doc };
    if (doc.id && doc.id !== this.videoId) this.setVideoId(doc.id);
    if (doc.filename) this.setFilename(doc.filename);
    if (Number.isFinite(doc.size)) this.size = doc.size;

    const phase = doc.phase || phaseOf(doc.status);
    this.setStatus(phase);
    const completed = doc.status === 'COMPLETED';
    const failed = doc.status === 'FAILED';
    const value = Number(doc.progress);
    this.progress = completed ? 100 : Math.max(this.progress, Number.isFinite(value) ? Math.min(100, Math.max(0, value)) : 0);
    setText(this.tpctEl, failed || completed ? '' : `${this.progress} %`);
    this.transcodeBar.hidden = completed || failed;
    this.transcodeBar.value = this.progress;

    if (failed) {
      const reason = [doc.reason, doc.error].filter(Boolean).join(': ') || 'Processing failed.';
      setText(this.reasonEl, reason);
      this.reasonEl.hidden = false;
    } else {
      this.reasonEl.hidden = true;
    }

    if (doc.poster_url) {
      if (this.img.getAttribute('src') !== doc.poster_url) this.img.src = doc.poster_url;
      this.img.hidden = false;
    }
    const duration = formatDuration(Number(doc.duration ?? NaN));
    setText(this.durationEl, duration);
    this.durationEl.hidden = !duration || doc.duration == null;
    if (duration) this.durationEl.setAttribute('aria-label', `Duration ${duration}`);

    this.playBtn.hidden = !(completed && doc.master_playlist_url);
    this.#renderMeta();
  }

  get terminal() {
    return Boolean(this.doc && TERMINAL.has(this.doc.status));
  }

  #renderMeta() {
    const doc = this.doc || {};
    const parts = [];
    if (Number.isFinite(this.size)) parts.push(formatBytes(this.size));
    if (doc.width && doc.height) parts.push(`${doc.width}×${doc.height}`);
    const when = formatWhen(doc.created_at);
    if (when) parts.push(when);
    setText(this.metaEl, parts.join(' · '));
  }

  remove() {
    this.el.remove();
  }
}

function phaseOf(status) {
  switch (status) {
    case 'PROCESSING': return 'Processing';
    case 'COMPLETED': return 'Completed';
    case 'FAILED': return 'Failed';
    default: return 'Pending';
  }
}
