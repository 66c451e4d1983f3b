// A device's page: charts over a chosen range that append live, latest
// values, presence, commands with their results, the twin editor and the
// credential actions, all through /api/v1 and the live stream.
import { api, live, markStale, fmtTime, fmtValue, toast, confirmThen, el } from './app.js';
import { Chart } from './chart.js';

const root = document.getElementById('device');
const id = root.dataset.id;
const base = '/api/v1/devices/' + encodeURIComponent(id);
const charts = new Map();
for (const fig of document.querySelectorAll('figure.chart')) charts.set(fig.dataset.field, { chart: new Chart(fig.querySelector('canvas')), fig });

// ---- charts -------------------------------------------------------------
const ranges = { '1h': 36e5, '24h': 864e5, '168h': 6048e5 };
let range = { rel: ranges['1h'] };   // rel: the last rel ms (moves with time); or from/to
let loadSeq = 0;

// Timing of the last load, for the browser tests' performance figures.
window.devicehubCharts = { points: 0, fetchMs: 0, drawMs: 0, loads: 0 };

// Ranges longer than this are drawn from the hub's buckets (min and max
// per bucket, about one bucket per pixel column) instead of every reading:
// a week at one reading per 10 s is 60,480 readings, 14 MB of JSON.
const RAW_MAX = 6 * 36e5;

async function loadCharts() {
  if (!charts.size) return;
  const seq = ++loadSeq;
  const to = range.rel ? Date.now() : range.to, from = range.rel ? to - range.rel : range.from;
  const t0 = performance.now();
  const cols = new Map([...charts.keys()].map((f) => [f, { t: [], v: [], count: 0 }]));
  let total = 0;
  let buckets = 0;
  if (to - from > RAW_MAX) {
    // One request per field, in parallel.
    await Promise.all([...cols].map(async ([f, col]) => {
      const width = charts.get(f).fig.querySelector('canvas').clientWidth || 600;
      const q = new URLSearchParams({ field: f, from: new Date(from).toISOString(), to: new Date(to).toISOString(),
        buckets: String(Math.min(2000, Math.max(100, Math.round(width)))) });
      const agg = await api('GET', `${base}/readings/aggregate?${q}`);
      const step = (to - from) / Number(q.get('buckets'));
      for (const b of agg.buckets ?? []) {
        // Two points a bucket: the chart draws each pixel column from its
        // points' min and max, so the envelope is the bucket's.
        const ts = Date.parse(b.start);
        col.t.push(ts, ts + step / 2); col.v.push(b.min, b.max);
        col.count += b.count;
      }
      buckets += agg.buckets?.length ?? 0;
    }));
    if (seq !== loadSeq) return;
    total = Math.max(0, ...[...cols.values()].map((c) => c.count));
  } else {
    let cursor = '';
    do {
      const q = new URLSearchParams({ from: new Date(from).toISOString(), limit: '10000' });
      if (!range.rel) q.set('to', new Date(to).toISOString());
      if (cursor) q.set('cursor', cursor);
      const page = await api('GET', `${base}/readings?${q}`);
      if (seq !== loadSeq) return;
      for (const r of page.readings) {
        const ts = Date.parse(r.ts);
        for (const [f, col] of cols) {
          const v = r.values[f];
          if (typeof v === 'number') { col.t.push(ts); col.v.push(v); col.count++; }
        }
      }
      total += page.readings.length;
      cursor = page.next ?? '';
    } while (cursor);
    // Pages come newest first.
    for (const col of cols.values()) { col.t.reverse(); col.v.reverse(); }
  }
  const t1 = performance.now();
  for (const [f, col] of cols) {
    const { chart, fig } = charts.get(f);
    chart.setData(Float64Array.from(col.t), Float64Array.from(col.v));
    if (range.rel) chart.setRelative(range.rel); else chart.setRange(from, to);
    chart.draw();
    fig.querySelector('[data-f=info]').textContent = buckets ? `${col.count} readings in ${col.t.length / 2} buckets` : `${col.count} points`;
    fig.dataset.points = col.count;
  }
  const t2 = performance.now();
  Object.assign(window.devicehubCharts, { points: total, buckets, fetchMs: t1 - t0, drawMs: t2 - t1, loads: window.devicehubCharts.loads + 1 });
}

// redraw draws every chart again and returns how long it took (ms): the
// browser tests' time-to-draw figure.
window.devicehubCharts.redraw = () => {
  const t0 = performance.now();
  for (const { chart } of charts.values()) chart.draw();
  return performance.now() - t0;
};

// A relative range moves forward as time passes.
setInterval(() => {
  if (range.rel) for (const { chart } of charts.values()) chart.schedule();
}, 5000);

const rangeForm = document.getElementById('range');
rangeForm?.addEventListener('change', (ev) => {
  if (ev.target.name !== 'r') return;
  const v = ev.target.value;
  document.getElementById('custom').hidden = v !== 'custom';
  if (v !== 'custom') { range = { rel: ranges[v] }; loadCharts().catch((e) => toast(e.message, true)); }
});
rangeForm?.addEventListener('submit', (ev) => {
  ev.preventDefault();
  const f = Date.parse(rangeForm.elements.from.value + 'Z'), t = Date.parse(rangeForm.elements.to.value + 'Z');
  if (!(f < t)) { toast('Custom range: "from" must be before "to".', true); return; }
  range = { from: f, to: t };
  loadCharts().catch((e) => toast(e.message, true));
});

// ---- live ---------------------------------------------------------------
const latest = document.querySelector('#latest tbody');
const readings = document.querySelector('#readings tbody');
const messages = document.querySelector('#messages tbody');
const presence = document.getElementById('presence');
const status = document.getElementById('dev-status');

function dropEmpty(tbody) { tbody.querySelector('tr.empty')?.remove(); }

function setLatest(field, v, ts) {
  let tr = latest.querySelector(`tr[data-field="${CSS.escape(field)}"]`);
  if (!tr) {
    dropEmpty(latest);
    tr = el('tr', { 'data-field': field }, el('th', { text: field }), el('td', { class: 'num', 'data-f': 'v' }), el('td', { class: 'muted small' }, el('time')));
    latest.append(tr);
  }
  if (tr.dataset.ts && Date.parse(tr.dataset.ts) > ts) return;
  tr.dataset.ts = new Date(ts).toISOString();
  tr.querySelector('[data-f=v]').textContent = fmtValue(v);
  const t = tr.querySelector('time');
  t.dateTime = tr.dataset.ts; t.textContent = fmtTime(ts);
}

async function loadPresence() {
  const res = await api('GET', `${base}/presence?limit=50`);
  // Newest first; live events arriving meanwhile stay on top.
  for (const e of res.events) addPresence(e, true);
}

const shownSeq = new Set();

function addPresence(e, old = false) {
  if (shownSeq.has(e.seq)) return;
  shownSeq.add(e.seq);
  const a = e.args ?? {};
  let text = e.type.replaceAll('_', ' ');
  if (e.type === 'device_connected') text = `connected (${a.transport ?? 'mqtt'}${a.remote_addr ? ' from ' + a.remote_addr : ''})`;
  if (e.type === 'device_disconnected') text = `disconnected: ${a.reason || 'no reason'}${a.error ? ' — ' + a.error : ''}`;
  if (e.type === 'device_status_changed') text = `status ${a.old_status} → ${a.new_status}`;
  const li = el('li', { 'data-type': e.type }, el('time', { datetime: e.time, text: fmtTime(e.time) }), text);
  if (old) presence.append(li); else presence.prepend(li);
  while (presence.children.length > 100) presence.lastChild.remove();
}

function setStatus(text, cls) { status.textContent = text; status.className = 'status ' + cls; }

function onEvent(e) {
  root.dataset.seen = e.time;
  const seen = document.getElementById('dev-seen');
  seen.dateTime = e.time; seen.textContent = fmtTime(e.time);
  const a = e.args ?? {};
  switch (e.type) {
    case 'device_data_received':
      for (const r of a.readings ?? []) {
        const ts = Date.parse(r.ts);
        for (const [f, v] of Object.entries(r.values ?? {})) {
          setLatest(f, v, ts);
          const c = charts.get(f);
          if (c && typeof v === 'number') {
            c.chart.append(ts, v);
            c.fig.dataset.points = Number(c.fig.dataset.points || 0) + 1;
            c.fig.querySelector('[data-f=info]').textContent = `${c.fig.dataset.points} points`;
          }
        }
        dropEmpty(readings);
        readings.prepend(el('tr', {}, el('td', {}, el('time', { datetime: r.ts, text: fmtTime(r.ts) })), el('td', { text: r.stream ?? '' }), el('td', {}, el('code', { text: JSON.stringify(r.values) }))));
        while (readings.children.length > 200) readings.lastChild.remove();
      }
      break;
    case 'device_connected':
      setStatus('online', 's-online');
      document.getElementById('dev-connected').textContent = 'true';
      addPresence(e); break;
    case 'device_disconnected':
      setStatus('offline', 's-offline');
      document.getElementById('dev-connected').textContent = 'false';
      addPresence(e); break;
    case 'device_status_changed':
      if (a.new_status !== 'online' || status.textContent !== 'online') setStatus(a.new_status, 's-' + a.new_status);
      addPresence(e); break;
    case 'message_rejected':
      dropEmpty(messages);
      messages.prepend(el('tr', { class: 'rejected' }, el('td', {}, el('time', { datetime: e.time, text: fmtTime(e.time) })), el('td', { text: a.topic }),
        el('td', {}, el('strong', { text: 'rejected' }), `: ${a.code} — ${a.reason}`), el('td')));
      break;
    case 'device_command_sent': case 'device_command_delivered': case 'device_command_result':
    case 'device_command_expired': case 'device_command_canceled':
      setCommand(a.command_id, a.command, {
        device_command_sent: 'sent', device_command_delivered: 'delivered', device_command_expired: 'expired',
        device_command_canceled: 'canceled',
      }[e.type] || a.status, a.result, e.time);
      break;
    case 'twin_reported_changed': case 'twin_desired_changed':
      refreshTwin(e.type === 'twin_desired_changed');
      break;
  }
  markStale([root]);
}

live({
  deviceIds: [id],
  types: ['device_data_received', 'device_connected', 'device_disconnected', 'device_status_changed', 'message_rejected',
    'device_command_sent', 'device_command_delivered', 'device_command_result', 'device_command_expired', 'device_command_canceled',
    'twin_reported_changed', 'twin_desired_changed'],
  interval: 100,
  onBatch: (batch) => batch.forEach(onEvent),
});
markStale([root]);
setInterval(() => markStale([root]), 5000);

// ---- commands -----------------------------------------------------------
const cmdBody = document.querySelector('#commands tbody');

function setCommand(cid, name, st, result, time) {
  let tr = cmdBody.querySelector(`tr[data-cmd="${CSS.escape(cid)}"]`);
  if (!tr) {
    dropEmpty(cmdBody);
    tr = el('tr', { 'data-cmd': cid }, el('td', { text: name }), el('td', {}, el('span', { 'data-f': 'status' })),
      el('td', { 'data-f': 'result' }, el('code')), el('td', { class: 'small' }, el('time', { datetime: time, text: fmtTime(time) })));
    cmdBody.prepend(tr);
  }
  const s = tr.querySelector('[data-f=status]');
  // A result is final: a late "sent" does not undo it.
  if (['succeeded', 'failed', 'expired'].includes(s.textContent) && st === 'sent') return;
  s.textContent = st; s.className = 'cstatus c-' + st;
  if (result !== undefined && result !== null) tr.querySelector('[data-f=result] code').textContent = JSON.stringify(result);
}

// A command whose parameters the type declares gets a field for each
// (typed, with its bounds; the browser checks them before sending); the
// others take a free JSON payload.
const cmdForm = document.getElementById('command-form');
const paramSet = () => cmdForm.querySelector(`fieldset[data-params-for="${CSS.escape(cmdForm.elements.command.value)}"]`);
function showParams() {
  const shown = paramSet();
  for (const fs of cmdForm.querySelectorAll('fieldset.params')) { fs.hidden = fs !== shown; fs.disabled = fs !== shown; }
  document.getElementById('payload-raw').hidden = !!shown;
}
if (cmdForm) { cmdForm.elements.command.addEventListener('change', showParams); showParams(); }

function paramsPayload(fs) {
  const out = {};
  for (const input of fs.querySelectorAll('input[data-type]')) {
    const name = input.name.slice(2);
    switch (input.dataset.type) {
      case 'bool': out[name] = input.checked; break;
      case 'int': case 'float': if (input.value !== '') out[name] = Number(input.value); break;
      case 'json': if (input.value.trim()) out[name] = JSON.parse(input.value); break;
      default: if (input.value !== '') out[name] = input.value;
    }
  }
  return out;
}

cmdForm?.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const f = ev.target;
  const body = { command: f.elements.command.value, expires_in: f.elements.expires_in.value || undefined };
  const fs = paramSet();
  if (fs) {
    try { body.payload = paramsPayload(fs); } catch (e) { toast('Parameter: not JSON: ' + e.message, true); return; }
  } else {
    const raw = f.elements.payload.value.trim();
    if (raw) {
      try { body.payload = JSON.parse(raw); } catch (e) { toast('Payload: not JSON: ' + e.message, true); return; }
    }
  }
  try {
    const res = await api('POST', `${base}/commands`, body);
    const c = res.command;
    setCommand(c.id, c.command, c.status, c.result, c.created_at);
    toast(`Command ${c.command} ${c.status === 'pending' ? 'queued (device offline)' : 'sent'}; waiting for the result…`);
  } catch (e) { toast(e.message, true); }
});

// ---- twin ---------------------------------------------------------------
const twinForm = document.getElementById('twin-form');
let twinVersion = Number(root.dataset.twinVersion);

async function refreshTwin(desiredToo) {
  const { twin } = await api('GET', `${base}/twin`);
  document.getElementById('twin-reported').textContent = JSON.stringify(twin.reported.values);
  const delta = {};
  for (const [k, v] of Object.entries(twin.desired.values)) if (JSON.stringify(twin.reported.values[k]) !== JSON.stringify(v)) delta[k] = v;
  document.getElementById('twin-delta').textContent = JSON.stringify(delta);
  if (desiredToo && twin.desired.version !== twinVersion) {
    // Someone else changed it: keep the user's edit, tell them.
    document.getElementById('twin-version').textContent = `${twinVersion} (now ${twin.desired.version} on the hub)`;
  }
  return twin;
}

twinForm?.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  let values;
  try { values = JSON.parse(twinForm.elements.desired.value); } catch (e) { toast('Desired: not JSON: ' + e.message, true); return; }
  if (values === null || typeof values !== 'object' || Array.isArray(values)) { toast('Desired: must be a JSON object', true); return; }
  try {
    const res = await api('PUT', `${base}/twin/desired`, { values, expected_version: twinVersion });
    twinVersion = res.twin.desired.version;
    document.getElementById('twin-version').textContent = twinVersion;
    toast(`Desired properties saved (version ${twinVersion}).`);
    refreshTwin(false);
  } catch (e) {
    if (e.code === 'version_conflict') {
      const twin = await refreshTwin(false);
      const mine = twinForm.elements.desired.value;
      if (window.confirm(`Someone changed the desired properties meanwhile (version ${twin.desired.version}): ${JSON.stringify(twin.desired.values)}\n\nOK: load theirs (your edit is copied to the clipboard). Cancel: keep editing yours against their version.`)) {
        navigator.clipboard?.writeText(mine).catch(() => {});
        twinForm.elements.desired.value = JSON.stringify(twin.desired.values);
      }
      twinVersion = twin.desired.version;
      document.getElementById('twin-version').textContent = twinVersion;
      return;
    }
    toast(e.message, true);
  }
});

// ---- credentials --------------------------------------------------------
document.getElementById('cred-actions')?.addEventListener('click', (ev) => {
  const action = ev.target.dataset.action;
  if (!action) return;
  confirmThen(ev.target.dataset.confirm, async () => {
    const body = action === 'disable' || action === 'revoke' ? { reason: 'from the dashboard' } : undefined;
    const res = await api('POST', `${base}/${action}`, body);
    if (action === 'rotate' && res?.credentials) {
      const out = document.getElementById('cred-out');
      out.hidden = false;
      out.textContent = `New credentials (shown once):\nmqtt_username: ${res.credentials.mqtt_username}\nmqtt_password: ${res.credentials.mqtt_password}\napi_key: ${res.credentials.api_key}`;
      toast('Credentials rotated.');
    } else {
      toast(`${action}: done`);
      setTimeout(() => location.reload(), 600);
    }
  });
});

loadCharts().catch((e) => toast(e.message, true));
loadPresence().catch((e) => toast(e.message, true));
