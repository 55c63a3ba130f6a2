// mesibo.conf as the server reads it: the C++ parser through the facade.
// Every form and every error code is covered in test/native/config_test.cc;
// these check what reaches a user of the library.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { Core, parseConfig } from '../lib/index';
import { tempDir } from './helpers';

describe('parseConfig', () => {
  it('reads settings and the three module forms in order, with repeated names as separate instances', () => {
    const c = parseConfig({
      text: [
        '# server',
        'listen = 127.0.0.1:5222',
        'app_token = abc#def = ghi',
        'module skeleton',
        'module=echo',
        'module filter {',
        '\tblocked_words = alpha, beta',
        '\tlog = 1',
        '}',
        'module translate{',
        '  target = fr',
        '}',
        'module filter {',
        '  blocked_words = gamma',
        '}',
      ].join('\n'),
      file: 'mesibo.conf',
    });
    expect(c.settings).toEqual([
      { key: 'listen', value: '127.0.0.1:5222', line: 2 },
      { key: 'app_token', value: 'abc#def = ghi', line: 3 },
    ]);
    expect(c.modules.map((m) => m.name)).toEqual(['skeleton', 'echo', 'filter', 'translate', 'filter']);
    expect(c.modules[2].items).toEqual([
      { key: 'blocked_words', value: 'alpha, beta', line: 7 },
      { key: 'log', value: '1', line: 8 },
    ]);
    expect(c.modules[4].items[0].value).toBe('gamma');
  });

  it('reads a file and takes its folder as the base for relative paths', () => {
    const dir = tempDir();
    fs.writeFileSync(path.join(dir, 'mesibo.conf'), 'module_dir = mods\n');
    const c = parseConfig({ file: path.join(dir, 'mesibo.conf') });
    expect(c.dir).toBe(dir);
  });
});

describe('configuration errors stop start-up with file, line and what was expected', () => {
  const cases: [string, string, number][] = [
    ['module filter {\n blocked_words = a\n', 'E_CONFIG_UNCLOSED_BLOCK', 1],
    ['module filter {\n blocked words\n}\n', 'E_CONFIG_EXPECTED_EQUALS', 2],
    ['module filter {\n a = 1\n a = 2\n}\n', 'E_CONFIG_DUPLICATE_KEY', 3],
    ['listen = x\nlisten_port = 5\n', 'E_CONFIG_UNKNOWN_SETTING', 2],
    ['module bad-name\n', 'E_CONFIG_BAD_MODULE_NAME', 1],
    ['}\n', 'E_CONFIG_UNEXPECTED_BRACE', 1],
  ];
  for (const [text, code, line] of cases) {
    it(code, () => {
      const dir = tempDir();
      const file = path.join(dir, 'mesibo.conf');
      fs.writeFileSync(file, text);
      let err: Record<string, unknown> | undefined;
      try {
        Core.open({ configFile: file }, { onLog: () => {} }).close();
      } catch (e) {
        err = e as Record<string, unknown>;
      }
      expect(err).toMatchObject({ code, file, line });
      expect(String(err!.message)).toMatch(new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:${line}: `));
    });
  }

  it('E_CONFIG_READ for a file that does not exist', () => {
    expect(() => Core.open({ configFile: '/nonexistent/mesibo.conf' })).toThrow(expect.objectContaining({ code: 'E_CONFIG_READ' }));
  });
});
