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
    tr.classList.remove('flash'); void tr.offsetWidth; tr.classList.add('flash');
  }
  markStale(latest.size ? [...latest.keys()].map((id) => rows.get(id)) : []);
}

if (rows.size) {
  live({
    types: ['device_connected', 'device_disconnected', 'device_status_changed', 'device_data_received', 'device_disabled_changed'],
    onBatch: apply,
  });
}
markStale(rows.values());
setInterval(() => markStale(rows.values()), 5000);

// Sorting by last seen orders the rows of this page, newest first, then
// back to the server's order (by id).
let byId = [...rows.values()];
let sorted = false;
document.getElementById('sort-seen')?.addEventListener('click', () => {
  sorted = !sorted;
  const order = sorted
    ? [...rows.values()].sort((a, b) => (Date.parse(b.dataset.seen) || 0) - (Date.parse(a.dataset.seen) || 0))
    : byId;
  tbody.append(...order);
});

// Bulk actions.
if (canWrite) {
  const bulk = document.getElementById('bulk');
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
  bulk.addEventListener('click', (ev) => {
    const action = ev.target.dataset.bulk;
    if (!action) return;
    const ids = selected();
    const group = bulk.elements.group.value;
    const msg = action === 'group' ? `Move ${ids.length} devices to group "${group || '(none)'}"?` : `${action} ${ids.length} devices?`;
    confirmThen(msg, async () => {
      let ok = 0;
      for (const id of ids) {
        const p = '/api/v1/devices/' + encodeURIComponent(id);
        try {
          if (action === 'group') await api('PATCH', p, { group });
          else await api('POST', `${p}/${action}`, action === 'disable' ? { reason: 'dashboard bulk action' } : undefined);
          ok++;
        } catch (e) { toast(`${id}: ${e.message}`, true); }
      }
      toast(`${action}: ${ok} of ${ids.length} done`);
      if (ok) setTimeout(() => location.reload(), 600);
    });
  });
}
