// The mesh dashboard: polls GET /v1/mesh every second and tails GET /v1/events.
// A service's panel is drawn from its typed statistics alone: no code knows
// any service by name. Rates and quantiles are differences between polls.
// Hooks for tests and scripts: [data-service][data-state], [data-method][data-rate].

const POLL_MS = 1000;
const RING = 180;           // samples per sparkline: the last 3 minutes at one a second
const QUANTILE_WINDOW = 10; // p50/p99 over the buckets of up to this many polls back
const TAIL_MAX = 200;       // rows of the event tail (markers included)
const REOPEN_MS = 3000;     // a stream the server closed is reopened after this
const TOKEN_KEY = 'zmesh.token';

// The SSE event name is the topic (API.md "Event topics"). EventSource has no
// wildcard listener, so each topic of the contract is listened for by name.
const TOPICS = [
  'idgen.block', 'ratelimit.denied',
  'lock.acquired', 'lock.released', 'lock.expired', 'lock.lost',
  'cache.set', 'cache.invalidated', 'cache.evicted',
  'mesh.service_up', 'mesh.service_down',
];

// Families every service carries, drawn as the panel's head and method table.
const CALLS = 'rpc.server.calls';
const DURATION = 'rpc.server.duration_seconds';
const START_TIME = 'process.start_time_seconds';
const RESTARTS = 'process.restarts';
const DRAWN = new Set([CALLS, DURATION, START_TIME, RESTARTS]);

const $ = (selector) => document.querySelector(selector);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === 'class') node.className = value;
    else if (key.startsWith('data-')) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) node.append(child);
  return node;
}

// ---------------------------------------------------------------- auth

let token = sessionStorage.getItem(TOKEN_KEY) || '';
let awaitingToken = false;

function authHeaders() {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

function askForToken(message) {
  awaitingToken = true;
  $('#auth').hidden = false;
  $('#auth-error').textContent = message;
  if (document.activeElement !== $('#token')) $('#token').focus();
  closeEvents();
  setStream('waiting for a token');
}

$('#auth').addEventListener('submit', (e) => {
  e.preventDefault();
  token = $('#token').value.trim();
  sessionStorage.setItem(TOKEN_KEY, token);
  $('#token').value = '';
  $('#auth').hidden = true;
  awaitingToken = false;
  streamRefused = false;
  clearTimeout(pollTimer);
  poll();
  openEvents();
});

// ---------------------------------------------------------------- numbers

function fmtRate(x) {
  if (x == null || !Number.isFinite(x)) return '–';
  if (x < 0.05) return '0';
  if (x < 10) return x.toFixed(1);
  if (x < 10000) return String(Math.round(x));
  return `${(x / 1000).toFixed(1)}k`;
}

function fmtSeconds(s) {
  if (s == null || !Number.isFinite(s)) return '–';
  if (s < 1e-3) return `${(s * 1e6).toFixed(0)} µs`;
  if (s < 1) return `${(s * 1e3).toFixed(s < 0.01 ? 2 : 1)} ms`;
  return `${s.toFixed(2)} s`;
}

function fmtUptime(s) {
  if (s == null || !Number.isFinite(s) || s < 0) return '–';
  s = Math.floor(s);
  const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m ${s % 60}s`;
  return `${s}s`;
}

function fmtValue(x) {
  if (x == null) return '–';  // JSON null: NaN or an infinity on the server
  if (!Number.isFinite(x)) return String(x);
  if (Number.isInteger(x)) return x.toLocaleString('en-US');
  return x.toPrecision(4);
}

// Prometheus histogram_quantile: find the bucket holding rank q·count and
// interpolate linearly inside it. `cumulative` has one count per bound and
// `count` is the +Inf bucket. Past the last finite bound: that bound.
function quantile(q, bounds, cumulative, count) {
  if (!(count > 0) || bounds.length === 0) return null;
  const rank = q * count;
  for (let i = 0; i < bounds.length; i++) {
    if (cumulative[i] >= rank) {
      const below = i === 0 ? 0 : cumulative[i - 1];
      const lower = i === 0 ? Math.min(0, bounds[0]) : bounds[i - 1];
      const inBucket = cumulative[i] - below;
      if (inBucket <= 0) return bounds[i];
      return lower + (bounds[i] - lower) * ((rank - below) / inBucket);
    }
  }
  return bounds[bounds.length - 1];
}

// Per label value of `label`: the family's samples summed (other labels folded).
function sumBy(family, label) {
  const out = new Map();
  if (!family) return out;
  const index = (family.labels || []).indexOf(label);
  for (const s of family.samples || []) {
    const key = index < 0 ? '' : s.labels[index];
    let acc = out.get(key);
    if (!acc) out.set(key, (acc = { value: 0, buckets: null }));
    acc.value += s.value;
    if (s.buckets) {
      acc.buckets ??= new Array(s.buckets.length).fill(0);
      s.buckets.forEach((b, i) => { acc.buckets[i] += b; });
    }
  }
  return out;
}

// ---------------------------------------------------------------- sparklines

const SVG = 'http://www.w3.org/2000/svg';

function sparkline(cls) {
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('class', `spark ${cls}`);
  svg.setAttribute('viewBox', `0 0 ${RING} 30`);
  svg.setAttribute('preserveAspectRatio', 'none');
  const area = document.createElementNS(SVG, 'path');
  area.setAttribute('class', 'area');
  const line = document.createElementNS(SVG, 'path');
  line.setAttribute('class', 'line');
  line.setAttribute('vector-effect', 'non-scaling-stroke');
  const base = document.createElementNS(SVG, 'path');
  base.setAttribute('class', 'base');
  base.setAttribute('d', `M0,29.5H${RING}`);
  base.setAttribute('vector-effect', 'non-scaling-stroke');
  const title = document.createElementNS(SVG, 'title');
  svg.append(title, base, area, line);
  return svg;
}

// The newest sample at the right edge, the oldest kept at the left (the first
// half minute is drawn as half a minute); null (down) breaks the line.
function drawSparkline(svg, ring) {
  const max = Math.max(1, ...ring.filter((v) => v != null));
  const span = Math.max(ring.length, 30) - 1;
  svg.setAttribute('viewBox', `0 0 ${span} 30`);
  svg.querySelector('.base').setAttribute('d', `M0,29.5H${span}`);
  const x0 = span - (ring.length - 1);
  let line = '', area = '', run = [];
  const flush = () => {
    if (run.length === 0) return;
    const pts = run.map(([x, v]) => `${x},${(29 - (v / max) * 27).toFixed(1)}`);
    line += `M${pts.join('L')}`;
    area += `M${run[0][0]},30L${pts.join('L')}L${run[run.length - 1][0]},30Z`;
    run = [];
  };
  ring.forEach((v, i) => (v == null ? flush() : run.push([x0 + i, v])));
  flush();
  svg.querySelector('.line').setAttribute('d', line);
  svg.querySelector('.area').setAttribute('d', area);
  svg.querySelector('title').textContent = `calls/s, the last ${ring.length} polls; peak ${fmtRate(max)}`;
}

function pushRing(ring, value) {
  ring.push(value);
  if (ring.length > RING) ring.shift();
}

// ---------------------------------------------------------------- service panels

const views = new Map(); // service name → view

function serviceView(name) {
  let view = views.get(name);
  if (view) return view;
  const spark = sparkline('total');
  const methods = el('tbody');
  const families = el('tbody');
  const details = el('details', { class: 'families', 'data-families': '' },
    el('summary', {}, 'other statistics'),
    el('table', {}, families));
  const root = el('article', { class: 'svc', 'data-service': name, 'data-state': 'unknown' },
    el('header', {},
      el('span', { class: 'dot' }),
      el('h2', {}, name),
      el('span', { class: 'state', 'data-field': 'state' }, '…')),
    el('dl', { class: 'facts' },
      el('div', {}, el('dt', {}, 'uptime'), el('dd', { 'data-field': 'uptime' }, '–')),
      el('div', {}, el('dt', {}, 'restarts'), el('dd', { 'data-field': 'restarts' }, '–')),
      el('div', {}, el('dt', {}, 'calls/s'), el('dd', { 'data-field': 'rate' }, '–')),
      spark),
    el('p', { class: 'error', 'data-field': 'error' }),
    el('table', { class: 'methods' },
      el('thead', {}, el('tr', {},
        el('th', {}, 'method'), el('th', {}, 'calls/s'), el('th', {}, 'p50'),
        el('th', {}, 'p99'), el('th', {}, 'trend'))),
      methods),
    details);
  details.addEventListener('toggle', () => drawFamilies(view));
  view = {
    name, root, spark, methods, families, details,
    field: (f) => root.querySelector(`[data-field="${f}"]`),
    history: [],          // the last polls' {t, start, signature, families: Map}, newest last
    ring: [],             // total calls/s
    methodRows: new Map(), // method → {row, ring}
    familyRows: [],       // [label, value text] of the other families, newest poll
  };
  views.set(name, view);
  return view;
}

function methodRow(view, method) {
  let m = view.methodRows.get(method);
  if (m) return m;
  const spark = sparkline('method');
  const row = el('tr', { 'data-method': method, 'data-rate': '0' },
    el('td', { class: 'name' }, method),
    el('td', { class: 'num', 'data-field': 'rate' }, '–'),
    el('td', { class: 'num', 'data-field': 'p50' }, '–'),
    el('td', { class: 'num', 'data-field': 'p99' }, '–'),
    el('td', { class: 'sparkcell' }, spark));
  m = { row, spark, ring: [] };
  view.methodRows.set(method, m);
  // Rows stay in name order, so they never jump between polls.
  const after = [...view.methodRows.keys()].sort().find((k) => k > method);
  view.methods.insertBefore(row, after ? view.methodRows.get(after).row : null);
  return m;
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

// timeMs: when the service's statistics were gathered (sampled_ms); nowMs:
// the gateway's clock at the answer (time_ms).
function updateService(view, svc, timeMs, nowMs) {
  const up = svc.state === 'up';
  view.root.dataset.state = svc.state;
  setText(view.field('state'), svc.state);
  setText(view.field('error'), up ? '' : svc.error || '');

  const families = new Map((svc.metrics || []).map((f) => [f.name, f]));
  const single = (name) => families.get(name)?.samples?.[0]?.value;
  const start = single(START_TIME);
  const last = view.history[view.history.length - 1];
  setText(view.field('uptime'), up && start != null ? fmtUptime(nowMs / 1000 - start) : '–');
  // The same sample again (the shared result, not refreshed yet) is not a
  // second without calls: the sparklines repeat it. Without sampled_ms (an
  // older gateway), the same statistics soon after are taken as the same sample.
  const signature = up ? JSON.stringify(svc.metrics || []) : '';
  const same = svc.sampled_ms != null ? last?.t === timeMs
    : last?.signature === signature && timeMs - last.t < 1500;
  if (up && last && same) {
    repeatSample(view);
    return;
  }
  // A restart (or a gap while down) starts the differences afresh.
  if (!up || (last && last.start !== start)) view.history = [];
  const prev = view.history[view.history.length - 1];
  if (up) {
    view.history.push({ t: timeMs, start, signature, families });
    if (view.history.length > QUANTILE_WINDOW + 1) view.history.shift();
  }
  const dt = prev ? (timeMs - prev.t) / 1000 : 0;
  const oldest = view.history[0];

  const restarts = single(RESTARTS);
  setText(view.field('restarts'), restarts != null ? fmtValue(restarts) : '–');
  view.root.dataset.restarts = restarts ?? '';

  // Calls per second by method, summed over codes.
  const now = sumBy(families.get(CALLS), 'method');
  const before = prev ? sumBy(prev.families.get(CALLS), 'method') : new Map();
  let total = up && dt > 0 ? 0 : null;
  const rates = new Map();
  for (const [method, acc] of now) {
    const was = before.get(method)?.value ?? 0;
    // A counter that went down was reset: it counts from zero again.
    const rate = dt > 0 ? (acc.value >= was ? acc.value - was : acc.value) / dt : null;
    rates.set(method, rate);
    if (rate != null) total += rate;
  }

  // Quantiles over the window: buckets now minus buckets at its oldest poll.
  const durations = families.get(DURATION);
  const bounds = durations?.bounds || [];
  const durNow = sumBy(durations, 'method');
  const durOld = oldest && oldest !== view.history[view.history.length - 1]
    ? sumBy(oldest.families.get(DURATION), 'method') : new Map();

  const methods = new Set([...now.keys(), ...durNow.keys(), ...view.methodRows.keys()]);
  for (const method of methods) {
    if (method === '') continue;
    const m = methodRow(view, method);
    const rate = up ? rates.get(method) ?? (dt > 0 ? 0 : null) : null;
    pushRing(m.ring, rate);
    let p50 = null, p99 = null;
    const d = durNow.get(method);
    if (up && d?.buckets && view.history.length > 1) {
      const o = durOld.get(method);
      const count = d.value - (o?.value ?? 0);
      const cumulative = d.buckets.map((b, i) => b - (o?.buckets?.[i] ?? 0));
      p50 = quantile(0.5, bounds, cumulative, count);
      p99 = quantile(0.99, bounds, cumulative, count);
    }
    m.row.dataset.rate = rate == null ? '' : rate.toFixed(3);
    m.row.dataset.p50 = p50 ?? '';
    m.row.dataset.p99 = p99 ?? '';
    m.row.classList.toggle('idle', !(rate > 0));
    setText(m.row.querySelector('[data-field="rate"]'), fmtRate(rate));
    setText(m.row.querySelector('[data-field="p50"]'), fmtSeconds(p50));
    setText(m.row.querySelector('[data-field="p99"]'), fmtSeconds(p99));
    drawSparkline(m.spark, m.ring);
  }

  pushRing(view.ring, total);
  view.root.dataset.rate = total == null ? '' : total.toFixed(3);
  setText(view.field('rate'), fmtRate(total));
  drawSparkline(view.spark, view.ring);

  // Every other family, compactly: counters as rates, gauges as values,
  // histograms as observations per second and their mean.
  view.familyRows = [];
  for (const f of svc.metrics || []) {
    if (DRAWN.has(f.name)) continue;
    const was = prev?.families.get(f.name);
    for (const s of f.samples || []) {
      const labels = (f.labels || []).map((l, i) => `${l}="${s.labels[i]}"`).join(',');
      const label = labels ? `${f.name}{${labels}}` : f.name;
      const old = was?.samples?.find((o) => o.labels.join('\u0000') === s.labels.join('\u0000'));
      let text;
      if (f.kind === 'gauge') {
        text = fmtValue(s.value);
      } else {
        const d = old && dt > 0 && s.value >= old.value ? (s.value - old.value) / dt : null;
        text = `${fmtValue(s.value)} · ${fmtRate(d)}/s`;
        if (f.kind === 'histogram' && s.value > 0) text += ` · mean ${fmtSeconds(s.sum / s.value)}`;
      }
      view.familyRows.push([label, text, f.help || '']);
    }
  }
  setText(view.details.querySelector('summary'), `other statistics (${view.familyRows.length})`);
  if (view.details.open) drawFamilies(view);
}

// Keeps the sparklines at one sample a second while the statistics repeat.
function repeatSample(view) {
  pushRing(view.ring, view.ring[view.ring.length - 1] ?? null);
  drawSparkline(view.spark, view.ring);
  for (const m of view.methodRows.values()) {
    pushRing(m.ring, m.ring[m.ring.length - 1] ?? null);
    drawSparkline(m.spark, m.ring);
  }
}

function drawFamilies(view) {
  if (!view.details.open) return;
  const rows = view.familyRows.map(([label, text, help]) =>
    el('tr', { title: help }, el('td', { class: 'name' }, label), el('td', { class: 'num' }, text)));
  view.families.replaceChildren(...rows);
}

function render(body) {
  const seen = new Set();
  const container = $('#services');
  let up = 0;
  for (const svc of body.services || []) {
    const view = serviceView(svc.name);
    seen.add(svc.name);
    if (view.root.parentNode !== container) container.append(view.root);
    // Rates are per the interval between the service's own samples: the
    // gateway answers from statistics up to ops_cache_max_age old.
    updateService(view, svc, svc.sampled_ms ?? body.time_ms, body.time_ms);
    if (svc.state === 'up') up++;
  }
  for (const [name, view] of views)
    if (!seen.has(name)) { view.root.remove(); views.delete(name); }
  const total = seen.size;
  setText($('#summary'), `${total} services · ${up} up${total > up ? ` · ${total - up} down` : ''}`);
  $('#summary').dataset.down = String(total - up);
}

// ---------------------------------------------------------------- polling

let pollTimer = 0;

function setPoll(state, text) {
  const node = $('#poll');
  node.dataset.poll = state;
  setText(node, text);
}

async function poll() {
  const started = performance.now();
  try {
    const res = await fetch('/v1/mesh', { headers: authHeaders(), cache: 'no-store' });
    if (res.status === 401) {
      setPoll('auth', 'token needed');
      return askForToken(token ? 'The gateway refused this token.' : '');
    }
    if (res.status === 403) {
      setPoll('auth', 'token lacks the scope');
      return askForToken('This token may not read /v1/mesh: try another.');
    }
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    render(await res.json());
    setPoll('ok', `updated ${new Date().toLocaleTimeString('en-GB')}`);
    if (!source && !reopenTimer && !awaitingToken && !streamRefused) openEvents();
  } catch (e) {
    setPoll('error', `gateway unreachable (${e.message})`);
  }
  pollTimer = setTimeout(poll, Math.max(0, POLL_MS - (performance.now() - started)));
}

// ---------------------------------------------------------------- events

let source = null;
let reopenTimer = 0;
let streamRefused = false;  // 401/403: not reopened until the token or the topics change
let interrupted = false;
const boxes = () => [...document.querySelectorAll('#topics input[type=checkbox]')];

function closeEvents() {
  clearTimeout(reopenTimer);
  reopenTimer = 0;
  if (source) source.close();
  source = null;
}

function setStream(state, text = state) {
  const node = $('#stream');
  node.dataset.stream = state;
  setText(node, text);
}

function openEvents() {
  closeEvents();
  if (awaitingToken) return;
  const checked = boxes().filter((b) => b.checked).map((b) => b.value);
  if (checked.length === 0) return setStream('off');
  const params = new URLSearchParams();
  // Every box checked: no ?topic= filter. The page still shows only the
  // topics it listens for by name (TOPICS, API.md's list): EventSource
  // delivers a named event only to a listener of that name.
  if (checked.length < boxes().length) for (const p of checked) params.append('topic', p);
  if (token) params.set('access_token', token);
  const query = params.toString();
  const url = `/v1/events${query ? `?${query}` : ''}`;
  const es = new EventSource(url);
  source = es;
  interrupted = false;
  setStream('connecting');
  es.onopen = () => {
    setStream('open');
    if (interrupted) marker('reconnect', 'stream reconnected: events in between may be missing');
    interrupted = false;
  };
  es.onerror = () => {
    if (source !== es) return;
    if (es.readyState === EventSource.CLOSED) {
      // Refused with an HTTP error: the browser gives up, and EventSource
      // cannot tell which. One probe of the same URL does.
      source = null;
      setStream('closed');
      whyRefused(url).then((refusal) => {
        if (source || reopenTimer || awaitingToken) return;  // reopened meanwhile
        if (refusal) {
          // 401/403: reopening cannot help until the token changes.
          streamRefused = true;
          setStream('refused', refusal);
          marker('refused', `stream ${refusal}`);
          return;
        }
        if (!interrupted) marker('reconnect', 'stream closed by the gateway; reopening');
        interrupted = true;
        reopenTimer = setTimeout(openEvents, REOPEN_MS);
      });
      return;
    }
    setStream('reconnecting');
    if (!interrupted) marker('reconnect', 'stream interrupted; reconnecting');
    interrupted = true;
  };
  for (const topic of TOPICS) es.addEventListener(topic, onEvent);
  es.addEventListener('message', onEvent);
  es.addEventListener('gap', (e) => {
    let why = e.data;
    try {
      const d = JSON.parse(e.data);
      why = d.reason || `${d.missed} events of ${d.topic} from ${d.publisher} lost`;
    } catch { /* shown as sent */ }
    marker('gap', `gap: ${why}`);
  });
  es.addEventListener('shutdown', () => marker('reconnect', 'gateway stopping'));
}

// Why the gateway refuses the stream at `url`: "refused: <reason> (HTTP 401)"
// for 401 and 403, null for anything else (retried). The probe stops reading
// at the status: an accepted stream is aborted at once.
async function whyRefused(url) {
  const abort = new AbortController();
  try {
    const res = await fetch(url, { cache: 'no-store', signal: abort.signal });
    if (res.status !== 401 && res.status !== 403) return null;
    let reason = res.status === 401 ? 'token needed' : 'token lacks the events scope';
    try { reason = (await res.json()).error.message || reason; } catch { /* the default */ }
    return `refused: ${reason} (HTTP ${res.status})`;
  } catch {
    return null;  // unreachable: retried
  } finally {
    abort.abort();
  }
}

function summarize(body) {
  if (body == null || typeof body !== 'object') return String(body ?? '');
  return Object.entries(body)
    .map(([k, v]) => `${k}=${typeof v === 'object' ? JSON.stringify(v) : v}`)
    .join(' ');
}

function onEvent(e) {
  let data = {};
  try { data = JSON.parse(e.data); } catch { data = { body: e.data }; }
  const topic = data.topic || e.type;
  const when = new Date(data.time_ms || Date.now());
  const row = el('li', { class: 'ev', 'data-topic': topic, title: e.data },
    el('time', {}, `${when.toLocaleTimeString('en-GB')}.${String(when.getMilliseconds()).padStart(3, '0')}`),
    el('b', {}, topic),
    el('span', { class: 'body' }, summarize(data.body)),
    el('span', { class: 'from' }, data.publisher ? ` ← ${data.publisher}` : ''));
  addRow(row);
}

function marker(kind, text) {
  const now = new Date();
  addRow(el('li', { class: `marker ${kind}`, 'data-marker': kind },
    el('time', {}, now.toLocaleTimeString('en-GB')), el('span', {}, text)));
}

function addRow(row) {
  const tail = $('#tail');
  applyFilter(row);
  tail.prepend(row);
  while (tail.childElementCount > TAIL_MAX) tail.lastElementChild.remove();
}

function applyFilter(row) {
  const text = $('#filter').value.trim().toLowerCase();
  row.hidden = text !== '' && row.classList.contains('ev') &&
    !row.textContent.toLowerCase().includes(text);
}

$('#filter').addEventListener('input', () => {
  for (const row of $('#tail').children) applyFilter(row);
});
for (const box of boxes()) box.addEventListener('change', () => {
  streamRefused = false;
  openEvents();
});

poll();
