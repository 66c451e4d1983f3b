// The overview: counts refreshed from the fleet summary when presence
// changes (at most every 2 s), ingest and rejection rates from the live
// stream, and the latest events.
import { api, live, fmtTime, el } from './app.js';

const WINDOW = 10;          // seconds the rates average over
const HISTORY = 300;        // seconds of the rate chart
const perSec = new Map();   // second -> [data, rejected]
const history = [];         // rate per second, oldest first
let dirty = false;

const sec = () => Math.floor(Date.now() / 1000);

function count(kind) {
  const s = sec();
  const c = perSec.get(s) ?? [0, 0];
  c[kind]++;
  perSec.set(s, c);
}

function rates() {
  const now = sec();
  let d = 0, r = 0;
  for (let s = now - WINDOW; s < now; s++) {
    const c = perSec.get(s);
    if (c) { d += c[0]; r += c[1]; }
  }
  for (const s of perSec.keys()) if (s < now - HISTORY) perSec.delete(s);
  document.getElementById('rate-data').textContent = (d / WINDOW).toFixed(1);
  document.getElementById('rate-rejected').textContent = (r / WINDOW).toFixed(1);
  history.push((perSec.get(now - 1) ?? [0])[0]);
  if (history.length > HISTORY) history.shift();
  drawRates();
}

function drawRates() {
  const c = document.getElementById('rate-chart');
  const w = c.clientWidth, h = c.clientHeight, dpr = window.devicePixelRatio || 1;
  if (c.width !== w * dpr) { c.width = w * dpr; c.height = h * dpr; }
  const g = c.getContext('2d');
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  const max = Math.max(1, ...history);
  g.strokeStyle = '#1f6feb'; g.lineWidth = 1.5; g.beginPath();
  history.forEach((v, i) => {
    const x = w - (history.length - 1 - i) * (w / HISTORY), y = h - 4 - (v / max) * (h - 12);
    i ? g.lineTo(x, y) : g.moveTo(x, y);
  });
  g.stroke();
  g.fillStyle = '#6a737d'; g.font = '11px system-ui'; g.fillText(`max ${max}/s`, 4, 12);
}

// The tiles of alerts, configurations and rollouts follow their events
// too, each counted again at most every 2 s after a change.
const tiles = {
  alerts: { el: 'n-alerts', dirty: false, async count() { const r = await api('GET', '/api/v1/alerts?state=open&limit=1000'); return (r.alerts ?? []).length + ((r.alerts ?? []).length >= 1000 ? '+' : ''); } },
  config: { el: 'n-config', dirty: false, async count() { const r = await api('GET', '/api/v1/configs?not_applied=true&limit=1000'); return (r.configs ?? []).length + (r.next ? '+' : ''); } },
  rollouts: { el: 'n-rollouts', dirty: false, async count() { const r = await api('GET', '/api/v1/firmware/rollouts'); return (r.rollouts ?? []).filter((x) => x.status === 'running' || x.status === 'paused').length; } },
};
const tileOf = (type) => type.startsWith('alert_') ? 'alerts' : type.startsWith('config_') ? 'config' : type === 'rollout_status_changed' ? 'rollouts' : '';

async function refreshTiles() {
  for (const t of Object.values(tiles)) {
    if (!t.dirty) continue;
    t.dirty = false;
    const node = document.getElementById(t.el);
    if (!node) continue;
    try { node.textContent = await t.count(); } catch { /* the next change retries */ }
  }
}

async function refresh() {
  refreshTiles();
  if (!dirty) return;
  dirty = false;
  try {
    const s = await api('GET', '/api/v1/fleet/summary');
    for (const k of ['online', 'offline', 'error', 'disabled', 'total']) {
      document.getElementById('n-' + k).textContent = s[k];
    }
  } catch { /* the next change retries */ }
}

const list = document.getElementById('events');
function describe(e) {
  const a = e.args ?? {};
  switch (e.type) {
    case 'device_connected': return 'connected';
    case 'device_disconnected': return 'disconnected' + (a.reason ? ` (${a.reason})` : '');
    case 'device_status_changed': return `status ${a.old_status} → ${a.new_status}`;
    case 'message_rejected': return `message rejected: ${a.code} ${a.reason ?? ''}`;
    case 'device_provisioned': return 'provisioned';
    default: return e.type.replaceAll('_', ' ');
  }
}

live({
  types: ['device_data_received', 'message_rejected', 'device_connected', 'device_disconnected',
    'device_status_changed', 'device_provisioned', 'device_disabled_changed',
    'alert_raised', 'alert_acknowledged', 'alert_cleared', 'config_status_changed', 'config_modified', 'rollout_status_changed'],
  interval: 500,
  onBatch(batch) {
    const shown = [];
    for (const e of batch) {
      if (e.type === 'device_data_received') { count(0); continue; }
      const tile = tileOf(e.type);
      if (tile) { tiles[tile].dirty = true; continue; }
      if (e.type === 'message_rejected') count(1);
      if (e.type !== 'message_rejected') dirty = true;
      shown.push(e);
    }
    // Only the newest few of a burst are worth drawing.
    for (const e of shown.slice(-20)) {
      const li = el('li', {}, el('time', { datetime: e.time, text: fmtTime(e.time) }),
        el('a', { href: '/devices/' + encodeURIComponent(e.device_id), text: e.device_id }), ' ' + describe(e));
      list.prepend(li);
    }
    while (list.children.length > 50) list.lastChild.remove();
  },
});
setInterval(rates, 1000);
setInterval(refresh, 2000);
