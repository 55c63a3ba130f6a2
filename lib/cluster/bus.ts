/**
 * The cluster bus: how a node talks to the others through NATS
 * (docs/cluster.md). One bus per node.
 *
 * - Users: a node subscribes to a user's subject while it has a connection
 *   of that user (`subscribeUser`, counted: two devices are one
 *   subscription); a copy for a user is published to that subject
 *   (`publishUser`) and NATS hands it to every node that has the user. NATS
 *   interest is the directory of who is where.
 * - Broadcasts: channels every node applies (directory changes, presence).
 * - Requests: one node asks another and waits for its answer, bounded.
 * - Membership: heartbeats; every node knows the live set and hears of a
 *   node that is gone within `nodeTimeout`.
 *
 * A node never receives what it published itself (NATS `noEcho`): the
 * publishing node applies its own copies, changes and presence locally.
 */
import { randomBytes } from 'node:crypto';
import { connect, ErrorCode as NatsErrorCode, type Msg, type NatsConnection, type NatsError, type Subscription } from 'nats';
import { SwitchboardError } from '../errors';
import { decodeFrame, encodeFrame, FrameKind, type Frame } from './frame';
import { Membership, type Change, type NodeGone } from './membership';
import { Outbox } from './outbox';
import { Subjects } from './subjects';

export interface BusOptions {
  /** NATS URLs: `nats://HOST:PORT`, an array or comma-separated (the `cluster` setting). */
  servers: string | readonly string[];
  /** This node's name, unique in the cluster (the `node` setting). */
  node: string;
  /** Subject prefix, so several clusters can share one NATS. Default `sb`. */
  prefix?: string;
  /** A node not heard from for this long is gone. Default 3000 ms. */
  nodeTimeout?: number;
  /** Heartbeat period. Default a third of nodeTimeout. */
  heartbeat?: number;
  /** Wait between reconnect attempts (forever, each NATS URL in turn). Default 1000 ms. */
  reconnectWait?: number;
  /** How long one attempt to reach a NATS server may take. Default 2000 ms. */
  connectTimeout?: number;
  /** Bytes held while NATS is unreachable; beyond, publish throws E_CLUSTER_BUFFER_FULL. Default 8 MiB. */
  bufferLimit?: number;
  /** Default wait for a request's answer. Default 2000 ms. */
  requestTimeout?: number;
  /**
   * Whether the node says hello at once (default true). With false it stays
   * silent, unknown to the others, until join(): the others answer a new
   * node at once (their announcements on broadcast channels), and NATS drops
   * what reaches a channel this node has not subscribed to yet, so a node
   * registers its broadcast handlers first and joins then.
   */
  join?: boolean;
  /**
   * Receives each item published for a user this node subscribes to, in the
   * order its publisher published them; `from` is the publishing node. The
   * item is a view into the NATS message: copy it to keep it past the call.
   */
  onUser(user: string, item: Uint8Array, from: string): void;
}

export interface BusEvents {
  /** Connected to NATS again after an outage (the first connection is the resolved connect()). */
  connected: (server: string) => void;
  /** Lost NATS: publishes are held (up to bufferLimit) until it is back. */
  disconnected: (server: string) => void;
  nodeUp: (node: string) => void;
  nodeDown: (node: string, reason: NodeGone) => void;
  /**
   * A node this one knew, same incarnation, said hello again: it had taken
   * this node for gone (its beats came late) or was away from NATS, and
   * what this node told it on the broadcast channels since it last heard it
   * may be lost there. Whoever tells a new node something at nodeUp tells
   * this one again.
   */
  nodeRejoined: (node: string) => void;
  /** Something to log: a frame that could not be read, a handler that threw, an error NATS reported. */
  error: (err: SwitchboardError) => void;
}

/** What /health shows of the bus. */
export interface BusStatus {
  node: string;
  connected: boolean;
  /** Connected, and what waited during an outage is sent (false while the bus waits for the other nodes to be back). */
  flowing: boolean;
  /** The NATS server in use, or the one lost. */
  server: string;
  /** Bytes accepted and not yet handed to NATS. */
  heldBytes: number;
  /** The other live nodes. */
  nodes: string[];
}

/** A request's answer: its bytes, or a failure the handler threw. */
export type RequestHandler = (item: Uint8Array, from: string) => Uint8Array | Promise<Uint8Array>;

type Listeners = { [E in keyof BusEvents]: Set<BusEvents[E]> };

interface Counted {
  count: number;
  sub: Subscription;
}

interface Channel {
  handlers: Set<(item: Uint8Array, from: string) => void>;
  sub: Subscription;
}

const NO_ITEMS: Uint8Array[] = [];
const HELLO = Uint8Array.of(1);
const NOT_HELLO = Uint8Array.of(0);

export function serverList(servers: string | readonly string[]): string[] {
  const list = (typeof servers === 'string' ? servers.split(',') : [...servers]).map((s) => s.trim()).filter((s) => s !== '');
  if (list.length === 0) throw new SwitchboardError('E_CLUSTER_CONNECT', 'no NATS URL given: cluster = nats://HOST:PORT[,nats://HOST:PORT...]');
  return list;
}

export class ClusterBus {
  readonly node: string;
  private readonly subjects: Subjects;
  private readonly origin: Uint8Array;
  /** Random per start: a beat under a known name with another one is a restart. */
  private readonly incarnation = randomBytes(8);
  private readonly membership: Membership;
  private readonly outbox: Outbox;
  private readonly listeners: Listeners = { connected: new Set(), disconnected: new Set(), nodeUp: new Set(), nodeDown: new Set(), nodeRejoined: new Set(), error: new Set() };
  private readonly users = new Map<string, Counted>();
  private readonly channels = new Map<string, Channel>();
  private requestHandler: RequestHandler | null = null;
  private connected = true;
  private closed = false;
  /** Said hello: beats go out (BusOptions.join). */
  private joined = false;
  /** When this node last said hello: the plain beats answering it make nodes known, and ask for nothing more. */
  private lastHello = -Infinity;
  private server: string;
  private readonly heartbeat: number;
  private readonly heartbeatTimer: NodeJS.Timeout;
  private lastTick: number;
  /** After a reconnect: the nodes not yet heard again, and the bound on waiting for them. */
  private awaiting: Set<string> | null = null;
  private holdTimer: NodeJS.Timeout | undefined;
  /** Requests made while the bus waits for the other nodes after a reconnect. */
  private flowWaiters: (() => void)[] = [];
  /** Foreign incarnations seen under this node's own name (reported once each). */
  private readonly impostors = new Set<string>();

  /**
   * Connects to NATS, trying each URL once (E_CLUSTER_CONNECT when none
   * answers); once connected, the bus reconnects by itself forever.
   */
  static async connect(opts: BusOptions): Promise<ClusterBus> {
    const subjects = new Subjects(opts.prefix ?? 'sb');
    // Checked before connecting: a node name no subject can carry is a configuration error.
    subjects.node(opts.node);
    const servers = serverList(opts.servers);
    const nodeTimeout = opts.nodeTimeout ?? 3000;
    const wait = opts.reconnectWait ?? 1000;
    let nc: NatsConnection;
    try {
      nc = await connect({
        servers,
        name: `switchboard ${opts.node}`,
        noEcho: true,
        maxReconnectAttempts: -1,
        reconnectTimeWait: wait,
        reconnectJitter: Math.round(wait / 5),
        timeout: opts.connectTimeout ?? 2000,
        // A NATS server that hangs without closing the socket is noticed
        // after two unanswered pings; one that dies closes the socket at once.
        pingInterval: Math.max(1000, nodeTimeout),
        maxPingOut: 2,
      });
    } catch (e) {
      throw new SwitchboardError('E_CLUSTER_CONNECT', `cannot reach NATS at ${servers.join(', ')}: ${(e as Error).message}`);
    }
    return new ClusterBus(nc, subjects, opts, nodeTimeout);
  }

  private constructor(
    private readonly nc: NatsConnection,
    subjects: Subjects,
    private readonly opts: BusOptions,
    private readonly nodeTimeout: number,
  ) {
    this.node = opts.node;
    this.subjects = subjects;
    this.origin = Buffer.from(opts.node, 'utf8');
    this.membership = new Membership(nodeTimeout);
    this.server = nc.getServer();
    this.outbox = new Outbox(this.origin, { limit: opts.bufferLimit ?? 8 * 1024 * 1024, maxBatch: 64 * 1024 }, this.sendReady);
    this.outbox.setMaxPayload(nc.info?.max_payload ?? 1024 * 1024);
    nc.subscribe(subjects.members, { callback: (err, msg) => this.received(err, msg, this.memberFrame) });
    // A hello sent to this node alone comes here too (ask()).
    nc.subscribe(subjects.node(opts.node), { callback: (err, msg) => this.received(err, msg, (f) => (f.kind === FrameKind.Beat ? this.memberFrame(f) : this.requestFrame(f, msg))) });
    void this.watchStatus();
    this.outbox.resume();
    if (opts.join !== false) this.join();
    this.heartbeat = opts.heartbeat ?? Math.max(100, Math.floor(nodeTimeout / 3));
    this.lastTick = Date.now();
    this.heartbeatTimer = setInterval(this.tick, this.heartbeat);
    this.heartbeatTimer.unref();
  }

  /**
   * Says hello: the other nodes hear of this one (nodeUp) and answer at
   * once, and heartbeats go out from now on. Subscriptions made before
   * this call reach NATS before the hello. Only once; at connect unless
   * BusOptions.join is false.
   */
  join(): void {
    this.open();
    if (this.joined) return;
    this.joined = true;
    this.beat(true);
  }

  /** Adds a listener; returns its removal. */
  on<E extends keyof BusEvents>(event: E, fn: BusEvents[E]): () => void {
    (this.listeners[event] as Set<BusEvents[E]>).add(fn);
    return () => {
      (this.listeners[event] as Set<BusEvents[E]>).delete(fn);
    };
  }

  get status(): BusStatus {
    return { node: this.node, connected: this.connected && !this.closed, flowing: this.outbox.flowing && !this.closed, server: this.server, heldBytes: this.outbox.heldBytes, nodes: this.membership.live };
  }

  /** The other live nodes. */
  get nodes(): string[] {
    return this.membership.live;
  }

  /**
   * This node has a connection of `user`: receive what is published for it.
   * Counted per user; returns the release of this one (NATS unsubscribes
   * when the last is released). Throws E_CLUSTER_ADDRESS for a name no
   * subject can carry.
   */
  subscribeUser(user: string): () => void {
    this.open();
    const subject = this.subjects.user(user);
    let c = this.users.get(subject);
    if (!c) {
      const sub = this.nc.subscribe(subject, { callback: (err, msg) => this.received(err, msg, (f) => this.userFrame(user, f)) });
      c = { count: 0, sub };
      this.users.set(subject, c);
    }
    const counted = c;
    counted.count++;
    let released = false;
    return () => {
      if (released || this.closed) return;
      released = true;
      if (--counted.count === 0) {
        counted.sub.unsubscribe();
        this.users.delete(subject);
      }
    };
  }

  /** How many of this node's connections hold `user`'s subscription (0: none). */
  userCount(user: string): number {
    return this.users.get(this.subjects.user(user))?.count ?? 0;
  }

  /**
   * Publishes an item for every node that has `user` (none: it goes
   * nowhere). Sent after this loop turn, batched with the turn's other items
   * for that user, in order. During a NATS outage it waits in the bus; see
   * Outbox.add for what it throws.
   */
  publishUser(user: string, item: Uint8Array): void {
    this.open();
    this.outbox.add(this.subjects.user(user), FrameKind.User, item);
  }

  /** Publishes an item to every other node listening on `channel`, as publishUser. */
  broadcast(channel: string, item: Uint8Array): void {
    this.open();
    this.outbox.add(this.subjects.broadcast(channel), FrameKind.Broadcast, item);
  }

  /** Receives the items other nodes broadcast on `channel`, in each publisher's order; returns the removal. */
  onBroadcast(channel: string, handler: (item: Uint8Array, from: string) => void): () => void {
    this.open();
    const subject = this.subjects.broadcast(channel);
    let ch = this.channels.get(subject);
    if (!ch) {
      const handlers = new Set<(item: Uint8Array, from: string) => void>();
      const sub = this.nc.subscribe(subject, { callback: (err, msg) => this.received(err, msg, (f) => this.broadcastFrame(handlers, f)) });
      ch = { handlers, sub };
      this.channels.set(subject, ch);
    }
    const own = ch;
    // A wrapper per registration, so registering one function twice is two registrations.
    const h = (item: Uint8Array, from: string): void => handler(item, from);
    own.handlers.add(h);
    return () => {
      if (!own.handlers.delete(h) || this.closed) return;
      if (own.handlers.size === 0) {
        own.sub.unsubscribe();
        this.channels.delete(subject);
      }
    };
  }

  /** Answers other nodes' requests (one handler; a new one replaces it). Returns its removal. */
  onRequest(handler: RequestHandler): () => void {
    this.requestHandler = handler;
    return () => {
      if (this.requestHandler === handler) this.requestHandler = null;
    };
  }

  /**
   * Asks `node` and resolves with its answer. What this node published
   * before the call reaches `node` before the request does. Rejects with
   * E_CLUSTER_TIMEOUT (no answer within `timeout` ms), E_CLUSTER_NO_NODE
   * (the node is not on NATS), E_CLUSTER_REMOTE (its handler failed) or
   * E_CLUSTER_DISCONNECTED (NATS is unreachable: no answer could come).
   */
  async request(node: string, item: Uint8Array, timeout = this.opts.requestTimeout ?? 2000): Promise<Uint8Array> {
    this.open();
    const subject = this.subjects.node(node);
    const deadline = Date.now() + timeout;
    if (!this.connected) throw disconnected();
    if (!this.outbox.flowing) await this.untilFlowing(timeout);
    // What was published before this call goes out first: NATS keeps one connection's order.
    this.outbox.flush();
    let answer: Msg;
    try {
      answer = await this.nc.request(subject, encodeFrame(FrameKind.Request, this.origin, [item]), { timeout: Math.max(1, deadline - Date.now()) });
    } catch (e) {
      const code = (e as NatsError).code;
      if (code === NatsErrorCode.NoResponders) throw new SwitchboardError('E_CLUSTER_NO_NODE', `node ${node} is not connected to the cluster`);
      if (code === NatsErrorCode.Timeout) throw new SwitchboardError('E_CLUSTER_TIMEOUT', `node ${node} did not answer within ${timeout} ms`);
      if (this.closed) throw closedError();
      throw disconnected();
    }
    let f: Frame;
    try {
      f = decodeFrame(answer.data);
    } catch (e) {
      throw SwitchboardError.from(e);
    }
    if (f.kind === FrameKind.Reply && f.items.length === 1) return f.items[0];
    if (f.kind === FrameKind.ReplyError && f.items.length === 1) throw new SwitchboardError('E_CLUSTER_REMOTE', `node ${node} failed the request: ${Buffer.from(f.items[0]).toString('utf8')}`);
    throw new SwitchboardError('E_CLUSTER_FRAME', `node ${node} answered with a frame of kind ${f.kind}`);
  }

  /**
   * Resolves once NATS has this node's subscriptions: one round trip to it,
   * also while what waited during an outage is still held (flush() waits
   * for that). E_CLUSTER_DISCONNECTED during an outage.
   */
  async subscriptionsConfirmed(): Promise<void> {
    this.open();
    if (!this.connected) throw disconnected();
    try {
      await this.nc.flush();
    } catch {
      throw disconnected();
    }
  }

  /** Resolves once NATS has everything published so far (E_CLUSTER_DISCONNECTED during an outage). */
  async flush(): Promise<void> {
    this.open();
    if (!this.outbox.flowing) throw disconnected();
    this.outbox.flush();
    try {
      await this.nc.flush();
    } catch {
      throw disconnected();
    }
  }

  /**
   * Says goodbye (the others see the node leave at once), sends what is
   * ready, and closes. Resolves with the number of items still held because
   * NATS was unreachable: they are not sent.
   */
  async close(): Promise<{ unsent: number }> {
    if (this.closed) return { unsent: 0 };
    clearInterval(this.heartbeatTimer);
    clearTimeout(this.holdTimer);
    let unsent = 0;
    // No beat after the goodbye (one answering a hello while the flush below
    // runs would bring this node back to the others until it timed out).
    this.joined = false;
    if (this.connected) {
      this.outbox.resume();
      this.send(this.subjects.members, encodeFrame(FrameKind.Bye, this.origin, NO_ITEMS));
      try {
        await this.nc.flush();
      } catch {
        // Lost NATS while closing: what was not flushed is counted below only if still held.
      }
    }
    this.closed = true;
    unsent = this.outbox.drop();
    for (const w of this.flowWaiters.splice(0)) w();
    this.membership.clear();
    await this.nc.close();
    return { unsent };
  }

  private open(): void {
    if (this.closed) throw closedError();
  }

  /** Calls the listeners; one that throws must not stop the bus's own handling of what happened. */
  private emit<E extends keyof BusEvents>(event: E, ...args: Parameters<BusEvents[E]>): void {
    for (const fn of this.listeners[event]) {
      try {
        (fn as (...a: Parameters<BusEvents[E]>) => void)(...args);
      } catch (e) {
        if (event === 'error') {
          queueMicrotask(() => {
            throw e;
          });
        } else {
          this.report(new SwitchboardError('E_INTERNAL', `a cluster bus ${event} listener threw: ${(e as Error).message}`));
        }
      }
    }
  }

  private report(err: SwitchboardError): void {
    this.emit('error', err);
  }

  private apply(changes: Change[]): void {
    for (const c of changes) {
      if (c.kind === 'up') this.emit('nodeUp', c.node);
      else this.emit('nodeDown', c.node, c.reason);
    }
  }

  /** Hands a frame to the nats client, which writes it after this microtask; false when it cannot. */
  private send(subject: string, data: Uint8Array): boolean {
    try {
      this.nc.publish(subject, data);
      return true;
    } catch (e) {
      if (!this.nc.isClosed()) this.report(new SwitchboardError('E_CLUSTER_SERVER', `NATS refused a publish on ${subject}: ${(e as Error).message}`));
      return false;
    }
  }

  private readonly sendReady = (subject: string, data: Uint8Array): boolean => this.send(subject, data);

  private beat(hello: boolean): void {
    if (!this.connected || this.closed || !this.joined) return;
    if (hello) this.lastHello = Date.now();
    this.send(this.subjects.members, encodeFrame(FrameKind.Beat, this.origin, [this.incarnation, hello ? HELLO : NOT_HELLO]));
  }

  /** A hello to `node` alone, on its own subject: it answers, and tells this node again what it tells new nodes (nodeRejoined). */
  private ask(node: string): void {
    if (!this.connected || this.closed || !this.joined) return;
    this.send(this.subjects.node(node), encodeFrame(FrameKind.Beat, this.origin, [this.incarnation, HELLO]));
  }

  private readonly tick = (): void => {
    const now = Date.now();
    // A tick this late means this node's loop was blocked: the beats that
    // came meanwhile are still unread, so silence proves nothing yet.
    const late = now - this.lastTick > 1.5 * this.heartbeat;
    this.lastTick = now;
    if (!this.connected) return;
    this.beat(false);
    if (!late) this.apply(this.membership.sweep(now));
    if (this.awaiting) {
      for (const n of this.awaiting) if (!this.membership.has(n)) this.awaiting.delete(n);
      if (this.awaiting.size === 0) this.resume();
    }
  };

  private async watchStatus(): Promise<void> {
    for await (const s of this.nc.status()) {
      if (this.closed) return;
      if (s.type === 'disconnect') this.lost(String(s.data));
      else if (s.type === 'reconnect') this.regained(String(s.data));
      else if (s.type === 'error') this.report(new SwitchboardError('E_CLUSTER_SERVER', `NATS reported: ${String(s.data)}`));
    }
  }

  private lost(server: string): void {
    this.connected = false;
    this.server = server;
    clearTimeout(this.holdTimer);
    this.awaiting = null;
    this.outbox.pause();
    this.emit('disconnected', server);
  }

  /**
   * Back on NATS. The nats client has subscribed again already (a client's
   * subscriptions reach the server before anything it publishes after), but
   * the other nodes may not be back yet, and NATS drops what is published
   * for a subject nobody listens to. So what waited is sent once every node
   * that was live has been heard again (its beat comes after its
   * subscriptions), or after nodeTimeout, when the silent ones are gone.
   */
  private regained(server: string): void {
    this.connected = true;
    this.server = server;
    // Another NATS server of the list may have another limit.
    this.outbox.setMaxPayload(this.nc.info?.max_payload ?? 1024 * 1024);
    this.membership.resumed(Date.now());
    this.awaiting = new Set(this.membership.live);
    this.beat(true);
    this.emit('connected', server);
    if (this.awaiting.size === 0) this.resume();
    else this.holdTimer = setTimeout(this.resume, this.nodeTimeout);
  }

  private readonly resume = (): void => {
    clearTimeout(this.holdTimer);
    this.awaiting = null;
    if (!this.connected || this.closed) return;
    this.outbox.resume();
    for (const w of this.flowWaiters.splice(0)) w();
  };

  private untilFlowing(timeout: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.flowWaiters = this.flowWaiters.filter((w) => w !== go);
        reject(disconnected());
      }, timeout);
      const go = (): void => {
        clearTimeout(timer);
        if (this.closed) reject(closedError());
        else resolve();
      };
      this.flowWaiters.push(go);
    });
  }

  /** Decodes one message for `handle`; what cannot be read is reported and dropped. */
  private received(err: NatsError | null, msg: Msg, handle: (f: Frame) => void): void {
    if (err) {
      this.report(new SwitchboardError('E_CLUSTER_SERVER', `NATS subscription error: ${err.message}`));
      return;
    }
    let f: Frame;
    try {
      f = decodeFrame(msg.data);
    } catch (e) {
      this.report(SwitchboardError.from(e));
      return;
    }
    handle(f);
  }

  private userFrame(user: string, f: Frame): void {
    if (f.kind !== FrameKind.User) return this.report(new SwitchboardError('E_CLUSTER_FRAME', `a frame of kind ${f.kind} from ${f.origin} on a user subject`));
    for (const item of f.items) {
      try {
        this.opts.onUser(user, item, f.origin);
      } catch (e) {
        this.report(new SwitchboardError('E_INTERNAL', `the user handler threw on an item from ${f.origin}: ${(e as Error).message}`));
      }
    }
  }

  private broadcastFrame(handlers: Set<(item: Uint8Array, from: string) => void>, f: Frame): void {
    if (f.kind !== FrameKind.Broadcast) return this.report(new SwitchboardError('E_CLUSTER_FRAME', `a frame of kind ${f.kind} from ${f.origin} on a broadcast subject`));
    for (const item of f.items) {
      for (const h of handlers) {
        try {
          h(item, f.origin);
        } catch (e) {
          this.report(new SwitchboardError('E_INTERNAL', `a broadcast handler threw on an item from ${f.origin}: ${(e as Error).message}`));
        }
      }
    }
  }

  private readonly memberFrame = (f: Frame): void => {
    if (f.kind === FrameKind.Bye) {
      this.apply(this.membership.left(f.origin));
      return;
    }
    if (f.kind !== FrameKind.Beat || f.items.length !== 2) return this.report(new SwitchboardError('E_CLUSTER_FRAME', `a frame of kind ${f.kind} from ${f.origin} on the members subject`));
    const incarnation = Buffer.from(f.items[0]).toString('hex');
    if (f.origin === this.node) {
      if (!this.impostors.has(incarnation)) {
        this.impostors.add(incarnation);
        this.report(new SwitchboardError('E_CLUSTER_DUPLICATE_NODE', `another node calls itself ${this.node}: every node needs its own name (the node setting)`));
      }
      return;
    }
    const now = Date.now();
    const changes = this.membership.heard(f.origin, incarnation, now);
    this.apply(changes);
    if (f.items[1][0] === 1) {
      this.beat(false);
      if (changes.length === 0) this.emit('nodeRejoined', f.origin);
    } else if (changes.length === 1 && now - this.lastHello > this.heartbeat) {
      // A node heard for the first time without its hello, and not as an
      // answer to this node's own: this node took it for gone (its beats
      // came late) and dropped what it had told this node (its users). It
      // never took this node for gone, so it would not tell it again
      // unasked (nodeRejoined there). A restart (another incarnation) asks
      // nothing: that node kept nothing of what it had told, and its first
      // beats went to a node that was away from NATS, whose own hello at
      // reconnecting asks the others.
      this.ask(f.origin);
    }
    if (this.awaiting?.delete(f.origin) && this.awaiting.size === 0) this.resume();
  };

  private requestFrame(f: Frame, msg: Msg): void {
    if (f.kind !== FrameKind.Request || f.items.length !== 1) return this.report(new SwitchboardError('E_CLUSTER_FRAME', `a frame of kind ${f.kind} from ${f.origin} on this node's request subject`));
    if (!msg.reply) return;
    const reply = msg.reply;
    const answer = (kind: FrameKind, bytes: Uint8Array): void => {
      if (!this.closed) this.send(reply, encodeFrame(kind, this.origin, [bytes]));
    };
    const handler = this.requestHandler;
    if (!handler) return answer(FrameKind.ReplyError, Buffer.from(`node ${this.node} answers no requests`));
    // The item is copied: an asynchronous handler may outlive the message.
    const item = new Uint8Array(f.items[0]);
    const failed = (e: unknown): void => answer(FrameKind.ReplyError, Buffer.from(e instanceof Error ? e.message : String(e)));
    try {
      const r = handler(item, f.origin);
      if (r instanceof Uint8Array) answer(FrameKind.Reply, r);
      else r.then((bytes) => answer(FrameKind.Reply, bytes), failed);
    } catch (e) {
      failed(e);
    }
  }
}

function closedError(): SwitchboardError {
  return new SwitchboardError('E_CLUSTER_CLOSED', 'the cluster bus is closed');
}

function disconnected(): SwitchboardError {
  return new SwitchboardError('E_CLUSTER_DISCONNECTED', 'NATS is unreachable: no request or flush goes out until the bus is connected again');
}
