// A real PostgreSQL 15 for tests and the store bench: Debian's initdb and
// postgres, in a temporary folder, on a free loopback port, with its unix
// socket in that folder too. PostgreSQL refuses to run as root, and CI runs
// as root: then the server runs as `nobody` through setpriv, which execs in
// place, so the child's PID is the postmaster's and stop() signals it
// directly. Self-contained (Node built-ins and pg only), so bench/store.mjs
// can load it as well.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Client } from 'pg';

export interface PgServer {
  readonly port: number;
  /** The superuser the store logs in as (password authentication over TCP). */
  readonly user: string;
  readonly password: string;
  /** postgresql://USER:PASSWORD@127.0.0.1:PORT/DB, or without the password (for PGPASSWORD). */
  url(db: string, withPassword?: boolean): string;
  /** A new empty database; returns its name. */
  createDatabase(): Promise<string>;
  /** Runs one statement as the superuser in `db`. */
  query(db: string, sql: string, values?: unknown[]): Promise<Record<string, unknown>[]>;
  /** Whether the server process is running. */
  readonly running: boolean;
  /** Stops the server at once, as a crash would: no checkpoint, connections cut. */
  stop(): Promise<void>;
  /** Starts it again on the same port and data; resolves once it accepts connections. */
  start(): Promise<void>;
  /** Stops the server and removes its folder. */
  close(): Promise<void>;
}

/**
 * The environment PostgreSQL's programs run with: without the AddressSanitizer
 * preload of CI's ASan run (.ci/run), which is for the addon inside node,
 * not for a database server that forks a process per connection.
 */
function serverEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env.LD_PRELOAD;
  return env;
}

/** The folder holding initdb and postgres, or null when PostgreSQL 15 is not installed. */
export function postgresBinDir(): string | null {
  const fromConfig = spawnSync('pg_config', ['--bindir'], { encoding: 'utf8', env: serverEnv() });
  for (const dir of [fromConfig.status === 0 ? fromConfig.stdout.trim() : '', '/usr/lib/postgresql/15/bin']) {
    if (dir && fs.existsSync(path.join(dir, 'initdb')) && fs.existsSync(path.join(dir, 'postgres'))) return dir;
  }
  return null;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

/** The user PostgreSQL runs as: `nobody` when we are root (initdb and postgres refuse root), else ourselves. */
interface RunAs {
  uid?: number;
  gid?: number;
  /** [file, args] that run `file` as that user: setpriv execs in place, so the PID stays the program's. */
  command(file: string, args: string[]): [string, string[]];
}

function runAs(): RunAs {
  if (process.getuid?.() !== 0) return { command: (file, args) => [file, args] };
  const id = (flag: string): number => Number(spawnSync('id', [flag, 'nobody'], { encoding: 'utf8' }).stdout.trim());
  const uid = id('-u');
  const gid = id('-g');
  return { uid, gid, command: (file, args) => ['setpriv', [`--reuid=${uid}`, `--regid=${gid}`, '--clear-groups', file, ...args]] };
}

export interface StartOptions {
  /**
   * Whether commits wait for the disk (PostgreSQL's default). Tests turn it
   * off to spare the shared machine: a stop() still loses nothing committed,
   * since it kills PostgreSQL and not the OS. The bench keeps it on.
   */
  fsync?: boolean;
}

export async function startPostgres(opts: StartOptions = {}): Promise<PgServer> {
  const bin = postgresBinDir();
  if (!bin) throw new Error('PostgreSQL 15 is not installed (no initdb in `pg_config --bindir` nor /usr/lib/postgresql/15/bin): apt-get install postgresql');
  const who = runAs();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sb-pg-'));
  const data = path.join(dir, 'data');
  const sockets = path.join(dir, 'sockets');
  fs.mkdirSync(data, { mode: 0o700 });
  fs.mkdirSync(sockets);
  const user = 'switchboard';
  const password = randomBytes(12).toString('hex');
  const pwfile = path.join(dir, 'password');
  fs.writeFileSync(pwfile, `${password}\n`);
  if (who.uid !== undefined) {
    // nobody must reach its folders through the root-owned temp folder.
    fs.chmodSync(dir, 0o755);
    fs.chmodSync(pwfile, 0o644);
    for (const d of [data, sockets]) fs.chownSync(d, who.uid, who.gid!);
  }

  const init = spawnSync(
    ...who.command(path.join(bin, 'initdb'), ['-D', data, '-U', user, `--pwfile=${pwfile}`, '--auth-local=trust', '--auth-host=scram-sha-256', '-E', 'UTF8', '--locale=C', '--no-sync']),
    { encoding: 'utf8', env: serverEnv() },
  );
  if (init.status !== 0) {
    fs.rmSync(dir, { recursive: true, force: true });
    throw new Error(`initdb failed (${init.status ?? init.signal}): ${init.stderr || init.stdout}`);
  }

  let port = await freePort();
  let child: ChildProcess | undefined;
  let log = '';
  const killOnExit = (): void => {
    child?.kill('SIGKILL');
  };
  process.on('exit', killOnExit);

  const url = (db: string, withPassword = true): string => `postgresql://${user}${withPassword ? `:${password}` : ''}@127.0.0.1:${port}/${db}`;
  const query = async (db: string, sql: string, values?: unknown[]): Promise<Record<string, unknown>[]> => {
    // Bounded: a port that accepts but never answers must not hang the caller.
    const c = new Client({ connectionString: url(db), connectionTimeoutMillis: 5_000, query_timeout: 60_000 });
    await c.connect();
    try {
      return (await c.query(sql, values)).rows;
    } finally {
      await c.end();
    }
  };

  const start = async (): Promise<void> => {
    if (child) throw new Error('PostgreSQL is running already');
    const args = ['-D', data, '-p', String(port), '-k', sockets, '-c', 'listen_addresses=127.0.0.1', '-c', `fsync=${opts.fsync === false ? 'off' : 'on'}`];
    const p = spawn(...who.command(path.join(bin, 'postgres'), args), { stdio: ['ignore', 'ignore', 'pipe'], env: serverEnv() });
    child = p;
    log = '';
    p.stderr!.setEncoding('utf8').on('data', (s: string) => {
      log = (log + s).slice(-8000);
    });
    p.once('exit', () => {
      if (child === p) child = undefined;
    });
    const deadline = Date.now() + 60_000;
    for (;;) {
      if (child !== p) throw new Error(`postgres exited while starting: ${log}`);
      try {
        await query('postgres', 'SELECT 1');
        return;
      } catch (e) {
        if (Date.now() > deadline) throw new Error(`postgres did not accept connections within 60 s (${(e as Error).message}): ${log}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  };

  const stop = async (): Promise<void> => {
    const p = child;
    if (!p) return;
    const exited = new Promise<void>((resolve) => p.once('exit', () => resolve()));
    // SIGQUIT is PostgreSQL's immediate shutdown (what `pg_ctl stop -m
    // immediate` sends): every backend quits at once, nothing is flushed.
    p.kill('SIGQUIT');
    const timer = setTimeout(() => p.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
  };

  let dbs = 0;
  try {
    // The free port may be taken by someone else before postgres binds it: try another.
    for (let attempt = 1; ; attempt++) {
      try {
        await start();
        break;
      } catch (e) {
        if (attempt === 3 || !/could not (bind|create listen socket)/i.test(String(e))) throw e;
        port = await freePort();
      }
    }
  } catch (e) {
    await stop();
    process.off('exit', killOnExit);
    fs.rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  return {
    port,
    user,
    password,
    url,
    query,
    async createDatabase() {
      const name = `sb_test_${++dbs}`;
      await query('postgres', `CREATE DATABASE ${name}`);
      return name;
    },
    get running() {
      return child !== undefined;
    },
    stop,
    start,
    async close() {
      await stop();
      process.off('exit', killOnExit);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
