// Issue 16, hot reload of modules: Core.reloadModules applies a changed
// module block (items, or a rebuilt .so) by loading a new instance next to
// the old one, swapping it in only when its init succeeded, and keeping
// every message; the "state" extension (switchboard.h) hands a blob from
// the old instance to the new one; script modules reload from a fresh
// require; use() returns a handle that takes the module out again. (The
// hand-off's wrappers on a server without the get-API: test/getapi.test.ts.)
// Real .so files (test/modules/counter.c, deferrer.c) built by the test,
// replaced on disk as an operator would; a real server with real clients
// for the reload under traffic.
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Core, type CoreConfig } from '../lib/index';
import { compileModule, msg, tempDir, until, type Opened } from './helpers';
import { connectPeer, serverFixture } from './server-helpers';
import type { Server } from '../lib/server';

let builds: Record<'v1' | 'v2' | 'failing' | 'stateless' | 'deferrer', string>;
beforeAll(() => {
  const so = (name: string, source: string, defines: string[] = []) => path.join(compileModule({ name, source, defines }), `mesibo_mod_${name}.so`);
  builds = {
    v1: so('counter', 'test/modules/counter.c'),
    v2: so('counter', 'test/modules/counter.c', ['VARIANT=2']),
    failing: so('counter', 'test/modules/counter.c', ['VARIANT=2', 'FAIL_INIT']),
    stateless: so('counter', 'test/modules/counter.c', ['NO_STATE']),
    deferrer: so('deferrer', 'test/modules/deferrer.c'),
  };
});

/** Puts `build` in `dir` as an operator does: a new file renamed over the old one. */
function install(dir: string, build: string, name = 'counter'): void {
  const to = path.join(dir, `mesibo_mod_${name}.so`);
  fs.copyFileSync(build, `${to}.new`);
  fs.renameSync(`${to}.new`, to);
}

const opened: Opened[] = [];
afterEach(() => {
  while (opened.length) opened.pop()!.core.close();
});

interface Rig extends Opened {
  dir: string;
  config(body: string): CoreConfig;
}

function rig(body: string, so: (keyof typeof builds)[] = ['v1']): Rig {
  const dir = tempDir('modreload-');
  for (const b of so) install(dir, builds[b], b === 'deferrer' ? 'deferrer' : 'counter');
  const config = (text: string): CoreConfig => ({ configText: `module_dir = ${dir}\n${text}`, configFile: path.join(dir, 'mesibo.conf'), baseDir: dir });
  const logs: Opened['logs'] = [];
  const sent: Opened['sent'] = [];
  const core = Core.open(config(body), { onLog: (e) => logs.push(e) });
  core.on('message', (m) => sent.push(m));
  const o: Rig = {
    core,
    logs,
    sent,
    dir,
    config,
    lines: (module?: string) => {
      if (!core.closed) core.drain();
      return logs.filter((l) => (module === undefined ? l.module !== null : l.module === module)).map((l) => l.text);
    },
  };
  opened.push(o);
  return o;
}

/** Asks the counter for its count; returns its reply ("LABEL vN count=N"). */
function ask(o: Opened): string {
  const before = o.sent.length;
  expect(o.core.submit('alice', msg('bob', 'count?')).verdict).toBe('consumed');
  o.core.drain();
  expect(o.sent.length).toBe(before + 1);
  return o.sent[before].payload.toString();
}

describe('reloading a native module', () => {
  it('a changed item: a new instance with the new value takes over, with the count the old one handed over', async () => {
    const o = rig('module counter {\n label = a\n}\n');
    for (let i = 0; i < 3; i++) expect(o.core.submit('alice', msg('bob', `m${i}`)).verdict).toBe('pass');
    const report = await o.core.reloadModules(o.config('module counter {\n label = b\n}\n'));
    expect(report).toEqual({ reloaded: ['counter'], unchanged: [], failed: [], restart: [] });
    // The new init ran while the old instance still ran; its cleanup came after.
    expect(o.lines('counter')).toEqual(['a v1 start count=0 (state: none)', 'b v1 start count=3 (state: loaded)', 'a v1 cleanup count=3']);
    expect(ask(o)).toBe('b v1 count=4');
    expect(o.core.modules.map((m) => m.name)).toEqual(['counter']);
  });

  it('the same block and file: unchanged, nothing reloaded', async () => {
    const o = rig('module counter {\n label = a\n}\n');
    const report = await o.core.reloadModules(o.config('module counter {\n label = a\n}\n'));
    expect(report).toEqual({ reloaded: [], unchanged: ['counter'], failed: [], restart: [] });
    expect(o.lines('counter')).toEqual(['a v1 start count=0 (state: none)']);
  });

  it('a rebuilt .so that behaves differently replaces the running one (its counters continue)', async () => {
    const o = rig('module counter {\n label = a\n}\n');
    expect(o.core.submit('alice', msg('bob', 'hello')).message.payload.toString()).toBe('hello');
    const calls = o.core.modules[0].stats.on_message.calls;
    install(o.dir, builds.v2);
    expect(await o.core.reloadModules(o.config('module counter {\n label = a\n}\n'))).toMatchObject({ reloaded: ['counter'] });
    expect(o.core.submit('alice', msg('bob', 'hello')).message.payload.toString()).toBe('HELLO');
    expect(ask(o)).toBe('a v2 count=3');
    expect(o.core.modules[0].stats.on_message.calls).toBe(calls + 2);
    expect(o.core.modules[0].verdicts).toMatchObject({ pass: 2, consumed: 1 });
    // Then only an item changes: the new instance shares the rebuilt library
    // already in memory (loaded from a copy whose name is gone).
    expect(await o.core.reloadModules(o.config('module counter {\n label = b\n}\n'))).toMatchObject({ reloaded: ['counter'] });
    expect(o.lines('counter').slice(-2)).toEqual(['b v2 start count=3 (state: loaded)', 'a v2 cleanup count=3']);
    expect(o.core.submit('alice', msg('bob', 'again')).message.payload.toString()).toBe('AGAIN');
    expect(fs.readdirSync(o.dir)).toEqual(['mesibo_mod_counter.so']);
  });

  it('a new .so whose init fails: reported with its code and log, and the old instance keeps working', async () => {
    const o = rig('module counter {\n label = a\n}\n');
    o.core.submit('alice', msg('bob', 'one'));
    install(o.dir, builds.failing);
    const report = await o.core.reloadModules(o.config('module counter {\n label = a\n}\n'));
    expect(report.reloaded).toEqual([]);
    expect(report.failed).toHaveLength(1);
    expect(report.failed[0]).toMatchObject({ module: 'counter', code: 'E_MODULE_INIT_FAILED' });
    expect(report.failed[0].message).toContain('a refuses to start');
    expect(o.core.submit('alice', msg('bob', 'still')).message.payload.toString()).toBe('still');
    expect(ask(o)).toBe('a v1 count=3');
    expect(o.lines('counter')).not.toContain('a v1 cleanup count=1');
    // Fixed on disk: the next reload takes it.
    install(o.dir, builds.v2);
    expect(await o.core.reloadModules(o.config('module counter {\n label = a\n}\n'))).toMatchObject({ reloaded: ['counter'], failed: [] });
    expect(ask(o)).toBe('a v2 count=4');
  });

  it('a bad value in the new block fails that module with E_CONFIG_BAD_VALUE; the old one stays', async () => {
    const o = rig('module counter {\n label = a\n}\n');
    const report = await o.core.reloadModules(o.config('module counter {\n label = b\n log = loud\n}\n'));
    expect(report.failed).toEqual([{ module: 'counter', code: 'E_CONFIG_BAD_VALUE', message: expect.stringContaining('log = "loud"') }]);
    expect(ask(o)).toBe('a v1 count=1');
  });

  it('a module without a save callback: the new instance starts from nothing', async () => {
    const o = rig('module counter {\n label = a\n}\n', ['stateless']);
    o.core.submit('alice', msg('bob', 'one'));
    install(o.dir, builds.v1);
    await o.core.reloadModules(o.config('module counter {\n label = a\n}\n'));
    expect(o.lines('counter')).toContain('a v1 start count=0 (state: none)');
    expect(ask(o)).toBe('a v1 count=1');
  });

  it('added, removed, renamed or moved blocks are listed in restart and not applied; the rest is', async () => {
    const o = rig('module counter {\n label = a\n}\nmodule deferrer {\n tag = d\n}\n', ['v1', 'deferrer']);
    // counter changed in place; deferrer removed; a new block added.
    let report = await o.core.reloadModules(o.config('module counter {\n label = b\n}\nmodule other\n'));
    expect(report).toEqual({ reloaded: ['counter'], unchanged: [], failed: [], restart: ['other', 'deferrer'] });
    expect(o.core.modules.map((m) => m.name)).toEqual(['counter', 'deferrer']);
    // Moved: both places differ.
    report = await o.core.reloadModules(o.config('module deferrer {\n tag = d\n}\nmodule counter {\n label = b\n}\n'));
    expect(report.restart.sort()).toEqual(['counter', 'deferrer']);
    expect(report.reloaded).toEqual([]);
    expect(o.core.modules.map((m) => m.name)).toEqual(['counter', 'deferrer']);
  });

  it('a config that does not parse is refused: nothing changes', async () => {
    const o = rig('module counter {\n label = a\n}\n');
    await expect(o.core.reloadModules(o.config('module counter {\n label = b\n'))).rejects.toMatchObject({ code: 'E_CONFIG_UNCLOSED_BLOCK' });
    expect(ask(o)).toBe('a v1 count=1');
  });

  it('a message deferred at the old instance is decided by it after the swap; the old one is cleaned up after', async () => {
    const o = rig('module deferrer {\n tag = old\n}\nmodule counter {\n label = a\n}\n', ['v1', 'deferrer']);
    const done: { token: number; verdict: number; payload: string }[] = [];
    o.core.on('complete', (token, verdict, from) => done.push({ token, verdict, payload: o.core.result(from).message.payload.toString() }));
    const r = o.core.submit('alice', msg('bob', 'later:150:slow'));
    expect(r.verdict).toBe('deferred');
    const report = await o.core.reloadModules(o.config('module deferrer {\n tag = new\n}\nmodule counter {\n label = a\n}\n'));
    expect(report.reloaded).toEqual(['deferrer']);
    expect(o.lines('deferrer')).toContain('new defer supported: yes');
    // New messages meet the new instance; the waiting one is the old one's.
    const r2 = o.core.submit('carol', msg('bob', 'later:1:fast'));
    expect(r2.verdict).toBe('deferred');
    await until(() => done.length === 2);
    const byToken = Object.fromEntries(done.map((d) => [d.token, d.payload]));
    expect(byToken[r.token]).toBe('SLOW [old after 150 ms]');
    expect(byToken[r2.token]).toBe('FAST [new after 1 ms]');
    expect(o.core.counters().waiting).toBe(0);
    // Both went through the counter behind it: none lost, none twice.
    expect(ask(o)).toBe('a v1 count=3');
  });

  it('a message deferred at the old instance that is never decided times out with its on_error; nothing waits for ever', async () => {
    const o = rig('module deferrer {\n tag = old\n defer_timeout = 200ms\n}\n', ['deferrer']);
    const done: number[] = [];
    o.core.on('complete', (_token, verdict) => done.push(verdict));
    expect(o.core.submit('alice', msg('bob', 'never')).verdict).toBe('deferred');
    expect((await o.core.reloadModules(o.config('module deferrer {\n tag = new\n}\n'))).reloaded).toEqual(['deferrer']);
    await until(() => done.length === 1);
    expect(done).toEqual([0]);
    expect(o.core.counters().waiting).toBe(0);
  });
});

describe('reloading a script module', () => {
  function scriptRig(code: string, items = ''): Rig & { write(code: string): void } {
    const dir = tempDir('modreload-js-');
    const file = path.join(dir, 'greeter.js');
    const write = (c: string) => {
      fs.writeFileSync(`${file}.new`, c);
      fs.renameSync(`${file}.new`, file);
    };
    write(code);
    const config = (text: string): CoreConfig => ({ configText: text, configFile: path.join(dir, 'mesibo.conf'), baseDir: dir });
    const logs: Opened['logs'] = [];
    const core = Core.open(config(`module greeter {\n module_script = ./greeter.js\n${items}}\n`), { onLog: (e) => logs.push(e) });
    const o = {
      core,
      logs,
      sent: [],
      dir,
      config,
      write,
      lines: (module?: string) => logs.filter((l) => (module === undefined ? l.module !== null : l.module === module)).map((l) => l.text),
    };
    opened.push(o);
    return o;
  }
  const greeter = (word: string) => `
    module.exports = (ctx) => {
      let seen = ctx.savedState ? ctx.savedState.seen : 0;
      return {
        init() { ctx.log(0, '${word} init, seen ' + seen + ', mood ' + (ctx.config.mood || '-')); },
        onMessage(m) { seen++; m.text = '${word} ' + m.text; },
        saveState() { return { seen }; },
        onCleanup() { ctx.log(0, '${word} cleanup, seen ' + seen); },
      };
    };`;

  it('a changed file: a fresh require, the new code runs, with the state the old one saved', async () => {
    const o = scriptRig(greeter('hello'));
    await o.core.ready;
    expect(o.core.submit('alice', msg('bob', 'one')).message.payload.toString()).toBe('hello one');
    o.write(greeter('howdy'));
    const report = await o.core.reloadModules(o.config('module greeter {\n module_script = ./greeter.js\n}\n'));
    expect(report).toEqual({ reloaded: ['greeter'], unchanged: [], failed: [], restart: [] });
    expect(o.core.submit('alice', msg('bob', 'two')).message.payload.toString()).toBe('howdy two');
    o.core.drain();
    expect(o.lines('greeter')).toEqual(['hello init, seen 0, mood -', 'howdy init, seen 1, mood -', 'hello cleanup, seen 1']);
  });

  it('a changed item reloads it; the same file and items leave it alone', async () => {
    const o = scriptRig(greeter('hello'), ' mood = calm\n');
    await o.core.ready;
    expect((await o.core.reloadModules(o.config('module greeter {\n module_script = ./greeter.js\n mood = calm\n}\n'))).unchanged).toEqual(['greeter']);
    expect((await o.core.reloadModules(o.config('module greeter {\n module_script = ./greeter.js\n mood = glad\n}\n'))).reloaded).toEqual(['greeter']);
    o.core.drain();
    expect(o.lines('greeter')).toContain('hello init, seen 0, mood glad');
  });

  it('a new version whose init throws: failed with E_SCRIPT_INIT_FAILED, the old one keeps running', async () => {
    const o = scriptRig(greeter('hello'));
    await o.core.ready;
    o.write('module.exports = { init() { throw new Error("no database"); }, onMessage(m) { m.text = "broken"; } };');
    const report = await o.core.reloadModules(o.config('module greeter {\n module_script = ./greeter.js\n}\n'));
    expect(report.failed).toEqual([{ module: 'greeter', code: 'E_SCRIPT_INIT_FAILED', message: expect.stringContaining('no database') }]);
    expect(o.core.submit('alice', msg('bob', 'x')).message.payload.toString()).toBe('hello x');
    expect(o.core.modules.map((m) => m.name)).toEqual(['greeter']);
  });

  it('a new version that does not load (syntax error): failed with E_SCRIPT_LOAD_FAILED, the old one keeps running', async () => {
    const o = scriptRig(greeter('hello'));
    await o.core.ready;
    o.write('module.exports = {');
    const report = await o.core.reloadModules(o.config('module greeter {\n module_script = ./greeter.js\n}\n'));
    expect(report.failed[0]).toMatchObject({ module: 'greeter', code: 'E_SCRIPT_LOAD_FAILED' });
    expect(o.core.submit('alice', msg('bob', 'x')).message.payload.toString()).toBe('hello x');
  });
});

describe("use()'s handle", () => {
  it('remove() takes the module out: later messages skip it, its onCleanup runs, a second remove() does nothing', async () => {
    const o = rig('module counter {\n label = a\n}\n');
    const cleaned: string[] = [];
    const handle = await o.core.use('shouter', { onMessage: (m) => void (m.text = m.text.toUpperCase()), onCleanup: () => void cleaned.push('shouter') }, { position: 0 });
    expect(handle.name).toBe('shouter');
    expect(o.core.submit('alice', msg('bob', 'hi')).message.payload.toString()).toBe('HI');
    await handle.remove();
    expect(cleaned).toEqual(['shouter']);
    expect(o.core.modules.map((m) => m.name)).toEqual(['counter']);
    expect(o.core.submit('alice', msg('bob', 'hi')).message.payload.toString()).toBe('hi');
    await handle.remove();
    expect(cleaned).toEqual(['shouter']);
    // The native module behind it saw every message.
    expect(ask(o)).toBe('a v1 count=3');
  });

  it('a message the removed module is deciding still gets its decision and goes on through the rest of the chain', async () => {
    const o = rig('module counter {\n label = a\n}\n');
    const done: string[] = [];
    o.core.on('complete', (_t, _v, from) => done.push(o.core.result(from).message.payload.toString()));
    let release: () => void = () => {};
    const handle = await o.core.use('gate', {
      onMessage: (m) =>
        new Promise<'pass'>((resolve) => {
          release = () => {
            m.text = `gated ${m.text}`;
            resolve('pass');
          };
        }),
    }, { position: 0 });
    expect(o.core.submit('alice', msg('bob', 'waiting')).verdict).toBe('deferred');
    await handle.remove();
    release();
    await until(() => done.length === 1);
    expect(done).toEqual(['gated waiting']);
    expect(ask(o)).toBe('a v1 count=2');
  });

  it('a module whose init fails is taken out again before use() rejects', async () => {
    const o = rig('module counter {\n label = a\n}\n');
    await expect(o.core.use('broken', { init: () => Promise.reject(new Error('nope')) })).rejects.toMatchObject({ code: 'E_SCRIPT_INIT_FAILED' });
    expect(o.core.modules.map((m) => m.name)).toEqual(['counter']);
  });
});

describe('reload under traffic on a real server', () => {
  const APP = 'modreload-app-token';
  const { clients, start, user } = serverFixture(APP, { name: 'counter', source: 'test/modules/counter.c' });

  /** A server whose counter block loads `DIR/mesibo_mod_counter.so` (a path item), which the test replaces. */
  async function running(label: string): Promise<{ s: Server; dir: string; block: (label: string) => CoreConfig }> {
    const dir = tempDir('modreload-srv-');
    install(dir, builds.v1);
    const text = (l: string) => `module counter {\n path = ${dir}/mesibo_mod_counter.so\n label = ${l}\n}\n`;
    const s = await start(text(label));
    // The reload reads the module blocks; the rest of the file is the server's.
    return { s, dir, block: (l: string) => ({ configText: text(l), configFile: path.join(dir, 'mesibo.conf'), baseDir: dir }) };
  }

  it('a client streams 300 messages; reloads (an item, then a rebuilt .so) in the middle lose none, deliver none twice, close no connection', async () => {
    const { s, dir, block } = await running('a');
    const alice = await connectPeer(s.port, await user(s, 'alice'), 'd1', clients);
    const bob = await connectPeer(s.port, await user(s, 'bob'), 'd1', clients);
    let closes = 0;
    for (const p of [alice, bob]) p.c.on('disconnected', () => void closes++);
    const N = 300;
    const sent: Promise<unknown>[] = [];
    const reports: unknown[] = [];
    for (let i = 0; i < N; i++) {
      sent.push(alice.c.send('bob', `m${i}`).sent);
      if (i === 100) reports.push(await s.core.reloadModules(block('b')));
      if (i === 200) {
        install(dir, builds.v2);
        reports.push(await s.core.reloadModules(block('b')));
      }
      if (i % 25 === 0) await new Promise((r) => setImmediate(r));
    }
    await Promise.all(sent);
    await until(() => bob.got.length >= N);
    await new Promise((r) => setTimeout(r, 100)); // a duplicate would arrive meanwhile
    expect(reports).toEqual([
      { reloaded: ['counter'], unchanged: [], failed: [], restart: [] },
      { reloaded: ['counter'], unchanged: [], failed: [], restart: [] },
    ]);
    const texts = bob.texts();
    expect(texts).toHaveLength(N);
    expect(texts.map((t) => Number(t.slice(1)))).toEqual([...Array(N).keys()]);
    // Before the .so was replaced the payloads pass as they are; after, upper-cased.
    expect(texts[0]).toBe('m0');
    expect(texts[N - 1]).toBe(`M${N - 1}`);
    expect(closes).toBe(0);
    // The count went across both reloads.
    await alice.c.send('bob', 'count?').sent;
    await until(() => alice.texts().length === 1);
    expect(alice.texts()).toEqual([`b v2 count=${N + 1}`]);
  }, 30000);

  it("server.use()'s handle: after remove() messages between real clients skip the module", async () => {
    const { s } = await running('a');
    const alice = await connectPeer(s.port, await user(s, 'alice'), 'd1', clients);
    const bob = await connectPeer(s.port, await user(s, 'bob'), 'd1', clients);
    const shout = await s.use('shout', { onMessage: (m) => void (m.text = `${m.text}!`) });
    await alice.c.send('bob', 'one').sent;
    await until(() => bob.got.length === 1);
    await shout.remove();
    await alice.c.send('bob', 'two').sent;
    await until(() => bob.got.length === 2);
    expect(bob.texts()).toEqual(['one!', 'two']);
    expect(s.core.modules.map((m) => m.name)).toEqual(['counter']);
  });
});
