/**
 * `GET /metrics` in the Prometheus text exposition format (version 0.0.4),
 * docs/operations.md "Metrics".
 *
 * The format is written directly rather than with prom-client: the server
 * and the core already keep every count as a plain number (server.stats,
 * MetricCounts below, each module instance's hook stats in the core), so a
 * message pays one increment per count and nothing else; the text is built
 * only when someone scrapes. prom-client would put a Counter object with
 * label lookups on the per-message path (docs/performance.md has the
 * figures).
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import { native } from '../native';
import type { ModuleInfo } from '../core';
import type { LimitStats } from './limits';
import { RANDOM_ORDER_FROM } from './delivery';

/** Upper bounds (seconds) of the store commit histogram: a group commit is one SQLite transaction. */
export const COMMIT_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

/**
 * Counts the server keeps for the metrics; plain numbers, moved on the paths
 * they count. The per-message ones (received, delivered, statuses, copies
 * stored) are the delivery engine's counters, copied in when the counts are
 * read (Server.metrics), plus what JavaScript delivers itself (the backlog).
 */
export interface MetricCounts {
  /** Client messages the chain passed and the server accepted ("sent"). */
  receivedPass: number;
  /** Client messages a module consumed. */
  receivedConsumed: number;
  /** Client messages the chain passed but the server refused with a failure status (unknown destination, not a member, not active, inbox full). */
  receivedFailed: number;
  /** Copies sent to a recipient's connections: live, after the commit, or from the stored backlog. */
  delivered: number;
  /** Of `delivered`, those sent from the stored backlog (the sessions room counts them; the rest are the engine's). */
  backlogDelivered: number;
  /** Statuses clients sent, by status code (delivered 2, read 3, ...). */
  statuses: number[];
  /** Login outcomes: "ok" or the error code the socket was closed with. */
  logins: Map<string, number>;
  /** Copies written to the store. */
  copiesStored: number;
  /** Pages of stored backlog sent to a connection. */
  backlogPages: number;
  /** Connections closed because they did not read (backpressure). */
  slowClosed: number;
  /** Loop turns that wrote to connections, and the frames they wrote (Delivery's write buffer): frames per turn is how well writes are batched. */
  writeTurns: number;
  framesWritten: number;
  /** Of those, turns that wrote to so many connections that they went in a random order (Delivery, RANDOM_ORDER_FROM). */
  randomOrderTurns: number;
  /** Group commits: per-bucket counts (not cumulative, the last past every bound), their sum in seconds. */
  commitBuckets: number[];
  commitSeconds: number;
  commits: number;
  /** Config reloads (SIGHUP, API op reload) that applied the config, and those that refused it. */
  reloadsOk: number;
  reloadsFailed: number;
}

export function newCounts(): MetricCounts {
  return {
    receivedPass: 0,
    receivedConsumed: 0,
    receivedFailed: 0,
    delivered: 0,
    backlogDelivered: 0,
    statuses: new Array<number>(256).fill(0),
    logins: new Map(),
    copiesStored: 0,
    backlogPages: 0,
    slowClosed: 0,
    writeTurns: 0,
    framesWritten: 0,
    randomOrderTurns: 0,
    commitBuckets: new Array<number>(COMMIT_BUCKETS.length + 1).fill(0),
    commitSeconds: 0,
    commits: 0,
    reloadsOk: 0,
    reloadsFailed: 0,
  };
}

/** Counts one group commit that took `seconds`. */
export function countCommit(m: MetricCounts, seconds: number): void {
  let b = 0;
  while (b < COMMIT_BUCKETS.length && seconds > COMMIT_BUCKETS[b]) b++;
  m.commitBuckets[b]++;
  m.commitSeconds += seconds;
  m.commits++;
}

const STATUS_NAMES: Record<number, string> = {
  1: 'sent', 2: 'delivered', 3: 'read', 0x80: 'failed', 0x81: 'not_active', 0x82: 'inbox_full', 0x83: 'invalid_destination', 0x84: 'expired', 0x88: 'blocked',
};

/** What a scrape reads besides the counts. */
export interface MetricSources {
  counts: MetricCounts;
  stats: LimitStats;
  modules: ModuleInfo[];
  /** Messages waiting for a deferred decision (or behind one) in the core. */
  deferredWaiting: number;
  /** Committed copies waiting in the store for their recipients (NaN when the store cannot be read). */
  storeWaiting: number;
  /** `sqlite` or `postgresql`. */
  storeKind: string;
  /** The code the store failed with while it is down (StoreHealth), else null. */
  storeDown: string | null;
  version: string;
}

/** A label value escaped as the exposition format asks (backslash, quote, newline). */
function label(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

/** Builds the exposition text, one family at a time (HELP, TYPE, samples). */
export class Writer {
  private out: string[] = [];
  family(name: string, type: 'counter' | 'gauge' | 'histogram', help: string): this {
    this.out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    return this;
  }
  sample(name: string, labels: Record<string, string> | null, value: number): this {
    const l = labels ? Object.entries(labels).map(([k, v]) => `${k}="${label(v)}"`).join(',') : '';
    this.out.push(`${name}${l ? `{${l}}` : ''} ${Number.isFinite(value) ? value : value > 0 ? '+Inf' : value < 0 ? '-Inf' : 'NaN'}`);
    return this;
  }
  /** A histogram from per-bucket counts (not cumulative; the last past every bound). */
  histogram(name: string, labels: Record<string, string>, bounds: number[], buckets: number[], sum: number): this {
    let acc = 0;
    for (let i = 0; i < bounds.length; i++) {
      acc += buckets[i] ?? 0;
      this.sample(`${name}_bucket`, { ...labels, le: String(bounds[i]) }, acc);
    }
    acc += buckets[bounds.length] ?? 0;
    this.sample(`${name}_bucket`, { ...labels, le: '+Inf' }, acc);
    this.sample(`${name}_sum`, labels, sum);
    this.sample(`${name}_count`, labels, acc);
    return this;
  }
  text(): string {
    return this.out.join('\n') + '\n';
  }
}

/** The process metrics Prometheus clients export by default (the prom-client names). */
export class ProcessMetrics {
  private readonly lag: IntervalHistogram;
  private readonly startTime = Math.round(Date.now() / 1000 - process.uptime());

  constructor() {
    // Samples the loop every 20 ms from a libuv timer: no work per message.
    this.lag = monitorEventLoopDelay({ resolution: 20 });
    this.lag.enable();
  }

  stop(): void {
    this.lag.disable();
  }

  write(w: Writer): void {
    const cpu = process.cpuUsage();
    const mem = process.memoryUsage();
    w.family('process_cpu_user_seconds_total', 'counter', 'User CPU time spent in seconds.').sample('process_cpu_user_seconds_total', null, cpu.user / 1e6);
    w.family('process_cpu_system_seconds_total', 'counter', 'System CPU time spent in seconds.').sample('process_cpu_system_seconds_total', null, cpu.system / 1e6);
    w.family('process_cpu_seconds_total', 'counter', 'Total user and system CPU time spent in seconds.').sample('process_cpu_seconds_total', null, (cpu.user + cpu.system) / 1e6);
    w.family('process_start_time_seconds', 'gauge', 'Start time of the process since unix epoch in seconds.').sample('process_start_time_seconds', null, this.startTime);
    w.family('process_resident_memory_bytes', 'gauge', 'Resident memory size in bytes.').sample('process_resident_memory_bytes', null, mem.rss);
    w.family('nodejs_heap_size_total_bytes', 'gauge', 'Process heap size from Node.js in bytes.').sample('nodejs_heap_size_total_bytes', null, mem.heapTotal);
    w.family('nodejs_heap_size_used_bytes', 'gauge', 'Process heap size used from Node.js in bytes.').sample('nodejs_heap_size_used_bytes', null, mem.heapUsed);
    w.family('nodejs_external_memory_bytes', 'gauge', 'Node.js external memory size in bytes.').sample('nodejs_external_memory_bytes', null, mem.external);
    const fds = openFds();
    if (fds !== null) w.family('process_open_fds', 'gauge', 'Number of open file descriptors.').sample('process_open_fds', null, fds);
    // The delay of the loop's 20 ms timer: how long callbacks held the loop.
    const h = this.lag;
    const s = (ns: number) => (Number.isFinite(ns) ? ns / 1e9 : 0);
    w.family('nodejs_eventloop_lag_mean_seconds', 'gauge', 'The mean of the recorded event loop delays.').sample('nodejs_eventloop_lag_mean_seconds', null, h.count ? s(h.mean) : 0);
    w.family('nodejs_eventloop_lag_max_seconds', 'gauge', 'The maximum recorded event loop delay.').sample('nodejs_eventloop_lag_max_seconds', null, h.count ? s(h.max) : 0);
    w.family('nodejs_eventloop_lag_p99_seconds', 'gauge', 'The 99th percentile of the recorded event loop delays.').sample('nodejs_eventloop_lag_p99_seconds', null, h.count ? s(h.percentile(99)) : 0);
    h.reset();
    w.family('nodejs_version_info', 'gauge', 'Node.js version info.').sample('nodejs_version_info', { version: process.version }, 1);
  }
}

function openFds(): number | null {
  try {
    return fs.readdirSync('/proc/self/fd').length - 1; // less the descriptor readdir opened
  } catch {
    return null;
  }
}

/** The whole exposition text for one scrape. */
export function renderMetrics(src: MetricSources, proc: ProcessMetrics): string {
  const w = new Writer();
  const { counts: m, stats } = src;
  w.family('switchboard_info', 'gauge', 'The server version (always 1).').sample('switchboard_info', { version: src.version }, 1);
  w.family('switchboard_connections', 'gauge', 'Open client connections by state.')
    .sample('switchboard_connections', { state: 'authenticated' }, stats.connections)
    .sample('switchboard_connections', { state: 'unauthenticated' }, stats.unauthenticated);
  w.family('switchboard_logins_total', 'counter', 'Logins by result: ok, or the error code the socket was refused with.');
  w.sample('switchboard_logins_total', { result: 'ok' }, m.logins.get('ok') ?? 0);
  for (const [result, n] of [...m.logins].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) if (result !== 'ok') w.sample('switchboard_logins_total', { result }, n);
  w.family('switchboard_messages_total', 'counter', 'Messages received from clients by chain verdict, and copies delivered to recipients.')
    .sample('switchboard_messages_total', { direction: 'received', verdict: 'pass' }, m.receivedPass)
    .sample('switchboard_messages_total', { direction: 'received', verdict: 'consumed' }, m.receivedConsumed)
    .sample('switchboard_messages_total', { direction: 'received', verdict: 'failed' }, m.receivedFailed)
    .sample('switchboard_messages_total', { direction: 'delivered', verdict: 'pass' }, m.delivered);
  w.family('switchboard_statuses_total', 'counter', 'Statuses (receipts) clients sent, by status.');
  for (const code of [2, 3]) w.sample('switchboard_statuses_total', { status: STATUS_NAMES[code] }, m.statuses[code]);
  for (let code = 0; code < 256; code++) if (code !== 2 && code !== 3 && m.statuses[code]) w.sample('switchboard_statuses_total', { status: STATUS_NAMES[code] ?? String(code) }, m.statuses[code]);

  const bounds = native.hookBucketBounds;
  w.family('switchboard_module_hook_seconds', 'histogram', 'Time each module instance spent in each hook, on the event loop.');
  for (const inst of src.modules) {
    for (const hook of inst.hooks) {
      const st = inst.stats[hook];
      if (st) w.histogram('switchboard_module_hook_seconds', { module: inst.name, hook }, bounds, st.buckets, st.totalNs / 1e9);
    }
  }
  w.family('switchboard_module_hook_max_seconds', 'gauge', 'The longest single call of each hook since start.');
  for (const inst of src.modules) for (const hook of inst.hooks) if (inst.stats[hook]) w.sample('switchboard_module_hook_max_seconds', { module: inst.name, hook }, inst.stats[hook].maxNs / 1e9);
  w.family('switchboard_module_verdicts_total', 'counter', 'What each module instance\'s on_message returned: pass, consumed, or deferred (decided later).');
  for (const inst of src.modules) {
    if (!inst.hooks.includes('on_message')) continue;
    for (const v of ['pass', 'consumed', 'deferred'] as const) w.sample('switchboard_module_verdicts_total', { module: inst.name, verdict: v }, inst.verdicts[v]);
  }
  w.family('switchboard_module_deferred_timeouts_total', 'counter', 'Deferred decisions that were not made within the module\'s timeout (its on_error verdict applied).');
  for (const inst of src.modules) if (inst.hooks.includes('on_message')) w.sample('switchboard_module_deferred_timeouts_total', { module: inst.name }, inst.timeouts);
  // Only instances with a budget: the others can never go over one.
  const budgeted = src.modules.filter((inst) => inst.budget.budgetNs > 0);
  w.family('switchboard_module_over_budget_total', 'counter', 'on_message calls that took longer than the module\'s budget.');
  for (const inst of budgeted) w.sample('switchboard_module_over_budget_total', { module: inst.name }, inst.budget.overBudget);
  w.family('switchboard_module_bypassed_total', 'counter', 'Messages that skipped a module bypassed for its budget (on_over_budget applied).');
  for (const inst of budgeted) w.sample('switchboard_module_bypassed_total', { module: inst.name }, inst.budget.bypassed);
  w.family('switchboard_module_bypassed', 'gauge', '1 while a module is bypassed for going over its budget, else 0.');
  for (const inst of budgeted) w.sample('switchboard_module_bypassed', { module: inst.name }, inst.budget.active ? 1 : 0);
  w.family('switchboard_module_errors_total', 'counter', 'Deferred timeouts and errors the server counted for a script module (throws, rejections).');
  for (const inst of src.modules) w.sample('switchboard_module_errors_total', { module: inst.name }, inst.errors);
  w.family('switchboard_deferred_waiting', 'gauge', 'Messages waiting for a deferred decision, or queued behind one in their conversation.').sample('switchboard_deferred_waiting', null, src.deferredWaiting);

  w.family('switchboard_store_commit_seconds', 'histogram', 'Time of each group commit (one store transaction per event-loop turn).');
  w.histogram('switchboard_store_commit_seconds', {}, COMMIT_BUCKETS, m.commitBuckets, m.commitSeconds);
  w.family('switchboard_store_copies_written_total', 'counter', 'Message copies written to the store.').sample('switchboard_store_copies_written_total', null, m.copiesStored);
  w.family('switchboard_store_waiting_messages', 'gauge', 'Committed copies waiting in the store for their recipients.').sample('switchboard_store_waiting_messages', null, src.storeWaiting);
  w.family('switchboard_backlog_pages_total', 'counter', 'Pages of stored messages sent to connections that logged in (backlog pumps).').sample('switchboard_backlog_pages_total', null, m.backlogPages);
  w.family('switchboard_slow_consumers_closed_total', 'counter', 'Connections closed because they did not read what was sent to them.').sample('switchboard_slow_consumers_closed_total', null, m.slowClosed);
  w.family('switchboard_write_turns_total', 'counter', 'Event-loop turns that wrote frames to connections (one system call per connection per turn).').sample('switchboard_write_turns_total', null, m.writeTurns);
  w.family('switchboard_write_turns_random_total', 'counter', `Write turns with ${RANDOM_ORDER_FROM} connections or more, which write them in a random order (docs/performance.md, "Write order").`).sample('switchboard_write_turns_random_total', null, m.randomOrderTurns);
  w.family('switchboard_frames_written_total', 'counter', 'Frames the delivery engine wrote to connections (messages, statuses, receipts); divided by write turns, how many each turn batched.').sample('switchboard_frames_written_total', null, m.framesWritten);
  w.family('switchboard_rate_limited_total', 'counter', 'Frames dropped with E_RATE_LIMITED, by kind.')
    .sample('switchboard_rate_limited_total', { kind: 'message' }, stats.rateLimited)
    .sample('switchboard_rate_limited_total', { kind: 'status' }, stats.statusesRateLimited);
  w.family('switchboard_inbox_full_total', 'counter', 'Copies refused because the recipient\'s inbox was full.').sample('switchboard_inbox_full_total', null, stats.inboxFull);
  w.family('switchboard_connections_refused_total', 'counter', 'Connections and logins the limits refused, by reason.')
    .sample('switchboard_connections_refused_total', { reason: 'server_full' }, stats.refusedServerFull)
    .sample('switchboard_connections_refused_total', { reason: 'per_ip' }, stats.refusedPerIp)
    .sample('switchboard_connections_refused_total', { reason: 'per_user' }, stats.refusedPerUser)
    .sample('switchboard_connections_refused_total', { reason: 'bad_device' }, stats.refusedBadDevice)
    .sample('switchboard_connections_refused_total', { reason: 'login_timeout' }, stats.loginTimeouts)
    .sample('switchboard_connections_refused_total', { reason: 'unauthenticated_evicted' }, stats.unauthenticatedEvicted);
  w.family('switchboard_connection_cap', 'gauge', 'The cap on all connections in effect.').sample('switchboard_connection_cap', null, stats.connectionCap);
  w.family('switchboard_frames_too_large_total', 'counter', 'Frames over the frame limit (E_FRAME_TOO_LARGE).').sample('switchboard_frames_too_large_total', null, stats.framesTooLarge);
  w.family('switchboard_invalid_text_total', 'counter', 'Connections ended for a text frame that is not UTF-8.').sample('switchboard_invalid_text_total', null, stats.invalidText);
  w.family('switchboard_presence_subscriptions', 'gauge', 'Presence subscriptions held by all connections.').sample('switchboard_presence_subscriptions', null, stats.presenceSubscriptions);
  w.family('switchboard_presence_refused_total', 'counter', 'Presence requests refused.').sample('switchboard_presence_refused_total', null, stats.presenceRefused);
  w.family('switchboard_reloads_total', 'counter', 'Config reloads by result: ok (applied), failed (refused; the server ran on unchanged).')
    .sample('switchboard_reloads_total', { result: 'ok' }, m.reloadsOk)
    .sample('switchboard_reloads_total', { result: 'failed' }, m.reloadsFailed);
  proc.write(w);
  return w.text();
}

/**
 * Whether a request may read the metrics: always without metrics_token,
 * otherwise only with `Authorization: Bearer <metrics_token>`. Compared in
 * constant time, as the token is a secret.
 */
export function metricsAuthorized(token: string | null, header: string): boolean {
  if (!token) return true;
  const m = /^Bearer\s+(.+)$/i.exec(header.trim());
  if (!m) return false;
  const a = crypto.createHash('sha256').update(m[1]).digest();
  const b = crypto.createHash('sha256').update(token).digest();
  return crypto.timingSafeEqual(a, b);
}
