// Shared test helpers: compile real modules with the system compiler, open
// real cores over them, and collect what they log and send.
import { execFileSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Core, type LogEntry, type ModuleMessage } from '../lib/index';

export const root = path.resolve(__dirname, '..');
export const include = path.join(root, 'include');
// Compiled test modules, shared by every test file and run: the name of a
// build says what went into it (hash below), so a stale one is never used.
const cacheDir = path.join(root, 'build', 'test-modules');

export interface CompileOptions {
  /** The module name: the output is mesibo_mod_<name>.so. */
  name: string;
  /** Source file, relative to the repo root. */
  source: string;
  defines?: string[];
  /** Where to put the .so (default: a fresh folder per distinct build). */
  outDir?: string;
}

/**
 * Compiles a module exactly as a module author would: g++/gcc -shared -fPIC
 * -I include, no -l flags. Returns the folder holding mesibo_mod_<name>.so.
 */
export function compileModule(o: CompileOptions): string {
  const src = path.join(root, o.source);
  const cxx = /\.(cc|cpp)$/.test(src);
  const args = ['-shared', '-fPIC', '-O1', '-I', include, ...(o.defines ?? []).map((d) => `-D${d}`)];
  const key = createHash('sha1').update(fs.readFileSync(src)).update(fs.readFileSync(path.join(include, 'module.h'))).update(fs.readFileSync(path.join(include, 'switchboard.h'))).update(JSON.stringify([o.name, args])).digest('hex').slice(0, 16);
  const dir = o.outDir ?? path.join(cacheDir, key);
  const out = path.join(dir, `mesibo_mod_${o.name}.so`);
  if (!fs.existsSync(out)) {
    fs.mkdirSync(dir, { recursive: true });
    // Test files run in parallel processes: each builds under its own name
    // and renames, so nobody loads a half-written library.
    const tmp = `${out}.${process.pid}.tmp`;
    execFileSync(cxx ? 'g++' : 'gcc', [...args, src, '-o', tmp], { stdio: 'pipe' });
    fs.renameSync(tmp, out);
  }
  return dir;
}

const madeDirs: string[] = [];
const children = new Set<ChildProcess>();

/**
 * A fresh folder in the system's temp folder, removed after this test
 * file's last test (test/setup.ts). Kept when a test in the file failed or
 * SWITCHBOARD_KEEP_TMP=1 is set, so what a failure left can be looked at.
 */
export function tempDir(prefix = 'sb-test-'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  madeDirs.push(dir);
  return dir;
}

/** A child process that is killed (SIGKILL) after this test file's last test if it is still running. */
export function reap<T extends ChildProcess>(child: T): T {
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

/** test/setup.ts, after a file's tests: kills its children, then removes its temp folders (unless `keep`). */
export async function cleanUp(keep: boolean): Promise<void> {
  await Promise.all(
    [...children].map(
      (c) =>
        new Promise<void>((resolve) => {
          if (c.exitCode !== null || c.signalCode !== null) return resolve();
          c.once('exit', () => resolve());
          c.kill('SIGKILL');
        }),
    ),
  );
  children.clear();
  const dirs = madeDirs.splice(0);
  if (keep) {
    if (dirs.length) process.stderr.write(`kept for inspection: ${dirs.join(' ')}\n`);
    return;
  }
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
}

export interface Opened {
  core: Core;
  logs: LogEntry[];
  sent: ModuleMessage[];
  /** Module log lines only, as "text". */
  lines(module?: string): string[];
}

/** Opens a core over config text whose module_dir is `dir`. */
export function open(dir: string, configBody: string): Opened {
  const logs: LogEntry[] = [];
  const sent: ModuleMessage[] = [];
  const core = Core.open({ configText: `module_dir = ${dir}\n${configBody}`, configFile: path.join(dir, 'mesibo.conf'), baseDir: dir }, { onLog: (e) => logs.push(e) });
  core.on('message', (m) => sent.push(m));
  return {
    core,
    logs,
    sent,
    lines: (module?: string) => {
      // Log lines travel to JavaScript in batches on the next loop turn; a
      // drain brings them in now.
      if (!core.closed) core.drain();
      return logs.filter((l) => (module === undefined ? l.module !== null : l.module === module)).map((l) => l.text);
    },
  };
}

/** Waits until `cond` holds, turning the event loop meanwhile. */
export async function until(cond: () => boolean | Promise<boolean>, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('timed out waiting for a condition');
    await new Promise((r) => setTimeout(r, 5));
  }
}

export function msg(to: string, data: string, extra: Record<string, unknown> = {}): string {
  return JSON.stringify({ op: 'msg', id: 1, to, data, ...extra });
}

/** One line of the server's text log (lib/log.ts), taken apart. */
export interface LogLine {
  time: string;
  severity: string;
  event: string;
  fields: Record<string, string>;
}

/** Parses "TIME severity event k=v k=\"quoted\" ..." as the text format writes it. */
export function parseLogLine(line: string): LogLine {
  const m = /^(\S+) (\w+) +(\S+)(.*)$/.exec(line);
  if (!m) throw new Error(`not a log line: ${line}`);
  const fields: Record<string, string> = {};
  for (const f of m[4].matchAll(/ (\w+)=("(?:[^"\\]|\\.)*"|\S+)/g)) fields[f[1]] = f[2].startsWith('"') ? JSON.parse(f[2]) : f[2];
  return { time: m[1], severity: m[2], event: m[3], fields };
}

/** What a module or the core said in one text log line, as "[module] text" or "[core] text"; null for other events. */
export function moduleLine(line: string): string | null {
  const l = parseLogLine(line);
  if (l.event === 'module.log') return `[${l.fields.module}] ${l.fields.text}`;
  if (l.event === 'core.warning') return `[core] ${l.fields.text}`;
  return null;
}
