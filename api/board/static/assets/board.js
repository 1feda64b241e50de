// chargeflow live board. Reads the operator API with the operator's token and
// follows GET /v1/events (Server-Sent Events) to stay current without reload.
import {
  STATES, TERMINAL, ACTIVE, FLAGS, STATE_LABEL, STATE_COLOR, BAD_FLAGS, ALERT_FLAGS,
  yuan, parseYuan, kwh, bjTime, bjShort, dur, stateSince, refundable, trouble, webhookTrouble,
} from './format.js';

const TOKEN_KEY = 'chargeflow.operator-token';
const TABLE_ROWS = 200; // rows shown in the session table
const KEEP = 1500; // sessions kept in memory
const $ = (id) => document.getElementById(id);

const st = {
  token: '',
  sessions: new Map(), // id → session view
  chargers: new Map(), // id → charger view
  stats: null,
  anomalies: [],
  reconciliations: [], // the last days, each with its differing lines
  webhooks: new Map(), // session id → failing webhook deliveries' reasons
  filter: { state: '', charger: '', flag: '' },
  selected: '', // session id shown in the drawer
  flash: new Set(), // sessions changed by the feed since the last render
  es: null,
  lastEventId: '',
  failedOpens: 0,
  timers: [],
};

// ---------- DOM helpers (no innerHTML: every text is set as text) ----------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'style') el.style.cssText = v; // CSSOM: allowed by the page's CSP, a style attribute is not
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const shortId = (id) => (id && id.length > 10 ? id.slice(-8) : id || '');
const stateBadge = (s) => h('span', { class: 'state', dataset: { state: s } }, STATE_LABEL[s] ?? s);
const flagChips = (flags) => (flags ?? []).map((f) =>
  h('span', { class: 'flag' + (BAD_FLAGS.has(f) ? ' bad' : ALERT_FLAGS.has(f) ? '' : ' info') }, f.replaceAll('_', ' ')));

function toast(text, bad = false) {
  const t = h('div', { class: 'toast' + (bad ? ' bad' : ''), role: bad ? 'alert' : 'status' }, text);
  $('toasts').append(t);
  setTimeout(() => t.remove(), bad ? 7000 : 3500);
}

// ---------- API ----------

class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

async function api(path, { method = 'GET', body, quiet401 = false } = {}) {
  const headers = { Authorization: `Bearer ${st.token}`, Accept: 'application/json' };
  const init = { method, headers, cache: 'no-store' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch {
    throw new ApiError(0, { detail: 'the service cannot be reached' });
  }
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!res.ok) {
    if (res.status === 401 && !quiet401) signOut('The token was refused: sign in again.');
    throw new ApiError(res.status, data);
  }
  return data;
}

const qs = (o) => new URLSearchParams(Object.entries(o).filter(([, v]) => v !== '' && v !== undefined)).toString();

// ---------- state updates ----------

function upsertSession(v) {
  if (!v || !v.id) return;
  const old = st.sessions.get(v.id);
  if (old && (old.version ?? 0) > (v.version ?? 0)) return; // an older copy
  if (old && !Array.isArray(v.history) && old.version === v.version) v.history = old.history;
  st.sessions.set(v.id, v);
}

function prune() {
  if (st.sessions.size <= KEEP) return;
  const old = [...st.sessions.values()]
    .filter((s) => TERMINAL.has(s.state) && s.id !== st.selected && !st.webhooks.has(s.id))
    .sort((a, b) => (a.created_at ?? '').localeCompare(b.created_at ?? ''));
  for (const s of old.slice(0, st.sessions.size - KEEP)) st.sessions.delete(s.id);
}

function upsertCharger(c) {
  if (!c || !c.id) return;
  const old = st.chargers.get(c.id);
  // The feed's charger view does not carry the connectors' sessions: keep
  // what the list said; activeSession() prefers what the sessions say.
  if (old) {
    for (const conn of c.connectors ?? []) {
      if (!conn.session) conn.session = old.connectors?.find((o) => o.id === conn.id)?.session;
    }
  }
  st.chargers.set(c.id, c);
}

// activeSession is the session occupying a connector, if any.
function activeSession(chargerId, conn) {
  let best = null;
  for (const s of st.sessions.values()) {
    if (s.charger_id !== chargerId || s.connector !== conn.id || !ACTIVE.has(s.state)) continue;
    if (!best || (s.created_at ?? '') > (best.created_at ?? '')) best = s;
  }
  if (best) return best;
  const known = conn.session && st.sessions.get(conn.session);
  if (known && !ACTIVE.has(known.state)) return null;
  return known || (conn.session ? { id: conn.session } : null);
}

// ---------- loading ----------

async function loadSessions(params) {
  const page = await api(`/v1/sessions?${qs({ limit: 200, ...params })}`);
  for (const s of page?.sessions ?? []) upsertSession(s);
}

async function loadStats() {
  st.stats = await api('/v1/stats');
  await loadWebhooks();
}

// loadWebhooks reads the failing webhook deliveries (given up, or pending
// after failed attempts) when the stats say there are any, and loads their
// sessions, so that "Needs attention" lists them.
async function loadWebhooks() {
  const w = st.stats?.webhooks;
  if (!w || (w.pending === 0 && w.failed === 0)) { st.webhooks = new Map(); return; }
  const lists = await Promise.all(['failed', 'pending'].map((status) =>
    api(`/v1/webhooks/deliveries?${qs({ status, limit: 200 })}`)));
  st.webhooks = webhookTrouble(lists.flatMap((l) => l?.deliveries ?? []));
  await Promise.allSettled([...st.webhooks.keys()].filter((id) => !st.sessions.has(id))
    .map(async (id) => upsertSession(await api(`/v1/sessions/${encodeURIComponent(id)}`))));
}

async function loadChargers() {
  const r = await api('/v1/chargers');
  for (const c of r?.chargers ?? []) upsertCharger(c);
}

async function loadAnomalies() {
  const r = await api('/v1/anomalies?limit=15');
  st.anomalies = r?.anomalies ?? [];
}

// loadReconciliations reads the last days reconciled against Huifu's bill,
// and the differing lines of those that have some (docs/contract.md §6).
async function loadReconciliations() {
  const r = await api('/v1/reconciliations?limit=7');
  const days = r?.reconciliations ?? [];
  await Promise.all(days.map(async (d) => {
    d.lines = d.differences > 0 ? ((await api(`/v1/reconciliations/${d.date}`))?.lines ?? []) : [];
  }));
  st.reconciliations = days;
}

// loadAll reads everything the board shows: the latest sessions, every
// unfinished one, every flagged one, the chargers, counters and anomalies.
async function loadAll() {
  const jobs = [loadStats(), loadChargers(), loadAnomalies(), loadReconciliations(), loadSessions({})];
  for (const s of ['created', 'user_confirmed', 'charging', 'stopping', 'completed', 'deducting']) jobs.push(loadSessions({ state: s }));
  for (const f of ALERT_FLAGS) jobs.push(loadSessions({ flag: f }));
  const res = await Promise.allSettled(jobs);
  const failed = res.find((r) => r.status === 'rejected');
  if (failed && failed.reason?.status !== 401) toast(`Could not load everything: ${failed.reason?.message}`, true);
  prune();
  render();
}

let statsTimer = 0;
function statsSoon() {
  clearTimeout(statsTimer);
  statsTimer = setTimeout(() => loadStats().then(render, () => {}), 600);
}

// ---------- live feed ----------

function setConn(state, text) {
  const el = $('conn');
  el.dataset.state = state;
  el.textContent = text;
}

function connect() {
  if (st.es) st.es.close();
  const params = { access_token: st.token };
  if (st.lastEventId && st.failedOpens < 2) params.last_event_id = st.lastEventId;
  const resync = !params.last_event_id && st.lastEventId !== '';
  const es = new EventSource(`/v1/events?${qs(params)}`);
  st.es = es;
  es.onopen = () => {
    st.failedOpens = 0;
    setConn('live', 'live');
    if (resync) loadAll(); // resuming was not possible: read everything again
  };
  es.onerror = () => {
    if (st.es !== es) return;
    if (es.readyState === EventSource.CLOSED) {
      // The server refused the stream (or it is down): the browser will not
      // retry by itself, so reconnect, resuming from the last event seen.
      st.failedOpens++;
      setConn('off', 'offline');
      setTimeout(() => { if (st.es === es && st.token) connect(); }, 5000);
    } else {
      setConn('reconnecting', 'reconnecting…'); // the browser resumes with Last-Event-ID
    }
  };
  es.addEventListener('session', (e) => {
    if (e.lastEventId) st.lastEventId = e.lastEventId;
    let v;
    try { v = JSON.parse(e.data); } catch { return; }
    upsertSession(v);
    st.flash.add(v.id);
    statsSoon();
    scheduleRender();
  });
  es.addEventListener('charger', (e) => {
    if (e.lastEventId) st.lastEventId = e.lastEventId;
    let v;
    try { v = JSON.parse(e.data); } catch { return; }
    upsertCharger(v);
    scheduleRender();
  });
  return new Promise((resolve) => {
    const done = () => { es.removeEventListener('open', done); resolve(); };
    es.addEventListener('open', done);
    setTimeout(done, 3000);
  });
}

// ---------- rendering ----------

let renderQueued = false;
function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => { renderQueued = false; render(); });
}

function render() {
  renderCounts();
  renderFilters();
  renderTable();
  renderAttention();
  renderChargers();
  renderAnomalies();
  renderReconciliations();
  renderDetail();
  st.flash.clear();
}

function renderCounts() {
  const box = $('counts');
  const counts = st.stats?.sessions ?? {};
  const cards = STATES.map((s) => h('button', {
    type: 'button', class: 'count' + (st.filter.state === s ? ' selected' : ''), dataset: { state: s },
    style: `--c:${STATE_COLOR[s]}`, title: `Show ${STATE_LABEL[s]} sessions`,
    onclick: () => setFilter({ state: st.filter.state === s ? '' : s }),
  }, h('b', {}, counts[s] ?? 0), h('span', {}, STATE_LABEL[s])));
  cards.push(h('div', { class: 'count summary', style: '--c:#12202e' },
    h('b', {}, `${st.stats?.active ?? 0}`), h('span', {}, `active of ${st.stats?.total ?? 0}`)));
  box.replaceChildren(...cards);
  const ob = st.stats?.outbox;
  $('outbox').textContent = ob ? `outbox: ${ob.pending} pending, ${ob.due_now} due now${ob.oldest_due ? `, oldest due ${bjShort(ob.oldest_due)}` : ''}` : '';
}

function fillSelect(sel, values, label) {
  const want = ['', ...values];
  const have = [...sel.options].map((o) => o.value);
  if (want.length === have.length && want.every((v, i) => v === have[i])) return;
  const cur = sel.value;
  sel.replaceChildren(h('option', { value: '' }, sel.options[0]?.textContent ?? 'all'),
    ...values.map((v) => h('option', { value: v }, label ? label(v) : v)));
  sel.value = cur;
}

function renderFilters() {
  fillSelect($('f-state'), STATES, (s) => STATE_LABEL[s]);
  const chargerIds = new Set(st.chargers.keys());
  for (const s of st.sessions.values()) chargerIds.add(s.charger_id);
  fillSelect($('f-charger'), [...chargerIds].filter(Boolean).sort());
  fillSelect($('f-flag'), FLAGS, (f) => f.replaceAll('_', ' '));
  $('f-state').value = st.filter.state;
  $('f-charger').value = st.filter.charger;
  $('f-flag').value = st.filter.flag;
}

function matches(s) {
  const f = st.filter;
  return (!f.state || s.state === f.state) && (!f.charger || s.charger_id === f.charger) && (!f.flag || (s.flags ?? []).includes(f.flag));
}

function renderTable() {
  const now = Date.now();
  const all = [...st.sessions.values()].filter(matches)
    .sort((a, b) => (b.created_at ?? '').localeCompare(a.created_at ?? '') || b.id.localeCompare(a.id));
  const rows = all.slice(0, TABLE_ROWS).map((s) => {
    const energy = s.live ? s.live.energy_wh : s.energy_wh;
    const amount = s.live ? s.live.amount_fen : s.amount_fen;
    const cls = [s.id === st.selected ? 'selected' : '', st.flash.has(s.id) ? 'flash' : ''].filter(Boolean).join(' ');
    return h('tr', { class: cls || undefined, dataset: { id: s.id, state: s.state, charger: s.charger_id }, onclick: () => openDetail(s.id) },
      h('td', { 'data-label': 'Session', title: s.id }, h('code', {}, shortId(s.id))),
      h('td', { 'data-label': 'Charger' }, `${s.charger_id} / ${s.connector}`),
      h('td', { 'data-label': 'State', class: 'state-cell' }, stateBadge(s.state), s.cancel_reason ? h('span', { class: 'muted' }, ` ${s.cancel_reason}`) : null),
      h('td', { 'data-label': 'Energy', class: 'num' }, kwh(energy)),
      h('td', { 'data-label': 'Amount', class: 'num' }, s.state === 'cancelled' ? '–' : yuan(amount)),
      h('td', { 'data-label': 'Flags', class: s.flags?.length ? undefined : 'none' }, flagChips(s.flags)),
      h('td', { 'data-label': 'In state' }, TERMINAL.has(s.state) ? h('span', { class: 'muted' }, 'done') : dur(now - Date.parse(stateSince(s)))),
      h('td', { 'data-label': 'Created' }, bjShort(s.created_at)));
  });
  $('sessions-body').replaceChildren(...rows);
  $('sessions-empty').hidden = rows.length > 0;
  $('sessions-count').textContent = all.length > TABLE_ROWS ? `${TABLE_ROWS} of ${all.length} shown` : `${all.length}`;
}

function renderAttention() {
  const now = Date.now();
  const items = [];
  for (const s of st.sessions.values()) {
    const why = [...trouble(s, now), ...(st.webhooks.get(s.id) ?? [])];
    if (why.length) items.push({ s, why, bad: why.some((w) => w.bad) });
  }
  items.sort((a, b) => (b.bad - a.bad) || (a.s.created_at ?? '').localeCompare(b.s.created_at ?? ''));
  $('attention').replaceChildren(...items.slice(0, 100).map(({ s, why, bad }) =>
    h('li', { class: bad ? 'bad' : undefined, dataset: { id: s.id }, onclick: () => openDetail(s.id) },
      h('div', { class: 'row1' },
        h('span', {}, h('code', {}, shortId(s.id)), ` ${s.charger_id}/${s.connector} `),
        stateBadge(s.state)),
      h('div', { class: 'why' }, why.map((w) => w.text).join(' · ')))));
  $('attention-empty').hidden = items.length > 0;
  const n = $('attention-count');
  n.textContent = String(items.length);
  n.classList.toggle('zero', items.length === 0);
}

function renderChargers() {
  const list = [...st.chargers.values()].sort((a, b) => a.id.localeCompare(b.id));
  const online = list.filter((c) => c.online).length;
  $('chargers-count').textContent = `${online} of ${list.length} online`;
  $('chargers').replaceChildren(...list.map((c) => h('li', { class: 'charger' + (c.online ? '' : ' offline'), dataset: { id: c.id } },
    h('div', { class: 'name' }, c.id, h('span', { class: 'presence' }, c.online ? '● online' : '○ offline')),
    h('div', { class: 'connectors' }, (c.connectors ?? []).map((conn) => {
      const s = activeSession(c.id, conn);
      const live = s?.live;
      return h('button', {
        type: 'button', class: 'connector' + (s ? ' has-session' : ''), dataset: { status: conn.status },
        title: s ? `session ${s.id}` : `connector ${conn.id}: ${conn.status}`,
        onclick: s ? () => openDetail(s.id) : undefined,
      }, h('b', {}, `#${conn.id} ${conn.status}`), s ? `${shortId(s.id)}${live ? ' · ' + kwh(live.energy_wh) : ''}` : '');
    })),
    h('div', { class: 'heard' }, c.last_heard_at ? `heard ${bjShort(c.last_heard_at)}` : 'never heard'))));
}

function renderAnomalies() {
  $('anomalies').replaceChildren(...st.anomalies.map((a) => h('li', {
    onclick: a.session_id ? () => openDetail(a.session_id) : undefined,
    style: a.session_id ? 'cursor:pointer' : undefined,
  }, h('span', { class: 'when' }, bjShort(a.at)), a.charger_id ? `${a.charger_id} · ` : '', a.reason,
  a.session_id ? h('span', { class: 'muted' }, ` (${shortId(a.session_id)})`) : null)));
  $('anomalies-empty').hidden = st.anomalies.length > 0;
}

function renderReconciliations() {
  const outcome = { missing_at_huifu: 'missing at Huifu', missing_here: 'missing here', amount_mismatch: 'amount differs', status_mismatch: 'status differs' };
  $('reconciliations').replaceChildren(...st.reconciliations.map((d) => h('li', { class: 'day', dataset: { date: d.date, status: d.status } },
    h('div', {}, h('b', {}, d.date), ' ',
      h('span', { class: 'pill' + (d.status === 'matched' ? '' : ' warn') }, d.status),
      h('span', { class: 'muted' }, ` ${d.matched} matched · ${d.differences} differences`),
      d.error ? h('div', { class: 'muted' }, d.error) : null),
    h('ul', { class: 'lines' }, (d.lines ?? []).map((l) => h('li', { class: 'line', dataset: { outcome: l.outcome } },
      `${outcome[l.outcome] ?? l.outcome} · ${l.kind} · ours ${yuan(l.our_amount_fen)} / Huifu ${yuan(l.huifu_amount_fen)} `,
      l.session_id
        ? h('a', { href: `#session=${l.session_id}`, dataset: { session: l.session_id }, onclick: (e) => { e.preventDefault(); openDetail(l.session_id); } }, shortId(l.session_id))
        : h('span', { class: 'muted' }, l.hf_seq_id || l.req_seq_id || 'unknown session')))))));
  $('reconciliations-empty').hidden = st.reconciliations.length > 0;
}

// ---------- filters ----------

let filterSeq = 0;
function setFilter(change) {
  Object.assign(st.filter, change);
  render();
  // Older matching sessions may not be in memory yet: ask the server.
  const seq = ++filterSeq;
  const f = st.filter;
  if (!f.state && !f.charger && !f.flag) return;
  loadSessions({ state: f.state, charger_id: f.charger, flag: f.flag }).then(() => {
    if (seq === filterSeq) render();
  }, (err) => toast(`Filter: ${err.message}`, true));
}

// ---------- detail ----------

function openDetail(id) {
  if (!id) return;
  st.selected = id;
  if (location.hash !== `#session=${id}`) history.replaceState(null, '', `#session=${id}`);
  $('detail').hidden = false;
  render();
  refreshDetail();
}

function closeDetail() {
  st.selected = '';
  $('detail').hidden = true;
  history.replaceState(null, '', location.pathname + location.search);
  render();
}

async function refreshDetail() {
  const id = st.selected;
  if (!id) return;
  try {
    upsertSession(await api(`/v1/sessions/${encodeURIComponent(id)}`));
    if (st.selected === id) render();
  } catch (err) {
    if (err.status === 404) { toast(`No session ${id}`, true); closeDetail(); }
  }
}

function fact(dl, label, value) {
  if (value === undefined || value === null || value === '') return;
  dl.append(h('dt', {}, label), h('dd', {}, value));
}

function renderDetail() {
  const id = st.selected;
  if (!id) return;
  const s = st.sessions.get(id);
  $('d-id').textContent = id;
  $('d-id').title = id;
  if (!s) {
    $('d-state').textContent = 'loading…';
    return;
  }
  const stateEl = $('d-state');
  stateEl.textContent = STATE_LABEL[s.state] ?? s.state;
  stateEl.dataset.state = s.state;
  $('d-flags').replaceChildren(...flagChips(s.flags));

  const facts = $('d-facts');
  facts.replaceChildren();
  fact(facts, 'Charger', `${s.charger_id} / connector ${s.connector}`);
  fact(facts, 'User (openid)', h('code', {}, s.openid));
  fact(facts, 'Order', h('code', {}, s.out_order_no));
  if (s.cancel_reason) fact(facts, 'Cancel reason', s.cancel_reason);
  fact(facts, 'Created', bjTime(s.created_at));
  if (s.confirmed_at) fact(facts, 'Confirmed', bjTime(s.confirmed_at));
  if (s.started_at) fact(facts, 'Started', bjTime(s.started_at));
  if (s.ended_at) fact(facts, 'Ended', bjTime(s.ended_at));
  if (s.end_time) fact(facts, 'Billed end time', bjTime(s.end_time));
  if (s.paid_at) fact(facts, 'Paid', bjTime(s.paid_at));
  if (!TERMINAL.has(s.state)) fact(facts, 'In state for', dur(Date.now() - Date.parse(stateSince(s))));
  const why = [...trouble(s), ...(st.webhooks.get(s.id) ?? [])];
  if (why.length) fact(facts, 'Needs attention', h('span', { class: 'flag bad' }, why.map((w) => w.text).join(' · ')));

  const lines = $('d-lines');
  const rows = [h('tr', {}, h('th', {}, 'Item'), h('th', { class: 'num' }, 'Energy'), h('th', { class: 'num' }, 'Amount'))];
  for (const l of s.lines ?? []) rows.push(h('tr', {}, h('td', {}, l.name), h('td', { class: 'num' }, kwh(l.energy_wh)), h('td', { class: 'num' }, yuan(l.amount_fen))));
  if (s.live) {
    rows.push(h('tr', { id: 'd-live', dataset: { wh: s.live.energy_wh, fen: s.live.amount_fen } }, h('td', {}, `so far (meter ${bjShort(s.live.last_meter_at)})`),
      h('td', { class: 'num' }, kwh(s.live.energy_wh)), h('td', { class: 'num' }, yuan(s.live.amount_fen))));
  }
  rows.push(h('tr', { class: 'total' }, h('td', {}, 'Billed'), h('td', { class: 'num' }, kwh(s.energy_wh)), h('td', { class: 'num', id: 'd-amount' }, yuan(s.amount_fen))));
  rows.push(h('tr', {}, h('td', {}, 'Spending cap'), h('td', { class: 'num' }, kwh(s.max_energy_wh)), h('td', { class: 'num' }, yuan(s.max_amount_fen))));
  lines.replaceChildren(...rows);

  const p = s.payment ?? {};
  const pay = $('d-payment');
  pay.replaceChildren();
  fact(pay, 'Debit attempts', `${p.attempts ?? 0} (${p.failures ?? 0} failed)`);
  if (p.last_failure) fact(pay, 'Last failure', p.last_failure);
  fact(pay, 'Registered', p.registered ? 'yes' : 'no');
  fact(pay, 'Paid', `${yuan(p.paid_fen ?? 0)}${p.by_user ? ' (by the user in WeChat)' : ''}`);
  if (p.out_trade_no) fact(pay, 'Trade no.', h('code', {}, p.out_trade_no));
  if (p.hf_seq_id) fact(pay, 'Huifu seq', h('code', {}, p.hf_seq_id));

  const refunds = s.refunds ?? [];
  $('d-refunds-wrap').hidden = refunds.length === 0;
  $('d-refunds').replaceChildren(h('tr', {}, h('th', {}, 'When'), h('th', { class: 'num' }, 'Amount'), h('th', {}, 'Status'), h('th', {}, 'Reason')),
    ...refunds.map((r) => h('tr', { dataset: { status: r.status } }, h('td', {}, bjShort(r.at)), h('td', { class: 'num' }, yuan(r.amount_fen)),
      h('td', {}, r.status), h('td', {}, `${r.reason} — ${r.by}`))));

  const timers = s.timers ?? [];
  $('d-timers-wrap').hidden = timers.length === 0;
  const now = Date.now();
  $('d-timers').replaceChildren(...timers.map((t) => {
    const left = Date.parse(t.due_at) - now;
    return h('li', { class: left < 0 ? 'overdue' : undefined }, `${t.kind.replaceAll('_', ' ')}: due ${bjShort(t.due_at)} `,
      h('span', { class: 'muted' }, left >= 0 ? `(in ${dur(left)})` : `(${dur(-left)} ago)`));
  }));

  const hist = Array.isArray(s.history) ? s.history : [];
  $('d-timeline').replaceChildren(...(hist.length ? [...hist].reverse().map((e) => h('li', { dataset: { to: e.to, event: e.event } },
    h('div', { class: 'at' }, bjTime(e.at)),
    h('div', { class: 'what' }, e.from && e.from !== e.to ? [stateBadge(e.from), ' → '] : null, stateBadge(e.to), ` ${e.event.replaceAll('_', ' ')}`),
    h('div', { class: 'by' }, `by ${e.by}`),
    e.note ? h('div', { class: 'note' }, e.note) : null)) : [h('li', {}, 'loading…')]));

  // Actions allowed in this state (the server decides in the end).
  const can = {
    stop: s.state === 'charging',
    close: ACTIVE.has(s.state),
    deduct: s.state === 'completed', // in deducting an attempt is in flight (409)
    refund: s.state === 'paid' && refundable(s) > 0,
  };
  for (const [act, ok] of Object.entries(can)) $(`act-${act}`).disabled = !ok;
  $('actions-hint').textContent = TERMINAL.has(s.state) && !can.refund ? 'Finished: nothing to do.' :
    s.state === 'stopping' ? 'Stopping: waiting for the charger; close it if it never answers.' :
      s.state === 'deducting' ? 'A debit attempt is in flight: wait for Pay Score’s answer.' : '';
}

// ---------- operator actions with confirmation ----------

function confirmDialog({ title, text, amount, reason, okLabel, run }) {
  const dlg = $('confirm');
  $('confirm-title').textContent = title;
  $('confirm-text').textContent = text;
  $('confirm-error').textContent = '';
  $('confirm-amount-row').hidden = !amount;
  $('confirm-reason-row').hidden = !reason;
  $('confirm-amount').value = amount ? yuan(amount.max).replace('¥', '').replaceAll(',', '') : '';
  $('confirm-amount-hint').textContent = amount ? `at most ${yuan(amount.max)}` : '';
  $('confirm-reason').value = '';
  $('confirm-ok').textContent = okLabel;
  $('confirm-ok').disabled = false;
  const form = $('confirm-form');
  const onSubmit = async (e) => {
    e.preventDefault();
    const vals = {};
    if (amount) {
      vals.amountFen = parseYuan($('confirm-amount').value);
      if (!vals.amountFen || vals.amountFen > amount.max) {
        $('confirm-error').textContent = `Enter an amount from ¥0.01 to ${yuan(amount.max)}.`;
        return;
      }
    }
    if (reason) {
      vals.reason = $('confirm-reason').value.trim();
      if (!vals.reason) {
        $('confirm-error').textContent = 'A reason is required.';
        return;
      }
    }
    $('confirm-ok').disabled = true;
    try {
      await run(vals);
      dlg.close();
    } catch (err) {
      $('confirm-error').textContent = err.message;
      $('confirm-ok').disabled = false;
    }
  };
  const cleanup = () => { form.removeEventListener('submit', onSubmit); dlg.removeEventListener('close', cleanup); };
  form.addEventListener('submit', onSubmit);
  dlg.addEventListener('close', cleanup);
  dlg.showModal();
  (reason && !amount ? $('confirm-reason') : amount ? $('confirm-amount') : $('confirm-ok')).focus();
}

async function act(path, body, done) {
  const v = await api(path, { method: 'POST', body });
  upsertSession(v);
  render();
  toast(done);
}

function onAction(kind) {
  const s = st.sessions.get(st.selected);
  if (!s) return;
  const base = `/v1/sessions/${encodeURIComponent(s.id)}`;
  const where = `${s.charger_id} connector ${s.connector}`;
  switch (kind) {
    case 'stop':
      confirmDialog({
        title: 'Stop charging?', okLabel: 'Stop charging',
        text: `Session ${s.id} on ${where}: the charger is told to stop now, and the user is billed for the energy delivered.`,
        run: () => act(`${base}/stop`, undefined, 'Stop sent'),
      });
      break;
    case 'close':
      confirmDialog({
        title: 'Close this session by hand?', okLabel: 'Close session', reason: true,
        text: `Session ${s.id} (${STATE_LABEL[s.state]}) on ${where} is ended by hand: billed for what was measured, or cancelled if nothing was. It is flagged closed_by_operator and your name and reason are kept in its history.`,
        run: (v) => act(`${base}/close`, { reason: v.reason }, 'Session closed'),
      });
      break;
    case 'deduct':
      confirmDialog({
        title: 'Deduct now?', okLabel: 'Deduct now',
        text: `Try the Pay Score debit of ${yuan(s.amount_fen)} for session ${s.id} now, instead of waiting for the next retry (${s.payment?.failures ?? 0} failed so far).`,
        run: () => act(`${base}/deduct`, undefined, 'Deduction started'),
      });
      break;
    case 'refund':
      confirmDialog({
        title: 'Refund?', okLabel: 'Refund', reason: true, amount: { max: refundable(s) },
        text: `Refund to the user of session ${s.id} (paid ${yuan(s.payment?.paid_fen || s.amount_fen)}). The money goes back through Pay Score; a full refund moves the session to refunded.`,
        run: (v) => act(`${base}/refund`, { amount_fen: v.amountFen, reason: v.reason }, `Refund of ${yuan(v.amountFen)} requested`),
      });
      break;
  }
}

// ---------- sign-in ----------

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  st.token = '';
  if (st.es) { st.es.close(); st.es = null; }
  for (const t of st.timers) clearInterval(t);
  st.timers = [];
  $('board').hidden = true;
  $('detail').hidden = true;
  $('signout').hidden = true;
  $('login').hidden = false;
  setConn('off', 'offline');
  $('login-error').textContent = message || '';
  $('token').focus();
}

async function signIn(token) {
  st.token = token;
  try {
    await api('/v1/stats', { quiet401: true });
  } catch (err) {
    st.token = '';
    const msg = err.status === 401 ? 'Unknown token.' : err.status === 403 ? 'This token is not an operator token.' : err.message;
    signOut(msg);
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  $('login').hidden = true;
  $('board').hidden = false;
  $('signout').hidden = false;
  setConn('reconnecting', 'connecting…');
  await connect();
  await loadAll();
  const m = /^#session=(.+)$/.exec(location.hash);
  if (m) openDetail(decodeURIComponent(m[1]));
  st.timers.push(
    setInterval(render, 5000), // ages, timers, stuck list
    setInterval(() => { // live energy is not on the feed: re-read charging sessions
      loadSessions({ state: 'charging' }).then(render, () => {});
    }, 10000),
    setInterval(() => { // the open session, while it is measured
      const s = st.sessions.get(st.selected);
      if (s && !TERMINAL.has(s.state)) refreshDetail();
    }, 3000),
    setInterval(() => Promise.allSettled([loadStats(), loadAnomalies(), loadChargers()]).then(render), 30000),
    setInterval(loadAll, 120000),
  );
}

function tick() {
  $('clock').textContent = `${bjTime(new Date())} Beijing`;
}

function init() {
  tick();
  setInterval(tick, 1000);
  $('login-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const t = $('token').value.trim();
    if (t) signIn(t);
  });
  $('signout').addEventListener('click', () => signOut(''));
  $('filters').addEventListener('change', () => setFilter({ state: $('f-state').value, charger: $('f-charger').value, flag: $('f-flag').value }));
  $('f-clear').addEventListener('click', () => setFilter({ state: '', charger: '', flag: '' }));
  $('detail-close').addEventListener('click', closeDetail);
  $('confirm-cancel').addEventListener('click', () => $('confirm').close());
  for (const b of document.querySelectorAll('#actions .act')) b.addEventListener('click', () => onAction(b.dataset.act));
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && !$('confirm').open && st.selected) closeDetail();
  });
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) signIn(saved);
  else signOut('');
}

init();
