// The mxferry dashboard: a client of apid's /client/v4 API (the hosted
// service's Email Routing shapes plus mxferry's activity, analytics, queue
// and audit endpoints). Plain ES module, no build step, no framework.
//
// Security: every piece of data reaches the DOM through textContent or
// attribute setters (h() below), never innerHTML, so a subject line or an
// address cannot inject markup. The token lives in sessionStorage only (gone
// with the tab) and is sent as a Bearer header, never in a URL.

import { TimeChart } from './chart.js';

// Relative, so the dashboard works wherever apid (or a proxy) mounts it.
const API = 'client/v4';
const TOKEN_KEY = 'mxf_token';
const ZONE_KEY = 'mxf_zone';

const STATUSES = ['forwarded', 'dropped', 'rejected', 'deferred', 'delivery_failed', 'bounced', 'error'];
const SERIES = [
  // The total stays a line when the outcomes are stacked.
  { key: 'received', label: 'Received', color: '#1f5fa8', line: true },
  { key: 'forwarded', label: 'Forwarded', color: '#2e9d57' },
  { key: 'dropped', label: 'Dropped', color: '#7f8c8d' },
  { key: 'rejected', label: 'Rejected', color: '#d9822b' },
  { key: 'delivery_failed', label: 'Delivery failed', color: '#c0392b' },
  { key: 'bounced', label: 'Bounced', color: '#8e44ad' },
];
const RANGES = { '24h': [86400, 3600], '7d': [7 * 86400, 6 * 3600], '30d': [30 * 86400, 86400] };
const ACTIONS = ['forward', 'drop', 'reject', 'worker', 'webhook'];

const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  me: null,
  readOnly: true,
  account: null,
  zones: [],
  zone: sessionStorage.getItem(ZONE_KEY),
  range: '24h',
  custom: { since: '', until: '' },
  stacked: false,
  activity: { status: '', from: '', to: '', since: '', until: '', page: 1, per_page: 25 },
  queueState: '',
  // apid pages the queue (20 a page by default): ask for pages this long and
  // show the pager, so a long queue is never silently cut.
  queuePage: 1,
  queuePerPage: 100,
  auditPage: 1,
  analytics: null,
};
// A hook for the browser test (t/e2e/dashboard/dash.mjs): the data behind
// the chart, so it can assert on numbers rather than on pixels.
window.mxfDash = state;

// ------------------------------------------------------------------ DOM

function h(tag, props, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') e.addEventListener(k.slice(2), v);
    else if (k === 'class') e.className = v;
    else if (k === 'dataset') Object.assign(e.dataset, v);
    else if (k === 'value' || k === 'checked' || k === 'selected') e[k] = v;
    // Through the CSSOM, which a Content-Security-Policy without
    // 'unsafe-inline' still allows (a style attribute it would block).
    else if (k === 'style' && typeof v === 'object') Object.assign(e.style, v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  append(e, kids);
  return e;
}

function append(e, kids) {
  for (const k of kids.flat(Infinity)) {
    if (k === null || k === undefined || k === false) continue;
    e.appendChild(k instanceof Node ? k : document.createTextNode(String(k)));
  }
  return e;
}

const $ = (id) => document.getElementById(id);

function pad2(n) {
  return String(n).padStart(2, '0');
}

function fmtTime(v) {
  if (v === null || v === undefined || v === '') return '';
  const d = new Date(typeof v === 'number' ? v * 1000 : v);
  if (Number.isNaN(d.getTime())) return String(v);
  return (
    `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ` +
    `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`
  );
}

function isoSeconds(d) {
  return d.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

// A datetime-local value (the browser's local time) as ISO 8601 UTC.
function localToIso(v) {
  if (!v) return '';
  const d = new Date(v);
  return Number.isNaN(d.getTime()) ? '' : isoSeconds(d);
}

function fmtSize(n) {
  if (typeof n !== 'number') return '';
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1048576).toFixed(1)} MiB`;
}

function badge(text, kind) {
  return h('span', { class: `badge ${kind || text || ''}` }, text || '—');
}

// Write controls carry class "w": hidden and disabled for a read-only token.
function wbtn(label, onclick, extra = {}) {
  return h(
    'button',
    { type: 'button', class: `w ${extra.class || ''}`, onclick, disabled: state.readOnly, ...extra.attrs },
    label,
  );
}

function card(title, ...body) {
  return h('section', { class: 'card' }, h('h2', null, title), ...body);
}

// ------------------------------------------------------------------ messages

function showMsg(text, kind = 'error') {
  const m = $('msg');
  m.replaceChildren(
    h('span', null, text),
    h(
      'button',
      {
        type: 'button',
        class: 'close',
        'aria-label': 'close',
        onclick: () => {
          m.hidden = true;
        },
      },
      '×',
    ),
  );
  m.className = kind;
  m.hidden = false;
  if (kind !== 'error') {
    clearTimeout(showMsg.t);
    showMsg.t = setTimeout(() => {
      if (m.className === kind) m.hidden = true;
    }, 4000);
  }
}

function clearMsg() {
  $('msg').hidden = true;
}

// Every API error is shown with the API's own message (and code).
function showError(err) {
  if (err instanceof ApiError) showMsg(err.text());
  else {
    showMsg(String(err && err.message ? err.message : err));
    console.error(err);
  }
}

// Runs an async action, reporting its error; returns its result or undefined.
async function guard(fn) {
  try {
    return await fn();
  } catch (err) {
    showError(err);
    return undefined;
  }
}

// ------------------------------------------------------------------ API

class ApiError extends Error {
  constructor(status, errors) {
    super(errors.map((e) => e.message).join('; '));
    this.status = status;
    this.errors = errors;
  }

  text() {
    return this.errors.map((e) => (e.code ? `${e.message} (code ${e.code})` : e.message)).join('; ');
  }
}

async function api(method, path, { query, body } = {}) {
  const url = new URL(API + path, document.baseURI);
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== '' && v !== null && v !== undefined) url.searchParams.set(k, String(v));
  }
  const init = { method, headers: { Authorization: `Bearer ${state.token}`, Accept: 'application/json' } };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(url, init);
  } catch (e) {
    throw new ApiError(0, [{ code: 0, message: `cannot reach the API: ${e.message}` }]);
  }
  let env = null;
  try {
    env = await res.json();
  } catch {
    env = null;
  }
  if (!res.ok || !env || env.success === false) {
    const errs =
      env && Array.isArray(env.errors) && env.errors.length
        ? env.errors.map((e) => ({ code: e.code, message: String(e.message ?? 'error') }))
        : [{ code: res.status, message: `HTTP ${res.status} ${res.statusText}`.trim() }];
    const err = new ApiError(res.status, errs);
    if (res.status === 401 && state.me) logout(`Logged out: ${err.text()}`);
    throw err;
  }
  return env;
}

const zpath = (p = '') => `/zones/${encodeURIComponent(state.zone)}${p}`;
const apath = (p = '') => `/accounts/${encodeURIComponent(state.account)}${p}`;

// ------------------------------------------------------------------ session

async function login(token) {
  state.token = token;
  const v = await api('GET', '/user/tokens/verify');
  state.me = v.result || {};
  state.readOnly = !!state.me.read_only;
  sessionStorage.setItem(TOKEN_KEY, token);
  const acc = await api('GET', '/accounts');
  state.account = acc.result && acc.result.length ? acc.result[0].id : null;
  await loadZones();
  document.body.classList.toggle('ro', state.readOnly);
  $('tokname').textContent = `${state.me.name || 'token'}${state.readOnly ? ' (read-only)' : ''}`;
  $('nav').hidden = false;
  $('who').hidden = false;
}

function logout(why) {
  state.token = null;
  state.me = null;
  sessionStorage.removeItem(TOKEN_KEY);
  $('nav').hidden = true;
  $('who').hidden = true;
  document.body.classList.remove('ro');
  // Shown by render() after the hashchange (which clears old messages).
  state.pendingMsg = why || null;
  if (location.hash !== '#/login') location.hash = '#/login';
  else render();
}

async function loadZones() {
  const env = await api('GET', '/zones', { query: { per_page: 1000 } });
  state.zones = env.result || [];
  if (!state.zones.some((z) => z.name === state.zone))
    state.zone = state.zones.length ? state.zones[0].name : null;
  if (state.zone) sessionStorage.setItem(ZONE_KEY, state.zone);
  const sel = $('zone');
  sel.replaceChildren(
    ...state.zones.map((z) => h('option', { value: z.name, selected: z.name === state.zone }, z.name)),
  );
  sel.disabled = !state.zones.length;
}

function zoneSelected(name) {
  state.zone = name;
  sessionStorage.setItem(ZONE_KEY, name);
  $('zone').value = name;
}

// ------------------------------------------------------------------ router

const VIEWS = {
  overview: viewOverview,
  activity: viewActivity,
  routing: viewRouting,
  queue: viewQueue,
  audit: viewAudit,
};
let chart = null;

async function render() {
  const main = $('main');
  if (chart) {
    chart.destroy();
    chart = null;
  }
  main.replaceChildren();
  const name = (location.hash.match(/^#\/(\w+)/) || [])[1] || 'overview';
  if (state.pendingMsg) {
    showMsg(state.pendingMsg);
    state.pendingMsg = null;
  }
  if (!state.me) {
    main.appendChild(viewLogin());
    return;
  }
  if (name === 'login') {
    location.hash = '#/overview';
    return;
  }
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.dataset.view === name);
  const view = VIEWS[name] || viewOverview;
  const root = h('div', { class: `view view-${name}`, id: `view-${name}` });
  main.appendChild(root);
  if (!state.zone && name !== 'routing' && name !== 'queue' && name !== 'audit') {
    root.appendChild(
      card(
        'No domain yet',
        h('p', null, 'Add a domain under ', h('a', { href: '#/routing' }, 'Routing'), ' first.'),
      ),
    );
    return;
  }
  await guard(() => view(root));
}

// ------------------------------------------------------------------ log-in

function viewLogin() {
  const input = h('input', {
    type: 'password',
    id: 'token',
    name: 'token',
    autocomplete: 'off',
    required: true,
    size: 48,
    placeholder: 'API token',
  });
  const form = h(
    'form',
    { id: 'login', class: 'card login' },
    h('h2', null, 'Log in'),
    h('p', null, 'An API token from ', h('code', null, 'mxferryctl token add NAME'), '.'),
    h('label', null, 'Token ', input),
    h('button', { type: 'submit' }, 'Log in'),
  );
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearMsg();
    try {
      await login(input.value.trim());
      // One render: through hashchange, or directly if the hash stays.
      if (location.hash === '#/overview') render();
      else location.hash = '#/overview';
    } catch (err) {
      state.token = null;
      state.me = null;
      sessionStorage.removeItem(TOKEN_KEY);
      showError(err);
    }
  });
  setTimeout(() => input.focus(), 0);
  return form;
}

// ------------------------------------------------------------------ overview

function rangeBounds() {
  if (state.range === 'custom') {
    const since = localToIso(state.custom.since);
    const until = localToIso(state.custom.until) || isoSeconds(new Date());
    const span = (Date.parse(until) - Date.parse(since)) / 1000;
    // About 48 buckets, at least a minute each.
    const step = Math.max(60, Math.ceil(span / 48 / 60) * 60);
    return { since, until, step };
  }
  const [span, step] = RANGES[state.range];
  // Align to the step so that buckets are stable between reloads.
  const now = Math.floor(Date.now() / 1000);
  const until = (Math.floor(now / step) + 1) * step;
  return {
    since: isoSeconds(new Date((until - span) * 1000)),
    until: isoSeconds(new Date(until * 1000)),
    step,
  };
}

async function viewOverview(root) {
  const rangeSel = h(
    'select',
    { id: 'range' },
    h('option', { value: '24h' }, 'Last 24 hours'),
    h('option', { value: '7d' }, 'Last 7 days'),
    h('option', { value: '30d' }, 'Last 30 days'),
    h('option', { value: 'custom' }, 'Custom…'),
  );
  rangeSel.value = state.range;
  const since = h('input', { type: 'datetime-local', id: 'range-since', value: state.custom.since });
  const until = h('input', { type: 'datetime-local', id: 'range-until', value: state.custom.until });
  const custom = h(
    'span',
    { class: 'custom', hidden: state.range !== 'custom' },
    ' from ',
    since,
    ' to ',
    until,
  );
  const totals = h('div', { id: 'totals', class: 'totals' });
  const plot = h('div', { id: 'chart' });
  const caption = h('p', { class: 'muted', id: 'chart-caption' });
  let tc = null;
  const load = async () => {
    state.range = rangeSel.value;
    state.custom = { since: since.value, until: until.value };
    custom.hidden = state.range !== 'custom';
    if (state.range === 'custom' && !since.value) return;
    const b = rangeBounds();
    if (!b.since || !(Date.parse(b.since) < Date.parse(b.until)))
      throw new Error('The range must start before it ends.');
    const env = await api('GET', zpath('/email/routing/analytics'), { query: b });
    const r = env.result || {};
    state.analytics = r;
    if (!root.isConnected) return; // the user went elsewhere meanwhile
    if (!tc) {
      tc = new TimeChart(plot, SERIES, { stacked: state.stacked });
      chart = tc;
    }
    tc.setData(r.series || []);
    totals.replaceChildren(
      ...SERIES.map((s) =>
        h(
          'div',
          { class: 'total', dataset: { key: s.key } },
          h('span', { class: 'swatch', style: { background: s.color } }),
          h('span', { class: 'label' }, s.label),
          h('b', { class: 'value' }, String((r.totals || {})[s.key] ?? 0)),
        ),
      ),
    );
    caption.textContent =
      `${state.zone}: ${fmtTime(r.since || b.since)} – ${fmtTime(r.until || b.until)}, ` +
      `one point per ${humanStep(r.step || b.step)}.`;
    root.dataset.loaded = String(Date.now());
  };
  const stacked = h('input', { type: 'checkbox', id: 'stacked', checked: state.stacked });
  stacked.addEventListener('change', () => {
    state.stacked = stacked.checked;
    if (tc) tc.setStacked(stacked.checked);
  });
  rangeSel.addEventListener('change', () => guard(load));
  since.addEventListener('change', () => guard(load));
  until.addEventListener('change', () => guard(load));
  append(root, [
    card(
      `Analytics — ${state.zone}`,
      h(
        'div',
        { class: 'toolbar' },
        h('label', null, 'Range ', rangeSel),
        custom,
        h('button', { type: 'button', id: 'refresh', onclick: () => guard(load) }, 'Refresh'),
        h('label', null, stacked, ' stacked'),
      ),
      totals,
      plot,
      caption,
    ),
  ]);
  await load();
}

function humanStep(s) {
  if (s % 86400 === 0) return s === 86400 ? 'day' : `${s / 86400} days`;
  if (s % 3600 === 0) return s === 3600 ? 'hour' : `${s / 3600} hours`;
  if (s % 60 === 0) return `${s / 60} min`;
  return `${s} s`;
}

// ------------------------------------------------------------------ paging

function pager(info, page, go) {
  if (!info) return h('div', { class: 'pager' });
  const pages = Math.max(1, info.total_pages || 1);
  return h(
    'div',
    { class: 'pager' },
    h(
      'button',
      { type: 'button', class: 'prev', disabled: page <= 1, onclick: () => go(page - 1) },
      '‹ Previous',
    ),
    h(
      'span',
      { class: 'pageinfo' },
      `Page ${page} of ${pages} (${info.total_count ?? info.count ?? 0} in all)`,
    ),
    h(
      'button',
      { type: 'button', class: 'next', disabled: page >= pages, onclick: () => go(page + 1) },
      'Next ›',
    ),
  );
}

function table(headers, rows, id) {
  return h(
    'table',
    { id },
    h(
      'thead',
      null,
      h(
        'tr',
        null,
        headers.map((t) => h('th', null, t)),
      ),
    ),
    h('tbody', null, rows),
  );
}

// ------------------------------------------------------------------ activity

async function viewActivity(root) {
  const f = state.activity;
  const status = h(
    'select',
    { name: 'status' },
    h('option', { value: '' }, 'any'),
    STATUSES.map((s) => h('option', { value: s }, s.replace('_', ' '))),
  );
  status.value = f.status;
  const from = h('input', { name: 'from', value: f.from, placeholder: 'sender (or *@domain)', size: 22 });
  const to = h('input', { name: 'to', value: f.to, placeholder: 'recipient', size: 22 });
  const since = h('input', { type: 'datetime-local', name: 'since', value: f.since });
  const until = h('input', { type: 'datetime-local', name: 'until', value: f.until });
  const per = h(
    'select',
    { name: 'per_page' },
    [25, 50, 100].map((n) => h('option', { value: String(n) }, String(n))),
  );
  per.value = String(f.per_page);
  const form = h(
    'form',
    { class: 'filters', id: 'activity-filters' },
    h('label', null, 'Status ', status),
    h('label', null, 'From ', from),
    h('label', null, 'To ', to),
    h('label', null, 'Since ', since),
    h('label', null, 'Until ', until),
    h('label', null, 'Per page ', per),
    h('button', { type: 'submit' }, 'Apply'),
  );
  const out = h('div');
  append(root, [card(`Activity log — ${state.zone}`, form, out)]);
  const load = async () => {
    const env = await api('GET', zpath('/email/routing/activity'), {
      query: {
        status: f.status,
        from: f.from,
        to: f.to,
        since: localToIso(f.since),
        until: localToIso(f.until),
        page: f.page,
        per_page: f.per_page,
      },
    });
    const rows = [];
    const list = env.result || [];
    // The Subject column only when the log has subjects (mxferry's may not).
    const subj = list.some((a) => a.subject);
    for (const a of list) rows.push(...activityRows(a, subj));
    out.replaceChildren(
      rows.length
        ? table(
            ['', 'Time', 'Status', 'From', 'To', subj ? 'Subject' : null, 'Action'].filter((x) => x !== null),
            rows,
            'activity',
          )
        : h('p', { class: 'empty' }, 'No messages match.'),
      pager(env.result_info, f.page, (p) => {
        f.page = p;
        guard(load);
      }),
    );
    root.dataset.loaded = String(Date.now());
  };
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    Object.assign(f, {
      status: status.value,
      from: from.value.trim(),
      to: to.value.trim(),
      since: since.value,
      until: until.value,
      per_page: Number(per.value),
      page: 1,
    });
    guard(load);
  });
  await load();
}

function activityRows(a, subj) {
  const detail = h('tr', { class: 'detail', hidden: true }, h('td', { colspan: subj ? 7 : 6 }));
  const toggle = h(
    'button',
    { type: 'button', class: 'expand', 'aria-expanded': 'false', 'aria-label': 'details' },
    '▸',
  );
  const row = h(
    'tr',
    {
      class: 'entry',
      dataset: { id: String(a.id ?? ''), status: a.status || '', queueId: a.queue_id || '' },
    },
    h('td', null, toggle),
    h('td', { title: a.datetime || '' }, fmtTime(a.datetime)),
    h('td', null, badge(a.status)),
    h('td', { class: 'addr' }, a.from || '<>'),
    h('td', { class: 'addr to' }, a.to || ''),
    subj ? h('td', { class: 'subject' }, a.subject || '') : null,
    h('td', null, a.action || ''),
  );
  let filled = false;
  const flip = () => {
    detail.hidden = !detail.hidden;
    toggle.textContent = detail.hidden ? '▸' : '▾';
    toggle.setAttribute('aria-expanded', String(!detail.hidden));
    if (!detail.hidden && !filled) {
      filled = true;
      fillActivityDetail(detail.firstChild, a);
    }
  };
  row.addEventListener('click', (ev) => {
    if (!ev.target.closest('a')) flip();
  });
  return [row, detail];
}

function dl(pairs) {
  return h(
    'dl',
    { class: 'kv' },
    pairs
      .filter(([, v]) => v !== undefined)
      .map(([k, v, cls]) => [
        h('dt', null, k),
        h(
          'dd',
          { class: cls || '', dataset: { field: k.toLowerCase().replace(/\W+/g, '_') } },
          v === null || v === '' ? '—' : v,
        ),
      ]),
  );
}

function fillActivityDetail(td, a) {
  td.appendChild(
    dl([
      ['SPF', badge(a.spf || 'none', `auth ${a.spf || 'none'}`)],
      ['DKIM', badge(a.dkim || 'none', `auth ${a.dkim || 'none'}`)],
      ['DMARC', badge(a.dmarc || 'none', `auth ${a.dmarc || 'none'}`)],
      ['ARC', badge(a.arc || 'none', `auth ${a.arc || 'none'}`)],
      ['Delivered to', a.dest || '', 'addr'],
      ['Reply', a.reply || '', 'mono'],
      ['Message-ID', a.message_id || '', 'mono'],
      ['Queue ID', a.queue_id || '', 'mono'],
      ['Client IP', a.client_ip || '', 'mono'],
    ]),
  );
  // apid: a deferred row whose copy got through (or failed) since is no
  // longer queued; one deleted by the operator is found gone on asking.
  if (a.status === 'deferred' && a.queue_id && a.queued === false)
    td.appendChild(h('div', { class: 'queued' }, h('p', { class: 'muted' }, 'No longer in the queue.')));
  if (a.queued && a.queue_id) {
    const q = h('div', { class: 'queued' }, h('p', { class: 'muted' }, 'Loading the queue entry…'));
    td.appendChild(q);
    api('GET', apath(`/email/routing/queue/${encodeURIComponent(a.queue_id)}`)).then(
      (env) => {
        q.replaceChildren(h('h3', null, 'Still in the queue'), queueEntry(env.result || {}));
      },
      (err) => {
        q.replaceChildren(
          h(
            'p',
            { class: 'muted' },
            err.status === 404 ? 'No longer in the queue.' : `Queue entry: ${err.text ? err.text() : err}`,
          ),
        );
      },
    );
  }
}

function queueEntry(q) {
  return h(
    'div',
    { class: 'queue-entry', dataset: { id: q.id || '', state: q.state || '' } },
    dl([
      ['Queue ID', q.id, 'mono'],
      ['State', badge(q.state)],
      ['From', q.from || '<>'],
      ['Arrival', fmtTime(q.arrival)],
      ['Size', fmtSize(q.size)],
      ['Next try', q.state === 'hold' ? 'on hold' : fmtTime(q.next_try)],
    ]),
    table(
      ['Recipient', 'Sent to', 'Status', 'Attempts', 'Last reply'],
      (q.recipients || []).map((r) =>
        h(
          'tr',
          null,
          h('td', { class: 'addr' }, r.address),
          // apid: the address as received (before forwarding).
          h('td', { class: 'addr' }, r.orig || ''),
          h('td', null, r.status || ''),
          h('td', null, String(r.attempts ?? '')),
          h('td', { class: 'mono' }, r.last_reply || ''),
        ),
      ),
    ),
  );
}

// ------------------------------------------------------------------ routing

async function viewRouting(root) {
  const domains = h('div', { id: 'domains' });
  const settings = h('div', { id: 'settings' });
  const rules = h('div', { id: 'rules' });
  const catchall = h('div', { id: 'catchall' });
  const addresses = h('div', { id: 'addresses' });
  const dns = h('div', { id: 'dns' });
  append(root, [domains, settings, rules, catchall, addresses, dns]);
  const zoneParts = async () => {
    settings.replaceChildren();
    rules.replaceChildren();
    catchall.replaceChildren();
    dns.replaceChildren();
    if (!state.zone) return;
    await Promise.all([
      guard(() => renderSettings(settings)),
      guard(() => renderRules(rules)),
      guard(() => renderCatchAll(catchall)),
      guard(() => renderDns(dns)),
    ]);
  };
  await Promise.all([
    guard(() => renderDomains(domains)),
    guard(() => renderAddresses(addresses)),
    zoneParts(),
  ]);
  root.dataset.loaded = String(Date.now());
}

async function renderDomains(box) {
  const name = h('input', { name: 'name', placeholder: 'example.org', required: true, size: 28 });
  const form = h(
    'form',
    { class: 'inline w', id: 'zone-add' },
    h('label', null, 'Add a domain ', name),
    h('button', { type: 'submit', disabled: state.readOnly }, 'Add'),
  );
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const env = await guard(() => api('POST', '/zones', { body: { name: name.value.trim() } }));
    if (!env) return;
    showMsg(`Domain ${env.result ? env.result.name : name.value} added.`, 'info');
    await guard(loadZones);
    if (env.result && env.result.name) zoneSelected(env.result.name);
    render();
  });
  const rows = state.zones.map((z) =>
    h(
      'tr',
      { dataset: { zone: z.name }, class: z.name === state.zone ? 'selected' : '' },
      h('td', null, z.name),
      h('td', null, badge(z.status || 'active')),
      h('td', null, fmtTime(z.created_on)),
      h(
        'td',
        { class: 'actions' },
        z.name === state.zone
          ? h('span', { class: 'muted' }, 'selected')
          : h(
              'button',
              {
                type: 'button',
                onclick: () => {
                  zoneSelected(z.name);
                  render();
                },
              },
              'Select',
            ),
        wbtn(
          'Remove',
          async () => {
            if (!window.confirm(`Remove the domain ${z.name} and its rules?`)) return;
            if (await guard(() => api('DELETE', `/zones/${encodeURIComponent(z.id || z.name)}`))) {
              showMsg(`Domain ${z.name} removed.`, 'info');
              await guard(loadZones);
              render();
            }
          },
          { class: 'danger' },
        ),
      ),
    ),
  );
  box.replaceChildren(
    card(
      'Domains',
      rows.length
        ? table(['Domain', 'Status', 'Added', ''], rows, 'zones')
        : h('p', { class: 'empty' }, 'No domain yet.'),
      form,
    ),
  );
}

async function renderSettings(box) {
  const env = await api('GET', zpath('/email/routing'));
  const s = env.result || {};
  // For a read-only token the switches stay visible (they show the state), disabled.
  const enabled = h('input', {
    type: 'checkbox',
    id: 'routing-enabled',
    checked: !!s.enabled,
    disabled: state.readOnly,
  });
  const sub = h('input', {
    type: 'checkbox',
    id: 'subaddress',
    checked: !!s.support_subaddress,
    disabled: state.readOnly,
  });
  enabled.addEventListener('change', async () => {
    // The hosted API: POST …/dns enables routing for the zone, DELETE disables it.
    const ok = await guard(() => api(enabled.checked ? 'POST' : 'DELETE', zpath('/email/routing/dns')));
    if (!ok) enabled.checked = !enabled.checked;
    else {
      showMsg(`Email routing ${enabled.checked ? 'enabled' : 'disabled'} for ${state.zone}.`, 'info');
      renderSettings(box);
    }
  });
  sub.addEventListener('change', async () => {
    const ok = await guard(() =>
      api('PATCH', zpath('/email/routing'), { body: { support_subaddress: sub.checked } }),
    );
    if (!ok) sub.checked = !sub.checked;
    else showMsg(`Subaddressing ${sub.checked ? 'on' : 'off'} for ${state.zone}.`, 'info');
  });
  box.replaceChildren(
    card(
      `Email routing — ${state.zone}`,
      dl([
        ['Status', badge(s.status || 'unknown')],
        ['Enabled', h('label', null, enabled, ' route mail for this domain')],
        ['Subaddressing', h('label', null, sub, ' user+detail@ matches the rule for user@')],
        ['Modified', fmtTime(s.modified)],
      ]),
    ),
  );
}

// --- rules

function matcherText(m) {
  if (m.type === 'all') return 'all';
  const field = m.field === 'from' ? 'from' : 'to';
  return `${field} ${m.type === 'wildcard' ? '~' : '='} ${m.value}`;
}

function actionText(a) {
  const v = Array.isArray(a.value) ? a.value : a.value ? [a.value] : [];
  switch (a.type) {
    case 'forward':
      return `forward → ${v.join(', ')}`;
    case 'drop':
      return 'drop';
    case 'reject':
      return `reject ${a.code || 550}${v.length ? ` "${v.join(' ')}"` : ''}`;
    case 'worker':
      return `worker ${v.join(', ')}`;
    case 'webhook':
      return `webhook ${v.join(', ')}`;
    default:
      return `${a.type} ${v.join(', ')}`;
  }
}

// An action editor: a type select and its value field(s). Returns
// {el, get()} where get() builds the action object (throws on bad input).
function actionEditor(prefix, a = { type: 'forward', value: [] }) {
  const type = h(
    'select',
    { name: `${prefix}-action` },
    ACTIONS.map((t) => h('option', { value: t }, t)),
  );
  type.value = ACTIONS.includes(a.type) ? a.type : 'forward';
  const vals = Array.isArray(a.value) ? a.value : a.value ? [a.value] : [];
  const value = h('input', {
    name: `${prefix}-value`,
    size: 40,
    value: vals.join(type.value === 'forward' ? ', ' : ' '),
  });
  const code = h('input', {
    name: `${prefix}-code`,
    type: 'number',
    min: 400,
    max: 599,
    size: 4,
    value: String(a.code || 550),
  });
  const label = h('span', { class: 'vlabel' });
  const codeLabel = h('label', null, ' code ', code);
  const sync = () => {
    const t = type.value;
    label.textContent = {
      forward: 'to (comma-separated) ',
      reject: 'reply text ',
      worker: 'worker name ',
      webhook: 'URL ',
      drop: '',
    }[t];
    value.hidden = t === 'drop';
    value.placeholder =
      {
        forward: 'dest@example.net',
        reject: 'No such user',
        worker: 'my-worker',
        webhook: 'https://hooks.example.net/mail',
      }[t] || '';
    codeLabel.hidden = t !== 'reject';
  };
  type.addEventListener('change', sync);
  sync();
  return {
    el: h('span', { class: 'action-editor' }, type, ' ', label, value, codeLabel),
    get() {
      const t = type.value;
      const raw = value.value.trim();
      if (t === 'drop') return { type: 'drop', value: [] };
      if (t === 'forward') {
        const list = raw.split(/[\s,;]+/).filter(Boolean);
        if (!list.length) throw new Error('A forward action needs at least one destination address.');
        return { type: 'forward', value: list };
      }
      if (!raw && t !== 'reject') throw new Error(`The ${t} action needs a value.`);
      const act = { type: t, value: raw ? [raw] : [] };
      if (t === 'reject') act.code = Number(code.value) || 550;
      return act;
    },
  };
}

function ruleForm(rule, onDone) {
  const r = rule || {
    name: '',
    enabled: true,
    priority: 0,
    matchers: [{ type: 'literal', field: 'to', value: '' }],
    actions: [{ type: 'forward', value: [] }],
  };
  const toM = (r.matchers || []).find((m) => m.field !== 'from' && m.type !== 'all') || {
    type: 'literal',
    value: '',
  };
  const fromM = (r.matchers || []).filter((m) => m.field === 'from');
  const name = h('input', { name: 'name', value: r.name || '', size: 30 });
  const prio = h('input', {
    name: 'priority',
    type: 'number',
    min: 0,
    value: String(r.priority ?? 0),
    size: 5,
  });
  const enabled = h('input', { name: 'enabled', type: 'checkbox', checked: r.enabled !== false });
  const mtype = h(
    'select',
    { name: 'matcher' },
    h('option', { value: 'literal' }, 'is'),
    h('option', { value: 'wildcard' }, 'matches (wildcard)'),
  );
  mtype.value = toM.type === 'wildcard' ? 'wildcard' : 'literal';
  const to = h('input', {
    name: 'to',
    value: toM.value || '',
    size: 32,
    required: true,
    placeholder: `info@${state.zone}`,
  });
  const senders = h('input', {
    name: 'senders',
    value: fromM.map((m) => m.value).join(', '),
    size: 40,
    placeholder: 'optional: *@example.net, boss@example.com',
  });
  const act = actionEditor('rule', (r.actions || [])[0]);
  const form = h(
    'form',
    { class: 'rule-form', id: 'rule-form' },
    h('h3', null, rule ? `Edit rule ${rule.name || rule.id}` : 'New rule'),
    h(
      'div',
      null,
      h('label', null, 'Name ', name),
      ' ',
      h('label', null, 'Priority ', prio),
      ' ',
      h('label', null, enabled, ' enabled'),
    ),
    h('div', null, h('label', null, 'When the recipient ', mtype), ' ', to),
    h('div', null, h('label', null, 'and the sender is one of ', senders)),
    h('div', null, h('label', null, 'Action '), act.el),
    h(
      'div',
      { class: 'buttons' },
      h('button', { type: 'submit', class: 'primary' }, rule ? 'Save' : 'Create rule'),
      h('button', { type: 'button', onclick: () => onDone(false) }, 'Cancel'),
    ),
  );
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    let body;
    try {
      const matchers = [{ type: mtype.value, field: 'to', value: to.value.trim() }];
      for (const s of senders.value.split(/[\s,;]+/).filter(Boolean)) {
        matchers.push({ type: s.includes('*') ? 'wildcard' : 'literal', field: 'from', value: s });
      }
      body = {
        name: name.value.trim(),
        enabled: enabled.checked,
        priority: Number(prio.value) || 0,
        matchers,
        actions: [act.get()],
      };
    } catch (err) {
      showError(err);
      return;
    }
    const env = await guard(() =>
      rule
        ? api('PUT', zpath(`/email/routing/rules/${encodeURIComponent(rule.id || rule.tag)}`), { body })
        : api('POST', zpath('/email/routing/rules'), { body }),
    );
    if (env) {
      showMsg(rule ? 'Rule saved.' : 'Rule created.', 'info');
      onDone(true);
    }
  });
  return form;
}

async function renderRules(box, page = 1) {
  const env = await api('GET', zpath('/email/routing/rules'), { query: { page, per_page: 50 } });
  const list = (env.result || []).filter((r) => !(r.matchers || []).some((m) => m.type === 'all'));
  const formBox = h('div', { class: 'formbox' });
  const reload = (changed) => {
    formBox.replaceChildren();
    if (changed) guard(() => renderRules(box, page));
  };
  const rows = list.map((r) =>
    h(
      'tr',
      { class: r.enabled ? 'rule' : 'rule disabled', dataset: { id: r.id || r.tag, name: r.name || '' } },
      h('td', null, String(r.priority ?? '')),
      h('td', null, r.name || ''),
      h(
        'td',
        { class: 'mono' },
        (r.matchers || []).map((m) => h('div', null, matcherText(m))),
      ),
      h(
        'td',
        { class: 'mono' },
        (r.actions || []).map((a) => h('div', null, actionText(a))),
      ),
      h('td', null, badge(r.enabled ? 'enabled' : 'disabled')),
      h(
        'td',
        { class: 'actions' },
        wbtn('Edit', () => {
          formBox.replaceChildren(ruleForm(r, reload));
          formBox.scrollIntoView({ block: 'nearest' });
        }),
        wbtn(r.enabled ? 'Disable' : 'Enable', async () => {
          const body = {
            name: r.name,
            enabled: !r.enabled,
            priority: r.priority,
            matchers: r.matchers,
            actions: r.actions,
          };
          if (
            await guard(() =>
              api('PUT', zpath(`/email/routing/rules/${encodeURIComponent(r.id || r.tag)}`), { body }),
            )
          )
            reload(true);
        }),
        wbtn(
          'Delete',
          async () => {
            if (!window.confirm(`Delete the rule ${r.name || r.id}?`)) return;
            if (
              await guard(() =>
                api('DELETE', zpath(`/email/routing/rules/${encodeURIComponent(r.id || r.tag)}`)),
              )
            ) {
              showMsg('Rule deleted.', 'info');
              reload(true);
            }
          },
          { class: 'danger' },
        ),
      ),
    ),
  );
  box.replaceChildren(
    card(
      `Rules — ${state.zone}`,
      rows.length
        ? table(['Priority', 'Name', 'Matchers', 'Actions', 'State', ''], rows, 'rules-table')
        : h('p', { class: 'empty' }, 'No rules yet.'),
      env.result_info && env.result_info.total_pages > 1
        ? pager(env.result_info, page, (p) => guard(() => renderRules(box, p)))
        : null,
      h(
        'div',
        { class: 'toolbar' },
        wbtn(
          'New rule',
          () => {
            formBox.replaceChildren(ruleForm(null, reload));
          },
          { attrs: { id: 'rule-new' } },
        ),
      ),
      formBox,
    ),
  );
}

async function renderCatchAll(box) {
  const env = await api('GET', zpath('/email/routing/rules/catch_all'));
  const c = env.result || {};
  const enabled = h('input', { type: 'checkbox', name: 'enabled', checked: !!c.enabled });
  const act = actionEditor('catchall', (c.actions || [])[0] || { type: 'drop', value: [] });
  const form = h(
    'form',
    { class: 'w', id: 'catchall-form' },
    h('label', null, enabled, ' enabled'),
    ' ',
    act.el,
    ' ',
    h('button', { type: 'submit', disabled: state.readOnly }, 'Save'),
  );
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    let body;
    try {
      body = {
        name: c.name || 'catch-all',
        enabled: enabled.checked,
        matchers: [{ type: 'all' }],
        actions: [act.get()],
      };
    } catch (err) {
      showError(err);
      return;
    }
    if (await guard(() => api('PUT', zpath('/email/routing/rules/catch_all'), { body }))) {
      showMsg('Catch-all saved.', 'info');
      guard(() => renderCatchAll(box));
    }
  });
  box.replaceChildren(
    card(
      `Catch-all — ${state.zone}`,
      h(
        'p',
        null,
        'Mail to any other address of the domain: ',
        badge(c.enabled ? 'enabled' : 'disabled'),
        ' ',
        h('span', { class: 'mono current' }, (c.actions || []).map(actionText).join('; ') || '—'),
      ),
      form,
    ),
  );
}

async function renderAddresses(box) {
  if (!state.account) return;
  const env = await api('GET', apath('/email/routing/addresses'), { query: { per_page: 1000 } });
  const email = h('input', {
    name: 'email',
    type: 'email',
    required: true,
    size: 32,
    placeholder: 'you@example.net',
  });
  const form = h(
    'form',
    { class: 'inline w', id: 'address-add' },
    h('label', null, 'Add a destination ', email),
    h('button', { type: 'submit', disabled: state.readOnly }, 'Add and send verification'),
  );
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const addr = email.value.trim();
    if (await guard(() => api('POST', apath('/email/routing/addresses'), { body: { email: addr } }))) {
      showMsg(`Verification mail sent to ${addr}.`, 'info');
      guard(() => renderAddresses(box));
    }
  });
  const rows = (env.result || []).map((a) =>
    h(
      'tr',
      { dataset: { email: a.email, verified: String(!!a.verified) } },
      h('td', { class: 'addr' }, a.email),
      h(
        'td',
        null,
        a.verified
          ? h('span', { title: a.verified }, badge('verified'), ' ', fmtTime(a.verified))
          : badge('pending', 'pending'),
      ),
      h('td', null, fmtTime(a.created)),
      h(
        'td',
        { class: 'actions' },
        // apid: PATCH with the code of the verification mail, or the operator
        // vouches for the address (both audited under the token's name).
        a.verified
          ? null
          : wbtn('Enter code', async () => {
              const code = window.prompt(`The verification code from the mail to ${a.email}:`);
              if (!code || !code.trim()) return;
              const path = apath(`/email/routing/addresses/${encodeURIComponent(a.id || a.tag)}`);
              const body = { verification_code: code.trim() };
              if (await guard(() => api('PATCH', path, { body }))) {
                showMsg(`${a.email} verified.`, 'info');
                guard(() => renderAddresses(box));
              }
            }),
        a.verified
          ? null
          : wbtn('Mark verified', async () => {
              if (!window.confirm(`Forward to ${a.email} without its owner's confirmation?`)) return;
              const path = apath(`/email/routing/addresses/${encodeURIComponent(a.id || a.tag)}`);
              if (await guard(() => api('PATCH', path, { body: { verified: true } }))) {
                showMsg(`${a.email} marked verified.`, 'info');
                guard(() => renderAddresses(box));
              }
            }),
        wbtn(
          'Remove',
          async () => {
            if (!window.confirm(`Remove the destination ${a.email}?`)) return;
            if (
              await guard(() =>
                api('DELETE', apath(`/email/routing/addresses/${encodeURIComponent(a.id || a.tag)}`)),
              )
            ) {
              showMsg(`${a.email} removed.`, 'info');
              guard(() => renderAddresses(box));
            }
          },
          { class: 'danger' },
        ),
      ),
    ),
  );
  box.replaceChildren(
    card(
      'Destination addresses',
      rows.length
        ? table(['Address', 'Verification', 'Added', ''], rows, 'addresses-table')
        : h('p', { class: 'empty' }, 'No destination address yet.'),
      form,
    ),
  );
}

function sameRecord(a, b) {
  return (
    a &&
    b &&
    String(a.type).toUpperCase() === String(b.type).toUpperCase() &&
    String(a.name).replace(/\.$/, '').toLowerCase() === String(b.name).replace(/\.$/, '').toLowerCase() &&
    (a.content === undefined || b.content === undefined || a.content === b.content)
  );
}

async function renderDns(box) {
  const env = await api('GET', zpath('/email/routing/dns'));
  const r = env.result || {};
  const missing = (r.errors || []).map((e) => e.missing).filter(Boolean);
  const records = r.record || r.records || [];
  // apid says each record's live state (ok, missing, wrong, unknown; null
  // when not checked); the hosted API only lists the errors. An optional
  // record (MTA-STS, TLS-RPT) is never an error, but it may still be absent.
  const liveOf = (rec) => {
    if (typeof rec.status === 'string' && rec.status) return rec.status;
    if (rec.status === null) return 'unchecked';
    return missing.some((m) => sameRecord(m, rec)) ? 'missing' : 'ok';
  };
  let bad = 0;
  const rows = records.map((rec) => {
    const live = liveOf(rec);
    const miss = live === 'missing' || live === 'wrong';
    if (miss && !rec.optional) bad++;
    const label = rec.optional && live !== 'ok' ? `${live} (optional)` : live;
    return h(
      'tr',
      {
        class: rec.optional ? `optional ${live}` : miss ? 'missing' : live,
        dataset: { type: rec.type, status: live, missing: String(miss), optional: String(!!rec.optional) },
        title: rec.note || '',
      },
      h('td', null, rec.type),
      h('td', { class: 'mono' }, rec.name),
      h(
        'td',
        { class: 'mono wrap' },
        rec.content,
        rec.found && live !== 'ok' ? h('div', { class: 'found muted' }, `found: ${rec.found}`) : null,
      ),
      h('td', null, rec.priority === undefined || rec.priority === null ? '' : String(rec.priority)),
      h('td', null, rec.ttl === undefined ? '' : String(rec.ttl)),
      h('td', null, badge(label, miss ? (live === 'wrong' ? 'error' : 'missing') : live)),
    );
  });
  // A missing record the list does not show (e.g. a stale one) still gets a row.
  for (const m of missing) {
    if (!records.some((rec) => sameRecord(m, rec))) {
      bad++;
      rows.push(
        h(
          'tr',
          { class: 'missing', dataset: { type: m.type, status: 'missing', missing: 'true' } },
          h('td', null, m.type),
          h('td', { class: 'mono' }, m.name),
          h('td', { class: 'mono wrap' }, m.content || ''),
          h('td', null, m.priority === undefined ? '' : String(m.priority)),
          h('td', null, m.ttl === undefined ? '' : String(m.ttl)),
          h('td', null, badge('missing', 'missing')),
        ),
      );
    }
  }
  // The envelope's messages say why the live check could not run.
  const notes = (env.messages || []).map((m) => (typeof m === 'string' ? m : m.message)).filter(Boolean);
  box.replaceChildren(
    card(
      `DNS records to publish — ${state.zone}`,
      h(
        'p',
        { class: 'muted' },
        bad
          ? `${bad} record(s) missing or wrong in the live DNS.`
          : records.some((rec) => rec.status === null)
            ? 'Not checked against the live DNS.'
            : 'All required records found in the live DNS.',
      ),
      notes.length ? h('p', { class: 'warn' }, `Live check: ${notes.join('; ')}`) : null,
      rows.length
        ? table(['Type', 'Name', 'Content', 'Priority', 'TTL', 'Live'], rows, 'dns-table')
        : h('p', { class: 'empty' }, 'No records.'),
      h('button', { type: 'button', onclick: () => guard(() => renderDns(box)) }, 'Check again'),
    ),
  );
}

// ------------------------------------------------------------------ queue

async function viewQueue(root) {
  if (!state.account) {
    root.appendChild(card('Queue', h('p', null, 'No account.')));
    return;
  }
  const sel = h(
    'select',
    { id: 'queue-state' },
    h('option', { value: '' }, 'all'),
    ['active', 'deferred', 'hold'].map((s) => h('option', { value: s }, s)),
  );
  sel.value = state.queueState;
  const out = h('div');
  const load = async () => {
    let env = await api('GET', apath('/email/routing/queue'), {
      query: { state: state.queueState, page: state.queuePage, per_page: state.queuePerPage },
    });
    // The queue shrank under this page (an action, a delivery): its last page.
    const info = env.result_info || {};
    if (state.queuePage > 1 && !(env.result || []).length && info.total_count) {
      state.queuePage = Math.max(1, info.total_pages || 1);
      env = await api('GET', apath('/email/routing/queue'), {
        query: { state: state.queueState, page: state.queuePage, per_page: state.queuePerPage },
      });
    }
    const act = (q, verb, confirmText) => async () => {
      if (confirmText && !window.confirm(confirmText)) return;
      const p = apath(
        `/email/routing/queue/${encodeURIComponent(q.id)}${verb === 'delete' ? '' : `/${verb}`}`,
      );
      if (await guard(() => api(verb === 'delete' ? 'DELETE' : 'POST', p))) {
        showMsg(`${q.id}: ${verb} done.`, 'info');
        guard(load);
      }
    };
    const rows = (env.result || []).map((q) =>
      h(
        'tr',
        { dataset: { id: q.id, state: q.state } },
        h('td', { class: 'mono' }, q.id),
        h('td', null, badge(q.state)),
        h('td', { class: 'addr' }, q.from || '<>'),
        h('td', null, fmtTime(q.arrival)),
        h('td', null, fmtSize(q.size)),
        h('td', { class: 'next' }, q.state === 'hold' ? 'on hold' : fmtTime(q.next_try)),
        h(
          'td',
          null,
          (q.recipients || []).map((r) =>
            h(
              'div',
              { class: 'addr rcpt', title: r.last_reply || '' },
              `${r.address}${r.orig && r.orig !== r.address ? ` (for ${r.orig})` : ''} ` +
                `(${r.status || '?'}, ${r.attempts ?? 0} ${r.attempts === 1 ? 'try' : 'tries'})`,
            ),
          ),
        ),
        h(
          'td',
          { class: 'actions' },
          q.state === 'hold' ? wbtn('Release', act(q, 'release')) : wbtn('Hold', act(q, 'hold')),
          // The router only retries a held message once released (and
          // Release retries it at once): no Retry that would do nothing.
          q.state === 'hold' ? null : wbtn('Retry', act(q, 'retry')),
          wbtn('Delete', act(q, 'delete', `Delete ${q.id} from the queue? The message is lost.`), {
            class: 'danger',
          }),
        ),
      ),
    );
    // (replaceChildren would show a null as the text "null"; append skips it.)
    out.replaceChildren();
    append(out, [
      rows.length
        ? table(
            ['Queue ID', 'State', 'From', 'Arrived', 'Size', 'Next try', 'Recipients', ''],
            rows,
            'queue-table',
          )
        : h(
            'p',
            { class: 'empty' },
            state.queueState
              ? `No message ${state.queueState === 'hold' ? 'on hold' : state.queueState}.`
              : 'The queue is empty.',
          ),
      env.result_info && env.result_info.total_pages > 1
        ? pager(env.result_info, state.queuePage, (p) => {
            state.queuePage = p;
            guard(load);
          })
        : null,
    ]);
    root.dataset.loaded = String(Date.now());
  };
  sel.addEventListener('change', () => {
    state.queueState = sel.value;
    state.queuePage = 1;
    guard(load);
  });
  append(root, [
    card(
      'Queue',
      h(
        'div',
        { class: 'toolbar' },
        h('label', null, 'State ', sel),
        h('button', { type: 'button', id: 'queue-refresh', onclick: () => guard(load) }, 'Refresh'),
      ),
      out,
    ),
  ]);
  await load();
}

// ------------------------------------------------------------------ audit

async function viewAudit(root) {
  if (!state.account) {
    root.appendChild(card('Audit log', h('p', null, 'No account.')));
    return;
  }
  const out = h('div');
  append(root, [card('Audit log', out)]);
  const load = async () => {
    const env = await api('GET', apath('/audit_logs'), { query: { page: state.auditPage, per_page: 50 } });
    const rows = [];
    for (const e of env.result || []) {
      const detail = h(
        'tr',
        { class: 'detail', hidden: true },
        h(
          'td',
          { colspan: 5 },
          h(
            'div',
            { class: 'diff' },
            h(
              'div',
              null,
              h('h4', null, 'Before'),
              h(
                'pre',
                null,
                e.oldValue === undefined || e.oldValue === null ? '—' : JSON.stringify(e.oldValue, null, 2),
              ),
            ),
            h(
              'div',
              null,
              h('h4', null, 'After'),
              h(
                'pre',
                null,
                e.newValue === undefined || e.newValue === null ? '—' : JSON.stringify(e.newValue, null, 2),
              ),
            ),
          ),
        ),
      );
      const actor = e.actor || {};
      const action = e.action || {};
      const res = e.resource || {};
      const row = h(
        'tr',
        { class: 'entry', dataset: { id: String(e.id ?? '') } },
        h('td', { title: e.when || '' }, fmtTime(e.when)),
        h(
          'td',
          null,
          `${actor.name || ''}`,
          h('span', { class: 'muted' }, actor.type ? ` (${actor.type})` : ''),
        ),
        h('td', { class: 'mono' }, action.type || ''),
        h('td', null, action.result === false ? badge('failed', 'error') : badge('ok')),
        h('td', { class: 'mono' }, `${res.type || ''} ${res.id || ''}`.trim()),
      );
      row.addEventListener('click', () => {
        detail.hidden = !detail.hidden;
      });
      rows.push(row, detail);
    }
    out.replaceChildren(
      rows.length
        ? table(['When', 'Actor', 'Action', 'Result', 'Resource'], rows, 'audit-table')
        : h('p', { class: 'empty' }, 'No entries.'),
      pager(env.result_info, state.auditPage, (p) => {
        state.auditPage = p;
        guard(load);
      }),
    );
    root.dataset.loaded = String(Date.now());
  };
  await load();
}

// ------------------------------------------------------------------ start

async function start() {
  $('logout').addEventListener('click', () => logout());
  $('zone').addEventListener('change', (ev) => {
    zoneSelected(ev.target.value);
    state.activity.page = 1;
    render();
  });
  window.addEventListener('hashchange', () => {
    clearMsg();
    render();
  });
  if (state.token) {
    try {
      await login(state.token);
    } catch (err) {
      state.token = null;
      state.me = null;
      sessionStorage.removeItem(TOKEN_KEY);
      showError(err);
    }
  }
  await render();
  document.body.dataset.ready = '1';
}

start();
