// The server's log (docs/config.md#logs): which events each log_level
// writes and which it leaves out, the text and json formats, and how the
// log level reaches native and script modules. Everything runs a real
// server on loopback with real clients; the lines are read from the
// server's log sink.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { Server } from '../lib/index';
import { SwitchboardClient } from '../lib/client';
import { EVENTS } from '../lib/log';
import { apiCall } from './server-helpers';
import { parseLogLine, reap, root, tempDir, until } from './helpers';

const APP = 'log-test-app-token';
const samples = path.join(root, 'build/modules');

/** A script module whose init logs one line at each level 0 to 3. */
const CHATTY = `module.exports = {
  init(ctx) { for (let l = 0; l <= 3; l++) ctx.log(l, 'script line at level ' + l); },
};`;

let servers: Server[] = [];
let clients: SwitchboardClient[] = [];
afterEach(async () => {
  for (const c of clients) c.close();
  clients = [];
  for (const s of servers) await s.stop();
  servers = [];
});

interface Run {
  s: Server;
  lines: string[];
}

/** A server with the skeleton sample (it logs its config items at level 1) and `extra` config lines. */
async function start(extra: string, moduleBlocks = 'module skeleton {\n greeting = hi\n}\n'): Promise<Run> {
  const dir = tempDir('sb-log-');
  fs.writeFileSync(path.join(dir, 'chatty.js'), CHATTY);
  const lines: string[] = [];
  const s = await Server.start({
    configText: `listen = 127.0.0.1:0\ndata_dir = ${path.join(dir, 'data')}\napp_token = ${APP}\nmodule_dir = ${samples}\n${extra}${moduleBlocks}`,
    configFile: path.join(dir, 'mesibo.conf'),
    baseDir: dir,
    log: (l) => lines.push(l),
  });
  servers.push(s);
  return { s, lines };
}

/** The event names in text lines ("TIME severity event k=v ..."), in order. */
function events(lines: string[]): string[] {
  return lines.map((l) => l.split(' ').filter(Boolean)[2]);
}

async function user(s: Server, address: string): Promise<string> {
  const r = await apiCall(s.port, APP, { op: 'useradd', address });
  return r.token as string;
}

async function connect(s: Server, token: string): Promise<SwitchboardClient> {
  const c = new SwitchboardClient({ url: `ws://127.0.0.1:${s.port}/`, token, WebSocket: WebSocket as never, reconnect: false });
  clients.push(c);
  await c.connect();
  return c;
}

/** A login with a token nobody has; resolves when the server has closed the socket. */
function badLogin(s: Server): Promise<void> {
  return new Promise((resolve) => {
    const ws = new WebSocket(`ws://127.0.0.1:${s.port}/?token=not-a-token`);
    ws.on('close', () => resolve());
    ws.on('error', () => undefined);
  });
}

/** Connections, logins (one failed), an API call, a message and a bad frame: something for every level. */
async function traffic(r: Run): Promise<void> {
  const alice = await connect(r.s, await user(r.s, 'alice'));
  await connect(r.s, await user(r.s, 'bob'));
  await badLogin(r.s);
  await alice.send('bob', 'hello bob').sent;
  const raw = new WebSocket(`ws://127.0.0.1:${r.s.port}/?token=${encodeURIComponent(await user(r.s, 'carol'))}`);
  await new Promise((res) => raw.on('message', res)); // hello
  const answer = new Promise((res) => raw.on('message', res));
  raw.send('{"op":"msg","id":"x"}');
  await answer; // the error frame
  raw.close();
  await until(() => r.lines.some((l) => l.includes('conn.close') && l.includes('carol')) || r.s.logger.level < 2, 5000);
}

describe('log_level', () => {
  it('1 (the default) logs start, module load, listen address and stop, and nothing per connection', async () => {
    const r = await start('');
    await traffic(r);
    await r.s.stop();
    const ev = events(r.lines);
    expect(ev).toEqual(['server.start', 'module.loaded', 'server.listening', 'server.stopping', 'server.stopped']);
    expect(r.lines[0]).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z info  server\.start version=\d+\.\d+\.\d+ node=v\d+\S* config=\S+mesibo\.conf pid=\d+$/);
    expect(r.lines[1]).toMatch(/ info  module\.loaded module=skeleton position=0 kind=native file=\S+mesibo_mod_skeleton\.so log_level=0$/);
    expect(r.lines[2]).toMatch(new RegExp(` info  server\\.listening url=ws://127\\.0\\.0\\.1:${r.s.port} modules=skeleton store=\\S+switchboard\\.db durable=on log_level=1$`));
    expect(r.lines[3]).toMatch(/ info  server\.stopping connections=\d+$/);
    // The skeleton's config lines are at its level 1: above a block's default at log_level 1.
    expect(r.lines.join('\n')).not.toContain('greeting');
  });

  it('0 logs only problems: a quiet server that works writes nothing', async () => {
    const r = await start('log_level = 0\n');
    await traffic(r);
    await r.s.stop();
    expect(r.lines).toEqual([]);
  });

  it('0 still writes what a module logs at level 0 and the core warnings', async () => {
    const r = await start('log_level = 0\n', 'module chatty {\n script = ./chatty.js\n}\n');
    const s = r.s;
    // A module that sends to nobody: the server says so at every level.
    await s.use('sender', { init: (ctx) => void setImmediate(() => ctx.send({ to: 'nobody-here', payload: 'x' })) });
    await until(() => r.lines.some((l) => l.includes('module.unknown_destination')), 5000);
    expect(r.lines[0]).toMatch(/ warn  module\.log module=chatty module_level=0 text="script line at level 0"$/);
    expect(r.lines[1]).toMatch(/ warn  module\.unknown_destination id=\d+ to=nobody-here outcome=dropped$/);
    expect(r.lines).toHaveLength(2);
  });

  it('2 adds connections, logins and failed logins with the peer address, and API calls', async () => {
    const r = await start('log_level = 2\n');
    await traffic(r);
    const text = r.lines.join('\n');
    expect(text).toMatch(/ debug api\.call op=useradd status=200 peer=\S*127\.0\.0\.1/);
    expect(text).toMatch(/ debug conn\.open peer=\S*127\.0\.0\.1/);
    expect(text).toMatch(/ debug login\.ok address=alice format=json peer=\S*127\.0\.0\.1/);
    expect(text).toMatch(/ debug login\.failed peer=\S*127\.0\.0\.1\S* code=E_AUTH reason="the token is unknown or was revoked; ask the backend for a new one"/);
    expect(text).toMatch(/ debug conn\.close address=carol peer=\S*127\.0\.0\.1\S* code=\d+/);
    // The skeleton's level-1 lines: a block without `log` is one below log_level.
    expect(text).toMatch(/ info  module\.log module=skeleton module_level=1 text="config greeting = hi"/);
    // Per-frame events are for level 3.
    expect(text).not.toContain('message.in');
    expect(text).not.toContain('frame.refused');
  });

  it('3 adds each message and each refused frame', async () => {
    const r = await start('log_level = 3\n');
    await traffic(r);
    const text = r.lines.join('\n');
    expect(text).toMatch(/ trace message\.in from=alice id=\d+ verdict=pass/);
    expect(text).toMatch(/ trace frame\.refused address=carol error=-\d+/);
    expect(text).toContain('login.ok address=alice');
  });

  it("a module's own `log` item wins over log_level, up or down", async () => {
    const r = await start('log_level = 3\n', 'module chatty {\n script = ./chatty.js\n log = 0\n}\nmodule chatty {\n script = ./chatty.js\n}\nmodule skeleton {\n greeting = hi\n log = 0\n}\n');
    const mod = r.lines.filter((l) => l.includes('module.log')).map((l) => l.replace(/^\S+ /, ''));
    expect(mod).toEqual([
      'warn  module.log module=chatty module_level=0 text="script line at level 0"',
      'warn  module.log module=chatty module_level=0 text="script line at level 0"',
      'info  module.log module=chatty module_level=1 text="script line at level 1"',
      'debug module.log module=chatty module_level=2 text="script line at level 2"',
    ]);
    const quiet = await start('log_level = 0\n', 'module skeleton {\n greeting = hi\n log = 1\n}\n');
    expect(quiet.lines.map((l) => l.replace(/^\S+ /, ''))).toEqual([
      'info  module.log module=skeleton module_level=1 text="config greeting = hi"',
      'info  module.log module=skeleton module_level=1 text="config log = 1"',
    ]);
  });

  it('reaches modules added with use(): without opts.log they follow log_level', async () => {
    const r = await start('log_level = 3\n', '');
    const levels: number[] = [];
    await r.s.use('late', { init: (ctx) => void levels.push(ctx.logLevel) });
    await r.s.use('pinned', { init: (ctx) => void levels.push(ctx.logLevel) }, { log: 0 });
    expect(levels).toEqual([2, 0]);
  });

  it('refuses a log_format other than text or json', async () => {
    await expect(start('log_format = xml\n')).rejects.toMatchObject({ code: 'E_CONFIG_BAD_VALUE', message: expect.stringContaining('expected text (one line per event, for people) or json (for log collectors)') });
  });

  it('every event name is written at the level its catalog entry says', async () => {
    const r = await start('log_level = 3\n');
    await traffic(r);
    for (const l of r.lines) {
      const ev = events([l])[0] as keyof typeof EVENTS;
      expect(EVENTS[ev], ev).toBeDefined();
    }
  });
});

describe('store errors', () => {
  // A commit that fails acknowledges nothing of its batch and disconnects
  // its senders (they resend); the server runs on and the log says why. A
  // real SQLite failure: the child's store is switched to read-only after
  // start.
  it('a commit that fails is logged as store.error with SQLite\'s reason, its sender is disconnected without "sent", and the server runs on, at log_level 0', async () => {
    const dir = tempDir('sb-log-store-');
    const script = `
      const { Server } = require(${JSON.stringify(path.join(root, 'dist', 'index.js'))});
      Server.start({ configText: 'listen = 127.0.0.1:0\\ndata_dir = ${dir}/data\\napp_token = ${APP}\\nlog_level = 0\\n' }).then((s) => {
        process.stdin.on('data', () => { s.store.db.exec('PRAGMA query_only = ON'); process.stdout.write('READONLY\\n'); });
        process.stdout.write('READY ' + s.port + '\\n');
      });`;
    const child = reap(spawn(process.execPath, ['-e', script], { stdio: ['pipe', 'pipe', 'pipe'] }));
    let out = '';
    let err = '';
    child.stdout!.on('data', (d) => (out += d));
    child.stderr!.on('data', (d) => (err += d));
    await until(() => /READY \d+/.test(out), 15_000);
    const port = Number(/READY (\d+)/.exec(out)![1]);
    const alice = (await apiCall(port, APP, { op: 'useradd', address: 'alice' })).token as string;
    await apiCall(port, APP, { op: 'useradd', address: 'bob' });
    child.stdin!.write('go\n');
    await until(() => out.includes('READONLY'), 5000);
    // bob is offline: his copy must be committed before alice hears "sent".
    const c = new SwitchboardClient({ url: `ws://127.0.0.1:${port}/`, token: alice, WebSocket: WebSocket as never, reconnect: false });
    clients.push(c);
    let closeCode = 0;
    c.on('disconnected', (d) => (closeCode = d.code));
    await c.connect();
    let sent = false;
    c.send('bob', 'never stored').sent.then(() => (sent = true), () => undefined);
    await until(() => closeCode !== 0, 10_000);
    expect(closeCode).toBe(1011);
    expect(sent).toBe(false);
    // Still serving: the API answers.
    expect((await apiCall(port, APP, { op: 'users' })).ok).toBe(true);
    expect(child.exitCode).toBe(null);
    const lines = err.split('\n').filter((l) => / store\.error /.test(l));
    expect(lines.map(parseLogLine)).toEqual([{ time: expect.any(String), severity: 'error', event: 'store.error', fields: { op: 'flush', error: expect.stringMatching(/readonly database/) } }]);
  });
});

describe('the event catalog', () => {
  it('docs/config.md lists every event at the level lib/log.ts writes it', () => {
    const doc = fs.readFileSync(path.join(root, 'docs/config.md'), 'utf8');
    const table = doc.slice(doc.indexOf('| level | events | severity |'));
    const documented = new Map<string, number>();
    for (const row of table.split('\n').slice(2)) {
      if (!row.startsWith('|')) break;
      const level = Number(/^\| (\d)/.exec(row)![1]);
      const events = row.split('|')[2];
      for (const m of events.matchAll(/`([a-z]+\.[a-z_]+)`/g)) documented.set(m[1], level);
    }
    expect(Object.fromEntries(documented)).toEqual(Object.fromEntries(Object.entries(EVENTS).map(([e, d]) => [e, d.level])));
  });
});

describe('log_format = json', () => {
  it('writes one JSON object per line with level, time, event and the same fields', async () => {
    const r = await start('log_level = 2\nlog_format = json\n');
    await traffic(r);
    await r.s.stop();
    const objs = r.lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(objs[0]).toMatchObject({ level: 'info', event: 'server.start', version: expect.any(String), pid: process.pid });
    expect(Date.parse(objs[0].time as string)).toBeGreaterThan(0);
    expect(objs.find((o) => o.event === 'server.listening')).toMatchObject({ level: 'info', url: `ws://127.0.0.1:${r.s.port}`, durable: 'on', log_level: 2 });
    expect(objs.find((o) => o.event === 'login.failed')).toMatchObject({ level: 'debug', code: 'E_AUTH', peer: expect.stringContaining('127.0.0.1') });
    expect(objs.find((o) => o.event === 'login.ok' && o.address === 'alice')).toMatchObject({ level: 'debug', format: 'json' });
    expect(objs.find((o) => o.event === 'api.call')).toMatchObject({ op: 'useradd', status: 200 });
    expect(objs.find((o) => o.event === 'module.log')).toMatchObject({ level: 'info', module: 'skeleton', text: 'config greeting = hi' });
    expect(objs.at(-1)).toMatchObject({ level: 'info', event: 'server.stopped' });
    expect(objs.some((o) => o.event === 'message.in')).toBe(false);
    // No pid/hostname on every line: the collector knows where a line came from.
    expect(objs.filter((o) => o.event !== 'server.start').every((o) => !('pid' in o) && !('hostname' in o))).toBe(true);
  });

  it('at level 0 writes only the module warnings, as JSON', async () => {
    const r = await start('log_level = 0\nlog_format = json\n', 'module chatty {\n script = ./chatty.js\n}\n');
    await r.s.stop();
    expect(r.lines.map((l) => JSON.parse(l))).toEqual([{ level: 'warn', time: expect.any(String), event: 'module.log', module: 'chatty', module_level: 0, text: 'script line at level 0' }]);
  });
});
