// Starting and stopping the server: the embedded defaults, one clear error
// per bad start-up, a clean drain on SIGTERM.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { Server } from '../lib/index';
import { reap, root, tempDir } from './helpers';

const modules = path.join(root, 'build', 'modules');

function quiet(): (line: string) => void {
  return () => {};
}

describe('Server.start', () => {
  it('listens, answers /health and stops', async () => {
    const dir = tempDir();
    const server = await Server.start({ configText: `listen = 127.0.0.1:0\ndata_dir = ${dir}\nmodule_dir = ${modules}\nmodule filter {\n blocked_words = x\n}\n`, log: quiet() });
    expect(server.port).toBeGreaterThan(0);
    const health = await (await fetch(`http://127.0.0.1:${server.port}/health`)).json();
    expect(health).toMatchObject({ ok: true, connections: 0, modules: 1 });
    expect(fs.existsSync(path.join(dir, 'switchboard.db'))).toBe(true);
    await server.stop();
  });

  it('refuses a busy port with E_LISTEN', async () => {
    const blocker = net.createServer().listen(0, '127.0.0.1');
    await new Promise((r) => blocker.once('listening', r));
    const port = (blocker.address() as net.AddressInfo).port;
    await expect(Server.start({ configText: `listen = 127.0.0.1:${port}\ndata_dir = ${tempDir()}\n`, log: quiet() })).rejects.toMatchObject({ code: 'E_LISTEN' });
    blocker.close();
  });

  it('refuses an unwritable data folder with E_DATA_DIR', async () => {
    const file = path.join(tempDir(), 'a-file');
    fs.writeFileSync(file, 'x');
    await expect(Server.start({ configText: `listen = 127.0.0.1:0\ndata_dir = ${file}/sub\n`, log: quiet() })).rejects.toMatchObject({ code: 'E_DATA_DIR' });
  });

  it('refuses bad settings with file and line', async () => {
    await expect(Server.start({ configText: 'listen = nowhere\n', configFile: 'x.conf', log: quiet() })).rejects.toMatchObject({ code: 'E_CONFIG_BAD_VALUE', line: 1 });
    await expect(Server.start({ configText: 'listen = 127.0.0.1:0\nrate_limit = fast\n', log: quiet() })).rejects.toMatchObject({ code: 'E_CONFIG_BAD_VALUE', line: 2 });
    await expect(Server.start({ configText: 'listen = 127.0.0.1:0\ntls_cert = /nonexistent.pem\n', log: quiet() })).rejects.toMatchObject({ code: 'E_CONFIG_BAD_VALUE' });
  });

  it('refuses a cluster without the shared PostgreSQL store, a cluster URL that is not nats://HOST:PORT, and a node name subjects cannot carry', async () => {
    const pg = 'store = postgresql://u@127.0.0.1:1/db\n';
    await expect(Server.start({ configText: 'listen = 127.0.0.1:0\ncluster = nats://127.0.0.1:4222\n', log: quiet() })).rejects.toMatchObject({ code: 'E_CONFIG_BAD_VALUE', message: expect.stringContaining('store = postgresql://') });
    for (const bad of ['127.0.0.1:4222', 'nats://127.0.0.1', 'nats://127.0.0.1:4222,http://x:1']) {
      await expect(Server.start({ configText: `listen = 127.0.0.1:0\n${pg}cluster = ${bad}\n`, log: quiet() })).rejects.toMatchObject({ code: 'E_CONFIG_BAD_VALUE', line: 3 });
    }
    await expect(Server.start({ configText: `listen = 127.0.0.1:0\n${pg}cluster = nats://127.0.0.1:4222\nnode = two words\n`, log: quiet() })).rejects.toMatchObject({ code: 'E_CONFIG_BAD_VALUE', line: 4 });
  });
});

// A start that fails after the store opened, in a process of its own so
// that what it leaves open is all there is to see. The store is the real
// SQLite store behind a close that completes a moment later. Prints the
// order of events, the process's libuv resources before and after, and the
// file descriptors still open on data_dir.
const START_FAILS = `'use strict';
const fs = require('node:fs');
const net = require('node:net');
const { Server } = require(${JSON.stringify(path.join(root, 'dist', 'index.js'))});
const { SqliteStore } = require(${JSON.stringify(path.join(root, 'dist', 'store', 'sqlite.js'))});
const [dir, how] = process.argv.slice(2);
const events = [];
function openStore(file) {
  const inner = SqliteStore.open(file);
  return new Proxy(inner, {
    get(t, k) {
      if (k === 'close') return () => new Promise((r) => setTimeout(() => { t.close(); events.push('store closed'); r(); }, 50));
      const v = t[k];
      return typeof v === 'function' ? v.bind(t) : v;
    },
  });
}
const fdsOn = (d) => fs.readdirSync('/proc/self/fd').filter((fd) => { try { return fs.readlinkSync('/proc/self/fd/' + fd).startsWith(d); } catch { return false; } });
(async () => {
  const blocker = net.createServer().listen(0, '127.0.0.1');
  await new Promise((r) => blocker.once('listening', r));
  const busy = blocker.address().port;
  let conf = 'data_dir = ' + dir + '/data\\n';
  if (how === 'listen') conf += 'listen = 127.0.0.1:' + busy + '\\n';
  else if (how === 'metrics_listen') conf += 'listen = 127.0.0.1:0\\nmetrics_listen = 127.0.0.1:' + busy + '\\n';
  else if (how === 'module') conf += 'listen = 127.0.0.1:0\\nmodule_dir = ' + dir + '\\nmodule missing {\\n}\\n';
  else {
    fs.writeFileSync(dir + '/bad.js', "module.exports = { init() { throw new Error('init fails'); } };\\n");
    conf += 'listen = 127.0.0.1:0\\nmodule bad {\\n module_script = ' + dir + '/bad.js\\n}\\n';
  }
  const before = process.getActiveResourcesInfo().sort();
  try {
    await Server.start({ configText: conf, log: () => {}, openStore });
    events.push('started');
  } catch (e) {
    events.push('rejected ' + e.code);
  }
  const after = process.getActiveResourcesInfo().sort();
  const fds = fdsOn(dir + '/data').length;
  blocker.close();
  process.stdout.write(JSON.stringify({ events, before, after, fds }) + '\\n');
})();
`;

describe('a start that fails after the store opened', () => {
  const script = path.join(tempDir(), 'start-fails.js');
  fs.writeFileSync(script, START_FAILS);

  // A module that is not there fails before the server is built; a module
  // whose init throws, a busy port and a busy metrics port fail after.
  it.each(['module', 'init', 'listen', 'metrics_listen'])('(%s) rejects only once the store has closed, and leaves nothing open', async (how) => {
    const dir = tempDir();
    const child = reap(spawn(process.execPath, [script, dir, how], { stdio: ['ignore', 'pipe', 'pipe'] }));
    let out = '';
    child.stdout!.on('data', (d) => (out += d));
    child.stderr!.on('data', (d) => (out += d));
    // Nothing left open: the process ends by itself.
    const code = await new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
    expect({ code, out }).toMatchObject({ code: 0 });
    const r = JSON.parse(out) as { events: string[]; before: string[]; after: string[]; fds: number };
    expect(r.events).toEqual(['store closed', expect.stringMatching(/^rejected E_(MODULE_NOT_FOUND|SCRIPT_INIT_FAILED|LISTEN)$/)]);
    expect(r.after).toEqual(r.before);
    expect(r.fds).toBe(0);
  });
});

describe('node server.js', () => {
  function run(args: string[], cwd: string): { child: ReturnType<typeof spawn>; out: () => string; exit: Promise<number | null> } {
    const child = reap(spawn(process.execPath, [path.join(root, 'server.js'), ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'] }));
    let out = '';
    child.stdout!.on('data', (d) => (out += d));
    child.stderr!.on('data', (d) => (out += d));
    const exit = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    return { child, out: () => out, exit };
  }

  it('logs its start and listen address, and drains on SIGTERM: on_cleanup runs, exit 0', async () => {
    const dir = tempDir();
    fs.writeFileSync(path.join(dir, 'mesibo.conf'), `listen = 127.0.0.1:0\nmodule_dir = ${modules}\nmodule skeleton {\n log = 1\n}\n`);
    const p = run([], dir);
    const end = Date.now() + 15_000;
    while (!p.out().includes('server.listening') && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
    expect(p.out()).toMatch(/ info  server\.listening url=ws:\/\/127\.0\.0\.1:\d+ modules=skeleton store=\S*data\/switchboard\.db durable=on log_level=1\n/);
    p.child.kill('SIGTERM');
    expect(await p.exit).toBe(0);
    expect(p.out()).toContain('cleanup after 0 messages');
    expect(fs.existsSync(path.join(dir, 'data', 'switchboard.db'))).toBe(true);
  });

  it('stops with one clear line and exit 1 on a bad config', async () => {
    const dir = tempDir();
    fs.writeFileSync(path.join(dir, 'bad.conf'), 'module filter {\n');
    const p = run(['--config', path.join(dir, 'bad.conf')], dir);
    expect(await p.exit).toBe(1);
    expect(p.out().trim().split('\n')).toHaveLength(1);
    expect(p.out()).toMatch(/^switchboard: cannot start: .*bad\.conf:1: .*\[E_CONFIG_UNCLOSED_BLOCK\]/);
  });
});
