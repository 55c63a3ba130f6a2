/**
 * The group commit (durable on): what routing stores in one loop turn is
 * committed together, and only then is anything that depends on it
 * released: the senders' "sent" statuses, the deliveries held until their
 * copy was stored, and the receipts queued behind those "sent"s.
 *
 * Routing only queues (hold, ack, receiptAfterAcks) and asks for a commit
 * (schedule); the commit runs at the end of the turn as two steps, commit
 * then release. A store whose commit is asynchronous (PostgreSQL) changes
 * only commit(): take the queues, write, and release them when the write
 * completes; `holds()` must then keep answering for a recipient until its
 * held deliveries are released, which is why heldTo is cleared by release.
 */
import { errorText, type Logger } from '../log';
import type { Store } from '../store/types';
import type { WS } from './connections';
import type { Delivery, HeldDelivery, HeldFrames } from './delivery';
import { countCommit, type MetricCounts } from './metrics';

/** A status frame for a sender (its "sent"), sent when released. */
export interface Ack {
  ws: WS;
  frame: Buffer;
  binary: boolean;
}

export class Commit {
  private acks: Ack[] = [];
  /** Deliveries waiting for this turn's commit. */
  private held: HeldDelivery[] = [];
  /** Recipients in `held`: a live copy to them would overtake the held one. */
  private readonly heldTo = new Set<string>();
  /** Receipts for confirmed live copies: they go out after the acks, so "sent" comes first. */
  private receipts: HeldDelivery[] = [];
  private scheduled = false;

  constructor(
    private readonly store: Store,
    private readonly delivery: Delivery,
    private readonly metrics: MetricCounts,
    private readonly logger: Logger,
  ) {}

  /** A delivery to `to` that goes out once its stored copy is committed. */
  hold(held: HeldDelivery): void {
    this.held.push(held);
    this.heldTo.add(held.to);
  }

  /** Whether a delivery to `to` waits for the commit (a copy sent now would overtake it). */
  holds(to: string): boolean {
    return this.heldTo.size !== 0 && this.heldTo.has(to);
  }

  /** A sender's "sent", released after this turn's commit. */
  ack(a: Ack): void {
    this.acks.push(a);
    this.schedule();
  }

  /** Whether a "sent" or a receipt behind one waits: a receipt now must queue behind them. */
  get acksWaiting(): boolean {
    return this.acks.length !== 0 || this.receipts.length !== 0;
  }

  /** A receipt that must not overtake the "sent"s waiting now. */
  receiptAfterAcks(to: string, frames: HeldFrames): void {
    this.receipts.push({ to, frames });
    this.schedule();
  }

  /** A commit at the end of this loop turn. */
  schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => this.now());
  }

  /**
   * Commits now, then releases what waited. Also called out of turn where
   * the store must hold this turn's copies before it is read (a backlog page,
   * a backend API send).
   */
  now(): void {
    this.scheduled = false;
    this.commit();
    this.release();
  }

  private commit(): void {
    if (!this.store.pendingWrites) return;
    try {
      const t0 = performance.now();
      this.store.flush();
      countCommit(this.metrics, (performance.now() - t0) / 1000);
    } catch (e) {
      // Nothing held is released and no "sent" goes out: senders resend.
      this.logger.event('store.error', { op: 'flush', error: errorText(e) });
      throw e;
    }
  }

  private release(): void {
    const held = this.held;
    if (held.length) {
      this.held = [];
      this.heldTo.clear();
      for (const h of held) this.delivery.publishHeld(h);
    }
    const acks = this.acks;
    if (acks.length) {
      this.acks = [];
      sendAcks(acks);
    }
    const receipts = this.receipts;
    if (receipts.length) {
      this.receipts = [];
      for (const r of receipts) this.delivery.publishFrames(r.to, r.frames);
    }
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
