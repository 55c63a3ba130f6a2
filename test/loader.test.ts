// Loading modules: where the loader looks, what it calls, and what a user
// sees when a module cannot be loaded.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { Core, type LogEntry } from '../lib/index';
import { native } from '../lib/native';
import { compileModule, msg, open, tempDir } from './helpers';

function openError(dir: string, body: string): Record<string, unknown> {
  try {
    open(dir, body).core.close();
  } catch (e) {
    return e as Record<string, unknown>;
  }
  throw new Error('expected the core to refuse to start');
}

describe('symbols for modules', () => {
  it('makes mesibo_* visible to modules built without any -l flag', () => {
    expect(native.symbolsGlobal).toBe(true);
    const dir = compileModule({ name: 'recorder', source: 'test/modules/recorder.c' });
    const undefinedSyms = execFileSync('nm', ['-D', '--undefined-only', path.join(dir, 'mesibo_mod_recorder.so')]).toString();
    expect(undefinedSyms).toMatch(/U mesibo_log/);
    expect(undefinedSyms).toMatch(/U mesibo_message/);
    const o = open(dir, 'module recorder\n');
    expect(o.core.submit('a', msg('b', 'resolved')).verdict).toBe('pass');
    o.core.close();
  });
});

describe('where modules are found', () => {
  it('looks up mesibo_mod_NAME.so in module_dir, relative to the config file', () => {
    const base = tempDir();
    const mods = path.join(base, 'mods');
    compileModule({ name: 'recorder', source: 'test/modules/recorder.c', outDir: mods });
    fs.writeFileSync(path.join(base, 'mesibo.conf'), 'module_dir = ./mods\nmodule recorder\n');
    const core = Core.open({ configFile: path.join(base, 'mesibo.conf') }, { onLog: () => {} });
    expect(core.modules[0].file).toBe(path.join(base, 'mods', 'mesibo_mod_recorder.so'));
    core.close();
  });

  it('uses a block\'s path = item instead', () => {
    const dir = compileModule({ name: 'recorder', source: 'test/modules/recorder.c' });
    const elsewhere = tempDir();
    const o = open(elsewhere, `module recorder {\n path = ${path.join(dir, 'mesibo_mod_recorder.so')}\n tag = p\n}\n`);
    expect(o.core.modules[0].file).toBe(path.join(dir, 'mesibo_mod_recorder.so'));
    o.core.close();
  });

  it('passes the block\'s items to init as module_config_t and nothing when there is no block', () => {
    const dir = compileModule({ name: 'skeleton', source: 'modules/skeleton/skeleton.c' });
    const o = open(dir, 'module skeleton {\n log = 1\n greeting = hello world = yes\n}\nmodule skeleton\n');
    const lines = o.lines('skeleton').join('\n');
    expect(lines).toContain('greeting');
    expect(lines).toContain('hello world = yes');
    o.core.close();
  });
});

describe('load failures stop start-up and say which module, which file and why', () => {
  it('file missing', () => {
    const dir = tempDir();
    const e = openError(dir, 'module nothere\n');
    expect(e.code).toBe('E_MODULE_NOT_FOUND');
    expect(e.module).toBe('nothere');
    expect(e.file).toBe(path.join(dir, 'mesibo_mod_nothere.so'));
    expect(String(e.message)).toContain('mesibo_mod_nothere.so');
  });

  it('not a shared object', () => {
    const dir = tempDir();
    fs.writeFileSync(path.join(dir, 'mesibo_mod_text.so'), 'this is not an ELF file\n'.repeat(10));
    const e = openError(dir, 'module text\n');
    expect(e.code).toBe('E_MODULE_NOT_SHARED_OBJECT');
    expect(String(e.message)).toMatch(/not a shared object/);
  });

  it('a symbol the server does not export', () => {
    const dir = compileModule({ name: 'broken', source: 'test/modules/broken.c', defines: ['UNDEFINED_SYM'] });
    const e = openError(dir, 'module broken\n');
    expect(e.code).toBe('E_MODULE_LOAD_FAILED');
    expect(String(e.message)).toContain('mesibo_function_that_does_not_exist');
  });

  it('init symbol missing', () => {
    const dir = compileModule({ name: 'broken', source: 'test/modules/broken.c', defines: ['WRONG_NAME'] });
    const e = openError(dir, 'module broken\n');
    expect(e.code).toBe('E_MODULE_NO_INIT');
    expect(String(e.message)).toContain('mesibo_module_broken_init');
  });

  it('init returned failure, with the lines the module logged', () => {
    const dir = compileModule({ name: 'broken', source: 'test/modules/broken.c', defines: ['INIT_FAILS'] });
    const e = openError(dir, 'module broken\n');
    expect(e.code).toBe('E_MODULE_INIT_FAILED');
    expect(e.moduleLog).toEqual(['missing required item api_key']);
    expect(String(e.message)).toContain('missing required item api_key');
  });

  it('sanity check failed', () => {
    const dir = compileModule({ name: 'broken', source: 'test/modules/broken.c', defines: ['SANITY_FAILS'] });
    const e = openError(dir, 'module broken\n');
    expect(e.code).toBe('E_MODULE_SANITY_CHECK');
    expect(e.moduleLog).toEqual(['module size mismatch']);
  });

  it('cleans up the modules that did load before the failing one', () => {
    const dir = compileModule({ name: 'recorder', source: 'test/modules/recorder.c' });
    const logs: LogEntry[] = [];
    expect(() =>
      Core.open({ configText: `module_dir = ${dir}\nmodule recorder {\n tag = ok\n}\nmodule missing\n` }, { onLog: (l) => logs.push(l) }),
    ).toThrow(expect.objectContaining({ code: 'E_MODULE_NOT_FOUND' }));
    expect(logs.map((l) => l.text)).toContain('ok cleanup');
  });

  it('a bad log level', () => {
    const dir = compileModule({ name: 'recorder', source: 'test/modules/recorder.c' });
    const e = openError(dir, 'module recorder {\n log = loud\n}\n');
    expect(e.code).toBe('E_CONFIG_BAD_VALUE');
    expect(e.line).toBe(2);
  });
});

describe('a C++ module that forgot MESIBO_EXPORT', () => {
  for (const variant of [[], ['UNSIGNED_LEN']]) {
    it(`loads through its mangled init symbol${variant.length ? ' (unsigned len)' : ''} and warns its author`, () => {
      const dir = compileModule({ name: 'mangled', source: 'test/modules/mangled.cc', defines: variant });
      const exported = execFileSync('nm', ['-D', '--defined-only', path.join(dir, 'mesibo_mod_mangled.so')]).toString();
      expect(exported).not.toMatch(/ mesibo_module_mangled_init$/m);
      const o = open(dir, 'module mangled\n');
      expect(o.core.submit('a', msg('b', 'mangled')).message.payload.toString()).toBe('Mangled');
      o.core.drain();
      const warning = o.logs.find((l) => l.module === null && l.text.includes('MESIBO_EXPORT'));
      expect(warning?.text).toContain('mangled');
      o.core.close();
    });
  }
});
