// Provisioning approvals and tokens, groups, API tokens and users: each
// button calls one API operation, after a confirmation for what cannot be
// undone.
import { api, toast, confirmThen } from './app.js';

const reload = () => setTimeout(() => location.reload(), 500);
const enc = encodeURIComponent;

document.getElementById('pending')?.addEventListener('click', (ev) => {
  const action = ev.target.dataset.opAction;
  if (!action) return;
  const tr = ev.target.closest('tr');
  const op = tr.dataset.op;
  const p = `/api/v1/provisioning/operations/${enc(op)}`;
  if (action === 'approve') {
    confirmThen(`Approve operation ${op}? Check its verification code first.`, async () => {
      const res = await api('POST', `${p}/approve`, {});
      toast(`Approved: device ${res.operation?.device_id ?? ''}`); tr.remove(); reload();
    });
  } else if (action === 'approve-as') {
    const id = tr.querySelector('input[name=device_id]').value.trim();
    if (!id) { toast('Type the device id to approve as.', true); return; }
    confirmThen(`Approve operation ${op} as device ${id}?`, async () => {
      await api('POST', `${p}/approve`, { device_id: id });
      toast(`Approved as ${id}`); tr.remove(); reload();
    });
  } else if (action === 'reject') {
    const reason = window.prompt(`Reject operation ${op}: why? (the device reads it)`, 'not ours');
    if (reason === null) return;
    confirmThen('', async () => {
      await api('POST', `${p}/reject`, { reason });
      toast('Rejected'); tr.remove(); reload();
    });
  }
});

document.getElementById('ptoken-form')?.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const f = ev.target.elements;
  const body = { name: f.name.value || undefined, device_type: f.device_type.value, max_uses: Number(f.max_uses.value) || 0, auto_approve: f.auto_approve.checked };
  const ms = parseDuration(f.expires_in.value);
  if (ms) body.expires_at = new Date(Date.now() + ms).toISOString();
  try {
    const res = await api('POST', '/api/v1/provisioning/tokens', body);
    const out = document.getElementById('ptoken-out');
    out.hidden = false;
    out.textContent = `Provisioning token (shown once): ${res.token?.token ?? res.token}`;
  } catch (e) { toast(e.message, true); }
});

document.addEventListener('click', (ev) => {
  const d = ev.target.dataset;
  if (d.ptokenRevoke) confirmThen(`Revoke provisioning token ${d.ptokenRevoke}?`, async () => { await api('DELETE', `/api/v1/provisioning/tokens/${enc(d.ptokenRevoke)}`); reload(); });
  if (d.tokenRevoke) confirmThen(`Revoke API token ${d.tokenRevoke}? It stops working at once.`, async () => { await api('DELETE', `/api/v1/tokens/${enc(d.tokenRevoke)}`); reload(); });
  if (d.userDelete) confirmThen(`Remove user ${d.userDelete}? Their sessions end at once.`, async () => { await api('DELETE', `/api/v1/users/${enc(d.userDelete)}`); reload(); });
  if (d.groupRename) {
    const name = window.prompt(`New name of group ${d.groupRename}:`);
    if (name) confirmThen('', async () => { await api('PATCH', `/api/v1/groups/${enc(d.groupRename)}`, { name }); reload(); });
  }
});

document.getElementById('group-form')?.addEventListener('submit', (ev) => {
  ev.preventDefault();
  const f = ev.target.elements;
  confirmThen('', async () => { await api('POST', '/api/v1/groups', { id: f.id.value, name: f.name.value || f.id.value }); reload(); });
});

document.getElementById('token-form')?.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const f = ev.target.elements;
  try {
    const res = await api('POST', '/api/v1/tokens', { name: f.name.value, role: f.role.value });
    const out = document.getElementById('token-out');
    out.hidden = false;
    out.textContent = `Token ${res.id} (${res.role}), shown once:\n${res.token}`;
  } catch (e) { toast(e.message, true); }
});

document.getElementById('user-form')?.addEventListener('submit', (ev) => {
  ev.preventDefault();
  const f = ev.target.elements;
  confirmThen('', async () => {
    await api('POST', '/api/v1/users', { name: f.name.value, role: f.role.value, password: f.password.value });
    toast(`User ${f.name.value} added`); reload();
  });
});

function parseDuration(s) {
  const m = /^(\d+)(m|h|d)$/.exec(s.trim());
  if (!m) return 0;
  return Number(m[1]) * { m: 6e4, h: 36e5, d: 864e5 }[m[2]];
}
