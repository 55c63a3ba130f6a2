// The SQLite built into the addon (cpp/sqlite_binding.cc, lib/store/db.ts):
// values go in and come back as they were, every failure is an Error with
// SQLite's result code name, SQLite's symbols stay inside the addon, and a
// store file the server cannot use stops start-up with a clear error.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Server } from '../lib/index';
import { Database } from '../lib/store/db';
import { SqliteStore } from '../lib/store/sqlite';

const root = path.resolve(__dirname, '..');
const addonFile = path.resolve(process.env.SWITCHBOARD_ADDON ?? path.join(root, 'build/Release/switchboard.node'));

const dirs: string[] = [];
function tempDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'sb-sqlite-'));
  dirs.push(d);
  return d;
}
const children: ChildProcess[] = [];
afterAll(() => {
  for (const c of children) c.kill('SIGKILL');
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

function errorOf(fn: () => unknown): { code?: string; message: string } {
  try {
    fn();
  } catch (e) {
    return e as { code?: string; message: string };
  }
  throw new Error('expected a throw');
}

function memoryDb(): Database {
  const db = new Database(path.join(tempDir(), 'x.db'));
  db.exec('CREATE TABLE t (i INTEGER, r REAL, s TEXT, b BLOB, u ANY) STRICT');
  return db;
}

describe('the SQLite binding', () => {
  it('stores and returns each kind of value as it was', () => {
    const db = memoryDb();
    const ins = db.prepare('INSERT INTO t VALUES (?, ?, ?, ?, ?)');
    expect(ins.run(1, 2.5, 'héllo ✓ \u0000 end', Buffer.from([0, 1, 255]), null)).toBe(1);
    expect(ins.run(2n ** 62n, -0.125, '', Buffer.alloc(0), true)).toBe(1);
    expect(ins.run(-(2 ** 53) + 1, 1e300, 'x', new Uint8Array([7]), undefined)).toBe(1);
    const rows = db.prepare('SELECT i, r, s, b, u FROM t ORDER BY rowid').all() as Record<string, unknown>[];
    expect(rows[0]).toEqual({ i: 1, r: 2.5, s: 'héllo ✓ \u0000 end', b: Buffer.from([0, 1, 255]), u: null });
    // Beyond 2^53 a number would round: the column comes back as a bigint.
    expect(rows[1]).toEqual({ i: 2n ** 62n, r: -0.125, s: '', b: Buffer.alloc(0), u: 1 });
    expect(rows[2]).toEqual({ i: -(2 ** 53) + 1, r: 1e300, s: 'x', b: Buffer.from([7]), u: null });
    // An empty blob stays a blob, not NULL.
    expect(db.pluck("SELECT typeof(b) FROM t WHERE s = ''").get()).toBe('blob');
    expect(db.pluck('SELECT count(*) FROM t WHERE i > ?').get(0)).toBe(2);
    expect(db.pluck('SELECT s FROM t WHERE i = ?').get(99)).toBeUndefined();
    expect(db.pluck('SELECT s FROM t ORDER BY rowid').all()).toEqual(['héllo ✓ \u0000 end', '', 'x']);
    db.close();
  });

  it('bad SQL is SQLITE_ERROR with SQLite\'s message, from prepare and from exec', () => {
    const db = memoryDb();
    expect(errorOf(() => db.prepare('SELEC 1'))).toMatchObject({ code: 'SQLITE_ERROR', message: expect.stringMatching(/near "SELEC": syntax error/) });
    expect(errorOf(() => db.exec('CREATE TABLE t (x)'))).toMatchObject({ code: 'SQLITE_ERROR', message: expect.stringMatching(/table t already exists/) });
    expect(errorOf(() => db.prepare('SELECT nope FROM t'))).toMatchObject({ code: 'SQLITE_ERROR', message: expect.stringMatching(/no such column: nope/) });
    // A second statement would silently not run.
    expect(errorOf(() => db.prepare('SELECT 1; SELECT 2'))).toMatchObject({ code: 'SQLITE_MISUSE' });
    db.close();
  });

  it('parameters that do not fit are refused before anything runs', () => {
    const db = memoryDb();
    const ins = db.prepare('INSERT INTO t (i, s) VALUES (?, ?)');
    expect(errorOf(() => ins.run(1))).toMatchObject({ code: 'SQLITE_RANGE', message: 'the statement takes 2 parameters, not 1' });
    expect(errorOf(() => ins.run(1, 'a', 'b'))).toMatchObject({ code: 'SQLITE_RANGE' });
    expect(errorOf(() => ins.run(1, {} as never))).toMatchObject({ code: 'SQLITE_MISMATCH', message: expect.stringMatching(/parameter 2 cannot be stored/) });
    expect(errorOf(() => ins.run(2n ** 64n, 'a'))).toMatchObject({ code: 'SQLITE_RANGE', message: expect.stringMatching(/parameter 1 is a bigint outside/) });
    // STRICT: a value of the wrong type is SQLite's own error.
    expect(errorOf(() => ins.run('one', 'a'))).toMatchObject({ code: 'SQLITE_CONSTRAINT_DATATYPE' });
    expect(db.pluck('SELECT count(*) FROM t').get()).toBe(0);
    db.close();
  });

  it('a constraint failure names the constraint (the store maps UNIQUE to E_STORE_TOKEN_IN_USE)', () => {
    const db = memoryDb();
    db.exec('CREATE UNIQUE INDEX t_s ON t (s)');
    const ins = db.prepare('INSERT INTO t (s) VALUES (?)');
    ins.run('a');
    expect(errorOf(() => ins.run('a'))).toMatchObject({ code: 'SQLITE_CONSTRAINT_UNIQUE', message: expect.stringMatching(/UNIQUE constraint failed: t\.s/) });
    // The failed statement was reset: it runs again at once.
    expect(ins.run('b')).toBe(1);
    db.close();
  });

  it('a transaction commits when its function returns and rolls back when it throws', () => {
    const db = memoryDb();
    const ins = db.prepare('INSERT INTO t (i) VALUES (?)');
    const many = db.transaction((n: number, fail: boolean) => {
      for (let k = 0; k < n; k++) ins.run(k);
      if (fail) throw new Error('stop');
      return n;
    });
    expect(many(3, false)).toBe(3);
    expect(() => many(5, true)).toThrow('stop');
    expect(db.inTransaction).toBe(false);
    expect(db.pluck('SELECT count(*) FROM t').get()).toBe(3);
    db.close();
  });

  it('after close every statement of the connection is finalized and refuses to run', () => {
    const db = memoryDb();
    const sel = db.pluck('SELECT count(*) FROM t');
    db.close();
    db.close();
    expect(errorOf(() => sel.get())).toMatchObject({ code: 'SQLITE_MISUSE', message: 'the database is closed' });
    expect(errorOf(() => db.exec('SELECT 1'))).toMatchObject({ code: 'SQLITE_MISUSE' });
    expect(errorOf(() => db.prepare('SELECT 1'))).toMatchObject({ code: 'SQLITE_MISUSE' });
  });

  it('a file that cannot be opened is SQLITE_CANTOPEN', () => {
    expect(errorOf(() => new Database(path.join(tempDir(), 'no', 'such', 'dir.db')))).toMatchObject({ code: 'SQLITE_CANTOPEN' });
    expect(errorOf(() => new Database(path.join(tempDir(), 'missing.db'), { fileMustExist: true }))).toMatchObject({ code: 'SQLITE_CANTOPEN' });
  });

  it('keeps SQLite\'s symbols inside the addon, so a module that links its own SQLite gets its own', () => {
    const r = spawnSync('nm', ['-D', '--defined-only', addonFile], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    const names = r.stdout.split('\n').map((l) => l.split(' ').pop() ?? '');
    expect(names).toContain('mesibo_log');
    expect(names.filter((n) => /sqlite/i.test(n))).toEqual([]);
  });
});

describe('a store file the server cannot use', () => {
  it('that is not a database stops Server.start with E_STORE_CORRUPT', async () => {
    const dir = tempDir();
    fs.writeFileSync(path.join(dir, 'switchboard.db'), Buffer.alloc(8192, 'not sql!'));
    await expect(Server.start({ configText: `listen = 127.0.0.1:0\ndata_dir = ${dir}\n`, log: () => {} })).rejects.toMatchObject({
      code: 'E_STORE_CORRUPT',
      message: expect.stringMatching(/is not a SQLite database or is damaged .*Restore it from a backup, or move it aside/),
    });
  });

  it('that is not a database makes node server.js exit 1 with one line naming the error, not a crash', async () => {
    const dir = tempDir();
    fs.mkdirSync(path.join(dir, 'data'));
    fs.writeFileSync(path.join(dir, 'data', 'switchboard.db'), Buffer.alloc(8192, 'not sql!'));
    fs.writeFileSync(path.join(dir, 'mesibo.conf'), 'listen = 127.0.0.1:0\ndata_dir = ./data\n');
    const r = spawnSync(process.execPath, [path.join(root, 'server.js'), '--config', path.join(dir, 'mesibo.conf')], { cwd: dir, encoding: 'utf8', timeout: 20_000 });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/E_STORE_CORRUPT/);
    expect(r.stderr).toMatch(/switchboard\.db/);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });

  it('locked by another process is E_STORE_LOCKED once the busy timeout has passed', async () => {
    const file = path.join(tempDir(), 'switchboard.db');
    // Another process holds an exclusive lock, as a SQLite tool in the middle
    // of a write would.
    const holder = spawn(
      process.execPath,
      ['-e', `const n = require(${JSON.stringify(addonFile)});
const db = new n.SqliteDb(${JSON.stringify(file)}, false, false, 0);
db.exec('CREATE TABLE x (a); BEGIN EXCLUSIVE; INSERT INTO x VALUES (1);');
process.stdout.write('LOCKED\\n');
setInterval(() => {}, 1000);`],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    children.push(holder);
    await new Promise<void>((resolve, reject) => {
      holder.stdout!.on('data', (d) => String(d).includes('LOCKED') && resolve());
      holder.on('exit', (code) => reject(new Error(`the lock holder exited (${code})`)));
    });
    const t0 = performance.now();
    const e = errorOf(() => SqliteStore.open(file, { busyTimeoutMs: 300 }));
    expect(performance.now() - t0).toBeGreaterThanOrEqual(250);
    expect(e).toMatchObject({ code: 'E_STORE_LOCKED', message: expect.stringMatching(/is locked by another process .*another Switchboard/) });
    holder.kill('SIGKILL');
    await new Promise((r) => holder.once('exit', r));
    // Once the other process is gone, the same file opens.
    const s = SqliteStore.open(file, { busyTimeoutMs: 300 });
    expect(s.countPending()).toBe(0);
    s.close();
  });

  describe('that this user may not write', () => {
    // root may write any file, so as root the open runs in a child process
    // as "nobody", from the compiled store.
    const asRoot = process.getuid?.() === 0;
    const compiled = path.join(root, 'dist/store/sqlite.js');
    beforeAll(() => {
      if (!asRoot) return;
      const sources = ['lib/store/sqlite.ts', 'lib/store/db.ts', 'lib/native.ts'].map((f) => fs.statSync(path.join(root, f)).mtimeMs);
      if (!fs.existsSync(compiled) || fs.statSync(compiled).mtimeMs < Math.max(...sources)) {
        const r = spawnSync('npm', ['run', 'build:ts'], { cwd: root, encoding: 'utf8' });
        expect(`${r.stdout}${r.stderr}`, 'type errors in lib/store').not.toMatch(/lib\/store\//);
      }
    });

    function openCode(file: string): { code?: string; message: string } {
      if (!asRoot) return errorOf(() => SqliteStore.open(file));
      const r = spawnSync(
        process.execPath,
        ['-e', `process.env.SWITCHBOARD_ADDON = ${JSON.stringify(addonFile)};
const { SqliteStore } = require(${JSON.stringify(compiled)});
try { SqliteStore.open(${JSON.stringify(file)}); console.log(JSON.stringify({ message: 'opened' })); }
catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })); }`],
        { encoding: 'utf8', uid: 65534, gid: 65534 },
      );
      expect(r.status, r.stderr).toBe(0);
      return JSON.parse(r.stdout);
    }

    it('is refused at open with E_STORE_OPEN, not at the first commit', () => {
      const dir = tempDir();
      const file = path.join(dir, 'switchboard.db');
      const s = SqliteStore.open(file);
      s.addUser('bob', 'h');
      s.close();
      fs.chmodSync(file, 0o444);
      fs.chmodSync(dir, 0o755);
      expect(openCode(file)).toMatchObject({ code: 'E_STORE_OPEN', message: expect.stringMatching(/is read-only for this user\. Give the server's user write access/) });
    });
  });
});
