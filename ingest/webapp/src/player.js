// The player: hls.js (MSE) where supported, else the browser's native HLS; a quality menu
// ("Auto" + one entry per rendition, highest first) and a "Playing 720p" readout.

import { setText } from './ui.js';

/** hls.js transmuxes in this worker (a file of our own: no blob: URL under the page's CSP). */
/* global __HLS_WORKER__ */
const WORKER_URL = typeof __HLS_WORKER__ === 'string' && __HLS_WORKER__
  ? new URL(__HLS_WORKER__, import.meta.url).href
  : null;

let hlsModule = null;

/** hls.js (the full build: a chunked video's sound is an EXT-X-MEDIA audio rendition, which the
 * light build cannot play) is a separate chunk, loaded when the browser is idle after sign-in or
 * on the first Play. */
export function loadHls() {
  hlsModule ??= import('hls.js').then((m) => m.default).catch((err) => {
    hlsModule = null;
    throw err;
  });
  return hlsModule;
}

const levelName = (level) => (level?.height ? `${level.height}p` : `${Math.round((level?.bitrate || 0) / 1000)} kbps`);

export class Player {
  /** @param {{section, video, select, playing, title, error}} els */
  constructor(els) {
    Object.assign(this, els);
    this.hls = null;
    this.doc = null;
    this.nativeRenditions = [];
    this.recovered = { network: 0, media: 0 };
    window.vidupPlayer = { hls: null };
    this.select.addEventListener('change', () => this.#choose(Number(this.select.value)));
    this.video.addEventListener('resize', () => { if (!this.hls && this.doc) this.#showPlaying(this.video.videoHeight); });
    this.video.addEventListener('error', () => {
      if (!this.hls && this.doc) this.#error('The browser could not play this video.');
    });
  }

  /** Open a completed video's status document. */
  async open(doc) {
    this.close();
    this.doc = doc;
    this.section.hidden = false;
    setText(this.title, doc.filename || doc.id || '');
    setText(this.error, '');
    if (doc.poster_url) this.video.poster = doc.poster_url;
    else this.video.removeAttribute('poster');
    const url = doc.master_playlist_url;
    if (!url) {
      this.#error('This video has no playlist yet.');
      return;
    }
    this.section.scrollIntoView({ block: 'nearest', behavior: 'smooth' });
    this.video.focus({ preventScroll: true });
    let Hls = null;
    try {
      Hls = await loadHls();
    } catch {
      // Offline or blocked: native HLS may still work below.
    }
    if (this.doc !== doc) return; // another video was chosen meanwhile
    if (Hls?.isSupported()) this.#openHls(Hls, url);
    else if (this.video.canPlayType('application/vnd.apple.mpegurl')) this.#openNative(url, doc.renditions || []);
    else {
      this.#error(Hls ? 'This browser cannot play HLS video.' : 'The player could not be loaded: check your connection and press Play again.');
      return;
    }
    this.video.play().catch(() => { /* autoplay refused: the controls are there */ });
  }

  close() {
    if (this.hls) {
      this.hls.destroy();
      this.hls = null;
    }
    window.vidupPlayer = { hls: null };
    this.doc = null;
    this.nativeRenditions = [];
    this.recovered = { network: 0, media: 0 };
    this.video.removeAttribute('src');
    this.video.removeAttribute('poster');
    this.video.load();
    this.#setOptions([]);
    setText(this.playing, '');
  }

  #openHls(Hls, url) {
    const hls = new Hls({
      enableWorker: Boolean(WORKER_URL),
      workerPath: WORKER_URL,
      capLevelToPlayerSize: false,
    });
    this.hls = hls;
    window.vidupPlayer = { hls };
    hls.on(Hls.Events.MANIFEST_PARSED, () => {
      const options = hls.levels.map((level, index) => ({ index, level })).sort((a, b) => (b.level.height || 0) - (a.level.height || 0) || (b.level.bitrate || 0) - (a.level.bitrate || 0));
      this.#setOptions(options.map(({ index, level }) => ({ value: index, label: levelName(level) })));
    });
    hls.on(Hls.Events.LEVEL_SWITCHED, (event, data) => {
      this.#showPlaying(hls.levels[data.level]?.height, hls.levels[data.level]);
    });
    hls.on(Hls.Events.ERROR, (event, data) => {
      if (!data.fatal || hls !== this.hls) return;
      if (data.type === Hls.ErrorTypes.NETWORK_ERROR && this.recovered.network++ < 2) {
        hls.startLoad();
      } else if (data.type === Hls.ErrorTypes.MEDIA_ERROR && this.recovered.media++ < 2) {
        hls.recoverMediaError();
      } else {
        const status = data.response?.code;
        this.#error(status === 403 || status === 401
          ? 'The playback link has expired: refresh the list and press Play again.'
          : `The video could not be played (${data.details}).`);
        hls.destroy();
        this.hls = null;
      }
    });
    hls.loadSource(url);
    hls.attachMedia(this.video);
  }

  #openNative(url, renditions) {
    this.video.src = url;
    this.nativeRenditions = [...renditions].filter((r) => r.playlist_url).sort((a, b) => (b.height || 0) - (a.height || 0));
    this.#setOptions(this.nativeRenditions.map((r, index) => ({ value: index, label: r.height ? `${r.height}p` : r.name })));
  }

  #choose(index) {
    if (this.hls) {
      this.hls.currentLevel = index; // -1 = Auto (adaptive); else switch now (LEVEL_SWITCHED updates the readout)
      return;
    }
    if (!this.doc) return;
    // Native HLS can't pick a level: load that rendition's playlist where we are.
    const rendition = index >= 0 ? this.nativeRenditions[index] : null;
    const time = this.video.currentTime;
    const paused = this.video.paused;
    this.video.src = rendition ? rendition.playlist_url : this.doc.master_playlist_url;
    this.video.addEventListener('loadedmetadata', () => {
      this.video.currentTime = time;
      if (!paused) this.video.play().catch(() => {});
    }, { once: true });
  }

  #setOptions(entries) {
    const auto = new Option('Auto', '-1', true, true);
    this.select.replaceChildren(auto, ...entries.map(({ value, label }) => new Option(label, String(value))));
    this.select.disabled = entries.length === 0;
  }

  #showPlaying(height, level) {
    const name = height ? `${height}p` : level ? levelName(level) : '';
    setText(this.playing, name ? `Playing ${name}` : '');
  }

  #error(message) {
    setText(this.error, message);
  }
}
