/**
 * Live copies (durable on, durable_grace > 0): a copy for an online
 * recipient is sent at once and kept here instead of being written to the
 * store. The sender hears "sent" when the recipient confirms delivery, or,
 * if it has not within the grace (or disconnects first), when the copy has
 * been written to the store. Either way "sent" means the message can no
 * longer be lost with the process; most copies never touch the disk.
 */
import type { NewMessage, Store } from '../store/types';
import type { Commit, Ack } from './commit';
import type { Connections } from './connections';
import type { Inboxes } from './inbox';
import type { MetricCounts } from './metrics';
import type { ServerSettings } from './settings';

/** A sender's "sent" that waits for its live copies to be confirmed or stored. */
export interface LiveAck extends Ack {
  /** Live copies not yet confirmed or stored. */
  left: number;
}

/** The message as the store takes it, less the recipient: shared by a group message's live copies. */
export type LiveMessage = Omit<NewMessage, 'recipient'>;

interface LiveCopy {
  /** `sender\0recipient\0id`, the receipts' key. */
  key: string;
  recipient: string;
  /** null once confirmed or stored. */
  base: LiveMessage | null;
  /** Date.now() when it went out; the queue is in this order. */
  sentAt: number;
  ack: LiveAck;
  /** Resends of the message while it was live (the sender reconnected before its "sent"). */
  more: LiveAck[] | null;
}

export class LiveCopies {
  /** Copies delivered before they were stored, by key, and in the order they were sent. */
  private readonly live = new Map<string, LiveCopy>();
  private queue: LiveCopy[] = [];
  private head = 0;
  private timer: NodeJS.Timeout | null = null;
  /**
   * Copies past the grace whose recipient is still confirming others, oldest
   * first: they get more time (expire).
   */
  private late: LiveCopy[] = [];
  /** When the timer should fire: how late it does shows how busy the loop is. */
  private timerAt = 0;
  private stopped = false;

  constructor(
    private readonly settings: ServerSettings,
    private readonly store: Store,
    private readonly inboxes: Inboxes,
    private readonly connections: Connections,
    private readonly commit: Commit,
    private readonly metrics: MetricCounts,
  ) {}

  /** Whether any copy is live (else a status needs no lookup here). */
  get active(): boolean {
    return this.live.size !== 0;
  }

  /** A copy of `base` went to `recipient` now; `ack` is its sender's "sent", one more copy to wait for. */
  add(ack: LiveAck, recipient: string, base: LiveMessage, now: number): void {
    ack.left++;
    const key = `${base.sender}\0${recipient}\0${base.id}`;
    const had = this.live.get(key);
    if (had) {
      // A resend of a message still live (the sender reconnected before
      // its "sent"): one confirmation answers both.
      (had.more ??= []).push(ack);
      return;
    }
    const lc: LiveCopy = { key, recipient, base, sentAt: now, ack, more: null };
    this.live.set(key, lc);
    this.queue.push(lc);
    if (!this.timer) this.arm();
  }

  /**
   * The recipient confirmed the copy `key`, if it is live: nothing was
   * stored, nothing to delete; its sender hears "sent" with the acks of this
   * turn. Returns whether it was live.
   */
  confirm(key: string): boolean {
    if (this.live.size === 0) return false;
    const lc = this.live.get(key);
    if (!lc) return false;
    this.live.delete(key);
    lc.base = null;
    this.settle(lc);
    return true;
  }

  /**
   * A device of `recipient` left: what it was sent but did not confirm may be
   * lost with it, so it is stored now, in the order it was sent (another
   * device of the same user that confirms it deletes it).
   */
  storeFor(recipient: string): void {
    if (this.live.size) for (const lc of [...this.copies(recipient)]) this.storeCopy(lc);
  }

  /**
   * The server stops: every unconfirmed copy is stored. Their senders never
   * heard "sent" and will resend, but a copy stored now is not lost if they
   * do not come back.
   */
  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    for (const lc of [...this.copies()]) this.storeCopy(lc);
  }

  /** Not confirmed in time (or its recipient left): written to the store, and "sent" follows the commit. */
  private storeCopy(lc: LiveCopy): void {
    this.live.delete(lc.key);
    this.store.enqueue({ ...lc.base!, recipient: lc.recipient });
    this.metrics.copiesStored++;
    this.inboxes.added(lc.recipient, lc.base!.payload.length);
    lc.base = null;
    this.settle(lc);
    this.commit.schedule();
  }

  /** One fewer copy for each "sent" waiting on lc; the last one is released with the next commit. */
  private settle(lc: LiveCopy): void {
    if (--lc.ack.left === 0) this.commit.ack(lc.ack);
    if (lc.more) for (const a of lc.more) if (--a.left === 0) this.commit.ack(a);
  }

  /**
   * One timer for all live copies. It fires at most every quarter of the
   * grace, so a copy waits between the grace and 1.25 times it; and it
   * decides in a setImmediate, after the loop's poll phase has read the
   * confirmations that already arrived.
   */
  private arm(): void {
    const q = this.queue;
    while (this.head < q.length && q[this.head].base === null) this.head++;
    if (this.head >= q.length) {
      this.queue = [];
      this.head = 0;
    }
    const grace = this.settings.durableGrace;
    let wait = Math.ceil(grace / 4);
    if (this.head < this.queue.length) wait = Math.max(this.queue[this.head].sentAt + grace - Date.now(), wait);
    else if (!this.late.length) {
      this.timer = null;
      return;
    }
    wait = Math.max(wait, 1);
    this.timerAt = Date.now() + wait;
    this.timer = setTimeout(() => setImmediate(() => this.expire()), wait);
  }

  /**
   * Stores the copies that are past the grace, unless the server or their
   * recipient gives a reason to wait, up to 5 s (or the grace, if longer):
   * - the loop is busy (this timer fired over half a grace late): the server
   *   reads confirmations late, so silence says nothing about recipients;
   * - the recipient is still confirming other messages (expire saw a
   *   confirmation from one of its devices within the grace).
   * Storing copies whose confirmations are merely late would add a store
   * write and a delete per message exactly when the server has no time for
   * them, and it would fall further behind: measured, at 40-50k msg/s in
   * rate mode a plain 50 ms grace sent half the copies to the store and p50
   * latency to 300 ms. A connected recipient that confirms nothing has its
   * copies stored after the grace. Whatever is stored for one recipient is
   * an oldest-first run of its copies (one decision per recipient per pass,
   * older copies first), so the store keeps each sender's order.
   */
  private expire(): void {
    this.timer = null;
    if (this.stopped) return;
    const now = Date.now();
    const grace = this.settings.durableGrace;
    const due = now - grace;
    const cap = now - Math.max(grace, 5000);
    const busy = now - this.timerAt > grace / 2;
    const confirming = new Map<string, boolean>();
    const decide = (lc: LiveCopy): void => {
      const r = lc.recipient;
      let alive = confirming.get(r);
      if (alive === undefined && !busy) {
        alive = false;
        for (const ws of this.connections.of(r)) if (ws.getUserData().confirmedAt > due) alive = true;
        confirming.set(r, alive);
      }
      if ((busy || alive) && lc.sentAt > cap) this.late.push(lc);
      else this.storeCopy(lc);
    };
    const late = this.late;
    this.late = [];
    for (const lc of late) if (lc.base) decide(lc);
    const q = this.queue;
    // Copies went out in queue order, so the expired ones are a prefix.
    while (this.head < q.length && q[this.head].sentAt <= due) {
      const lc = q[this.head++];
      if (lc.base) decide(lc);
    }
    if (this.head > 1024 && this.head * 2 > q.length) {
      this.queue = q.slice(this.head);
      this.head = 0;
    }
    this.arm();
  }

  /** Every unconfirmed copy (of `recipient`, or all), oldest first. */
  private *copies(recipient?: string): Generator<LiveCopy> {
    for (const lc of this.late) if (lc.base && (recipient === undefined || lc.recipient === recipient)) yield lc;
    for (let i = this.head; i < this.queue.length; i++) {
      const lc = this.queue[i];
      if (lc.base && (recipient === undefined || lc.recipient === recipient)) yield lc;
    }
  }
}
