// The Berth console: one page, no build step. Preact + htm, dagre and ansi_up are vendored in
// vendor/ (see vendor/README.md), so it works offline. Everything live comes over one
// WebSocket (/v1/ws, berth.v1.json) that reconnects with backoff and resumes each topic from
// the last sequence it saw; REST only for the login, the new-session form and its validation.

import { html, render, Component, useState, useEffect, useRef, useMemo } from './vendor/preact-htm.mjs';
import { AnsiUp } from './vendor/ansi_up.js';

// dagre (97 KB) is loaded when a graph is first drawn, not with the page.
let dagre = null;
let dagreLoading = null;
function loadDagre() {
  if (!dagreLoading) {
    dagreLoading = new Promise((resolve, reject) => {
      const el = document.createElement('script');
      el.src = '/vendor/dagre.min.js';
      el.onload = () => { dagre = window.dagre; resolve(dagre); };
      el.onerror = () => reject(new Error('cannot load dagre'));
      document.head.appendChild(el);
    });
  }
  return dagreLoading;
}
const TERMINAL = ['succeeded', 'failed', 'cancelled', 'timed_out'];
const PHASES = ['pending', 'running', 'waiting', 'retrying', 'succeeded', 'failed', 'cancelled', 'timed_out'];
const LOG_LINE_CAP = 5000;

// ---------------------------------------------------------------------------------------------
// A tiny store: components re-render (batched per animation frame) when it changes.

const store = {
  me: null,          // {name, scope} once logged in
  conn: 'connecting', // connecting | live | reconnecting
  sessions: new Map(),
  stats: null,
  timeMode: localStorage.getItem('berth.time') || 'local',
  theme: localStorage.getItem('berth.theme') ||
      (matchMedia('(prefers-color-scheme: dark)').matches ? 'dark' : 'light'),
  now: Date.now(),
};
const listeners = new Set();
let frame = 0;
function changed() {
  if (frame) return;
  frame = requestAnimationFrame(() => {
    frame = 0;
    for (const l of listeners) l();
  });
}
function useStore() {
  const [, bump] = useState(0);
  useEffect(() => {
    const l = () => bump((n) => n + 1);
    listeners.add(l);
    return () => listeners.delete(l);
  }, []);
  return store;
}
setInterval(() => { store.now = Date.now(); changed(); }, 1000);

// ---------------------------------------------------------------------------------------------
// The connection: one WebSocket, topics resumed with `since`, calls matched by id.

class Connection {
  constructor() {
    this.subs = new Map();     // topic -> {filter, last, onItem, onGap}
    this.pending = new Map();  // call id -> {resolve, reject}
    this.nextId = 1;
    this.backoff = 500;
    this.ws = null;
    this.opened = false;
    this.firstOpen = [];
  }
  // Run `fn` once the socket is first open (at once if it is).
  onFirstOpen(fn) {
    if (this.opened) fn();
    else this.firstOpen.push(fn);
  }
  url() {
    return (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/v1/ws';
  }
  connect() {
    // The socket boot.js opened (and its session.list call), once; a new one after that.
    const boot = window.berthBoot;
    window.berthBoot = null;
    const adopt = boot && boot.ws.readyState <= WebSocket.OPEN;
    const ws = adopt ? boot.ws : new WebSocket(this.url(), 'berth.v1.json');
    this.ws = ws;
    if (adopt) {
      this.bootList = new Promise((resolve, reject) => this.pending.set(boot.listId, { resolve, reject }));
      this.bootList.catch(() => {});  // a refusal is handled by whoever awaits it
    }
    ws.onopen = () => {
      this.backoff = 500;
      store.conn = 'live';
      changed();
      for (const [topic, s] of this.subs) this.sendSubscribe(topic, s);
      if (!this.opened) {
        this.opened = true;
        for (const fn of this.firstOpen.splice(0)) fn();
      }
      refreshStats();
    };
    ws.onmessage = (e) => this.receive(JSON.parse(e.data));
    if (adopt) {
      for (const e of boot.received.splice(0)) ws.onmessage(e);
      if (ws.readyState === WebSocket.OPEN) ws.onopen();
    }
    ws.onclose = (e) => {
      if (this.ws !== ws) return;
      for (const [, p] of this.pending) p.reject(new Error('connection lost'));
      this.pending.clear();
      store.conn = 'reconnecting';
      changed();
      if (e.code === 1008 && /auth/.test(e.reason)) return loggedOut();
      setTimeout(() => this.connect(), this.backoff);
      this.backoff = Math.min(this.backoff * 2, 10000);
    };
  }
  send(obj) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(obj));
  }
  sendSubscribe(topic, s) {
    const o = { op: 'subscribe', topic, since: s.last };
    if (s.filter) o.filter = s.filter;
    this.send(o);
  }
  // Follow `topic` from after sequence `since`; onItem(item) for each, onGap(gap) when items
  // were dropped for a slow reader (default: refill by re-subscribing from the gap).
  subscribe(topic, { since = 0, filter = null } = {}, onItem, onGap) {
    const s = { filter, last: since, onItem, onGap };
    this.subs.set(topic, s);
    this.sendSubscribe(topic, s);
    return {
      close: () => {
        if (this.subs.get(topic) !== s) return;
        this.subs.delete(topic);
        this.send({ op: 'unsubscribe', topic });
      },
      // Start again from after `since` (the caller drops what it has past it).
      rewind: (since) => {
        s.last = since;
        this.sendSubscribe(topic, s);
      },
    };
  }
  call(verb, args = {}) {
    const id = 'c' + this.nextId++;
    return new Promise((resolve, reject) => {
      if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return reject(new Error('not connected'));
      this.pending.set(id, { resolve, reject });
      this.send({ op: 'call', id, verb, args });
    });
  }
  receive(m) {
    if (m.type === 'reply') {
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (m.error) {
        const e = new Error(m.error.message);
        e.code = m.error.code;
        p.reject(e);
      } else p.resolve(m.result);
      return;
    }
    if (m.type === 'error') {
      if (m.error && m.error.code === 'unauthorized') return loggedOut();
      if (m.id && this.pending.has(m.id)) {
        this.pending.get(m.id).reject(new Error(m.error.message));
        this.pending.delete(m.id);
      } else console.warn('berth:', m.error && m.error.message);
      return;
    }
    const s = m.topic && this.subs.get(m.topic);
    if (!s) return;
    if (m.type === 'gap') {
      if (s.onGap) s.onGap(m);
      else {
        s.last = m.from - 1;
        this.sendSubscribe(m.topic, s);
      }
      return;
    }
    if (m.type === 'caught_up') return;  // the backlog of a topic is delivered
    if (m.type !== 'event' && m.type !== 'log' && m.type !== 'session') return; // acks
    if (m.seq <= s.last) return; // already had it (a re-subscribe overlapping)
    s.last = m.seq;
    s.onItem(m);
  }
}
const conn = new Connection();

function loggedOut() {
  store.me = null;
  store.conn = 'connecting';
  if (conn.ws) { const w = conn.ws; conn.ws = null; w.close(); }
  changed();
}

// ---------------------------------------------------------------------------------------------
// Helpers

function parseHash() {
  const h = location.hash.replace(/^#/, '');
  const [path, query] = h.split('?');
  const params = new URLSearchParams(query || '');
  const parts = (path || '/sessions').split('/').filter(Boolean);
  return { parts, params };
}
function go(hash) {
  location.hash = hash;
}
function setParam(key, value) {
  const { parts, params } = parseHash();
  if (value) params.set(key, value); else params.delete(key);
  const q = params.toString();
  history.replaceState(null, '', '#/' + parts.join('/') + (q ? '?' + q : ''));
  window.dispatchEvent(new HashChangeEvent('hashchange'));
}
function ms(ts) {
  if (typeof ts === 'number') return ts;
  const t = Date.parse(ts);
  return isNaN(t) ? 0 : t;
}
// Times as 2026-12-03 17:23:25 (local) or 2026-12-03 17:23:25Z (UTC), built by hand: an
// Intl formatter costs about 15 µs a call, a fifth of the table's first render.
const two = (n) => (n < 10 ? '0' : '') + n;
function fmtTime(ts) {
  const t = ms(ts);
  if (!t) return '';
  if (store.timeMode === 'relative') return fmtDuration(store.now - t) + ' ago';
  const d = new Date(t);
  if (store.timeMode === 'utc') {
    return d.getUTCFullYear() + '-' + two(d.getUTCMonth() + 1) + '-' + two(d.getUTCDate()) + ' ' +
      two(d.getUTCHours()) + ':' + two(d.getUTCMinutes()) + ':' + two(d.getUTCSeconds()) + 'Z';
  }
  return d.getFullYear() + '-' + two(d.getMonth() + 1) + '-' + two(d.getDate()) + ' ' +
    two(d.getHours()) + ':' + two(d.getMinutes()) + ':' + two(d.getSeconds());
}
function fmtDuration(d) {
  if (d < 0) d = 0;
  if (d < 10000) return (d / 1000).toFixed(1) + 's';
  const s = Math.floor(d / 1000);
  if (s < 60) return s + 's';
  if (s < 3600) return Math.floor(s / 60) + 'm ' + (s % 60) + 's';
  return Math.floor(s / 3600) + 'h ' + Math.floor((s % 3600) / 60) + 'm';
}
function duration(row) {
  const a = ms(row.created_at);
  if (!a) return '';
  const b = TERMINAL.includes(row.status) ? ms(row.updated_at) : store.now;
  return fmtDuration(b - a);
}
function shortRepo(r) {
  if (!r) return '(scratch)';
  return r.replace(/^[a-z]+:\/\//, '').replace(/\.git$/, '').split('/').slice(-2).join('/');
}
function Badge({ status }) {
  return html`<span class="badge" data-status=${status}>${(status || '?').replace('_', ' ')}</span>`;
}
async function rest(method, path, body, type = 'application/json') {
  const r = await fetch(path, {
    method, credentials: 'same-origin',
    headers: body === undefined ? {} : { 'Content-Type': type },
    body: body === undefined ? undefined : (type === 'application/json' ? JSON.stringify(body) : body),
  });
  const text = await r.text();
  let v = null;
  try { v = JSON.parse(text); } catch (_) { /* not JSON */ }
  if (!r.ok) {
    const e = new Error(v && v.error ? v.error.message : r.statusText);
    e.status = r.status;
    throw e;
  }
  return v;
}

// ---------------------------------------------------------------------------------------------
// Log in: the fragment's one-time code becomes an HttpOnly cookie.

async function login() {
  const m = location.hash.match(/login=(berthl_[A-Za-z0-9_-]+)/);
  if (m) {
    history.replaceState(null, '', location.pathname + '#/sessions');
    try {
      await rest('POST', '/v1/login', { code: m[1] });
    } catch (e) {
      return { error: e.message };
    }
  }
  try {
    return { me: await rest('GET', '/v1/whoami') };
  } catch (e) {
    return { error: e.status === 401 ? null : e.message };
  }
}

function LoginView({ error }) {
  const [code, setCode] = useState('');
  const submit = (e) => {
    e.preventDefault();
    const m = code.match(/berthl_[A-Za-z0-9_-]+/);
    if (!m) return;
    location.hash = '#login=' + m[0];
    location.reload();
  };
  return html`<main class="login">
    <h1>Berth</h1>
    <p>Run <code>berth console</code> on a machine with the node and open the link it prints.
       Or paste the link here:</p>
    <form onSubmit=${submit}>
      <input id="login-code" placeholder="http://…/#login=berthl_…" value=${code}
             onInput=${(e) => setCode(e.target.value)} />
      <button type="submit">Log in</button>
    </form>
    ${error && html`<p class="error">${error}</p>`}
  </main>`;
}

// ---------------------------------------------------------------------------------------------
// The sessions of the cluster, live.

let sessionsFeed = null;
let statsTimer = 0;
function refreshStats() {
  if (statsTimer) return;
  statsTimer = setTimeout(async () => {
    statsTimer = 0;
    try { store.stats = await conn.call('stats'); changed(); } catch (_) { /* reconnecting */ }
  }, 500);
}
// The table starts from one `session.list` (one frame, one layout of every row) and follows
// the bucket's changes after its revision, so nothing is missed and nothing goes back in time.
function followSessions() {
  if (sessionsFeed) return;
  sessionsFeed = 'starting';
  const start = async () => {
    let since = 0;
    try {
      const early = conn.bootList;
      conn.bootList = null;
      const list = await (early || conn.call('session.list', { limit: 10000 }));
      for (const r of list.sessions) store.sessions.set(r.id, r);
      since = list.revision || 0;
      changed();
    } catch (e) {
      console.warn('berth: session.list:', e.message);
    }
    sessionsFeed = conn.subscribe('sessions', { since }, (m) => {
      const d = m.data;
      if (d.deleted || d.removed) store.sessions.delete(d.id);
      else store.sessions.set(d.id, d);
      refreshStats();
      changed();
    });
    refreshStats();
  };
  conn.onFirstOpen(start);
}

function SessionsView({ params }) {
  const s = useStore();
  const status = params.get('status') || '';
  const repo = params.get('repo') || '';
  const q = (params.get('q') || '').toLowerCase();
  const rows = useMemo(() => {
    const out = [];
    for (const r of s.sessions.values()) {
      if (status && r.status !== status) continue;
      if (repo && !(r.repo || '').includes(repo)) continue;
      if (q && !(r.id + ' ' + (r.goal || '') + ' ' + (r.repo || '') + ' ' + (r.branch || ''))
          .toLowerCase().includes(q)) continue;
      out.push(r);
    }
    out.sort((a, b) => (a.id < b.id ? 1 : -1));
    return out;
  }, [s.sessions.size, frameCount(), status, repo, q]);
  const counts = (s.stats && s.stats.sessions_by_status) || {};
  const body = useRef(null);
  const [a, b] = useRowWindow(body);
  const first = Math.min(a, rows.length);
  const last = Math.min(b, rows.length);
  return html`<main>
    <div class="toolbar">
      <div class="counts">
        ${PHASES.map((p) => html`<a class=${'count' + (status === p ? ' on' : '')} data-phase=${p}
            onClick=${() => setParam('status', status === p ? '' : p)}>
            <${Badge} status=${p} /> <b>${counts[p] || 0}</b></a>`)}
      </div>
      <div class="filters">
        <select id="filter-status" value=${status} onChange=${(e) => setParam('status', e.target.value)}>
          <option value="">any status</option>
          ${PHASES.map((p) => html`<option value=${p}>${p}</option>`)}
        </select>
        <input id="filter-repo" placeholder="repo" value=${repo}
               onChange=${(e) => setParam('repo', e.target.value)} />
        <input id="filter-text" placeholder="search id, goal, branch" value=${params.get('q') || ''}
               onInput=${(e) => setParam('q', e.target.value)} />
        <a class="button primary" href="#/new">New session</a>
      </div>
    </div>
    <div id="sessions" class="sessions" role="table" data-total=${rows.length}
         aria-rowcount=${rows.length + 1}>
      <div class="row head" role="row" aria-rowindex="1"><span>status</span><span>session</span>
        <span>repo</span><span>branch</span><span>goal</span><span>node</span><span>prio</span>
        <span>created</span><span>duration</span><span>failed step</span></div>
      <div class="rows" ref=${body}>
        <div class="spacer-rows" style=${`height:${first * ROW_HEIGHT}px`}></div>
        ${rows.slice(first, last).map((r, i) => html`<${Row} key=${r.id} r=${r} index=${first + i}
            mode=${s.timeMode} now=${s.now} />`)}
        <div class="spacer-rows" style=${`height:${(rows.length - last) * ROW_HEIGHT}px`}></div>
      </div>
    </div>
    ${rows.length === 0 && html`<p class="empty">No sessions${status || repo || q ? ' match' : ' yet'}.</p>`}
  </main>`;
}
// The table is windowed: it holds the rows in view and OVERSCAN more on each side, between two
// spacers as tall as the rows they stand for, so its cost does not grow with the number of
// sessions (10,000 render as fast as 30). Every row is ROW_HEIGHT pixels high (console.css).
const ROW_HEIGHT = 34;
const OVERSCAN = 20;
function useRowWindow(ref) {
  // Before the first measure: enough for a tall screen.
  const [range, setRange] = useState([0, 60]);
  useEffect(() => {
    let queued = 0;
    const measure = () => {
      queued = 0;
      const el = ref.current;
      if (!el) return;
      const top = el.getBoundingClientRect().top;
      const from = Math.max(0, Math.floor(-top / ROW_HEIGHT) - OVERSCAN);
      const to = Math.max(from, Math.ceil((window.innerHeight - top) / ROW_HEIGHT) + OVERSCAN);
      setRange((r) => (r[0] === from && r[1] === to ? r : [from, to]));
    };
    const later = () => { if (!queued) queued = requestAnimationFrame(measure); };
    window.addEventListener('scroll', later, { passive: true });
    window.addEventListener('resize', later);
    measure();
    return () => {
      window.removeEventListener('scroll', later);
      window.removeEventListener('resize', later);
      if (queued) cancelAnimationFrame(queued);
    };
  }, []);
  return range;
}
// One row of the sessions table; re-rendered only when its session changed (or its clock runs).
class Row extends Component {
  shouldComponentUpdate(next) {
    const p = this.props;
    if (next.r !== p.r || next.mode !== p.mode || next.index !== p.index) return true;
    const ticking = next.mode === 'relative' || !TERMINAL.includes(next.r.status);
    return ticking && next.now !== p.now;
  }
  render({ r, index }) {
    // A grid row, not a <tr>. Its cells are one HTML string (escaped) that the browser parses:
    // one element for Preact to make per row, not fifteen.
    return html`<div class="row" role="row" aria-rowindex=${index + 2} data-id=${r.id}
      onClick=${() => go('#/session/' + r.id)} dangerouslySetInnerHTML=${{ __html: rowCells(r) }} />`;
  }
}
const ESCAPES = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
function esc(v) {
  return String(v ?? '').replace(/[&<>"']/g, (c) => ESCAPES[c]);
}
function rowCells(r) {
  const status = r.status || '?';
  return `<span><span class="badge" data-status="${esc(r.status)}">${esc(status.replace('_', ' '))}</span></span>` +
    `<span class="mono"><a href="#/session/${esc(r.id)}">${esc(r.id.slice(-10))}</a></span>` +
    `<span title="${esc(r.repo)}">${esc(shortRepo(r.repo))}</span>` +
    `<span class="mono">${esc(r.branch)}</span>` +
    `<span class="goal" title="${esc(r.goal)}">${esc(r.goal)}</span>` +
    `<span class="mono">${esc((r.node || '').replace(/^node-/, ''))}</span>` +
    `<span>${esc(r.priority)}</span>` +
    `<span>${esc(fmtTime(r.created_at))}</span>` +
    `<span>${esc(duration(r))}</span>` +
    `<span class="mono">${esc(r.failed_step)}</span>`;
}
let frames = 0;
listeners.add(() => { frames++; });
function frameCount() { return frames; }

// ---------------------------------------------------------------------------------------------
// A new session: a workflow (TOML, validated as you type) with repo, ref and goal.

const DEFAULT_WORKFLOW = `[[steps]]
id = "hello"
run = ["sh", "-c", "echo hello from $BERTH_SESSION"]
`;

function NewSessionView() {
  const [repo, setRepo] = useState('');
  const [ref, setRef] = useState('');
  const [goal, setGoal] = useState('');
  const [toml, setToml] = useState(DEFAULT_WORKFLOW);
  const [examples, setExamples] = useState([]);
  const [check, setCheck] = useState(null);
  const [busy, setBusy] = useState(false);
  const key = useRef(crypto.randomUUID ? crypto.randomUUID() : String(Math.random()));
  useEffect(() => {
    fetch('/examples/index.json').then((r) => r.json()).then(setExamples).catch(() => {});
  }, []);
  const query = () => {
    const p = new URLSearchParams();
    if (repo) p.set('repo', repo);
    if (ref) p.set('ref', ref);
    if (goal) p.set('goal', goal);
    return p;
  };
  useEffect(() => {
    const t = setTimeout(async () => {
      const p = query();
      p.set('dry_run', 'true');
      try {
        const v = await rest('POST', '/v1/sessions?' + p, toml, 'application/toml');
        setCheck({ ok: true, steps: v.spec.steps.length });
      } catch (e) {
        setCheck({ ok: false, message: e.message });
      }
    }, 300);
    return () => clearTimeout(t);
  }, [toml, repo, ref, goal]);
  const pick = async (name) => {
    if (!name) return;
    setToml(await (await fetch('/examples/' + name)).text());
  };
  const submit = async (e) => {
    e.preventDefault();
    setBusy(true);
    try {
      const r = await fetch('/v1/sessions?' + query(), {
        method: 'POST', credentials: 'same-origin',
        headers: { 'Content-Type': 'application/toml', 'Idempotency-Key': key.current },
        body: toml,
      });
      const v = await r.json();
      if (!r.ok) throw new Error(v.error ? v.error.message : r.statusText);
      go('#/session/' + v.id);
    } catch (err) {
      setCheck({ ok: false, message: err.message });
    } finally {
      setBusy(false);
    }
  };
  return html`<main class="new">
    <h2>New session</h2>
    <form id="new-session" onSubmit=${submit}>
      <label>Repository <input id="new-repo" placeholder="https://git.example.com/org/repo.git (empty: a scratch workspace)"
        value=${repo} onInput=${(e) => setRepo(e.target.value)} /></label>
      <label>Ref <input id="new-ref" placeholder="branch, tag or commit (default: the default branch)"
        value=${ref} onInput=${(e) => setRef(e.target.value)} /></label>
      <label>Goal <input id="new-goal" placeholder="what the session is for" value=${goal}
        onInput=${(e) => setGoal(e.target.value)} /></label>
      <label>Workflow
        <select id="new-example" onChange=${(e) => pick(e.target.value)}>
          <option value="">start from an example…</option>
          ${examples.map((x) => html`<option value=${x}>${x}</option>`)}
        </select>
      </label>
      <textarea id="new-workflow" spellcheck="false" rows="16" value=${toml}
        onInput=${(e) => setToml(e.target.value)}></textarea>
      <p id="new-check" class=${check ? (check.ok ? 'ok' : 'error') : ''}>
        ${check ? (check.ok ? 'valid: ' + check.steps + ' step(s)' : check.message) : 'checking…'}</p>
      <button id="new-start" class="primary" type="submit" disabled=${busy || (check && !check.ok)}>Start session</button>
    </form>
  </main>`;
}

// ---------------------------------------------------------------------------------------------
// One session: header, graph and timeline, logs, events, tool calls, changes, actions.

function useSession(id) {
  const [events, setEvents] = useState([]);
  const [summary, setSummary] = useState(null);
  const [error, setError] = useState(null);
  useEffect(() => {
    let list = [];
    let timer = 0;
    let alive = true;
    const refresh = () => {
      if (timer) return;
      timer = setTimeout(async () => {
        timer = 0;
        try { const v = await conn.call('session.get', { id }); if (alive) setSummary(v); } catch (e) {
          if (alive && e.code === 'not_found') setError('session ' + id + ' not found');
        }
      }, 150);
    };
    const feed = conn.subscribe('session/' + id + '/events', {}, (m) => {
      list = list.concat([m]);
      setEvents(list);
      refresh();
    }, (gap) => {
      list = list.filter((e) => e.seq < gap.from);
      setEvents(list);
      feed.rewind(gap.from - 1);
    });
    refresh();
    let was = store.conn;
    const onLive = () => {  // back online: what changed meanwhile
      if (store.conn === 'live' && was !== 'live') refresh();
      was = store.conn;
    };
    listeners.add(onLive);
    return () => { alive = false; feed.close(); listeners.delete(onLive); clearTimeout(timer); };
  }, [id]);
  return { events, summary, error };
}

function SessionView({ id, params }) {
  useStore();
  const { events, summary, error } = useSession(id);
  const tab = params.get('tab') || 'graph';
  const accepted = events.find((e) => e.data.type === 'session.accepted');
  const spec = accepted ? accepted.data.data.spec : null;
  if (error) return html`<main><p class="error">${error}</p></main>`;
  const s = summary || {};
  const ws = s.workspace || {};
  const leases = ws.leases ? Object.keys(ws.leases).length : 0;
  const tabs = ['graph', 'logs', 'events', 'tools', 'changes'];
  return html`<main class="session">
    <header class="session-head">
      <div class="title">
        <${Badge} status=${s.phase || s.status} />
        <h2 id="session-goal">${s.goal || (spec && spec.goal) || 'session'}</h2>
        <span class="mono id">${id}</span>
      </div>
      <dl class="facts">
        <dt>repo</dt><dd title=${s.repo}>${shortRepo(s.repo)}</dd>
        <dt>branch</dt><dd class="mono">${s.branch || ''}</dd>
        <dt>commit</dt><dd class="mono">${(ws.head || ws.commit || '').slice(0, 10)}</dd>
        <dt>PR</dt><dd>${s.pr_url ? html`<a href=${s.pr_url} target="_blank" rel="noreferrer">${s.pr_url.split('/').slice(-2).join('/')}</a>` : ''}</dd>
        <dt>lease</dt><dd>${leases ? leases + ' live' : (s.repo ? 'none' : '')}</dd>
        <dt>node</dt><dd class="mono">${s.node || ''}</dd>
        <dt>created</dt><dd>${fmtTime(s.created_at)}</dd>
        <dt>duration</dt><dd>${s.created_at ? duration({ ...s, status: s.status }) : ''}</dd>
      </dl>
      ${s.reason && html`<p class="reason">${s.reason}</p>`}
      <${Actions} id=${id} summary=${s} events=${events} />
    </header>
    <nav class="tabs">
      ${tabs.map((t) => html`<a class=${t === tab ? 'on' : ''} data-tab=${t}
          onClick=${() => setParam('tab', t === 'graph' ? '' : t)}>${t}</a>`)}
    </nav>
    ${tab === 'graph' && html`<${Graph} spec=${spec} summary=${s} /><${Timeline} events=${events} />`}
    ${tab === 'logs' && html`<${Logs} id=${id} summary=${s} params=${params} />`}
    ${tab === 'events' && html`<${Events} events=${events} params=${params} />`}
    ${tab === 'tools' && html`<${Tools} events=${events} />`}
    ${tab === 'changes' && html`<${Changes} id=${id} events=${events} />`}
  </main>`;
}

function Actions({ id, summary, events }) {
  const [note, setNote] = useState(null);
  const [from, setFrom] = useState('');
  const [message, setMessage] = useState('');
  const [input, setInput] = useState('');
  const terminal = TERMINAL.includes(summary.status);
  const waiting = useMemo(() => {
    // Agent steps waiting for their agent: an agent.waiting whose step is still running.
    const running = new Set((summary.steps || []).filter((x) => x.status === 'running').map((x) => x.id));
    return events.filter((e) => e.data.type === 'agent.waiting' && running.has(e.data.data.step))
      .map((e) => e.data.data.step);
  }, [events, summary]);
  const act = async (verb, args, done) => {
    setNote(null);
    try {
      const r = await conn.call(verb, { id, ...args });
      if (done) done(r);
    } catch (e) { setNote({ error: e.message }); }
  };
  const sendInput = (data) => act('session.input', { data }, () => setNote({ ok: 'sent' }));
  return html`<div class="actions">
    ${!terminal && html`<button id="action-cancel" class="danger" onClick=${() => act('session.cancel', {})}>Cancel</button>`}
    ${terminal && html`<span class="retry">
      <select id="retry-from" value=${from} onChange=${(e) => setFrom(e.target.value)}>
        <option value="">from the start</option>
        ${(summary.steps || []).map((x) => html`<option value=${x.id}>from ${x.id}</option>`)}
      </select>
      <button id="action-retry" onClick=${() => act('session.retry', from ? { from } : {}, (r) => go('#/session/' + r.id))}>Retry</button>
    </span>`}
    ${!terminal && waiting.length > 0 && html`<form class="message" onSubmit=${(e) => { e.preventDefault(); sendInput({ message, step: waiting[0] }); setMessage(''); }}>
      <input id="agent-message" placeholder=${'message to the agent of ' + waiting[0]} value=${message}
             onInput=${(e) => setMessage(e.target.value)} />
      <button type="submit">Send</button></form>`}
    ${!terminal && html`<details class="input"><summary>Send input</summary>
      <form onSubmit=${(e) => {
        e.preventDefault();
        let data;
        try { data = JSON.parse(input); } catch (err) { return setNote({ error: 'input: not JSON: ' + err.message }); }
        sendInput(data);
      }}>
        <textarea id="input-json" rows="3" placeholder='{"key": "value"}' value=${input}
                  onInput=${(e) => setInput(e.target.value)}></textarea>
        <button type="submit">Send input</button>
      </form></details>`}
    ${note && html`<span class=${note.error ? 'error' : 'ok'}>${note.error || note.ok}</span>`}
  </div>`;
}

const COLORS = { pending: 'pending', running: 'running', succeeded: 'succeeded', failed: 'failed', skipped: 'skipped' };

function Graph({ spec, summary }) {
  const [, loaded] = useState(!!dagre);
  useEffect(() => { if (!dagre) loadDagre().then(() => loaded(true), () => {}); }, []);
  // The needs as the node resolved them (a step without `needs` follows the one before it).
  const resolved = useMemo(() => {
    const m = new Map();
    for (const x of summary.steps || []) m.set(x.id, x.needs || []);
    return m;
  }, [summary.steps && summary.steps.length]);
  const layout = useMemo(() => {
    if (!spec || !dagre) return null;  // (re-run once dagre is there: `dagre` below)
    const g = new dagre.graphlib.Graph({ multigraph: true });
    g.setGraph({ rankdir: 'LR', nodesep: 24, ranksep: 48, marginx: 12, marginy: 12 });
    g.setDefaultEdgeLabel(() => ({}));
    for (const st of spec.steps) g.setNode(st.id, { width: 140, height: 44, kind: st.kind || 'run' });
    for (const st of spec.steps) {
      const needs = resolved.has(st.id) ? resolved.get(st.id) : st.needs || [];
      for (const n of needs) g.setEdge(n, st.id, { when: st.when || 'success' }, 'needs:' + n);
      if (st.on_reject && st.on_reject.goto) g.setEdge(st.id, st.on_reject.goto, { back: true }, 'reject');
    }
    dagre.layout(g);
    return g;
  }, [spec, resolved, dagre]);
  if (!layout) return html`<p class="empty">waiting for the session's spec…</p>`;
  const byId = new Map((summary.steps || []).map((x) => [x.id, x]));
  const gw = layout.graph();
  return html`<svg id="graph" class="graph" width=${gw.width} height=${gw.height} viewBox=${`0 0 ${gw.width} ${gw.height}`}>
    <defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse">
      <path d="M0,0 L10,5 L0,10 z" class="arrowhead" /></marker></defs>
    ${layout.edges().map((e) => {
      const ed = layout.edge(e);
      const d = ed.points.map((p, i) => (i ? 'L' : 'M') + p.x + ',' + p.y).join(' ');
      const mid = ed.points[Math.floor(ed.points.length / 2)];
      return html`<g class=${'edge' + (ed.back ? ' back' : '')}>
        <path d=${d} marker-end="url(#arrow)" />
        ${ed.when && ed.when !== 'success' && html`<text x=${mid.x} y=${mid.y - 4}>${ed.when}</text>`}
        ${ed.back && html`<text x=${mid.x} y=${mid.y - 4}>on reject</text>`}
      </g>`;
    })}
    ${layout.nodes().map((n) => {
      const nd = layout.node(n);
      const st = byId.get(n) || { status: 'pending' };
      const cls = COLORS[st.status] || 'pending';
      return html`<g class=${'node ' + cls} data-step=${n} data-status=${st.status} transform=${`translate(${nd.x - nd.width / 2},${nd.y - nd.height / 2})`}>
        <rect width=${nd.width} height=${nd.height} rx="8" />
        <text x="10" y="18" class="name">${n}</text>
        <text x="10" y="34" class="sub">${nd.kind}${st.attempt > 1 ? ' · attempt ' + st.attempt : ''}${st.loops ? ' · loop ' + st.loops : ''}${st.skip ? ' · ' + st.skip : ''}</text>
      </g>`;
    })}
  </svg>`;
}

function Timeline({ events }) {
  useStore();
  const rows = useMemo(() => {
    const attempts = [];
    const open = new Map();
    for (const m of events) {
      const e = m.data;
      const d = e.data || {};
      if (!d.step) continue;
      const key = d.step + '#' + (d.attempt || 1);
      if (e.type === 'step.started') {
        const a = { step: d.step, attempt: d.attempt || 1, start: ms(e.ts), end: 0, outcome: 'running' };
        open.set(key, a);
        attempts.push(a);
      } else if (/^step\.(finished|failed|interrupted|rejected|retrying)$/.test(e.type)) {
        const a = open.get(key);
        if (a && !a.end) { a.end = ms(e.ts); a.outcome = e.type.slice(5); }
      } else if (e.type === 'step.skipped') {
        attempts.push({ step: d.step, attempt: 0, start: ms(e.ts), end: ms(e.ts), outcome: 'skipped' });
      }
    }
    return attempts;
  }, [events]);
  if (!rows.length) return null;
  const t0 = Math.min(...rows.map((r) => r.start));
  const t1 = Math.max(...rows.map((r) => r.end || store.now), t0 + 1);
  return html`<section class="timeline"><h3>Timeline</h3>
    ${rows.map((r) => html`<div class="tl-row" data-step=${r.step}>
      <span class="tl-label mono">${r.step}${r.attempt > 1 ? ' #' + r.attempt : ''}</span>
      <span class="tl-track"><span class=${'tl-bar ' + r.outcome}
        style=${`left:${((r.start - t0) / (t1 - t0)) * 100}%;width:${Math.max(0.5, (((r.end || store.now) - r.start) / (t1 - t0)) * 100)}%`}
        title=${r.outcome + ' · ' + fmtDuration((r.end || store.now) - r.start)}></span></span>
      <span class="tl-time">${fmtDuration((r.end || store.now) - r.start)}</span>
    </div>`)}
  </section>`;
}

function Logs({ id, summary, params }) {
  const step = params.get('step') || '';
  const [lines, setLines] = useState([]);
  const [dropped, setDropped] = useState(0);
  const [follow, setFollow] = useState(true);
  const box = useRef(null);
  const ansi = useMemo(() => { const a = new AnsiUp(); a.use_classes = true; return a; }, []);
  useEffect(() => {
    let list = [];
    let lost = 0;
    const topic = 'session/' + id + '/logs' + (step ? '/' + step : '');
    const feed = conn.subscribe(topic, {}, (m) => {
      const d = m.data;
      const text = d.truncated ? '[output truncated: the rest of this ' + d.stream + ' was dropped]\n' : d.text;
      list.push({ seq: m.seq, step: d.step, stream: d.stream, html: ansi.ansi_to_html(text) });
      if (list.length > LOG_LINE_CAP) { lost += list.length - LOG_LINE_CAP; list = list.slice(-LOG_LINE_CAP); }
      setLines(list.slice());
      setDropped(lost);
    }, (gap) => {
      list = list.filter((l) => l.seq < gap.from);
      feed.rewind(gap.from - 1);
    });
    return () => feed.close();
  }, [id, step]);
  useEffect(() => {
    if (follow && box.current) box.current.scrollTop = box.current.scrollHeight;
  }, [lines, follow]);
  return html`<section class="logs">
    <div class="toolbar">
      <select id="logs-step" value=${step} onChange=${(e) => setParam('step', e.target.value)}>
        <option value="">every step</option>
        ${(summary.steps || []).map((x) => html`<option value=${x.id}>${x.id}</option>`)}
      </select>
      <label><input type="checkbox" id="logs-follow" checked=${follow} onChange=${(e) => setFollow(e.target.checked)} /> follow</label>
      <button onClick=${() => { setFollow(true); if (box.current) box.current.scrollTop = box.current.scrollHeight; }}>Jump to latest</button>
      ${dropped > 0 && html`<span class="note">${dropped} earlier chunk(s) not shown (cap ${LOG_LINE_CAP})</span>`}
    </div>
    <pre id="logs" class="log" ref=${box} onScroll=${(e) => {
      const el = e.target;
      if (el.scrollHeight - el.scrollTop - el.clientHeight > 40) setFollow(false);
    }}>${lines.map((l) => html`<span key=${l.seq} class=${'chunk ' + l.stream} data-step=${l.step}
        ><span class="step-tag">${step ? '' : l.step + ' │ '}</span><span dangerouslySetInnerHTML=${{ __html: l.html }} /></span>`)}</pre>
  </section>`;
}

function Events({ events, params }) {
  const type = params.get('type') || '';
  const q = (params.get('eq') || '').toLowerCase();
  const types = useMemo(() => [...new Set(events.map((e) => e.data.type))].sort(), [events]);
  const shown = events.filter((e) => (!type || e.data.type === type) &&
      (!q || JSON.stringify(e.data).toLowerCase().includes(q)));
  return html`<section class="events">
    <div class="toolbar">
      <select id="events-type" value=${type} onChange=${(e) => setParam('type', e.target.value)}>
        <option value="">every type</option>
        ${types.map((t) => html`<option value=${t}>${t}</option>`)}
      </select>
      <input id="events-search" placeholder="search" value=${params.get('eq') || ''}
             onInput=${(e) => setParam('eq', e.target.value)} />
      <span class="note">${shown.length} of ${events.length}</span>
    </div>
    <ol id="events" class="event-list">
      ${shown.map((e) => html`<li key=${e.seq} data-type=${e.data.type}><details>
        <summary><span class="seq mono">${e.seq}</span> <span class="time">${fmtTime(e.data.ts)}</span>
          <span class="type">${e.data.type}</span> <span class="mono">${(e.data.data && e.data.data.step) || ''}</span></summary>
        <pre>${JSON.stringify(e.data, null, 2)}</pre></details></li>`)}
    </ol>
  </section>`;
}

function Tools({ events }) {
  const calls = useMemo(() => {
    const by = new Map();
    for (const m of events) {
      const e = m.data;
      const d = e.data || {};
      if (!d.call_id) continue;
      if (e.type === 'tool.call') by.set(d.call_id, { id: d.call_id, call: d, result: null, at: e.ts });
      else if ((e.type === 'tool.result' || e.type === 'tool.interrupted') && by.has(d.call_id))
        by.get(d.call_id).result = { ...d, type: e.type };
    }
    return [...by.values()];
  }, [events]);
  if (!calls.length) return html`<p class="empty">No tool calls (yet).</p>`;
  return html`<section class="tools"><ol id="tool-calls">
    ${calls.map((c) => html`<li key=${c.id} data-call=${c.id} data-state=${c.result ? (c.result.type === 'tool.result' ? 'done' : 'interrupted') : 'running'}>
      <details open=${!c.result}>
        <summary><b>${c.call.tool || c.call.name}</b> <span class="mono">${c.id}</span>
          <${Badge} status=${c.result ? (c.result.ok === false || c.result.type !== 'tool.result' ? 'failed' : 'succeeded') : 'running'} /></summary>
        <div class="pair"><div><h4>call</h4><pre>${JSON.stringify(c.call.args || c.call, null, 2)}</pre></div>
        <div><h4>result</h4><pre>${c.result ? JSON.stringify(c.result.result || c.result, null, 2) : '…'}</pre></div></div>
      </details></li>`)}
  </ol></section>`;
}

function Changes({ id, events }) {
  const [diff, setDiff] = useState(null);
  const [error, setError] = useState(null);
  const checkpoints = events.filter((e) => e.data.type === 'workspace.checkpointed').length;
  useEffect(() => {
    conn.call('session.diff', { id }).then(setDiff, (e) => setError(e.message));
  }, [id, checkpoints]);
  if (error) return html`<p class="error">${error}</p>`;
  if (!diff) return html`<p class="empty">loading…</p>`;
  if (!diff.checkpoint) return html`<p class="empty" id="changes-none">No changes recorded yet (they appear at each checkpoint).</p>`;
  return html`<section class="changes" id="changes">
    <p>${diff.files.length} file(s), <span class="add">+${diff.additions}</span> <span class="del">−${diff.deletions}</span>
      since <span class="mono">${diff.base.slice(0, 10)}</span> at checkpoint <span class="mono">${diff.commit.slice(0, 10)}</span> (after ${diff.step})
      ${diff.truncated ? ' · the patch is cut short' : ''}</p>
    <table class="files"><tbody>${diff.files.map((f) => html`<tr><td>${f.status}</td><td class="mono">${f.old_path ? f.old_path + ' → ' : ''}${f.path}</td>
      <td class="add">+${f.additions}</td><td class="del">−${f.deletions}</td></tr>`)}</tbody></table>
    <pre class="patch">${diff.patch.split('\n').map((l) => html`<span class=${l[0] === '+' && !l.startsWith('+++') ? 'add' : l[0] === '-' && !l.startsWith('---') ? 'del' : l.startsWith('@@') ? 'hunk' : ''}>${l || ' '}</span>`)}</pre>
  </section>`;
}

// ---------------------------------------------------------------------------------------------
// The frame: header with the connection indicator, themes, time mode; routes.

function App({ loginError }) {
  const s = useStore();
  const [route, setRoute] = useState(parseHash());
  useEffect(() => {
    const on = () => setRoute(parseHash());
    window.addEventListener('hashchange', on);
    return () => window.removeEventListener('hashchange', on);
  }, []);
  useEffect(() => { document.documentElement.dataset.theme = s.theme; }, [s.theme]);
  if (!s.me) return html`<${LoginView} error=${loginError} />`;
  const { parts, params } = route;
  let view;
  if (parts[0] === 'session' && parts[1]) view = html`<${SessionView} key=${parts[1]} id=${parts[1]} params=${params} />`;
  else if (parts[0] === 'new') view = html`<${NewSessionView} />`;
  else view = html`<${SessionsView} params=${params} />`;
  const setMode = (m) => { s.timeMode = m; localStorage.setItem('berth.time', m); changed(); };
  const setTheme = (t) => { s.theme = t; localStorage.setItem('berth.theme', t); changed(); };
  return html`<div class="app">
    <header class="top">
      <a class="brand" href="#/sessions">⚓ Berth</a>
      <nav><a href="#/sessions">Sessions</a><a href="#/new">New session</a></nav>
      <span class="spacer"></span>
      <span id="connection" class=${'conn ' + s.conn} title="live updates">${s.conn === 'live' ? 'live' : s.conn + '…'}</span>
      <select id="time-mode" value=${s.timeMode} onChange=${(e) => setMode(e.target.value)}>
        <option value="local">local time</option><option value="utc">UTC</option><option value="relative">relative</option>
      </select>
      <button id="theme" onClick=${() => setTheme(s.theme === 'dark' ? 'light' : 'dark')}>${s.theme === 'dark' ? '☀' : '☾'}</button>
      <span class="who">${s.me.name} (${s.me.scope})</span>
      <button onClick=${async () => { await rest('POST', '/v1/logout', {}); loggedOut(); }}>Log out</button>
    </header>
    ${view}
  </div>`;
}

async function main() {
  document.documentElement.dataset.theme = store.theme;
  // With a browser session already (no login code in the link), the socket and the sessions
  // list do not wait for whoami: the cookie authenticates both, and a refusal logs out.
  const early = !/login=berthl_/.test(location.hash);
  if (early) {
    conn.connect();
    followSessions();
  }
  const r = await login();
  if (r.me) {
    store.me = r.me;
    if (!early) {
      conn.connect();
      followSessions();
    }
    refreshStats();
  } else if (early) {
    loggedOut();
  }
  const root = document.getElementById('app');
  root.textContent = '';
  render(html`<${App} loginError=${r.error} />`, root);
  changed();
}
main();
