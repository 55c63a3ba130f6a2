// The sample modules in modules/, as built by CMake (build/modules), doing
// what their READMEs promise.
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { msg, open, root, until, type Opened } from './helpers';

const built = path.join(root, 'build', 'modules');
const opened: Opened[] = [];
function start(body: string): Opened {
  const o = open(built, body);
  opened.push(o);
  return o;
}
afterEach(() => {
  while (opened.length) opened.pop()!.core.close();
});

describe('the CMake build', () => {
  it('compiled every sample into build/modules', () => {
    for (const name of ['skeleton', 'filter', 'echo', 'chatbot', 'translate']) expect(fs.existsSync(path.join(built, `mesibo_mod_${name}.so`))).toBe(true);
  });
});

describe('filter', () => {
  it('consumes messages containing a blocked word, in any case, and passes the rest', () => {
    const { core, lines } = start('module filter {\n blocked_words = alpha, beta ,gamma\n log = 1\n}\n');
    expect(core.submit('alice', msg('bob', 'this has ALPHA in it')).verdict).toBe('consumed');
    expect(core.submit('alice', msg('bob', 'Gamma')).verdict).toBe('consumed');
    expect(core.submit('alice', msg('bob', 'nothing to see')).verdict).toBe('pass');
    expect(core.submit('alice', msg('bob', 'alph a')).verdict).toBe('pass');
    expect(lines('filter').filter((l) => l.startsWith('dropped'))).toHaveLength(2);
  });

  it('reads the payload as bytes: a word after a NUL byte is still found', () => {
    const { core } = start('module filter {\n blocked_words = beta\n}\n');
    const payload = Buffer.concat([Buffer.from('ok'), Buffer.from([0]), Buffer.from('BETA')]);
    const frame = JSON.stringify({ op: 'msg', id: 1, to: 'bob', b64: payload.toString('base64') });
    expect(core.submit('alice', frame).verdict).toBe('consumed');
  });

  it('refuses to start without blocked_words', () => {
    expect(() => start('module filter\n')).toThrow(expect.objectContaining({ code: 'E_MODULE_INIT_FAILED', module: 'filter' }));
  });

  it('runs as two instances with different word lists', () => {
    const { core } = start('module filter {\n blocked_words = apple\n}\nmodule filter {\n blocked_words = pear\n}\n');
    expect(core.submit('a', msg('b', 'apple')).verdict).toBe('consumed');
    expect(core.submit('a', msg('b', 'pear')).verdict).toBe('consumed');
    expect(core.submit('a', msg('b', 'plum')).verdict).toBe('pass');
  });
});

describe('echo', () => {
  it('answers messages to its address with the prefix and the original bytes, and passes the rest', async () => {
    const { core, sent } = start('module echo {\n address = echobot\n}\n');
    const r = core.submit('alice', msg('echobot', 'hello', { id: 5 }));
    expect(r.verdict).toBe('consumed');
    expect(core.submit('alice', msg('bob', 'not for the bot')).verdict).toBe('pass');
    await until(() => sent.length === 1);
    expect(sent[0]).toMatchObject({ module: 'echo', from: 'echobot', to: 'alice', refid: 5 });
    expect(sent[0].payload.toString()).toBe('echo: hello');
  });

  it('and a filter after it sees the reply', async () => {
    const { core, sent } = start('module echo\nmodule filter {\n blocked_words = secret\n}\n');
    core.submit('alice', msg('echo', 'secret'));
    core.submit('alice', msg('echo', 'public'));
    await until(() => sent.length === 1);
    await new Promise((r) => setTimeout(r, 20));
    core.drain();
    expect(sent.map((m) => m.payload.toString())).toEqual(['echo: public']);
  });
});

describe('skeleton', () => {
  it('passes everything and logs each callback at level 1', () => {
    const { core, lines } = start('module skeleton {\n log = 1\n}\n');
    expect(core.submit('alice', msg('bob', 'hi', { id: 3 })).verdict).toBe('pass');
    core.login('alice', true);
    core.login('alice', false);
    const l = lines('skeleton');
    expect(l).toContain('message 3 from alice to bob, 2 bytes');
    expect(l).toContain('alice logged in');
    expect(l).toContain('alice logged out');
  });
});
