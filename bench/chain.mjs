// bench/chain: messages per second and nanoseconds per message through
// Core.submitRaw (one N-API call per message) for 0, 1 and 3 PASS modules,
// 100-byte JSON and binary frames, beside an empty N-API call in the same
// run. Also the same chain without N-API (bench/chain_native.cc), so the
// core's own cost is visible. Medians of 3 repetitions.
//
//   npm run bench            (or: node bench/chain.mjs [messages])
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { Core, encodeClientMessage } = require(path.join(root, 'dist/index.js'));
const { native } = require(path.join(root, 'dist/native.js'));

const N = Number(process.argv[2] ?? 2_000_000);
const REPS = 3;

const modDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sb-bench-'));
execFileSync('gcc', ['-O2', '-shared', '-fPIC', '-I', path.join(root, 'include'), path.join(root, 'bench/modules/pass.c'), '-o', path.join(modDir, 'mesibo_mod_pass.so')]);

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

function timeNs(fn, n) {
  const t0 = process.hrtime.bigint();
  fn(n);
  return Number(process.hrtime.bigint() - t0) / n;
}

// 100-byte frames: pad the payload until the encoded frame is 100 bytes.
function frame100(format) {
  let text = '';
  for (;;) {
    const f = encodeClientMessage({ id: 1, to: 'bob', flags: 3, payload: format === 'json' ? text : Buffer.from(text) }, format);
    if (f.length >= 100) return f;
    text += 'x';
  }
}

const noopNs = median(
  Array.from({ length: REPS }, () =>
    timeNs((n) => {
      for (let i = 0; i < n; i++) native.noop();
    }, N),
  ),
);

/** ns per submit of a 100-byte frame (after a warm-up), median of REPS runs of N; and the frame. */
function submitNs(core, format) {
  const f = frame100(format);
  if (core.submitRaw('alice', f) !== 0) throw new Error(`submit failed for ${format}`);
  for (let i = 0; i < 100_000; i++) core.submitRaw('alice', f);
  const ns = median(
    Array.from({ length: REPS }, () =>
      timeNs((n) => {
        for (let i = 0; i < n; i++) core.submitRaw('alice', f);
      }, N),
    ),
  );
  return [f, ns];
}

const rows = [];
for (const modules of [0, 1, 3]) {
  const core = Core.open({ configText: `module_dir = ${modDir}\n` + 'module pass\n'.repeat(modules) }, { onLog: () => {} });
  for (const format of ['json', 'binary']) {
    const [f, ns] = submitNs(core, format);
    rows.push({ modules, format, frameBytes: f.length, ns });
  }
  core.close();
}

// 3 native PASS modules plus one TypeScript module at the end: one that
// passes without looking, and one that reads the text (what a real filter does).
const scripts = {
  'ts-pass': { onMessage() {} },
  'ts-reads-text': { onMessage(m) { if (m.text.length < 0) return 'consumed'; } },
};
for (const [name, mod] of Object.entries(scripts)) {
  const core = Core.open({ configText: `module_dir = ${modDir}\n` + 'module pass\n'.repeat(3) }, { onLog: () => {} });
  await core.use(name, mod);
  for (const format of ['json', 'binary']) {
    const [f, ns] = submitNs(core, format);
    rows.push({ modules: `3 + ${name}`, format, frameBytes: f.length, ns });
  }
  core.close();
}

// One TypeScript module with an async PASS: every message waits for its
// Promise (a deferred verdict), in batches of 64 per loop turn over 16
// conversations, until every completion has come back.
const asyncRows = [];
async function turnsNs(kind) {
  const core = Core.open({ configText: `module_dir = ${modDir}\n` + 'module pass\n'.repeat(3) }, { onLog: () => {} });
  await core.use('ts', kind === 'sync' ? { onMessage() { return 'pass'; } } : { async onMessage() { return 'pass'; } });
  let done = 0;
  core.on('complete', () => void done++);
  const frames = Array.from({ length: 64 }, (_, i) => encodeClientMessage({ id: i + 1, to: `u${i % 16}`, payload: 'x'.repeat(60) }, 'json'));
  const n = Math.min(N, 200_000);
  let deferred = 0;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i += 64) {
    for (let j = 0; j < 64; j++) if (core.submitRaw(`s${j % 16}`, frames[j]) === 2) deferred++;
    await new Promise((r) => setImmediate(r));
  }
  while (done < deferred) await new Promise((r) => setImmediate(r));
  const ns = Number(process.hrtime.bigint() - t0) / n;
  core.close();
  return ns;
}
for (const kind of ['sync', 'async']) {
  const runs = [];
  for (let rep = 0; rep < REPS; rep++) runs.push(await turnsNs(kind));
  asyncRows.push({ kind, ns: median(runs) });
}

// The same chain without N-API.
let nativeRows = [];
try {
  const buildDir = path.join(root, 'build-bench');
  execFileSync('cmake', ['-S', root, '-B', buildDir, '-DSWITCHBOARD_BENCH=ON', '-DCMAKE_BUILD_TYPE=Release'], { stdio: 'pipe' });
  execFileSync('cmake', ['--build', buildDir, '--target', 'chain_native', '-j2'], { stdio: 'pipe' });
  const bin = path.join(buildDir, 'bench', 'chain_native');
  for (const modules of [0, 1, 3])
    for (const format of ['json', 'binary']) {
      const ns = median(
        Array.from({ length: REPS }, () => {
          const out = execFileSync(bin, [modDir, String(modules), format, String(N)]).toString();
          return Number(/ns_per_msg=([\d.]+)/.exec(out)[1]);
        }),
      );
      nativeRows.push({ modules, format, ns });
    }
} catch (e) {
  console.error(`native chain benchmark skipped: ${e.message.split('\n')[0]}`);
  nativeRows = [];
}

const cpu = (fs.readFileSync('/proc/cpuinfo', 'utf8').match(/model name\s*:\s*(.*)/) ?? [, os.arch()])[1];
console.log(`# bench/chain  ${new Date().toISOString()}`);
console.log(`# ${cpu}, ${os.cpus().length} cores, node ${process.version}, ${N.toLocaleString('en-US')} messages x ${REPS} reps (median)`);
console.log('');
console.log(`empty N-API call (baseline): ${noopNs.toFixed(1)} ns  (${(1e9 / noopNs / 1e6).toFixed(2)} M calls/s)`);
console.log('');
console.log('| modules | frame | bytes | submit ns/msg | msg/s | minus empty call | core alone (no N-API) ns/msg |');
console.log('|---:|---|---:|---:|---:|---:|---:|');
for (const r of rows) {
  const n = nativeRows.find((x) => x.modules === r.modules && x.format === r.format);
  console.log(
    `| ${r.modules} | ${r.format} | ${r.frameBytes} | ${r.ns.toFixed(1)} | ${Math.round(1e9 / r.ns).toLocaleString('en-US')} | ${(r.ns - noopNs).toFixed(1)} | ${n ? n.ns.toFixed(1) : 'n/a'} |`,
  );
}
const worst = Math.max(...rows.filter((r) => r.modules === 3).map((r) => r.ns));
console.log('');
console.log('3 PASS modules + 1 TS module, JSON, 64 messages per loop turn (includes the turn itself):');
for (const r of asyncRows) console.log(`  ${r.kind} PASS: ${r.ns.toFixed(0)} ns per message`);
for (const name of Object.keys(scripts)) {
  const ts = rows.find((r) => r.modules === `3 + ${name}` && r.format === 'json');
  const nat = rows.find((r) => r.modules === 3 && r.format === 'json');
  if (ts && nat) console.log(`one TypeScript module (${name}) adds ${(ts.ns - nat.ns).toFixed(1)} ns per JSON message to 3 native PASS modules`);
}
console.log('');
console.log(`target: decode + 3 modules + encode under 1000 ns per message through submit: ${worst < 1000 ? 'met' : 'MISSED'} (worst ${worst.toFixed(1)} ns)`);
fs.rmSync(modDir, { recursive: true, force: true });
