// Configuration reload (issue 16; docs/operations.md "Reloading"): SIGHUP,
// the API op `reload` and Server.reload() read the config file again, put
// the live settings in force for connections that are already open, name
// the settings that need a restart, and refuse a bad file while the server
// runs on. Real server, real config files, real WebSocket clients.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import WebSocket from 'ws';
import { afterEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../lib/config';
import { Server, type ModuleContext } from '../lib/index';
import { RELOAD, SETTING_OF } from '../lib/server/reload';
import { settingsFrom, type ServerSettings } from '../lib/server/settings';
import { parseLogLine, reap, root, tempDir, until } from './helpers';
import { apiCall } from './server-helpers';

const APP = 'reload-app-token';
const running: Server[] = [];
const sockets: WebSocket[] = [];

afterEach(async () => {
  while (sockets.length) sockets.pop()!.terminate();
  while (running.length) await running.pop()!.stop();
});

interface Started {
  s: Server;
  file: string;
  lines: string[];
  /** Writes the file again: the same first three lines (listen, data_dir, app_token), then `body`. */
  rewrite(body: string, token?: string): void;
  events(name: string): ReturnType<typeof parseLogLine>[];
}

async function start(body = '', overrides?: Partial<ServerSettings>): Promise<Started> {
  const dir = tempDir();
  const file = path.join(dir, 'mesibo.conf');
  const rewrite = (b: string, token = APP) => fs.writeFileSync(file, `listen = 127.0.0.1:0\ndata_dir = ./data\napp_token = ${token}\n${b}`);
  rewrite(body);
  const lines: string[] = [];
  const s = await Server.start({ configFile: file, log: (l) => lines.push(l), overrides });
  running.push(s);
  const events = (name: string) => lines.filter((l) => !l.startsWith('{')).map(parseLogLine).filter((l) => l.event === name);
  return { s, file, lines, rewrite, events };
}

async function user(s: Server, address: string, token = APP): Promise<string> {
  return (await apiCall(s.port, token, { op: 'useradd', address })).token as string;
}

interface Raw {
  ws: WebSocket;
  frames: Record<string, unknown>[];
  closed: boolean;
}

/** A logged-in WebSocket that confirms every delivery it gets (delivered status), as a client must. */
async function loggedIn(s: Server, token: string): Promise<Raw> {
  const ws = new WebSocket(`ws://127.0.0.1:${s.port}/?token=${token}`);
  sockets.push(ws);
  const r: Raw = { ws, frames: [], closed: false };
  ws.on('message', (d) => {
    const f = JSON.parse(d.toString()) as Record<string, unknown>;
    r.frames.push(f);
    if (f.op === 'msg') ws.send(JSON.stringify({ op: 'status', id: f.id, to: f.from, status: 2 }));
  });
  ws.on('close', () => (r.closed = true));
  ws.on('error', () => {});
  await until(() => r.frames.some((f) => f.op === 'hello'));
  return r;
}

const sent = (r: Raw) => r.frames.filter((f) => f.op === 'status' && f.status === 1).length;
const limited = (r: Raw) => r.frames.filter((f) => f.code === 'E_RATE_LIMITED').length;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('the table of what a reload applies', () => {
  it('classifies every setting the parser knows and every field of ServerSettings, and docs/config.md says the same', () => {
    // The parser's own list, from its error for an unknown key.
    let known: string[] = [];
    try {
      parseConfig({ text: 'no_such_setting = 1\n' });
    } catch (e) {
      known = /expected one of: ([^(]+) \(/.exec((e as Error).message)![1].split(', ').map((k) => k.trim());
    }
    expect(known.length).toBeGreaterThan(20);
    expect(Object.keys(RELOAD).sort()).toEqual([...known].sort());
    const fields = Object.keys(settingsFrom(parseConfig({ text: '' })));
    expect(Object.keys(SETTING_OF).sort()).toEqual(fields.sort());
    const doc = fs.readFileSync(path.join(root, 'docs', 'config.md'), 'utf8');
    const documented = Object.fromEntries([...doc.matchAll(/^\| `([a-z_]+)` \| .* \| (live|restart) \|$/gm)].map((m) => [m[1], m[2]]));
    expect(documented).toEqual(RELOAD);
  });
});

describe('Server.reload()', () => {
  it('puts a lowered rate_limit in force on a connection that stays open', async () => {
    const r = await start('rate_limit = 1000\nuser_rate_limit = 100000\n');
    const alice = await loggedIn(r.s, await user(r.s, 'alice'));
    await user(r.s, 'bob');
    let id = 1;
    const burst = (n: number) => {
      for (let i = 0; i < n; i++) alice.ws.send(JSON.stringify({ op: 'msg', id: id++, to: 'bob', data: 'x' }));
    };
    burst(50);
    await until(() => sent(alice) === 50);
    expect(limited(alice)).toBe(0);

    r.rewrite('rate_limit = 10\nuser_rate_limit = 100000\n');
    const report = await r.s.reload();
    expect(report).toMatchObject({ config: r.file, applied: ['rate_limit'], restart: [] });
    expect(r.s.settings.rateLimit).toBe(10);
    burst(50);
    await until(() => sent(alice) + limited(alice) === 100);
    // The bucket held up to 1000 tokens; the new burst is 10.
    expect(sent(alice) - 50).toBeGreaterThanOrEqual(10);
    expect(sent(alice) - 50).toBeLessThan(15);
    expect(alice.closed).toBe(false);
    expect(alice.frames.filter((f) => f.op === 'hello')).toHaveLength(1);
    expect(r.events('server.reloaded')[0].fields).toMatchObject({ config: r.file, applied: 'rate_limit' });
  });

  it('raising log_level makes debug events appear; log_format switches to json', async () => {
    const filter = (item: string) => `module_dir = ${path.join(root, 'build', 'modules')}\nmodule filter {\n blocked_words = spam\n${item}}\n`;
    const r = await start(`log_level = 1\n${filter('')}`);
    const t1 = await user(r.s, 'alice');
    await loggedIn(r.s, t1);
    expect(r.events('login.ok')).toHaveLength(0);

    r.rewrite(`log_level = 2\n${filter('')}`);
    expect(await r.s.reload()).toMatchObject({ applied: ['log_level'], restart: [], modules: { unchanged: ['filter'] } });
    await loggedIn(r.s, t1);
    await until(() => r.events('login.ok').length === 1);
    expect(r.events('login.ok')[0].fields).toMatchObject({ address: 'alice' });
    // A module without a log item follows: one below the server's level, as at start.
    expect(r.s.core.modules[0].logLevel).toBe(1);
    r.rewrite(`log_level = 2\n${filter(' log = 0\n')}`);
    expect(await r.s.reload()).toMatchObject({ applied: [], modules: { reloaded: ['filter'] } });
    expect(r.s.core.modules[0].logLevel).toBe(0);
    // Its own log item wins over a later change of log_level.
    r.rewrite(`log_level = 3\n${filter(' log = 0\n')}`);
    expect(await r.s.reload()).toMatchObject({ applied: ['log_level'], modules: { unchanged: ['filter'] } });
    expect(r.s.core.modules[0].logLevel).toBe(0);
    r.rewrite(`log_level = 2\n${filter(' log = 2\n')}`);
    expect(await r.s.reload()).toMatchObject({ applied: ['log_level'], modules: { reloaded: ['filter'] } });
    expect(r.s.core.modules[0].logLevel).toBe(2);

    r.rewrite(`log_level = 2\nlog_format = json\n${filter(' log = 2\n')}`);
    expect(await r.s.reload()).toMatchObject({ applied: ['log_format'] });
    const json = r.lines.slice(-1)[0];
    expect(JSON.parse(json)).toMatchObject({ level: 'info', event: 'server.reloaded', applied: 'log_format' });
  });

  it('a module added in code without its own log level follows a reloaded log_level; one with a level keeps it', async () => {
    const r = await start('log_level = 1\n');
    const ctxs: Record<string, ModuleContext> = {};
    const keep = (name: string) => (ctx: ModuleContext) => ((ctxs[name] = ctx), {});
    await r.s.use('follows', keep('follows'));
    await r.s.use('own', keep('own'), { log: 0 });
    expect([ctxs.follows.logLevel, ctxs.own.logLevel]).toEqual([0, 0]);
    r.rewrite('log_level = 3\n');
    await r.s.reload();
    expect([ctxs.follows.logLevel, ctxs.own.logLevel]).toEqual([2, 0]);
    expect(r.s.core.modules.map((m) => [m.name, m.logLevel])).toEqual([['follows', 2], ['own', 0]]);
  });

  it('refuses a config that does not parse or has a bad value, with its code and file:line, and keeps the old settings in force', async () => {
    const r = await start('rate_limit = 1000\n');
    const alice = await loggedIn(r.s, await user(r.s, 'alice'));
    const bob = await loggedIn(r.s, await user(r.s, 'bob'));

    r.rewrite('rate_limit = 1\nrate_limit 5\n');
    await expect(r.s.reload()).rejects.toMatchObject({ code: 'E_CONFIG_EXPECTED_EQUALS', message: expect.stringContaining(`${r.file}:5`) });
    r.rewrite('rate_limit = 1\nmax_presence = many\n');
    await expect(r.s.reload()).rejects.toMatchObject({ code: 'E_CONFIG_BAD_VALUE', message: expect.stringContaining(`${r.file}:5: max_presence = "many"`) });
    // Neither file's rate_limit = 1, though it comes before the error, was applied.
    expect(r.s.settings.rateLimit).toBe(1000);
    const failed = r.events('server.reload_failed');
    expect(failed.map((l) => [l.severity, l.fields.code])).toEqual([
      ['error', 'E_CONFIG_EXPECTED_EQUALS'],
      ['error', 'E_CONFIG_BAD_VALUE'],
    ]);
    expect(failed[1].fields.error).toContain(`${r.file}:5`);
    expect(r.events('server.reloaded')).toHaveLength(0);

    for (let id = 1; id <= 20; id++) alice.ws.send(JSON.stringify({ op: 'msg', id, to: 'bob', data: `m${id}` }));
    await until(() => bob.frames.filter((f) => f.op === 'msg').length === 20);
    expect(limited(alice)).toBe(0);

    const metrics = await (await fetch(`http://127.0.0.1:${r.s.port}/metrics`)).text();
    expect(metrics).toContain('switchboard_reloads_total{result="ok"} 0');
    expect(metrics).toContain('switchboard_reloads_total{result="failed"} 2');
  });

  it('reports settings that need a restart and leaves them as they are, while applying the live ones beside them', async () => {
    const r = await start('max_presence = 256\n');
    const port = r.s.port;
    const other = tempDir();
    fs.writeFileSync(r.file, `listen = 127.0.0.1:1\ndata_dir = ${other}\napp_token = ${APP}\ndurable = off\nmax_message_size = 1000\nmetrics_listen = 127.0.0.1:0\nmax_presence = 2\n`);
    const report = await r.s.reload();
    expect(report).toMatchObject({ applied: ['max_presence'], restart: ['listen', 'data_dir', 'max_message_size', 'durable', 'metrics_listen'] });
    expect(r.s.settings).toMatchObject({ port: 0, durable: true, maxMessageSize: 65536, metricsListen: null, maxPresence: 2 });
    expect(r.events('server.reloaded')[0]).toMatchObject({ severity: 'warn', fields: { applied: 'max_presence', restart: 'listen,data_dir,max_message_size,durable,metrics_listen' } });
    expect((await fetch(`http://127.0.0.1:${port}/health`)).ok).toBe(true);
    expect(fs.readdirSync(other)).toEqual([]);

    // The live one is in force: a third presence subscription is refused.
    await user(r.s, 'a');
    await user(r.s, 'b');
    const c = await loggedIn(r.s, await user(r.s, 'c'));
    for (const to of ['a', 'b', 'c']) c.ws.send(JSON.stringify({ op: 'presence', id: 1, to }));
    await until(() => c.frames.some((f) => f.code === 'E_PRESENCE_LIMIT'));
  });

  it('keeps the overrides given to Server.start on top of the reloaded file', async () => {
    const r = await start('rate_limit = 1000\nuser_rate_limit = 2000\n', { rateLimit: 7 });
    r.rewrite('rate_limit = 500\nuser_rate_limit = 2000\nmax_presence = 3\n');
    expect(await r.s.reload()).toMatchObject({ applied: ['max_presence'], restart: [] });
    expect(r.s.settings.rateLimit).toBe(7);
  });

  it('applies the limits the rooms read later: inbox caps, presence policy, connection caps, metrics_token', async () => {
    const r = await start('max_inbox_messages = 100\n');
    await user(r.s, 'bob');
    const token = await user(r.s, 'alice');
    const alice = await loggedIn(r.s, token);
    alice.ws.send(JSON.stringify({ op: 'msg', id: 1, to: 'bob', data: 'one' }));
    await until(() => sent(alice) === 1);
    r.rewrite('max_inbox_messages = 1\npresence = none\nmax_connections_per_user = 1\n');
    expect((await r.s.reload()).applied).toEqual(['max_connections_per_user', 'presence', 'max_inbox_messages']);
    alice.ws.send(JSON.stringify({ op: 'msg', id: 2, to: 'bob', data: 'two' }));
    await until(() => alice.frames.some((f) => f.op === 'status' && f.id === 2));
    expect(alice.frames.find((f) => f.op === 'status' && f.id === 2)).toMatchObject({ status: 0x82 });
    alice.ws.send(JSON.stringify({ op: 'presence', id: 3, to: 'bob' }));
    await until(() => alice.frames.some((f) => f.code === 'E_PRESENCE_DENIED'));
    // alice is at the new cap of one connection: a second login is refused, the first stays.
    const second = new WebSocket(`ws://127.0.0.1:${r.s.port}/?token=${token}`);
    sockets.push(second);
    second.on('error', () => {});
    expect(await new Promise((res) => second.on('close', (code) => res(code)))).toBe(4029);
    expect(alice.closed).toBe(false);

    r.rewrite('max_inbox_messages = 1\npresence = none\nmax_connections_per_user = 1\nmax_connections = 1\nmetrics_token = scrape-me\n');
    expect((await r.s.reload()).applied).toEqual(['max_connections', 'metrics_token']);
    expect(r.s.stats.connectionCap).toBe(1);
    // The open connection stays; a new one is refused at the upgrade.
    const third = new WebSocket(`ws://127.0.0.1:${r.s.port}/`);
    sockets.push(third);
    third.on('error', () => {});
    expect(await new Promise((res) => third.on('unexpected-response', (_q, resp) => res(resp.statusCode)))).toBe(503);
    expect(alice.closed).toBe(false);
    const metrics = (token?: string) => fetch(`http://127.0.0.1:${r.s.port}/metrics`, { headers: token ? { Authorization: `Bearer ${token}` } : {} }).then((x) => x.status);
    expect(await metrics()).toBe(401);
    expect(await metrics('scrape-me')).toBe(200);
  });

  it('durable_grace 0 after a reload writes every copy before delivery, where a 1 s grace wrote none', async () => {
    const r = await start('durable_grace = 1000\n');
    const alice = await loggedIn(r.s, await user(r.s, 'alice'));
    const bob = await loggedIn(r.s, await user(r.s, 'bob'));
    for (let id = 1; id <= 10; id++) alice.ws.send(JSON.stringify({ op: 'msg', id, to: 'bob', data: 'x' }));
    await until(() => sent(alice) === 10);
    expect(r.s.metrics.copiesStored).toBe(0); // bob confirmed each within the grace
    r.rewrite('durable_grace = 0\n');
    expect((await r.s.reload()).applied).toEqual(['durable_grace']);
    for (let id = 11; id <= 20; id++) alice.ws.send(JSON.stringify({ op: 'msg', id, to: 'bob', data: 'x' }));
    await until(() => sent(alice) === 20);
    expect(r.s.metrics.copiesStored).toBe(10);
    await until(() => bob.frames.filter((f) => f.op === 'msg').length === 20);
  });

  it('a shortened login_timeout closes sockets that were already waiting to log in', async () => {
    const r = await start('login_timeout = 60\n');
    const idle = new WebSocket(`ws://127.0.0.1:${r.s.port}/`);
    sockets.push(idle);
    idle.on('error', () => {});
    const closed = new Promise((res) => idle.on('close', (code) => res(code)));
    await new Promise((res) => idle.on('open', res));
    r.rewrite('login_timeout = 1\n');
    expect((await r.s.reload()).applied).toEqual(['login_timeout']);
    expect(await closed).toBe(4008);
    expect(r.s.stats.loginTimeouts).toBe(1);
  });

  it('takes new text for a server started from config text, and reads that text on the next reload', async () => {
    const head = `listen = 127.0.0.1:0\ndata_dir = ${tempDir()}\n`;
    const s = await Server.start({ configText: `${head}max_presence = 5\n`, log: () => {} });
    running.push(s);
    expect(await s.reload()).toMatchObject({ config: '<inline>', applied: [], restart: [] });
    await expect(s.reload({ configText: `${head}max_presence = -1\n` })).rejects.toMatchObject({ code: 'E_CONFIG_BAD_VALUE', message: expect.stringContaining('<inline>:3') });
    expect(await s.reload({ configText: `${head}max_presence = 9\n` })).toMatchObject({ applied: ['max_presence'] });
    expect(await s.reload()).toMatchObject({ applied: [] });
    expect(s.settings.maxPresence).toBe(9);
  });

  it('rejects after the server stopped', async () => {
    const r = await start();
    await running.pop()!.stop();
    await expect(r.s.reload()).rejects.toMatchObject({ code: 'E_CORE_CLOSED' });
  });
});

describe('the API op reload', () => {
  it('needs the app token, answers the report, and rotates app_token', async () => {
    const r = await start('rate_limit = 1000\n');
    const post = async (token: string | null, body: Record<string, unknown>) => {
      const res = await fetch(`http://127.0.0.1:${r.s.port}/api`, { method: 'POST', headers: token ? { Authorization: `Bearer ${token}` } : {}, body: JSON.stringify(body) });
      return { status: res.status, body: (await res.json()) as Record<string, unknown> };
    };
    expect(await post(null, { op: 'reload' })).toMatchObject({ status: 401, body: { ok: false, code: 'E_UNAUTHORIZED' } });
    expect(await post('wrong', { op: 'reload' })).toMatchObject({ status: 401, body: { ok: false, code: 'E_UNAUTHORIZED' } });
    expect(await post(APP, { op: 'reload' })).toEqual({ status: 200, body: { ok: true, config: r.file, applied: [], restart: [], modules: { reloaded: [], unchanged: [], failed: [], restart: [] } } });

    r.rewrite('rate_limit = x\n');
    expect(await post(APP, { op: 'reload' })).toMatchObject({ status: 422, body: { ok: false, code: 'E_CONFIG_BAD_VALUE', message: expect.stringContaining(`${r.file}:4: rate_limit = "x"`) } });

    // The answer to the reload that rotates the token still goes to the old one's holder.
    r.rewrite('rate_limit = 1000\n', 'rotated-token');
    expect(await post(APP, { op: 'reload' })).toMatchObject({ status: 200, body: { ok: true, applied: ['app_token'] } });
    expect(await post(APP, { op: 'users' })).toMatchObject({ status: 401, body: { code: 'E_UNAUTHORIZED' } });
    expect(await post('rotated-token', { op: 'users' })).toMatchObject({ status: 200, body: { ok: true } });
  });
});

describe('messages during reloads', () => {
  it('are all delivered, once each and in order, while the config is reloaded over and over', async () => {
    const r = await start('rate_limit = 100000\nuser_rate_limit = 100000\n');
    const alice = await loggedIn(r.s, await user(r.s, 'alice'));
    const bob = await loggedIn(r.s, await user(r.s, 'bob'));
    const N = 3000;
    let next = 1;
    let reloads = 0;
    const sender = (async () => {
      while (next <= N) {
        for (let i = 0; i < 50 && next <= N; i++, next++) alice.ws.send(JSON.stringify({ op: 'msg', id: next, to: 'bob', data: `m${next}` }));
        await sleep(2);
      }
    })();
    while (next <= N) {
      r.rewrite(`rate_limit = 100000\nuser_rate_limit = 100000\nmax_presence = ${100 + (reloads % 7)}\nlog_level = ${reloads % 2}\n`);
      await r.s.reload();
      reloads++;
      await sleep(5);
    }
    await sender;
    await until(() => sent(alice) === N);
    await until(() => bob.frames.filter((f) => f.op === 'msg').length >= N);
    await sleep(200); // a duplicate would come after
    const ids = bob.frames.filter((f) => f.op === 'msg').map((f) => f.id as number);
    expect(ids).toEqual(Array.from({ length: N }, (_, i) => i + 1));
    expect(reloads).toBeGreaterThan(5);
    expect(limited(alice)).toBe(0);
  });
});

describe('SIGHUP', () => {
  it('reloads the file of a running switchboard process, which stays up through a bad file too', async () => {
    const dir = tempDir();
    const file = path.join(dir, 'mesibo.conf');
    const head = `listen = 127.0.0.1:0\ndata_dir = ./data\napp_token = ${APP}\n`;
    fs.writeFileSync(file, `${head}log_level = 1\n`);
    const child = reap(spawn(process.execPath, [path.join(root, 'dist', 'cli.js'), '--config', file], { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] }));
    let err = '';
    child.stderr!.on('data', (d) => (err += d));
    const exit = new Promise<number | null>((res) => child.on('exit', (code) => res(code)));
    await until(() => /server\.listening url=ws:\/\/127\.0\.0\.1:\d+/.test(err));
    const port = Number(/server\.listening url=ws:\/\/127\.0\.0\.1:(\d+)/.exec(err)![1]);

    fs.writeFileSync(file, `${head}log_level = 2\n`);
    child.kill('SIGHUP');
    await until(() => err.includes('server.reloaded'));
    expect(err).toMatch(/ info  server\.signal signal=SIGHUP action="reloading the configuration"\n/);
    expect(err).toMatch(/ info  server\.reloaded config=\S+ applied=log_level\n/);
    // log_level 2 is in force: the API call is logged.
    await apiCall(port, APP, { op: 'users' });
    await until(() => err.includes('api.call op=users'));

    fs.writeFileSync(file, `${head}log_level = loud\n`);
    child.kill('SIGHUP');
    await until(() => err.includes('server.reload_failed'));
    expect(err).toMatch(/ error server\.reload_failed config=\S+ code=E_CONFIG_BAD_VALUE error=".*mesibo\.conf:4: log_level = \\"loud\\"/);
    expect(child.exitCode).toBe(null);
    expect(await (await fetch(`http://127.0.0.1:${port}/health`)).json()).toMatchObject({ ok: true });

    child.kill('SIGTERM');
    expect(await exit).toBe(0);
  });
});

describe('module blocks', () => {
  it('a changed item reloads that module while messages flow, without dropping a connection; a failing init keeps the old instance', async () => {
    const block = (words: string | null) => `module_dir = ${path.join(root, 'build', 'modules')}\nrate_limit = 100000\nuser_rate_limit = 100000\nmodule filter {\n${words === null ? '' : ` blocked_words = ${words}\n`}}\n`;
    const r = await start(block('spam'));
    const alice = await loggedIn(r.s, await user(r.s, 'alice'));
    const bob = await loggedIn(r.s, await user(r.s, 'bob'));
    const texts = () => bob.frames.filter((f) => f.op === 'msg').map((f) => f.data as string);
    let id = 1;
    const say = (data: string) => alice.ws.send(JSON.stringify({ op: 'msg', id: id++, to: 'bob', data }));

    say('a scam');
    await until(() => texts().includes('a scam'));

    // Plain messages keep going while the module is swapped.
    let flowing = true;
    let n = 0;
    const sender = (async () => {
      while (flowing) {
        for (let i = 0; i < 20; i++) say(`m${++n}`);
        await sleep(2);
      }
    })();
    await sleep(20);
    r.rewrite(block('spam, scam'));
    const report = await r.s.reload();
    await sleep(20);
    flowing = false;
    await sender;
    expect(report).toMatchObject({ applied: [], restart: [], modules: { reloaded: ['filter'], unchanged: [], failed: [], restart: [] } });
    expect(r.events('server.reloaded')[0].fields).toMatchObject({ applied: 'none', modules_reloaded: 'filter' });

    say('another scam');
    say('after');
    await until(() => texts().includes('after'));
    expect(texts()).not.toContain('another scam');
    const plain = texts().filter((t) => /^m\d+$/.test(t));
    expect(plain).toEqual(Array.from({ length: n }, (_, i) => `m${i + 1}`));
    expect(alice.closed || bob.closed).toBe(false);
    expect([...alice.frames, ...bob.frames].filter((f) => f.op === 'hello')).toHaveLength(2);

    // A block the module's init refuses: the old instance (spam, scam) stays.
    r.rewrite(block(null));
    const failed = await r.s.reload();
    expect(failed.modules).toMatchObject({ reloaded: [], failed: [{ module: 'filter', code: 'E_MODULE_INIT_FAILED' }] });
    expect(r.events('server.reloaded')[1]).toMatchObject({ severity: 'warn', fields: { modules_failed: expect.stringContaining('filter (E_MODULE_INIT_FAILED') } });
    say('scam again');
    say('last');
    await until(() => texts().includes('last'));
    expect(texts()).not.toContain('scam again');
  });
});
