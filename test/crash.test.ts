// A module that crashes takes the server with it, but leaves a trace on
// stderr naming the module and the hook (or helper callback) it was in.
// Each crash happens in a child node process that opens a core over
// test/modules/crasher.c and sends it one message.
import { spawn } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { compileModule, root } from './helpers';

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
  stdout: string;
}

/** Runs a child that opens a core with `module crasher` (and `items` in its block) and sends `payload` to "crash". */
function crashWith(payload: string, items = '', before = ''): Promise<Exit> {
  const dir = compileModule({ name: 'crasher', source: 'test/modules/crasher.c' });
  const configText = `module_dir = ${dir}\nmodule crasher {\n${items}\n}\n`;
  const script = `
    const { Core } = require(${JSON.stringify(path.join(root, 'dist', 'index.js'))});
    process.stdout.write('opening\\n');
    const core = Core.open({ configText: ${JSON.stringify(configText)}, configFile: '${dir}/mesibo.conf', baseDir: '${dir}' }, { onLog: () => {} });
    setTimeout(() => process.exit(0), 1500);
    ${before}
    process.stdout.write('sending\\n');
    core.submit('alice', JSON.stringify({ op: 'msg', id: 1, to: 'crash', data: ${JSON.stringify(payload)} }));`;
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => (stdout += d));
  child.stderr!.on('data', (d) => (stderr += d));
  return new Promise((ok) => child.on('exit', (code, signal) => ok({ code, signal, stderr, stdout })));
}

/** The process died of the crash: by the signal, or (under AddressSanitizer, whose report comes after ours) with an error status. */
function expectDied(e: Exit, signal: NodeJS.Signals) {
  expect(e.stdout).toMatch(/^opening\n/);
  if (e.signal === null) expect(e.code, e.stderr).not.toBe(0);
  else expect(e.signal, e.stderr).toBe(signal);
}

describe('a crash inside a module', () => {
  it('a NULL dereference in on_message: stderr names the signal, the address, the module and the hook, after the lines the module logged just before', async () => {
    const e = await crashWith('segv');
    expectDied(e, 'SIGSEGV');
    expect(e.stderr).toContain(
      '[crasher] about to dereference NULL\n' +
        'switchboard: crash: SIGSEGV (address 0x0) in module "crasher", in on_message; the server is going down with it. Fix the module, or remove it from the configuration.\n',
    );
  });

  it('abort() in on_message', async () => {
    const e = await crashWith('abort');
    expectDied(e, 'SIGABRT');
    expect(e.stderr).toContain('switchboard: crash: SIGABRT in module "crasher", in on_message;');
  });

  it('a crash in an HTTP callback names the module library and the callback', async () => {
    const port = await new Promise<number>((ok) => {
      const s = net.createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as net.AddressInfo).port;
        s.close(() => ok(p));
      });
    });
    const e = await crashWith(`http:${port}`);
    expectDied(e, 'SIGSEGV');
    expect(e.stderr).toMatch(/switchboard: crash: SIGSEGV \(address 0x0\) in module ".*\/mesibo_mod_crasher\.so", in an HTTP on_close callback;/);
  });

  it('a crash in init, while the server starts', async () => {
    const e = await crashWith('fine', ' crash_in_init = 1');
    expectDied(e, 'SIGSEGV');
    expect(e.stdout).toBe('opening\n');
    expect(e.stderr).toContain('switchboard: crash: SIGSEGV (address 0x0) in module "crasher", in init;');
  });

  it('leaves Node\'s own SIGSEGV handling alone: WebAssembly bounds traps still throw, and a module crash after them is still traced', async () => {
    // (module (memory 1) (func (export "f") (result i32) (i32.load (i32.const -1))))
    const wasm = [0, 0x61, 0x73, 0x6d, 1, 0, 0, 0, 1, 5, 1, 0x60, 0, 1, 0x7f, 3, 2, 1, 0, 5, 3, 1, 0, 1, 7, 5, 1, 1, 0x66, 0, 0, 0x0a, 9, 1, 7, 0, 0x41, 0x7f, 0x28, 2, 0, 0x0b];
    const e = await crashWith(
      'segv',
      '',
      `const f = new WebAssembly.Instance(new WebAssembly.Module(new Uint8Array(${JSON.stringify(wasm)}))).exports.f;
       for (let i = 0; i < 3; i++) try { f(); } catch (err) { process.stdout.write('trap: ' + err.message + '\\n'); }`,
    );
    expectDied(e, 'SIGSEGV');
    expect(e.stdout).toBe('opening\n' + 'trap: memory access out of bounds\n'.repeat(3) + 'sending\n');
    expect(e.stderr).toContain('switchboard: crash: SIGSEGV (address 0x0) in module "crasher", in on_message;');
  });

  it('a message that does not crash leaves no trace, and the process ends normally', async () => {
    const e = await crashWith('fine');
    expect(e.code).toBe(0);
    expect(e.stdout).toBe('opening\nsending\n');
    expect(e.stderr).not.toContain('switchboard: crash');
  });
});
