// Pure helpers of the board: money, energy, Beijing time, and what makes a
// session need an operator. No DOM here.

export const STATES = ['created', 'user_confirmed', 'charging', 'stopping', 'completed', 'deducting', 'paid', 'cancelled', 'refunded'];
export const TERMINAL = new Set(['paid', 'cancelled', 'refunded']);
export const ACTIVE = new Set(['created', 'user_confirmed', 'charging', 'stopping']);
export const FLAGS = ['charger_offline', 'clock_skew', 'meter_anomaly', 'stop_unconfirmed', 'amount_capped', 'payment_overdue', 'closed_by_operator', 'reconcile_mismatch'];
// Flags that ask for an operator (amount_capped and closed_by_operator are
// records of what happened, shown but not listed as trouble).
export const ALERT_FLAGS = new Set(['charger_offline', 'clock_skew', 'meter_anomaly', 'stop_unconfirmed', 'payment_overdue', 'reconcile_mismatch']);
export const BAD_FLAGS = new Set(['payment_overdue', 'stop_unconfirmed', 'meter_anomaly', 'reconcile_mismatch']);

export const STATE_LABEL = {
  created: 'created', user_confirmed: 'user confirmed', charging: 'charging', stopping: 'stopping',
  completed: 'completed', deducting: 'deducting', paid: 'paid', cancelled: 'cancelled', refunded: 'refunded',
};
export const STATE_COLOR = {
  created: '#1d5fbf', user_confirmed: '#3b82f6', charging: '#0f9d84', stopping: '#d4a106', completed: '#8b5cf6',
  deducting: '#6434b5', paid: '#127a3c', cancelled: '#8a94a3', refunded: '#c0307f',
};

// How long a session may stay in a state before it is called stuck, when no
// timer of its own will move it (docs/contract.md §1 defaults: confirm 5 min,
// start 60 s, stop 60 s; a debit is normally answered within minutes).
// Charging has no limit: a car may charge for hours.
export const STATE_LIMIT_MS = {
  created: 5 * 60e3, user_confirmed: 60e3, stopping: 60e3, completed: 10 * 60e3, deducting: 10 * 60e3,
};
// A timer whose due time passed this long ago should have fired: the engine
// is behind or down.
export const TIMER_GRACE_MS = 30e3;
// Chargers send a meter sample at least every 30 s while charging
// this long without one means the charger lost the session or went quiet.
export const METER_SILENCE_MS = 2 * 60e3;

// yuan formats integer fen as yuan with two decimals, without floats.
export function yuan(fen) {
  if (fen === null || fen === undefined || Number.isNaN(Number(fen))) return '–';
  const n = Math.trunc(Number(fen));
  const sign = n < 0 ? '-' : '';
  const a = Math.abs(n);
  return `${sign}¥${Math.floor(a / 100).toLocaleString('en-US')}.${String(a % 100).padStart(2, '0')}`;
}

// parseYuan turns "12", "12.3" or "12.34" into integer fen; null if it is not
// such a number.
export function parseYuan(text) {
  const m = /^\s*(\d{1,9})(?:\.(\d{1,2}))?\s*$/.exec(String(text ?? ''));
  if (!m) return null;
  return Number(m[1]) * 100 + Number((m[2] ?? '').padEnd(2, '0'));
}

// kwh formats watt-hours as kWh.
export function kwh(wh) {
  if (wh === null || wh === undefined) return '–';
  return `${(Number(wh) / 1000).toFixed(2)} kWh`;
}

const bjParts = new Intl.DateTimeFormat('en-GB', {
  timeZone: 'Asia/Shanghai', year: 'numeric', month: '2-digit', day: '2-digit',
  hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23',
});

function parts(t) {
  const d = t instanceof Date ? t : new Date(t);
  if (Number.isNaN(d.getTime())) return null;
  const p = {};
  for (const x of bjParts.formatToParts(d)) p[x.type] = x.value;
  return p;
}

// bjTime formats an RFC 3339 time in Beijing time: "2025-03-01 14:05:09".
export function bjTime(t) {
  if (!t) return '–';
  const p = parts(t);
  return p ? `${p.year}-${p.month}-${p.day} ${p.hour}:${p.minute}:${p.second}` : '–';
}

// bjShort is bjTime without the date when t is today (Beijing).
export function bjShort(t, now = new Date()) {
  if (!t) return '–';
  const p = parts(t);
  const q = parts(now);
  if (!p) return '–';
  const hms = `${p.hour}:${p.minute}:${p.second}`;
  return p.year === q.year && p.month === q.month && p.day === q.day ? hms : `${p.month}-${p.day} ${hms}`;
}

// dur formats a duration in ms as "45s", "3m 05s", "2h 10m", "3d 4h".
export function dur(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, '0')}s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h ${String(m % 60).padStart(2, '0')}m`;
  return `${Math.floor(h / 24)}d ${h % 24}h`;
}

// stateSince is when the session entered its current state: the last
// history entry that moved it there, or the view's own timestamps (list
// entries come without history).
export function stateSince(s) {
  const h = s.history;
  if (Array.isArray(h) && h.length > 0) {
    for (let i = h.length - 1; i >= 0; i--) {
      if (h[i].to === s.state && h[i].from !== s.state) return h[i].at;
    }
    return h[h.length - 1].at;
  }
  switch (s.state) {
    case 'created': return s.created_at;
    case 'user_confirmed': return s.confirmed_at ?? s.created_at;
    case 'charging': return s.started_at ?? s.updated_at;
    case 'paid': return s.paid_at ?? s.updated_at;
    default: return s.updated_at ?? s.created_at;
  }
}

// refundable is what is left to refund on a paid session, in fen.
export function refundable(s) {
  const paid = s.payment?.paid_fen || s.amount_fen || 0;
  let done = 0;
  for (const r of s.refunds ?? []) if (r.status !== 'failed') done += r.amount_fen;
  return Math.max(0, paid - done);
}

// trouble lists why a session needs an operator: alert flags, timers that
// should have fired, failed debits, failed refunds, and a state held longer
// than its limit with no timer of its own pending. Empty: all is well.
export function trouble(s, now = Date.now()) {
  const why = [];
  for (const f of s.flags ?? []) {
    if (ALERT_FLAGS.has(f)) why.push({ text: f.replaceAll('_', ' '), bad: BAD_FLAGS.has(f) });
  }
  for (const r of s.refunds ?? []) {
    if (r.status === 'failed') why.push({ text: `refund of ${yuan(r.amount_fen)} failed`, bad: true });
  }
  if (TERMINAL.has(s.state)) return why;
  let pending = false;
  for (const t of s.timers ?? []) {
    const due = Date.parse(t.due_at);
    if (Number.isNaN(due)) continue;
    if (now - due > TIMER_GRACE_MS) {
      why.push({ text: `${t.kind.replaceAll('_', ' ')} overdue by ${dur(now - due)}`, bad: true });
    } else if (t.kind !== 'poll') {
      pending = true; // a timer of the state's own will move it (a poll only asks)
    }
  }
  // A charging session whose meter went quiet: the charger may have lost it.
  const lastMeter = Date.parse(s.live?.last_meter_at ?? '');
  if ((s.state === 'charging' || s.state === 'stopping') && !Number.isNaN(lastMeter) && now - lastMeter > METER_SILENCE_MS) {
    why.push({ text: `no meter reading for ${dur(now - lastMeter)}`, bad: true });
  }
  const p = s.payment ?? {};
  if (p.failures > 0 && !s.flags?.includes('payment_overdue')) {
    why.push({ text: `${p.failures} failed debit${p.failures > 1 ? 's' : ''}${p.last_failure ? ': ' + p.last_failure : ''}`, bad: false });
  }
  const limit = STATE_LIMIT_MS[s.state];
  const since = Date.parse(stateSince(s));
  if (limit && !pending && !Number.isNaN(since) && now - since > limit) {
    why.push({ text: `${STATE_LABEL[s.state]} for ${dur(now - since)} (limit ${dur(limit)})`, bad: true });
  }
  return why;
}

// webhookTrouble groups the delivery log's failing entries by session: a
// delivery given up (bad), or one still retried after failed attempts.
// deliveries are views of GET /v1/webhooks/deliveries.
export function webhookTrouble(deliveries) {
  const out = new Map(); // session id → [{text, bad}]
  for (const d of deliveries ?? []) {
    let w = null;
    const why = d.last_error ? `: ${d.last_error}` : '';
    if (d.status === 'failed') w = { text: `webhook ${d.type} given up after ${d.attempts} attempts${why}`, bad: true };
    else if (d.status === 'pending' && d.attempts > 0) w = { text: `webhook ${d.type} failing (${d.attempts} attempts)${why}`, bad: false };
    if (!w) continue;
    if (!out.has(d.session_id)) out.set(d.session_id, []);
    out.get(d.session_id).push(w);
  }
  return out;
}
