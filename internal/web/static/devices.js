// The devices list: status and last seen of the rows on the page follow
// the live stream (coalesced: each flush touches each changed row once),
// silent devices are greyed after their type's heartbeat timeout, and
// bulk actions call the API once per selected device.
import { api, live, markStale, fmtTime, toast, confirmThen, canWrite } from './app.js';

const tbody = document.querySelector('#devices tbody');
const rows = new Map();
for (const tr of tbody.querySelectorAll('tr[data-id]')) rows.set(tr.dataset.id, tr);

function setStatus(tr, text, cls) {
  const s = tr.querySelector('[data-f=status]');
  s.textContent = text;
  s.className = 'status ' + cls;
}

const FLASH = [{ backgroundColor: '#fff8c5' }, { backgroundColor: 'transparent' }];

function apply(batch) {
  // Keep the last state of each device in this batch, then touch the DOM.
  const latest = new Map();
  for (const e of batch) {
    if (!rows.has(e.device_id)) continue;
    const st = latest.get(e.device_id) ?? {};
    st.seen = e.time;
    switch (e.type) {
      case 'device_connected': st.connected = true; break;
      case 'device_disconnected': st.connected = false; break;
      case 'device_status_changed': st.status = e.args?.new_status; break;
      case 'device_disabled_changed': st.disabled = e.args?.disabled; break;
    }
    latest.set(e.device_id, st);
  }
  for (const [id, st] of latest) {
    const tr = rows.get(id);
    if (st.disabled !== undefined) tr.classList.toggle('disabled', st.disabled);
    if (st.connected !== undefined) tr.dataset.connected = st.connected;
    if (st.status !== undefined) tr.dataset.status = st.status;
    if (tr.classList.contains('disabled')) setStatus(tr, 'disabled', 's-disabled');
    else if (tr.dataset.connected === 'true') setStatus(tr, 'online', 's-online');
    else if (st.connected === false || st.status !== undefined) {
      const s = tr.dataset.status && tr.dataset.status !== 'online' ? tr.dataset.status : 'offline';
      setStatus(tr, s, 's-' + s);
    }
    tr.dataset.seen = st.seen;
    const t = tr.querySelector('[data-f=seen] time');
    t.dateTime = st.seen;
    t.textContent = fmtTime(st.seen);
    // A few changed rows flash; a page where everything changes does
    // not (restarting a CSS animation forces a layout per row, and 250
    // of them four times a second kept the main thread busy).
    if (latest.size <= 20) tr.animate(FLASH, 1000);
  }
  markStale(latest.size ? [...latest.keys()].map((id) => rows.get(id)) : []);
}

if (rows.size) {
  live({
    types: ['device_connected', 'device_disconnected', 'device_status_changed', 'device_data_received', 'device_disabled_changed'],
    // Only the page's devices: the hub filters, the browser parses no
    // event of the rest of the fleet.
    deviceIds: [...rows.keys()],
    onBatch: apply,
  });
}
markStale(rows.values());
setInterval(() => markStale(rows.values()), 5000);

// Bulk actions: a command goes to every selected device in one fleet job
// (the page follows its progress); group and disable are one call per
// device, four at a time, each audited under the user's name.
if (canWrite) {
  const bulk = document.getElementById('bulk');
  const out = document.getElementById('bulk-job');
  const boxes = () => [...tbody.querySelectorAll('input[type=checkbox]')];
  const selected = () => boxes().filter((b) => b.checked).map((b) => b.value);
  const update = () => {
    const n = selected().length;
    bulk.hidden = n === 0;
    document.getElementById('bulk-count').textContent = `${n} selected`;
  };
  tbody.addEventListener('change', update);
  document.getElementById('sel-all')?.addEventListener('change', (ev) => {
    for (const b of boxes()) b.checked = ev.target.checked;
    update();
  });
  const each = async (ids, fn) => {
    let ok = 0, next = 0;
    const worker = async () => {
      while (next < ids.length) {
        const id = ids[next++];
        try { await fn(id); ok++; } catch (e) { toast(`${id}: ${e.message}`, true); }
      }
    };
    await Promise.all([worker(), worker(), worker(), worker()]);
    return ok;
  };
  const follow = async (job) => {
    // The job fans out in the background; show its summary until every
    // command has an answer (or a minute has passed).
    for (let i = 0; i < 60; i++) {
      const a = await api('GET', '/api/v1/fleet/commands/' + encodeURIComponent(job));
      const s = a.summary ?? {};
      const done = (s.succeeded ?? 0) + (s.failed ?? 0) + (s.expired ?? 0) + (s.canceled ?? 0);
      out.textContent = `job ${job}: ${a.job.targets} targets, ${s.delivered ?? 0} delivered, ${s.succeeded ?? 0} succeeded, ${s.failed ?? 0} failed` +
        (a.job.refused ? `, ${a.job.refused} refused (${a.job.refusal})` : '');
      out.dataset.done = String(done);
      out.dataset.status = a.job.status;
      if (a.job.status === 'done' && done + (a.job.refused ?? 0) >= a.job.targets) return;
      await new Promise((r) => setTimeout(r, 1000));
    }
  };
  bulk.addEventListener('click', (ev) => {
    const action = ev.target.dataset.bulk;
    if (!action) return;
    const ids = selected();
    const f = bulk.elements;
    if (action === 'command') {
      let payload;
      try { payload = f.payload.value.trim() ? JSON.parse(f.payload.value) : undefined; } catch (e) { toast('Payload: ' + e.message, true); return; }
      confirmThen(`Send ${f.command.value} to ${ids.length} devices?`, async () => {
        const res = await api('POST', '/api/v1/fleet/commands', { command: f.command.value, payload, target: { device_ids: ids } });
        toast(`Command ${f.command.value} sent to ${ids.length} devices (job ${res.job.id})`);
        out.dataset.job = res.job.id;
        await follow(res.job.id);
      });
      return;
    }
    const group = f.group.value;
    const msg = action === 'group' ? `Move ${ids.length} devices to group "${group || '(none)'}"?` : `${action} ${ids.length} devices?`;
    confirmThen(msg, async () => {
      const ok = await each(ids, (id) => {
        const p = '/api/v1/devices/' + encodeURIComponent(id);
        if (action === 'group') return api('PATCH', p, { group });
        return api('POST', `${p}/${action}`, action === 'disable' ? { reason: 'dashboard bulk action' } : undefined);
      });
      toast(`${action}: ${ok} of ${ids.length} done`);
      if (ok) setTimeout(() => location.reload(), 600);
    });
  });
}
