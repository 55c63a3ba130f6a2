// The `switchboard` command, run as a user runs it: a spawned process per
// case, its exit code and what it printed. A command line it cannot read is
// exit 2 with the usage and never a started server; SIGHUP reloads and
// leaves the server serving (test/reload.test.ts has the rest); SIGTERM
// drains and exits 0.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { root } from './helpers';

const cli = path.join(root, 'dist', 'cli.js');
const modules = path.join(root, 'build', 'modules');
const version = (JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { version: string }).version;

const made: string[] = [];
afterAll(() => {
  for (const d of made) fs.rmSync(d, { recursive: true, force: true });
});
function scratch(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'sb-cli-'));
  made.push(d);
  return d;
}

interface Run {
  child: ReturnType<typeof spawn>;
  out: () => string;
  err: () => string;
  exit: Promise<number | null>;
}

function run(args: string[], cwd: string, env: NodeJS.ProcessEnv = {}, script = cli): Run {
  const childEnv = { ...process.env, ...env };
  if (!('MESIBO_CONF' in env)) delete childEnv.MESIBO_CONF;
  const child = spawn(process.execPath, [script, ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'], env: childEnv });
  let out = '';
  let err = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (err += d));
  const exit = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  return { child, out: () => out, err: () => err, exit };
}

/** Resolves with the port once the server logged that it listens (or rejects with what it printed). */
async function listening(p: Run): Promise<number> {
  const end = Date.now() + 20_000;
  let exited = false;
  void p.exit.then(() => (exited = true));
  for (;;) {
    const m = /server\.listening url=ws:\/\/127\.0\.0\.1:(\d+)/.exec(p.err());
    if (m) return Number(m[1]);
    if (exited || Date.now() > end) throw new Error(`the server did not start:\n${p.err()}${p.out()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function config(dir: string, name = 'mesibo.conf'): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, `listen = 127.0.0.1:0\ndata_dir = ./data\nmodule_dir = ${modules}\nmodule echo {\n address = echo\n}\n`);
  return file;
}

async function health(port: number): Promise<unknown> {
  return (await fetch(`http://127.0.0.1:${port}/health`)).json();
}

describe('switchboard --help and --version', () => {
  it('--help prints the usage and exits 0', async () => {
    const p = run(['--help'], scratch());
    expect(await p.exit).toBe(0);
    expect(p.out()).toMatch(/^Usage:\n {2}switchboard \[--config FILE\]/);
    expect(p.out()).toContain('switchboard init [--force]');
    expect(p.err()).toBe('');
  });

  it('-h is --help', async () => {
    const p = run(['-h'], scratch());
    expect(await p.exit).toBe(0);
    expect(p.out()).toMatch(/^Usage:/);
  });

  it('--version prints the package version and exits 0', async () => {
    const p = run(['--version'], scratch());
    expect(await p.exit).toBe(0);
    expect(p.out()).toBe(`switchboard ${version} (node ${process.version})\n`);
  });
});

describe('a command line the CLI cannot read: exit 2, the usage, no server', () => {
  const cases: [string, string[], RegExp][] = [
    ['an unknown flag', ['--bogus'], /^switchboard: unknown option "--bogus"\n\nUsage:/],
    ['an unknown short flag', ['-x'], /^switchboard: unknown option "-x"\n\nUsage:/],
    ['--config without its file', ['--config'], /^switchboard: Option '-c, --config <value>' argument missing\n\nUsage:/],
    ['an unknown command', ['start'], /^switchboard: unknown command "start"\n\nUsage:/],
    ['an argument after init', ['init', 'here'], /^switchboard: unexpected argument "here"\n\nUsage:/],
    ['--force without init', ['--force'], /^switchboard: --force goes with init only\n\nUsage:/],
    ['a value given to a boolean flag', ['--help=yes'], /^switchboard: .*--help.*\n\nUsage:/],
  ];
  for (const [what, args, expected] of cases) {
    it(`${what} (${args.join(' ')})`, async () => {
      const dir = scratch();
      config(dir); // a config is there: a lenient parser would start a server
      const p = run(args, dir);
      expect(await p.exit).toBe(2);
      expect(p.err()).toMatch(expected);
      expect(p.err()).not.toContain('listening');
      expect(p.out()).toBe('');
      expect(fs.existsSync(path.join(dir, 'data'))).toBe(false);
    });
  }
});

describe('switchboard [--config FILE]', () => {
  it('--config FILE starts with that file; SIGTERM exits 0', async () => {
    const dir = scratch();
    const file = config(dir, 'other.conf');
    const p = run(['--config', file], scratch());
    const port = await listening(p);
    expect(await health(port)).toMatchObject({ ok: true, modules: 1 });
    p.child.kill('SIGTERM');
    expect(await p.exit).toBe(0);
    expect(fs.existsSync(path.join(dir, 'data', 'switchboard.db'))).toBe(true);
  });

  it('--config=FILE and -c FILE are the same', async () => {
    for (const args of [(f: string) => [`--config=${f}`], (f: string) => ['-c', f]]) {
      const dir = scratch();
      const p = run(args(config(dir, 'x.conf')), scratch());
      const port = await listening(p);
      expect(p.err()).toMatch(/modules=echo store=\S*data\/switchboard\.db/);
      expect(await health(port)).toMatchObject({ ok: true });
      p.child.kill('SIGTERM');
      expect(await p.exit).toBe(0);
      expect(fs.existsSync(path.join(dir, 'data', 'switchboard.db'))).toBe(true);
    }
  });

  it('without --config: $MESIBO_CONF, else ./mesibo.conf', async () => {
    const viaEnv = scratch();
    const p1 = run([], scratch(), { MESIBO_CONF: config(viaEnv, 'env.conf') });
    await listening(p1);
    p1.child.kill('SIGTERM');
    expect(await p1.exit).toBe(0);
    expect(fs.existsSync(path.join(viaEnv, 'data', 'switchboard.db'))).toBe(true);

    const cwd = scratch();
    config(cwd);
    const p2 = run([], cwd);
    await listening(p2);
    p2.child.kill('SIGINT');
    expect(await p2.exit).toBe(0);
    expect(fs.existsSync(path.join(cwd, 'data', 'switchboard.db'))).toBe(true);
  });

  it('node server.js is the same command', async () => {
    const dir = scratch();
    const p = run(['--config', config(dir)], dir, {}, path.join(root, 'server.js'));
    await listening(p);
    p.child.kill('SIGTERM');
    expect(await p.exit).toBe(0);
    const v = run(['--version'], dir, {}, path.join(root, 'server.js'));
    expect(await v.exit).toBe(0);
    expect(v.out()).toContain(`switchboard ${version}`);
  });

  it('no mesibo.conf here: exit 1 with a line that says to run init', async () => {
    const p = run([], scratch());
    expect(await p.exit).toBe(1);
    expect(p.err()).toMatch(/^switchboard: cannot start: .*mesibo\.conf: no configuration file here; run `npx switchboard init` .*\[E_CONFIG_READ\]\n$/);
  });
});

describe('switchboard init', () => {
  it('writes a starter mesibo.conf and data/ that start the sample chain', async () => {
    const dir = scratch();
    const p = run(['init'], dir);
    expect(await p.exit).toBe(0);
    expect(p.out()).toContain(`wrote ${path.join(dir, 'mesibo.conf')}`);
    const token = /app_token \(for POST \/api\): (\S+)/.exec(p.out())![1];
    expect(token.length).toBeGreaterThanOrEqual(20);
    const text = fs.readFileSync(path.join(dir, 'mesibo.conf'), 'utf8');
    expect(text).toContain(`app_token = ${token}`);
    expect(text).toContain('listen = 127.0.0.1:5222');
    expect(text).toContain(`module_dir = ${modules}`);
    expect(fs.statSync(path.join(dir, 'data')).isDirectory()).toBe(true);

    // Started as written but on a free port (5222 may be taken on a shared machine).
    fs.writeFileSync(path.join(dir, 'mesibo.conf'), text.replace('listen = 127.0.0.1:5222', 'listen = 127.0.0.1:0'));
    const s = run([], dir);
    const port = await listening(s);
    expect(s.err()).toMatch(/server\.listening url=\S+ modules=filter,echo /);
    const res = await fetch(`http://127.0.0.1:${port}/api`, { method: 'POST', headers: { Authorization: `Bearer ${token}` }, body: JSON.stringify({ op: 'useradd', address: 'alice' }) });
    expect(await res.json()).toMatchObject({ ok: true });
    s.child.kill('SIGTERM');
    expect(await s.exit).toBe(0);
  });

  it('refuses to overwrite an existing mesibo.conf (exit 1) unless --force', async () => {
    const dir = scratch();
    fs.writeFileSync(path.join(dir, 'mesibo.conf'), 'listen = 127.0.0.1:1\n');
    const p = run(['init'], dir);
    expect(await p.exit).toBe(1);
    expect(p.err()).toMatch(/mesibo\.conf already exists; keep it, or run `switchboard init --force` .*\[E_INIT_EXISTS\]/);
    expect(fs.readFileSync(path.join(dir, 'mesibo.conf'), 'utf8')).toBe('listen = 127.0.0.1:1\n');
    expect(fs.existsSync(path.join(dir, 'data'))).toBe(false);

    const f = run(['init', '--force'], dir);
    expect(await f.exit).toBe(0);
    expect(fs.readFileSync(path.join(dir, 'mesibo.conf'), 'utf8')).toContain('module echo {');
  });

  it('--config does not go with init (exit 2)', async () => {
    const dir = scratch();
    const p = run(['init', '--config', 'x.conf'], dir);
    expect(await p.exit).toBe(2);
    expect(fs.existsSync(path.join(dir, 'mesibo.conf'))).toBe(false);
  });
});

describe('signals', () => {
  it('SIGHUP reloads the configuration and the server keeps serving; SIGTERM then exits 0 and leaves no WAL', async () => {
    const dir = scratch();
    const p = run(['--config', config(dir)], dir);
    const port = await listening(p);
    p.child.kill('SIGHUP');
    const end = Date.now() + 5000;
    while (!p.err().includes('server.reloaded') && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
    expect(p.err()).toMatch(/ info  server\.signal signal=SIGHUP action="reloading the configuration"\n/);
    expect(p.err()).toMatch(/ info  server\.reloaded config=\S+ applied=none\n/);
    expect(await health(port)).toMatchObject({ ok: true });
    expect(p.child.exitCode).toBe(null);
    p.child.kill('SIGTERM');
    expect(await p.exit).toBe(0);
    // A clean close checkpoints SQLite's write-ahead log into the database
    // and deletes it (and its -shm index); SIGHUP's default, exit 129, left both.
    expect(fs.readdirSync(path.join(dir, 'data')).sort()).toEqual(['switchboard.db']);
  });
});
