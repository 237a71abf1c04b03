// Wiring: sign-in, the upload area (picker + drop zone), the video list and the player.

import { Session } from './api.js';
import { VideoList } from './library.js';
import { Player, loadHls } from './player.js';
import { Uploader } from './uploads.js';
import { announce, byId, formatBytes, setText } from './ui.js';

const form = byId('sign-in-form');
const keyInput = byId('api-key');
const signInBtn = byId('sign-in');
const authStatus = byId('auth-status');
const authError = byId('auth-error');
const account = byId('account');
const tenantEl = byId('tenant');
const signOutBtn = byId('sign-out');
const intro = byId('intro');
const app = byId('app');
const dropZone = byId('drop-zone');
const fileInput = byId('file-input');
const uploadNote = byId('upload-note');
const limitHint = byId('limit-hint');

const session = new Session();
const player = new Player({
  section: byId('player-section'),
  video: byId('player'),
  select: byId('quality'),
  playing: byId('playing'),
  title: byId('player-title'),
  error: byId('player-error'),
});
const openPlayer = (doc) => player.open(doc);
const list = new VideoList(session, byId('video-list'), byId('library-state'), { onPlay: openPlayer });
const uploader = new Uploader(session, {
  addCard: (card) => list.addUploadCard(card),
  onUploaded: (job, videoId) => {
    if (videoId) list.followUpload(job.card, videoId);
    list.refresh();
  },
  onUploadUrl: (job, videoId) => list.claim(videoId, job.card),
  onRemoved: (job) => list.release(job.card),
  onPlay: openPlayer,
});
let lastTenant = null;

// -- signing in and out ------------------------------------------------------------------------

async function signIn(key, { auto = false } = {}) {
  setText(authError, '');
  setText(authStatus, 'Signing in…');
  signInBtn.disabled = true;
  keyInput.setAttribute('aria-busy', 'true');
  try {
    await session.signIn(key, { onWait: (message) => setText(authStatus, message) });
  } catch (err) {
    setText(authStatus, '');
    setText(authError, err.message);
    if ((err.status === 401 || err.status === 403) && Session.storedKey()) session.signOut(); // forget a bad key
    showSignedOut();
    if (!auto) keyInput.select();
    return;
  } finally {
    signInBtn.disabled = false;
    keyInput.removeAttribute('aria-busy');
  }
  keyInput.value = '';
  setText(authStatus, '');
  showSignedIn();
}

function showSignedIn() {
  if (lastTenant !== null && lastTenant !== session.tenant) resetApp();
  lastTenant = session.tenant;
  form.hidden = true;
  account.hidden = false;
  setText(tenantEl, session.tenant || '—');
  intro.hidden = true;
  app.hidden = false;
  setUploadEnabled(true);
  announce(`Signed in${session.tenant ? ` as ${session.tenant}` : ''}.`);
  list.refresh();
  uploader.resumeAfterSignIn();
  uploader.fetchMaxSize().then((max) => {
    setText(limitHint, max ? `Up to ${formatBytes(max)} per file.` : '');
  });
  // Fetch the player's code while nothing else happens, so the first Play is quick.
  (window.requestIdleCallback || setTimeout)(() => loadHls().catch(() => {}), { timeout: 3000 });
}

function showSignedOut() {
  form.hidden = false;
  account.hidden = true;
  setUploadEnabled(false);
  if (app.hidden) intro.hidden = false;
}

function resetApp() {
  uploader.stopAll();
  list.clear();
  player.close();
  player.section.hidden = true;
  setText(uploadNote, '');
  setText(limitHint, '');
}

function setUploadEnabled(enabled) {
  fileInput.disabled = !enabled;
  dropZone.classList.toggle('disabled', !enabled);
  dropZone.setAttribute('aria-disabled', String(!enabled));
}

form.addEventListener('submit', (event) => {
  event.preventDefault();
  signIn(keyInput.value);
});

signOutBtn.addEventListener('click', () => {
  session.signOut();
  resetApp();
  lastTenant = null;
  app.hidden = true;
  setText(authError, '');
  showSignedOut();
  announce('Signed out.');
  keyInput.focus();
});

session.addEventListener('ended', (event) => {
  // Renewal failed for good: uploads pause themselves; the cards stay until a new sign-in.
  setText(authError, event.detail.message);
  showSignedOut();
  keyInput.focus();
});

document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'visible') session.checkRenewal();
});
window.addEventListener('offline', () => announce('Connection lost: uploads will retry.'));
window.addEventListener('online', () => announce('Back online.'));

// -- choosing files ----------------------------------------------------------------------------

function addFiles(files, { dropped = false } = {}) {
  if (!session.signedIn) {
    setText(authError, 'Sign in with your API key before uploading.');
    return;
  }
  const count = files?.length || 0;
  if (!count) return;
  const skipped = uploader.add(files, { onlyVideos: dropped });
  const started = count - skipped;
  setText(uploadNote, skipped ? `${skipped} ${skipped === 1 ? 'file was' : 'files were'} skipped: not a video.` : '');
  if (started) announce(`${started} ${started === 1 ? 'upload' : 'uploads'} added.`);
}

fileInput.addEventListener('change', () => {
  addFiles(fileInput.files);
  fileInput.value = ''; // picking the same file again (e.g. to resume) fires change again
});

const carriesFiles = (event) => Array.from(event.dataTransfer?.types || []).includes('Files');

for (const type of ['dragenter', 'dragover']) {
  dropZone.addEventListener(type, (event) => {
    if (!carriesFiles(event)) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = session.signedIn ? 'copy' : 'none';
    dropZone.classList.add('dragging');
  });
}
dropZone.addEventListener('dragleave', (event) => {
  if (!dropZone.contains(event.relatedTarget)) dropZone.classList.remove('dragging');
});
dropZone.addEventListener('drop', (event) => {
  event.preventDefault();
  dropZone.classList.remove('dragging');
  addFiles(event.dataTransfer?.files, { dropped: true });
});
// A file dropped next to the zone must not navigate away (and stop the uploads).
window.addEventListener('dragover', (event) => {
  if (carriesFiles(event) && !dropZone.contains(event.target)) {
    event.preventDefault();
    event.dataTransfer.dropEffect = 'none';
  }
});
window.addEventListener('drop', (event) => {
  if (!dropZone.contains(event.target)) event.preventDefault();
});

byId('refresh').addEventListener('click', () => list.refresh());

// -- start ---------------------------------------------------------------------------------------

setUploadEnabled(false);
const storedKey = Session.storedKey();
if (storedKey) signIn(storedKey, { auto: true });
