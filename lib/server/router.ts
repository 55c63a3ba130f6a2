/**
 * Routing: what the core returned for one frame (or a module sent) goes to
 * its recipients. A status goes back to its sender (receipts) and confirms
 * a live copy or deletes a stored one; a message is checked (destination,
 * group, inbox) and each recipient's copy is placed: sent now, sent as a
 * live copy, held until the commit, stored, or several of these.
 *
 * The per-recipient decision is made in one place, Placement, so that a
 * router in the core or a cluster (which adds "hand it to the node the
 * recipient is on") can replace it without touching what acts on it.
 */
import type { Core, Message } from '../core';
import { SwitchboardError } from '../errors';
import type { Logger } from '../log';
import { Info } from '../native';
import type { NewMessage, Store } from '../store/types';
import type { Commit, Ack } from './commit';
import type { Connections, WS } from './connections';
import { holdFrames, type Delivery, type HeldFrames } from './delivery';
import type { Directory } from './directory';
import type { Inboxes } from './inbox';
import type { LimitStats } from './limits';
import type { LiveAck, LiveCopies, LiveMessage } from './live';
import type { MetricCounts } from './metrics';
import type { Presence } from './presence';
import { FLAG_RECEIPTS, FLAG_TRANSIENT, OP_STATUS, Status } from './protocol';
import type { Receipts } from './receipts';
import type { ServerSettings } from './settings';
import type { Stages } from './stages';

/** Where one recipient's copy goes: bits of what Placement.place returns. */
export const enum Place {
  /** Sent now to the recipient's connections on this node. */
  Now = 1,
  /** Sent now and kept as a live copy: the sender's "sent" waits for its confirmation (LiveCopies). */
  Live = 2,
  /** Sent to the recipient's connections after this turn's commit (Commit.hold). */
  Held = 4,
  /** Written to the store, for the backlog (and for safety when durable). */
  Store = 8,
}

/** The per-recipient decision: where a copy goes, and whether it may end up in the store. */
export interface Placement {
  /** Whether `r` has a connection a copy can be sent to now (a transient message goes only to such). */
  online(r: string): boolean;
  /** Whether a copy for `r` may end up in the store, and so counts against its inbox. */
  mayStore(r: string, flags: number): boolean;
  /** Place bits for a copy to `r`; `live` when the message may be sent as a live copy. */
  place(r: string, flags: number, live: boolean): number;
}

/** The placement of a single node: recipients are on this node or offline. */
export class LocalPlacement implements Placement {
  constructor(
    private readonly settings: ServerSettings,
    private readonly connections: Connections,
    private readonly commit: Commit,
  ) {}

  online(r: string): boolean {
    return this.connections.has(r);
  }

  mayStore(r: string, flags: number): boolean {
    if (flags & FLAG_TRANSIENT) return false;
    return this.settings.durable || !this.connections.has(r) || this.connections.pumpingTo(r);
  }

  place(r: string, flags: number, live: boolean): number {
    const online = this.connections.has(r);
    const transient = (flags & FLAG_TRANSIENT) !== 0;
    const durable = this.settings.durable;
    // A device still sent its backlog is not subscribed yet: a copy for it
    // must be stored, and a live one would overtake the backlog (as it would
    // a held copy).
    if (online && live && !this.connections.pumpingTo(r) && !this.commit.holds(r)) return Place.Live;
    let place = 0;
    // With durability on, a recipient sees a message only once it is in
    // the store (a copy published before the commit could be lost with
    // a killed process, and its resend would then arrive after later
    // messages, out of the sender's order).
    if (online) place = durable && !transient ? Place.Held : Place.Now;
    if (!(transient || (online && !durable && !this.connections.pumpingTo(r)))) place |= Place.Store;
    return place;
  }
}

export class Router {
  constructor(
    private readonly settings: ServerSettings,
    private readonly core: Core,
    private readonly store: Store,
    private readonly directory: Directory,
    private readonly placement: Placement,
    private readonly delivery: Delivery,
    private readonly commit: Commit,
    private readonly live: LiveCopies,
    private readonly receipts: Receipts,
    private readonly inboxes: Inboxes,
    private readonly presence: Presence,
    private readonly stages: Stages,
    private readonly stats: LimitStats,
    private readonly metrics: MetricCounts,
    private readonly logger: Logger,
  ) {}

  /**
   * Routes what the core returned for one frame from `from`. `ws` is the
   * sender's connection (null for the backend API). Returns the status the
   * sender gets.
   */
  route(from: string, verdict: number, outFormat: number, ws: WS | null): number {
    const info = this.core.infoArray();
    const out = this.core.outBuffer();
    if (info[Info.Op] === OP_STATUS) return this.status(from, outFormat, ws, info, out);
    return this.message(from, verdict, outFormat, ws, info, out);
  }

  /** A recipient's receipt (delivered, read) for `to`'s message. */
  private status(from: string, outFormat: number, ws: WS | null, info: Float64Array, out: Buffer): number {
    const frameLen = info[Info.FrameLen];
    const frame2Len = info[Info.Frame2Len];
    const toAt = frameLen + frame2Len + info[Info.PayloadLen];
    const to = info[Info.ToLen] ? out.toString('utf8', toAt, toAt + info[Info.ToLen]) : '';
    const id = info[Info.Id];
    const status = info[Info.Status];
    this.metrics.statuses[status & 255]++;
    const confirms = status === Status.DELIVERED || status === Status.READ;
    // Built only when a map may hold it.
    const key = this.live.active || this.receipts.active ? `${to}\0${from}\0${id}` : '';
    // A live copy confirmed: nothing was stored, nothing to delete. Its
    // "sent" goes before the receipt.
    const wasLive = confirms && this.live.confirm(key);
    // Any confirmation shows the device is reading (LiveCopies.expire), also
    // one for a stored copy: an overloaded server may have stored the copies
    // it now reads confirmations for, and must not take the device for a
    // silent one and store its next copies too.
    if (ws && confirms && this.settings.durable) ws.getUserData().confirmedAt = Date.now();
    const receiptGid = this.receipts.due(key, status);
    if (receiptGid >= 0) {
      const frames = receiptGid ? this.receipts.groupFrames(id, status, from, to, receiptGid, outFormat) : null;
      // Statuses reach the sender in the order sent, delivered, read: a
      // "sent" still waiting in the commit (a live copy confirmed in this
      // turn, a commit not yet done) goes first, so the receipt waits
      // behind it, as any receipt queued before it does.
      if (wasLive || this.commit.acksWaiting) this.commit.receiptAfterAcks(to, frames ?? holdFrames(out, frameLen, frame2Len, outFormat));
      else if (frames) this.delivery.publishFrames(to, frames);
      else this.delivery.publish(to, out, frameLen, frame2Len, outFormat, false);
    }
    // With durability off only messages for offline users are stored: a
    // receipt for anything else has no copy to delete. The inbox count goes
    // down when the store reports a copy deleted (Inboxes), not here: a
    // transient message was never stored.
    if (!wasLive && status === Status.DELIVERED && (this.settings.durable || ws?.getUserData().stored?.delete(`${to}\0${id}`))) {
      this.store.ack(from, to, id);
      this.commit.schedule();
    }
    return status;
  }

  /** A message that went through the chain: checked, then placed per recipient. */
  private message(from: string, verdict: number, outFormat: number, ws: WS | null, info: Float64Array, out: Buffer): number {
    const frameLen = info[Info.FrameLen];
    const frame2Len = info[Info.Frame2Len];
    const payloadAt = frameLen + frame2Len;
    const toAt = payloadAt + info[Info.PayloadLen];
    const ackAt = toAt + info[Info.ToLen];
    const to = info[Info.ToLen] ? out.toString('utf8', toAt, ackAt) : '';
    const id = info[Info.Id];
    const senderBinary = info[Info.Format] === 1;
    const gid = info[Info.Groupid];
    const flags = info[Info.Flags];
    let status: number = Status.SENT;
    let stored = false;
    let liveAck: LiveAck | null = null;
    if (verdict !== 0) this.metrics.receivedConsumed++;
    else {
      const recipients = this.directory.recipients(to, gid);
      if (!recipients) status = Status.INVALIDDEST;
      else if (gid && !recipients.includes(from)) status = Status.BLOCKED;
      else if (flags & FLAG_TRANSIENT && !gid && !this.placement.online(to)) status = Status.NOTACTIVE;
      else if (!gid && this.placement.mayStore(to, flags) && this.inboxes.full(to, info[Info.PayloadLen], Date.now())) {
        this.stats.inboxFull++;
        status = Status.INBOXFULL;
      } else if (this.stages.perRecipient) {
        // Per-recipient middleware: each copy is built, stored and sent on
        // its own; the sender's "sent" follows the last one.
        const m: Message = {
          from, to, id, refid: info[Info.Refid], groupid: gid, flags, type: info[Info.Type], expiry: info[Info.Expiry],
          payload: Buffer.from(out.subarray(payloadAt, toAt)),
        };
        const ack = ws ? { ws, frame: copyAck(out, ackAt, info[Info.AckLen]), binary: senderBinary } : null;
        this.metrics.receivedPass++;
        this.deliverEach(m, recipients, ack);
        return status;
      } else {
        let payload: Buffer | null = null;
        let held: HeldFrames | null = null;
        const expiry = info[Info.Expiry];
        // Live copies need a sender to answer and a grace to wait in.
        const live = this.settings.durable && (flags & FLAG_TRANSIENT) === 0 && ws !== null && this.settings.durableGrace > 0;
        const now = Date.now();
        let liveBase: LiveMessage | null = null;
        if (this.presence.tracksMessages && !gid) this.presence.messaged(from, to);
        for (const r of recipients) {
          if (r === from && gid) continue;
          // A member whose inbox is full misses a group message; the sender
          // still hears "sent" for the others (a 1:1 message was refused above).
          if (gid && this.placement.mayStore(r, flags) && this.inboxes.full(r, info[Info.PayloadLen], now)) {
            this.stats.inboxFull++;
            continue;
          }
          const place = this.placement.place(r, flags, live);
          // A copy neither sent nor stored (transient, recipient offline)
          // is never answered: its flags would only wait to be evicted.
          if (flags & FLAG_RECEIPTS && place) this.receipts.track(from, r, id, flags, gid);
          if (place & Place.Live) {
            this.delivery.publish(r, out, frameLen, frame2Len, outFormat, true);
            this.metrics.delivered++;
            payload ??= Buffer.from(out.subarray(payloadAt, toAt));
            liveAck ??= { ws: ws!, frame: copyAck(out, ackAt, info[Info.AckLen]), binary: senderBinary, left: 0 };
            liveBase ??= {
              sender: from, id, refid: info[Info.Refid], groupid: gid, flags, type: info[Info.Type], expiry,
              expiresAt: expiry ? now + expiry * 1000 : 0, payload,
            };
            this.live.add(liveAck, r, liveBase, now);
            continue;
          }
          if (place & Place.Now) {
            this.metrics.delivered++;
            this.delivery.publish(r, out, frameLen, frame2Len, outFormat, true);
          } else if (place & Place.Held) {
            this.metrics.delivered++;
            held ??= holdFrames(out, frameLen, frame2Len, outFormat);
            this.commit.hold({ to: r, frames: held });
          }
          if (!(place & Place.Store)) continue;
          payload ??= Buffer.from(out.subarray(payloadAt, toAt));
          this.store.enqueue({
            recipient: r, sender: from, id, refid: info[Info.Refid], groupid: gid, flags, type: info[Info.Type], expiry,
            expiresAt: expiry ? now + expiry * 1000 : 0, payload,
          });
          this.inboxes.added(r, payload.length);
          this.metrics.copiesStored++;
          stored = true;
        }
      }
      if (status === Status.SENT) this.metrics.receivedPass++;
      else this.metrics.receivedFailed++;
    }
    if (!ws) {
      // The backend API answers after the commit: a synchronous store has
      // committed here; with an asynchronous one the intake room waits for
      // the batch that holds these copies (docs/store.md).
      if (stored && !this.commit.now()) throw new SwitchboardError('E_STORE_WRITE', 'The store could not commit this message; nothing of it was kept. Send it again.');
      return status;
    }
    if (status !== Status.SENT) {
      const f = this.core.statusFrame({ id, status, from: to, to: from, groupid: gid }, senderBinary ? 'binary' : 'json');
      ws.send(f, senderBinary);
    } else if (liveAck) {
      // "Sent" when the last live copy is confirmed or stored (LiveCopies),
      // with the acks of that turn, after its commit: so also after the
      // commit of any copy stored here.
    } else if (stored) {
      // "Sent" means durable: the ack waits for this turn's group commit.
      this.commit.ack({ ws, frame: copyAck(out, ackAt, info[Info.AckLen]), binary: senderBinary });
    } else {
      ws.send(out.subarray(ackAt, ackAt + info[Info.AckLen]), senderBinary);
    }
    return status;
  }

  /**
   * A module's mesibo_message, after the rest of the chain passed it: the
   * same delivery rules as a client's message (stored first when durable,
   * live only to devices whose backlog is done).
   */
  moduleMessage(m: Message): void {
    const recipients = this.directory.recipients(m.to, m.groupid);
    if (!recipients) {
      this.logger.event('module.unknown_destination', { id: m.id, to: m.to || undefined, groupid: m.groupid || undefined, outcome: 'dropped' });
      return;
    }
    if (this.stages.perRecipient) {
      this.deliverEach(m, recipients, null);
      return;
    }
    // Every recipient gets the same copy: its frames are encoded once.
    const shared: { frames: HeldFrames | null } = { frames: null };
    for (const r of recipients) if (!(r === m.from && m.groupid)) this.deliverCopy(r, m, shared);
    this.commit.schedule();
  }

  /**
   * The send stage per recipient (in order per recipient), then storage and
   * delivery of that recipient's copy; `ack` goes to the sender after the
   * last copy (after the commit when a copy was stored).
   */
  private deliverEach(m: Message, recipients: string[], ack: Ack | null): void {
    const from = m.from;
    const targets = recipients.filter((r) => !(r === from && m.groupid));
    let remaining = targets.length;
    let stored = false;
    const category = this.stages.category(from, m.id, m.to, m.groupid);
    const one = () => {
      if (--remaining > 0) return;
      this.stages.forget(from, m.id);
      if (!ack) {
        if (stored) this.commit.schedule();
        return;
      }
      if (stored) this.commit.ack(ack);
      else if (ack.ws.getUserData().open) ack.ws.send(ack.frame, ack.binary);
    };
    if (!remaining) {
      remaining = 1;
      one();
      return;
    }
    for (const r of targets) {
      this.stages.runSend(m, r, category, (copy, ok) => {
        if (ok && this.deliverCopy(r, copy)) stored = true;
        one();
      });
    }
  }

  /**
   * Stores (as the placement says) and sends one recipient's copy of a
   * message that did not come from a client frame (a module's, or one the
   * send stage saw). `shared` carries the encoded frames to the next
   * recipient when the copies are the same. Returns whether it was stored.
   */
  private deliverCopy(r: string, m: Message, shared: { frames: HeldFrames | null } = { frames: null }): boolean {
    const copy: NewMessage = {
      recipient: r, sender: m.from, id: m.id, refid: m.refid, groupid: m.groupid, flags: m.flags, type: m.type,
      expiry: m.expiry, expiresAt: m.expiry ? Date.now() + m.expiry * 1000 : 0, payload: m.payload,
    };
    if (this.placement.mayStore(r, m.flags) && this.inboxes.full(r, m.payload.length, Date.now())) {
      this.stats.inboxFull++;
      return false;
    }
    const place = this.placement.place(r, m.flags, false);
    if (place & (Place.Now | Place.Held)) {
      this.metrics.delivered++;
      const frames = (shared.frames ??= this.delivery.storedFrames(copy));
      if (place & Place.Held) this.commit.hold({ to: r, frames });
      else this.delivery.publishHeld({ to: r, frames });
    }
    if (m.flags & FLAG_RECEIPTS && place) this.receipts.track(m.from, r, m.id, m.flags, m.groupid);
    if (!(place & Place.Store)) return false;
    this.store.enqueue(copy);
    this.metrics.copiesStored++;
    this.inboxes.added(r, copy.payload.length);
    return true;
  }
}

/** The sender's "sent" frame, copied out of the core's reused buffer to be sent later. */
function copyAck(out: Buffer, ackAt: number, ackLen: number): Buffer {
  return Buffer.from(out.subarray(ackAt, ackAt + ackLen));
}
