// `berth bench gateway`: milliseconds from navigation to the console's sessions table showing
// N sessions, in Debian's chromium. usage: node render_bench.mjs URL LOGIN_CODE N
//
// The table is windowed (it holds the rows in view, between spacers standing for the rest), so
// "showing N sessions" is: the table counts N (data-total), its first rows are in the page, and
// one frame later they are painted. Untimed, afterwards: the table's height stands for all N
// rows and scrolling to the end brings the last one in, so a broken window fails the bench.
import { chromium } from 'playwright-core';

const [url, code, n] = process.argv.slice(2);
const want = Number(n);
const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox', '--disable-gpu'] });
const context = await browser.newContext({ viewport: { width: 1360, height: 860 } });
const page = await context.newPage();
// Log in first (the cookie), so the timed navigation is the console alone.
await page.goto(`${url}/#login=${code}`);
await page.waitForSelector('#sessions');
await page.goto('about:blank');
const start = Date.now();
await page.goto(`${url}/#/sessions`);
await page.waitForFunction((w) => {
  const t = document.querySelector('#sessions');
  return t && Number(t.dataset.total) >= w && t.querySelector('.row[data-id]');
}, want, { timeout: 60000, polling: 'raf' });
await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => r())));  // painted
const ms = Date.now() - start;

const check = await page.evaluate(async (w) => {
  const frame = () => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  const rows = document.querySelector('#sessions .rows');
  const rowHeight = document.querySelector('#sessions .row[data-id]').getBoundingClientRect().height;
  const tall = rows.getBoundingClientRect().height;
  const inPage = document.querySelectorAll('#sessions .row[data-id]').length;
  window.scrollTo(0, document.documentElement.scrollHeight);
  await frame();
  await frame();
  const last = [...document.querySelectorAll('#sessions .row[data-id]')].pop();
  const total = Number(document.querySelector('#sessions').dataset.total);
  return { total, rowHeight, tall, inPage, lastIndex: last && Number(last.getAttribute('aria-rowindex')) };
}, want);
if (Math.abs(check.tall - check.total * check.rowHeight) > 2 || check.lastIndex !== check.total + 1 ||
    check.inPage >= check.total) {
  console.error('the windowed table is wrong: ' + JSON.stringify(check));
  process.exit(1);
}
console.log(ms);
await browser.close();
