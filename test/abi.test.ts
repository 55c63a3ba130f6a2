// The module ABI (include/module.h) as module authors meet it: their sources
// compile against it as C or C++ without a single warning, and what they
// compile to has the exact layout, constants and sanity check of the mesibo
// module ABI. The C sources live in test/abi/:
//   use_all.c, use_all.cc  modules that use every name the header declares
//   layout.c, layout.cc    a program checking offsets, sizes, types, values
//                          and MESIBO_MODULE_SANITY_CHECK
// This file needs only gcc and g++: it does not load the addon.
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const root = path.resolve(__dirname, '..');
const header = path.join(root, 'include', 'module.h');
const outDir = fs.mkdtempSync(path.join(os.tmpdir(), 'switchboard-abi-'));
const TIMEOUT = 60_000;

afterAll(() => fs.rmSync(outDir, { recursive: true, force: true }));

interface Compiled {
  status: number | null;
  /** Everything the compiler printed: warnings, errors, notes. */
  diagnostics: string;
}

// Runs the compiler from the repo root with repo-relative paths, exactly the
// command line a module author would type.
function compile(compiler: string, args: string[]): Compiled {
  const r = spawnSync(compiler, args, { cwd: root, encoding: 'utf8' });
  if (r.error) throw r.error;
  return { status: r.status, diagnostics: `${r.stdout}${r.stderr}` };
}

function run(program: string): { status: number; stdout: string } {
  try {
    return { status: 0, stdout: execFileSync(program, { encoding: 'utf8' }) };
  } catch (e) {
    const err = e as { status?: number; stdout?: string };
    return { status: err.status ?? -1, stdout: String(err.stdout ?? '') };
  }
}

const moduleBuilds = [
  { compiler: 'gcc', std: 'c99', source: 'test/abi/use_all.c' },
  { compiler: 'gcc', std: 'gnu11', source: 'test/abi/use_all.c' },
  { compiler: 'g++', std: 'c++11', source: 'test/abi/use_all.cc' },
  { compiler: 'g++', std: 'c++17', source: 'test/abi/use_all.cc' },
];

describe('a module using every name in module.h', () => {
  for (const b of moduleBuilds) {
    it(`compiles with ${b.compiler} -std=${b.std} -Wall -Wextra without a warning`, () => {
      const out = path.join(outDir, `use_all_${b.std.replace(/\W/g, '')}.so`);
      const r = compile(b.compiler, [`-std=${b.std}`, '-shared', '-fPIC', '-Wall', '-Wextra', '-I', 'include', b.source, '-o', out]);
      expect(r.diagnostics).toBe('');
      expect(r.status).toBe(0);
      expect(fs.existsSync(out)).toBe(true);
    }, TIMEOUT);
  }
});

describe('the binary layout of module.h', () => {
  const programs = [
    { compiler: 'gcc', source: 'test/abi/layout.c', out: 'layout_c' },
    { compiler: 'g++', source: 'test/abi/layout.cc', out: 'layout_cc' },
  ];
  for (const p of programs) {
    it(`matches the specification when compiled with ${p.compiler}`, () => {
      const program = path.join(outDir, p.out);
      const built = compile(p.compiler, ['-Wall', '-Wextra', '-I', 'include', p.source, '-o', program]);
      expect(built.diagnostics).toBe('');
      expect(built.status).toBe(0);

      const r = run(program);
      // On failure the output lists every check that failed, one per line.
      expect(r.stdout).toMatch(/^\d+ passed, 0 failed$/m);
      expect(r.status).toBe(0);
    }, TIMEOUT);
  }
});

// The names module.h declares, read from the header itself, so that a name
// added to the header without a use in use_all.* or a row in layout.c fails
// here instead of going unchecked.
function declaredNames(text: string) {
  const code = text.replace(/\/\*[\s\S]*?\*\//g, ' ').replace(/\/\/.*$/gm, ' ');
  const all = (re: RegExp) => [...code.matchAll(re)].map((m) => m[1]);
  const macros = all(/^\s*#\s*define\s+(\w+)/gm);
  const functions = all(/MESIBO_EXPORT\s+[^;{]*?\b(\w+)\s*\(/g);
  const typedefs = [
    ...all(/typedef\s+[^;{]*?\(\s*\*\s*(\w+)\s*\)\s*\(/g), // callback types
    ...all(/typedef\s+(?:struct\s+)?\w+\s+(\w+)\s*;/g), // scalars and forward declarations
    ...all(/}\s*(\w+)\s*;/g), // struct and enum typedefs
  ];
  const tags = all(/struct\s+(\w+)\s*\{/g);
  const enumerators = [...code.matchAll(/enum\s*\{([^}]*)\}/g)].flatMap((m) => m[1].split(',').map((s) => s.trim().split(/\s|=/)[0]).filter(Boolean));

  // Fields by struct: the declarator names of each member declaration.
  const fields: { struct: string; field: string }[] = [];
  for (const m of code.matchAll(/struct\s+(\w+)\s*\{([\s\S]*?)\}\s*(\w*)\s*;/g)) {
    const tag = m[1];
    const typedefName = m[3] || (code.match(new RegExp(`typedef\\s+struct\\s+${tag}\\s+(\\w+)\\s*;`)) ?? [])[1] || tag;
    for (const raw of m[2].split(';')) {
      const decl = raw.replace(/^\s*#.*$/gm, '').replace(/__extension__/g, '').trim();
      if (!decl) continue;
      const fn = decl.match(/\(\s*\*\s*(\w+)\s*\)/);
      const names = fn ? [fn[1]] : decl.replace(/\[[^\]]*\]/g, '').split(',').map((d) => (d.match(/(\w+)\s*$/) ?? [])[1]);
      for (const field of names) if (field) fields.push({ struct: typedefName, field });
    }
  }
  return { macros, functions, typedefs, tags, enumerators, fields };
}

describe('the ABI tests cover all of module.h', () => {
  const names = declaredNames(fs.readFileSync(header, 'utf8'));
  const source = (f: string) => fs.readFileSync(path.join(root, 'test/abi', f), 'utf8');
  const uses = (text: string, name: string) => new RegExp(`\\b${name}\\b`).test(text);

  it('reads the declarations out of the header', () => {
    expect(names.functions).toHaveLength(12);
    expect(names.macros).toEqual(expect.arrayContaining(['MESIBO_EXPORT', 'MESIBO_MODULE_SANITY_CHECK', 'MESIBO_MODULES_PADDING']));
    expect(names.enumerators).toHaveLength(5);
    expect(names.fields.filter((f) => f.struct === 'mesibo_module_t')).toHaveLength(24);
  });

  for (const file of ['use_all.c', 'use_all.cc']) {
    it(`${file} uses every type, constant, macro and enum value and calls every function`, () => {
      const text = source(file);
      const wanted = [...names.macros, ...names.typedefs, ...names.tags, ...names.enumerators];
      expect(wanted.filter((n) => !uses(text, n))).toEqual([]);
      expect(names.functions.filter((f) => !new RegExp(`\\b${f}\\s*\\(`).test(text))).toEqual([]);
    });
  }

  it('layout.c checks every field of every structure', () => {
    const text = source('layout.c');
    const unchecked = names.fields.filter(({ struct, field }) => !new RegExp(`\\b${struct}\\s*,\\s*${field}\\b`).test(text));
    expect(unchecked).toEqual([]);
  });
});
