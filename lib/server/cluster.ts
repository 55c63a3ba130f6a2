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
 *   users with it; a node that comes up, one that took this node for gone
 *   or was away from NATS and asks again (nodeRejoined), or this node back
 *   on NATS after an outage, hears this node's users again as a snapshot:
 *   the whole list, which also takes away the users that left while it
 *   could not hear (their `loc` went nowhere).
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
 * - Contacts (`presence = contacts`): a pair of users this node saw talk for
 *   the first time reaches the other nodes (broadcast `talk`); a 1:1 copy
 *   from another node makes its two ends contacts here too.
 *
 * A node never receives its own publications (the bus's noEcho): the
 * engine has already done locally what a message needed here.
 */
import type { ClusterBus } from '../cluster/bus';
import { StoreOpKind, type Delivery as Engine, type StoreOp } from '../delivery';
import { errorText, type Logger } from '../log';
import { SwitchboardError } from '../errors';

/** Broadcast channels. */
const LOC = 'loc';
/** `loc` items: a user came (LOC_ON) or left (LOC_OFF), or part of a snapshot of every user the node has (LOC_ALL). */
const LOC_OFF = 0;
const LOC_ON = 1;
const LOC_ALL = 2;
/** A snapshot's header: kind, its number (u32), whether it is the last part. Then (u16 length, name) per user. */
const SNAPSHOT_HEAD = 6;
/** Bytes of names per snapshot part, well under any NATS max_payload. */
const SNAPSHOT_PART = 60_000;
const DIR = 'dir';
const TALK = 'talk';
/**
 * `pump` items: a device of a user started reading its backlog on the
 * announcing node, where none was (PUMP_ON), the last one there finished
 * (PUMP_OFF), or part of a snapshot of every user with one reading there
 * (PUMP_ALL, the format of a `loc` snapshot).
 */
const PUMP = 'pump';
const PUMP_OFF = 0;
const PUMP_ON = 1;
const PUMP_ALL = 2;
/** A request every node answers at once: what the asking node published before it has been applied (changed()). */
const SYNC = new Uint8Array([1]);
const SYNC_TIMEOUT = 1000;

/** Items on a user's subject. */
const ITEM_COPY = 1;
const ITEM_STATUS = 2;
/**
 * A node heard another's announcement that it has the user (`loc`): what it
 * publishes for the user after this item, it published knowing that; it
 * names the announcing node.
 */
const ITEM_SEEN = 3;
const COPY_HEAD = 2 + 6 * 4 + 2;
/** Kind, its flags (STATUS_RECEIPT, STATUS_KEEP), id, status, the receipt's group, the sender's name length. */
const STATUS_HEAD = 2 + 3 * 4 + 2;
/** A status item's flags: a receipt is wanted (its group follows); keep the copy stored (StoreOp.keep). */
const STATUS_RECEIPT = 1;
const STATUS_KEEP = 2;

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
  /** Calls `fn` once the writes buffered now are committed (true) or dropped by a failed commit (false). */
  whenCommitted(fn: (ok: boolean) => void): void;
  /** `user` went online or offline as the whole cluster sees it, because of another node. */
  presence(user: string, online: boolean): void;
  /** Another node changed the directory. */
  directory(change: DirectoryChange): void;
  /** `a` and `b` messaged each other, as another node saw (presence contacts; not passed on). */
  talked(a: string, b: string): void;
}

/**
 * What another node publishes for a user of this node, from the user's
 * first connection here until that node has heard of it (its ITEM_SEEN): live
 * copies from a node not in `heard` are held, per node, in order.
 */
interface Gate {
  heard: Set<string>;
  held: Map<string, Uint8Array[]>;
  heldCount: number;
}

/** Live copies held for one user at most; past it they are dropped (their nodes keep them, and store them unconfirmed). */
const MAX_HELD = 10_000;

export class Cluster {
  /** Per user, the other nodes that have connections of it. */
  private readonly remote = new Map<string, Set<string>>();
  /** The users with connections here, and the release of their subscription. */
  private readonly here = new Map<string, () => void>();
  /** Users whose subscription NATS has not confirmed yet: their backlog waits (subscribed()). */
  private readonly subscribing = new Map<string, Promise<void>>();
  /** Per user here, which other nodes have heard that this node has it (received()). */
  private readonly gates = new Map<string, Gate>();
  private readonly undo: (() => void)[] = [];
  /** Snapshot parts heard so far, per node, until its last part (located()). */
  private readonly snapshots = new Map<string, { id: number; users: Set<string> }>();
  private readonly pumpSnapshots = new Map<string, { id: number; users: Set<string> }>();
  /** The users with a device reading its backlog here (Delivery counts the devices). */
  private readonly readingHere = new Set<string>();
  /** Per user, the other nodes where a device of it is reading its backlog. */
  private readonly readingElsewhere = new Map<string, Set<string>>();
  private snapshotSeq = 0;
  private snapshotDue = false;
  private closed = false;
  private readonly enc = new TextEncoder();
  private readonly fields = { id: 0, refid: 0, groupid: 0, flags: 0, type: 0, expiry: 0 };
  private readonly dec = new TextDecoder();

  constructor(
    readonly bus: ClusterBus,
    private readonly engine: Engine,
    private readonly hooks: ClusterHooks,
    private readonly logger: Logger,
    /** `durable = on`: a copy forwarded live is one its sending node keeps until it is confirmed, or stores. */
    private readonly durable: boolean,
  ) {
    this.undo.push(
      bus.onBroadcast(LOC, (item, from) => this.located(item, from)),
      bus.onBroadcast(DIR, (item, from) => this.directoryChanged(item, from)),
      bus.onBroadcast(TALK, (item, from) => this.heardTalk(item, from)),
      bus.onBroadcast(PUMP, (item, from) => this.heardPump(item, from)),
      bus.onRequest((item) => {
        if (item.length === 1 && item[0] === SYNC[0]) return SYNC;
        throw new SwitchboardError('E_CLUSTER_FRAME', `a request of ${item.length} bytes (kind ${item[0]}) that this node does not answer (a node of another version?)`);
      }),
      bus.on('nodeUp', () => this.announceAll()),
      // It may have dropped this node's users (it took this node for gone) or missed a loc.
      bus.on('nodeRejoined', () => this.announceAll()),
      bus.on('connected', () => this.announceAll()),
      bus.on('disconnected', () => this.natsLost()),
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
    this.gates.set(user, { heard: new Set(), held: new Map(), heldCount: 0 });
    this.here.set(user, this.bus.subscribeUser(user));
    this.tell(LOC, this.userItem(LOC_ON, user));
    // The nats client sends the subscription later; a copy another node
    // publishes after its commit, once this backlog read has looked, would
    // reach NATS before it and go nowhere. The read waits for NATS's answer
    // (during an outage it does not: the client subscribes again before
    // anything else once NATS is back).
    const confirmed: Promise<void> = this.bus.flush().then(
      () => this.confirmed(user, confirmed),
      () => this.confirmed(user, confirmed),
    );
    this.subscribing.set(user, confirmed);
    // Live copies this node forwarded to the user elsewhere may be lost
    // with the node it left; newer copies are stored for this device while
    // it reads its backlog, and must not land in the store before them.
    this.storeLive(this.engine.intern(user));
  }

  /**
   * Another device of `user` logged in here while this node has it: the
   * other nodes are told again (`loc`), so that they store the live copies
   * they keep for it (an earlier device here had them and may confirm
   * them while this one reads its backlog, or after: stored copies are per
   * user, so nothing would be left for this one), hand them out after that
   * commit, and say so (ITEM_SEEN). Live copies from a node that has not
   * said so are held until it has, as for a first device: newer copies
   * must not reach this device's backlog before the older ones stored.
   */
  anotherDevice(user: string): void {
    const gate = this.gates.get(user);
    if (!gate) return;
    gate.heard.clear();
    this.tell(LOC, this.userItem(LOC_ON, user));
  }

  /**
   * The first device of `user` here started reading its backlog (`on`), or
   * the last one finished (or left while reading): the other nodes hear it.
   * Meanwhile a delivered from another device of the user on their node
   * does not delete a stored copy (the delete waits until no device of the
   * user reads anywhere), since this device may not have read it yet
   * (docs/cluster.md, "Multi-device"). Where copies go does not change.
   */
  reading(user: string, on: boolean): void {
    if (this.closed) return;
    if (on) this.readingHere.add(user);
    else this.readingHere.delete(user);
    this.tell(PUMP, this.userItem(on ? PUMP_ON : PUMP_OFF, user));
  }

  /** Resolves once NATS has this node's subscription to `user`'s copies; undefined when it has it. */
  subscribed(user: string): Promise<void> | undefined {
    return this.subscribing.get(user);
  }

  private confirmed(user: string, p: Promise<void>): void {
    if (this.subscribing.get(user) === p) this.subscribing.delete(user);
  }

  /** The last connection of `user` here closed. */
  left(user: string): void {
    const release = this.here.get(user);
    if (!release) return;
    this.here.delete(user);
    // What it held are live copies their nodes keep: unconfirmed, they store them.
    this.gates.delete(user);
    release();
    this.tell(LOC, this.userItem(LOC_OFF, user));
  }

  /**
   * A change this node made to the directory, for the other nodes; resolves
   * once each other live node has applied it. Each answers a sync request
   * only after what this node published before it, which it applies as it
   * reads it (NATS keeps one connection's order), so its answer means the
   * change is in effect there: the API answers after that, and a client
   * that makes a user through one node may message it through any other
   * at once. A node that does not answer within SYNC_TIMEOUT (down, slow,
   * NATS unreachable) is logged and not waited for: it applies the change
   * when it reads it.
   */
  async changed(change: DirectoryChange): Promise<void> {
    this.tell(DIR, this.enc.encode(JSON.stringify(change)));
    const others = this.bus.status.nodes.filter((n) => n !== this.node);
    const answers = await Promise.allSettled(others.map((n) => this.bus.request(n, SYNC, SYNC_TIMEOUT)));
    answers.forEach((a, i) => {
      if (a.status === 'rejected') this.logger.event('cluster.error', { node: others[i], error: `did not confirm a directory change (${change.op}): ${errorText(a.reason)}` });
    });
  }

  /**
   * `a` and `b` became contacts here (their first message since this node
   * started), for the other nodes. The pairs of one loop turn travel in one
   * frame; a node that starts later does not hear them (docs/cluster.md).
   */
  talked(a: string, b: string): void {
    const first = this.enc.encode(a);
    const second = this.enc.encode(b);
    const out = new Uint8Array(2 + first.length + second.length);
    new DataView(out.buffer).setUint16(0, first.length);
    out.set(first, 2);
    out.set(second, 2 + first.length);
    this.tell(TALK, out);
  }

  /**
   * A Forward or ForwardStatus operation of the engine's batch (the delivery
   * room reads them in order). A copy marked afterCommit comes out of the
   * engine only once the commit that stored it is done (router_committed);
   * a commit that failed hands nothing out, and its senders resend.
   */
  forward(e: Engine, op: StoreOp): void {
    if (op.kind === StoreOpKind.ForwardStatus) this.publish(e.name(op.recipient), this.statusItem(e.name(op.sender), op.id, op.status, op.receipt ? op.gid : -1, op.keep));
    else this.publish(e.name(op.recipient), this.copyItem(e.name(op.sender), op));
  }

  /** What the bus received for a user of this node. */
  received(user: string, item: Uint8Array, from: string): void {
    const e = this.engine;
    try {
      if (item[0] === ITEM_COPY && item.length >= COPY_HEAD) {
        const v = new DataView(item.buffer, item.byteOffset, item.byteLength);
        const stored = item[1] === 1;
        // A live copy from a node that has not heard yet that this node has
        // the user: older copies it sent to where the user was may be
        // unconfirmed (lost with a dead node). When it hears, it stores
        // them (storeLive) and hands them out after that commit, then says
        // so (ITEM_SEEN); this one waits for that, so that it does not
        // overtake them. (With durability off, nobody stores them: taken.)
        if (!stored && this.durable && this.hold(user, item, from)) return;
        // One object for every item (the engine reads it during the call).
        const fields = this.fields;
        fields.id = v.getUint32(2);
        fields.refid = v.getUint32(6);
        fields.groupid = v.getUint32(10);
        fields.flags = v.getUint32(14);
        fields.type = v.getUint32(18);
        fields.expiry = v.getUint32(22);
        const n = v.getUint16(26);
        const sender = this.dec.decode(item.subarray(COPY_HEAD, COPY_HEAD + n));
        const payload = item.subarray(COPY_HEAD + n);
        e.remoteMessage(e.intern(user), e.intern(sender), fields, payload, stored, Date.now());
        this.hooks.perform();
        // Also what a node that started after the sender's node recorded
        // the pair (and so never heard it) learns again.
        if (fields.groupid === 0) this.hooks.talked(sender, user);
      } else if (item[0] === ITEM_SEEN) {
        if (this.dec.decode(item.subarray(1)) === this.node) this.seen(user, from);
      } else if (item[0] === ITEM_STATUS && item.length >= STATUS_HEAD) {
        const v = new DataView(item.buffer, item.byteOffset, item.byteLength);
        const n = v.getUint16(14);
        const sender = this.dec.decode(item.subarray(STATUS_HEAD, STATUS_HEAD + n));
        // The other node's flags asked for a receipt (in group gid, 0 for 1:1), or not (-1).
        const receipt = (item[1] & STATUS_RECEIPT) !== 0 ? v.getUint32(10) : -1;
        e.remoteStatus(e.intern(sender), e.intern(user), v.getUint32(2), v.getUint32(6), Date.now(), receipt, (item[1] & STATUS_KEEP) !== 0);
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
    this.closed = true;
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
    if (item[0] === LOC_ALL) return this.snapshotPart(item, from, LOC_ALL, this.snapshots, this.remote, (user, on) => this.locate(user, from, on));
    this.locate(this.dec.decode(item.subarray(1)), from, item[0] === LOC_ON);
  }

  /** Node `from` has `user` (on) or no longer has it. */
  private locate(user: string, from: string, on: boolean): void {
    const before = this.here.has(user) || this.elsewhere(user);
    mark(this.remote, user, from, on);
    this.moved(user, before);
    if (!on) return;
    // What moved() stored for the user goes out after its commit, and then
    // this: the announcing node takes this node's live copies from here on.
    this.hooks.whenCommitted(() => this.publish(user, this.seenItem(from)));
  }

  /**
   * A part of node `from`'s snapshot of `kind` (announceAll): `loc`'s
   * users, or `pump`'s users reading their backlog there. Parts are kept in
   * `parts` until the last one; then the snapshot is that node's whole
   * list: `apply(user, false)` for each user `current` has from that node
   * and the snapshot does not list (this node missed its item saying so,
   * during an outage of its own or of that node's), then `apply(user,
   * true)` for each user listed. Parts of one snapshot follow each other
   * on their subject, between that node's other items, in order; a newer
   * snapshot replaces one whose parts were cut short.
   */
  private snapshotPart(
    item: Uint8Array,
    from: string,
    kind: number,
    parts: Map<string, { id: number; users: Set<string> }>,
    current: Map<string, Set<string>>,
    apply: (user: string, on: boolean) => void,
  ): void {
    if (!validSnapshotPart(item, kind)) {
      this.logger.event('cluster.error', { node: from, error: `a snapshot part of ${item.length} bytes (kind ${item[0]}) that this node cannot read` });
      return;
    }
    const part = readSnapshotPart(item);
    let snap = parts.get(from);
    if (!snap || snap.id !== part.id) parts.set(from, (snap = { id: part.id, users: new Set() }));
    for (const user of part.users) snap.users.add(user);
    if (!part.last) return;
    parts.delete(from);
    for (const [user, nodes] of [...current]) if (nodes.has(from) && !snap.users.has(user)) apply(user, false);
    for (const user of snap.users) apply(user, true);
  }

  /** Whether a live copy for `user` from node `from` waits for that node's ITEM_SEEN (or is dropped: its node keeps it). */
  private hold(user: string, item: Uint8Array, from: string): boolean {
    const gate = this.gates.get(user);
    // The user left this node: its node stores the copy when nobody confirms it.
    if (!gate) return true;
    if (gate.heard.has(from)) return false;
    if (gate.heldCount >= MAX_HELD) return true;
    let list = gate.held.get(from);
    if (!list) gate.held.set(from, (list = []));
    // The bus's buffer is not ours to keep.
    list.push(item.slice());
    gate.heldCount++;
    return true;
  }

  /** Node `from` heard that this node has `user`, and has handed out what it stored for it: the copies held for it go now. */
  private seen(user: string, from: string): void {
    const gate = this.gates.get(user);
    if (!gate) return;
    gate.heard.add(from);
    const list = gate.held.get(from);
    if (!list) return;
    gate.held.delete(from);
    gate.heldCount -= list.length;
    for (const item of list) this.received(user, item, from);
  }

  private nodeGone(node: string): void {
    this.snapshots.delete(node);
    this.pumpSnapshots.delete(node);
    // Its devices reading their backlogs are gone with it.
    for (const [user, nodes] of [...this.readingElsewhere]) if (nodes.has(node)) this.pumping(user, node, false);
    // Its live copies held here are lost with it; their senders resend.
    for (const gate of this.gates.values()) {
      const list = gate.held.get(node);
      if (!list) continue;
      gate.held.delete(node);
      gate.heldCount -= list.length;
    }
    for (const [user, nodes] of [...this.remote]) {
      if (!nodes.has(node)) continue;
      mark(this.remote, user, node, false);
      this.moved(user, true);
    }
  }

  /**
   * `user`'s nodes changed; `before`: whether it was online anywhere. The
   * live copies forwarded to it and not confirmed may be lost on the way
   * (its node died, or it left that node before confirming them), and a
   * device of it elsewhere must not get a newer copy before them: they are
   * stored now and handed out again after that commit, and newer copies
   * wait behind them (docs/cluster.md).
   */
  private moved(user: string, before: boolean): void {
    const uid = this.engine.intern(user);
    this.engine.setRemote(uid, this.remote.get(user)?.size ?? 0);
    this.storeLive(uid);
    const after = this.here.has(user) || this.elsewhere(user);
    if (before !== after) this.hooks.presence(user, after);
  }

  /**
   * Lost NATS: what the nats client was given before it noticed is lost
   * (docs/cluster.md, "During a NATS outage"), and so is what NATS had not
   * handed to the other nodes yet. The live copies for users elsewhere are
   * stored now, so that they go out again after their commit ahead of
   * anything newer the bus holds meanwhile.
   */
  private natsLost(): void {
    for (const user of this.remote.keys()) this.storeLive(this.engine.intern(user));
  }

  private storeLive(uid: number): void {
    this.engine.storeLive(uid);
    this.hooks.perform();
  }

  /**
   * Every user here, as one snapshot (snapshotPart) to every node. Asked for
   * by several events of one loop turn (each node that had dropped this one
   * says hello), it is sent once, after them; its list is taken when it is
   * sent, and what changes later follows it as plain `loc` items.
   */
  private announceAll(): void {
    if (this.snapshotDue || this.closed) return;
    this.snapshotDue = true;
    setImmediate(() => {
      this.snapshotDue = false;
      if (!this.closed) this.sendSnapshot();
    });
  }

  private sendSnapshot(): void {
    this.snapshotSeq = (this.snapshotSeq + 1) >>> 0;
    for (const part of snapshotParts([...this.here.keys()], this.snapshotSeq)) this.tell(LOC, part);
    // And who reads its backlog here: a PUMP_OFF the other node missed is made up for.
    for (const part of snapshotParts([...this.readingHere], this.snapshotSeq, SNAPSHOT_PART, PUMP_ALL)) this.tell(PUMP, part);
  }

  private heardPump(item: Uint8Array, from: string): void {
    if (item[0] === PUMP_ALL) return this.snapshotPart(item, from, PUMP_ALL, this.pumpSnapshots, this.readingElsewhere, (user, on) => this.pumping(user, from, on));
    if (item.length < 2 || item[0] > PUMP_ON) {
      this.logger.event('cluster.error', { node: from, error: `a backlog-reading item of ${item.length} bytes (kind ${item[0]}) that this node cannot read` });
      return;
    }
    this.pumping(this.dec.decode(item.subarray(1)), from, item[0] === PUMP_ON);
  }

  /** Node `from` has a device of `user` reading its backlog (on), or no longer. */
  private pumping(user: string, from: string, on: boolean): void {
    const [before, after] = mark(this.readingElsewhere, user, from, on);
    if (after === before) return;
    this.engine.setRemotePumping(this.engine.intern(user), after);
    this.hooks.perform();
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

  private heardTalk(item: Uint8Array, from: string): void {
    const n = item.length >= 2 ? new DataView(item.buffer, item.byteOffset, item.byteLength).getUint16(0) : -1;
    if (n < 0 || 2 + n > item.length) {
      this.logger.event('cluster.error', { node: from, error: `a contact pair of ${item.length} bytes that this node cannot read` });
      return;
    }
    this.hooks.talked(this.dec.decode(item.subarray(2, 2 + n)), this.dec.decode(item.subarray(2 + n)));
  }

  /** A `loc` or `pump` item about one user: its kind (LOC_ON, PUMP_OFF, ...), then the name. */
  private userItem(kind: number, user: string): Uint8Array {
    const name = this.enc.encode(user);
    const out = new Uint8Array(1 + name.length);
    out[0] = kind;
    out.set(name, 1);
    return out;
  }

  /**
   * Items are written into one scratch buffer that the next item reuses:
   * the bus copies an item into its frame before publishUser returns, so a
   * forwarded copy or status allocates no buffer of its own (a crossing
   * message makes two).
   */
  private scratch = new Uint8Array(4096);
  private scratchView = new DataView(this.scratch.buffer);

  /** The scratch buffer with room for `n` bytes. */
  private room(n: number): Uint8Array {
    if (this.scratch.length < n) {
      this.scratch = new Uint8Array(Math.max(n, this.scratch.length * 2));
      this.scratchView = new DataView(this.scratch.buffer);
    }
    return this.scratch;
  }

  private copyItem(sender: string, op: StoreOp): Uint8Array {
    // A name of n UTF-16 units is at most 3n bytes of UTF-8.
    const out = this.room(COPY_HEAD + 3 * sender.length + op.payload.length);
    const nameLen = this.enc.encodeInto(sender, out.subarray(COPY_HEAD)).written;
    const v = this.scratchView;
    out[0] = ITEM_COPY;
    out[1] = op.afterCommit ? 1 : 0;
    v.setUint32(2, op.id);
    v.setUint32(6, op.refid);
    v.setUint32(10, op.gid);
    v.setUint32(14, op.flags);
    v.setUint32(18, op.type);
    v.setUint32(22, op.expiry);
    v.setUint16(26, nameLen);
    out.set(op.payload, COPY_HEAD + nameLen);
    return out.subarray(0, COPY_HEAD + nameLen + op.payload.length);
  }

  private seenItem(node: string): Uint8Array {
    const name = this.enc.encode(node);
    const out = new Uint8Array(1 + name.length);
    out[0] = ITEM_SEEN;
    out.set(name, 1);
    return out;
  }

  private statusItem(sender: string, id: number, status: number, receiptGid: number, keep: boolean): Uint8Array {
    const out = this.room(STATUS_HEAD + 3 * sender.length);
    const nameLen = this.enc.encodeInto(sender, out.subarray(STATUS_HEAD)).written;
    const v = this.scratchView;
    out[0] = ITEM_STATUS;
    out[1] = (receiptGid < 0 ? 0 : STATUS_RECEIPT) | (keep ? STATUS_KEEP : 0);
    v.setUint32(2, id);
    v.setUint32(6, status);
    v.setUint32(10, receiptGid < 0 ? 0 : receiptGid);
    v.setUint16(14, nameLen);
    return out.subarray(0, STATUS_HEAD + nameLen);
  }
}

/**
 * The users of a snapshot (`loc` LOC_ALL or `pump` PUMP_ALL) as its parts:
 * each part holds the kind, the snapshot's number, whether it is the last part, then
 * (u16 length, UTF-8 name) per user, at most `partBytes` of names (one
 * name at least); an empty list is one empty last part.
 */
export function snapshotParts(users: string[], id: number, partBytes = SNAPSHOT_PART, kind = LOC_ALL): Uint8Array[] {
  const enc = new TextEncoder();
  const parts: Uint8Array[] = [];
  let names: Uint8Array[] = [];
  let bytes = 0;
  const part = (last: boolean): void => {
    const out = new Uint8Array(SNAPSHOT_HEAD + bytes);
    const v = new DataView(out.buffer);
    out[0] = kind;
    v.setUint32(1, id);
    out[5] = last ? 1 : 0;
    let at = SNAPSHOT_HEAD;
    for (const name of names) {
      v.setUint16(at, name.length);
      out.set(name, at + 2);
      at += 2 + name.length;
    }
    parts.push(out);
    names = [];
    bytes = 0;
  };
  for (const user of users) {
    const name = enc.encode(user);
    if (bytes + 2 + name.length > partBytes && names.length) part(false);
    names.push(name);
    bytes += 2 + name.length;
  }
  part(true);
  return parts;
}

/** Whether `item` is a snapshot part whose names fill it exactly. */
export function validSnapshotPart(item: Uint8Array, kind = LOC_ALL): boolean {
  if (item.length < SNAPSHOT_HEAD || item[0] !== kind) return false;
  const v = new DataView(item.buffer, item.byteOffset, item.byteLength);
  let at = SNAPSHOT_HEAD;
  while (at + 2 <= item.length) at += 2 + v.getUint16(at);
  return at === item.length;
}

/** A part snapshotParts made (validSnapshotPart first). */
export function readSnapshotPart(item: Uint8Array): { id: number; last: boolean; users: string[] } {
  const dec = new TextDecoder();
  const v = new DataView(item.buffer, item.byteOffset, item.byteLength);
  const users: string[] = [];
  for (let at = SNAPSHOT_HEAD; at + 2 <= item.length; ) {
    const n = v.getUint16(at);
    users.push(dec.decode(item.subarray(at + 2, at + 2 + n)));
    at += 2 + n;
  }
  return { id: v.getUint32(1), last: item[5] === 1, users };
}

/** Adds `node` to `user`'s set in `map` (on) or takes it out; returns the set's size before and after. */
function mark(map: Map<string, Set<string>>, user: string, node: string, on: boolean): [number, number] {
  let nodes = map.get(user);
  const before = nodes?.size ?? 0;
  if (on) {
    if (!nodes) map.set(user, (nodes = new Set()));
    nodes.add(node);
  } else if (nodes) {
    nodes.delete(node);
    if (nodes.size === 0) map.delete(user);
  }
  return [before, nodes?.size ?? 0];
}
