/**
 * The cluster room: this node's part of a cluster of nodes that share one
 * PostgreSQL store and talk through NATS (docs/cluster.md). What crosses
 * nodes is decided per message by the delivery engine (docs/delivery.md,
 * "The boundary for more than one node"); this room carries it:
 *
 * - Where users are. The first connection of a user here subscribes this
 *   node to the user's subject and tells the other nodes (broadcast `loc`);
 *   the last one gone unsubscribes and tells them. Each node counts, per
 *   user, the other nodes that have it and gives the engine that count
 *   (setRemote). A node that goes down (the bus's membership) takes its
 *   users with it; a node that comes up, or this node back on NATS after an
 *   outage, hears this node's users again.
 * - Copies and statuses. The engine's Forward operations are published to
 *   the recipient's subject as they come: a copy stored first comes out of
 *   the engine only once its commit is done (not at all if it failed: the
 *   copy was not kept and its sender resends). ForwardStatus operations go
 *   to the subject of the message's sender. What arrives for a user here goes to the engine
 *   (remoteMessage, remoteStatus) and the delivery room performs it.
 * - Presence. A user is online while any node has a connection of it; this
 *   room tells the server when that changes because of another node.
 * - Directory changes made through this node's API reach the other nodes
 *   (broadcast `dir`), which apply them to their caches and sessions.
 *
 * A node never receives its own publications (the bus's noEcho): the
 * engine has already done locally what a message needed here.
 */
import type { ClusterBus } from '../cluster/bus';
import { StoreOpKind, type Delivery as Engine, type StoreOp } from '../delivery';
import { errorText, type Logger } from '../log';

/** Broadcast channels. */
const LOC = 'loc';
const DIR = 'dir';

/** Items on a user's subject. */
const ITEM_COPY = 1;
const ITEM_STATUS = 2;
const COPY_HEAD = 2 + 6 * 4 + 2;
const STATUS_HEAD = 1 + 2 * 4 + 2;

/** A change of the directory made on one node, for the others to apply. */
export type DirectoryChange =
  | { op: 'user'; address: string; exists: boolean }
  /** The user's token changed (or was revoked): its sessions close everywhere. */
  | { op: 'token'; address: string }
  /** The group's members changed (null: the group was deleted). */
  | { op: 'group'; gid: number; members: string[] | null };

/** What the server does for the cluster room. */
export interface ClusterHooks {
  /** Performs the batch the engine's last call left (the delivery room). */
  perform(): void;
  /** `user` went online or offline as the whole cluster sees it, because of another node. */
  presence(user: string, online: boolean): void;
  /** Another node changed the directory. */
  directory(change: DirectoryChange): void;
}

export class Cluster {
  /** Per user, the other nodes that have connections of it. */
  private readonly remote = new Map<string, Set<string>>();
  /** The users with connections here, and the release of their subscription. */
  private readonly here = new Map<string, () => void>();
  private readonly undo: (() => void)[] = [];
  private readonly enc = new TextEncoder();
  private readonly dec = new TextDecoder();

  constructor(
    readonly bus: ClusterBus,
    private readonly engine: Engine,
    private readonly hooks: ClusterHooks,
    private readonly logger: Logger,
  ) {
    this.undo.push(
      bus.onBroadcast(LOC, (item, from) => this.located(item, from)),
      bus.onBroadcast(DIR, (item, from) => this.directoryChanged(item, from)),
      bus.on('nodeUp', () => this.announceAll()),
      bus.on('connected', () => this.announceAll()),
      bus.on('nodeDown', (node) => this.nodeGone(node)),
    );
  }

  get node(): string {
    return this.bus.node;
  }

  /** Whether `user` has connections on another node. */
  elsewhere(user: string): boolean {
    return (this.remote.get(user)?.size ?? 0) > 0;
  }

  /** The users with connections on other nodes (the API's `online`). */
  elsewhereUsers(): string[] {
    return [...this.remote.keys()];
  }

  /**
   * The first connection of `user` here, before its backlog is read: from
   * now on what is published for it reaches this node (what was stored
   * before is in the backlog).
   */
  arrived(user: string): void {
    if (this.here.has(user)) return;
    this.here.set(user, this.bus.subscribeUser(user));
    this.tell(LOC, this.loc(user, true));
  }

  /** The last connection of `user` here closed. */
  left(user: string): void {
    const release = this.here.get(user);
    if (!release) return;
    this.here.delete(user);
    release();
    this.tell(LOC, this.loc(user, false));
  }

  /** A change this node made to the directory, for the other nodes. */
  changed(change: DirectoryChange): void {
    this.tell(DIR, this.enc.encode(JSON.stringify(change)));
  }

  /**
   * A Forward or ForwardStatus operation of the engine's batch (the delivery
   * room reads them in order). A copy marked afterCommit comes out of the
   * engine only once the commit that stored it is done (router_committed);
   * a commit that failed hands nothing out, and its senders resend.
   */
  forward(e: Engine, op: StoreOp): void {
    if (op.kind === StoreOpKind.ForwardStatus) this.publish(e.name(op.recipient), this.statusItem(e.name(op.sender), op.id, op.status));
    else this.publish(e.name(op.recipient), this.copyItem(e.name(op.sender), op));
  }

  /** What the bus received for a user of this node. */
  received(user: string, item: Uint8Array, from: string): void {
    const e = this.engine;
    try {
      if (item[0] === ITEM_COPY && item.length >= COPY_HEAD) {
        const v = new DataView(item.buffer, item.byteOffset, item.byteLength);
        const stored = item[1] === 1;
        const fields = { id: v.getUint32(2), refid: v.getUint32(6), groupid: v.getUint32(10), flags: v.getUint32(14), type: v.getUint32(18), expiry: v.getUint32(22) };
        const n = v.getUint16(26);
        const sender = this.dec.decode(item.subarray(COPY_HEAD, COPY_HEAD + n));
        const payload = item.subarray(COPY_HEAD + n);
        e.remoteMessage(e.intern(user), e.intern(sender), fields, payload, stored, Date.now());
        this.hooks.perform();
      } else if (item[0] === ITEM_STATUS && item.length >= STATUS_HEAD) {
        const v = new DataView(item.buffer, item.byteOffset, item.byteLength);
        const n = v.getUint16(9);
        const sender = this.dec.decode(item.subarray(STATUS_HEAD, STATUS_HEAD + n));
        e.remoteStatus(e.intern(sender), e.intern(user), v.getUint32(1), v.getUint32(5), Date.now());
        this.hooks.perform();
      } else {
        this.logger.event('cluster.error', { node: from, error: `an item of kind ${item[0]} and ${item.length} bytes for ${user} that this node cannot read (a node of another version?)` });
      }
    } catch (err) {
      this.logger.event('cluster.error', { node: from, error: `an item for ${user}: ${errorText(err)}` });
    }
  }

  /** What /health shows. */
  get status(): { node: string; connected: boolean; nodes: string[]; heldBytes: number; usersHere: number } {
    const s = this.bus.status;
    return { node: s.node, connected: s.connected, nodes: s.nodes, heldBytes: s.heldBytes, usersHere: this.here.size };
  }

  /** Server stop: no more handlers; the bus closes (what it holds is reported). */
  async close(): Promise<void> {
    for (const u of this.undo.splice(0)) u();
    const { unsent } = await this.bus.close();
    if (unsent) this.logger.event('cluster.error', { node: this.node, error: `${unsent} items for other nodes could not be sent before the bus closed` });
  }

  private publish(user: string, item: Uint8Array): void {
    try {
      this.bus.publishUser(user, item);
    } catch (err) {
      // The bus holds what it can while NATS is away; past its limit the
      // item is lost for live delivery only: a copy forwarded after its
      // commit is in the store, and a live copy unconfirmed is stored by
      // its grace.
      this.logger.event('cluster.error', { node: this.node, error: `for ${user}: ${errorText(err)}` });
    }
  }

  private tell(channel: string, item: Uint8Array): void {
    try {
      this.bus.broadcast(channel, item);
    } catch (err) {
      this.logger.event('cluster.error', { node: this.node, error: `broadcast ${channel}: ${errorText(err)}` });
    }
  }

  private located(item: Uint8Array, from: string): void {
    const user = this.dec.decode(item.subarray(1));
    const before = this.here.has(user) || this.elsewhere(user);
    let nodes = this.remote.get(user);
    if (item[0] === 1) {
      if (!nodes) this.remote.set(user, (nodes = new Set()));
      nodes.add(from);
    } else if (nodes) {
      nodes.delete(from);
      if (nodes.size === 0) this.remote.delete(user);
    }
    this.moved(user, before);
  }

  private nodeGone(node: string): void {
    for (const [user, nodes] of [...this.remote]) {
      if (!nodes.has(node)) continue;
      nodes.delete(node);
      if (nodes.size === 0) this.remote.delete(user);
      this.moved(user, true);
    }
  }

  /** `user`'s count of other nodes changed; `before`: whether it was online anywhere. */
  private moved(user: string, before: boolean): void {
    this.engine.setRemote(this.engine.intern(user), this.remote.get(user)?.size ?? 0);
    const after = this.here.has(user) || this.elsewhere(user);
    if (before !== after) this.hooks.presence(user, after);
  }

  private announceAll(): void {
    for (const user of this.here.keys()) this.tell(LOC, this.loc(user, true));
  }

  private directoryChanged(item: Uint8Array, from: string): void {
    let change: DirectoryChange;
    try {
      change = JSON.parse(this.dec.decode(item)) as DirectoryChange;
    } catch (err) {
      this.logger.event('cluster.error', { node: from, error: `a directory change this node cannot read: ${errorText(err)}` });
      return;
    }
    this.hooks.directory(change);
  }

  private loc(user: string, on: boolean): Uint8Array {
    const name = this.enc.encode(user);
    const out = new Uint8Array(1 + name.length);
    out[0] = on ? 1 : 0;
    out.set(name, 1);
    return out;
  }

  private copyItem(sender: string, op: StoreOp): Uint8Array {
    const name = this.enc.encode(sender);
    const out = new Uint8Array(COPY_HEAD + name.length + op.payload.length);
    const v = new DataView(out.buffer);
    out[0] = ITEM_COPY;
    out[1] = op.afterCommit ? 1 : 0;
    v.setUint32(2, op.id);
    v.setUint32(6, op.refid);
    v.setUint32(10, op.gid);
    v.setUint32(14, op.flags);
    v.setUint32(18, op.type);
    v.setUint32(22, op.expiry);
    v.setUint16(26, name.length);
    out.set(name, COPY_HEAD);
    out.set(op.payload, COPY_HEAD + name.length);
    return out;
  }

  private statusItem(sender: string, id: number, status: number): Uint8Array {
    const name = this.enc.encode(sender);
    const out = new Uint8Array(STATUS_HEAD + name.length);
    const v = new DataView(out.buffer);
    out[0] = ITEM_STATUS;
    v.setUint32(1, id);
    v.setUint32(5, status);
    v.setUint16(9, name.length);
    out.set(name, STATUS_HEAD);
    return out;
  }
}
