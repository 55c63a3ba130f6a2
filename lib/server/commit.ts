/**
 * The group commit (durable on): what routing stores is committed in
 * batches, and only then is anything that depends on a batch released: the
 * senders' "sent" statuses, the deliveries held until their copy was
 * stored, and the receipts queued behind those "sent"s.
 *
 * Routing only queues (hold, ack, receiptAfterAcks) and asks for a commit
 * (schedule); the commit runs at the end of the turn, as the store's
 * commit() then the release of the batch.
 *
 * Pipelined: a store whose commit completes later (PostgreSQL) has at most
 * one batch in flight. Whatever routing queues meanwhile (writes, held
 * deliveries, "sent"s, receipts) is the next batch; when the flight lands,
 * exactly its batch is released, in the order queued, and the next batch
 * commits at once. `holds()` and `acksWaiting` answer for both batches, so
 * a live copy never overtakes a held one and a receipt never overtakes the
 * "sent" before it. A store that commits synchronously (SQLite) never has a
 * batch in flight: commit and release run in the same call, with no Promise
 * and no extra turn.
 *
 * A failed commit: nothing of its batch is published or acknowledged, and
 * the batch queued behind a failed flight is dropped with it (its messages
 * may follow the failed ones in some sender's order, and would overtake
 * their resends). The senders whose "sent" was dropped are disconnected
 * (close code 1011, E_STORE_WRITE): the SDK reconnects and resends what was
 * not acknowledged, in order. The server runs on; the next batch is a fresh
 * attempt, and a store that keeps failing fails (and logs) each batch, so
 * nothing it could not keep is ever acknowledged.
 */
import { errorText, type Logger } from '../log';
import type { Store } from '../store/types';
import type { WS } from './connections';
import type { Delivery, HeldDelivery, HeldFrames } from './delivery';
import type { Inboxes } from './inbox';
import { countCommit, type MetricCounts } from './metrics';
import { CLOSE_STORE_FAILED } from './protocol';

/** A status frame for a sender (its "sent"), sent when released. */
export interface Ack {
  ws: WS;
  frame: Buffer;
  binary: boolean;
}

/** Told once what was written before it is committed (true) or dropped by a failed commit (false). */
export type CommitWaiter = (ok: boolean) => void;

/** What one commit releases. Two of them are reused, so a commit allocates only its arrays. */
class Batch {
  acks: Ack[] = [];
  /** Deliveries waiting for this batch's commit. */
  held: HeldDelivery[] = [];
  /** Recipients in `held`: a live copy to them would overtake the held one. */
  readonly heldTo = new Set<string>();
  /** Receipts for confirmed live copies: they go out after the acks, so "sent" comes first. */
  receipts: HeldDelivery[] = [];
  /** Readers waiting for this batch's writes (asynchronous stores only). */
  waiters: CommitWaiter[] = [];
  /** performance.now() when its commit started. */
  startedAt = 0;

  get empty(): boolean {
    return this.acks.length === 0 && this.held.length === 0 && this.receipts.length === 0 && this.waiters.length === 0;
  }
}

export class Commit {
  /** Queued now: committed by the next commit. */
  private next = new Batch();
  /** The batch whose commit has not completed (asynchronous stores), or null. */
  private flight: Batch | null = null;
  /** The last batch that flew, reused as a next one. */
  private spare: Batch | null = null;
  private scheduled = false;
  private readonly onImmediate = (): void => {
    this.now();
  };
  private readonly landed = (): void => this.land(true, null);
  private readonly crashed = (e: unknown): void => this.land(false, e);

  constructor(
    private readonly store: Store,
    private readonly delivery: Delivery,
    private readonly inboxes: Inboxes,
    private readonly metrics: MetricCounts,
    private readonly logger: Logger,
  ) {}

  /** A delivery to `to` that goes out once its stored copy is committed. */
  hold(held: HeldDelivery): void {
    this.next.held.push(held);
    this.next.heldTo.add(held.to);
  }

  /** Whether a delivery to `to` waits for a commit (a copy sent now would overtake it). */
  holds(to: string): boolean {
    const f = this.flight;
    return (this.next.heldTo.size !== 0 && this.next.heldTo.has(to)) || (f !== null && f.heldTo.size !== 0 && f.heldTo.has(to));
  }

  /** A sender's "sent", released after the commit of what was written before it. */
  ack(a: Ack): void {
    this.next.acks.push(a);
    this.schedule();
  }

  /** Whether a "sent" or a receipt behind one waits: a receipt now must queue behind them. */
  get acksWaiting(): boolean {
    const f = this.flight;
    return this.next.acks.length !== 0 || this.next.receipts.length !== 0 || (f !== null && (f.acks.length !== 0 || f.receipts.length !== 0));
  }

  /** A receipt that must not overtake the "sent"s waiting now. */
  receiptAfterAcks(to: string, frames: HeldFrames): void {
    this.next.receipts.push({ to, frames });
    this.schedule();
  }

  /** A commit at the end of this loop turn. */
  schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(this.onImmediate);
  }

  /**
   * Commits what is queued now, then releases it; with a batch in flight, it
   * goes when that lands. Also called out of turn where the store must hold
   * this turn's copies before it is read (a backlog page, a backend API
   * send). Returns false when a commit failed in this call.
   */
  now(): boolean {
    this.scheduled = false;
    if (this.flight) return true;
    return this.run();
  }

  /**
   * Calls `fn` once everything written so far is committed (true) or was
   * dropped by a failed commit (false): at once, before returning, when the
   * store commits synchronously. A reader of committed state (a backlog
   * page) waits here for an asynchronous store.
   */
  afterCommit(fn: CommitWaiter): void {
    if (!this.flight) {
      const ok = this.now();
      // now() may have put the batch in flight.
      const started = this.flight as Batch | null;
      if (!started) return fn(ok);
      started.waiters.push(fn);
      return;
    }
    // Writes buffered now go with the next batch; none means the flight has the last ones.
    (this.store.pendingWrites ? this.next : this.flight).waiters.push(fn);
  }

  /**
   * Runs `fn` with no batch in flight: now, or as the flight lands
   * (committed or failed), before the batch queued behind it is taken. A
   * store change that must not race the writes of a flight goes here:
   * removeUser, whose delete a copy landing after it would outlive. What is
   * buffered then is still the store's to drop. Returns what `fn` returns,
   * in a Promise when it had to wait.
   */
  afterFlight<T>(fn: () => T): T | Promise<T> {
    const f = this.flight;
    if (!f) return fn();
    return new Promise((resolve, reject) => {
      f.waiters.push(() => {
        try {
          resolve(fn());
        } catch (e) {
          reject(e);
        }
      });
    });
  }

  /** Whether nothing written is waiting for a commit. */
  get idle(): boolean {
    return this.flight === null && this.store.pendingWrites === 0;
  }

  private run(): boolean {
    const batch = this.next;
    if (this.store.pendingWrites) {
      batch.startedAt = performance.now();
      let done: Promise<void> | void;
      try {
        done = this.store.commit();
      } catch (e) {
        this.fail(batch, e);
        return false;
      }
      if (done) {
        this.flight = batch;
        this.next = this.spare ?? new Batch();
        this.spare = null;
        done.then(this.landed, this.crashed);
        return true;
      }
      countCommit(this.metrics, (performance.now() - batch.startedAt) / 1000);
    }
    this.release(batch);
    return true;
  }

  /** The flight's commit completed (or failed): release it, then commit the next batch at once. */
  private land(ok: boolean, e: unknown): void {
    const batch = this.flight!;
    this.flight = null;
    if (ok) {
      countCommit(this.metrics, (performance.now() - batch.startedAt) / 1000);
      this.release(batch);
    } else {
      this.fail(batch, e);
      // The next batch may hold a sender's later messages: they must not
      // overtake the resends of the failed ones.
      if (this.store.pendingWrites || !this.next.empty) this.fail(this.next, null);
    }
    this.spare = batch;
    if (!this.flight && (this.store.pendingWrites || !this.next.empty)) this.run();
  }

  private release(batch: Batch): void {
    const held = batch.held;
    if (held.length) {
      batch.held = [];
      batch.heldTo.clear();
      for (const h of held) this.delivery.publishHeld(h);
    }
    const acks = batch.acks;
    if (acks.length) {
      batch.acks = [];
      sendAcks(acks);
    }
    this.publishReceipts(batch);
    this.wake(batch, true);
  }

  /**
   * Nothing of a failed batch is published or acknowledged. Its senders are
   * disconnected so their clients resend, in order, what never heard "sent".
   * `e` is null for a batch dropped behind a failed one (logged with it).
   */
  private fail(batch: Batch, e: unknown): void {
    if (e !== null) this.logger.event('store.error', { op: 'flush', error: errorText(e) });
    // The store has dropped the batch (and anything buffered behind it).
    // Inbox counts included those copies: read them again.
    this.inboxes.forget();
    batch.held = [];
    batch.heldTo.clear();
    const acks = batch.acks;
    batch.acks = [];
    for (const a of acks) {
      if (a.ws.getUserData().open) a.ws.end(CLOSE_STORE_FAILED, 'E_STORE_WRITE');
    }
    // A receipt does not depend on the store: one to a sender still
    // connected goes out; a disconnected one's topic reaches nobody.
    this.publishReceipts(batch);
    this.wake(batch, false);
  }

  private publishReceipts(batch: Batch): void {
    const receipts = batch.receipts;
    if (!receipts.length) return;
    batch.receipts = [];
    for (const r of receipts) this.delivery.publishFrames(r.to, r.frames);
  }

  private wake(batch: Batch, ok: boolean): void {
    const waiters = batch.waiters;
    if (!waiters.length) return;
    batch.waiters = [];
    for (const w of waiters) w(ok);
  }
}

function sendAcks(acks: Ack[]): void {
  if (acks.length === 1) {
    const a = acks[0];
    if (a.ws.getUserData().open) a.ws.send(a.frame, a.binary);
    return;
  }
  // One write per connection, not one per status: outside a uWebSockets.js
  // callback every uncorked send is a system call.
  const byWs = new Map<WS, Ack[]>();
  for (const a of acks) {
    const list = byWs.get(a.ws);
    if (list) list.push(a);
    else byWs.set(a.ws, [a]);
  }
  for (const [ws, list] of byWs) {
    if (!ws.getUserData().open) continue;
    ws.cork(() => {
      for (const a of list) ws.send(a.frame, a.binary);
    });
  }
}
