// The console in a real browser (Debian's chromium driven by playwright-core) against a real
// node: log in through the fragment link, start a session from the form and watch its graph
// and logs, cancel one, retry one from a step, watch an agent's tool calls arrive live, reload
// mid-session and lose nothing. Screenshots of each view go to --shots.
//
// node console.mjs --config FILE   (FILE: {url, login, token, nats_url, shots, agent, repo})
// Exits 0 when every check held; prints what it did and the first failure.

import { chromium } from 'playwright-core';
import { spawn } from 'node:child_process';
import { readFileSync, mkdirSync } from 'node:fs';

const cfg = JSON.parse(readFileSync(process.argv[process.argv.indexOf('--config') + 1], 'utf8'));
mkdirSync(cfg.shots, { recursive: true });
const log = (...a) => console.log('[console test]', ...a);

// REST with the test's token, for what the scenario sets up behind the browser's back.
async function api(method, path, body) {
  const r = await fetch(cfg.url + path, {
    method,
    headers: { Authorization: 'Bearer ' + cfg.token, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const v = await r.json();
  if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${JSON.stringify(v)}`);
  return v;
}
async function until(what, fn, ms = 60000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error('timed out waiting for ' + what);
    await new Promise((r) => setTimeout(r, 200));
  }
}
const ended = (id) => until(`session ${id} to end`, async () => {
  const s = await api('GET', '/v1/sessions/' + id);
  return ['succeeded', 'failed', 'cancelled', 'timed_out'].includes(s.status) ? s : null;
});

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
});
const context = await browser.newContext({ viewport: { width: 1360, height: 860 } });
const page = await context.newPage();
const errors = [];
page.on('pageerror', (e) => errors.push(String(e)));
// (A refused request is logged by Chromium as a failed resource; the form's validation makes
// those on purpose, so only script errors count.)
page.on('console', (m) => {
  if (m.type() === 'error' && !/Failed to load resource/.test(m.text())) errors.push(m.text());
});
const shot = (name) => page.screenshot({ path: `${cfg.shots}/${name}.png`, fullPage: false });

try {
  // 1. Log in through the fragment link: the code becomes a cookie, the URL forgets it.
  await page.goto(cfg.login);
  await page.waitForSelector('#sessions');
  await page.waitForSelector('#connection.live');
  if (page.url().includes('berthl_')) throw new Error('the login code stayed in the URL');
  const cookies = await context.cookies();
  const c = cookies.find((x) => x.name === 'berth_session');
  if (!c || !c.httpOnly || c.sameSite !== 'Strict') throw new Error('cookie: ' + JSON.stringify(c));
  log('logged in');

  // 2. Start a session from the form; its graph turns green and its logs stream, in colour.
  const greeting = `[[steps]]
id = "greet"
run = ["sh", "-c", "printf 'hello \\\\033[32mgreen\\\\033[0m world\\\\n'; sleep 1"]

[[steps]]
id = "count"
needs = ["greet"]
run = ["sh", "-c", "for i in 1 2 3; do echo line $i; sleep 0.3; done"]
`;
  await page.click('a[href="#/new"]');
  await page.waitForSelector('#new-workflow');
  await page.fill('#new-goal', 'greet in colour');
  await page.fill('#new-workflow', greeting);
  await page.waitForSelector('#new-check.ok');
  await page.fill('#new-workflow', '[[steps]]\nid = "x"\nrun = 7\n');
  await page.waitForSelector('#new-check.error');
  const invalid = await page.textContent('#new-check');
  if (!/run/.test(invalid)) throw new Error('the inline validation does not name the field: ' + invalid);
  await page.fill('#new-workflow', greeting);
  await page.waitForSelector('#new-check.ok');
  await shot('new-session');
  await page.click('#new-start');
  await page.waitForURL(/#\/session\//);
  const formId = page.url().split('/session/')[1].split('?')[0];
  await page.waitForSelector('#graph g.node[data-step="greet"]');
  await page.waitForSelector('#graph g.node[data-step="count"][data-status="succeeded"]', { timeout: 60000 });
  await page.waitForSelector('#graph g.node[data-step="greet"][data-status="succeeded"]');
  await shot('session-graph');
  await page.click('nav.tabs a[data-tab="logs"]');
  await page.waitForFunction(() => document.querySelector('#logs')?.textContent.includes('line 3'));
  const green = await page.$$eval('#logs .ansi-green-fg', (e) => e.map((x) => x.textContent));
  if (!green.includes('green')) throw new Error('ANSI colour lost: ' + JSON.stringify(green));
  await shot('session-logs');
  await page.click('nav.tabs a[data-tab="events"]');
  await page.waitForSelector('#events li[data-type="session.succeeded"]');
  await page.click('#events li[data-type="session.accepted"] summary');
  await shot('session-events');
  log('session from the form:', formId);

  // 3. Cancel a running session from its page.
  const hold = await api('POST', '/v1/sessions', { goal: 'wait to be cancelled', steps: [{ id: 'hold', run: ['sleep', '120'] }] });
  await page.goto(cfg.url + '/#/session/' + hold.id);
  await page.waitForSelector('#graph g.node[data-step="hold"][data-status="running"]', { timeout: 60000 });
  await page.click('#action-cancel');
  await page.waitForSelector('.session-head .badge[data-status="cancelled"]', { timeout: 60000 });
  log('cancelled', hold.id);

  // 4. Retry a failed session from the step that failed.
  const bad = await api('POST', '/v1/sessions', {
    goal: 'fail at the second step',
    steps: [{ id: 'prepare', run: ['true'] }, { id: 'check', needs: ['prepare'], run: ['sh', '-c', 'echo nope; exit 3'] }],
  });
  await ended(bad.id);
  await page.goto(cfg.url + '/#/session/' + bad.id);
  await page.waitForSelector('#graph g.node[data-step="check"][data-status="failed"]');
  await shot('session-failed');
  await page.selectOption('#retry-from', 'check');
  await page.click('#action-retry');
  await page.waitForURL((u) => u.hash.startsWith('#/session/') && !u.hash.includes(bad.id));
  const retryId = page.url().split('/session/')[1].split('?')[0];
  const retried = await until('the retry to be accepted', async () => {
    const s = await api('GET', '/v1/sessions/' + retryId).catch(() => null);
    return s && s.retry_of === bad.id ? s : null;
  });
  log('retried', bad.id, 'as', retried.id, 'from check');

  // 5. An agent session: its tool calls appear live in the tools tab.
  if (cfg.agent) {
    const workflow = readFileSync(cfg.agent.workflow, 'utf8');
    const r = await fetch(cfg.url + '/v1/sessions', {
      method: 'POST', headers: { Authorization: 'Bearer ' + cfg.token, 'Content-Type': 'application/toml' }, body: workflow,
    });
    const agentSession = await r.json();
    if (!r.ok) throw new Error('agent session: ' + JSON.stringify(agentSession));
    await page.goto(cfg.url + '/#/session/' + agentSession.id + '?tab=tools');
    await page.waitForSelector('text=No tool calls');
    const agent = spawn('node', [cfg.agent.script, '--server', cfg.nats_url, '--session', agentSession.id, ...cfg.agent.args],
      { stdio: ['ignore', 'pipe', 'pipe'] });
    const exited = new Promise((res) => agent.on('exit', res));
    let agentOut = '';
    agent.stdout.on('data', (d) => { agentOut += d; });
    agent.stderr.on('data', (d) => { agentOut += d; });
    // The first call shows while it runs, then its result; then more calls, without a reload.
    await page.waitForSelector('#tool-calls li[data-state="running"]', { timeout: 60000 });
    await page.waitForSelector('#tool-calls li[data-state="done"]', { timeout: 60000 });
    await shot('session-tools');
    const code = await Promise.race([exited, new Promise((res) => setTimeout(() => res('timeout'), 120000).unref())]);
    if (code !== 0) throw new Error('the agent failed: ' + agentOut);
    await ended(agentSession.id);
    const calls = await page.$$eval('#tool-calls li', (e) => e.length);
    if (calls < 2) throw new Error('expected several tool calls, saw ' + calls);
    await page.click('nav.tabs a[data-tab="graph"]');
    await page.waitForSelector('#graph g.node[data-step="verify"][data-status="succeeded"]');
    log('agent session', agentSession.id, 'with', calls, 'tool calls');
  }

  // 6. The changes tab: a repository session's diff at its checkpoint.
  if (cfg.repo) {
    const s = await api('POST', '/v1/sessions', {
      repo: cfg.repo, goal: 'change the greeting',
      steps: [{ id: 'edit', run: ['sh', '-c', "sed -i 's/hello/hello, console/' README.md; echo new > NOTES.md"] }],
    });
    await ended(s.id);
    await page.goto(cfg.url + '/#/session/' + s.id + '?tab=changes');
    await page.waitForSelector('#changes pre.patch');
    const patch = await page.textContent('#changes pre.patch');
    if (!patch.includes('+hello, console')) throw new Error('the diff lacks the change: ' + patch);
    await shot('session-changes');
    log('changes of', s.id);
  }

  // 7. Reload mid-session: every event is there exactly once afterwards.
  const steps = [];
  for (let i = 0; i < 6; i++) steps.push({ id: 's' + i, run: ['sleep', '0.6'], ...(i ? { needs: ['s' + (i - 1)] } : {}) });
  const long = await api('POST', '/v1/sessions', { goal: 'reload while I run', steps });
  await page.goto(cfg.url + '/#/session/' + long.id + '?tab=events');
  await page.waitForSelector('#events li[data-type="step.finished"]', { timeout: 60000 });
  await page.reload();
  await page.waitForSelector('#connection.live');
  await page.waitForSelector('#events li[data-type="session.succeeded"]', { timeout: 60000 });
  const summary = await api('GET', '/v1/sessions/' + long.id);
  const seqs = await page.$$eval('#events li .seq', (e) => e.map((x) => Number(x.textContent)));
  if (seqs.length !== summary.events) throw new Error(`after the reload: ${seqs.length} events shown, the journal has ${summary.events}`);
  if (new Set(seqs).size !== seqs.length) throw new Error('an event is shown twice');
  log('reload kept all', seqs.length, 'events');

  // The sessions table with everything above, in both themes.
  await page.goto(cfg.url + '/#/sessions');
  await page.waitForSelector(`#sessions .row[data-id="${long.id}"]`);
  // The counts (from `stats`) catch up with the table.
  await page.waitForFunction(() => document.querySelector('.count[data-phase="running"] b')?.textContent === '0');
  await shot('sessions');
  await page.click('#theme');
  await shot('sessions-dark');
  await page.click('#theme');
  // A filter in the URL is applied.
  await page.goto(cfg.url + '/#/sessions?status=cancelled');
  await page.waitForFunction((id) => {
    const rows = [...document.querySelectorAll('#sessions .row[data-id]')];
    return rows.length > 0 && rows.every((r) => r.querySelector('.badge').dataset.status === 'cancelled') &&
      rows.some((r) => r.dataset.id === id);
  }, hold.id);

  if (errors.length) throw new Error('the page logged errors: ' + errors.join(' | '));
  log('all checks passed');
  await browser.close();
} catch (e) {
  console.error('[console test] FAILED:', e.message);
  await shot('failure').catch(() => {});
  await browser.close();
  process.exit(1);
}
