// Loads one of the tests' self-contained TypeScript helpers (test/pg.ts,
// test/nats.ts) into a bench script, compiled on the fly: TypeScript is a dev
// dependency, as the bench is, and these files are not part of dist/.
import fs from 'node:fs';
import Module, { createRequire } from 'node:module';
import path from 'node:path';

const require = createRequire(import.meta.url);

/** The exports of the TypeScript file `file` (absolute), compiled to CommonJS. */
export function loadTs(file) {
  const ts = require('typescript');
  const js = ts.transpileModule(fs.readFileSync(file, 'utf8'), { compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true } }).outputText;
  const m = new Module(file);
  m.filename = file;
  m.paths = Module._nodeModulePaths(path.dirname(file));
  m._compile(js, file);
  return m.exports;
}
