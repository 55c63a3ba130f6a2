/**
 * The delivery engine (cpp/router.h, docs/delivery.md): who is online on
 * which connection, live copies, receipts, what waits for the commit, all
 * decided in the core on integer ids. This wrapper converts nothing per
 * message: after each call the batch is in typed arrays it reads in place.
 *
 *   const v = delivery.submit(userId, connId, frame, Date.now());   // core + engine, one call
 *   const status = delivery.status;
 *   for (let i = 0; i < delivery.writeCount; i++) sockets[delivery.writeConn(i)].send(delivery.writeBytes(i), delivery.writeBinary(i));
 *   for (let i = 0; i < delivery.opCount; i++) store room performs delivery.op(i)
 *   if (delivery.commit) the store room commits, then: delivery.committed(epoch) and write again
 *
 * Users and connections are integers: userAdd()/intern() give a user's id,
 * login() a connection's (the embedder keeps its sockets in an array by that
 * id). Everything a batch holds (writes, operations, their bytes) is valid
 * until the next call on this object.
 */
import type { Core } from './core';
import { SwitchboardError } from './errors';
import { native, type NativeDeliveryEngine } from './native';

const L = native.deliveryLayout;
const H = L.head;
const O = L.op;
const OP_FIELDS = L.opFields;
const WRITE_FIELDS = L.writeFields;

/** What a store operation asks of the store room. */
export const StoreOpKind = {
  /** Write the copy for `recipient` (store.enqueue). */
  Enqueue: L.opKinds.enqueue,
  /** `recipient` confirmed `sender`'s message `id`: delete its copy (store.ack(recipient, sender, id)); the store reports what it deleted (onCopyDeleted), for inboxRemoved(). */
  Ack: L.opKinds.ack,
  /**
   * The recipient has connections on other nodes: hand them the copy (the
   * cluster room publishes it; they call remoteMessage). `afterCommit`: it
   * was stored in this batch too, and goes out once that commit is done.
   */
  Forward: L.opKinds.forward,
  /** A status for `recipient` (the message's sender), who has connections on other nodes: they call remoteStatus. Not stored. */
  ForwardStatus: L.opKinds.forwardStatus,
} as const;

/**
 * What admit() (and submit() with admitted 0) says of a client frame: spent
 * as a message or as a status, or refused by a rate limit (cpp/admit.h).
 * Refusals are below every wire error.
 */
export const Admit = {
  Message: L.admit.message,
  Status: L.admit.status,
  /** A status over rate_limit, with no owed status left. */
  RefusedStatus: L.admit.refusedStatus,
  /** A message over the connection's rate_limit. */
  RefusedConnection: L.admit.refusedConnection,
  /** A message over user_rate_limit. */
  RefusedUser: L.admit.refusedUser,
} as const;

/** When the store room must commit: not at all, after this loop turn (setImmediate), or before answering. */
export const CommitDue = { None: 0, Soon: 1, Now: 2 } as const;

/** A write's bits (writeFlags): a binary frame, a message copy (not a status), not a frame but "close this connection". */
export const WRITE_BINARY = 1;
export const WRITE_DELIVERY = 2;
export const WRITE_CLOSE = 4;

export interface DeliverySettings {
  durable: boolean;
  /** durable_grace in ms (0: no live copies). */
  graceMs: number;
  /** Connections logged in at once; their ids are 0..maxConnections-1. */
  maxConnections: number;
  maxInboxMessages: number;
  maxInboxBytes: number;
  /** Receipt flags remembered for messages in flight (default 1,000,000). */
  maxTrackedReceipts?: number;
  /** Frames a second per connection and per user (rate_limit, user_rate_limit); defaults 100 and 300. */
  rateLimit?: number;
  userRateLimit?: number;
  /** The send or format middleware stage has handlers (setPerRecipient changes it). */
  perRecipientStages?: boolean;
  /** One node of a cluster: every stored copy is also forwarded after its commit (docs/cluster.md). */
  cluster?: boolean;
}

/** What the engine asks JavaScript for, off the plain path only. */
export interface DeliveryHost {
  /** The group's members from the store, or null when there is no such group. */
  loadGroup?(gid: number): string[] | null;
  /** [messages, bytes] waiting in the store for the user (commit pending writes first). */
  inboxCount?(user: number): [number, number];
}

export interface StoreOp {
  kind: number;
  recipient: number;
  /** The sender's user id; -1 for an Ack naming a user the engine never knew (its name is then `payload`). */
  sender: number;
  id: number;
  refid: number;
  gid: number;
  flags: number;
  type: number;
  expiry: number;
  /** ms since the epoch, 0 for none. */
  expiresAt: number;
  /** A view into the batch: copy it if the store keeps it past the next call. */
  payload: Buffer;
  /** Forward: the copy was stored in this batch; hand it over after that commit. */
  afterCommit: boolean;
  /** ForwardStatus: the status. */
  status: number;
  /** ForwardStatus: this node's flags asked for a receipt (its group in `gid`); the other node writes it too. */
  receipt: boolean;
  /** ForwardStatus: a device of the recipient here is reading its backlog; the other node stores the copy rather than settle it, and leaves the delete to this one. */
  keep: boolean;
}

export interface DeliveryCounters {
  delivered: number;
  copiesStored: number;
  receivedPass: number;
  receivedFailed: number;
  receivedConsumed: number;
  inboxFull: number;
  /** Statuses received, by code (index 0..255). */
  statuses: number[];
}

export class Delivery {
  private readonly h: NativeDeliveryEngine;
  private readonly core: Core | null;
  private head!: Float64Array;
  private writes!: Uint32Array;
  private ops!: Float64Array;
  private bytes!: Buffer;
  private recipientIds!: Uint32Array;
  /** Free statuses per connection id, shared with the engine: the intake room spends them here (rate limits). */
  owed!: Int32Array;
  /** The most `owed` holds for one connection, as the engine caps it (router_owe). */
  private owedCap: number;
  private readonly names: string[] = [];

  /** `core`: the core whose submits route() reads, and whose status hooks run for the status frames the engine encodes. */
  constructor(settings: DeliverySettings, host: DeliveryHost = {}, core: Core | null = null) {
    this.core = core;
    this.owedCap = Math.min(2 * settings.maxInboxMessages, 0x7fffffff);
    this.h = new native.Delivery({ ...settings }, { ...host }, core ? core.nativeHandle() : undefined);
    this.views();
  }

  private views(): void {
    const v = this.h.views();
    this.head = v.head;
    this.writes = v.writes;
    this.ops = v.ops;
    this.bytes = v.bytes;
    this.recipientIds = v.recipients;
    this.owed = v.owed;
  }

  /** After a call that filled the batch: a larger array may have replaced one. */
  private sync(): void {
    if (this.head[H.grown] === 1) this.views();
  }

  // --- sessions ---------------------------------------------------------

  /** A user of the store (listed at start, or created): 1:1 messages to it are routed. Returns its id. */
  userAdd(name: string): number {
    return this.h.userAdd(name);
  }

  /** Removed: 1:1 messages to it are INVALIDDEST. */
  userRemove(name: string): void {
    this.h.userRemove(name);
  }

  /**
   * The id of a name, added if new (without making it a user). Cached: a
   * name keeps its id for the engine's life, and the cluster room asks for
   * two per crossing message. The cache is dropped whole past a million
   * names (it refills from the engine).
   */
  intern(name: string): number {
    let u = this.ids.get(name);
    if (u === undefined) {
      u = this.h.intern(name);
      if (this.ids.size >= 1 << 20) this.ids.clear();
      this.ids.set(name, u);
    }
    return u;
  }

  private readonly ids = new Map<string, number>();

  /** The name interned as `user` (cached: an id never changes its name). */
  name(user: number): string {
    const cached = this.names[user];
    if (cached !== undefined) return cached;
    const n = this.h.name(user);
    if (n === undefined) throw new SwitchboardError('E_BAD_ARGUMENT', `no user has the engine id ${user}`);
    this.names[user] = n;
    return n;
  }

  /** How many other nodes of the cluster have connections of `user` (0: none). Copies for it are then also forwarded. */
  setRemote(user: number, nodes: number): void {
    this.h.setRemote(user, nodes);
  }

  /**
   * How many other nodes have a device of `user` reading its backlog: while
   * any does, a delivered from another device leaves the stored copy (its
   * delete waits), and the batch holds the deletes released when it is
   * back to 0.
   */
  setRemotePumping(user: number, nodes: number): void {
    this.h.setRemotePumping(user, nodes);
    this.sync();
  }

  /** A logged-in connection; -1 when maxConnections are open. Its backlog is being sent until backlogDone(). */
  login(user: number, binary: boolean): number {
    const id = this.h.login(user, binary);
    // The engine's table grew: the owed array moved.
    if (id >= this.owed.length) this.views();
    return id;
  }

  /** The connection closed; returns whether it was its user's last. The batch holds the live copies it stored. */
  logout(conn: number): boolean {
    const last = this.h.logout(conn);
    this.sync();
    return last;
  }

  /**
   * Where `user` is on other nodes changed (a node gained or lost it, a node
   * died, NATS was lost): its unconfirmed live copies may be lost on the
   * way, so they are stored now and handed out again after the commit;
   * later copies wait behind them. The batch holds what to perform.
   */
  storeLive(user: number): void {
    this.h.storeLive(user);
    this.sync();
  }

  /** With durability off, a backlog message sent to `conn`: its delivered deletes the stored copy. */
  backlogSent(conn: number, sender: number, id: number): void {
    this.h.backlogSent(conn, sender, id);
  }

  /** The backlog pump wrote a message to `conn`: two more free statuses, capped as the engine caps its own (no native call). */
  owe(conn: number): void {
    this.owed[conn] = Math.min(this.owed[conn] + 2, this.owedCap);
  }

  /** `conn`'s backlog has been sent: live copies go to it from now on. The batch writes what waited for it (statuses and transient copies, which no backlog carries) and may hold the deletes that waited for it (another device confirmed those copies meanwhile). */
  backlogDone(conn: number): void {
    this.h.backlogDone(conn);
    this.sync();
  }

  /** Whether the backlog pump of `conn` must read the store once more before backlogDone(): another node stored a copy for it meanwhile. */
  backlogRecheck(conn: number): boolean {
    return this.h.backlogRecheck(conn);
  }

  // --- from other nodes (the cluster room) ---------------------------------

  /**
   * A copy another node forwarded for `recipient`: written to its
   * connections here; `stored` says the other node stored it (afterCommit),
   * otherwise it is stored here when no device here can take it now.
   * Returns whether any connection got it.
   */
  remoteMessage(recipient: number, from: number, m: { id: number; refid: number; groupid: number; flags: number; type: number; expiry: number }, payload: Uint8Array, stored: boolean, now: number): boolean {
    const written = this.h.remoteMessage(recipient, from, m.id, m.refid, m.groupid, m.flags, m.type, m.expiry, payload, stored, now);
    this.sync();
    return written;
  }

  /**
   * A status another node forwarded: `from` sent `status` for `to`'s
   * message `id` (now: ms). `receiptGid` >= 0: that node's flags asked for
   * a receipt (in that group, 0 for 1:1), written here even without flags.
   * `keep`: a device of `from` on that node is reading its backlog (the
   * op's keep): `from`'s live copies are stored, and nothing is deleted.
   */
  remoteStatus(from: number, to: number, id: number, status: number, now: number, receiptGid = -1, keep = false): void {
    this.h.remoteStatus(from, to, id, status, now, receiptGid, keep);
    this.sync();
  }

  /** A group's members, as the store has them (the API changed them, or loaded them first). */
  groupSet(gid: number, members: string[]): void {
    this.h.groupSet(gid, members);
  }

  /** Forgets a group's members (or all, without gid): loaded again on next use. */
  groupForget(gid = 0): void {
    this.h.groupForget(gid);
  }

  /** The outFormat to pass core.submitRaw: only the forms some device reads. */
  outFormat(): number {
    return this.h.outFormat();
  }

  // --- messages ---------------------------------------------------------

  /**
   * Routes what the core's last submit (or a 'complete' event) left in its
   * info slots and out buffer: `from` sent it on `conn` (-1: the backend
   * API, or a connection that closed). Returns the sender's status.
   */
  route(from: number, conn: number, now: number, outFormat: number): number {
    if (!this.core) throw new SwitchboardError('E_BAD_ARGUMENT', 'route() reads the core\'s last submit: construct the Delivery with it, new Delivery(settings, host, core)');
    const status = this.h.route(from, conn, now, this.core.outBuffer(), outFormat);
    this.sync();
    return status;
  }

  /**
   * One frame from `from` on `conn` (-1: the backend API) through the rate
   * limits (unless `admitted` is what admit() said of it earlier), the core
   * and, when the chain decided (verdict 0 pass or 1 consumed), routed: one
   * N-API call. Returns the core's verdict (2: deferred; route the
   * 'complete' event with route()), a negative wire error (the core's
   * infoArray()/lastErrorDetail() say more, as after submitRaw) or an Admit
   * refusal. The sender's status is `status`; `submittedFormat` is what the
   * core encoded. Without `now` (ms) the engine reads the clock itself, so
   * the per-frame call passes no number JavaScript must box.
   */
  submit(from: number, conn: number, frame: Uint8Array | ArrayBuffer, now?: number, admitted = 0): number {
    const v = now === undefined ? this.h.submit(from, conn, frame, admitted) : this.h.submit(from, conn, frame, admitted, now);
    if (v === 0 || v === 1) this.sync();
    return v;
  }

  /** The rate limits alone (Admit), for a frame that meets middleware before it is submitted. */
  admit(conn: number, frame: Uint8Array | ArrayBuffer, now: number): number {
    return this.h.admit(conn, frame, now);
  }

  /** The forms the last submit() encoded deliveries in (for a deferred message's route()). */
  get submittedFormat(): number {
    return this.head[H.outFormat];
  }

  /** A module's message after the chain. Returns -1 for an unknown destination. */
  moduleMessage(from: string, m: { to: string; id: number; refid: number; groupid: number; flags: number; type: number; expiry: number }, payload: Uint8Array, now: number): number {
    const rc = this.h.moduleMessage(from, m, payload, now);
    this.sync();
    return rc;
  }

  /** One recipient's copy, after the send middleware stage. Returns whether it was stored ("sent" then waits: queueAck). */
  deliverCopy(recipient: number, from: number, m: { id: number; refid: number; groupid: number; flags: number; type: number; expiry: number }, payload: Uint8Array, now: number): boolean {
    const stored = this.h.deliverCopy(recipient, from, m, payload, now);
    this.sync();
    return stored;
  }

  /** A "sent" for `conn` that goes out after the next commit. */
  queueAck(conn: number, frame: Uint8Array, binary: boolean): void {
    this.h.queueAck(conn, frame, binary);
    this.sync();
  }

  /** Receipt flags read back from the store at start-up. */
  trackReceipt(sender: number, recipient: number, id: number, flags: number, gid: number): void {
    this.h.trackReceipt(sender, recipient, id, flags, gid);
  }

  /** Forgets a user's inbox count (or all, with -1): read again when next needed. */
  inboxForget(user = -1): void {
    this.h.inboxForget(user);
  }

  /** The store deleted a copy for `user` (Store.onCopyDeleted): one fewer in its inbox count. */
  inboxRemoved(user: number): void {
    this.h.inboxRemoved(user);
  }

  /** Whether the send or format middleware stage has handlers (then route() lists recipients instead of delivering). */
  setPerRecipient(on: boolean): void {
    this.h.setPerRecipient(on);
  }

  /** The settings a config reload changes while running (durable_grace, the inbox limits, the rate limits). */
  configure(settings: { graceMs?: number; maxInboxMessages?: number; maxInboxBytes?: number; rateLimit?: number; userRateLimit?: number }): void {
    this.h.configure(settings);
    if (settings.maxInboxMessages !== undefined) this.owedCap = Math.min(2 * settings.maxInboxMessages, 0x7fffffff);
  }

  // --- the commit handshake ---------------------------------------------

  /** Closes the open epoch; begin the store's commit after this, and pass the epoch to committed() when it completes. */
  commitBegin(): number {
    return this.h.commitBegin();
  }

  /** The commit of `epoch` completed: the batch holds the held deliveries, then the "sent"s, then the receipts behind them. */
  committed(epoch: number): void {
    this.h.committed(epoch);
    this.sync();
  }

  /**
   * The store's commit failed: nothing waiting is released; the batch
   * closes (writeClose) the connections whose "sent" was dropped and writes
   * the receipts, which do not depend on the store.
   */
  commitFailed(): void {
    this.h.commitFailed();
    this.sync();
  }

  /** The live timer fired (liveWait): copies past the grace are stored. */
  expire(now: number): void {
    this.h.expire(now);
    this.sync();
  }

  /** Server stop: every unconfirmed live copy is stored (the batch), no more timers. */
  stop(): void {
    this.h.stop();
    this.sync();
  }

  liveCount(): number {
    return this.h.liveCount();
  }

  counters(): DeliveryCounters {
    const c = this.h.counters();
    return {
      delivered: c[0], copiesStored: c[1], receivedPass: c[2], receivedFailed: c[3], receivedConsumed: c[4], inboxFull: c[5],
      statuses: Array.from(c.subarray(6)),
    };
  }

  // --- the batch of the last call -----------------------------------------

  /** The status route() returned. */
  get status(): number {
    return this.head[H.status];
  }

  get writeCount(): number {
    return this.head[H.writes];
  }

  writeConn(i: number): number {
    return this.writes[i * WRITE_FIELDS];
  }

  /**
   * A view of the write's frame, valid until the next call: what ws.send()
   * takes. A plain Uint8Array, which costs a fifth of a Buffer.subarray().
   */
  writeBytes(i: number): Uint8Array {
    const b = this.bytes;
    return new Uint8Array(b.buffer, b.byteOffset + this.writes[i * WRITE_FIELDS + 1], this.writes[i * WRITE_FIELDS + 2]);
  }

  writeBinary(i: number): boolean {
    return (this.writes[i * WRITE_FIELDS + 3] & WRITE_BINARY) !== 0;
  }

  /** Not a write: close this connection, its "sent" was dropped by a failed commit (commitFailed). */
  writeClose(i: number): boolean {
    return (this.writes[i * WRITE_FIELDS + 3] & WRITE_CLOSE) !== 0;
  }

  /** A message copy (the format middleware stage applies), not a status. */
  writeDelivery(i: number): boolean {
    return (this.writes[i * WRITE_FIELDS + 3] & WRITE_DELIVERY) !== 0;
  }

  /** The write's bits as one number (WRITE_BINARY, WRITE_DELIVERY, WRITE_CLOSE). */
  writeFlags(i: number): number {
    return this.writes[i * WRITE_FIELDS + 3];
  }

  get opCount(): number {
    return this.head[H.ops];
  }

  /** One store operation as an object (the store path allocates anyway). */
  op(i: number): StoreOp {
    const o = this.ops;
    const b = i * OP_FIELDS;
    const off = o[b + O.payloadOff];
    return {
      kind: o[b + O.kind],
      recipient: o[b + O.recipient],
      sender: o[b + O.sender],
      id: o[b + O.id],
      refid: o[b + O.refid],
      gid: o[b + O.gid],
      flags: o[b + O.flags],
      type: o[b + O.type],
      expiry: o[b + O.expiry],
      expiresAt: o[b + O.expiresAt],
      payload: this.bytes.subarray(off, off + o[b + O.payloadLen]),
      afterCommit: o[b + O.afterCommit] === 1,
      status: o[b + O.status],
      receipt: o[b + O.receipt] === 1,
      keep: o[b + O.keep] === 1,
    };
  }

  /** CommitDue: whether the store room must commit. */
  get commit(): number {
    return this.head[H.commit];
  }

  /** >= 0: arm the live timer to call expire() in this many ms. */
  get liveWait(): number {
    return this.head[H.liveWait];
  }

  /** route()/moduleMessage(): deliver per recipient (middleware) to recipients(). */
  get perRecipient(): boolean {
    return this.head[H.perRecipient] === 1;
  }

  recipients(): number[] {
    return Array.from(this.recipientIds.subarray(0, this.head[H.recipients]));
  }

  /** A 1:1 message went the plain path: presence (contacts) records the pair. */
  get talked(): boolean {
    return this.head[H.talked] === 1;
  }
}
