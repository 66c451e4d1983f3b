// The fleet pages (alerts, firmware, configuration, monitors): their
// actions call one API operation each, after a confirmation; the part of
// the page marked #live-region is fetched again from the server when an
// event of its data-live-types arrives (at most every 2 s), so it stays
// rendered by the one template.
import { api, live, toast, confirmThen } from './app.js';

const enc = encodeURIComponent;
const region = document.getElementById('live-region');

async function refresh() {
  const res = await fetch(location.href, { credentials: 'same-origin', headers: { 'Accept': 'text/html' } });
  if (!res.ok) return;
  const doc = new DOMParser().parseFromString(await res.text(), 'text/html');
  const fresh = doc.getElementById('live-region');
  if (fresh && region) {
    // Keep the keyboard focus where it was when its element is still there.
    const focused = document.activeElement?.closest('[data-alert],[data-rollout],[data-monitor]');
    const key = focused ? Object.entries(focused.dataset).find(([k]) => ['alert', 'rollout', 'monitor'].includes(k)) : null;
    region.replaceChildren(...fresh.childNodes);
    region.dataset.refreshed = String(Number(region.dataset.refreshed || 0) + 1);
    if (key) region.querySelector(`[data-${key[0]}="${CSS.escape(key[1])}"] button`)?.focus();
  }
}

if (region?.dataset.liveTypes) {
  let pending = false;
  live({
    types: region.dataset.liveTypes.split(','),
    interval: 2000,
    onBatch() {
      if (pending) return;
      pending = true;
      refresh().finally(() => { pending = false; });
    },
  });
}

const done = (msg) => { toast(msg); refresh(); };

document.addEventListener('click', (ev) => {
  const t = ev.target;
  const d = t.dataset;
  if (d.alertAction) {
    const id = t.closest('[data-alert]').dataset.alert;
    const note = window.prompt(`${d.alertAction === 'clear' ? 'Clear' : 'Acknowledge'} alert ${id}: a note (optional)`, '');
    if (note === null) return;
    confirmThen('', async () => {
      await api('POST', `/api/v1/alerts/${enc(id)}/${d.alertAction}`, note ? { note } : {});
      done(`Alert ${id}: ${d.alertAction === 'clear' ? 'cleared' : 'acknowledged'}`);
    });
  } else if (d.unsilence) {
    confirmThen(`End silence ${d.unsilence}?`, async () => { await api('DELETE', `/api/v1/alert-silences/${enc(d.unsilence)}`); location.reload(); });
  } else if (d.rolloutAction) {
    const id = t.closest('[data-rollout]').dataset.rollout;
    const ask = d.rolloutAction === 'cancel' ? `Cancel rollout ${id}? Devices not yet updated are skipped.` : `${d.rolloutAction} rollout ${id}?`;
    confirmThen(ask, async () => {
      await api('POST', `/api/v1/firmware/rollouts/${enc(id)}/${d.rolloutAction}`);
      done(`Rollout ${id}: ${d.rolloutAction}`);
    });
  } else if (d.monitorAction) {
    const id = t.closest('[data-monitor]').dataset.monitor;
    if (d.monitorAction === 'delete') {
      confirmThen(`Delete monitor ${id}? Its receiver gets nothing more.`, async () => { await api('DELETE', `/api/v1/monitors/${enc(id)}`); done(`Monitor ${id} deleted`); });
    } else {
      confirmThen(`Enable monitor ${id}?`, async () => { await api('POST', `/api/v1/monitors/${enc(id)}/enable`); done(`Monitor ${id} enabled`); });
    }
  }
});
