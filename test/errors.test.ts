// The error catalog is the one list of codes: every code the native core, the
// server and the client can report is in it, every code in it is explained
// where a user looks (docs/), and the docs name no code that does not exist.
// TypeScript checks the throw sites in lib/ (the constructors take catalog
// codes); these checks cover what the compiler cannot see: the C++ sources,
// the plain-JS entry point and the documentation.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ERRORS } from '../lib/errors';
import { CLIENT_ERRORS } from '../lib/client/errors';

const root = path.join(__dirname, '..');
const read = (f: string): string => fs.readFileSync(path.join(root, f), 'utf8');

/** Where a user looks up an error code (pipeline.md and performance.md explain none). */
const DOCS = ['docs/config.md', 'docs/protocol.md', 'docs/api.md', 'docs/operations.md', 'docs/modules.md', 'docs/scripts.md', 'docs/cluster.md'];

/**
 * The codes a text names. A whole word only, so MESIBO_MSGSTATUS_READ is no
 * E_ code, and ending in a letter or digit, so a family such as `E_CONFIG_*`
 * is not read as a code named "E_CONFIG_".
 */
function codesIn(text: string): Set<string> {
  return new Set(text.match(/\bE_[A-Z0-9_]*[A-Z0-9]\b/g) ?? []);
}

const serverCodes = new Set(Object.keys(ERRORS));
const clientCodes = new Set(Object.keys(CLIENT_ERRORS));
const docsText = DOCS.map(read).join('\n');

describe('the error catalog', () => {
  it('has every code the native core emits (string literals in cpp/)', () => {
    const files = fs.readdirSync(path.join(root, 'cpp')).filter((f) => /\.(cc|h)$/.test(f));
    expect(files).toContain('wire.cc');
    const emitted = new Set<string>();
    for (const f of files) for (const m of read(`cpp/${f}`).matchAll(/"(E_[A-Z0-9_]+)"/g)) emitted.add(m[1]);
    // The core's config, loader, wire and binding errors all reach users.
    for (const c of ['E_CONFIG_UNKNOWN_SETTING', 'E_MODULE_NOT_FOUND', 'E_FRAME_MALFORMED', 'E_CORE_CLOSED']) expect(emitted).toContain(c);
    expect([...emitted].filter((c) => !serverCodes.has(c))).toEqual([]);
  });

  it('has every code lib/ and server.js write as a literal', () => {
    // The compiler checks the constructors; this catches a code in a place
    // it cannot type, such as a message text.
    const ts: string[] = [];
    const walk = (dir: string): void => {
      for (const e of fs.readdirSync(path.join(root, dir), { withFileTypes: true })) {
        if (e.isDirectory()) walk(`${dir}/${e.name}`);
        else if (e.name.endsWith('.ts')) ts.push(`${dir}/${e.name}`);
      }
    };
    walk('lib');
    const used = new Set<string>();
    for (const f of [...ts, 'server.js']) for (const c of codesIn(read(f))) used.add(c);
    expect(used).toContain('E_NOT_BUILT');
    expect([...used].filter((c) => !serverCodes.has(c) && !clientCodes.has(c))).toEqual([]);
  });

  it('keeps the client SDK codes apart from the server codes', () => {
    expect([...clientCodes].filter((c) => serverCodes.has(c))).toEqual([]);
  });

  it('gives every code a summary', () => {
    for (const [code, e] of [...Object.entries(ERRORS), ...Object.entries(CLIENT_ERRORS)]) {
      expect(e.summary.length, code).toBeGreaterThan(10);
    }
  });

  it('documents every server code in docs/', () => {
    const documented = codesIn(docsText);
    expect([...serverCodes].filter((c) => !documented.has(c))).toEqual([]);
  });

  it('documents every client SDK code with the client, in docs/protocol.md', () => {
    const documented = codesIn(read('docs/protocol.md'));
    expect([...clientCodes].filter((c) => !documented.has(c))).toEqual([]);
  });

  it('has every code docs/ and the README name', () => {
    const named = codesIn(docsText + read('README.md'));
    expect(named.size).toBeGreaterThan(50);
    expect([...named].filter((c) => !serverCodes.has(c) && !clientCodes.has(c))).toEqual([]);
  });
});
