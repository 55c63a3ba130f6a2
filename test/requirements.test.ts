// What start-up refuses before it serves: uWebSockets.js's JavaScript
// fallback (on a Node.js version it has no binary for, publish throws), and
// a `durable` value other than the documented on/off.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { afterAll, describe, expect, it } from 'vitest';
import { parseConfig, Server } from '../lib/index';
import { settingsFrom } from '../lib/server/settings';
import { requireNativeUws, uwsIsNative, UWS_NODE_MAJORS } from '../lib/server/transport';
import { root } from './helpers';

const req = createRequire(__filename);
const made: string[] = [];
afterAll(() => {
  for (const d of made) fs.rmSync(d, { recursive: true, force: true });
});

describe('uWebSockets.js: the native binding or nothing', () => {
  it('recognises the native binding this Node.js loads', () => {
    expect(uwsIsNative(req('uWebSockets.js'))).toBe(true);
    expect(() => requireNativeUws(req('uWebSockets.js'))).not.toThrow();
  });

  it('recognises the JavaScript fallback the package loads when no binary fits', () => {
    // The very module uws.js falls back to (dist/index.js of the package).
    const fallback = req(path.join(path.dirname(req.resolve('uWebSockets.js')), '..', 'dist', 'index.js'));
    expect(typeof fallback.App).toBe('function');
    expect(uwsIsNative(fallback)).toBe(false);
    expect(uwsIsNative({})).toBe(false);
    expect(uwsIsNative(null)).toBe(false);
    expect(uwsIsNative({ App: () => {} })).toBe(false);
  });

  it('refuses the fallback with E_NODE_UNSUPPORTED naming the Node.js versions that work', () => {
    const fallback = { App: function App() {} };
    expect(() => requireNativeUws(fallback, {}, 'v22.3.0')).toThrow(expect.objectContaining({ code: 'E_NODE_UNSUPPORTED' }));
    let message = '';
    try {
      requireNativeUws(fallback, {}, 'v22.3.0');
    } catch (e) {
      message = (e as Error).message;
    }
    expect(message).toMatch(/no native binary for Node\.js v22\.3\.0 .*run Switchboard on Node\.js 20 .*binaries for 16 and 18/);
    expect(UWS_NODE_MAJORS).toContain(Number(process.versions.node.split('.')[0]));
    try {
      requireNativeUws(fallback, { UWS_USE_FALLBACK: '1' });
    } catch (e) {
      message = (e as Error).message;
    }
    expect(message).toContain('UWS_USE_FALLBACK is set in the environment: unset it');
  });

  it('the server on the fallback does not start: exit 1, one line with the code', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sb-req-'));
    made.push(dir);
    fs.writeFileSync(path.join(dir, 'mesibo.conf'), 'listen = 127.0.0.1:0\n');
    const child = spawn(process.execPath, [path.join(root, 'dist', 'cli.js')], { cwd: dir, env: { ...process.env, UWS_USE_FALLBACK: '1' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d) => (err += d));
    child.stdout.resume();
    const code = await new Promise((r) => child.on('exit', r));
    expect(code).toBe(1);
    expect(err).toMatch(/switchboard: cannot start: uWebSockets\.js loaded its JavaScript fallback, which cannot deliver messages; .*\[E_NODE_UNSUPPORTED\]/);
    expect(err).not.toContain('listening');
    expect(fs.existsSync(path.join(dir, 'data'))).toBe(false);
  });
});

describe('durable', () => {
  const settings = (v: string) => settingsFrom(parseConfig({ text: `durable = ${v}\n`, file: 'x.conf', dir: '/tmp' }));

  it('accepts exactly on and off', () => {
    expect(settings('on').durable).toBe(true);
    expect(settings('off').durable).toBe(false);
  });

  for (const v of ['yes', 'no', 'true', 'false', '1', '0', 'On', 'OFF']) {
    it(`refuses "${v}" with the line and the two words it takes`, async () => {
      expect(() => settings(v)).toThrow(expect.objectContaining({ code: 'E_CONFIG_BAD_VALUE', line: 1, message: `x.conf:1: durable = "${v}": expected on or off` }));
      await expect(Server.start({ configText: `listen = 127.0.0.1:0\ndurable = ${v}\n`, log: () => {} })).rejects.toMatchObject({ code: 'E_CONFIG_BAD_VALUE', line: 2 });
    });
  }
});
