// `berth bench gateway`: milliseconds from navigation to the console's sessions table showing
// N rows, in Debian's chromium. usage: node render_bench.mjs URL LOGIN_CODE N
import { chromium } from 'playwright-core';

const [url, code, n] = process.argv.slice(2);
const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox', '--disable-gpu'] });
const context = await browser.newContext({ viewport: { width: 1360, height: 860 } });
const page = await context.newPage();
// Log in first (the cookie), so the timed navigation is the console alone.
await page.goto(`${url}/#login=${code}`);
await page.waitForSelector('#sessions');
await page.goto('about:blank');
const start = Date.now();
await page.goto(`${url}/#/sessions`);
await page.waitForFunction((want) => document.querySelectorAll('#sessions .row[data-id]').length >= want,
  Number(n), { timeout: 60000, polling: 'raf' });
const ms = Date.now() - start;
console.log(ms);
await browser.close();
