// zgate's status page: polls the admin JSON API every POLL_MS and draws the trained model, the
// clients now, the block list and, with `[fleet]`, the fleet's state (GET /api/v1/fleet). No library and nothing from another origin: the charts are
// SVG built here. Text that comes from the API goes into the page through textContent only.
//
// Authentication is the API's: with a token configured, the first 401 shows a form; the token
// is kept in this tab's sessionStorage and sent as `Authorization: Bearer` (never in a URL).
'use strict';

const POLL_MS = 1500;
const KNOBS_EVERY_MS = 10000;
const TOKEN_KEY = 'zgate.admin.token';
const LIVE_TOP = 8;
const CLIENTS_TOP = 10;
// "Near the threshold": at least this share of the way from the mean to the threshold.
const NEAR = 0.8;
const SVG_NS = 'http://www.w3.org/2000/svg';

const METRICS = [
  'connections', 'requests_nonidempotent', 'requests', 'memory', 'cpu', 'fragmentation',
];
// The unit of each metric as the API gives it.
const UNIT = {
  connections: 'count', requests_nonidempotent: 'count', requests: 'count',
  memory: 'bytes', cpu: 'ppm', fragmentation: 'score',
};
const UNIT_LABEL = {
  connections: 'open connections', requests_nonidempotent: 'requests in flight',
  requests: 'requests in flight', memory: 'bytes held', cpu: 'share of a core',
  fragmentation: 'score',
};

const state = { by: 'connections', knobs: null, knobsAt: 0, timer: null, charts: {} };

// ---- formatting ----

/** Three significant digits, integers as they are. */
function num(v) {
  if (!Number.isFinite(v)) return '∞';
  if (Number.isInteger(v) && Math.abs(v) < 1e6) return String(v);
  const a = Math.abs(v);
  if (a >= 100) return String(Math.round(v));
  if (a >= 10) return v.toFixed(1);
  return v.toFixed(2);
}

/** `v` (in the API's unit of `metric`) in the metric's own unit, for people. */
function fmt(metric, v) {
  if (v === null || v === undefined) return '—';
  switch (UNIT[metric]) {
    case 'bytes': return fmtBytes(v);
    case 'ppm': return `${num(v / 1e4)}% of a core`;
    case 'count': return metric === 'connections' ? `${num(v)} conn.` : `${num(v)} req.`;
    default: return num(v);
  }
}

function fmtBytes(v) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return `${num(i === 0 ? Math.round(v) : v)} ${units[i]}`;
}

/** A short axis label. */
function fmtTick(metric, v) {
  switch (UNIT[metric]) {
    case 'bytes': return fmtBytes(v);
    case 'ppm': return `${v / 1e4}%`;
    default: return v >= 1000 ? `${v / 1000}k` : String(v);
  }
}

function fmtDuration(secs) {
  if (secs === null || secs === undefined) return '—';
  const s = Math.max(0, Math.round(secs));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, '0')}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${String(Math.floor(s / 60) % 60).padStart(2, '0')}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor(s / 3600) % 24}h`;
}

/** Seconds of a zgate duration ("1h30m", "500ms", "0"). */
function parseDuration(text) {
  const mult = { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400 };
  let total = 0;
  for (const [, n, u] of String(text).matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h|d)/g)) {
    total += Number(n) * mult[u];
  }
  return total;
}

function fmtZ(z) {
  if (z === null || z === undefined) return '—';
  return z >= 1e300 ? '∞' : z.toFixed(2);
}

// ---- the API ----

class AuthError extends Error {}

async function api(path, init = {}) {
  const headers = new Headers(init.headers || {});
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.set('Authorization', `Bearer ${token}`);
  const r = await fetch(path, { ...init, headers, cache: 'no-store', credentials: 'omit' });
  if (r.status === 401) throw new AuthError('unauthorized');
  const body = await r.json().catch(() => null);
  if (!r.ok) throw new Error(body && body.error ? body.error : `${r.status} ${r.statusText}`);
  return body;
}

/** A mutation, as the API wants them: JSON, same origin, with the token. */
function mutate(method, path, body) {
  const init = { method, headers: { 'Content-Type': 'application/json' } };
  if (body !== undefined) init.body = JSON.stringify(body);
  return api(path, init);
}

// ---- the model's rules per metric ----

/** What blocks `name`: the threshold in its unit, or why nothing does. */
function rule(model, name) {
  const m = model.metrics[name];
  const minClients = model.params ? model.params.min_clients : null;
  let why = null;
  if (!model.present) why = 'no model yet: train first';
  else if (!m.enabled) why = `switched off (enabled.${name} = false)`;
  else if (minClients !== null && m.n < minClients) {
    why = `learned from ${m.n} clients, fewer than min_clients = ${minClients}`;
  }
  let threshold = null;
  if (!why) {
    threshold = 'blocks_above' in m ? m.blocks_above : m.mean + m.threshold * m.std_effective;
    if (threshold === null) why = 'never blocks';
  }
  const near = threshold === null ? null : m.mean + NEAR * (threshold - m.mean);
  return { threshold, near, why, z: m.threshold };
}

// ---- rendering helpers ----

function $(id) { return document.getElementById(id); }

function el(tag, attrs = {}, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function svg(tag, attrs = {}, text) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

/** Makes `tbody`'s rows those of `items`, keyed by `key`: a row that stays is updated in place
 *  (so a button under the pointer is not replaced between two polls). */
function syncRows(tbody, items, key, create, update) {
  const old = new Map([...tbody.rows].map((r) => [r.dataset.key, r]));
  let prev = null;
  for (const item of items) {
    const k = key(item);
    let row = old.get(k);
    old.delete(k);
    if (!row) {
      row = create(item);
      row.dataset.key = k;
    }
    update(row, item);
    const at = prev ? prev.nextSibling : tbody.firstChild;
    if (row !== at) tbody.insertBefore(row, at);
    prev = row;
  }
  for (const row of old.values()) row.remove();
}

// ---- the header ----

function renderHeader(mode, model, live) {
  $('mode').textContent = mode.mode;
  $('epoch').textContent = String(mode.epoch);
  let training = '—';
  if (mode.mode === 'training') {
    const period = state.knobs ? parseDuration(state.knobs.training_period) : 0;
    const left = mode.training_left_secs;
    training = left !== null && period > 0
      ? `${Math.round(100 * Math.min(1, Math.max(0, 1 - left / period)))}% · ${fmtDuration(left)} left`
      : 'until stopped';
  }
  $('training').textContent = training;
  let age = 'none';
  if (model.present) {
    age = `epoch ${model.epoch}`;
    if (model.trained_at) age += `, trained ${fmtDuration(Date.now() / 1000 - model.trained_at)} ago`;
  }
  $('model-age').textContent = age;
  $('client-count').textContent = String(live.clients);
}

function renderUnenforced(model, mode) {
  const list = $('unenforced-list');
  list.replaceChildren();
  if (mode.mode === 'disabled' || mode.mode === 'training') {
    list.append(el('li', {}, `every metric: the mode is ${mode.mode}, nothing is scored`));
  } else if (mode.mode === 'monitor') {
    list.append(el('li', {}, 'every metric: monitor mode counts would-blocks and blocks nobody'));
  }
  if (!model.present) {
    list.append(el('li', {}, 'every metric: no model yet: train first'));
  } else {
    for (const name of METRICS) {
      const r = rule(model, name);
      if (r.why) list.append(el('li', { 'data-metric': name }, `${name}: ${r.why}`));
    }
  }
  $('unenforced').hidden = list.children.length === 0;
}

// ---- the fleet ----

/** `[fleet]`'s state, as `GET /api/v1/fleet` gives it; the section stays hidden without it. */
function renderFleet(f) {
  $('fleet').hidden = !f.enabled;
  if (!f.enabled) return;
  const st = $('fleet-state');
  st.textContent = f.connected ? 'connected' : 'disconnected';
  st.className = f.connected ? 'tag connected' : 'tag blocked';
  st.dataset.connected = String(f.connected);
  $('fleet-instance').textContent = f.instance;
  $('fleet-redis').textContent = f.redis;
  $('fleet-epoch').textContent = f.epoch
    ? `${f.epoch}${f.training ? ' (training)' : ''}` : 'none';
  $('fleet-model').textContent = f.model_epoch ? `epoch ${f.model_epoch}` : 'none';
  $('fleet-outbox').textContent = `${f.outbox} event(s) waiting${f.dropped ? `, ${f.dropped} dropped` : ''}`;
  $('fleet-lag').textContent = `${f.event_lag_ms} ms`;
  $('fleet-error').textContent = f.last_error
    ? `${f.last_error} (${fmtDuration(Date.now() / 1000 - f.last_error_unix_ms / 1000)} ago)`
    : 'none';
}

// ---- the charts ----

const W = 440;
const H = 180;
const PAD_L = 10;
const PAD_R = 12;
const PAD_T = 30;
const PAD_B = 22;

/** The width of the histogram bucket starting at `lower`: 1 below 32, then 1/16 of the power
 *  of two (the model's log-linear buckets). */
function bucketWidth(lower) {
  if (lower < 32) return 1;
  let p = 1;
  while (p * 2 <= lower) p *= 2;
  return p / 16;
}

function tickValues(metric) {
  switch (UNIT[metric]) {
    case 'bytes': return [0, 1024, 32768, 1048576, 33554432, 1073741824];
    case 'ppm': return [0, 1000, 10000, 100000, 1000000, 10000000];
    default: return [0, 1, 10, 100, 1000, 10000, 100000, 1000000];
  }
}

function chartFor(name) {
  let c = state.charts[name];
  if (c) return c;
  const box = el('div', { class: 'chart', 'data-metric': name });
  const title = el('h3', {}, `${name} `);
  title.append(el('span', { class: 'unit' }, UNIT_LABEL[name]));
  const stats = el('p', { class: 'stats' });
  const threshold = el('span', { class: 'threshold' });
  const rest = el('span', { class: 'rest' });
  stats.append(threshold, rest);
  const plot = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img' });
  box.append(title, stats, plot);
  $('charts').append(box);
  c = { threshold, rest, plot };
  state.charts[name] = c;
  return c;
}

function renderChart(name, model, live, blocks) {
  const c = chartFor(name);
  const m = model.metrics[name];
  const now = live.metrics[name];
  const r = rule(model, name);
  const q = m.quantiles || null;

  if (r.threshold !== null) {
    c.threshold.className = 'threshold';
    c.threshold.textContent = `threshold ${fmt(name, r.threshold)}`;
    c.threshold.dataset.value = String(r.threshold);
  } else {
    c.threshold.className = 'threshold none';
    c.threshold.textContent = `no threshold: ${r.why}`;
    c.threshold.dataset.value = '';
  }
  const parts = [`z ${num(m.threshold)}`];
  if (model.present) {
    parts.push(`mean ${fmt(name, m.mean)}`, `std ${fmt(name, m.std_effective)}`);
    if (q) parts.push(`p99 ${fmt(name, q.p99)}`);
    parts.push(`${m.n} clients`);
  }
  const nowMax = now.quantiles ? now.quantiles.max : null;
  parts.push(`now max ${fmt(name, nowMax)}`);
  c.rest.textContent = ` · ${parts.join(' · ')}`;

  const trained = model.present && Array.isArray(m.buckets) ? m.buckets : [];
  const current = now.buckets || [];
  const tops = (now.top || []).filter((t) => t.value > 0);
  // Clients blocked for this metric, at the value they were blocked at.
  const blocked = blocks.filter((b) => b.reason === `metric:${name}`);
  let xmax = 1;
  const grow = (v) => { if (Number.isFinite(v) && v > xmax) xmax = v; };
  for (const [lower] of trained.concat(current)) grow(lower + bucketWidth(lower));
  if (model.present) grow(m.mean);
  if (q) grow(q.max);
  if (r.threshold !== null) grow(r.threshold);
  for (const t of tops) grow(t.value);
  for (const b of blocked) grow(b.value);
  xmax *= 1.15;
  const span = W - PAD_L - PAD_R;
  const x = (v) => PAD_L + span * (Math.log1p(Math.max(0, v)) / Math.log1p(xmax));
  let ymax = 1;
  for (const [, count] of trained.concat(current)) ymax = Math.max(ymax, count);
  const base = H - PAD_B;
  const y = (count) => base - (base - PAD_T) * Math.sqrt(count / ymax);

  const g = [];
  g.push(svg('line', { class: 'axis', x1: PAD_L, x2: W - PAD_R, y1: base, y2: base }));
  for (const v of tickValues(name)) {
    if (v > xmax) break;
    const tx = x(v);
    g.push(svg('line', { class: 'axis', x1: tx, x2: tx, y1: base, y2: base + 4 }));
    g.push(svg('text', { x: tx, y: base + 15, 'text-anchor': v === 0 ? 'start' : 'middle' },
      fmtTick(name, v)));
  }
  for (const [lower, count] of trained) {
    const x0 = x(lower);
    const x1 = x(lower + bucketWidth(lower));
    g.push(svg('rect', {
      class: 'bar-trained', x: x0, y: y(count), width: Math.max(1.5, x1 - x0 - 0.5),
      height: base - y(count),
    }));
  }
  for (const [lower, count] of current) {
    const x0 = x(lower);
    const w = Math.max(1.5, x(lower + bucketWidth(lower)) - x0 - 0.5);
    const out = r.near !== null && lower + bucketWidth(lower) - 1 >= r.near;
    const bar = svg('rect', {
      class: out ? 'bar-live out' : 'bar-live', x: x0 + w * 0.2, y: y(count),
      width: Math.max(1.5, w * 0.6), height: base - y(count),
    });
    bar.append(svg('title', {}, `${count} client(s) now at ${fmt(name, lower)}`));
    g.push(bar);
  }
  const line = (cls, v, label, ly) => {
    const lx = x(v);
    g.push(svg('line', { class: `line-${cls}`, x1: lx, x2: lx, y1: PAD_T - 8, y2: base }));
    const right = lx > W * 0.62;
    g.push(svg('text', {
      class: `label-${cls}`, x: right ? lx - 3 : lx + 3, y: ly,
      'text-anchor': right ? 'end' : 'start',
    }, label));
  };
  if (model.present) line('mean', m.mean, `mean ${fmt(name, m.mean)}`, PAD_T + 4);
  if (q) line('p99', q.p99, `p99 ${fmt(name, q.p99)}`, PAD_T + 16);
  if (r.threshold !== null) line('threshold', r.threshold, `threshold ${fmt(name, r.threshold)}`, PAD_T - 12);
  for (const t of tops) {
    let cls = 'dot';
    if (r.threshold !== null && t.value > r.threshold) cls = 'dot out';
    else if (r.near !== null && t.value >= r.near) cls = 'dot near';
    const dot = svg('circle', { class: cls, cx: x(t.value), cy: base - 6, r: 4.5 });
    dot.append(svg('title', {}, `${t.client}: ${fmt(name, t.value)}, z ${fmtZ(t.z)}${t.blocked ? ', blocked' : ''}`));
    g.push(dot);
  }
  for (const b of blocked) {
    const bx = x(b.value);
    const mark = svg('path', {
      class: 'blocked-mark', d: `M${bx} ${base - 16} l5 6 l-5 6 l-5 -6 z`,
    });
    mark.append(svg('title', {}, `${b.prefix} blocked at ${fmt(name, b.value)}, z ${fmtZ(b.z)}`));
    g.push(mark);
  }
  if (!model.present) {
    g.push(svg('text', { class: 'empty', x: W / 2, y: H / 2, 'text-anchor': 'middle' },
      'no model yet: train first'));
  }
  c.plot.replaceChildren(...g);
}

// ---- the tables ----

function renderBlocks(blocks) {
  const list = blocks.blocks || [];
  $('block-count').textContent = `(${list.length})`;
  $('no-blocks').hidden = list.length > 0;
  $('blocks').hidden = list.length === 0;
  syncRows($('blocks').tBodies[0], list, (b) => b.prefix, (b) => {
    const row = el('tr', { 'data-prefix': b.prefix });
    for (const cls of ['client', 'reason', 'value num', 'z num', 'left num']) {
      row.append(el('td', { class: cls }));
    }
    const button = el('button', { class: 'unblock', type: 'button' }, 'unblock');
    button.addEventListener('click', () => unblock(b.prefix, button));
    const td = el('td');
    td.append(button);
    row.append(td);
    return row;
  }, (row, b) => {
    const metric = b.reason.startsWith('metric:') ? b.reason.slice(7) : null;
    const manual = b.reason === 'manual';
    const cells = row.cells;
    cells[0].textContent = b.prefix;
    cells[1].textContent = b.reason;
    cells[2].textContent = manual ? '—' : metric ? fmt(metric, b.value) : String(b.value);
    cells[3].textContent = manual || !metric ? '—' : fmtZ(b.z);
    cells[4].textContent = fmtDuration(b.expires_in_secs);
  });
}

async function unblock(prefix, button) {
  button.disabled = true;
  $('block-error').textContent = '';
  try {
    await mutate('DELETE', `/api/v1/blocks/${encodeURIComponent(prefix)}`);
    const row = button.closest('tr');
    if (row) row.remove();
  } catch (e) {
    if (e instanceof AuthError) { askToken('the token was refused'); return; }
    $('block-error').textContent = `unblock ${prefix}: ${e.message}`;
    button.disabled = false;
  }
  refresh();
}

function renderClients(top, model) {
  const head = $('clients-head');
  if (!head.children.length) {
    head.append(el('th', {}, 'client'));
    for (const name of METRICS) head.append(el('th', {}, name));
    head.append(el('th', {}, 'status'));
  }
  const rules = Object.fromEntries(METRICS.map((n) => [n, rule(model, n)]));
  syncRows($('clients').tBodies[0], top.clients || [], (c) => c.client, () => {
    const row = el('tr');
    row.append(el('td', { class: 'client' }));
    for (const name of METRICS) row.append(el('td', { class: 'num', 'data-metric': name }));
    row.append(el('td', { class: 'status' }));
    return row;
  }, (row, c) => {
    row.cells[0].textContent = c.client;
    const over = [];
    METRICS.forEach((name, i) => {
      const td = row.cells[i + 1];
      const z = c.z[name];
      const r = rules[name];
      const isOver = r.threshold !== null && c.current[name] > r.threshold;
      if (isOver) over.push(name);
      td.className = isOver ? 'num out' : 'num';
      td.replaceChildren(document.createTextNode(`${fmt(name, c.current[name])} `),
        el('span', { class: 'z' }, `z ${fmtZ(z)}`));
    });
    const status = row.cells[METRICS.length + 1];
    status.replaceChildren();
    row.className = '';
    if (c.blocked_for_secs !== null && c.blocked_for_secs !== undefined) {
      row.className = 'blocked';
      status.append(el('span', { class: 'tag blocked' }, `blocked, ${fmtDuration(c.blocked_for_secs)} left`));
    } else if (over.length) {
      row.className = 'would';
      status.append(el('span', { class: 'tag would' }, `would block: ${over.join(', ')}`));
    }
  });
}

// ---- polling and the token ----

function setUpdated(error) {
  const p = $('updated');
  p.className = error ? 'error' : 'muted';
  p.textContent = error
    ? `error: ${error} (retrying)`
    : `updated ${new Date().toLocaleTimeString()} · every ${POLL_MS / 1000} s`;
}

function askToken(message) {
  clearTimeout(state.timer);
  sessionStorage.removeItem(TOKEN_KEY);
  $('main').hidden = true;
  $('login').hidden = false;
  $('login-error').textContent = message || '';
  $('updated').textContent = 'token needed';
  $('token').focus();
}

async function refresh() {
  clearTimeout(state.timer);
  try {
    if (!state.knobs || Date.now() - state.knobsAt > KNOBS_EVERY_MS) {
      const knobs = await api('/api/v1/knobs');
      state.knobs = Object.fromEntries(knobs);
      state.knobsAt = Date.now();
    }
    const [mode, model, live, top, blocks, fleet] = await Promise.all([
      api('/api/v1/mode'),
      api('/api/v1/model'),
      api(`/api/v1/clients/live?top=${LIVE_TOP}`),
      api(`/api/v1/clients?top=${CLIENTS_TOP}&by=${encodeURIComponent(state.by)}`),
      api('/api/v1/blocks'),
      api('/api/v1/fleet'),
    ]);
    $('login').hidden = true;
    $('main').hidden = false;
    renderHeader(mode, model, live);
    renderUnenforced(model, mode);
    for (const name of METRICS) renderChart(name, model, live, blocks.blocks || []);
    renderBlocks(blocks);
    renderClients(top, model);
    renderFleet(fleet);
    document.body.dataset.ready = 'true';
    setUpdated(null);
  } catch (e) {
    if (e instanceof AuthError) {
      askToken(sessionStorage.getItem(TOKEN_KEY) ? 'the token was refused' : '');
      return;
    }
    setUpdated(e.message);
  }
  state.timer = setTimeout(refresh, POLL_MS);
}

function start() {
  const by = $('by');
  for (const name of METRICS) by.append(el('option', { value: name }, name));
  by.addEventListener('change', () => { state.by = by.value; refresh(); });
  $('login').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const token = $('token').value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    $('token').value = '';
    refresh();
  });
  refresh();
}

start();
