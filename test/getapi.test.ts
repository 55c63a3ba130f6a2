// Extensions found by name through the ABI's `invoke` slot (switchboard.h's
// get-API), as a module author meets them: a real module asks this server
// at init and in on_message; a module built the old way (weak symbols, the
// first switchboard.h) keeps working; and the header's wrappers degrade on a
// server that has no get-API (test/abi/getapi_absent.c, compiled as C and
// C++ without a warning).
import { execFileSync, spawnSync } from 'node:child_process';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { compileModule, msg, open, tempDir, type Opened } from './helpers';

const root = path.resolve(__dirname, '..');
const opened: Opened[] = [];
afterEach(() => {
  while (opened.length) opened.pop()!.core.close();
});

function start(name: string): Opened {
  const o = open(compileModule({ name, source: `test/modules/${name}.c` }), `module ${name}\n`);
  opened.push(o);
  return o;
}

describe('the get-API through invoke', () => {
  it('answers the functions it has by name and version, and nothing else', () => {
    const { core, lines } = start('getapi');
    expect(lines('getapi')).toEqual([
      'api level 1',
      'switchboard_defer v1 yes',
      'switchboard_resolve v1 yes',
      'switchboard_has_extension v1 yes',
      'switchboard_state_save v1 yes',
      'switchboard_state_load v1 yes',
      'switchboard_defer v2 no',
      'no_such_function v1 no',
      'unknown invoke id fails',
      'miss clears pointer yes',
      'supports defer yes',
      'outside on_message: handle no',
      'supports state yes',
      'first start: state_load fails, NULL yes',
    ]);
    const r = core.submit('alice', msg('bob', 'hi'));
    expect(r.verdict).toBe('pass');
    expect(lines('getapi').slice(-1)).toEqual(['in on_message: wrapper handle yes']);
  });

  it('keeps modules built against the weak-symbol header working', () => {
    const { core, lines } = start('legacy_ext');
    expect(lines('legacy_ext')).toEqual(['symbols yes', 'supports defer yes']);
    expect(core.submit('alice', msg('bob', 'hi')).verdict).toBe('pass');
    expect(lines('legacy_ext').slice(-1)).toEqual(['in on_message: handle yes']);
  });
});

describe("the header's wrappers on a server without the get-API", () => {
  const builds = [
    ['gcc', '-std=c99'],
    ['gcc', '-std=gnu11'],
    ['g++', '-std=c++11', '-x', 'c++'],
    ['g++', '-std=c++17', '-x', 'c++'],
  ];
  for (const [cc, ...flags] of builds) {
    it(`report "not supported" (${cc} ${flags[0]}, no warning)`, () => {
      const out = path.join(tempDir('getapi-'), 'absent');
      const r = spawnSync(cc, [...flags, '-Wall', '-Wextra', '-I', 'include', 'test/abi/getapi_absent.c', '-o', out], { cwd: root, encoding: 'utf8' });
      expect(`${r.stdout}${r.stderr}`).toBe('');
      expect(r.status).toBe(0);
      const lines = execFileSync(out, { encoding: 'utf8' }).trim().split('\n');
      expect(lines.length).toBe(18);
      expect(lines.filter((l) => !l.startsWith('ok '))).toEqual([]);
    }, 60_000);
  }
});
