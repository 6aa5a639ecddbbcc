// The dashboard (GET /ui) in a real browser against a real mesh: `zmeshctl up`
// on free loopback ports from a generated mesh file, headless Chromium driven
// by puppeteer-core. Reads the page's data-* hooks, never pixels:
//   every configured service listed up; IdGen.next's rate moving under load;
//   an idgen.block event in the tail within a second; a service killed with
//   SIGKILL (by pid, from the supervisor's state file) red, then green again;
//   with a token configured, the page asks for it, then works.
// Screenshots go to --out. Exit code 0: passed.
//
//   node dashboard_test.mjs --bin <dir of zmeshctl and zmesh-*> --chromium <browser>
//        --puppeteer <dir with node_modules/puppeteer-core> --out <dir>
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, a, i, all) => (a.startsWith('--') ? [...pairs, [a.slice(2), all[i + 1]]] : pairs), []));
for (const need of ['bin', 'chromium', 'puppeteer', 'out'])
  if (!args[need]) fail(`missing --${need}`);
const zmeshctl = path.join(args.bin, 'zmeshctl');
const puppeteer = createRequire(path.join(path.resolve(args.puppeteer), 'package.json'))('puppeteer-core');
fs.mkdirSync(args.out, { recursive: true });

const started = Date.now();
const RESTART_BACKOFF_S = 4;  // a killed service stays down this long: several polls of the page
const SERVICES = ['gateway', 'broker', 'idgen', 'ratelimit', 'lock', 'cache'];

function log(...what) {
  console.log(`[${((Date.now() - started) / 1000).toFixed(1)}s]`, ...what);
}

// A failure of the test itself: never taken for a probe that found nothing yet.
class TestFailure extends Error {}

function fail(message) {
  console.error(`FAIL: ${message}`);
  process.exitCode = 1;
  throw new TestFailure(message);
}

function check(ok, message) {
  if (!ok) fail(message);
  log(`ok: ${message}`);
}

// Polls `probe` until it returns a truthy value; fails after `ms`. A probe
// that throws counts as "not yet", unless it called fail(): that ends the wait
// at once with its own message.
async function until(what, ms, probe, every = 100) {
  const deadline = Date.now() + ms;
  for (;;) {
    let value;
    try {
      value = await probe();
    } catch (e) {
      if (e instanceof TestFailure) throw e;
      value = undefined;
    }
    if (value) return value;
    if (Date.now() > deadline) fail(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(every);
  }
}

// True when `promise` settles within `ms` (its timer never outlives it).
async function within(promise, ms) {
  let timer;
  const timeout = new Promise((resolve) => { timer = setTimeout(resolve, ms, false); });
  try {
    return await Promise.race([promise.then(() => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

// ------------------------------------------------------------ ports (as tests/support/process.cpp)

// Below the kernel's ephemeral range, so no outgoing connection takes a port
// between the pick and the bind; a claim file keeps parallel tests apart.
function portRange() {
  let [low, high] = [32768, 60999];
  try {
    [low, high] = fs.readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
  } catch { /* the default */ }
  if (low > 11000) return [10000, low - 1];
  if (high < 54535) return [high + 1, 65535];
  return [20000, 31999];
}

function claim(port) {
  const dir = path.join(process.env.TMPDIR || '/tmp', 'zmesh-test-ports');
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, String(port));
  try {
    fs.closeSync(fs.openSync(file, 'wx'));
    return true;
  } catch (e) {
    if (e.code !== 'EEXIST') return true;
    const age = Date.now() - fs.statSync(file).mtimeMs;
    if (age < 60000) return false;
    fs.rmSync(file, { force: true });
    return claim(port);
  }
}

function bindable(port) {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

async function freePort() {
  const [low, high] = portRange();
  for (let attempt = 0; attempt < 1000; attempt++) {
    const port = low + Math.floor(Math.random() * (high - low + 1));
    if (await bindable(port) && claim(port)) return port;
  }
  fail(`no free port in ${low}-${high}`);
}

// ------------------------------------------------------------ the mesh

let liveMesh = null;  // the mesh running now, for the watchdog to stop

class TestMesh {
  // token: the page's (every scope it needs); viewerToken: one with the
  // stats scope alone (no events).
  constructor(dir, token, viewerToken) {
    this.dir = dir;
    this.token = token;
    this.viewerToken = viewerToken;
    this.file = path.join(dir, 'mesh.toml');
    this.runDir = path.join(dir, 'run');
    this.child = null;
  }

  async write() {
    const p = {};
    for (const name of ['xsub', 'xpub', 'brokerAdmin', 'idgen', 'ratelimit', 'lock', 'cache', 'gatewayAdmin', 'http'])
      p[name] = await freePort();
    this.port = p.http;
    this.base = `http://127.0.0.1:${p.http}`;
    const tcp = (port) => `"tcp://127.0.0.1:${port}"`;
    // deploy/local/mesh.toml's structure, on free ports, data in the temporary directory.
    let toml = `[mesh]
run_dir = "${this.runDir}"
log_dir = "${path.join(this.dir, 'log')}"
restart_backoff = "${RESTART_BACKOFF_S}s"
stop_grace = "3s"
health_timeout = "30s"

[broker]
xsub = ${tcp(p.xsub)}
xpub = ${tcp(p.xpub)}
admin = ${tcp(p.brokerAdmin)}

[idgen]
endpoint = ${tcp(p.idgen)}
data_dir = "${path.join(this.dir, 'idgen')}"
block_size = 100
worker_id = 7

[ratelimit]
endpoint = ${tcp(p.ratelimit)}
data_dir = "${path.join(this.dir, 'ratelimit')}"

[ratelimit.rules.api]
algorithm = "sliding_window_log"
limit = 10
window = "10s"
descriptors = ["key"]

[lock]
endpoint = ${tcp(p.lock)}
data_dir = "${path.join(this.dir, 'lock')}"

[cache]
endpoint = ${tcp(p.cache)}
data_dir = "${path.join(this.dir, 'cache')}"
max_memory = "16mb"

[gateway]
listen = "127.0.0.1:${p.http}"
endpoint = ${tcp(p.gatewayAdmin)}
ops_cache_max_age = "200ms"
`;
    // The page needs stats (/v1/mesh) and events; ids for the test's own calls.
    if (this.token)
      toml += `
[gateway.tokens.ui]
token = "${this.token}"
scopes = ["ids", "events", "stats"]
`;
    if (this.viewerToken)
      toml += `
[gateway.tokens.viewer]
token = "${this.viewerToken}"
scopes = ["stats"]
`;
    fs.writeFileSync(this.file, toml);
  }

  // `zmeshctl up --foreground`: this child is the supervisor, stopped by its
  // pid. setpriv: it gets SIGTERM should this script die first.
  async up() {
    await this.write();
    liveMesh = this;
    const out = fs.openSync(path.join(this.dir, 'zmeshctl.out'), 'a');
    this.child = spawn('setpriv', ['--pdeathsig', 'TERM', '--', zmeshctl, '-c', this.file, 'up', '--foreground'],
      { stdio: ['ignore', out, out] });
    fs.closeSync(out);
    this.exited = new Promise((resolve) => this.child.once('exit', resolve));
    log(`mesh: supervisor pid ${this.child.pid}, ${this.base}`);
    await until('the gateway\'s /readyz', 60000, async () => {
      if (this.child.exitCode != null) fail(`zmeshctl up exited (${this.child.exitCode}): ${this.tail('zmeshctl.out')}`);
      const res = await fetch(`${this.base}/readyz`);
      return res.status === 200;
    }, 200);
  }

  tail(name) {
    try { return fs.readFileSync(path.join(this.dir, name), 'utf8').slice(-2000); } catch { return ''; }
  }

  // SIGTERM to the supervisor (it stops its services), SIGKILL after a grace.
  async down() {
    if (liveMesh === this) liveMesh = null;
    if (!this.child || this.child.exitCode != null || this.child.signalCode != null) return;
    this.child.kill('SIGTERM');
    if (!(await within(this.exited, 20000))) {
      log('supervisor did not stop within 20 s: SIGKILL');
      this.child.kill('SIGKILL');
      await within(this.exited, 5000);
    }
  }

  // The pid the supervisor's state file gives `service`, checked to run this
  // mesh (a recycled pid would be someone else's).
  servicePid(service) {
    const state = fs.readFileSync(path.join(this.runDir, 'zmesh.state'), 'utf8');
    for (const line of state.split('\n')) {
      const [name, pid] = line.trim().split(/\s+/);
      if (name !== service || !(Number(pid) > 0)) continue;
      const cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      if (cmdline.includes(this.file)) return Number(pid);
    }
    return 0;
  }

  headers() {
    return this.token ? { Authorization: `Bearer ${this.token}` } : {};
  }

  async post(route) {
    const res = await fetch(`${this.base}${route}`, { method: 'POST', headers: this.headers() });
    if (res.status !== 200) fail(`POST ${route}: HTTP ${res.status} ${await res.text()}`);
    return res.json();
  }
}

// ------------------------------------------------------------ page probes

const stateOf = (page, service) =>
  page.$eval(`[data-service="${service}"]`, (e) => e.dataset.state).catch(() => null);

const methodRate = (page, service, method) =>
  page.$eval(`[data-service="${service}"] [data-method="${method}"]`, (e) => e.dataset.rate)
    .then((r) => (r === '' ? null : Number(r))).catch(() => null);

async function allUp(page, services) {
  return page.evaluate((names) => names.every((n) =>
    document.querySelector(`[data-service="${n}"]`)?.dataset.state === 'up'), services);
}

// Load on IdGen.next: `workers` callers, each POSTing one id after another.
async function load(mesh, ms, workers = 4) {
  const until = Date.now() + ms;
  let calls = 0;
  await Promise.all(Array.from({ length: workers }, async (_, w) => {
    while (Date.now() < until) {
      await mesh.post(`/v1/ids/dashboard-load-${w}`);
      calls++;
    }
  }));
  return calls;
}

// ------------------------------------------------------------ scenarios

async function openPage(browser, mesh) {
  const context = await browser.createBrowserContext();  // its own sessionStorage
  const page = await context.newPage();
  await page.setViewport({ width: 1280, height: 800 });
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  // Failed requests (a 401 before the token, a killed gateway) are the
  // browser's notes on what the test did, not errors of the page.
  page.on('console', (m) => {
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) errors.push(m.text());
  });
  const res = await page.goto(`${mesh.base}/ui`, { waitUntil: 'load', timeout: 15000 });
  check(res.status() === 200, 'GET /ui answers 200');
  return { page, context, errors };
}

async function plainMesh(browser, dir) {
  const mesh = new TestMesh(dir);
  try {
    await mesh.up();

    // The static files: cacheable by ETag, unknown ones 404, no auth.
    const js = await fetch(`${mesh.base}/ui/app.js`);
    const etag = js.headers.get('etag');
    check(js.status === 200 && js.headers.get('content-type').startsWith('text/javascript') &&
      js.headers.get('cache-control') === 'no-cache' && /^"[0-9a-f]+"$/.test(etag ?? ''),
    '/ui/app.js: 200, text/javascript, no-cache, a strong ETag');
    const again = await fetch(`${mesh.base}/ui/app.js`, { headers: { 'If-None-Match': etag } });
    check(again.status === 304, 'If-None-Match with its ETag: 304');
    const list = await fetch(`${mesh.base}/ui/app.js`, { headers: { 'If-None-Match': `"other", W/${etag}` } });
    check(list.status === 304, 'If-None-Match with a list holding its weak ETag: 304');
    const csp = "default-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'";
    for (const file of ['/ui', '/ui/app.js', '/ui/style.css']) {
      const res = await fetch(`${mesh.base}${file}`);
      check(res.headers.get('content-security-policy') === csp &&
        res.headers.get('x-content-type-options') === 'nosniff', `${file}: CSP and nosniff`);
      const head = await fetch(`${mesh.base}${file}`, { method: 'HEAD' });
      const body = await res.text();
      check(head.status === 200 && head.headers.get('etag') === res.headers.get('etag') &&
        Number(head.headers.get('content-length')) === Buffer.byteLength(body) &&
        (await head.text()) === '', `HEAD ${file}: 200, the GET's ETag and length, no body`);
    }
    check((await fetch(`${mesh.base}/ui/nope.js`)).status === 404, '/ui/nope.js: 404');
    check((await fetch(`${mesh.base}/ui/`)).status === 200, '/ui/: 200 (the page)');

    const { page, errors } = await openPage(browser, mesh);
    await until('every configured service listed up', 15000, () => allUp(page, SERVICES));
    const listed = await page.$$eval('[data-service]', (all) => all.map((e) => e.dataset.service));
    check(SERVICES.every((s) => listed.includes(s)), `services listed: ${listed.join(', ')}`);
    await until('the event stream open', 10000,
      () => page.$eval('#stream', (e) => e.dataset.stream === 'open'));

    // Load: IdGen.next's rate rises while it runs and falls back after.
    const running = load(mesh, 5000);
    const peak = await until('IdGen.next calls/s > 5 under load', 5000, async () => {
      const r = await methodRate(page, 'idgen', 'IdGen.next');
      return r > 5 ? r : 0;
    });
    const calls = await running;
    check(peak > 5, `IdGen.next at ${peak.toFixed(1)} calls/s under load (${calls} calls in 5 s)`);
    const quantiles = await page.$eval('[data-service="idgen"] [data-method="IdGen.next"]',
      (e) => [Number(e.dataset.p50), Number(e.dataset.p99)]);
    check(quantiles[0] > 0 && quantiles[1] >= quantiles[0], `IdGen.next p50 ${quantiles[0]} s, p99 ${quantiles[1]} s`);
    await until('IdGen.next calls/s back to 0 after the load', 5000,
      async () => (await methodRate(page, 'idgen', 'IdGen.next')) === 0);
    log('ok: IdGen.next back to 0 calls/s');

    // An event: a fresh namespace reserves a block, published as idgen.block.
    const namespace = `dash-${process.pid}-${Date.now()}`;
    await mesh.post(`/v1/ids/${namespace}`);
    const posted = Date.now();
    await until('the idgen.block event in the tail within 1 s', 1000, () => page.evaluate((ns) =>
      [...document.querySelectorAll('#tail li[data-topic="idgen.block"]')].some((li) => li.textContent.includes(ns)),
    namespace), 20);
    log(`ok: idgen.block of ${namespace} in the tail after ${Date.now() - posted} ms`);
    // The text filter hides the other rows.
    await page.type('#filter', namespace);
    const shown = await page.$$eval('#tail li.ev', (all) => all.filter((li) => !li.hidden).map((li) => li.textContent));
    check(shown.length >= 1 && shown.every((t) => t.includes(namespace)), 'the text filter shows only matching rows');
    await page.$eval('#filter', (e) => { e.value = ''; e.dispatchEvent(new Event('input')); });

    // A service killed with SIGKILL goes red, then the supervisor restarts it: green.
    const pid = mesh.servicePid('idgen');
    check(pid > 0, `idgen runs as pid ${pid} (the supervisor's state file)`);
    const restartsBefore = await page.$eval('[data-service="idgen"]', (e) => e.dataset.restarts);
    process.kill(pid, 'SIGKILL');
    const killed = Date.now();
    await until('idgen red after SIGKILL', RESTART_BACKOFF_S * 1000 + 2000,
      async () => (await stateOf(page, 'idgen')) === 'down', 50);
    log(`ok: idgen down on the page ${Date.now() - killed} ms after SIGKILL`);
    await page.screenshot({ path: path.join(args.out, 'dashboard-down.png') });
    await until('mesh.service_down for idgen in the tail', 5000, () => page.evaluate(() =>
      [...document.querySelectorAll('#tail li[data-topic="mesh.service_down"]')].some((li) => li.textContent.includes('idgen'))));
    log('ok: mesh.service_down of idgen in the tail');
    await until('idgen green again after its restart', 30000,
      async () => (await stateOf(page, 'idgen')) === 'up', 100);
    log(`ok: idgen up again ${Date.now() - killed} ms after SIGKILL`);
    check(mesh.servicePid('idgen') !== pid, 'idgen restarted under a new pid');
    const restartsAfter = await until('the restart counted', 5000, () =>
      page.$eval('[data-service="idgen"]', (e) => e.dataset.restarts).then((r) => (r !== restartsBefore ? r : null)));
    log(`ok: idgen restarts ${restartsBefore || '–'} → ${restartsAfter}`);

    // The gateway itself killed: the stream drops and comes back, marked in the tail.
    const gatewayPid = mesh.servicePid('gateway');
    check(gatewayPid > 0, `the gateway runs as pid ${gatewayPid}`);
    process.kill(gatewayPid, 'SIGKILL');
    await until('a marker of the interrupted stream', 5000, () => page.evaluate(() =>
      document.querySelectorAll('#tail li[data-marker="reconnect"]').length > 0));
    log('ok: the tail marks the interrupted stream');
    await until('the stream open again after the gateway\'s restart', RESTART_BACKOFF_S * 1000 + 20000,
      () => page.$eval('#stream', (e) => e.dataset.stream === 'open'), 200);
    const markers = await page.$$eval('#tail li.marker', (all) => all.map((li) => `${li.dataset.marker}: ${li.textContent}`));
    // A new gateway cannot resume the old one's stream: it opens with `event: gap`.
    check(markers.some((m) => m.startsWith('reconnect:') && m.includes('reconnected')) &&
      markers.some((m) => m.startsWith('gap:')), `markers: ${markers.join(' | ')}`);
    await until('every service up again, seen through the new gateway', 15000, () => allUp(page, SERVICES));
    log('ok: the page polls the restarted gateway');

    // The other families, generic: idgen's own counters among them.
    await page.$eval('[data-service="idgen"] details', (d) => { d.open = true; });
    const others = await until('idgen\'s other statistics listed', 3000, () =>
      page.$$eval('[data-service="idgen"] details tr', (rows) => rows.map((r) => r.textContent))
        .then((rows) => (rows.some((r) => r.startsWith('idgen.')) ? rows : null)));
    check(others.length > 0, `idgen shows ${others.length} other statistics (${others.filter((r) => r.startsWith('idgen.')).length} idgen.*)`);
    await page.$eval('[data-service="idgen"] details', (d) => { d.open = false; });

    // A picture of a busy mesh: load, so the sparklines have something to show.
    await load(mesh, 4000, 3);
    await page.$eval('#filter', (e) => e.blur());
    await page.screenshot({ path: path.join(args.out, 'dashboard.png') });
    log(`screenshot: ${path.join(args.out, 'dashboard.png')}`);
    check(errors.length === 0, `no errors in the page's console${errors.length ? `: ${errors.join('; ')}` : ''}`);
  } finally {
    await mesh.down();
  }
}

async function tokenMesh(browser, dir) {
  const mesh = new TestMesh(dir, `tok-${process.pid}-${Date.now()}`, `view-${process.pid}-${Date.now()}`);
  try {
    await mesh.up();
    const { page, errors } = await openPage(browser, mesh);
    await until('the token field shown after a 401', 5000,
      () => page.$eval('#auth', (f) => !f.hidden && getComputedStyle(f).display !== 'none'));
    log('ok: the page asks for a token');
    await page.type('#token', mesh.token);
    await page.click('#auth button[type=submit]');
    await until('every configured service listed up, with the token', 15000, () => allUp(page, SERVICES));
    log('ok: with the token, every service is listed up');
    check(await page.evaluate(() => sessionStorage.getItem('zmesh.token')) === mesh.token,
      'the token is kept in sessionStorage');
    await until('the event stream open (?access_token=)', 10000,
      () => page.$eval('#stream', (e) => e.dataset.stream === 'open'));
    const namespace = `dash-auth-${Date.now()}`;
    await mesh.post(`/v1/ids/${namespace}`);
    await until('the idgen.block event in the tail (authenticated stream)', 2000, () => page.evaluate((ns) =>
      [...document.querySelectorAll('#tail li[data-topic="idgen.block"]')].some((li) => li.textContent.includes(ns)),
    namespace), 20);
    log('ok: events arrive on the authenticated stream');
    await page.screenshot({ path: path.join(args.out, 'dashboard-token.png') });
    check(errors.length === 0, `no errors in the page's console${errors.length ? `: ${errors.join('; ')}` : ''}`);

    // A token with the stats scope alone: the page draws the mesh, and the
    // tail says why the stream is refused instead of reopening it.
    const viewer = await openPage(browser, mesh);
    await until('the token field shown to the viewer', 5000,
      () => viewer.page.$eval('#auth', (f) => !f.hidden));
    await viewer.page.type('#token', mesh.viewerToken);
    await viewer.page.click('#auth button[type=submit]');
    await until('every service listed up with a stats-only token', 15000, () => allUp(viewer.page, SERVICES));
    const refused = await until('the stream refused, saying why', 10000, () => viewer.page.$eval('#stream',
      (e) => (e.dataset.stream === 'refused' ? e.textContent : null)));
    check(refused.includes('403') && refused.includes('events'), `the stream's status: ${refused}`);
    await sleep(4000);  // past the old 3 s reopen: still refused, not reconnecting
    check(await viewer.page.$eval('#stream', (e) => e.dataset.stream) === 'refused', 'no reconnect loop after a 403');
    await viewer.context.close();
  } finally {
    await mesh.down();
  }
}

// ------------------------------------------------------------ main

// Stops the mesh still running (or leaves it to setpriv's death signal when
// it will not stop), removes the temporary directory, and exits.
const watchdog = setTimeout(async () => {
  console.error('FAIL: the whole test took over 270 s');
  process.exitCode = 1;
  await Promise.race([liveMesh?.down(), sleep(25000)]).catch(() => {});
  fs.rmSync(tmp, { recursive: true, force: true });
  process.exit(1);
}, 270000);

const tmp = fs.mkdtempSync(path.join(process.env.TMPDIR || os.tmpdir(), 'zmesh-dashboard-'));
let browser;
try {
  browser = await puppeteer.launch({
    executablePath: args.chromium,
    headless: 'shell',
    // No sandbox: CI runs as root in a container. No network beyond loopback.
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-extensions'],
    timeout: 30000,
  });
  log(`browser: ${await browser.version()}`);
  fs.mkdirSync(path.join(tmp, 'plain'));
  await plainMesh(browser, path.join(tmp, 'plain'));
  fs.mkdirSync(path.join(tmp, 'token'));
  await tokenMesh(browser, path.join(tmp, 'token'));
  log('PASS');
} catch (e) {
  process.exitCode = 1;
  console.error(e.stack);
  for (const name of ['plain', 'token'])
    for (const file of ['zmeshctl.out', 'log/zmeshctl.log', 'log/gateway.log', 'log/idgen.log']) {
      const text = fs.existsSync(path.join(tmp, name, file)) ? fs.readFileSync(path.join(tmp, name, file), 'utf8') : '';
      if (text) console.error(`--- ${name}/${file} (last lines)\n${text.split('\n').slice(-15).join('\n')}`);
    }
} finally {
  if (browser) await browser.close().catch(() => {});
  clearTimeout(watchdog);
  fs.rmSync(tmp, { recursive: true, force: true });
  log(`done in ${((Date.now() - started) / 1000).toFixed(1)} s`);
}
