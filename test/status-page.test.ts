// Issue 16, "A status page", in a real browser: Debian's chromium, headless,
// driven by playwright-core (which never downloads a browser of its own).
// A real server with a real native module (test/modules/deferrer.c) and
// traffic from real WebSocket clients; the page is opened with the
// metrics_token in its URL, as a person would, and read after its script
// has polled /status.json. The screenshot is kept in test-artifacts/.
import fs from 'node:fs';
import path from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { SwitchboardClient } from '../lib/client';
import { Server } from '../lib/index';
import { compileModule, tempDir, until } from './helpers';
import { apiCall, connectPeer } from './server-helpers';

const APP = 'status-page-app-token';
const TOKEN = 'status-page-secret';
const ARTIFACTS = path.join(__dirname, '..', 'test-artifacts');
const running: Server[] = [];
const clients: SwitchboardClient[] = [];
let moduleDir = '';
let browser: Browser;

beforeAll(async () => {
  moduleDir = compileModule({ name: 'deferrer', source: 'test/modules/deferrer.c' });
  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    // No sandbox (tests may run as root) and nothing fetched from the
    // network. launch() gives each run a fresh --user-data-dir of its own
    // (a temporary profile, removed on close); it refuses one passed here.
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}, 60_000);

afterAll(async () => {
  await browser?.close();
});

afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  for (const s of running.splice(0)) await s.stop();
});

describe('the status page in Chromium', () => {
  it('shows connections, the chain with its call counts and the last warning, and redraws as traffic comes', async () => {
    const s = await Server.start({
      configText: `listen = 127.0.0.1:0\ndata_dir = ${tempDir()}\napp_token = ${APP}\nmodule_dir = ${moduleDir}\nmetrics_token = ${TOKEN}\nmodule deferrer\n`,
      log: () => {},
    });
    running.push(s);
    await s.use('spamfilter', { onMessage: (m) => (m.payload.toString() === 'spam' ? 'consumed' : 'pass') });
    const token = async (address: string) => (await apiCall(s.port, APP, { op: 'useradd', address })).token as string;
    const alice = await connectPeer(s.port, await token('alice'), '', clients);
    const bob = await connectPeer(s.port, await token('bob'), '', clients);
    await connectPeer(s.port, await token('carol'), '', clients);
    for (let i = 0; i < 6; i++) await alice.c.send('bob', `hello ${i}`).sent;
    await alice.c.send('bob', 'spam').sent;
    await alice.c.send('bob', 'send:nobody').sent; // the module sends to no one: a warning
    await until(() => bob.got.length >= 7);

    const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
    const requests: string[] = [];
    page.on('request', (r) => requests.push(r.url()));
    try {
      await page.goto(`http://127.0.0.1:${s.port}/status?token=${TOKEN}`);
      // The script has polled /status.json (with the header) and redrawn.
      await page.waitForFunction(() => Number(document.body.dataset.polls ?? 0) >= 1, undefined, { timeout: 10_000 });
      expect(await page.textContent('#live')).toMatch(/^updated /);
      expect(await page.title()).toBe('Switchboard status');
      expect(await page.textContent('#conns')).toBe('3');

      const chain = await page.$$eval('#chain tr', (trs) => trs.map((tr) => (tr as HTMLElement).innerText.replace(/\s+/g, ' ').trim()));
      const deferrer = chain.find((r) => r.startsWith('deferrer'));
      const spam = chain.find((r) => r.startsWith('spamfilter'));
      // deferrer (native, first) saw alice's eight; spamfilter (script)
      // saw those and the message deferrer sent (it enters the chain after
      // its sender), and consumed the spam.
      expect(deferrer).toMatch(/^deferrer #0 native 8 \/ 0 \/ 0 0 \/ 0 on_message 8 [\d.]+ (µs|ms)/);
      expect(spam).toMatch(/^spamfilter #1 script 8 \/ 1 \/ 0 0 \/ 0 on_message 9 [\d.]+ (µs|ms)/);
      expect(await page.$$eval('#chain td.calls', (tds) => tds.map((td) => td.textContent))).toEqual(['8', '9']);

      const warnings = await page.textContent('#warnings');
      expect(warnings).toContain('module.unknown_destination');
      expect(warnings).toContain('to=nobody');

      // More traffic: the next poll shows it, with a rate between polls.
      for (let i = 0; i < 4; i++) await alice.c.send('bob', `more ${i}`).sent;
      await page.waitForFunction(() => Array.from(document.querySelectorAll('#chain td.calls')).map((td) => td.textContent).join() === '12,13', undefined, { timeout: 10_000 });
      expect(await page.textContent('#rate-in-s')).toMatch(/^12 received, over the last \d+ s$/);

      // The polls carried the token as a header: only the page's own URL has it.
      const polled = requests.filter((u) => u.includes('/status.json'));
      expect(polled.length).toBeGreaterThanOrEqual(2);
      for (const u of polled) expect(u).not.toContain(TOKEN);

      fs.mkdirSync(ARTIFACTS, { recursive: true });
      const shot = path.join(ARTIFACTS, 'status.png');
      await page.screenshot({ path: shot, fullPage: true });
      expect(fs.statSync(shot).size).toBeGreaterThan(10_000);
      console.log(`status page screenshot: ${shot}`);
    } finally {
      await page.close();
    }
  }, 60_000);

  it('reads without JavaScript: the server rendered the first snapshot', async () => {
    const s = await Server.start({ configText: `listen = 127.0.0.1:0\ndata_dir = ${tempDir()}\nmodule_dir = ${moduleDir}\nmodule deferrer\n`, log: () => {} });
    running.push(s);
    const ctx = await browser.newContext({ javaScriptEnabled: false });
    try {
      const page = await ctx.newPage();
      await page.goto(`http://127.0.0.1:${s.port}/status`);
      expect(await page.textContent('#conns')).toBe('0');
      expect(await page.textContent('#live')).toMatch(/^snapshot /);
      expect((await page.textContent('#chain'))?.replace(/\s+/g, ' ')).toMatch(/^deferrer#0 native0 \/ 0 \/ 00 \/ 0on_message0/);
      expect(await page.textContent('#warnings')).toContain('none since start');
    } finally {
      await ctx.close();
    }
  }, 30_000);
});
