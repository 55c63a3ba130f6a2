// The native tests (test/native/*_test.cc) drive the core without Node: the
// config parser, the wire codec and json_extract. They are built with CMake
// here and each program must report "N passed, 0 failed".
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { root } from './helpers';

const buildDir = path.join(root, 'build-native');
const programs = fs
  .readdirSync(path.join(root, 'test/native'))
  .filter((f) => f.endsWith('_test.cc'))
  .map((f) => f.replace(/\.cc$/, ''));

beforeAll(() => {
  execFileSync('cmake', ['-S', root, '-B', buildDir, '-DSWITCHBOARD_NATIVE_TESTS=ON', '-DSWITCHBOARD_WERROR=ON', '-DCMAKE_BUILD_TYPE=Release'], { stdio: 'pipe' });
  execFileSync('cmake', ['--build', buildDir, '-j2'], { stdio: 'pipe' });
});

describe('native tests', () => {
  it('finds the native test programs', () => {
    expect(programs.length).toBeGreaterThanOrEqual(3);
  });
  for (const name of programs) {
    it(name, () => {
      const r = spawnSync(path.join(buildDir, 'native-tests', name), { encoding: 'utf8' });
      const summary = r.stdout.trim().split('\n').pop() ?? '';
      if (r.status !== 0) console.error(r.stdout, r.stderr);
      expect(summary).toMatch(/^\d+ passed, 0 failed$/);
      expect(r.status).toBe(0);
    });
  }
});
