/**
 * Delivery: what the delivery engine (lib/delivery.ts) decided for one
 * call, performed. Its writes go to this node's connections, through the
 * format stage when it has middleware; its store operations go to the
 * store; the live-copy timer is armed; the group commit is asked for. A
 * device that stops reading is closed before uWebSockets.js would skip it
 * silently.
 *
 * The engine's writes of a loop turn are copied into one buffer and sent
 * after the turn's callbacks (a setImmediate), one cork per connection:
 * one system call per connection and turn, as uWebSockets.js's publish
 * would make, without publish's per-frame topic lookup and heap copy
 * (which were 4-5 % of the server's CPU at 1,000 connections). All writes
 * of the engine take this one path, so they reach each connection in the
 * order the engine made them.
 *
 * The connections of a turn that writes to many (RANDOM_ORDER_FROM) are
 * written in a random order, drawn anew each turn; each connection's own
 * frames keep theirs. In a fixed order (that of the turn's first writes,
 * which follows the order the kernel reported the sockets readable, turn
 * after turn) clients that answer at once lock into step with the server's
 * turns. With durable on, a pair's two directions
 * then arrive in turns of their own: a read of only messages and one of
 * only statuses per connection, twice the reads and writes per message
 * (1,000 connections in the bench's closed loop: 90 % of reads carried one
 * kind; with the random order none). Measured in paired runs of the
 * random order in every turn: durable on +20-23 % at 1,000 connections,
 * +3.6 % at 128, -0.5 % at 32; durable off -5-8 % at each, whose pairs had
 * locked into the step that suits it (both ends read every turn). A turn
 * of hundreds of connections is also where the order decides who waits
 * (their sends take milliseconds): a random order spreads that over all
 * of them instead of leaving it to the same ones. A turn of fewer keeps
 * the first-write order (docs/performance.md, "Write order").
 */
import type { Delivery as Engine } from '../delivery';
import { CommitDue, StoreOpKind, WRITE_BINARY, WRITE_CLOSE, WRITE_DELIVERY } from '../delivery';
import { errorText, type Logger } from '../log';
import type { AsyncStore } from '../store/types';
import type { Cluster } from './cluster';
import type { Conn, Connections, WS } from './connections';
import type { MetricCounts } from './metrics';
import { Format, type Middlewares } from './pipeline';
import { CLOSE_STORE_FAILED } from './protocol';
import type { ServerSettings } from './settings';
import { native } from '../native';
import type { NewMessage } from '../store/types';

/** A client that does not read is cut off at this much buffered (uWebSockets.js maxBackpressure). */
export const MAX_BACKPRESSURE = 4 * 1024 * 1024;

/** A stored copy as the frame its recipient reads. */
export function encodeStored(m: NewMessage, binary: boolean): Buffer {
  return native.encodeFrame('msg', { id: m.id, from: m.sender, to: m.groupid ? '' : m.recipient, groupid: m.groupid, refid: m.refid, flags: m.flags, type: m.type, expiry: m.expiry, payload: m.payload }, binary ? 1 : 0);
}

/** The group commit, as the delivery room asks for it when a batch says so (commit.ts). */
export interface CommitRequests {
  schedule(): void;
}

/** Writes held until NATS confirms what was published before them (Delivery.held). */
interface HeldSegment {
  ws: WS[];
  conns: number[];
  frames: Uint8Array[];
  flags: number[];
  done: boolean;
  timer: NodeJS.Timeout | null;
}

/** Ints per write in Delivery.meta. */
const META = 4;

/** `a` in a new array of at least `n` (twice its size, or n), the rest filled with `fill`. */
function grow(a: Int32Array, n: number, fill: number): Int32Array<ArrayBuffer> {
  const b = new Int32Array(Math.max(n, a.length * 2));
  b.set(a);
  if (fill !== 0) b.fill(fill, a.length);
  return b;
}

/** The write buffer's size at start, and the most it keeps after a turn of large writes. */
const OUT_START = 1 << 16;
const OUT_KEEP = 1 << 22;

/**
 * A turn that writes to at least this many connections writes them in a
 * random order; a smaller one in the order of their first writes (see the
 * header comment: paired runs gained nothing from the random order at 32
 * and 128 connections with durable on, and lost 7 % with durable off).
 */
export const RANDOM_ORDER_FROM = 256;

/** How long writes wait for NATS's answer at most (Delivery.held). */
const HOLD_LIMIT = 2000;

export class Delivery {
  private warnedAsyncFormat = false;
  /**
   * This turn's writes: their bytes in `out`, their sockets in `outWs`,
   * and per write in `meta` (META ints each) its offset, length, binary
   * flag and the next write to the same connection (-1). `first`/`last` per
   * connection id chain them (last -1: none this turn); `touched` lists the
   * connections written to (shuffled when they are sent). Typed arrays, reused
   * from turn to turn.
   */
  private out = new Uint8Array(OUT_START);
  private outUsed = 0;
  private outCount = 0;
  private readonly outWs: WS[] = [];
  private meta = new Int32Array(META * 1024);
  private first = new Int32Array(1024);
  private last = new Int32Array(1024).fill(-1);
  private touched = new Int32Array(1024);
  private touchedCount = 0;
  /** xorshift32 state for the turn's write order (flushWrites); any non-zero start. */
  private rand = 0x9e3779b9;
  private flushDue = false;
  /** flushWrites is sending; writes made meanwhile wait in `late` for the next turn. */
  private flushing = false;
  private readonly late: { ws: WS; conn: number; frame: Uint8Array; binary: boolean }[] = [];
  /** The connection flushWrites is sending to (read by corked). */
  private corkConn = 0;
  private corkWs: WS | null = null;
  private liveTimer: NodeJS.Timeout | null = null;
  private stopped = false;
  /**
   * Connections to close once the batch has been read (a close runs the
   * close handler, which calls the engine): slow readers, and senders whose
   * "sent" a failed commit dropped.
   */
  private readonly slowReaders: WS[] = [];
  private readonly failedSenders: WS[] = [];
  private readonly expireNow = (): void => {
    if (this.stopped) return;
    this.engine.expire(Date.now());
    this.perform();
  };
  private readonly liveFired = (): void => {
    this.liveTimer = null;
    setImmediate(this.expireNow);
  };
  /** Set by the server once the commit room exists (it performs batches too). */
  commit!: CommitRequests;
  /** Set by the server when it is a node of a cluster: Forward operations go there. */
  cluster: Cluster | null = null;
  /** Message copies written to each connection since its buffer was last looked at. */
  private readonly sinceCheck: number[] = [];
  /**
   * Copies written between two looks at a connection's buffer: as many as
   * fit in a quarter of the backpressure limit at the largest frame, so a
   * reader that stopped is still closed before uWebSockets.js would skip it.
   */
  private readonly checkEvery: number;

  constructor(
    private readonly engine: Engine,
    private readonly store: AsyncStore,
    settings: Pick<ServerSettings, 'maxMessageSize'>,
    private readonly connections: Connections,
    private readonly middleware: Middlewares,
    private readonly metrics: MetricCounts,
    private readonly logger: Logger,
  ) {
    // A copy is at most two frames of the largest message (max_message_size is fixed until a restart).
    this.checkEvery = Math.max(1, Math.floor(MAX_BACKPRESSURE / 4 / (2 * settings.maxMessageSize + 4096)));
  }

  /**
   * Users whose backlog a connection is reading (Sessions.pump): readers,
   * and copies enqueued for the user since. A read that finds the backlog
   * empty is the last only if nothing was stored for the user meanwhile: a
   * networked store answers later, and such a copy may not have been
   * committed when the read ran.
   */
  private readonly backlogReads = new Map<number, { readers: number; stored: number }>();

  /**
   * A connection of user `uid` starts reading its backlog; stopBacklogRead
   * undoes it. In a cluster, the other nodes hear when the user's first
   * reader here starts and its last one stops (Cluster.reading).
   */
  startBacklogRead(uid: number): void {
    const r = this.backlogReads.get(uid);
    if (r) r.readers++;
    else {
      this.backlogReads.set(uid, { readers: 1, stored: 0 });
      this.cluster?.reading(this.engine.name(uid), true);
    }
  }

  stopBacklogRead(uid: number): void {
    const r = this.backlogReads.get(uid);
    if (r && --r.readers === 0) {
      this.backlogReads.delete(uid);
      this.cluster?.reading(this.engine.name(uid), false);
    }
  }

  /** Copies enqueued for `uid` while one of its connections reads its backlog: compare before and after a read. */
  storedDuringBacklog(uid: number): number {
    return this.backlogReads.get(uid)?.stored ?? 0;
  }

  /** A connection logged in as `id`. */
  opened(id: number): void {
    this.sinceCheck[id] = 0;
  }

  /** Queues a frame for `ws` (connection `conn`) for the end of this turn (flushWrites). */
  private queue(ws: WS, conn: number, frame: Uint8Array, binary: boolean): void {
    if (this.flushing) {
      // A close during the flush (uWebSockets.js closes a socket past
      // maxBackpressure inside send) ran the engine, which wrote: after it.
      this.late.push({ ws, conn, frame: frame.slice(), binary });
      return;
    }
    const n = frame.length;
    if (this.outUsed + n > this.out.length) {
      const grown = new Uint8Array(Math.max(this.out.length * 2, this.outUsed + n));
      grown.set(this.out.subarray(0, this.outUsed));
      this.out = grown;
    }
    this.out.set(frame, this.outUsed);
    const i = this.outCount++;
    if ((i + 1) * META > this.meta.length) this.meta = grow(this.meta, (i + 1) * META, 0);
    if (conn >= this.last.length) {
      this.first = grow(this.first, conn + 1, 0);
      this.last = grow(this.last, conn + 1, -1);
    }
    const meta = this.meta;
    const m = i * META;
    this.outWs[i] = ws;
    meta[m] = this.outUsed;
    meta[m + 1] = n;
    meta[m + 2] = binary ? 1 : 0;
    meta[m + 3] = -1;
    this.outUsed += n;
    const tail = this.last[conn];
    if (tail < 0) {
      this.first[conn] = i;
      if (this.touchedCount === this.touched.length) this.touched = grow(this.touched, this.touchedCount + 1, 0);
      this.touched[this.touchedCount++] = conn;
    } else {
      meta[tail * META + 3] = i;
    }
    this.last[conn] = i;
    if (!this.flushDue) {
      this.flushDue = true;
      setImmediate(this.flushWrites);
    }
  }

  /** Sends this turn's writes: per connection, its frames in one cork (one system call). */
  private readonly flushWrites = (): void => {
    this.flushDue = false;
    this.metrics.writeTurns++;
    this.metrics.framesWritten += this.outCount;
    const sockets = this.connections.sockets;
    const touched = this.touched;
    const n = this.touchedCount;
    this.flushing = true;
    if (n >= RANDOM_ORDER_FROM) this.shuffleTouched(n);
    for (let t = 0; t < n; t++) {
      const conn = touched[t];
      // The connection that has this id now: writes made for an earlier
      // one with the same id this turn (engine ids are reused) are skipped
      // in corked(), the new one's are sent.
      const ws = sockets[conn];
      if (ws) {
        this.corkConn = conn;
        this.corkWs = ws;
        try {
          ws.cork(this.corked);
        } catch (err) {
          this.logger.event('transport.error', { error: `writing to a connection: ${errorText(err)}` });
        }
      }
      this.last[conn] = -1;
    }
    this.flushing = false;
    this.touchedCount = 0;
    this.corkWs = null;
    // outWs keeps its entries until they are overwritten (truncating it would give its storage back, to grow again next turn).
    this.outCount = 0;
    this.outUsed = 0;
    // A turn of large messages leaves no large buffer behind.
    if (this.out.length > OUT_KEEP) this.out = new Uint8Array(OUT_START);
    if (this.late.length) for (const w of this.late.splice(0)) this.queue(w.ws, w.conn, w.frame, w.binary);
    if (this.slowReaders.length || this.failedSenders.length) this.closeNow();
  };

  /** The turn's first n connections in a random order (Fisher-Yates on xorshift32): see the header comment. */
  private shuffleTouched(n: number): void {
    this.metrics.randomOrderTurns++;
    const touched = this.touched;
    let x = this.rand;
    for (let t = n - 1; t > 0; t--) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      const j = (x >>> 0) % (t + 1);
      const c = touched[t];
      touched[t] = touched[j];
      touched[j] = c;
    }
    this.rand = x;
  }

  private readonly corked = (): void => {
    const ws = this.corkWs!;
    const out = this.out;
    const meta = this.meta;
    for (let i = this.first[this.corkConn]; i >= 0; i = meta[i * META + 3]) {
      // A write made for an earlier connection with the same id is skipped.
      if (this.outWs[i] !== ws) continue;
      const off = meta[i * META];
      // 2: dropped, past maxBackpressure (writeOne closes a reader well before).
      if (ws.send(out.subarray(off, off + meta[i * META + 1]), meta[i * META + 2] === 1) === 2) this.slow(ws);
    }
  };

  /**
   * Performs the batch the engine's last call left: store operations, then
   * writes, then closes, the live timer and the commit. Returns the batch's
   * CommitDue (the backend API answers after a Now commit). Reads the whole
   * batch before it calls anything that may call the engine.
   */
  perform(): number {
    const e = this.engine;
    const n = e.writeCount;
    const ops = e.opCount;
    // Store operations first: whether the batch hands stored copies to
    // other nodes decides where its writes go (confirm()).
    const forwarded = ops ? this.storeOps(e, ops) : false;
    if (forwarded || this.held.length) this.hold(e, n, forwarded);
    else if (n) this.write(e, n);
    const due = e.commit;
    const wait = e.liveWait;
    if (this.slowReaders.length || this.failedSenders.length) this.closeNow();
    if (wait >= 0 && !this.stopped) this.arm(wait);
    if (due !== CommitDue.None) this.commit.schedule();
    return due;
  }

  /** A frame to connection `conn` in the engine writes' order. */
  send(conn: number, frame: Uint8Array, binary: boolean): void {
    const ws = this.connections.sockets[conn];
    if (ws) this.queue(ws, conn, frame, binary);
  }

  private write(e: Engine, n: number): void {
    const sockets = this.connections.sockets;
    for (let i = 0; i < n; i++) {
      const conn = e.writeConn(i);
      const ws = sockets[conn];
      if (ws) this.writeOne(ws, conn, e.writeBytes(i), e.writeFlags(i));
    }
  }

  private writeOne(ws: WS, conn: number, frame: Uint8Array, flags: number): void {
    if (flags & WRITE_CLOSE) {
      // Its "sent" was dropped by a failed commit: the client resends.
      if (!this.failedSenders.includes(ws)) this.failedSenders.push(ws);
      return;
    }
    const binary = (flags & WRITE_BINARY) !== 0;
    if (!(flags & WRITE_DELIVERY)) {
      this.queue(ws, conn, frame, binary);
      return;
    }
    if (!this.middleware.format.empty) {
      const c = ws.getUserData();
      const f = this.formatFrame(c, c.address, Buffer.from(frame));
      if (f) this.queue(ws, conn, f, binary);
    } else {
      this.queue(ws, conn, frame, binary);
    }
    // uWebSockets.js skips a subscriber whose backpressure would pass the
    // limit; such a device would silently miss messages. Close it once it
    // is half way there instead: what it missed waits in the store and
    // comes on its next connection. Looked at after every checkEvery-th
    // message copy (a native call each time): a status missed is sent
    // again by its sender (its message resent, the duplicate dropped), and
    // a reader that stops is caught within a quarter of the limit.
    if (++this.sinceCheck[conn] >= this.checkEvery) {
      this.sinceCheck[conn] = 0;
      if (ws.getBufferedAmount() >= MAX_BACKPRESSURE / 2) this.slow(ws);
    }
  }

  /**
   * Statuses that wait for NATS, in order: a batch that handed stored
   * copies to the bus starts a segment, whose statuses (the copies' "sent"
   * among them) go once NATS has confirmed everything published before
   * (bus.flush: a PING answered). Until then later batches' statuses join
   * the last segment, so that none overtakes them on a connection (sent,
   * then delivered, then read). Message copies are not held: they do not
   * depend on what this node hands to NATS, and only a "sent" must not
   * come before NATS has the copy.
   *
   * Why: a stored copy goes to the recipient's node only through NATS. If
   * its "sent" went first and this node died before NATS had the copy, the
   * sender would move to another node, whose newer copies would reach the
   * recipient live while this one waited in its backlog: per-sender order
   * broken (the kill test's rare failure, docs/cluster.md). During a NATS
   * outage the flush fails at once and the statuses go (the copy is in
   * PostgreSQL; order across a node killed during a NATS outage is not
   * promised); a PING unanswered for HOLD_LIMIT ms lets them go too.
   */
  private readonly held: HeldSegment[] = [];

  private hold(e: Engine, n: number, forwarded: boolean): void {
    let seg = this.held[this.held.length - 1];
    if (forwarded || !seg) {
      const fresh: HeldSegment = { ws: [], conns: [], frames: [], flags: [], done: false, timer: null };
      this.held.push((seg = fresh));
      const done = (): void => this.segmentDone(fresh);
      fresh.timer = setTimeout(() => {
        this.logger.event('cluster.error', { node: this.cluster?.node, error: `NATS did not confirm copies handed to it within ${HOLD_LIMIT} ms; their senders get "sent" now (the copies are stored)` });
        done();
      }, HOLD_LIMIT);
      if (this.cluster) this.cluster.bus.flush().then(done, done);
      else done();
    }
    const sockets = this.connections.sockets;
    for (let i = 0; i < n; i++) {
      const conn = e.writeConn(i);
      const ws = sockets[conn];
      if (!ws) continue;
      const flags = e.writeFlags(i);
      // Message copies go now: only statuses wait (a sender's "sent" among
      // them), in their order.
      if ((flags & (WRITE_DELIVERY | WRITE_CLOSE)) === WRITE_DELIVERY) {
        this.writeOne(ws, conn, e.writeBytes(i), flags);
        continue;
      }
      seg.ws.push(ws);
      seg.conns.push(conn);
      seg.frames.push(e.writeBytes(i).slice());
      seg.flags.push(e.writeFlags(i));
    }
  }

  private segmentDone(seg: HeldSegment): void {
    if (seg.done) return;
    seg.done = true;
    if (seg.timer) clearTimeout(seg.timer);
    seg.timer = null;
    const sockets = this.connections.sockets;
    while (this.held.length && this.held[0].done) {
      const s = this.held.shift()!;
      for (let i = 0; i < s.ws.length; i++) {
        const ws = s.ws[i];
        // Still the connection it was written for (engine ids are reused).
        if (sockets[s.conns[i]] === ws) this.writeOne(ws, s.conns[i], s.frames[i], s.flags[i]);
      }
    }
    if (this.slowReaders.length || this.failedSenders.length) this.closeNow();
  }

  private slow(ws: WS): void {
    const c = ws.getUserData();
    if (!c.open || this.slowReaders.includes(ws)) return;
    this.metrics.slowClosed++;
    this.logger.event('conn.slow_closed', { address: c.address, peer: c.ip, buffered: ws.getBufferedAmount() });
    this.slowReaders.push(ws);
  }

  private closeNow(): void {
    // Not end() for a slow reader: a close frame would queue behind what it does not read.
    for (const ws of this.slowReaders.splice(0)) if (ws.getUserData().open) ws.close();
    for (const ws of this.failedSenders.splice(0)) if (ws.getUserData().open) ws.end(CLOSE_STORE_FAILED, 'E_STORE_WRITE');
  }

  /** Returns whether a stored copy went to the cluster room (afterCommit: hold the writes). */
  private storeOps(e: Engine, n: number): boolean {
    let forwarded = false;
    for (let i = 0; i < n; i++) {
      const op = e.op(i);
      try {
        if (op.kind === StoreOpKind.Enqueue) {
          if (this.backlogReads.size) {
            const r = this.backlogReads.get(op.recipient);
            if (r) r.stored++;
          }
          this.store.enqueue({
            recipient: e.name(op.recipient), sender: e.name(op.sender), id: op.id, refid: op.refid, groupid: op.gid, flags: op.flags, type: op.type,
            expiry: op.expiry, expiresAt: op.expiresAt, payload: Buffer.from(op.payload),
          });
        } else if (op.kind === StoreOpKind.Ack) {
          this.store.ack(e.name(op.recipient), op.sender < 0 ? op.payload.toString('utf8') : e.name(op.sender), op.id);
        } else if (this.cluster) {
          // A user with connections on other nodes (or, once committed, any
          // stored copy): the cluster room hands it over.
          this.cluster.forward(e, op);
          if (op.afterCommit) forwarded = true;
        } else {
          // A single node never marks a user remote.
          this.logger.event('store.error', { op: 'forward', error: `no cluster to hand a ${op.kind === StoreOpKind.Forward ? 'copy' : 'status'} for ${e.name(op.recipient)} to` });
        }
      } catch (err) {
        // enqueue refuses a malformed copy at once (E_STORE_ARGUMENT); the
        // rest of the batch goes on.
        this.logger.event('store.error', { op: op.kind === StoreOpKind.Ack ? 'ack' : 'enqueue', error: errorText(err) });
      }
    }
    return forwarded;
  }

  /**
   * The one live-copy timer: `wait` ms, then the expiry pass in a
   * setImmediate, after the loop's poll phase has read the confirmations
   * that already arrived.
   */
  private arm(wait: number): void {
    if (this.liveTimer) clearTimeout(this.liveTimer);
    this.liveTimer = setTimeout(this.liveFired, wait);
  }

  /** Server stop: no more timers (the engine stores the live copies: Engine.stop); held writes go now. */
  stop(): void {
    this.stopped = true;
    for (const seg of [...this.held]) this.segmentDone(seg);
    if (this.liveTimer) clearTimeout(this.liveTimer);
    this.liveTimer = null;
  }

  /** Whether frames go through the format stage (then each connection gets its own). */
  get formats(): boolean {
    return !this.middleware.format.empty;
  }

  /** Runs the format stage on one frame for one connection; null when dropped. */
  formatFrame(c: Conn, to: string, frame: Buffer): Buffer | null {
    const m = new Format(to, c.device, c.binary, frame);
    const r = this.middleware.format.run(m);
    if (r instanceof Promise) {
      if (!this.warnedAsyncFormat) {
        this.warnedAsyncFormat = true;
        this.logger.event('middleware.error', { stage: 'format', error: 'a format middleware returned a Promise or did not call next at once; format runs per connection and must be synchronous, so the frame was sent as it stood (logged once)' }, 'warn');
      }
      r.catch(() => undefined);
      return m.dropped ? null : m.frame;
    }
    return r ? m.frame : null;
  }
}
