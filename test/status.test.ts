// Issue 16, "A status page": GET /status.json and /status without a
// browser. A real server with a real native module (test/modules/deferrer.c)
// and real WebSocket clients; the token rules are those of /metrics.
// test/status-page.test.ts loads the page in Chromium.
import { describe, expect, it } from 'vitest';
import { native } from '../lib/native';
import { quantile, WARNINGS_KEPT, WarningRing, type StatusSnapshot } from '../lib/server/status';
import { until } from './helpers';
import { connectPeer, serverFixture } from './server-helpers';

const APP = 'status-app-token';
const { clients, start, user } = serverFixture(APP, { name: 'deferrer', source: 'test/modules/deferrer.c' });

async function snapshot(port: number, token?: string): Promise<StatusSnapshot> {
  const r = await fetch(`http://127.0.0.1:${port}/status.json`, { headers: token ? { Authorization: `Bearer ${token}` } : {} });
  expect(r.status).toBe(200);
  expect(r.headers.get('content-type')).toBe('application/json');
  expect(r.headers.get('cache-control')).toBe('no-store');
  return (await r.json()) as StatusSnapshot;
}

describe('percentiles from the core\'s hook buckets', () => {
  it('interpolates inside the bucket the rank falls in, as histogram_quantile does', () => {
    const bounds = [0.001, 0.01, 0.1];
    // 10 calls under 1 ms, 10 between 1 and 10 ms.
    expect(quantile(0.5, bounds, [10, 10, 0, 0], 0.009)).toBeCloseTo(0.001, 9);
    expect(quantile(0.25, bounds, [10, 10, 0, 0], 0.009)).toBeCloseTo(0.0005, 9);
    expect(quantile(0.75, bounds, [10, 10, 0, 0], 0.009)).toBeCloseTo(0.0055, 9);
    // Never above the longest call the core saw.
    expect(quantile(0.99, bounds, [10, 10, 0, 0], 0.004)).toBe(0.004);
    // Past the last bound: between it and the longest call.
    expect(quantile(0.5, bounds, [0, 0, 0, 2], 0.3)).toBeCloseTo(0.2, 9);
    expect(quantile(0.5, bounds, [0, 0, 0, 0], 0)).toBeNull();
  });
});

describe('the warnings ring', () => {
  it('keeps the last WARNINGS_KEPT level-0 events, oldest first, and nothing of higher levels', () => {
    const ring = new WarningRing();
    ring.add({ event: 'conn.open', severity: 'debug', fields: {} });
    ring.add({ event: 'server.listening', severity: 'info', fields: {} });
    expect(ring.list()).toEqual([]);
    for (let i = 0; i < WARNINGS_KEPT + 7; i++) ring.add({ event: 'core.warning', severity: 'warn', fields: { text: `w${i}` } });
    const l = ring.list();
    expect(l).toHaveLength(WARNINGS_KEPT);
    expect(l[0].fields.text).toBe('w7');
    expect(l[l.length - 1].fields.text).toBe(`w${WARNINGS_KEPT + 6}`);
  });
});

describe('GET /status.json', () => {
  it('shows connections, the chain with each module\'s calls and verdicts, the store and the last warnings', async () => {
    const s = await start('module deferrer\n');
    const [ta, tb] = [await user(s, 'alice'), await user(s, 'bob')];
    const alice = await connectPeer(s.port, ta, '', clients);
    const bob = await connectPeer(s.port, tb, '', clients);
    for (let i = 0; i < 3; i++) await alice.c.send('bob', `hello ${i}`).sent;
    await alice.c.send('bob', 'later:5:x').sent; // deferred by the module, then passed
    // The module sends to a user that does not exist: a level-0 warning.
    await alice.c.send('bob', 'send:nobody').sent;
    await until(() => bob.got.length >= 5);
    const st = await snapshot(s.port);
    expect(st.version).toMatch(/^\d+\.\d+\.\d+/);
    expect(st.uptimeSeconds).toBeGreaterThan(0);
    expect(st.connections).toMatchObject({ authenticated: 2, unauthenticated: 0 });
    expect(st.messages.received).toBe(5);
    expect(st.messages.delivered).toBe(5);
    expect(st.modules).toHaveLength(1);
    const m = st.modules[0];
    expect(m).toMatchObject({ name: 'deferrer', kind: 'native', position: 0, verdicts: { pass: 4, consumed: 0, deferred: 1 } });
    const onMessage = m.hooks.find((h) => h.hook === 'on_message');
    // Five from alice, and the module's own message to "nobody" does not run through it again.
    expect(onMessage?.calls).toBe(5);
    expect(onMessage!.p50).toBeGreaterThan(0);
    expect(onMessage!.p50!).toBeLessThanOrEqual(onMessage!.max);
    expect(onMessage!.p99!).toBeLessThanOrEqual(onMessage!.max);
    expect(onMessage!.max).toBeLessThan(native.hookBucketBounds[native.hookBucketBounds.length - 1]);
    expect(st.store).toMatchObject({ kind: 'sqlite', waiting: 0 });
    await until(async () => (await snapshot(s.port)).warnings.some((w) => w.event === 'module.unknown_destination'));
    const w = (await snapshot(s.port)).warnings.find((x) => x.event === 'module.unknown_destination')!;
    expect(w).toMatchObject({ severity: 'warn', fields: { to: 'nobody', outcome: 'dropped' } });
    expect(w.time).toBeGreaterThan(Date.now() - 60_000);
  });

  it('with metrics_token: 401 with E_METRICS_TOKEN without the bearer token, 200 with it; the page also takes ?token=', async () => {
    const s = await start('metrics_token = look-secret\n');
    for (const headers of [{}, { Authorization: 'Bearer wrong' }, { Authorization: 'look-secret' }] as Record<string, string>[]) {
      const r = await fetch(`http://127.0.0.1:${s.port}/status.json`, { headers });
      expect(r.status).toBe(401);
      expect(r.headers.get('www-authenticate')).toBe('Bearer');
      expect(await r.json()).toMatchObject({ ok: false, code: 'E_METRICS_TOKEN', message: expect.stringContaining('Authorization: Bearer <metrics_token>') });
    }
    // The JSON takes the token only as a header: a polled URL never carries it.
    expect((await fetch(`http://127.0.0.1:${s.port}/status.json?token=look-secret`)).status).toBe(401);
    expect((await snapshot(s.port, 'look-secret')).connections.authenticated).toBe(0);

    const refused = await fetch(`http://127.0.0.1:${s.port}/status?token=wrong`);
    expect(refused.status).toBe(401);
    expect(await refused.json()).toMatchObject({ code: 'E_METRICS_TOKEN', message: expect.stringContaining('/status?token=<metrics_token>') });
    for (const r of [await fetch(`http://127.0.0.1:${s.port}/status?token=look-secret`), await fetch(`http://127.0.0.1:${s.port}/status`, { headers: { Authorization: 'Bearer look-secret' } })]) {
      expect(r.status).toBe(200);
      expect(r.headers.get('content-type')).toBe('text/html; charset=utf-8');
      expect(r.headers.get('referrer-policy')).toBe('no-referrer');
      const html = await r.text();
      // The first snapshot is in the HTML itself, readable without script; the token is not.
      expect(html).toContain('<tbody id="chain"><tr><td colspan="9" class="empty">no modules');
      expect(html).not.toContain('look-secret');
    }
  });

  it('with metrics_listen: served there only, with the token rules there too', async () => {
    const s = await start('metrics_listen = 127.0.0.1:0\nmetrics_token = t0k\nmodule deferrer\n');
    expect((await fetch(`http://127.0.0.1:${s.metricsPort}/status.json`)).status).toBe(401);
    expect((await snapshot(s.metricsPort, 't0k')).modules.map((m) => m.name)).toEqual(['deferrer']);
    const page = await fetch(`http://127.0.0.1:${s.metricsPort}/status?token=t0k`);
    expect(page.status).toBe(200);
    expect(await page.text()).toContain('<b>deferrer</b>');
    for (const route of ['/status', '/status.json']) {
      const main = await fetch(`http://127.0.0.1:${s.port}${route}`, { headers: { Authorization: 'Bearer t0k' } });
      expect(main.status).toBe(404);
      expect(await main.json()).toMatchObject({ code: 'E_NOT_FOUND', message: expect.stringContaining(`metrics_listen (port ${s.metricsPort})`) });
    }
  });

  it('escapes what modules and config put on the page', async () => {
    const s = await start();
    // A script module's name and a warning's text are the server's input, not markup.
    await s.use('<img src=x onerror=alert(1)>', { onMessage: () => 'pass' });
    s.logger.event('core.warning', { text: '<script>alert(2)</script>' });
    const html = await (await fetch(`http://127.0.0.1:${s.port}/status`)).text();
    expect(html).toContain('&lt;img src=x onerror=alert(1)&gt;');
    expect(html).toContain('&lt;script&gt;alert(2)&lt;/script&gt;');
    expect(html).not.toContain('<img src=x');
  });
});
