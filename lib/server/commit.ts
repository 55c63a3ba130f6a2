/**
 * The group commit: what routing stores is committed in batches, and only
 * then is anything that depends on a batch released: the senders' "sent"
 * statuses, the deliveries held until their copy was stored (durable on),
 * and the receipts queued behind those "sent"s. What waits is the delivery
 * engine's (lib/delivery.ts, cpp/commit.cc); this room runs the store's
 * commit between the engine's commitBegin() and committed(epoch), then has
 * the delivery room perform what the engine released.
 *
 * Routing asks for a commit (schedule: the engine's batch says CommitDue);
 * the commit runs at the end of the loop turn.
 *
 * Pipelined: a store whose commit completes later (PostgreSQL) has at most
 * one batch in flight. What routing queues meanwhile carries the engine's
 * next epoch; when the flight lands, exactly its epoch is released, in the
 * order queued, and the next batch commits at once. The engine keeps a live
 * copy from overtaking a held one and a receipt from overtaking the "sent"
 * before it across both batches. A store that commits synchronously
 * (SQLite) never has a batch in flight: commit and release run in the same
 * call, with no Promise and no extra turn.
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
import type { Delivery as Engine } from '../delivery';
import { errorText, type Logger } from '../log';
import type { AsyncStore } from '../store/types';
import type { Delivery } from './delivery';
import { countCommit, type MetricCounts } from './metrics';
import type { StoreHealth } from './store-health';

/** Told once what was written before it is committed (true) or dropped by a failed commit (false). */
export type CommitWaiter = (ok: boolean) => void;

/** A commit that has not completed (asynchronous stores). */
interface Flight {
  epoch: number;
  /** Readers waiting for this batch's writes. */
  waiters: CommitWaiter[];
  /** performance.now() when its commit started. */
  startedAt: number;
}

export class Commit {
  /** Readers waiting for the writes buffered now (the next batch). */
  private waiters: CommitWaiter[] = [];
  private flight: Flight | null = null;
  /** A store change that no batch may be taken before (afterFlight with an asynchronous change): none while null. */
  private held: Promise<unknown> | null = null;
  /** afterFlight calls waiting for the hold to end. */
  private readonly afterHold: (() => void)[] = [];
  /** A commit was asked for (schedule) and has not run yet. */
  private wanted = false;
  private scheduled = false;
  private readonly onImmediate = (): void => {
    this.scheduled = false;
    if (this.wanted) this.now();
  };
  private readonly landed = (): void => this.land(true, null);
  private readonly crashed = (e: unknown): void => this.land(false, e);

  constructor(
    private readonly store: AsyncStore,
    private readonly engine: Engine,
    private readonly delivery: Delivery,
    private readonly metrics: MetricCounts,
    private readonly logger: Logger,
    private readonly health: StoreHealth,
  ) {}

  /** A commit at the end of this loop turn (or, with a batch in flight, when it lands). */
  schedule(): void {
    this.wanted = true;
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
    this.wanted = true;
    if (this.flight || this.held) return true;
    return this.run();
  }

  /**
   * Calls `fn` once everything written so far is committed (true) or was
   * dropped by a failed commit (false): at once, before returning, when the
   * store commits synchronously. A reader of committed state (a backlog
   * page) waits here for an asynchronous store.
   */
  afterCommit(fn: CommitWaiter): void {
    if (this.held) {
      // Taken as the next batch once the store change has landed.
      this.waiters.push(fn);
      return;
    }
    if (!this.flight) {
      const ok = this.now();
      // now() may have put the batch in flight.
      const started = this.flight as Flight | null;
      if (!started) return fn(ok);
      started.waiters.push(fn);
      return;
    }
    // Writes buffered now go with the next batch; none means the flight has the last ones.
    (this.store.pendingWrites ? this.waiters : this.flight.waiters).push(fn);
  }

  /**
   * Runs `fn` with no batch in flight: now, or as the flight lands
   * (committed or failed), before the batch queued behind it is taken. A
   * store change that must not race the writes of a flight goes here:
   * removeUser, whose delete a copy landing after it would outlive. What is
   * buffered then is still the store's to drop. When `fn` returns a Promise
   * (an asynchronous store's change), no batch is taken until it settles.
   * Resolves to what `fn` resolves to.
   */
  afterFlight<T>(fn: () => Promise<T>): Promise<T> {
    if (!this.flight && !this.held) return this.hold(fn);
    return new Promise<T>((resolve, reject) => {
      // Called as the flight lands or the hold ends, before a batch is taken.
      const start = (): void => void this.hold(fn).then(resolve, reject);
      if (this.flight) this.flight.waiters.push(start);
      else this.afterHold.push(start);
    });
  }

  /** Runs `fn` and takes no batch until what it returns has settled. */
  private hold<T>(fn: () => Promise<T>): Promise<T> {
    let p: Promise<T>;
    try {
      p = fn();
    } catch (e) {
      p = Promise.reject(e);
    }
    const settled = (): void => {
      if (this.held !== held) return;
      this.held = null;
      while (!this.held && this.afterHold.length) this.afterHold.shift()!();
      if (!this.held && (this.wanted || this.store.pendingWrites || this.waiters.length)) this.run();
    };
    // The caller handles fn's rejection; this only ends the hold.
    const held: Promise<void> = p.then(settled, settled);
    this.held = held;
    return p;
  }

  /** Whether nothing written is waiting for a commit. */
  get idle(): boolean {
    return this.flight === null && this.held === null && this.store.pendingWrites === 0;
  }

  private run(): boolean {
    this.wanted = false;
    const epoch = this.engine.commitBegin();
    // Always a fresh array: a waiter woken may wait again, for the next batch.
    const waiters = this.waiters;
    this.waiters = [];
    if (this.store.pendingWrites) {
      const startedAt = performance.now();
      let done: Promise<void> | void;
      try {
        done = this.store.commit();
      } catch (e) {
        this.fail(e, waiters);
        return false;
      }
      if (done) {
        this.flight = { epoch, waiters, startedAt };
        done.then(this.landed, this.crashed);
        return true;
      }
      countCommit(this.metrics, (performance.now() - startedAt) / 1000);
      this.health.ok();
    }
    this.release(epoch, waiters);
    return true;
  }

  /** The flight's commit completed (or failed): release it, then commit the next batch at once. */
  private land(ok: boolean, e: unknown): void {
    const f = this.flight!;
    this.flight = null;
    if (ok) {
      countCommit(this.metrics, (performance.now() - f.startedAt) / 1000);
      this.health.ok();
      this.release(f.epoch, f.waiters);
    } else {
      // The engine drops the next batch's entries with the failed one's
      // (they may follow them in some sender's order), and the store has
      // dropped what was buffered behind the flight.
      const next = this.waiters;
      this.waiters = [];
      this.fail(e, f.waiters);
      this.wake(next, false);
      this.wanted = false;
    }
    if (!this.flight && !this.held && (this.wanted || this.store.pendingWrites)) this.run();
  }

  private release(epoch: number, waiters: CommitWaiter[]): void {
    this.engine.committed(epoch);
    this.delivery.perform();
    this.wake(waiters, true);
  }

  /**
   * Nothing of a failed batch is published or acknowledged. Its senders are
   * disconnected so their clients resend, in order, what never heard "sent"
   * (the engine's batch names them); its receipts go out.
   */
  private fail(e: unknown, waiters: CommitWaiter[]): void {
    this.logger.event('store.error', { op: 'flush', error: errorText(e) });
    // Marked down: every inbox count is read again when it is back.
    this.health.failed(e);
    // The store has dropped the batch (and anything buffered behind it).
    // The engine's inbox counts included those copies: they err high (an
    // inbox may say full early, and is then read again) until the store is
    // back, when StoreHealth has every count read again.
    this.engine.commitFailed();
    this.delivery.perform();
    this.wake(waiters, false);
  }

  private wake(waiters: CommitWaiter[], ok: boolean): void {
    for (const w of waiters) w(ok);
  }
}
