// README.md as a new user reads it: its first command is the one CI runs in
// a fresh clone (scripts/check-fresh-clone.sh), and its two-user example,
// taken from the page itself, prints what the page says it prints against a
// server started from the repository's own mesibo.conf.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { root } from './helpers';
const example = require('./readme-example.js') as {
  readmeExample(md: string): { firstCommand: string; curls: string[]; chat: string };
  runExample(port: number): Promise<string[]>;
  checkLines(lines: string[]): void;
};

const readme = fs.readFileSync(path.join(root, 'README.md'), 'utf8');
const made: string[] = [];
afterAll(() => {
  for (const d of made) fs.rmSync(d, { recursive: true, force: true });
});

describe('README.md', () => {
  it('starts with the two commands that work on a fresh machine', () => {
    const { firstCommand } = example.readmeExample(readme);
    expect(firstCommand).toBe('npm install && npm start');
    expect(readme.indexOf('```sh\nnpm install && npm start')).toBeLessThan(readme.indexOf('\n## '));
  });

  it('the two-user example prints what it says, against the repository mesibo.conf', async () => {
    const { curls, chat } = example.readmeExample(readme);
    expect(curls).toHaveLength(2);
    expect(chat).toContain("require('switchboard/client')");
    // The repository's config as it is, on a free port and a fresh data folder.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sb-readme-test-'));
    made.push(dir);
    const conf = fs.readFileSync(path.join(root, 'mesibo.conf'), 'utf8');
    expect(conf).toContain('listen = 127.0.0.1:5222');
    const text = conf
      .replace('listen = 127.0.0.1:5222', 'listen = 127.0.0.1:0')
      .replace('data_dir = ./data', `data_dir = ${path.join(dir, 'data')}`)
      .replace('module_dir = ./build/modules', `module_dir = ${path.join(root, 'build', 'modules')}`);
    fs.writeFileSync(path.join(dir, 'mesibo.conf'), text);
    const child = spawn(process.execPath, [path.join(root, 'server.js'), '--config', path.join(dir, 'mesibo.conf')], { stdio: ['ignore', 'ignore', 'pipe'] });
    let log = '';
    child.stderr.on('data', (d) => (log += d));
    const exit = new Promise((r) => child.on('exit', r));
    const end = Date.now() + 20_000;
    while (!/server\.listening url=ws:\/\/127\.0\.0\.1:\d+/.test(log) && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
    const port = Number(/server\.listening url=ws:\/\/127\.0\.0\.1:(\d+)/.exec(log)?.[1]);
    expect(log).toMatch(/server\.listening url=\S+ modules=filter,echo /);
    try {
      const lines = await example.runExample(port);
      expect(() => example.checkLines(lines)).not.toThrow();
      expect(lines).toContain('bob got "hello bob" from alice');
      expect(lines).toContain('alice got "echo: ping" from echo');
    } finally {
      child.kill('SIGTERM');
    }
    expect(await exit).toBe(0);
  });
});
