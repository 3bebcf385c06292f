#!/usr/bin/env node
// Drives headless Chromium over its DevTools protocol to load xpra's HTML5
// client and wait for a session window with something drawn in it.
//
// No npm packages: Chromium is started with --remote-debugging-pipe, which
// speaks the DevTools protocol as NUL-terminated JSON messages on fds 3
// (commands to Chromium) and 4 (replies and events from it).
//
//   node drive.js CHROMIUM URL SCREENSHOT.png USER_DATA_DIR [TIMEOUT_MS [WM_CLASS]]
//
// With WM_CLASS (e.g. XTerm), only a window whose X11 class the session
// reported as that counts; without, any window.
//
// Prints progress lines on stderr and, last, one JSON line on stdout:
// {"ok": true|false, "reason" (when not ok), "window" (the one found),
//  "state" (page URL, progress text, every window: title, X11 class, canvas
//  size, colours), "network" (requests and WebSockets with timings, when not
//  ok), "console" (the page's console and errors), "screenshot"}.
// Works with Debian's nodejs 18 and later.
// Exits 0 when such a window's canvas shows more than one colour, 1 otherwise.
'use strict';

const { spawn } = require('child_process');
const fs = require('fs');

const [chromium, url, shot, profile, timeoutArg, wantClass] = process.argv.slice(2);
if (!chromium || !url || !shot || !profile) {
  console.error('usage: drive.js CHROMIUM URL SCREENSHOT USER_DATA_DIR [TIMEOUT_MS [WM_CLASS]]');
  process.exit(2);
}
const timeoutMs = Number(timeoutArg || 60000);
const wanted = (w) => !wantClass || w.wm_class.includes(wantClass);
const started = Date.now();
const log = (...a) => console.error(`[drive +${((Date.now() - started) / 1000).toFixed(1)}s]`, ...a);

const browser = spawn(chromium, [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--no-default-browser-check',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-extensions',
  '--disable-dev-shm-usage',
  '--ignore-certificate-errors',
  '--mute-audio',
  '--window-size=1280,900',
  `--user-data-dir=${profile}`,
  '--remote-debugging-pipe',
  'about:blank',
], { stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe'] });

// Chromium's own stderr: kept for the report, not shown unless it fails.
let browserErr = '';
browser.stderr.on('data', (d) => { browserErr = (browserErr + d).slice(-4000); });
let browserExited = null;
browser.on('exit', (code, sig) => { browserExited = `chromium exited (${code ?? sig})`; });

const toBrowser = browser.stdio[3];
const fromBrowser = browser.stdio[4];
let nextId = 1;
const pending = new Map();
const listeners = [];
let inbuf = Buffer.alloc(0);
fromBrowser.on('data', (chunk) => {
  inbuf = Buffer.concat([inbuf, chunk]);
  let nul;
  while ((nul = inbuf.indexOf(0)) >= 0) {
    const text = inbuf.subarray(0, nul).toString('utf8');
    inbuf = inbuf.subarray(nul + 1);
    let msg;
    try { msg = JSON.parse(text); } catch (e) { continue; }
    if (msg.id && pending.has(msg.id)) {
      const { resolve, reject, method } = pending.get(msg.id);
      pending.delete(msg.id);
      if (msg.error) reject(new Error(`${method}: ${msg.error.message}`));
      else resolve(msg.result);
    } else if (msg.method) {
      for (const l of listeners) l(msg);
    }
  }
});
fromBrowser.on('error', () => {});
toBrowser.on('error', () => {});

function send(method, params = {}, sessionId) {
  const id = nextId++;
  const msg = { id, method, params };
  if (sessionId) msg.sessionId = sessionId;
  return new Promise((resolve, reject) => {
    pending.set(id, { resolve, reject, method });
    toBrowser.write(JSON.stringify(msg) + '\0');
    setTimeout(() => {
      if (pending.has(id)) {
        pending.delete(id);
        reject(new Error(`${method}: no answer in 15 s${browserExited ? ` (${browserExited})` : ''}`));
      }
    }, 15000);
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const consoleLines = [];
// Requests and WebSockets as the page's network domain saw them (seconds
// since the driver started), for the report when the page does not get far.
const requests = new Map();
const since = () => Number(((Date.now() - started) / 1000).toFixed(1));
function network(m) {
  const p = m.params;
  switch (m.method) {
    case 'Network.requestWillBeSent':
      if (!p.request.url.startsWith('data:')) requests.set(p.requestId, { url: p.request.url, sent: since() });
      break;
    case 'Network.responseReceived':
      if (requests.has(p.requestId)) Object.assign(requests.get(p.requestId), { status: p.response.status, answered: since() });
      break;
    case 'Network.loadingFinished':
      if (requests.has(p.requestId)) requests.get(p.requestId).done = since();
      break;
    case 'Network.loadingFailed':
      if (requests.has(p.requestId)) Object.assign(requests.get(p.requestId), { failed: p.errorText, done: since() });
      break;
    case 'Network.webSocketCreated':
      requests.set(p.requestId, { url: p.url, sent: since() });
      break;
    case 'Network.webSocketHandshakeResponseReceived':
      if (requests.has(p.requestId)) Object.assign(requests.get(p.requestId), { status: p.response.status, answered: since() });
      break;
    case 'Network.webSocketClosed':
      if (requests.has(p.requestId)) requests.get(p.requestId).done = since();
      break;
    case 'Network.webSocketFrameError':
      if (requests.has(p.requestId)) requests.get(p.requestId).failed = p.errorMessage;
      break;
    default:
  }
}
const networkReport = () => [...requests.values()].map((r) => {
  const path = r.url.replace(/^[a-z]+:\/\/[^/]+/, '').replace(/\?.*/, '');
  return `${path} sent=${r.sent} answered=${r.answered ?? '-'} done=${r.done ?? '-'} status=${r.status ?? '-'}${r.failed ? ` failed=${r.failed}` : ''}`;
});
const keep = (line) => {
  consoleLines.push(line);
  if (consoleLines.length > 200) consoleLines.shift();
};

// What the page shows: the HTML5 client puts each window in a div of class
// "window" inside #screen (its id the window id), its canvas inside; the
// page's global `client` (XpraClient) keeps each window's metadata, the X11
// class among it; the progress box says how far the connection got. Pixels
// are read from every window canvas.
const PROBE = `(() => {
  const wins = [...document.querySelectorAll('#screen .window')].map((div) => {
    const c = div.querySelector('canvas');
    const title = (div.querySelector('.windowtitle') || {}).textContent || '';
    let wm_class = [];
    try { wm_class = [...(client.id_to_window[div.id].metadata['class-instance'] || [])]; } catch (e) {}
    const r = { id: div.id, title: title.trim(), wm_class, width: 0, height: 0, colours: 0, opaque: 0 };
    if (!c || !c.width || !c.height) return r;
    r.width = c.width; r.height = c.height;
    try {
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      const seen = new Set();
      let opaque = 0;
      for (let i = 0; i < d.length; i += 4) {
        if (d[i + 3] === 0) continue;
        opaque++;
        if (seen.size < 64) seen.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
      }
      r.colours = seen.size; r.opaque = opaque;
    } catch (e) { r.error = String(e); }
    return r;
  });
  const text = (sel) => { const e = document.querySelector(sel); return e ? e.textContent.trim() : ''; };
  let disconnect = '';
  try { disconnect = sessionStorage.getItem('disconnect') || ''; } catch (e) {}
  return JSON.stringify({ href: location.href, windows: wins,
    progress: text('#progress-label') + ' ' + text('#progress-details'), disconnect });
})()`;

async function main() {
  const { targetInfos } = await send('Target.getTargets');
  const page = targetInfos.find((t) => t.type === 'page');
  if (!page) throw new Error('no page target in chromium');
  const { sessionId } = await send('Target.attachToTarget', { targetId: page.targetId, flatten: true });
  const sessions = new Set([sessionId]);
  listeners.push((m) => {
    if (m.method === 'Target.attachedToTarget' && m.sessionId === sessionId) {
      // the client's protocol worker: its requests and its WebSocket too
      const child = m.params.sessionId;
      sessions.add(child);
      send('Network.enable', {}, child).catch(() => {});
      send('Runtime.enable', {}, child).catch(() => {});
      send('Runtime.runIfWaitingForDebugger', {}, child).catch(() => {});
      return;
    }
    if (!sessions.has(m.sessionId)) return;
    if (m.method.startsWith('Network.')) {
      network(m);
    } else if (m.method === 'Runtime.consoleAPICalled') {
      keep(`console.${m.params.type}: ` + m.params.args.map((a) => a.value ?? a.description ?? a.type).join(' '));
    } else if (m.method === 'Runtime.exceptionThrown') {
      const d = m.params.exceptionDetails;
      keep(`exception: ${(d.exception && d.exception.description) || d.text}`);
    } else if (m.method === 'Log.entryAdded') {
      keep(`log.${m.params.entry.level}: ${m.params.entry.text} ${m.params.entry.url || ''}`);
    }
  });
  await send('Runtime.enable', {}, sessionId);
  await send('Log.enable', {}, sessionId);
  await send('Page.enable', {}, sessionId);
  await send('Network.enable', {}, sessionId);
  await send('Target.setAutoAttach', { autoAttach: true, waitForDebuggerOnStart: true, flatten: true }, sessionId);
  await send('Emulation.setDeviceMetricsOverride',
    { width: 1280, height: 900, deviceScaleFactor: 1, mobile: false }, sessionId);
  log('loading', url);
  const nav = await send('Page.navigate', { url }, sessionId);
  if (nav.errorText) throw new Error(`navigation failed: ${nav.errorText}`);

  let state = null;
  let last = '';
  let good = null;
  let win = null;
  while (Date.now() - started < timeoutMs) {
    if (browserExited) throw new Error(browserExited);
    try {
      const r = await send('Runtime.evaluate', { expression: PROBE, returnByValue: true }, sessionId);
      if (r.result && typeof r.result.value === 'string') state = JSON.parse(r.result.value);
    } catch (e) {
      // the page may be between documents
    }
    if (state) {
      const summary = `${state.progress} | windows: ${state.windows
        .map((w) => `${w.title || w.id} [${w.wm_class}] ${w.width}x${w.height} colours=${w.colours}`).join(', ') || 'none'}`;
      if (summary !== last) { log(summary); last = summary; }
      if (state.href.includes('connect.html')) {
        return { ok: false, reason: `the client gave up and went to connect.html: ${state.disconnect || '(no reason)'}`, state, network: networkReport() };
      }
      const drawn = state.windows.find((w) => wanted(w) && w.colours > 1 && w.opaque > 0);
      if (drawn) {
        win = drawn;
        // the xterm is drawn in several updates: wait a moment for the rest
        if (!good) { good = Date.now(); }
        else if (Date.now() - good > 1500) break;
      }
    }
    await sleep(300);
  }
  const shotData = await send('Page.captureScreenshot', { format: 'png' }, sessionId);
  fs.writeFileSync(shot, Buffer.from(shotData.data, 'base64'));
  log('screenshot', shot);
  if (!good) {
    return { ok: false, reason: `no drawn ${wantClass || ''} window within ${timeoutMs} ms`, state, network: networkReport() };
  }
  log(`window "${win.title}" [${win.wm_class}] ${win.width}x${win.height}: ${win.colours} colours`);
  return { ok: true, window: win, state };
}

let exitCode = 1;
main()
  .then((r) => {
    exitCode = r.ok ? 0 : 1;
    process.stdout.write(JSON.stringify({ ...r, screenshot: shot, console: consoleLines }) + '\n');
  })
  .catch((e) => {
    process.stdout.write(JSON.stringify({
      ok: false, reason: String(e && e.message || e), console: consoleLines, chromium_stderr: browserErr,
    }) + '\n');
  })
  .finally(async () => {
    try { await Promise.race([send('Browser.close'), sleep(3000)]); } catch (e) { /* gone already */ }
    // Browser.close answers before Chromium has exited: give it a moment to
    // end its helpers and let go of the profile, then make sure.
    for (let i = 0; i < 50 && !browserExited; i++) await sleep(100);
    if (!browserExited) browser.kill('SIGKILL');
    process.exit(exitCode);
  });
