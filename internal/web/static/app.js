// Shared helpers of the dashboard's pages: calls of the REST API with the
// session's CSRF token, the live event stream (coalesced), time formats
// and notices.

export const csrf = document.querySelector('meta[name="csrf-token"]')?.content ?? '';
export const canWrite = document.body.dataset.canWrite === 'true';

// api calls the REST API as the signed-in user and returns the decoded
// answer; an error answer throws an Error whose message is the API's.
export async function api(method, path, body) {
  const headers = { 'Accept': 'application/json' };
  if (method !== 'GET') headers['X-CSRF-Token'] = csrf;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: 'same-origin' });
  if (res.status === 401) {
    location.href = '/login?next=' + encodeURIComponent(location.pathname + location.search);
    throw new Error('signed out');
  }
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { /* not JSON */ }
  if (!res.ok) {
    const e = new Error(data?.error?.message ?? `HTTP ${res.status}`);
    e.status = res.status; e.code = data?.error?.code;
    throw e;
  }
  return data;
}

// toast shows a short notice.
export function toast(msg, isError = false) {
  const box = document.getElementById('toast');
  if (!box) return;
  const d = document.createElement('div');
  d.textContent = msg;
  if (isError) d.className = 'err';
  box.append(d);
  setTimeout(() => d.remove(), isError ? 8000 : 4000);
}

const pad = (n) => String(n).padStart(2, '0');

// fmtTime formats a time as the server does: UTC, to the second.
export function fmtTime(t) {
  const d = t instanceof Date ? t : new Date(t);
  if (isNaN(d)) return '—';
  return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}`;
}

// fmtValue formats a reading's value for a cell.
export function fmtValue(v) {
  if (v === null || v === undefined) return '—';
  if (typeof v === 'number') return Number.isInteger(v) ? String(v) : String(+v.toPrecision(4));
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

// live subscribes to the event stream and calls onBatch with the events
// received, at most once per interval and per animation frame: a thousand
// devices changing every second cost a few DOM updates a second, not a
// thousand. It reconnects by itself (EventSource resends Last-Event-ID).
export function live({ types = [], deviceIds = [], onBatch, interval = 250 }) {
  const q = new URLSearchParams();
  if (types.length) q.set('type', types.join(','));
  if (deviceIds.length) q.set('device_id', deviceIds.join(','));
  const dot = document.getElementById('live');
  const es = new EventSource('/api/v1/events?' + q);
  let queue = [];
  let timer = 0;
  const flush = () => {
    timer = 0;
    const batch = queue;
    queue = [];
    requestAnimationFrame(() => { stats.batches++; onBatch(batch); });
  };
  // Counted for the browser tests and measurements.
  const stats = (window.devicehubLive ??= { events: 0, batches: 0 });
  const onEvent = (m) => {
    let e;
    try { e = JSON.parse(m.data); } catch { return; }
    stats.events++;
    queue.push(e);
    if (!timer) timer = setTimeout(flush, interval);
  };
  for (const t of types) es.addEventListener(t, onEvent);
  if (!types.length) es.onmessage = onEvent;
  es.onopen = () => { dot?.classList.add('on'); dot?.classList.remove('err'); document.body.dataset.live = 'on'; };
  es.onerror = () => { dot?.classList.remove('on'); dot?.classList.add('err'); document.body.dataset.live = 'off'; };
  window.addEventListener('pagehide', () => es.close());
  return es;
}

// markStale greys the elements whose data-seen is older than their
// data-stale seconds (the device type's heartbeat timeout).
export function markStale(els, now = Date.now()) {
  for (const el of els) {
    const seen = Date.parse(el.dataset.seen || '');
    const after = Number(el.dataset.stale || 0) * 1000;
    el.classList.toggle('stale', !seen || (after > 0 && now - seen > after));
  }
}

// confirmThen runs fn when the user confirms msg (a native dialog: focus
// and keyboard work as everywhere).
export async function confirmThen(msg, fn) {
  if (msg && !window.confirm(msg)) return;
  try { await fn(); } catch (e) { toast(e.message, true); }
}

// el builds an element with text children only (never HTML from data).
export function el(tag, attrs = {}, ...children) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') n.className = v; else if (k === 'text') n.textContent = v; else n.setAttribute(k, v);
  }
  for (const c of children) n.append(c);
  return n;
}
