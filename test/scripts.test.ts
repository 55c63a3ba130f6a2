// TypeScript/JavaScript modules in the chain (lib/modules.ts): loaded from a
// config block's `script =` or added with core.use(), interleaved with real
// native modules, sync and async verdicts, errors, timeouts, and the count of
// calls from the addon into JavaScript.
import fs from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { Core, type SubmitResult } from '../lib/index';
import type { SwitchboardModule } from '../lib/modules';
import { compileModule, msg, tempDir, until } from './helpers';

let recDir = '';
beforeAll(() => {
  recDir = compileModule({ name: 'recorder', source: 'test/modules/recorder.c' });
});

interface Opened {
  core: Core;
  lines(module?: string): string[];
  completed: Map<number, SubmitResult>;
  sent: { from: string; to: string; payload: Buffer; id: number }[];
}

/** A core over config text in a fresh folder holding `files`. */
function start(config: string, files: Record<string, string> = {}): Opened {
  const dir = tempDir('sb-scripts-');
  for (const [name, text] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, name)), { recursive: true });
    fs.writeFileSync(path.join(dir, name), text);
  }
  const logs: { module: string | null; text: string }[] = [];
  const core = Core.open({ configText: `module_dir = ${recDir}\n${config}`, configFile: path.join(dir, 'mesibo.conf'), baseDir: dir }, { onLog: (e) => logs.push(e) });
  const completed = new Map<number, SubmitResult>();
  core.on('complete', (token, _v, from) => completed.set(token, core.result(from)));
  const sent: Opened['sent'] = [];
  core.on('message', (m) => sent.push(m));
  return {
    core,
    completed,
    sent,
    lines: (module) => {
      if (!core.closed) core.drain();
      return logs.filter((l) => (module === undefined ? true : l.module === module)).map((l) => l.text);
    },
  };
}

const UPPER = `module.exports = {
  init(ctx) { ctx.log(0, 'init', ctx.config.mode); },
  onMessage(m) { m.text = m.text.toUpperCase() + ' (checked)'; },
};`;

describe('script modules from the config', () => {
  it('take their place between native modules, see their rewrites and pass theirs on', async () => {
    const o = start('module recorder {\n tag = before\n rewrite = shorten:5\n}\nmodule upper {\n script = ./upper.js\n mode = loud\n}\nmodule recorder {\n tag = after\n}\n', { 'upper.js': UPPER });
    await o.core.ready;
    const r = o.core.submit('alice', msg('bob', 'hello world'));
    expect(r.verdict).toBe('pass');
    expect(r.message.payload.toString()).toBe('HELLO (checked)');
    expect(JSON.parse(r.frame!.toString()).data).toBe('HELLO (checked)');
    const lines = o.lines();
    expect(lines).toContain('init loud');
    expect(lines).toContain('after saw from=alice to=bob id=1 len=15 text=HELLO (checked)');
    const info = o.core.modules.find((m) => m.name === 'upper')!;
    expect(info).toMatchObject({ script: true, position: 1, hooks: ['on_message'] });
    expect(info.stats.on_message.calls).toBe(1);
    o.core.close();
  });

  it('load TypeScript files and installed packages, and export default or a factory', async () => {
    const o = start('module tsmod {\n script = ./mods/tag.ts\n}\nmodule pkg {\n script = sb-test-pkg\n}\n', {
      'mods/tag.ts': `import type { SwitchboardModule } from '${path.resolve('lib/modules').replace(/\\/g, '/')}';\nconst m: SwitchboardModule = { onMessage(msg) { msg.text = msg.text + ' [ts]'; return 'pass'; } };\nexport default m;\n`,
      'node_modules/sb-test-pkg/package.json': JSON.stringify({ name: 'sb-test-pkg', main: 'index.js' }),
      'node_modules/sb-test-pkg/index.js': `module.exports = (ctx) => ({ onMessage(m) { m.text = m.text + ' [' + ctx.name + ']'; } });`,
    });
    await o.core.ready;
    expect(o.core.submit('alice', msg('bob', 'x')).message.payload.toString()).toBe('x [ts] [pkg]');
    o.core.close();
  });

  it('fail Core.open with a stable code when the script is missing, broken or exports nothing usable', () => {
    const cases: [string, Record<string, string>, string][] = [
      ['module a {\n script = ./nope.js\n}\n', {}, 'E_SCRIPT_NOT_FOUND'],
      ['module a {\n script = ./bad.js\n}\n', { 'bad.js': 'module.exports = {;' }, 'E_SCRIPT_LOAD_FAILED'],
      ['module a {\n script = ./num.js\n}\n', { 'num.js': 'module.exports = 42;' }, 'E_SCRIPT_BAD_EXPORT'],
      ['module a {\n script = ./init.js\n}\n', { 'init.js': 'module.exports = { init() { throw new Error("no key"); } };' }, 'E_SCRIPT_INIT_FAILED'],
      ['module a {\n script = ./x.js\n timeout = soon\n}\n', { 'x.js': 'module.exports = {};' }, 'E_CONFIG_BAD_VALUE'],
      ['module a {\n script = ./x.js\n on_error = explode\n}\n', { 'x.js': 'module.exports = {};' }, 'E_CONFIG_BAD_VALUE'],
    ];
    for (const [config, files, code] of cases) {
      let err: { code?: string; message?: string } | null = null;
      try {
        start(config, files).core.close();
      } catch (e) {
        err = e as { code?: string };
      }
      expect(err?.code, config).toBe(code);
      expect(err?.message).toContain('"a"');
    }
  });

  it('module_script always declares a script module; script only in a block that is no native module', async () => {
    // recorder is a native module here (mesibo_mod_recorder.so is in
    // module_dir): its `script` item is its own, as mesibo's FastCGI module
    // reads `script` (the PHP file to run). module_script makes the block
    // named like it a script module all the same.
    const o = start('module recorder {\n tag = native\n script = test.php\n}\nmodule recorder {\n module_script = ./upper.js\n mode = quiet\n}\nmodule upper {\n script = ./upper.js\n mode = legacy\n}\n', { 'upper.js': UPPER });
    await o.core.ready;
    expect(o.core.modules.map((m) => [m.name, m.script])).toEqual([['recorder', false], ['recorder', true], ['upper', true]]);
    const r = o.core.submit('alice', msg('bob', 'hi'));
    expect(r.message.payload.toString()).toBe('HI (CHECKED) (checked)');
    expect(o.lines()).toEqual(expect.arrayContaining(['native saw from=alice to=bob id=1 len=2 text=hi', 'init quiet', 'init legacy']));
    o.core.close();
  });

  it('warn when a native module\'s script item names a .js/.ts file: the block may have meant a script module', async () => {
    const o = start('module recorder {\n tag = native\n script = ./upper.js\n}\n', { 'upper.js': UPPER });
    await o.core.ready;
    expect(o.core.modules.map((m) => m.script)).toEqual([false]);
    expect(o.lines().filter((l) => l.includes('module_script'))).toEqual([
      expect.stringMatching(/^module "recorder": script = \.\/upper\.js is an item of the native module .*mesibo_mod_recorder\.so, not a script module; to load the script, write module_script = \.\/upper\.js instead$/),
    ]);
    o.core.close();
  });

  it('refuse a block with both path and module_script', () => {
    expect(() => start('module a {\n path = ./mesibo_mod_a.so\n module_script = ./a.js\n}\n', { 'a.js': 'module.exports = {};' })).toThrow(
      expect.objectContaining({ code: 'E_CONFIG_BAD_VALUE', message: expect.stringContaining('not both') }),
    );
  });

  it('wait for an async init before ready resolves, and reject ready when it fails', async () => {
    const o = start('module a {\n script = ./a.js\n}\n', { 'a.js': 'let ready = false; module.exports = { async init() { await new Promise(r => setTimeout(r, 30)); ready = true; }, onMessage(m) { m.text = String(ready); } };' });
    await o.core.ready;
    expect(o.core.submit('alice', msg('bob', '?')).message.payload.toString()).toBe('true');
    o.core.close();
    const bad = start('module a {\n script = ./a.js\n}\n', { 'a.js': 'module.exports = { async init() { throw new Error("db down"); } };' });
    await expect(bad.core.ready).rejects.toMatchObject({ code: 'E_SCRIPT_INIT_FAILED' });
    bad.core.close();
  });
});

describe('calls into JavaScript', () => {
  it('a chain without a script module subscribed to onMessage makes none per message', async () => {
    const o = start('module recorder {\n tag = n1\n}\nmodule watcher {\n script = ./w.js\n}\nmodule recorder {\n tag = n2\n}\n', {
      'w.js': 'module.exports = { onLogin() {} };',
    });
    await o.core.ready;
    o.core.drain();
    const before = o.core.counters().jsCalls;
    for (let i = 0; i < 1000; i++) o.core.submit('alice', msg('bob', `m${i}`, { id: i + 1 }));
    expect(o.core.counters().jsCalls).toBe(before);
    // The login hook it did subscribe to is called.
    o.core.login('bob', true);
    expect(o.core.counters().jsCalls).toBe(before + 1);
    o.core.close();
  });

  it('one script module with onMessage costs exactly one call per message', async () => {
    const o = start('module recorder {\n tag = n1\n}\nmodule counter {\n script = ./c.js\n}\n', { 'c.js': 'let n = 0; module.exports = { onMessage() { n++; } };' });
    await o.core.ready;
    const before = o.core.counters().jsCalls;
    for (let i = 0; i < 1000; i++) o.core.submit('alice', msg('bob', `m${i}`, { id: i + 1 }));
    expect(o.core.counters().jsCalls - before).toBe(1000);
    o.core.close();
  });
});

describe('use()', () => {
  it('inserts at a position; native and script modules run in the declared order', async () => {
    const o = start('module recorder {\n tag = first\n}\nmodule recorder {\n tag = last\n}\n');
    const seen: string[] = [];
    await o.core.use('mid', { onMessage: (m) => void seen.push(`mid:${m.text}`) }, { position: 1 });
    await o.core.use('head', { onMessage: (m) => { seen.push(`head:${m.text}`); m.text = 'from head'; } }, { position: 0 });
    expect(o.core.modules.map((m) => m.name)).toEqual(['head', 'recorder', 'mid', 'recorder']);
    o.core.submit('alice', msg('bob', 'hi'));
    expect(seen).toEqual(['head:hi', 'mid:from head']);
    expect(o.lines('recorder').filter((l) => l.includes(' saw '))).toEqual(['first saw from=alice to=bob id=1 len=9 text=from head', 'last saw from=alice to=bob id=1 len=9 text=from head']);
    o.core.close();
  });

  it('gives the module its params, lets it change type/flags/expiry and consume', async () => {
    const o = start('');
    let seen: Record<string, unknown> = {};
    await o.core.use('m', {
      onMessage(m) {
        seen = { id: m.id, from: m.from, to: m.to, groupid: m.groupid, flags: m.flags, type: m.type, expiry: m.expiry, uflags: m.uflags, refid: m.refid };
        if (m.text === 'drop') return 'consumed';
        m.type = 7;
        m.expiry = 60;
      },
    });
    o.core.login('bob', true);
    const r = o.core.submit('alice', msg('bob', 'x', { id: 9, refid: 4, flags: 1, type: 2, expiry: 30 }));
    expect(seen).toEqual({ id: 9, from: 'alice', to: 'bob', groupid: 0, flags: 1, type: 2, expiry: 30, uflags: 1, refid: 4 });
    expect(JSON.parse(r.frame!.toString())).toMatchObject({ id: 9, type: 7, expiry: 60 });
    expect(o.core.submit('alice', msg('bob', 'drop')).verdict).toBe('consumed');
    o.core.close();
  });

  it('a message kept past onMessage keeps what was read, and says clearly what it can no longer read', async () => {
    const o = start('');
    const kept: import('../lib/modules').ChainMessage[] = [];
    await o.core.use('keeper', {
      onMessage(m) {
        void m.from;
        kept.push(m);
      },
    });
    o.core.submit('alice', msg('bob', 'first'));
    o.core.submit('carol', msg('dave', 'second'));
    expect(kept[0].from).toBe('alice');
    expect(kept[0].id).toBe(1);
    expect(() => kept[0].text).toThrow(expect.objectContaining({ code: 'E_MESSAGE_EXPIRED' }));
    expect(() => kept[1].to).toThrow(/can only be read during onMessage/);
    o.core.close();
  });

  it('use() and drain() called from inside a hook wait until the chain is done with the message', async () => {
    const o = start('module recorder {\n tag = after\n}\n');
    const seen: string[] = [];
    let added: Promise<unknown> | null = null;
    await o.core.use('grower', {
      onMessage(m) {
        seen.push(`grower ${m.text}`);
        o.core.drain();
        added ??= o.core.use('late', { onMessage: (x) => void seen.push(`late ${x.text}`) }, { position: 0 });
      },
    }, { position: 0 });
    o.core.submit('alice', msg('bob', 'one'));
    expect(o.lines('recorder').filter((l) => l.includes(' saw '))).toHaveLength(1);
    await added;
    o.core.submit('alice', msg('bob', 'two'));
    expect(seen).toEqual(['grower one', 'late two', 'grower two']);
    expect(o.core.modules.map((m) => m.name)).toEqual(['late', 'grower', 'recorder']);
    o.core.close();
  });

  it('ctx.send enters the chain after the module; the module does not see its own message', async () => {
    const o = start('module recorder {\n tag = after\n}\n');
    const seen: string[] = [];
    await o.core.use('auto', {
      onMessage(m, ctx) {
        seen.push(m.text);
        if (m.to === 'helpdesk') {
          ctx.send({ to: m.from, payload: `ticket for: ${m.text}` });
          return 'consumed';
        }
      },
    }, { position: 0 });
    o.core.submit('alice', msg('helpdesk', 'printer broken'));
    await until(() => o.sent.length === 1);
    expect(o.sent[0]).toMatchObject({ from: 'auto', to: 'alice' });
    expect(o.sent[0].payload.toString()).toBe('ticket for: printer broken');
    expect(seen).toEqual(['printer broken']);
    expect(o.lines('recorder')).toContainEqual(expect.stringContaining('after saw from=auto to=alice'));
    o.core.close();
  });

  it('runs onMessageStatus, onLogin and onCleanup, and logs by level', async () => {
    const o = start('');
    const events: string[] = [];
    await o.core.use('hooks', {
      init(ctx) { ctx.log(1, 'debug: dropped at level 0'); ctx.log(0, 'always'); },
      onMessageStatus: (st) => void events.push(`status ${st.id} ${st.status} ${st.from}->${st.to}`),
      onLogin: (l) => void events.push(`login ${l.address} ${l.online}`),
      onCleanup: () => void events.push('cleanup'),
    });
    o.core.login('bob', true);
    o.core.submit('alice', msg('bob', 'x', { id: 5 }));
    o.core.status({ id: 5, status: 2, from: 'bob', to: 'alice' });
    o.core.login('bob', false);
    expect(o.lines('hooks')).toEqual(['always']);
    o.core.close();
    expect(events).toEqual(['login bob true', 'status 5 1 bob->alice', 'status 5 2 bob->alice', 'login bob false', 'cleanup']);
  });
});

describe('errors never take the core down', () => {
  it('a throwing onMessage is logged with the module name, counted, and the message passes (or is dropped with on_error = consume)', async () => {
    const o = start('module thrower {\n script = ./t.js\n}\nmodule strict {\n script = ./t.js\n on_error = consume\n}\n', {
      't.js': 'module.exports = { onMessage(m, ctx) { if (m.text.includes(ctx.name)) throw new Error("bad " + ctx.name); } };',
    });
    await o.core.ready;
    expect(o.core.submit('alice', msg('bob', 'thrower')).verdict).toBe('pass');
    expect(o.core.submit('alice', msg('bob', 'strict')).verdict).toBe('consumed');
    expect(o.lines('thrower').some((l) => l.startsWith('onMessage threw: Error: bad thrower') && l.endsWith('passed on (on_error)'))).toBe(true);
    expect(o.lines('strict').some((l) => l.includes('dropped (on_error)'))).toBe(true);
    expect(o.core.modules.map((m) => m.errors)).toEqual([1, 1]);
    expect(o.core.submit('alice', msg('bob', 'fine')).verdict).toBe('pass');
    o.core.close();
  });

  it('throwing status and login hooks are logged and counted', async () => {
    const o = start('');
    await o.core.use('bad', { onLogin() { throw new Error('x'); }, onMessageStatus() { throw new Error('y'); } });
    o.core.login('bob', true);
    o.core.submit('alice', msg('bob', 'x'));
    expect(o.lines('bad').filter((l) => /^(onLogin|onMessageStatus) threw/.test(l))).toHaveLength(2);
    expect(o.core.modules[0].errors).toBe(2);
    o.core.close();
  });

  it('an odd verdict is treated as pass and logged once', async () => {
    const o = start('');
    await o.core.use('odd', { onMessage: () => 'maybe' as never });
    expect(o.core.submit('alice', msg('bob', '1')).verdict).toBe('pass');
    expect(o.core.submit('alice', msg('bob', '2')).verdict).toBe('pass');
    expect(o.lines('odd').filter((l) => l.includes('neither'))).toHaveLength(1);
    o.core.close();
  });

  it('a payload larger than max_message_size is refused and the on_error verdict applies', async () => {
    const o = start('max_message_size = 100\n');
    await o.core.use('big', { onMessage(m) { m.payload = Buffer.alloc(101, 0x41); } });
    const r = o.core.submit('alice', msg('bob', 'x'));
    expect(r.verdict).toBe('pass');
    expect(r.message.payload.toString()).toBe('x');
    expect(o.lines('big').some((l) => l.includes('refused'))).toBe(true);
    o.core.close();
  });
});

describe('async verdicts', () => {
  const delayed = (): SwitchboardModule => ({
    onMessage(m) {
      const [kind, ms] = m.text.split(':');
      const wait = Number(ms ?? 0);
      if (kind === 'slow') return new Promise((r) => setTimeout(() => { m.text = `${m.text}!`; r('pass'); }, wait));
      if (kind === 'veto') return new Promise((r) => setTimeout(() => r('consumed'), wait));
      if (kind === 'fail') return new Promise((_r, j) => setTimeout(() => j(new Error('service down')), wait));
      if (kind === 'hang') return new Promise(() => undefined);
    },
  });

  it('a message waits at the position; later messages of its conversation wait behind it, others go on', async () => {
    const o = start('module recorder {\n tag = after\n}\n');
    await o.core.use('gate', delayed(), { position: 0 });
    const a1 = o.core.submit('alice', msg('bob', 'slow:60', { id: 1 }));
    const a2 = o.core.submit('alice', msg('bob', 'quick', { id: 2 }));
    const other = o.core.submit('carol', msg('bob', 'quick', { id: 3 }));
    const otherTo = o.core.submit('alice', msg('dave', 'quick', { id: 4 }));
    expect([a1.verdict, a2.verdict, other.verdict, otherTo.verdict]).toEqual(['deferred', 'deferred', 'pass', 'pass']);
    expect(a1.ack).toBeNull();
    expect(o.core.counters().waiting).toBe(2);
    await until(() => o.completed.size === 2);
    const c1 = o.completed.get(a1.token)!;
    const c2 = o.completed.get(a2.token)!;
    expect(c1).toMatchObject({ verdict: 'pass', message: { id: 1 } });
    expect(c1.message.payload.toString()).toBe('slow:60!');
    expect(JSON.parse(c1.ack!.toString())).toMatchObject({ op: 'status', id: 1, status: 1 });
    expect(c2.message.id).toBe(2);
    // The next module saw them after the decision, in the sender's order.
    const after = o.lines('recorder').filter((l) => l.includes(' saw ')).map((l) => l.replace(/^after saw from=(\w+) to=(\w+) id=(\d+).*$/, '$1>$2#$3'));
    expect(after).toEqual(['carol>bob#3', 'alice>dave#4', 'alice>bob#1', 'alice>bob#2']);
    expect(o.core.counters().waiting).toBe(0);
    o.core.close();
  });

  it('keeps per-conversation order for many messages with random delays', async () => {
    const o = start('');
    await o.core.use('gate', delayed());
    const order = new Map<string, number[]>();
    o.core.removeAllListeners('complete');
    o.core.on('complete', (_t, _v, from) => {
      const r = o.core.result(from);
      const key = `${from}>${r.message.to}`;
      if (!order.has(key)) order.set(key, []);
      order.get(key)!.push(r.message.id);
    });
    let n = 0;
    const expected = new Map<string, number[]>();
    for (let i = 1; i <= 600; i++) {
      const from = `u${i % 5}`;
      const to = `v${i % 3}`;
      const text = i % 4 === 0 ? 'quick' : `slow:${(i * 7) % 11}`;
      const r = o.core.submit(from, msg(to, text, { id: i }));
      const key = `${from}>${to}`;
      if (!expected.has(key)) expected.set(key, []);
      if (r.verdict === 'deferred') expected.get(key)!.push(i);
      else n++;
    }
    const total = [...expected.values()].reduce((a, b) => a + b.length, 0);
    await until(() => [...order.values()].reduce((a, b) => a + b.length, 0) === total);
    for (const [key, ids] of expected) expect(order.get(key) ?? [], key).toEqual(ids);
    expect(n + total).toBe(600);
    o.core.close();
  });

  it('a rejection passes the message (or drops it with onError: consume) and is logged', async () => {
    const o = start('');
    await o.core.use('lenient', delayed(), { position: 0 });
    const r = o.core.submit('alice', msg('bob', 'fail:5'));
    await until(() => o.completed.has(r.token));
    expect(o.completed.get(r.token)!.verdict).toBe('pass');
    expect(o.lines('lenient').some((l) => l.startsWith('onMessage rejected: Error: service down'))).toBe(true);
    o.core.close();
    const s = start('');
    await s.core.use('strict', delayed(), { onError: 'consume' });
    const r2 = s.core.submit('alice', msg('bob', 'fail:5'));
    await until(() => s.completed.has(r2.token));
    expect(s.completed.get(r2.token)!.verdict).toBe('consumed');
    expect(s.completed.get(r2.token)!.frame).toBeNull();
    expect(s.core.modules[0].errors).toBe(1);
    s.core.close();
  });

  it('a Promise that never settles times out after the block timeout; a late decision is ignored', async () => {
    const o = start('module gate {\n script = ./g.js\n timeout = 150ms\n}\n', {
      'g.js': 'module.exports = { onMessage(m) { if (m.text === "late") return new Promise(r => setTimeout(() => r("consumed"), 400)); return new Promise(() => {}); } };',
    });
    await o.core.ready;
    const t0 = Date.now();
    const r = o.core.submit('alice', msg('bob', 'hang'));
    const late = o.core.submit('carol', msg('bob', 'late'));
    await until(() => o.completed.has(r.token) && o.completed.has(late.token));
    const took = Date.now() - t0;
    expect(took).toBeGreaterThanOrEqual(140);
    expect(took).toBeLessThan(2000);
    expect(o.completed.get(r.token)!.verdict).toBe('pass');
    expect(o.completed.get(late.token)!.verdict).toBe('pass');
    expect(o.lines().some((l) => /module "gate" did not decide message 1 from alice within 150 ms; it was passed on/.test(l))).toBe(true);
    await until(() => o.lines('gate').some((l) => l.includes('settled after its timeout')));
    expect(o.core.modules[0].errors).toBe(2);
    o.core.close();
  });

  it('an async rewrite keeps the id and replaces the payload with one of any length', async () => {
    const o = start('module recorder {\n tag = after\n}\n');
    await o.core.use('grow', { async onMessage(m) { await new Promise((r) => setTimeout(r, 5)); m.text = m.text.repeat(100); m.type = 3; } }, { position: 0 });
    const r = o.core.submit('alice', msg('bob', 'ab', { id: 77 }));
    await until(() => o.completed.has(r.token));
    const c = o.completed.get(r.token)!;
    expect(c.message.id).toBe(77);
    expect(c.message.payload.length).toBe(200);
    expect(JSON.parse(c.frame!.toString())).toMatchObject({ id: 77, type: 3 });
    expect(o.lines('recorder')[0]).toContain('id=77 len=200');
    o.core.close();
  });

  it('a throwing "complete" listener is reported and costs no other completion', async () => {
    const o = start('');
    await o.core.use('gate', { onMessage: () => new Promise<'pass'>((r) => setTimeout(() => r('pass'), 10)) });
    let first = true;
    o.core.on('complete', () => {
      if (first) {
        first = false;
        throw new Error('listener bug');
      }
    });
    const a = o.core.submit('alice', msg('bob', 'a'));
    const b = o.core.submit('carol', msg('bob', 'b'));
    await until(() => o.completed.has(a.token) && o.completed.has(b.token));
    expect(o.lines().some((l) => l.startsWith("a 'complete' listener threw: Error: listener bug"))).toBe(true);
    expect(o.core.counters().waiting).toBe(0);
    o.core.close();
  });

  it('closing the core while messages wait is safe, and their late decisions are ignored', async () => {
    const o = start('');
    await o.core.use('gate', delayed());
    for (let i = 0; i < 10; i++) o.core.submit('alice', msg('bob', 'slow:30', { id: i + 1 }));
    o.core.close();
    await new Promise((r) => setTimeout(r, 60));
    expect(o.completed.size).toBe(0);
  });
});
