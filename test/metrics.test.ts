// Issue 16, "Metrics": GET /metrics in the Prometheus text format. A real
// server with a real native module (test/modules/deferrer.c) and a script
// module, known traffic from real WebSocket clients, then a scrape whose
// values are checked exactly, with a strict parser of the exposition format.
import WebSocket from 'ws';
import { afterEach, describe, expect, it } from 'vitest';
import { Server } from '../lib/index';
import { encodeFrame } from '../lib/wire';
import { COMMIT_BUCKETS } from '../lib/server/metrics';
import { native } from '../lib/native';
import { tempDir, until } from './helpers';
import { connectPeer, serverFixture, type Peer } from './server-helpers';

const APP = 'metrics-app-token';
const { clients, start, user } = serverFixture(APP, { name: 'deferrer', source: 'test/modules/deferrer.c' });
const sockets: WebSocket[] = [];

afterEach(() => {
  for (const ws of sockets.splice(0)) ws.terminate();
});

function connect(s: Server, token: string): Promise<Peer> {
  return connectPeer(s.port, token, '', clients);
}

// --- a strict reader of the text exposition format (version 0.0.4) ---------

interface Family {
  type: string;
  help: string;
}

interface Exposition {
  families: Map<string, Family>;
  /** Series key (name{a="x",b="y"}, labels sorted) to value. */
  samples: Map<string, number>;
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

function seriesKey(name: string, labels: Record<string, string>): string {
  const l = Object.keys(labels)
    .sort()
    .map((k) => `${k}="${labels[k]}"`)
    .join(',');
  return l ? `${name}{${l}}` : name;
}

/** Reads `{a="x",b="y"}` (escapes \\, \", \n) from the start of `s`; returns the labels and what follows. */
function readLabels(s: string, line: string): [Record<string, string>, string] {
  const labels: Record<string, string> = {};
  let i = 1;
  while (s[i] !== '}') {
    const eq = s.indexOf('=', i);
    if (eq < 0) throw new Error(`no = in labels: ${line}`);
    const k = s.slice(i, eq);
    if (!LABEL_NAME.test(k)) throw new Error(`bad label name "${k}": ${line}`);
    if (k in labels) throw new Error(`label "${k}" twice: ${line}`);
    if (s[eq + 1] !== '"') throw new Error(`label value not quoted: ${line}`);
    let v = '';
    let j = eq + 2;
    for (;;) {
      const c = s[j];
      if (c === undefined) throw new Error(`unterminated label value: ${line}`);
      if (c === '"') break;
      if (c === '\\') {
        const e = s[j + 1];
        if (e === 'n') v += '\n';
        else if (e === '\\' || e === '"') v += e;
        else throw new Error(`bad escape \\${e}: ${line}`);
        j += 2;
        continue;
      }
      if (c === '\n') throw new Error(`newline in label value: ${line}`);
      v += c;
      j++;
    }
    labels[k] = v;
    i = j + 1;
    if (s[i] === ',') i++;
    else if (s[i] !== '}') throw new Error(`expected , or } after a label: ${line}`);
  }
  return [labels, s.slice(i + 1)];
}

function parseValue(v: string, line: string): number {
  if (v === '+Inf') return Infinity;
  if (v === '-Inf') return -Infinity;
  if (v === 'NaN') return NaN;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(v)) throw new Error(`bad value "${v}": ${line}`);
  return Number(v);
}

/**
 * Parses the text and checks what Prometheus would reject or misread: a
 * sample without a TYPE before it, a TYPE twice, a sample of a family whose
 * block has ended, a series twice, histogram buckets that are not
 * cumulative or whose +Inf bucket differs from _count.
 */
function parseExposition(text: string): Exposition {
  if (!text.endsWith('\n')) throw new Error('the text must end with a newline');
  const families = new Map<string, Family>();
  const samples = new Map<string, number>();
  const closed = new Set<string>();
  let current = '';
  let pendingHelp: { name: string; help: string } | null = null;
  for (const line of text.slice(0, -1).split('\n')) {
    if (line === '') throw new Error('empty line');
    if (line.startsWith('#')) {
      const m = /^# (HELP|TYPE) (\S+) (.*)$/.exec(line);
      if (!m) throw new Error(`bad comment line: ${line}`);
      const [, kind, name, rest] = m;
      if (!NAME.test(name)) throw new Error(`bad metric name: ${line}`);
      if (kind === 'HELP') {
        pendingHelp = { name, help: rest };
        continue;
      }
      if (!['counter', 'gauge', 'histogram', 'summary', 'untyped'].includes(rest)) throw new Error(`bad type: ${line}`);
      if (families.has(name)) throw new Error(`TYPE twice for ${name}`);
      if (pendingHelp?.name !== name) throw new Error(`no HELP right before TYPE ${name}`);
      if (current) closed.add(current);
      families.set(name, { type: rest, help: pendingHelp.help });
      current = name;
      pendingHelp = null;
      continue;
    }
    const nm = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(line);
    if (!nm) throw new Error(`bad sample line: ${line}`);
    const name = nm[0];
    let rest = line.slice(name.length);
    let labels: Record<string, string> = {};
    if (rest.startsWith('{')) [labels, rest] = readLabels(rest, line);
    const vm = /^ (\S+)$/.exec(rest);
    if (!vm) throw new Error(`bad value part: ${line}`);
    const value = parseValue(vm[1], line);
    const fam = families.get(name) ? name : name.replace(/_(bucket|sum|count)$/, '');
    const f = families.get(fam);
    if (!f) throw new Error(`sample without TYPE: ${line}`);
    if (fam !== current || closed.has(fam)) throw new Error(`sample outside its family's block: ${line}`);
    if (fam !== name && f.type !== 'histogram' && f.type !== 'summary') throw new Error(`suffix on a ${f.type}: ${line}`);
    if (name.endsWith('_bucket') && !('le' in labels)) throw new Error(`bucket without le: ${line}`);
    if (f.type === 'counter' && !(value >= 0)) throw new Error(`negative counter: ${line}`);
    const key = seriesKey(name, labels);
    if (samples.has(key)) throw new Error(`series twice: ${key}`);
    samples.set(key, value);
  }
  // Histograms: cumulative buckets, +Inf = _count.
  for (const [name, f] of families) {
    if (f.type !== 'histogram') continue;
    const series = new Map<string, { le: number; v: number }[]>();
    for (const [key, v] of samples) {
      if (!key.startsWith(`${name}_bucket{`)) continue;
      const [labels] = readLabels(key.slice(`${name}_bucket`.length), key);
      const le = parseValue(labels.le, key);
      delete labels.le;
      const id = seriesKey(name, labels);
      series.set(id, [...(series.get(id) ?? []), { le, v }]);
    }
    for (const [id, buckets] of series) {
      for (let i = 1; i < buckets.length; i++) {
        if (!(buckets[i].le > buckets[i - 1].le)) throw new Error(`${id}: le not increasing`);
        if (buckets[i].v < buckets[i - 1].v) throw new Error(`${id}: buckets not cumulative`);
      }
      const last = buckets[buckets.length - 1];
      if (last.le !== Infinity) throw new Error(`${id}: no +Inf bucket`);
      const count = samples.get(id.replace(name, `${name}_count`));
      if (count !== last.v) throw new Error(`${id}: _count ${count} differs from the +Inf bucket ${last.v}`);
      if (!samples.has(id.replace(name, `${name}_sum`))) throw new Error(`${id}: no _sum`);
    }
  }
  return { families, samples };
}

async function scrape(port: number, token?: string): Promise<Exposition> {
  const r = await fetch(`http://127.0.0.1:${port}/metrics`, { headers: token ? { Authorization: `Bearer ${token}` } : {} });
  expect(r.status).toBe(200);
  expect(r.headers.get('content-type')).toBe('text/plain; version=0.0.4; charset=utf-8');
  return parseExposition(await r.text());
}

function value(e: Exposition, name: string, labels: Record<string, string> = {}): number | undefined {
  return e.samples.get(seriesKey(name, labels));
}

describe('the exposition parser used here', () => {
  it('accepts a valid text and refuses what Prometheus would refuse', () => {
    const ok = '# HELP a_total A.\n# TYPE a_total counter\na_total{x="q\\"\\\\"} 3\n# HELP h H.\n# TYPE h histogram\nh_bucket{le="1"} 1\nh_bucket{le="+Inf"} 2\nh_sum 0.5\nh_count 2\n';
    expect(value(parseExposition(ok), 'a_total', { x: 'q"\\' })).toBe(3);
    expect(() => parseExposition('a 1\n')).toThrow(/without TYPE/);
    expect(() => parseExposition(ok.replace('h_count 2', 'h_count 3'))).toThrow(/differs/);
    expect(() => parseExposition(ok.replace('le="1"} 1', 'le="1"} 5'))).toThrow(/cumulative/);
    expect(() => parseExposition(ok + 'a_total 1\n')).toThrow(/outside its family/);
    expect(() => parseExposition(ok.replace('a_total{x', 'a_total{1x'))).toThrow(/bad label name/);
    expect(() => parseExposition(ok.replace(' 3\n', ' three\n'))).toThrow(/bad value/);
    expect(() => parseExposition(ok.slice(0, -1))).toThrow(/newline/);
  });
});

describe('GET /metrics', () => {
  it('counts known traffic exactly: connections, logins, messages, statuses, modules, store, backlog', async () => {
    // deferrer (native) first, then a script module that drops "spam".
    // durable_grace = 0: every copy is written before anyone sees it, so
    // the copies written do not depend on how fast receipts come back.
    const s = await start('durable_grace = 0\nmodule deferrer {\n  defer_timeout = 200ms\n}\n');
    await s.use('spamfilter', { onMessage: (m) => (m.payload.toString() === 'spam' ? 'consumed' : 'pass') });
    const [ta, tb, tc] = [await user(s, 'alice'), await user(s, 'bob'), await user(s, 'carol')];
    const alice = await connect(s, ta);
    const bob = await connect(s, tb);
    // A bad token: refused with E_AUTH.
    const bad = new WebSocket(`ws://127.0.0.1:${s.port}/?token=nope`);
    sockets.push(bad);
    bad.on('error', () => {});
    await new Promise((r) => bad.on('close', r));

    const before = await scrape(s.port);
    expect(value(before, 'switchboard_connections', { state: 'authenticated' })).toBe(2);
    expect(value(before, 'switchboard_connections', { state: 'unauthenticated' })).toBe(0);

    await alice.c.send('bob', 'hello').sent; // pass, delivered
    await alice.c.send('bob', 'spam').sent; // consumed by spamfilter ("sent" all the same)
    await alice.c.send('bob', 'later:10:x').sent; // deferred by deferrer, then passed
    await alice.c.send('bob', 'never').sent; // deferred, times out after 200 ms: on_error pass
    await alice.c.send('carol', 'offline').sent; // stored for carol
    await expect(alice.c.send('nobody', 'x').sent).rejects.toMatchObject({ status: 0x83 }); // no such user: failed
    await until(() => bob.got.length === 3);
    await until(() => s.store.countPending('bob') === 0); // bob's delivered statuses arrived

    const m = await scrape(s.port);
    expect(value(m, 'switchboard_logins_total', { result: 'ok' })).toBe(2);
    expect(value(m, 'switchboard_logins_total', { result: 'E_AUTH' })).toBe(1);
    expect(value(m, 'switchboard_messages_total', { direction: 'received', verdict: 'pass' })).toBe(4);
    expect(value(m, 'switchboard_messages_total', { direction: 'received', verdict: 'consumed' })).toBe(1);
    expect(value(m, 'switchboard_messages_total', { direction: 'received', verdict: 'failed' })).toBe(1);
    expect(value(m, 'switchboard_messages_total', { direction: 'delivered', verdict: 'pass' })).toBe(3);
    expect(value(m, 'switchboard_statuses_total', { status: 'delivered' })).toBe(3);
    expect(value(m, 'switchboard_statuses_total', { status: 'read' })).toBe(0);

    // The chain: the deferrer saw all six, deferred two; the script saw all
    // six too (the deferred two once decided) and consumed one.
    expect(value(m, 'switchboard_module_hook_seconds_count', { module: 'deferrer', hook: 'on_message' })).toBe(6);
    expect(value(m, 'switchboard_module_hook_seconds_count', { module: 'spamfilter', hook: 'on_message' })).toBe(6);
    expect(value(m, 'switchboard_module_hook_seconds_sum', { module: 'deferrer', hook: 'on_message' })).toBeGreaterThan(0);
    expect(value(m, 'switchboard_module_hook_seconds_bucket', { module: 'deferrer', hook: 'on_message', le: '1' })).toBe(6);
    expect(value(m, 'switchboard_module_verdicts_total', { module: 'deferrer', verdict: 'pass' })).toBe(4);
    expect(value(m, 'switchboard_module_verdicts_total', { module: 'deferrer', verdict: 'deferred' })).toBe(2);
    expect(value(m, 'switchboard_module_verdicts_total', { module: 'deferrer', verdict: 'consumed' })).toBe(0);
    expect(value(m, 'switchboard_module_verdicts_total', { module: 'spamfilter', verdict: 'pass' })).toBe(5);
    expect(value(m, 'switchboard_module_verdicts_total', { module: 'spamfilter', verdict: 'consumed' })).toBe(1);
    expect(value(m, 'switchboard_module_deferred_timeouts_total', { module: 'deferrer' })).toBe(1);
    expect(value(m, 'switchboard_module_deferred_timeouts_total', { module: 'spamfilter' })).toBe(0);
    expect(value(m, 'switchboard_deferred_waiting')).toBe(0);

    // The store: bob's three copies and carol's one were written; carol's waits.
    expect(value(m, 'switchboard_store_copies_written_total')).toBe(4);
    expect(value(m, 'switchboard_store_waiting_messages')).toBe(1);
    expect(value(m, 'switchboard_store_commit_seconds_count')).toBeGreaterThanOrEqual(1);
    expect(value(m, 'switchboard_store_commit_seconds_sum')).toBeGreaterThan(0);
    expect(value(m, 'switchboard_backlog_pages_total')).toBe(0);
    expect(value(m, 'switchboard_slow_consumers_closed_total')).toBe(0);
    expect(value(m, 'switchboard_rate_limited_total', { kind: 'message' })).toBe(0);
    // Bob's three copies and alice's six statuses (five "sent", one failure)
    // at least (bob's SDK also gets receipts it did not ask for: none here),
    // in turns that each wrote one frame or more.
    expect(value(m, 'switchboard_frames_written_total')).toBeGreaterThanOrEqual(9);
    expect(value(m, 'switchboard_write_turns_total')).toBeGreaterThan(0);
    expect(value(m, 'switchboard_write_turns_total')).toBeLessThanOrEqual(value(m, 'switchboard_frames_written_total'));
    // Two connections: no turn wrote to enough of them for the random order.
    expect(value(m, 'switchboard_write_turns_random_total')).toBe(0);

    // Carol logs in: her backlog is one page with one copy.
    const carol = await connect(s, tc);
    await until(() => carol.got.length === 1);
    await until(() => s.store.countPending('carol') === 0);
    const after = await scrape(s.port);
    expect(value(after, 'switchboard_backlog_pages_total')).toBe(1);
    expect(value(after, 'switchboard_messages_total', { direction: 'delivered', verdict: 'pass' })).toBe(4);
    expect(value(after, 'switchboard_statuses_total', { status: 'delivered' })).toBe(4);
    expect(value(after, 'switchboard_store_waiting_messages')).toBe(0);
    expect(value(after, 'switchboard_logins_total', { result: 'ok' })).toBe(3);
    expect(value(after, 'switchboard_connections', { state: 'authenticated' })).toBe(3);
  });

  it('has the families the issue lists, the hook buckets from the core, and the process metrics', async () => {
    const s = await start('module deferrer\n');
    const m = await scrape(s.port);
    for (const [name, type] of [
      ['switchboard_connections', 'gauge'],
      ['switchboard_logins_total', 'counter'],
      ['switchboard_messages_total', 'counter'],
      ['switchboard_statuses_total', 'counter'],
      ['switchboard_module_hook_seconds', 'histogram'],
      ['switchboard_module_verdicts_total', 'counter'],
      ['switchboard_module_deferred_timeouts_total', 'counter'],
      ['switchboard_deferred_waiting', 'gauge'],
      ['switchboard_store_commit_seconds', 'histogram'],
      ['switchboard_store_copies_written_total', 'counter'],
      ['switchboard_store_waiting_messages', 'gauge'],
      ['switchboard_backlog_pages_total', 'counter'],
      ['switchboard_slow_consumers_closed_total', 'counter'],
      ['switchboard_write_turns_total', 'counter'],
      ['switchboard_write_turns_random_total', 'counter'],
      ['switchboard_frames_written_total', 'counter'],
      ['switchboard_rate_limited_total', 'counter'],
      ['process_cpu_seconds_total', 'counter'],
      ['process_resident_memory_bytes', 'gauge'],
      ['nodejs_eventloop_lag_p99_seconds', 'gauge'],
    ]) {
      expect(m.families.get(name)?.type, name).toBe(type);
    }
    expect(value(m, 'process_cpu_seconds_total')).toBeGreaterThan(0);
    expect(value(m, 'process_resident_memory_bytes')).toBeGreaterThan(10_000_000);
    // Every bound the core counts in, then +Inf; nothing called yet.
    const les = [...m.samples.keys()].filter((k) => k.startsWith('switchboard_module_hook_seconds_bucket{hook="on_message",le=')).map((k) => /le="([^"]+)"/.exec(k)![1]);
    expect(les).toEqual([...native.hookBucketBounds.map(String), '+Inf']);
    expect(value(m, 'switchboard_module_hook_seconds_count', { module: 'deferrer', hook: 'on_message' })).toBe(0);
    expect([...m.samples.keys()].filter((k) => k.startsWith('switchboard_store_commit_seconds_bucket')).length).toBe(COMMIT_BUCKETS.length + 1);
  });

  it('puts each module call in the bucket of its time, as the core measured it', async () => {
    const s = await start();
    // A script module that holds the loop for 30 ms on "slow": never less,
    // so that call is past every bound up to 0.01 s however busy the machine.
    await s.use('spinner', {
      onMessage: (m) => {
        if (m.payload.toString() !== 'slow') return 'pass';
        const until = performance.now() + 30;
        while (performance.now() < until);
        return 'pass';
      },
    });
    const [ta] = [await user(s, 'alice'), await user(s, 'bob')];
    const alice = await connect(s, ta);
    for (const text of ['a', 'slow', 'b']) await alice.c.send('bob', text).sent;
    const m = await scrape(s.port);
    const at = (le: string) => value(m, 'switchboard_module_hook_seconds_bucket', { module: 'spinner', hook: 'on_message', le });
    expect(at('0.01')).toBe(2);
    expect(at('+Inf')).toBe(3);
    expect(value(m, 'switchboard_module_hook_seconds_sum', { module: 'spinner', hook: 'on_message' })).toBeGreaterThanOrEqual(0.03);
    expect(value(m, 'switchboard_module_hook_max_seconds', { module: 'spinner', hook: 'on_message' })).toBeGreaterThanOrEqual(0.03);
  });

  it('counts rate-limited frames as the client was told', async () => {
    const s = await start('rate_limit = 2\n');
    const [ta] = [await user(s, 'alice'), await user(s, 'bob')];
    const ws = new WebSocket(`ws://127.0.0.1:${s.port}/?token=${ta}`);
    sockets.push(ws);
    const errors: unknown[] = [];
    const frames: Record<string, unknown>[] = [];
    ws.on('message', (d) => {
      const f = JSON.parse(d.toString());
      frames.push(f);
      if (f.op === 'error') errors.push(f);
    });
    await until(() => frames.some((f) => f.op === 'hello'));
    for (let i = 1; i <= 10; i++) ws.send(encodeFrame('msg', { id: i, to: 'bob', payload: Buffer.from('x') }, 'json'));
    // Every frame is answered: "sent" or E_RATE_LIMITED.
    await until(() => frames.filter((f) => f.op !== 'hello').length >= 10);
    const m = await scrape(s.port);
    expect(errors.length).toBeGreaterThan(0);
    expect(value(m, 'switchboard_rate_limited_total', { kind: 'message' })).toBe(errors.length);
    expect(value(m, 'switchboard_rate_limited_total', { kind: 'message' })).toBe(s.stats.rateLimited);
  });

  it('with metrics_token: 401 with E_METRICS_TOKEN without the bearer token, 200 with it', async () => {
    const s = await start('metrics_token = scrape-secret\n');
    for (const headers of [{}, { Authorization: 'Bearer wrong' }, { Authorization: 'scrape-secret' }] as Record<string, string>[]) {
      const r = await fetch(`http://127.0.0.1:${s.port}/metrics`, { headers });
      expect(r.status).toBe(401);
      expect(r.headers.get('www-authenticate')).toBe('Bearer');
      const body = (await r.json()) as Record<string, unknown>;
      expect(body).toMatchObject({ ok: false, code: 'E_METRICS_TOKEN' });
      expect(body.message).toMatch(/Authorization: Bearer/);
    }
    const m = await scrape(s.port, 'scrape-secret');
    expect(value(m, 'switchboard_connections', { state: 'authenticated' })).toBe(0);
  });

  it('with metrics_listen: served on its own port only, with the token rules there too', async () => {
    const s = await start('metrics_listen = 127.0.0.1:0\nmetrics_token = t0k\n');
    expect(s.metricsPort).toBeGreaterThan(0);
    expect(s.metricsPort).not.toBe(s.port);
    const alice = await user(s, 'alice');
    await connect(s, alice);
    const m = await scrape(s.metricsPort, 't0k');
    expect(value(m, 'switchboard_connections', { state: 'authenticated' })).toBe(1);
    expect((await fetch(`http://127.0.0.1:${s.metricsPort}/metrics`)).status).toBe(401);
    const other = await fetch(`http://127.0.0.1:${s.metricsPort}/health`);
    expect(other.status).toBe(404);
    expect(await other.json()).toMatchObject({ code: 'E_NOT_FOUND' });
    // The server's port points a scraper to the metrics port.
    const main = await fetch(`http://127.0.0.1:${s.port}/metrics`, { headers: { Authorization: 'Bearer t0k' } });
    expect(main.status).toBe(404);
    expect(await main.json()).toMatchObject({ code: 'E_NOT_FOUND', message: expect.stringContaining(`metrics_listen (port ${s.metricsPort})`) });
  });

  it('a busy metrics_listen port is E_LISTEN naming the setting', async () => {
    const s = await start();
    await expect(Server.start({ configText: `listen = 127.0.0.1:0\ndata_dir = ${tempDir()}\nmetrics_listen = 127.0.0.1:${s.port}\n`, log: () => {} })).rejects.toMatchObject({ code: 'E_LISTEN', message: expect.stringContaining('metrics_listen') });
  });
});
