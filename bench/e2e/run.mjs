// bench/e2e: end-to-end throughput and latency of Switchboard, side by side
// with two uWebSockets.js routers (bench/e2e/baseline.mjs) in the same run.
//
//   npm run build:ts && node bench/e2e/run.mjs [--seconds 3] [--connections 32,1000]
//       [--reps 3] [--window 8 | --rate MSG_PER_S] [--extra-window 64] [--size 32]
//       [--warmup 0.5] [--max-other 20] [--retries 1] [--group MEMBERS]
//       [--parts throughput,latency,memory] [--servers baseline,mosquitto,switchboard,more,cluster]
//       [--loads 25,50] [--latency-reps 1] [--latency-retries 0] [--idle-connections 10000]
//
// Parts (all by default):
// - "throughput": the maximum of every row at --window messages in flight
//   per connection (default 8), at each --connections count; then at
//   --extra-window (default 64, 0: none) with the first count, a window where
//   uWebSockets.js writes nearly every frame with a send() call of its own and
//   so degrades: kept to show how much a ratio measured there flatters. With
//   --rate, a fixed rate instead of the maximum.
// - "latency": p50/p99/p99.9 at --loads % (default 25 and 50) of each row's
//   own maximum, with the largest connection count (needs "throughput";
//   skipped with --rate).
// - "memory": RSS per idle connection at --idle-connections, for a fresh
//   plain router and a fresh Switchboard.
// Rows (--servers): "baseline" is both routers, the plain one (each message
// published to its recipient; the recipient's delivered status read and
// dropped) and the status-frame one (the delivered status also forwarded to
// the sender: 4 frames per message, as Switchboard has); "mosquitto" is
// Mosquitto 2 (MQTT 3.1.1, QoS 0, each receiver publishing its delivered
// status to the sender; skipped with a note if the binary is missing);
// "switchboard" is durable off with 0 and 3 PASS modules and durable on with
// 3; "more" adds durable on with 0, durable_grace 0, one TS module (sync and
// async) and the filter module; "cluster" (not in the default set) is the
// PostgreSQL store against SQLite on one node, and two nodes on one
// nats-server and one PostgreSQL with every message crossing between them
// against the same two nodes with both ends of each pair on one node, in a
// table of its own (docs/performance.md, "Cluster"). Every row is printed
// with its ratio to both routers.
//
// It builds the C load generator (bench/e2e/loadgen.c) into build-bench/e2e/.
// Each server runs in its own child process; with taskset and 2+ cores the
// server is pinned to core 0 and the generator to core 1. All servers start
// first; then the runs go round-robin over the rows (fresh users for each
// Switchboard run, so nothing a run leaves in the store reaches the next), and
// each column is the median over the repetitions. The machine may be shared:
// a run during which other processes used more than --max-other % of a core is
// repeated (at most --retries extra runs per row; --max-other 0 turns this
// off). A row whose generator used GEN_BUSY_PCT % or more of its core is
// marked: it may measure the generator, not the server. Prints markdown
// tables on stdout, progress on stderr.
//
// Internal: `run.mjs --server-child CONFIG_JSON` is the Switchboard child.
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { startBackends, storeCounters } from './cluster.mjs';

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
  // "gc" on stdin (the memory part runs this child with --expose-gc): collect, then answer "GC done".
  let line = '';
  process.stdin.on('data', (d) => {
    line += d;
    if (line.includes('\n')) {
      line = '';
      globalThis.gc?.();
      process.stdout.write('GC done\n');
    }
  });
  process.stdin.resume();
  process.stdout.write(`PORT ${server.port}\n`);
}

// --- the parent -------------------------------------------------------------------

/** A generator at or above this % of its core may be what limits a row: such rows are marked. */
const GEN_BUSY_PCT = 90;

function parseArgs(argv) {
  const o = {
    seconds: 3, connections: [32, 1000], reps: 3, window: 0, 'extra-window': 64, rate: 0, size: 32, warmup: 0.5, 'max-other': 20, retries: 1, group: 0,
    loads: [25, 50], 'latency-reps': 1, 'latency-retries': 0, 'idle-connections': 10000,
  };
  const lists = { parts: ['throughput', 'latency', 'memory'], servers: ['baseline', 'mosquitto', 'switchboard', 'more', 'cluster'] };
  const numberLists = new Set(['connections', 'loads']);
  const usage = (bad) => {
    console.error(
      'usage: node bench/e2e/run.mjs [--seconds N] [--connections N[,N...]] [--reps N] [--window W | --rate MSG_PER_S] [--extra-window W] [--size BYTES] [--warmup S]\n' +
        '         [--max-other PCT] [--retries N] [--group MEMBERS] [--parts throughput,latency,memory] [--servers baseline,mosquitto,switchboard,more,cluster]\n' +
        '         [--loads PCT[,PCT...]] [--latency-reps N] [--latency-retries N] [--idle-connections N]\n' +
        `(bad argument: ${bad})`,
    );
    process.exit(2);
  };
  const fail = (msg) => {
    console.error(msg);
    process.exit(2);
  };
  for (let i = 0; i < argv.length; i++) {
    const key = argv[i].replace(/^--/, '');
    if (key in lists && i + 1 < argv.length) {
      const items = argv[++i].split(',').filter(Boolean);
      if (!items.length || items.some((x) => !lists[key].includes(x))) usage(`${argv[i - 1]} ${argv[i]}`);
      o[key] = new Set(items);
      continue;
    }
    if (numberLists.has(key) && i + 1 < argv.length) {
      const items = argv[++i].split(',').filter(Boolean).map(Number);
      if (!items.length || items.some((x) => !Number.isFinite(x) || x <= 0)) usage(`${argv[i - 1]} ${argv[i]}`);
      o[key] = [...new Set(items)];
      continue;
    }
    if (!(key in o) || i + 1 >= argv.length || !Number.isFinite(Number(argv[i + 1]))) usage(argv[i]);
    o[key] = Number(argv[++i]);
  }
  // "more" and "cluster" only when asked for: the default run stays near the time budget of `npm run bench`.
  const defaults = { parts: lists.parts, servers: ['baseline', 'mosquitto', 'switchboard'] };
  for (const k of Object.keys(lists)) if (!(o[k] instanceof Set)) o[k] = new Set(defaults[k]);
  if (o.parts.has('latency') && o.rate > 0) o.parts.delete('latency');
  if (o.parts.has('latency')) o.parts.add('throughput');
  if (o['idle-connections'] < 2 || o['idle-connections'] % 2) fail('--idle-connections must be even and at least 2');
  if (o.connections.some((n) => n < 2 || n % 2 || !Number.isInteger(n))) fail('--connections must be even (connections are paired) and at least 2');
  if (o.window < 0 || o['extra-window'] < 0) fail('--window and --extra-window cannot be negative');
  // 8 in flight per connection finds the maximum; in rate mode the window only bounds what is in flight.
  o.window ||= o.rate > 0 ? 4096 : 8;
  if (o.loads.some((x) => x >= 100)) fail('--loads are percentages of each maximum, under 100');
  if (o.group && (o.group < 2 || o.connections.some((n) => n % o.group))) fail('--group N needs N >= 2 dividing every --connections count');
  // Group fan-out has no MQTT mode (a broker also delivers to the sender), its
  // baseline receivers send no statuses (its frames do not say who sent them),
  // and it measures throughput at one window only.
  if (o.group) {
    o.servers.delete('mosquitto');
    // The two cluster rows share one database: their groups would collide.
    o.servers.delete('cluster');
    o.parts.delete('latency');
    o.parts.delete('memory');
    o['extra-window'] = 0;
  }
  // With --rate the window is the generator's bound on what is in flight, not the load: no second window.
  if (o.rate > 0) o['extra-window'] = 0;
  if (o['extra-window'] === o.window) o['extra-window'] = 0;
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
function startServer(name, args, pin, nodeFlags = []) {
  // SWITCHBOARD_BENCH_NODE_FLAGS="--cpu-prof --cpu-prof-dir=/tmp/prof" profiles each server.
  nodeFlags = [...nodeFlags, ...(process.env.SWITCHBOARD_BENCH_NODE_FLAGS ?? '').split(' ').filter(Boolean)];
  const [cmd, argv] = pin ? ['taskset', ['-c', pin.server, process.execPath, ...nodeFlags, ...args]] : [process.execPath, [...nodeFlags, ...args]];
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
        resolve({ child, port: Number(m[1]), stderr: () => err, stdout: () => out });
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

/** CPU ticks of every process in `pids` (a list, or a function returning one), by PID. */
function ticksByPid(pids) {
  const m = new Map();
  for (const pid of typeof pids === 'function' ? pids() : pids) m.set(pid, cpuTicks(pid));
  return m;
}

/** Ticks used between two ticksByPid() readings: processes that started meanwhile count from 0, those that ended are lost. */
function ticksBetween(a, b) {
  let t = 0;
  for (const [pid, v] of b) if (Number.isFinite(v)) t += v - (a.get(pid) ?? 0);
  return t;
}

/**
 * One generator run; resolves with its RESULT plus the server's CPU % over the measured window. `serverPid` may be a
 * list (the nodes of a cluster): serverCpuPct is their sum, serverCpuEach each one's. `hooks.sides` names other
 * processes the row runs on ({ NATS: () => [pid], ... }): their CPU % goes to r.sideCpuPct and not to "other processes".
 */
function runLoadgen(bin, args, o, serverPid, pin, hooks = {}) {
  const serverPids = Array.isArray(serverPid) ? serverPid : [serverPid];
  const sides = Object.entries(hooks.sides ?? {});
  const [cmd, argv] = pin ? ['taskset', ['-c', pin.gen, bin, ...args]] : [bin, args];
  const child = track(spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'] }));
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (err = (err + d).slice(-4000)));
  // The server's CPU over the generator's measured window, which the generator marks on stdout.
  const hz = 100; // USER_HZ: /proc/PID/stat counts in 1/100 s on Linux
  let t0 = null;
  let t1 = null;
  let busy0 = NaN;
  let busy1 = NaN;
  let side0 = null;
  let side1 = null;
  const sideTicks = () => sides.map(([, pids]) => ticksByPid(pids));
  child.stdout.on('data', () => {
    if (!t0 && out.includes('MEASURE start')) {
      [t0, side0, busy0] = [serverPids.map(cpuTicks), sideTicks(), machineBusyTicks()];
      hooks.onStart?.();
    }
    if (!t1 && out.includes('MEASURE end')) {
      [t1, side1, busy1] = [serverPids.map(cpuTicks), sideTicks(), machineBusyTicks()];
      hooks.onEnd?.();
    }
  });
  const limit = (o.warmup + o.seconds + 20 + (hooks.extraS ?? 0)) * 1000;
  const kill = setTimeout(() => child.kill('SIGKILL'), limit);
  return new Promise((resolve, reject) => {
    child.on('exit', (code, sig) => {
      clearTimeout(kill);
      const m = /RESULT (\{.*\})/.exec(out);
      if (!m) return reject(new Error(`loadgen failed (${code ?? sig}):\n${err}`));
      const r = JSON.parse(m[1]);
      if (r.errors || r.closed) return reject(new Error(`loadgen saw ${r.errors} error frames and ${r.closed} lost connections:\n${err}`));
      const secs = hooks.seconds ?? o.seconds;
      const pct = (ticks) => (ticks / hz / secs) * 100;
      r.serverCpuEach = t0 && t1 ? serverPids.map((_, i) => pct(t1[i] - t0[i])) : serverPids.map(() => NaN);
      r.serverCpuPct = r.serverCpuEach.reduce((a, b) => a + b, 0);
      r.sideCpuPct = Object.fromEntries(sides.map(([name], i) => [name, side0 && side1 ? pct(ticksBetween(side0[i], side1[i])) : NaN]));
      const sideSum = Object.values(r.sideCpuPct).reduce((a, b) => a + b, 0);
      r.otherCpuPct = Math.max(0, pct(busy1 - busy0) - r.serverCpuPct - sideSum - r.cpuPct);
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

/** A free TCP port on 127.0.0.1 (for Mosquitto, which cannot listen on port 0 and tell us). */
function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Starts Mosquitto with a temporary config on a free loopback port; resolves once it accepts connections. */
async function startMosquitto(tmp, pin) {
  const port = await freePort();
  const conf = path.join(tmp, 'mosquitto.conf');
  fs.writeFileSync(conf, [`listener ${port} 127.0.0.1`, 'allow_anonymous true', 'persistence false', 'set_tcp_nodelay true', 'log_dest stderr', 'log_type error', 'log_type warning', ''].join('\n'));
  const [cmd, argv] = pin ? ['taskset', ['-c', pin.server, 'mosquitto', '-c', conf]] : ['mosquitto', ['-c', conf]];
  const child = track(spawn(cmd, argv, { stdio: ['ignore', 'ignore', 'pipe'] }));
  let err = '';
  child.stderr.on('data', (d) => (err = (err + d).slice(-4000)));
  const deadline = Date.now() + 10000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`mosquitto exited (${child.exitCode}) before it listened; its stderr:\n${err}`);
    const ok = await new Promise((r) => {
      const s = net.connect(port, '127.0.0.1', () => (s.destroy(), r(true)));
      s.on('error', () => r(false));
    });
    if (ok) return { child, port, stderr: () => err };
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`mosquitto did not listen within 10 s; its stderr:\n${err}`);
}

function hasCommand(cmd) {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** Resident memory of process `pid` in KB (VmRSS). */
function rssKb(pid) {
  const m = /VmRSS:\s*(\d+)\s*kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : NaN;
}

/** `n` users made through POST /api, `conc` requests at a time; returns their tokens. */
async function makeUsers(port, prefix, n, conc = 32) {
  const tokens = new Array(n);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(conc, n) }, async () => {
      while (next < n) {
        const i = next++;
        tokens[i] = (await api(port, { op: 'useradd', address: `${prefix}${i}` })).token;
      }
    }),
  );
  return tokens;
}

/** Script modules for the TypeScript-module rows: one PASS decided at once, one decided by a resolved Promise. */
const SCRIPTS = {
  sync: 'module.exports = { onMessage() { return "pass"; } };\n',
  async: 'module.exports = { async onMessage() { return "pass"; } };\n',
};

function switchboardConfigText(tmp, modDir, durable, modules, script = null, filter = false, grace = null, extra = []) {
  const dataDir = fs.mkdtempSync(path.join(tmp, 'data-'));
  let scriptBlock = [];
  if (script) {
    const file = path.join(tmp, `script-${script}.js`);
    fs.writeFileSync(file, SCRIPTS[script]);
    scriptBlock = [`module ts_${script} {`, `\tscript = ${file}`, '}'];
  }
  return [
    'listen = 127.0.0.1:0',
    `data_dir = ${dataDir}`,
    'app_token = bench-app-token',
    `durable = ${durable}`,
    ...(grace === null ? [] : [`durable_grace = ${grace}`]),
    'rate_limit = 10000000',
    // Every connection comes from the one generator's IP, and the memory part opens 10,000 of them.
    'max_connections_per_ip = 0',
    'max_unauthenticated_per_ip = 0',
    `module_dir = ${modDir}`,
    ...Array(modules).fill('module pass'),
    ...(filter ? ['module filter {', `\tpath = ${path.join(root, 'build/modules/mesibo_mod_filter.so')}`, '\tblocked_words = spam, scam, phishing, malware', '}'] : []),
    ...scriptBlock,
    ...extra,
    '',
  ].join('\n');
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  process.on('exit', killAll);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'])
    process.on(sig, () => {
      killAll();
      process.exit(130);
    });

  if ((o.servers.has('switchboard') || o.servers.has('more')) && !fs.existsSync(path.join(root, 'dist/index.js'))) {
    console.error('dist/index.js is missing: run `npm run build:ts` first');
    process.exit(1);
  }
  const notes = [];
  if (o.servers.has('mosquitto') && o.parts.has('throughput') && !hasCommand('mosquitto')) {
    o.servers.delete('mosquitto');
    notes.push('Mosquitto was skipped: no `mosquitto` binary (apt-get install -y mosquitto).');
  }
  const startedAt = new Date().toISOString();
  const t0 = Date.now();
  const load0 = os.loadavg();
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
  const cpu = (fs.readFileSync('/proc/cpuinfo', 'utf8').match(/model name\s*:\s*(.*)/) ?? [, os.arch()])[1];
  const f = (x, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : 'n/a');
  const int = (x) => (Number.isFinite(x) ? Math.round(x).toLocaleString('en-US') : 'n/a');
  const ratio = (x, of) => (Number.isFinite(x) && of > 0 ? `${(x / of).toFixed(2)}x` : 'n/a');
  const pinText = pin ? `server pinned to core ${pin.server}, generator to core ${pin.gen}` : 'not pinned';
  const loadText = (l) => l.map((x) => x.toFixed(2)).join(' ');

  console.log(`# bench/e2e  ${startedAt}  ${version}`);
  console.log(
    `# ${cpu}, ${cores} cores, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Linux ${os.release()}, node ${process.version}${hasCommand('mosquitto') ? `, ${(() => { try { return execFileSync('mosquitto', ['-h'], { encoding: 'utf8' }).split('\n')[0]; } catch (e) { return String(e.stdout ?? '').split('\n')[0] || 'mosquitto'; } })()}` : ''}; ${pinText}; load average at start ${loadText(load0)}`,
  );

  const W = o.window;
  const windowText = (w) => (o.rate > 0 ? `fixed rate ${o.rate} msg/s in total (window ${w})` : `window ${w} per connection`);
  const modeArgs = (w) => [...(o.rate > 0 ? ['--rate', String(o.rate)] : []), '--window', String(w)];
  const base = (seconds, conns) => [
    '--host', '127.0.0.1', '--conns', String(conns), '--seconds', String(seconds), '--warmup', String(o.warmup), '--size', String(o.size), '--ready-timeout', '60',
    ...(o.group ? ['--group', String(o.group)] : []),
  ];
  const configs = [];
  if (o.servers.has('baseline')) {
    configs.push({ name: 'uWS.js router, plain', kind: 'plain' });
    // In group mode the receivers send no statuses to the router: there is nothing to forward.
    if (!o.group) configs.push({ name: 'uWS.js router + status frame', kind: 'status' });
  }
  if (o.servers.has('mosquitto')) configs.push({ name: 'Mosquitto 2 + status publish (MQTT 3.1.1, QoS 0)', kind: 'mosquitto' });
  const sb = (name, more) => configs.push({ name: `Switchboard, ${name}`, kind: 'switchboard', modules: 0, durable: 'off', ...more });
  if (o.servers.has('switchboard')) {
    sb('durable off, 0 modules', {});
    sb('durable off, 3 PASS modules', { modules: 3 });
    sb('durable on, 3 PASS modules', { durable: 'on', modules: 3 });
  }
  if (o.servers.has('more')) {
    sb('durable on, 0 modules', { durable: 'on' });
    // Every copy committed before it goes out, instead of live copies
    // confirmed by the recipient (the default).
    sb('durable on, 3 PASS modules, durable_grace 0', { durable: 'on', modules: 3, grace: 0 });
    // One TypeScript module after the 3 native ones: what a JS call per
    // message costs, decided at once and through a Promise (deferred verdict).
    for (const script of ['sync', 'async']) sb(`durable off, 3 PASS modules + 1 TS ${script} PASS`, { modules: 3, script });
    // A module that reads every payload.
    sb('durable off, filter module', { filter: true });
  }
  if (o.servers.has('cluster')) {
    // Durable on with 3 PASS modules, as the last "switchboard" row; each pair of rows is compared in one run.
    const cl = (name, more) => configs.push({ name, kind: 'switchboard', durable: 'on', modules: 3, cluster: true, ...more });
    cl('Switchboard on SQLite, 1 node', { store: 'sqlite' });
    cl('Switchboard on PostgreSQL, 1 node', { store: 'pg' });
    // The same two nodes for both rows; their users share one database, hence prefixes of their own (same length as "r").
    cl('2 nodes, NATS + PostgreSQL, each pair across the nodes', { store: 'pg', nodes: 2, spread: 'cross', prefix: 'x' });
    cl('2 nodes, NATS + PostgreSQL, each pair on one node', { store: 'pg', nodes: 2, spread: 'same', prefix: 's' });
  }
  const isRouter = (c) => c.kind === 'plain' || c.kind === 'status';

  /** The cluster rows again, with what only they have: each compared with its reference, CPU per process, the store's write rate. */
  const clusterTables = (plan, window) => {
    const medOf = (p, get) => median(p.used.map(get));
    console.log('');
    console.log(`## Cluster: PostgreSQL against SQLite, messages across two nodes against within one, ${windowText(window)}`);
    for (const conns of o.connections) {
      const rows = plan.filter((p) => p.c.cluster && p.conns === conns && p.window === window);
      const find = (pred) => rows.find((p) => pred(p.c));
      const reference = (c) =>
        c.nodes ? (c.spread === 'cross' ? find((d) => d.nodes && d.spread === 'same') : null) : c.store === 'pg' ? find((d) => d.store === 'sqlite') : null;
      console.log('');
      console.log(`# ${conns} connections (${conns / 2} pairs), durable on, 3 PASS modules, ${o.reps} x ${o.seconds} s (+${o.warmup} s warm-up), median of each column`);
      console.log('');
      console.log(
        '| configuration | delivered msg/s | ratio | p50 ms | p99 ms | generator CPU % (user part) | node CPU % | NATS CPU % | PostgreSQL CPU % | other processes CPU % | store commits/s | copies stored/s | WAL KiB/s | WAL bytes per message | runs used (msg/s) |',
      );
      console.log('|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|');
      for (const p of rows) {
        const ref = reference(p.c);
        const ratioText = ref ? `${ratio(p.max, ref.max)} ${p.c.nodes ? 'of on one node' : 'of SQLite'}` : '(reference)';
        const nodesCpu = p.used[0].serverCpuEach.map((_, i) => f(medOf(p, (r) => r.serverCpuEach[i]), 0)).join(' + ');
        const side = (k) => (k in p.used[0].sideCpuPct ? f(medOf(p, (r) => r.sideCpuPct[k]), 0) : '-');
        const wal = medOf(p, (r) => r.walBytesPerS ?? NaN);
        const perMsg = median(p.used.map((r) => (r.walBytesPerS ?? NaN) / r.msgPerSec));
        console.log(
          `| ${p.c.name} | ${int(p.max)}${genMark(p)} | ${ratioText} | ${f(med(p, 'p50Ms'))} | ${f(med(p, 'p99Ms'))} | ${f(med(p, 'cpuPct'), 0)} (${f(med(p, 'cpuUserPct'), 0)})${genMark(p)} | ` +
            `${nodesCpu} | ${side('NATS')} | ${side('PostgreSQL')} | ${f(med(p, 'otherCpuPct'), 0)}${busyMark(p)} | ${int(med(p, 'commitsPerS'))} | ${int(med(p, 'copiesPerS'))} | ` +
            `${Number.isFinite(wal) ? int(wal / 1024) : '-'} | ${Number.isFinite(perMsg) ? f(perMsg, 1) : '-'} | ${p.used.map((r) => Math.round(r.msgPerSec)).join(', ')} |`,
        );
      }
    }
    console.log('');
    console.log(
      (pin
        ? `Where each process runs: every node, nats-server and PostgreSQL (the postmaster and every backend) on core ${pin.server}, the generator on core ${pin.gen}. ` +
          'A two-node row is two nodes, NATS and PostgreSQL sharing one core: its absolute rate is what one core does for all of them, not what two nodes on two machines would do; ' +
          'the ratio of "across the nodes" to "on one node" (same nodes, same core, same run) is what the figures say. '
        : 'Not pinned: every process may run on any core. ') +
        'Across: connection i on node i % 2, so both ends of every pair are on different nodes and every message, delivered status and "sent" crosses NATS; ' +
        'on one node: connection i on node (i / 2) % 2, both ends of each pair on one node, half the pairs on each. Users are made through the first node\'s API (they are in PostgreSQL for both). ' +
        '"Node CPU" is each node\'s process; "PostgreSQL CPU" all its processes. "Store commits/s" and "copies stored/s" are the nodes\' own counters (/metrics: ' +
        'switchboard_store_commit_seconds_count, switchboard_store_copies_written_total) over the measured window, summed over the nodes; "WAL" is how far PostgreSQL\'s WAL insert position ' +
        'moved meanwhile (pg_current_wal_insert_lsn), per second and per delivered message: every write to PostgreSQL, by any database, is in it. ' +
        'With durable on, a copy its recipient confirms within durable_grace (50 ms) is never written; the copies stored are those that waited longer.',
    );
  };

  /**
   * Runs `plan` (a list of {c, conns, args, label}) round-robin until each has `reps` quiet runs or reps + retries
   * runs; a run during which other processes used more than --max-other % is repeated (the machine is shared).
   * Each round starts at a different item, so none always runs first. Each item gets .used: its quietest `reps` runs.
   */
  const runPlan = async (plan, reps, seconds, retries) => {
    const maxAttempts = reps + (o['max-other'] > 0 ? retries : 0);
    for (const p of plan) p.runs = [];
    for (let round = 0; round < maxAttempts; round++) {
      for (const p of [...plan.slice(round % plan.length), ...plan.slice(0, round % plan.length)]) {
        if (p.runs.filter((r) => quietEnough(r, o)).length >= reps || p.runs.length >= maxAttempts) continue;
        try {
          const nodes = p.c.nodesStarted;
          const target = nodes ? ['--ports', nodes.map((s) => s.port).join(','), '--spread', p.c.spread] : ['--port', String(p.c.server.port)];
          // --linger: the generator keeps its connections until after the window's counters are read (their closes would store what is in flight).
          const args = [...base(seconds, p.conns), ...p.args, ...target, ...(p.c.cluster ? ['--linger', '0.5'] : []), ...(await p.c.auth(p.conns))];
          // Cluster rows: the nodes' commit counters and PostgreSQL's WAL position as the measured window opens and closes.
          const snaps = [];
          const snapshot = () => Promise.all([Promise.all((nodes ?? [p.c.server]).map((s) => storeCounters(s.port))), p.c.store === 'pg' ? backends.walBytes() : NaN]);
          const hooks = { seconds, extraS: 60, sides: p.c.sides, ...(p.c.cluster ? { onStart: () => snaps.push(snapshot()), onEnd: () => snaps.push(snapshot()) } : {}) };
          const res = await runLoadgen(bin, args, o, nodes ? nodes.map((s) => s.child.pid) : p.c.server.child.pid, pin, hooks);
          if (snaps.length === 2) {
            const [[n0, wal0], [n1, wal1]] = await Promise.all(snaps);
            const sum = (ns, k) => ns.reduce((a, x) => a + x[k], 0);
            res.commitsPerS = (sum(n1, 'commits') - sum(n0, 'commits')) / seconds;
            res.copiesPerS = (sum(n1, 'copies') - sum(n0, 'copies')) / seconds;
            res.walBytesPerS = (wal1 - wal0) / seconds;
          }
          const wrong = confirmationsWrong(p.c, res, o);
          if (wrong) throw new Error(`the statuses that came back do not match the row (${wrong}): the run would not measure what its row says`);
          p.runs.push(res);
          const sideText = Object.entries(res.sideCpuPct).map(([k, v]) => `, ${k} CPU ${v.toFixed(0)}%`).join('');
          const storeText = Number.isFinite(res.commitsPerS) ? `, ${Math.round(res.commitsPerS)} commits/s, ${Math.round(res.copiesPerS)} copies stored/s${Number.isFinite(res.walBytesPerS) ? `, WAL ${Math.round(res.walBytesPerS / 1024)} KiB/s` : ''}` : '';
          console.error(
            `  ${p.c.name}, ${p.conns} conns${p.label ?? ''}: ${Math.round(res.msgPerSec)} msg/s, p50 ${res.p50Ms} ms, p99 ${res.p99Ms} ms, generator CPU ${res.cpuPct.toFixed(0)}%, server CPU ${res.serverCpuEach.map((x) => x.toFixed(0)).join('+')}%${sideText}${storeText}, other processes ${res.otherCpuPct.toFixed(0)}%${quietEnough(res, o) ? '' : ' (busy machine: will repeat)'}`,
          );
        } catch (e) {
          const stderrs = (p.c.nodesStarted ?? [p.c.server]).map((s, k) => `${p.c.nodesStarted ? `node ${k} ` : 'server '}(${s.child.exitCode ?? s.child.signalCode ?? 'running'}) stderr:\n${s.stderr()}`);
          throw new Error(`${p.c.name}: ${e.message}\n${stderrs.join('\n')}`);
        }
      }
    }
    for (const p of plan) p.used = [...p.runs].sort((a, b) => a.otherCpuPct - b.otherCpuPct).slice(0, reps);
  };
  const med = (p, k) => median(p.used.map((r) => r[k]));
  const busyMark = (p) => (p.used.some((r) => !quietEnough(r, o)) ? ' (busy)' : '');
  const genBound = (p) => med(p, 'cpuPct') >= GEN_BUSY_PCT;
  const genMark = (p) => (genBound(p) ? ' !' : '');
  const lateText = (p) => f(median(p.used.map((r) => (100 * r.late) / Math.max(1, r.sent))), 1);
  const cpuNote =
    'CPU columns: % of one core over the measured window. "Generator CPU" is the generator process (user + system; the user part, its own code, in brackets): ' +
    'the system part is the kernel\'s loopback TCP, which runs much of the receiving socket\'s work in the sender\'s time, so it grows with the rate. ' +
    `A generator at ${GEN_BUSY_PCT} % or more of its core is marked "!": that row may measure the generator, and its ratio is a lower bound for whichever side was held back. ` +
    '"Other processes" is what the rest of the machine used meanwhile (all cores together). ' +
    `Runs during which other processes used more than ${o['max-other']}% were repeated (up to ${o.retries} extra time${o.retries === 1 ? '' : 's'} per row; latency rows: ${o['latency-retries']}); rows marked (busy) still include such runs.`;
  const routersNote = o.group
    ? 'Group fan-out: the plain router publishes each message to its group\'s topic; its receivers send it nothing back (its frames do not say who sent them), ' +
      'while Switchboard\'s receivers confirm every delivery with status 2, as the SDK does, so Switchboard handles more frames per delivery than the router here.'
    : 'The plain router publishes each message to its recipient and drops the delivered status it gets back (2 frames routed per message); the router + status frame also forwards ' +
    'that status to the sender (4 frames per message, as Switchboard: message in, delivery out, status in, "sent" out). Every receiver confirms every delivery with status 2, as the SDK does, ' +
    'to both routers and to Switchboard; the window counts a connection\'s messages without their status back (Switchboard: "sent"; router + status frame: the forwarded status) ' +
    'and those not yet received by the peer.' +
    (o.servers.has('mosquitto') ? ' Mosquitto: QoS 0 has no acknowledgement, so each receiver publishes its delivered status to the sender\'s topic (QoS 0), as the router + status frame forwards it: 4 frames per message.' : '');

  let backends = null;
  try {
    if (o.parts.has('throughput') && configs.some((c) => c.store === 'pg')) {
      backends = await startBackends({ nats: configs.some((c) => c.nodes), core: pin?.server });
      const where = pin ? `pinned to core ${pin.server} with the servers` : 'not pinned';
      console.log(
        `# cluster rows: PostgreSQL ${backends.pg.port} (fsync on${backends.nats ? `), nats-server ${backends.nats.port}` : ')'}, every process of both ${where}; ` +
          `a two-node row runs both nodes on core ${pin?.server ?? '(any)'} too, so nodes, NATS and PostgreSQL share one core while the generator has the other`,
      );
    }
    if (o.parts.has('throughput') && configs.length) {
      // Every server starts first and idles until its turn, so the repetitions can
      // go round-robin: a burst of load from elsewhere on the machine then lands
      // on one repetition of several rows, not on every repetition of one.
      for (const c of configs) {
        if (isRouter(c)) {
          c.server = await startServer(c.name, [path.join(here, 'baseline.mjs'), '0', ...(c.kind === 'status' ? ['--status'] : []), '--exit-on-stdin-eof'], pin);
          c.auth = async () => ['--baseline', ...(c.kind === 'status' ? ['--status-router'] : [])];
        } else if (c.kind === 'mosquitto') {
          c.server = await startMosquitto(tmp, pin);
          c.auth = async () => ['--mqtt', '--status-router'];
        } else {
          const start = (name, extra) =>
            startServer(name, [path.join(here, 'run.mjs'), '--server-child', JSON.stringify({ configText: switchboardConfigText(tmp, modDir, c.durable, c.modules, c.script, c.filter, c.grace ?? null, extra) })], pin);
          if (c.nodes) {
            // The two-node rows share their nodes: started with the first of them.
            const twin = configs.find((d) => d !== c && d.nodes && d.cluster && d.nodesStarted);
            if (twin) c.nodesStarted = twin.nodesStarted;
            else {
              const url = backends.pg.url(await backends.pg.createDatabase());
              c.nodesStarted = [];
              // One at a time: the first creates the schema.
              for (let k = 0; k < c.nodes; k++) c.nodesStarted.push(await start(`${c.name}, node ${k}`, [`store = ${url}`, `cluster = ${backends.nats.url}`, `node = bench-${k}`]));
            }
            c.server = c.nodesStarted[0];
            c.sides = { NATS: backends.natsPids, PostgreSQL: backends.pgPids };
          } else if (c.store === 'pg') {
            c.server = await start(c.name, [`store = ${backends.pg.url(await backends.pg.createDatabase())}`]);
            c.sides = { PostgreSQL: backends.pgPids };
          } else {
            c.server = await start(c.name, []);
          }
          // Fresh users for every run: what one run leaves unacknowledged in the
          // store stays with its users and never reaches the next one.
          let attempt = 0;
          c.auth = async (conns) => {
            const n = attempt++;
            // Through the first node's API: the users are in PostgreSQL for every node.
            const tokens = await makeUsers(c.server.port, `${c.prefix ?? 'r'}${n}u`, conns);
            const file = path.join(tmp, `tokens-${configs.indexOf(c)}-${n}`);
            fs.writeFileSync(file, tokens.join('\n') + '\n');
            if (!o.group) return ['--tokens', file];
            // Fresh groups too: connections i*G .. i*G+G-1 are group base+i.
            const gidBase = 1000 + n * 10000;
            for (let g = 0; g < conns / o.group; g++) {
              const members = Array.from({ length: o.group }, (_, k) => `r${n}u${g * o.group + k}`);
              const r = await api(c.server.port, { op: 'groupadd', gid: gidBase + g, members });
              if (!r.ok) throw new Error(`groupadd failed: ${JSON.stringify(r)}`);
            }
            return ['--tokens', file, '--gid-base', String(gidBase)];
          };
        }
      }

      // --- part 1: maximum throughput (or a fixed rate) at --window, then at --extra-window -------
      const plan = [];
      for (const conns of o.connections) for (const c of configs) plan.push({ c, conns, window: W, args: modeArgs(W) });
      const xw = o['extra-window'];
      if (xw) for (const c of configs) plan.push({ c, conns: o.connections[0], window: xw, args: modeArgs(xw), label: `, window ${xw}` });
      console.error(
        `e2e throughput: ${configs.length} rows x ${o.connections.join(' and ')} connections, ${windowText(W)}${xw ? ` (and window ${xw} at ${o.connections[0]})` : ''}, ${o.reps} repetitions x ${o.seconds} s`,
      );
      await runPlan(plan, o.reps, o.seconds, o.retries);
      for (const p of plan) p.max = med(p, 'msgPerSec');
      const at = (kind, conns, window) => plan.find((p) => p.c.kind === kind && p.conns === conns && p.window === window)?.max;
      const groupText = (conns) => (o.group ? `${conns / o.group} groups of ${o.group}, each message delivered to ${o.group - 1} members; msg/s counts deliveries` : `${conns / 2} pairs`);

      const table = (window, conns) => {
        const rows = plan.filter((p) => p.window === window && p.conns === conns);
        const plain = at('plain', conns, window);
        const status = at('status', conns, window);
        console.log('');
        console.log(`# ${conns} connections (${groupText(conns)}), ${windowText(window)}, ${o.size}-byte data, ${o.reps} x ${o.seconds} s (+${o.warmup} s warm-up), median of each column`);
        console.log('');
        // At a fixed rate every server delivers the rate: ratios say nothing there, latency does.
        const fixed = o.rate > 0;
        console.log(
          `| configuration | delivered msg/s |${fixed ? '' : ' x plain router | x router + status |'} p50 ms | p99 ms | p99.9 ms |${fixed ? ' sent >1 ms late % |' : ''} generator CPU % (user part) | server CPU % | other processes CPU % | runs used (msg/s) |`,
        );
        console.log(`|---|---:|${fixed ? '' : '---:|---:|'}---:|---:|---:|${fixed ? '---:|' : ''}---:|---:|---:|---|`);
        for (const p of rows)
          console.log(
            `| ${p.c.name} | ${int(p.max)}${genMark(p)} |${fixed ? '' : ` ${ratio(p.max, plain)} | ${ratio(p.max, status)} |`} ${f(med(p, 'p50Ms'))} | ${f(med(p, 'p99Ms'))} | ${f(med(p, 'p999Ms'))} | ${fixed ? `${lateText(p)} | ` : ''}` +
              `${f(med(p, 'cpuPct'), 0)} (${f(med(p, 'cpuUserPct'), 0)})${genMark(p)} | ${f(med(p, 'serverCpuPct'), 0)} | ${f(med(p, 'otherCpuPct'), 0)}${busyMark(p)} | ${p.used.map((r) => Math.round(r.msgPerSec)).join(', ')} |`,
          );
      };

      console.log('');
      console.log(`## ${o.rate > 0 ? `Fixed rate ${o.rate} msg/s` : `Maximum throughput, ${W} in flight per connection`}`);
      if (o.connections.length > 1 && !o.rate) {
        // The summary: one row per configuration, a column per connection count, both ratios beside each rate.
        console.log('');
        console.log(`| delivered msg/s (x plain router, x router + status) | ${o.connections.map((n) => `${int(n)} connections`).join(' | ')} |`);
        console.log(`|---|${o.connections.map(() => '---:').join('|')}|`);
        for (const c of configs) {
          const cells = o.connections.map((conns) => {
            const p = plan.find((q) => q.c === c && q.conns === conns && q.window === W);
            const ratios = c.kind === 'plain' ? '' : ` (${ratio(p.max, at('plain', conns, W))}${c.kind === 'status' ? '' : `, ${ratio(p.max, at('status', conns, W))}`})`;
            return `${int(p.max)}${ratios}${genMark(p)}`;
          });
          console.log(`| ${c.name} | ${cells.join(' | ')} |`);
        }
      }
      for (const conns of o.connections) table(W, conns);
      console.log('');
      console.log(routersNote + ' ' + cpuNote + (o.rate > 0 ? ' Latency is measured from when a message fell due, so "sent >1 ms late" (the generator or its window fell behind) is part of it.' : ''));
      if (configs.some((c) => c.cluster)) clusterTables(plan, W);
      if (xw) {
        console.log('');
        console.log(`## Window ${xw}: where the baseline degrades`);
        table(xw, o.connections[0]);
        console.log('');
        console.log(
          `At ${xw} messages in flight per connection uWebSockets.js writes nearly every frame with a send() call of its own instead of one per connection per loop turn, ` +
            `so the routers fall well below their maximum at window ${W} while Switchboard loses less. A ratio measured here flatters Switchboard; ` +
            `this table is kept to show by how much, not to judge by. Its latency is queueing time (Little's law: connections x window / rate).`,
        );
      }

      // --- part 2: latency at --loads % of each row's own maximum, with the most connections -------
      if (o.parts.has('latency')) {
        const conns = Math.max(...o.connections);
        const lplan = [];
        for (const pct of o.loads)
          for (const c of configs) {
            const max = plan.find((p) => p.c === c && p.conns === conns && p.window === W)?.max;
            if (Number.isFinite(max) && max > 0) {
              const rate = Math.max(1, Math.round((max * pct) / 100));
              lplan.push({ c, conns, pct, rate, label: ` at ${pct}% (${rate} msg/s)`, args: ['--rate', String(rate), '--window', '4096'] });
            }
          }
        console.error(`e2e latency: ${lplan.length} runs x ${o['latency-reps']} x ${o.seconds} s at ${o.loads.join('/')} % of each maximum, ${conns} connections`);
        await runPlan(lplan, o['latency-reps'], o.seconds, o['latency-retries']);
        lplan.sort((a, b) => configs.indexOf(a.c) - configs.indexOf(b.c) || a.pct - b.pct);
        console.log('');
        console.log(`## Latency at ${o.loads.join(' and ')} % of each configuration's own maximum, ${int(conns)} connections`);
        console.log('');
        console.log(`# rate mode (window 4096), ${conns} connections, ${o.size}-byte data, ${o['latency-reps']} x ${o.seconds} s (+${o.warmup} s warm-up) per row${o['latency-reps'] > 1 ? ', median of each column' : ''}; latency from when each message fell due`);
        console.log('');
        console.log('| configuration | load | target msg/s | delivered msg/s | p50 ms | p99 ms | p99.9 ms | sent >1 ms late % | generator CPU % (user part) | server CPU % | other processes CPU % |');
        console.log('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
        for (const p of lplan) {
          const late = median(p.used.map((r) => (100 * r.late) / Math.max(1, r.sent)));
          console.log(
            `| ${p.c.name} | ${p.pct}% | ${int(p.rate)} | ${int(med(p, 'msgPerSec'))} | ${f(med(p, 'p50Ms'))} | ${f(med(p, 'p99Ms'))} | ${f(med(p, 'p999Ms'))} | ${lateText(p)}${late > 1 ? ' !' : ''} | ` +
              `${f(med(p, 'cpuPct'), 0)} (${f(med(p, 'cpuUserPct'), 0)})${genMark(p)} | ${f(med(p, 'serverCpuPct'), 0)} | ${f(med(p, 'otherCpuPct'), 0)}${busyMark(p)} |`,
          );
        }
        console.log('');
        console.log(
          `The target rates are fractions of the window-${W} medians at ${conns} connections in the throughput table above, measured in the same run. "Sent >1 ms late" counts messages the generator sent over 1 ms after they fell due ` +
            `(its core was busy or the window was full); their lateness is part of the latency, and over 1 % is marked "!": there the generator did not keep up and the row measures it too.`,
        );
      }
      for (const c of configs) for (const s of c.nodesStarted ?? [c.server]) await stopChild(s.child);
    }

    // --- part 3: memory per idle connection ------------------------------------------
    // A fresh plain router and a fresh Switchboard (durable on, no modules), each with nothing but idle connections.
    const memServers = [];
    if (o.servers.has('baseline')) memServers.push({ name: 'uWS.js router, plain', kind: 'plain' });
    if (o.servers.has('switchboard') || o.servers.has('more')) memServers.push({ name: 'Switchboard, durable on, 0 modules', kind: 'switchboard', durable: 'on', modules: 0 });
    if (o.parts.has('memory') && memServers.length) {
      const n = o['idle-connections'];
      console.error(`e2e memory: ${n} idle connections to fresh servers`);
      const rows = [];
      const hold = 2;
      const settle = 1;
      for (const c of memServers) {
        let server;
        let tokensArg = ['--baseline'];
        let usersS = NaN;
        if (c.kind === 'plain') {
          server = await startServer(c.name, [path.join(here, 'baseline.mjs'), '0', '--exit-on-stdin-eof'], pin, ['--expose-gc']);
        } else {
          server = await startServer(c.name, [path.join(here, 'run.mjs'), '--server-child', JSON.stringify({ configText: switchboardConfigText(tmp, modDir, c.durable, c.modules) })], pin, ['--expose-gc']);
          const u0 = Date.now();
          const tokens = await makeUsers(server.port, 'idle', n);
          usersS = (Date.now() - u0) / 1000;
          const file = path.join(tmp, 'tokens-idle');
          fs.writeFileSync(file, tokens.join('\n') + '\n');
          tokensArg = ['--tokens', file];
        }
        try {
          // RSS as it is, and after a full garbage collection (asked over stdin), before and with the connections.
          let gcs = 0;
          const gcRss = async () => {
            const want = ++gcs;
            server.child.stdin.write('gc\n');
            const deadline = Date.now() + 5000;
            while ((server.stdout().match(/GC done/g) ?? []).length < want && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
            return rssKb(server.child.pid);
          };
          await new Promise((r) => setTimeout(r, settle * 1000));
          const before = rssKb(server.child.pid);
          const beforeGc = await gcRss();
          // The generator opens every connection, idles for `settle` s (its warm-up), then `hold` s more (its
          // measured window): RSS is read as the window opens, then again after a collection, before it closes.
          let after = NaN;
          let afterGc = Promise.resolve(NaN);
          const r = await runLoadgen(
            bin,
            ['--host', '127.0.0.1', '--conns', String(n), '--seconds', String(hold), '--warmup', String(settle), '--idle', '--ready-timeout', '120', '--port', String(server.port), ...tokensArg],
            o,
            server.child.pid,
            pin,
            {
              seconds: hold,
              extraS: 120,
              onStart: () => {
                after = rssKb(server.child.pid);
                afterGc = gcRss();
              },
            },
          );
          rows.push({ c, before, after, beforeGc, afterGc: await afterGc, n, usersS, r });
          const last = rows.at(-1);
          console.error(`  ${c.name}: RSS ${before} kB -> ${after} kB with ${n} idle connections (after GC: ${beforeGc} kB -> ${last.afterGc} kB): ${f((after - before) / n, 2)} (${f((last.afterGc - beforeGc) / n, 2)}) KB per connection`);
        } catch (e) {
          throw new Error(`${c.name} (memory): ${e.message}\nserver stderr:\n${server.stderr()}`);
        } finally {
          await stopChild(server.child);
        }
      }
      console.log('');
      console.log('## Memory per idle connection');
      console.log('');
      console.log(`# ${n} idle connections from one generator process (each logged in: to Switchboard with its own user, "hello" received), opened at most 256 at a time; server RSS (VmRSS) ${settle} s after start-up (after the users were made) and ${settle} s after the last connection logged in`);
      console.log('');
      console.log('| server | connections | RSS before MB | RSS with connections MB | KB per connection | after a full GC: before MB | with connections MB | KB per connection |');
      console.log('|---|---:|---:|---:|---:|---:|---:|---:|');
      for (const row of rows)
        console.log(
          `| ${row.c.name} | ${int(row.n)} | ${f(row.before / 1024, 1)} | ${f(row.after / 1024, 1)} | ${f((row.after - row.before) / row.n, 2)} | ${f(row.beforeGc / 1024, 1)} | ${f(row.afterGc / 1024, 1)} | ${f((row.afterGc - row.beforeGc) / row.n, 2)} |`,
        );
      console.log('');
      console.log('KB = 1024 bytes. The first three columns are RSS as it was (garbage not yet collected included); the last three read it right after a full collection (node --expose-gc, global.gc() asked for over stdin), which V8 does not always return to the OS.' + (rows.some((x) => Number.isFinite(x.usersS)) ? ` Making the ${n} Switchboard users through POST /api (32 requests at a time) took ${f(rows.find((x) => Number.isFinite(x.usersS)).usersS, 1)} s.` : ''));
    }
  } finally {
    killAll();
    await backends?.close();
  }
  for (const note of notes) console.log(`\n${note}`);
  console.error(`e2e: done in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
}

/**
 * What is wrong with the statuses run `r` got back for row `c`, or '' if nothing: the plain router must forward
 * no delivered status, the router + status frame and Mosquitto (a publish of its own) one per message,
 * Switchboard a "sent" per message. A router
 * that routed fewer frames than its row says would flatter it; one that routed more would hurt the comparison.
 * The counts cover the run up to the end of the measured window and `msgs` only that window, so a count under half
 * of `msgs` means a status per message did not come back (the rest is slack for what is in flight and a short
 * warm-up). Group fan-out (msgs counts deliveries, N-1 per message) is not checked.
 */
function confirmationsWrong(c, r, o) {
  if (o.group) return '';
  if (c.kind === 'plain') return r.deliveredStatuses ? `${r.deliveredStatuses} delivered statuses forwarded` : '';
  const [n, what] = c.kind === 'switchboard' ? [r.sentStatuses, '"sent" statuses'] : [r.deliveredStatuses, 'delivered statuses'];
  return n < r.msgs / 2 ? `${n} ${what} for ${r.msgs} messages` : '';
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
