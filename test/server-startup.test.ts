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
