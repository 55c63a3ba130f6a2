// bench/e2e: end-to-end throughput and latency of Switchboard, side by side
// with the raw uWebSockets.js baseline (bench/e2e/baseline.mjs), in one run.
//
//   npm run build:ts && node bench/e2e/run.mjs [--seconds 3] [--connections 32]
//       [--reps 3] [--window 64 | --rate MSG_PER_S] [--size 32] [--warmup 0.5]
//       [--max-other 20] [--retries 1]
//
// It builds the C load generator (bench/e2e/loadgen.c) into build-bench/e2e/,
// runs it against the baseline, then against Switchboard with 0 and 3 PASS
// modules, durable off and on. Each server runs in its own child process; with
// taskset and 2+ cores the server is pinned to core 0 and the generator to
// core 1. All servers start first; then the repetitions go round-robin over
// the configurations (fresh users for each, so nothing a run leaves in the
// store reaches the next), and each column is the median over the
// repetitions. The machine may be shared: a run during which other processes
// used more than --max-other % of a core is repeated (at most --retries extra
// runs per configuration; --max-other 0 turns this off). Prints a markdown
// table on stdout, progress on stderr.
//
// Internal: `run.mjs --server-child CONFIG_JSON` is the Switchboard child.
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../..');

// --- the Switchboard child ------------------------------------------------------

async function serverChild({ configText }) {
  const require = createRequire(import.meta.url);
  const { Server } = require(path.join(root, 'dist/index.js'));
  const server = await Server.start({ configText, log: (line) => process.stderr.write(`${line}\n`) });
  const stop = async () => {
    await server.stop();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  // The parent's end of stdin closes when it dies, however it dies.
  process.stdin.on('end', stop);
  process.stdin.resume();
  process.stdout.write(`PORT ${server.port}\n`);
}

// --- the parent -------------------------------------------------------------------

function parseArgs(argv) {
  const o = { seconds: 3, connections: 32, reps: 3, window: 0, rate: 0, size: 32, warmup: 0.5, 'max-other': 20, retries: 1 };
  for (let i = 0; i < argv.length; i++) {
    const key = argv[i].replace(/^--/, '');
    if (!(key in o) || i + 1 >= argv.length || !Number.isFinite(Number(argv[i + 1]))) {
      console.error(`usage: node bench/e2e/run.mjs [--seconds N] [--connections N] [--reps N] [--window W | --rate MSG_PER_S] [--size BYTES] [--warmup S] [--max-other PCT] [--retries N]\n(bad argument: ${argv[i]})`);
      process.exit(2);
    }
    o[key] = Number(argv[++i]);
  }
  if (o.connections < 2 || o.connections % 2) {
    console.error('--connections must be even (connections are paired) and at least 2');
    process.exit(2);
  }
  return o;
}

const children = new Set();

function killAll() {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  children.clear();
}

function track(child) {
  children.add(child);
  child.on('exit', () => children.delete(child));
  return child;
}

/** Stops a server child: SIGTERM, then SIGKILL if it has not gone within 3 s. */
async function stopChild(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), 3000);
  await gone;
  clearTimeout(t);
}

/** Starts a server child and resolves with its port once it prints "PORT n". */
function startServer(name, args, pin) {
  const [cmd, argv] = pin ? ['taskset', ['-c', pin.server, process.execPath, ...args]] : [process.execPath, args];
  const child = track(spawn(cmd, argv, { cwd: root, stdio: ['pipe', 'pipe', 'pipe'] }));
  let out = '';
  let err = '';
  child.stderr.on('data', (d) => {
    err = (err + d).slice(-4000);
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} did not start within 15 s; its stderr:\n${err}`)), 15000);
    child.stdout.on('data', (d) => {
      out += d;
      const m = /PORT (\d+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve({ child, port: Number(m[1]), stderr: () => err });
      }
    });
    child.on('exit', (code, sig) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited (${code ?? sig}) before it listened; its stderr:\n${err}`));
    });
  });
}

/** CPU time (user + system) of process `pid` and all its threads, in USER_HZ ticks. */
function cpuTicks(pid) {
  try {
    const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = f.slice(f.lastIndexOf(')') + 2).split(' ');
    return Number(fields[11]) + Number(fields[12]); // utime + stime
  } catch {
    return NaN;
  }
}

/** The commit the server code comes from, and which of its files differ from it (dist/ is built from the working tree). */
function codeVersion() {
  try {
    const head = execFileSync('git', ['-C', root, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
    const changed = execFileSync('git', ['-C', root, 'status', '--porcelain', '--untracked-files=no', '--', 'lib', 'cpp', 'include'], { encoding: 'utf8' })
      .split('\n')
      .filter(Boolean)
      .map((l) => l.slice(3));
    return `commit ${head}${changed.length ? `, with uncommitted changes in ${changed.join(', ')}` : ''}`;
  } catch {
    return 'not a git checkout';
  }
}

/** Busy time of the whole machine (every core), in USER_HZ ticks. */
function machineBusyTicks() {
  const [, user, nice, system, , , irq, softirq, steal] = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).map(Number);
  return user + nice + system + irq + softirq + steal;
}

/** One generator run; resolves with its RESULT plus the server's CPU % over the measured window. */
function runLoadgen(bin, args, o, serverPid, pin) {
  const [cmd, argv] = pin ? ['taskset', ['-c', pin.gen, bin, ...args]] : [bin, args];
  const child = track(spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'] }));
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (err = (err + d).slice(-4000)));
  // The server's CPU over the generator's measured window, which the generator marks on stdout.
  const hz = 100; // USER_HZ: /proc/PID/stat counts in 1/100 s on Linux
  let t0 = NaN;
  let t1 = NaN;
  let busy0 = NaN;
  let busy1 = NaN;
  child.stdout.on('data', () => {
    if (Number.isNaN(t0) && out.includes('MEASURE start')) [t0, busy0] = [cpuTicks(serverPid), machineBusyTicks()];
    if (Number.isNaN(t1) && out.includes('MEASURE end')) [t1, busy1] = [cpuTicks(serverPid), machineBusyTicks()];
  });
  const limit = (o.warmup + o.seconds + 20) * 1000;
  const kill = setTimeout(() => child.kill('SIGKILL'), limit);
  return new Promise((resolve, reject) => {
    child.on('exit', (code, sig) => {
      clearTimeout(kill);
      const m = /RESULT (\{.*\})/.exec(out);
      if (!m) return reject(new Error(`loadgen failed (${code ?? sig}):\n${err}`));
      const r = JSON.parse(m[1]);
      if (r.errors || r.closed) return reject(new Error(`loadgen saw ${r.errors} error frames and ${r.closed} lost connections:\n${err}`));
      r.serverCpuPct = ((t1 - t0) / hz / o.seconds) * 100;
      r.otherCpuPct = Math.max(0, ((busy1 - busy0) / hz / o.seconds) * 100 - r.serverCpuPct - r.cpuPct);
      resolve(r);
    });
  });
}

async function api(port, body) {
  const res = await fetch(`http://127.0.0.1:${port}/api`, {
    method: 'POST',
    headers: { Authorization: 'Bearer bench-app-token', 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(5000),
  });
  const j = await res.json();
  if (!j.ok) throw new Error(`POST /api ${JSON.stringify(body)}: ${j.code} ${j.message}`);
  return j;
}

const median = (xs) => {
  const s = xs.filter(Number.isFinite).sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length / 2)] : NaN;
};

async function main() {
  const o = parseArgs(process.argv.slice(2));
  process.on('exit', killAll);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'])
    process.on(sig, () => {
      killAll();
      process.exit(130);
    });

  if (!fs.existsSync(path.join(root, 'dist/index.js'))) {
    console.error('dist/index.js is missing: run `npm run build:ts` first');
    process.exit(1);
  }
  const startedAt = new Date().toISOString();
  const version = codeVersion();
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sb-e2e-'));
  process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));

  const binDir = path.join(root, 'build-bench/e2e');
  fs.mkdirSync(binDir, { recursive: true });
  const bin = path.join(binDir, 'loadgen');
  execFileSync('cc', ['-O2', '-Wall', '-Wextra', '-pthread', '-o', bin, path.join(here, 'loadgen.c')], { stdio: 'inherit' });
  const modDir = path.join(tmp, 'modules');
  fs.mkdirSync(modDir);
  execFileSync('gcc', ['-O2', '-shared', '-fPIC', '-I', path.join(root, 'include'), path.join(root, 'bench/modules/pass.c'), '-o', path.join(modDir, 'mesibo_mod_pass.so')]);

  let hasTaskset = true;
  try {
    execFileSync('taskset', ['-c', '0', 'true'], { stdio: 'ignore' });
  } catch {
    hasTaskset = false;
  }
  const cores = os.availableParallelism?.() ?? os.cpus().length;
  const pin = hasTaskset && cores >= 2 ? { server: '0', gen: '1' } : null;

  const window = o.window || (o.rate > 0 ? 4096 : 64);
  const modeText = o.rate > 0 ? `fixed rate ${o.rate} msg/s in total (window ${window})` : `window ${window} per connection`;
  const mode = [...(o.rate > 0 ? ['--rate', String(o.rate)] : []), '--window', String(window)];
  const common = ['--host', '127.0.0.1', '--conns', String(o.connections), '--seconds', String(o.seconds), '--warmup', String(o.warmup), '--size', String(o.size), ...mode];
  const configs = [{ name: 'uWebSockets.js baseline', baseline: true }];
  for (const durable of ['off', 'on']) for (const modules of [0, 3]) configs.push({ name: `Switchboard, ${modules} PASS modules, durable ${durable}`, durable, modules });

  try {
    // Every server starts first and idles until its turn, so the repetitions can
    // go round-robin: a burst of load from elsewhere on the machine then lands
    // on one repetition of several configurations, not on every repetition of one.
    for (const c of configs) {
      if (c.baseline) {
        c.server = await startServer('baseline', [path.join(here, 'baseline.mjs'), '0', '--exit-on-stdin-eof'], pin);
        c.args = async () => ['--baseline'];
      } else {
        const dataDir = fs.mkdtempSync(path.join(tmp, 'data-'));
        const configText = [
          'listen = 127.0.0.1:0',
          `data_dir = ${dataDir}`,
          'app_token = bench-app-token',
          `durable = ${c.durable}`,
          'rate_limit = 10000000',
          `module_dir = ${modDir}`,
          ...Array(c.modules).fill('module pass'),
          '',
        ].join('\n');
        c.server = await startServer(c.name, [path.join(here, 'run.mjs'), '--server-child', JSON.stringify({ configText })], pin);
        // Fresh users for every run: what one run leaves unacknowledged in the
        // store stays with its users and never reaches the next one.
        c.args = async (attempt) => {
          const tokens = [];
          for (let i = 0; i < o.connections; i++) tokens.push((await api(c.server.port, { op: 'useradd', address: `r${attempt}u${i}` })).token);
          const file = path.join(tmp, `tokens-${configs.indexOf(c)}-${attempt}`);
          fs.writeFileSync(file, tokens.join('\n') + '\n');
          return ['--tokens', file];
        };
      }
      c.runs = [];
    }
    console.error(`e2e: ${configs.length} configurations x ${o.reps} repetitions x ${o.seconds} s, ${o.connections} connections, ${modeText}`);
    // A run during which other processes used more than --max-other % of a
    // core is repeated (the machine is shared), at most --retries extra times
    // per configuration; the table then uses the quietest --reps runs. Each
    // round starts at a different configuration, so none always runs first.
    const maxAttempts = o.reps + (o['max-other'] > 0 ? o.retries : 0);
    for (let round = 0; round < maxAttempts; round++) {
      for (const c of [...configs.slice(round % configs.length), ...configs.slice(0, round % configs.length)]) {
        if (c.runs.filter((r) => quietEnough(r, o)).length >= o.reps || c.runs.length >= maxAttempts) continue;
        try {
          const res = await runLoadgen(bin, [...common, '--port', String(c.server.port), ...(await c.args(c.runs.length))], o, c.server.child.pid, pin);
          c.runs.push(res);
          console.error(
            `  ${c.name}: ${Math.round(res.msgPerSec)} msg/s, p50 ${res.p50Ms} ms, server CPU ${res.serverCpuPct.toFixed(0)}%, other processes ${res.otherCpuPct.toFixed(0)}%${quietEnough(res, o) ? '' : ' (busy machine: will repeat)'}`,
          );
        } catch (e) {
          throw new Error(`${c.name}: ${e.message}\n${c.baseline ? 'baseline' : 'server'} stderr:\n${c.server.stderr()}`);
        }
      }
    }
    for (const c of configs) c.used = [...c.runs].sort((a, b) => a.otherCpuPct - b.otherCpuPct).slice(0, o.reps);
    for (const c of configs) await stopChild(c.server.child);
  } finally {
    killAll();
  }

  const base = median(configs[0].used.map((r) => r.msgPerSec));
  const cpu = (fs.readFileSync('/proc/cpuinfo', 'utf8').match(/model name\s*:\s*(.*)/) ?? [, os.arch()])[1];
  const f = (x, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : 'n/a');
  console.log(`# bench/e2e  ${startedAt}  ${version}`);
  console.log(
    `# ${cpu}, ${cores} cores, node ${process.version}; ${o.connections} connections (${o.connections / 2} pairs), ${modeText}, ${o.size}-byte data, ` +
      `${o.reps} x ${o.seconds} s (+${o.warmup} s warm-up), median of each column; ${pin ? `server pinned to core ${pin.server}, generator to core ${pin.gen}` : 'not pinned'}`,
  );
  console.log('');
  const lateCol = o.rate > 0;
  console.log(
    `| configuration | delivered msg/s | % of baseline | p50 ms | p99 ms | p99.9 ms |${lateCol ? ' sent >1 ms late % |' : ''} generator CPU % (user part) | server CPU % | other processes CPU % | runs used (msg/s) |`,
  );
  console.log(`|---|---:|---:|---:|---:|---:|${lateCol ? '---:|' : ''}---:|---:|---:|---|`);
  let busy = false;
  for (const c of configs) {
    const m = (k) => median(c.used.map((r) => r[k]));
    const rate = m('msgPerSec');
    const noisy = c.used.filter((r) => !quietEnough(r, o)).length;
    busy ||= noisy > 0;
    console.log(
      `| ${c.name} | ${Math.round(rate).toLocaleString('en-US')} | ${f((100 * rate) / base, 1)} | ${f(m('p50Ms'))} | ${f(m('p99Ms'))} | ${f(m('p999Ms'))} | ${lateCol ? `${f(median(c.used.map((r) => (100 * r.late) / Math.max(1, r.sent))), 1)} | ` : ''}` +
        `${f(m('cpuPct'), 0)} (${f(m('cpuUserPct'), 0)}) | ${f(m('serverCpuPct'), 0)} | ${f(m('otherCpuPct'), 0)}${noisy ? ' (busy)' : ''} | ${c.used.map((r) => Math.round(r.msgPerSec)).join(', ')} |`,
    );
  }
  console.log('');
  console.log(
    'CPU columns: % of one core over the measured window; the generator\'s user part is its own code, the rest is the kernel (loopback TCP, ' +
      'which also runs much of the receiving side\'s network stack in the sender\'s time). "Other processes" is what the rest of the machine used meanwhile (all cores together). ' +
      `Runs during which other processes used more than ${o['max-other']}% were repeated (up to ${o.retries} extra time${o.retries === 1 ? '' : 's'} per configuration)` +
      (busy ? '; rows marked (busy) still include such runs.' : '.') +
      (lateCol ? ' Latency is measured from when a message fell due, so "sent >1 ms late" (the generator or its window fell behind) is part of it.' : ''),
  );
}

/** Whether the rest of the machine stayed under --max-other during run `r`. */
function quietEnough(r, o) {
  return !(o['max-other'] > 0) || r.otherCpuPct <= o['max-other'];
}

if (process.argv[2] === '--server-child') {
  await serverChild(JSON.parse(process.argv[3]));
} else {
  await main();
}
