// Issue 16, "Budgets for modules": a native module that goes over its
// on_message budget budget_strikes times is bypassed for budget_cooldown,
// with on_over_budget deciding what its messages become. A real .so (test/
// modules/slowpoke.c: upper-cases, and busy-waits 5 ms on "slow") behind a
// real server and real clients.
import { describe, expect, it } from 'vitest';

import { connectPeer, serverFixture, type Peer } from './server-helpers';
import { compileModule, parseLogLine, tempDir, until } from './helpers';
import { Server } from '../lib/server';

const APP = 'budget-app-token';
const { clients, start, user } = serverFixture(APP, { name: 'slowpoke', source: 'test/modules/slowpoke.c' });

async function metric(port: number, name: string): Promise<number | undefined> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const m = new RegExp(`^${name}\\{module="slowpoke"\\} (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : undefined;
}

async function pair(s: Server): Promise<[Peer, Peer]> {
  const alice = await connectPeer(s.port, await user(s, 'alice'), 'd1', clients);
  const bob = await connectPeer(s.port, await user(s, 'bob'), 'd1', clients);
  return [alice, bob];
}

const block = (policy: string) =>
  `module slowpoke {\n  budget = 1ms\n  budget_strikes = 3\n  budget_cooldown = 1s\n  on_over_budget = ${policy}\n}\n`;

describe('module budgets', () => {
  it('pass: 3 slow calls trip the bypass; messages pass without the module; after the cool-down it runs again', async () => {
    const s = await start(block('pass'));
    const [alice, bob] = await pair(s);
    await alice.c.send('bob', 'fast').sent;
    await until(() => bob.texts().includes('FAST'));
    expect(await metric(s.port, 'switchboard_module_bypassed')).toBe(0);
    for (let i = 0; i < 3; i++) await alice.c.send('bob', `slow${i}`).sent;
    await until(() => bob.got.length === 4);
    expect(bob.texts()).toEqual(['FAST', 'SLOW0', 'SLOW1', 'SLOW2']);
    expect(await metric(s.port, 'switchboard_module_bypassed')).toBe(1);
    expect(await metric(s.port, 'switchboard_module_over_budget_total')).toBe(3);
    // Bypassed: passed on untouched, the module not called.
    await alice.c.send('bob', 'skipped').sent;
    await until(() => bob.texts().includes('skipped'));
    expect(await metric(s.port, 'switchboard_module_bypassed_total')).toBe(1);
    const status = (await (await fetch(`http://127.0.0.1:${s.port}/status.json`)).json()) as { modules: { name: string; budget: { bypassed: boolean; trips: number } | null }[] };
    expect(status.modules.find((m) => m.name === 'slowpoke')?.budget).toMatchObject({ bypassed: true, trips: 1 });
    expect(await (await fetch(`http://127.0.0.1:${s.port}/status`)).text()).toContain('BYPASSED (over budget)');
    // After the 1 s cool-down the module gets calls again.
    await new Promise((r) => setTimeout(r, 1100));
    await alice.c.send('bob', 'back').sent;
    await until(() => bob.texts().includes('BACK'));
    expect(await metric(s.port, 'switchboard_module_bypassed')).toBe(0);
    expect(await metric(s.port, 'switchboard_module_bypassed_total')).toBe(1);
  }, 15000);

  it('consume: while bypassed its messages are dropped, as a CONSUMED verdict would be', async () => {
    const s = await start(block('consume'));
    const [alice, bob] = await pair(s);
    for (let i = 0; i < 3; i++) await alice.c.send('bob', `slow${i}`).sent;
    await until(() => bob.got.length === 3);
    await alice.c.send('bob', 'dropped').sent; // "sent" all the same
    expect(await metric(s.port, 'switchboard_module_bypassed_total')).toBe(1);
    await new Promise((r) => setTimeout(r, 1100));
    await alice.c.send('bob', 'after').sent;
    await until(() => bob.texts().includes('AFTER'));
    expect(bob.texts()).toEqual(['SLOW0', 'SLOW1', 'SLOW2', 'AFTER']);
  }, 15000);

  it('logs module.bypassed once (module, budget, measured time, policy) and module.resumed after the cool-down', async () => {
    const lines: string[] = [];
    const dir = compileModule({ name: 'slowpoke', source: 'test/modules/slowpoke.c' });
    const s = await Server.start({ configText: `listen = 127.0.0.1:0\ndata_dir = ${tempDir()}\napp_token = ${APP}\nmodule_dir = ${dir}\n${block('pass')}`, log: (l) => lines.push(l) });
    try {
      const [alice, bob] = await pair(s);
      for (let i = 0; i < 3; i++) await alice.c.send('bob', `slow${i}`).sent;
      await until(() => lines.some((l) => parseLogLine(l).event === 'module.bypassed'));
      const tripped = lines.map(parseLogLine).filter((l) => l.event === 'module.bypassed');
      expect(tripped).toHaveLength(1);
      expect(tripped[0].severity).toBe('warn');
      expect(tripped[0].fields.module).toBe('slowpoke');
      expect(tripped[0].fields.text).toMatch(/over its budget of 1\.000 ms.*on_over_budget = pass/);
      await new Promise((r) => setTimeout(r, 1100));
      await alice.c.send('bob', 'back').sent;
      await until(() => bob.texts().includes('BACK'));
      await until(() => lines.some((l) => parseLogLine(l).event === 'module.resumed'));
    } finally {
      await s.stop();
    }
  }, 15000);

  it('a module without a budget has no budget metrics', async () => {
    const s = await start('module slowpoke {\n}\n');
    expect(await metric(s.port, 'switchboard_module_over_budget_total')).toBeUndefined();
  });

  for (const item of ['budget = soon', 'budget = 2 parsecs', 'budget = -1ms', 'budget = 1ms\n  budget_strikes = 0', 'budget = 1ms\n  on_over_budget = maybe', 'budget = 1ms\n  budget_cooldown = forever', 'budget_strikes = 3']) {
    it(`refuses "${item.replace(/\n\s*/g, '; ')}" with E_CONFIG_BAD_VALUE`, async () => {
      await expect(start(`module slowpoke {\n  ${item}\n}\n`)).rejects.toMatchObject({ code: 'E_CONFIG_BAD_VALUE', module: 'slowpoke' });
    });
  }

  it('accepts 500us, 2ms and 1s', async () => {
    for (const b of ['500us', '2ms', '1s']) {
      const s = await start(`module slowpoke {\n  budget = ${b}\n}\n`);
      expect(await metric(s.port, 'switchboard_module_bypassed')).toBe(0);
      await s.stop();
    }
  });
});
