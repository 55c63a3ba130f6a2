// The cluster bus (lib/cluster/) against a real nats-server on loopback:
// several buses in this process stand for the nodes, and one in a child
// process is the node that gets killed. What a test proves must not have
// passed by luck: a copy that must not arrive is checked after a later copy
// on the same path did arrive (NATS keeps one connection's order).
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { connect } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClusterBus, type BusOptions } from '../lib/cluster/bus';
import { decodeToken, encodeToken } from '../lib/cluster/subjects';
import { SwitchboardError } from '../lib/errors';
import { reap, tempDir, until } from './helpers';
import { startNats, type NatsServer } from './nats';

const text = (s: string): Uint8Array => Buffer.from(s, 'utf8');
const str = (b: Uint8Array): string => Buffer.from(b).toString('utf8');

interface Got {
  user: string;
  item: string;
  from: string;
}

/** A bus as a test node: what it received for users, and its events. */
interface TestNode {
  bus: ClusterBus;
  got: Got[];
  events: string[];
  errors: SwitchboardError[];
  /** Items received for one user, in order. */
  items(user: string): string[];
}

async function node(nats: NatsServer, name: string, extra: Partial<BusOptions> = {}): Promise<TestNode> {
  const got: Got[] = [];
  const bus = await ClusterBus.connect({
    servers: nats.url,
    node: name,
    nodeTimeout: 1000,
    reconnectWait: 100,
    onUser: (user, item, from) => got.push({ user, item: str(item), from }),
    ...extra,
  });
  const events: string[] = [];
  const errors: SwitchboardError[] = [];
  bus.on('nodeUp', (n) => events.push(`up ${n}`));
  bus.on('nodeDown', (n, why) => events.push(`down ${n} ${why}`));
  bus.on('nodeRejoined', (n) => events.push(`rejoined ${n}`));
  bus.on('connected', () => events.push('connected'));
  bus.on('disconnected', () => events.push('disconnected'));
  bus.on('error', (e) => errors.push(e));
  return { bus, got, events, errors, items: (user) => got.filter((g) => g.user === user).map((g) => g.item) };
}

/** A bus in a child process (to be killed); resolves once it is connected. */
async function childNode(nats: NatsServer, name: string): Promise<ChildProcess> {
  const dir = tempDir('sb-bus-child-');
  const script = path.join(dir, 'node.js');
  fs.writeFileSync(
    script,
    `const { ClusterBus } = require(${JSON.stringify(path.join(__dirname, '..', 'dist', 'cluster', 'bus.js'))});
ClusterBus.connect({ servers: process.argv[2], node: process.argv[3], onUser() {} }).then(
  () => process.stdout.write('READY\\n'),
  (e) => { process.stderr.write(String(e) + '\\n'); process.exit(1); },
);
`,
  );
  const child = reap(spawn(process.execPath, [script, nats.url, name], { stdio: ['ignore', 'pipe', 'inherit'] }));
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => d.toString().includes('READY') && resolve());
    child.once('exit', (code) => reject(new Error(`the child bus exited with ${code}`)));
  });
  return child;
}

/**
 * A TCP relay to NATS that the test can cut and restore: the node behind it
 * loses NATS, or stays away from it, while the others do not.
 */
async function relay(target: number): Promise<{ url: string; cut(): Promise<void>; restore(): Promise<void>; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const make = (): net.Server =>
    net.createServer((client) => {
      const upstream = net.connect(target, '127.0.0.1');
      for (const [from, to] of [[client, upstream], [upstream, client]]) {
        sockets.add(from);
        from.pipe(to);
        from.on('error', () => to.destroy());
        from.on('close', () => {
          sockets.delete(from);
          to.destroy();
        });
      }
    });
  let server: net.Server | null = make();
  await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  const cut = async (): Promise<void> => {
    const s = server;
    server = null;
    for (const sock of sockets) sock.destroy();
    if (s) await new Promise<void>((r) => s.close(() => r()));
  };
  return {
    url: `nats://127.0.0.1:${port}`,
    cut,
    async restore() {
      server = make();
      await new Promise<void>((r) => server!.listen(port, '127.0.0.1', r));
    },
    close: cut,
  };
}

async function rejection(p: Promise<unknown>): Promise<SwitchboardError> {
  try {
    await p;
  } catch (e) {
    return e as SwitchboardError;
  }
  throw new Error('expected a rejection');
}

function thrown(f: () => unknown): SwitchboardError {
  try {
    f();
  } catch (e) {
    return e as SwitchboardError;
  }
  throw new Error('expected a throw');
}

const ODD_NAMES = ['alice', 'alice@example.com', 'a.b', 'a b', '*', '>', 'a.*.>', '%', '%41', '%2E', 'tab\there', 'ünïcödé', '日本語', '😀', '..', ' ', '+49 170 123', "o'brien", 'x'.repeat(255)];

describe('user addresses as subject tokens', () => {
  it('keeps plain names readable and escapes what NATS would read as syntax', () => {
    expect(encodeToken('alice')).toBe('alice');
    expect(encodeToken('+49-170-1234')).toBe('+49-170-1234');
    expect(encodeToken('alice@example.com')).toBe('alice@example%2Ecom');
    expect(encodeToken('a.b c')).toBe('a%2Eb%20c');
    expect(encodeToken('%')).toBe('%25');
    expect(encodeToken('ü')).toBe('%C3%BC');
  });

  it('round-trips odd names into tokens NATS takes as one token, one token per name', () => {
    const tokens = new Set<string>();
    for (const name of ODD_NAMES) {
      const t = encodeToken(name);
      expect(t, name).toMatch(/^[\x21-\x7e]+$/);
      expect(t, name).not.toMatch(/[.*>]/);
      expect(decodeToken(t), name).toBe(name);
      tokens.add(t);
    }
    expect(tokens.size).toBe(ODD_NAMES.length);
  });

  it('reads back only tokens it makes, so no two names share a subject', () => {
    for (const t of ['', '%41', '%2e', '%2', '%ZZ', 'a b', 'a.b', 'ü', '%FF', '%C3']) expect(decodeToken(t), t).toBeNull();
  });

  it('refuses an empty name and one over 255 bytes', () => {
    expect(thrown(() => encodeToken('')).code).toBe('E_CLUSTER_ADDRESS');
    expect(thrown(() => encodeToken('ü'.repeat(128))).code).toBe('E_CLUSTER_ADDRESS');
  });
});

describe('the cluster bus on a real nats-server', () => {
  let nats: NatsServer;
  let a: TestNode;
  let b: TestNode;
  let c: TestNode;

  beforeAll(async () => {
    nats = await startNats();
    a = await node(nats, 'node-a');
    b = await node(nats, 'node-b');
    c = await node(nats, 'node-c');
    await until(() => [a, b, c].every((n) => n.bus.nodes.length === 2));
  });

  afterAll(async () => {
    for (const n of [a, b, c]) await n?.bus.close();
    await nats?.close();
  });

  it('refuses to start without a NATS to reach, with a code', async () => {
    const dead = await startNats();
    const url = dead.url;
    await dead.close();
    const e = await rejection(ClusterBus.connect({ servers: url, node: 'nowhere', onUser: () => {} }));
    expect(e.code).toBe('E_CLUSTER_CONNECT');
    expect(e.message).toContain(url);
  });

  it('routes a user\'s copies to the node that has the user, and only there', async () => {
    const offB = b.bus.subscribeUser('route-alice');
    const offC = c.bus.subscribeUser('route-bob');
    await Promise.all([b.bus.flush(), c.bus.flush()]);
    a.bus.publishUser('route-alice', text('for alice'));
    a.bus.publishUser('route-bob', text('for bob'));
    await until(() => b.items('route-alice').length === 1 && c.items('route-bob').length === 1);
    expect(b.got.filter((g) => g.user.startsWith('route-'))).toEqual([{ user: 'route-alice', item: 'for alice', from: 'node-a' }]);
    expect(c.got.filter((g) => g.user.startsWith('route-'))).toEqual([{ user: 'route-bob', item: 'for bob', from: 'node-a' }]);
    expect(a.got).toEqual([]);
    offB();
    offC();
  });

  it('counts a user\'s subscriptions on a node: the last release stops delivery', async () => {
    const first = b.bus.subscribeUser('count-carl');
    const second = b.bus.subscribeUser('count-carl');
    const probe = b.bus.subscribeUser('count-probe');
    expect(b.bus.userCount('count-carl')).toBe(2);
    await b.bus.flush();

    first();
    first(); // a release counts once
    expect(b.bus.userCount('count-carl')).toBe(1);
    await b.bus.flush();
    a.bus.publishUser('count-carl', text('one device left'));
    a.bus.publishUser('count-probe', text('probe 1'));
    await until(() => b.items('count-probe').length === 1);
    expect(b.items('count-carl')).toEqual(['one device left']);

    second();
    expect(b.bus.userCount('count-carl')).toBe(0);
    await b.bus.flush();
    a.bus.publishUser('count-carl', text('nobody here'));
    a.bus.publishUser('count-probe', text('probe 2'));
    // The probe was published after the copy, on the same connection: had the copy come, it came first.
    await until(() => b.items('count-probe').length === 2);
    expect(b.items('count-carl')).toEqual(['one device left']);
    probe();
  });

  it('hands a copy to every node with a device of the user, never back to its publisher', async () => {
    const offB = b.bus.subscribeUser('multi-dana');
    const offC = c.bus.subscribeUser('multi-dana');
    const offA = a.bus.subscribeUser('multi-dana');
    await Promise.all([a.bus.flush(), b.bus.flush(), c.bus.flush()]);
    a.bus.publishUser('multi-dana', text('from a'));
    b.bus.publishUser('multi-dana', text('from b'));
    await until(() => b.items('multi-dana').length === 1 && c.items('multi-dana').length === 2 && a.items('multi-dana').length === 1);
    expect(c.items('multi-dana').sort()).toEqual(['from a', 'from b']);
    expect(b.items('multi-dana')).toEqual(['from a']);
    expect(a.items('multi-dana')).toEqual(['from b']);
    offA();
    offB();
    offC();
  });

  it('carries odd user names through NATS to the right subscription', async () => {
    const offs = ODD_NAMES.map((n) => b.bus.subscribeUser(n));
    await b.bus.flush();
    for (const n of ODD_NAMES) a.bus.publishUser(n, text(`to ${n}`));
    await until(() => ODD_NAMES.every((n) => b.items(n).length === 1));
    for (const n of ODD_NAMES) expect(b.items(n)).toEqual([`to ${n}`]);
    for (const off of offs) off();
    expect(thrown(() => a.bus.publishUser('', text('x'))).code).toBe('E_CLUSTER_ADDRESS');
  });

  it('broadcasts to every other node on the channel, and a removed handler hears no more', async () => {
    const heard: string[] = [];
    const offB = b.bus.onBroadcast('dir', (item, from) => heard.push(`b ${from} ${str(item)}`));
    const offC = c.bus.onBroadcast('dir', (item, from) => heard.push(`c ${from} ${str(item)}`));
    const offA = a.bus.onBroadcast('dir', (item) => heard.push(`a ${str(item)}`));
    const probeB = b.bus.onBroadcast('probe', (item) => heard.push(`b probe ${str(item)}`));
    await Promise.all([a.bus.flush(), b.bus.flush(), c.bus.flush()]);
    a.bus.broadcast('dir', text('user made'));
    await until(() => heard.length === 2);
    expect(heard.sort()).toEqual(['b node-a user made', 'c node-a user made']);

    offB();
    await b.bus.flush();
    a.bus.broadcast('dir', text('user deleted'));
    a.bus.broadcast('probe', text('after'));
    await until(() => heard.includes('b probe after') && heard.includes('c node-a user deleted'));
    expect(heard.filter((h) => h.startsWith('b '))).toEqual(['b node-a user made', 'b probe after']);
    expect(thrown(() => a.bus.broadcast('Not.A.Channel', text('x'))).code).toBe('E_CLUSTER_ADDRESS');
    offA();
    offC();
    probeB();
  });

  it('answers requests, and fails them with codes: a failed handler, no answer in time, no such node', async () => {
    const offB = b.bus.onRequest((item, from) => text(`${from} asked ${str(item)}`));
    expect(str(await a.bus.request('node-b', text('ping')))).toBe('node-a asked ping');

    const offC = c.bus.onRequest(async (item) => {
      if (str(item) === 'fail') throw new Error('cannot do that');
      if (str(item) === 'never') return new Promise<Uint8Array>(() => {});
      return text('later');
    });
    expect(str(await a.bus.request('node-c', text('ok')))).toBe('later');
    const failed = await rejection(a.bus.request('node-c', text('fail')));
    expect(failed.code).toBe('E_CLUSTER_REMOTE');
    expect(failed.message).toContain('cannot do that');

    const t0 = Date.now();
    const late = await rejection(a.bus.request('node-c', text('never'), 300));
    expect(late.code).toBe('E_CLUSTER_TIMEOUT');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(250);
    expect(Date.now() - t0).toBeLessThan(2000);

    expect((await rejection(a.bus.request('node-z', text('anyone?')))).code).toBe('E_CLUSTER_NO_NODE');
    offB();
    offC();
    expect((await rejection(a.bus.request('node-b', text('ping')))).code).toBe('E_CLUSTER_REMOTE');
  });

  it('delivers what a node published before a request to the asked node before the request', async () => {
    const off = b.bus.subscribeUser('before-req');
    await b.bus.flush();
    const offReq = b.bus.onRequest(() => text(b.items('before-req').join(',')));
    for (let i = 0; i < 100; i++) a.bus.publishUser('before-req', text(String(i)));
    const seen = str(await a.bus.request('node-b', text('what have you got?')));
    expect(seen.split(',').length).toBe(100);
    offReq();
    off();
  });

  it('keeps each publisher\'s order over 10,000 copies, batched and across loop turns', async () => {
    const off1 = b.bus.subscribeUser('order-erin');
    const off2 = b.bus.subscribeUser('order-finn');
    await b.bus.flush();
    for (let i = 0; i < 10_000; i++) {
      a.bus.publishUser('order-erin', text(`a${i}`));
      c.bus.publishUser('order-erin', text(`c${i}`));
      if (i % 3 === 0) a.bus.publishUser('order-finn', text(`a${i}`));
      // Several loop turns, so batches are cut by turns as well as by size.
      if (i % 1000 === 999) await new Promise((r) => setImmediate(r));
    }
    await until(() => b.items('order-erin').length === 20_000 && b.items('order-finn').length === 3334);
    const erin = b.got.filter((g) => g.user === 'order-erin');
    const fromA = erin.filter((g) => g.from === 'node-a').map((g) => g.item);
    const fromC = erin.filter((g) => g.from === 'node-c').map((g) => g.item);
    expect(fromA).toEqual(Array.from({ length: 10_000 }, (_, i) => `a${i}`));
    expect(fromC).toEqual(Array.from({ length: 10_000 }, (_, i) => `c${i}`));
    expect(b.items('order-finn')).toEqual(Array.from({ length: 3334 }, (_, i) => `a${i * 3}`));
    off1();
    off2();
  });

  it('refuses an item larger than a NATS message can carry', () => {
    expect(thrown(() => a.bus.publishUser('big', new Uint8Array(1024 * 1024))).code).toBe('E_CLUSTER_TOO_LARGE');
  });

  it('sees nodes come, leave, and die: a goodbye at once, a killed node within the node timeout', async () => {
    const d = await node(nats, 'node-d');
    await until(() => [a, b, c].every((n) => n.events.includes('up node-d')));
    // d hears the others from their answers to its hello, which may come after they heard it.
    await until(() => d.bus.nodes.length === 3);
    expect(d.bus.nodes.sort()).toEqual(['node-a', 'node-b', 'node-c']);
    const t0 = Date.now();
    await d.bus.close();
    await until(() => [a, b, c].every((n) => n.events.includes('down node-d left')));
    // A goodbye, not the timeout: well under the 1 s node timeout.
    expect(Date.now() - t0).toBeLessThan(800);
    expect(a.bus.nodes).not.toContain('node-d');

    const child = await childNode(nats, 'node-killed');
    await until(() => [a, b, c].every((n) => n.bus.nodes.includes('node-killed')));
    const killedAt = Date.now();
    child.kill('SIGKILL');
    await until(() => [a, b, c].every((n) => n.events.includes('down node-killed timeout')), 10_000);
    const noticed = Date.now() - killedAt;
    // Gone after 1 s of silence, checked every heartbeat (a third of it).
    expect(noticed).toBeGreaterThanOrEqual(600);
    expect(noticed).toBeLessThan(2500);
    for (const n of [a, b, c]) expect(n.bus.nodes.sort()).toEqual(['node-a', 'node-b', 'node-c'].filter((x) => x !== n.bus.node));
  });

  it('reports a listener that throws and goes on', async () => {
    const off = a.bus.on('nodeUp', () => {
      throw new Error('listener bug');
    });
    const f = await node(nats, 'node-f');
    await until(() => a.errors.some((e) => e.code === 'E_INTERNAL' && e.message.includes('listener bug')));
    expect(a.bus.nodes).toContain('node-f');
    expect(a.events).toContain('up node-f');
    off();
    await f.bus.close();
    // Every node, not only a: a goodbye heard late would land in the next test's events.
    await until(() => [a, b, c].every((n) => n.events.includes('down node-f left')));
  });

  it('a node connected with join: false is unknown until join(); what the others answer its hello with reaches the handlers it registered before', async () => {
    // As the server's cluster room: the others announce their users the moment they hear a node.
    const offs = [a, b].map((n) => n.bus.on('nodeUp', (up) => up === 'node-late' && n.bus.broadcast('announce', text(`users of ${n.bus.node}`))));
    const late = await node(nats, 'node-late', { join: false });
    // The server builds itself before it registers its handlers: an answer
    // sent meanwhile would reach NATS before the subscription and be dropped.
    // Nobody knows the node yet, not even from a heartbeat (every third of
    // the 1 s node timeout).
    await new Promise((r) => setTimeout(r, 500));
    for (const n of [a, b, c]) expect(n.bus.nodes).not.toContain('node-late');
    const heard: string[] = [];
    late.bus.onBroadcast('announce', (item, from) => heard.push(`${from}: ${str(item)}`));
    late.bus.join();
    await until(() => heard.length === 2);
    expect(heard.sort()).toEqual(['node-a: users of node-a', 'node-b: users of node-b']);
    await until(() => [a, b, c].every((n) => n.bus.nodes.includes('node-late')));
    for (const off of offs) off();
    await late.bus.close();
    await until(() => [a, b, c].every((n) => n.events.includes('down node-late left')));
  });

  it('does not take its own blocked loop for the others\' silence', async () => {
    for (const n of [a, b, c]) n.events.length = 0;
    // Longer than the node timeout: when the loop runs again, the heartbeat
    // timer fires before the beats that came meanwhile are read.
    const end = Date.now() + 1500;
    while (Date.now() < end);
    await new Promise((r) => setTimeout(r, 700));
    for (const n of [a, b, c]) expect(n.events).toEqual([]);
  });

  it('asks a node it took for gone, alive all along (its beats came late), to tell it again what it tells new nodes; and no one else', async () => {
    for (const n of [a, b, c]) n.events.length = 0;
    const heard = new Map<string, string[]>([a, b, c].map((n) => [n.bus.node, []]));
    const offs = [a, b, c].map((n) => n.bus.onBroadcast('announce', (item, from) => heard.get(n.bus.node)!.push(`${from}: ${str(item)}`)));
    // As the server's cluster room: a node announces its users to a new node and to one that asks again.
    const slow = await node(nats, 'node-slow', { heartbeat: 2500, join: false });
    offs.push(
      slow.bus.on('nodeUp', (n) => slow.bus.broadcast('announce', text(`new ${n}`))),
      slow.bus.on('nodeRejoined', (n) => slow.bus.broadcast('announce', text(`again for ${n}`))),
    );
    try {
      slow.bus.join();
      await until(() => [a, b, c].every((n) => heard.get(n.bus.node)!.includes(`node-slow: new ${n.bus.node}`)));
      // Its beats come every 2.5 s, past the others' 1 s timeout: they drop
      // it (with what it told them), then hear its next beat, not a hello,
      // and ask it alone.
      await until(() => [a, b, c].every((n) => heard.get(n.bus.node)!.includes(`node-slow: again for ${n.bus.node}`)), 8000);
      for (const n of [a, b, c]) {
        expect(n.events.slice(0, 3)).toEqual(['up node-slow', 'down node-slow timeout', 'up node-slow']);
        expect(n.bus.nodes).toContain('node-slow');
      }
      // Each asked (once per time it dropped node-slow); the answers to node-slow's own hello at the start asked nothing.
      expect([...new Set(slow.events.filter((e) => e.startsWith('rejoined')))].sort()).toEqual(['rejoined node-a', 'rejoined node-b', 'rejoined node-c']);
      for (const n of [a, b, c]) expect(n.events.filter((e) => e.startsWith('rejoined'))).toEqual([]);
      // It never took them for gone: its own ticks were on time.
      expect(slow.events.filter((e) => e.startsWith('down'))).toEqual([]);
    } finally {
      for (const off of offs) off();
      await slow.bus.close();
      await until(() => [a, b, c].every((n) => !n.bus.nodes.includes('node-slow')));
    }
  });

  it('notices a node that restarts under the same name before it timed out', async () => {
    const watch = await node(nats, 'node-watch', { nodeTimeout: 10_000 });
    const first = await childNode(nats, 'node-r');
    await until(() => watch.events.includes('up node-r'));
    first.kill('SIGKILL');
    const second = await childNode(nats, 'node-r');
    await until(() => watch.events.filter((e) => e.includes('node-r')).length === 3);
    expect(watch.events.filter((e) => e.includes('node-r'))).toEqual(['up node-r', 'down node-r restarted', 'up node-r']);
    await watch.bus.close();
    second.kill('SIGKILL');
    await until(() => [a, b, c].every((n) => !n.bus.nodes.includes('node-r')));
  });

  it('tells both nodes when two share a name', async () => {
    const one = await node(nats, 'node-twin');
    const two = await node(nats, 'node-twin');
    await until(() => [one, two].every((n) => n.errors.some((e) => e.code === 'E_CLUSTER_DUPLICATE_NODE')));
    await one.bus.close();
    await two.bus.close();
    // Their goodbyes reach the others before the answer to a flush they make
    // after (one NATS server keeps that order): no late event of theirs
    // lands in the next test.
    for (const n of [a, b, c]) await n.bus.flush();
    for (const n of [a, b, c]) expect(n.bus.nodes).not.toContain('node-twin');
  });

  it('survives a NATS restart: held publishes are delivered in order, subscriptions come back, nobody is declared gone', async () => {
    const off = b.bus.subscribeUser('outage-gina');
    await b.bus.flush();
    for (const n of [a, b, c]) n.events.length = 0;
    await nats.stop();
    await until(() => [a, b, c].every((n) => n.events.includes('disconnected')));
    expect(a.bus.status.connected).toBe(false);

    // Subscriptions changed during the outage take effect when NATS is back.
    const offNew = b.bus.subscribeUser('outage-new');
    const dropped = b.bus.subscribeUser('outage-dropped');
    dropped();
    for (let i = 0; i < 500; i++) a.bus.publishUser('outage-gina', text(`held ${i}`));
    a.bus.publishUser('outage-dropped', text('nobody'));
    a.bus.publishUser('outage-new', text('made during the outage'));
    await new Promise((r) => setImmediate(r));
    expect(a.bus.status.heldBytes).toBeGreaterThan(500 * 5);
    expect((await rejection(a.bus.request('node-b', text('x')))).code).toBe('E_CLUSTER_DISCONNECTED');
    expect((await rejection(a.bus.flush())).code).toBe('E_CLUSTER_DISCONNECTED');
    // Longer than the node timeout: silence during an outage is not death.
    await new Promise((r) => setTimeout(r, 1500));

    await nats.start();
    await until(() => [a, b, c].every((n) => n.events.includes('connected') && n.bus.status.flowing), 20_000);
    await until(() => b.items('outage-gina').length === 500);
    expect(b.items('outage-gina')).toEqual(Array.from({ length: 500 }, (_, i) => `held ${i}`));
    expect(a.bus.status.heldBytes).toBe(0);

    await until(() => b.items('outage-new').length === 1);
    expect(b.items('outage-dropped')).toEqual([]);

    // B subscribed before the outage and not since: the client subscribed again by itself.
    a.bus.publishUser('outage-gina', text('after'));
    await until(() => b.items('outage-gina').length === 501);
    for (const n of [a, b, c]) expect(n.events.filter((e) => e.startsWith('down'))).toEqual([]);
    expect(a.bus.nodes.sort()).toEqual(['node-b', 'node-c']);
    off();
    offNew();
  });

  it('after an outage, holds what waited until the nodes that were live are back (NATS drops what nobody listens to)', async () => {
    const r = await relay(nats.port);
    // The publisher gives its peers 10 s to come back; the late one stays away 1.5 s.
    const early = await node(nats, 'node-early', { nodeTimeout: 10_000 });
    const late = await node(nats, 'node-late', { servers: r.url });
    const off = late.bus.subscribeUser('hold-ivan');
    await late.bus.flush();
    await until(() => early.bus.nodes.includes('node-late'));
    for (const n of [early, late]) n.events.length = 0;
    await r.cut();
    await nats.stop();
    await until(() => [early, late].every((n) => n.events.includes('disconnected')));
    for (let i = 0; i < 50; i++) early.bus.publishUser('hold-ivan', text(`held ${i}`));

    await nats.start();
    await until(() => early.events.includes('connected'));
    await new Promise((res) => setTimeout(res, 1500));
    expect(early.bus.status).toMatchObject({ connected: true, flowing: false });
    expect(early.bus.status.heldBytes).toBeGreaterThan(0);
    expect(late.events).not.toContain('connected');
    // A request made during the hold waits for it, within its timeout, and goes after what waited.
    late.bus.onRequest(() => text(`have ${late.items('hold-ivan').length}`));
    const answer = early.bus.request('node-late', text('how many?'), 10_000);

    await r.restore();
    expect(str(await answer)).toBe('have 50');
    await until(() => late.items('hold-ivan').length === 50, 20_000);
    expect(late.items('hold-ivan')).toEqual(Array.from({ length: 50 }, (_, i) => `held ${i}`));
    expect(early.bus.status.flowing).toBe(true);
    expect(early.events.filter((e) => e.startsWith('down'))).toEqual([]);
    off();
    await early.bus.close();
    await late.bus.close();
    await r.close();
    // The others lost NATS too: wait until they flow again before the next test.
    await until(() => [a, b, c].every((n) => n.bus.status.flowing), 20_000);
  });

  it('drops and reports a message on its subjects that is not a bus frame, and goes on', async () => {
    const off = b.bus.subscribeUser('frame-jo');
    await b.bus.flush();
    const foreign = await connect({ servers: nats.url });
    foreign.publish('sb.u.frame-jo', text('{"not":"a frame"}'));
    await foreign.flush();
    await foreign.close();
    a.bus.publishUser('frame-jo', text('a real one'));
    await until(() => b.items('frame-jo').length === 1);
    expect(b.items('frame-jo')).toEqual(['a real one']);
    expect(b.errors.map((e) => e.code)).toContain('E_CLUSTER_FRAME');
    off();
  });

  it('refuses what is over the buffer limit during an outage, loses nothing it took, and counts what a close leaves', async () => {
    const small = await node(nats, 'node-small', { bufferLimit: 4096 });
    const leaving = await node(nats, 'node-leaving');
    const off = b.bus.subscribeUser('limit-hana');
    await b.bus.flush();
    await until(() => b.bus.nodes.includes('node-small'));
    for (const n of [small, leaving]) n.events.length = 0;
    await nats.stop();
    await until(() => [small, leaving].every((n) => n.events.includes('disconnected')));

    let taken = 0;
    let refused: SwitchboardError | undefined;
    for (let i = 0; i < 1000 && !refused; i++) {
      try {
        small.bus.publishUser('limit-hana', text(`item ${i} `.padEnd(100, '.')));
        taken++;
      } catch (e) {
        refused = e as SwitchboardError;
      }
    }
    expect(refused?.code).toBe('E_CLUSTER_BUFFER_FULL');
    expect(taken).toBeGreaterThan(20);
    expect(taken).toBeLessThan(4096 / 100);
    expect(small.bus.status.heldBytes).toBeLessThanOrEqual(4096);

    for (let i = 0; i < 3; i++) leaving.bus.publishUser('limit-hana', text(`lost ${i}`));
    expect(await leaving.bus.close()).toEqual({ unsent: 3 });

    await nats.start();
    await until(() => b.items('limit-hana').length === taken, 20_000);
    expect(b.items('limit-hana')).toEqual(Array.from({ length: taken }, (_, i) => `item ${i} `.padEnd(100, '.')));
    // Flowing again, the limit no longer applies.
    for (let i = 0; i < 100; i++) small.bus.publishUser('limit-hana', text('x'.repeat(100)));
    await until(() => b.items('limit-hana').length === taken + 100);
    await small.bus.close();
    off();
  });

  it('refuses calls once closed', async () => {
    const e = await node(nats, 'node-closing');
    const off = e.bus.subscribeUser('closing');
    await e.bus.close();
    expect(thrown(() => e.bus.publishUser('x', text('y'))).code).toBe('E_CLUSTER_CLOSED');
    expect(thrown(() => e.bus.subscribeUser('x')).code).toBe('E_CLUSTER_CLOSED');
    expect((await rejection(e.bus.request('node-a', text('y')))).code).toBe('E_CLUSTER_CLOSED');
    off(); // a release after close is harmless
    expect(await e.bus.close()).toEqual({ unsent: 0 });
  });
});
