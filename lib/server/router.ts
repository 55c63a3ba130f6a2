/**
 * Routing: what the core returned for one frame (or a module sent) goes to
 * its recipients. Every per-message decision is the delivery engine's
 * (lib/delivery.ts, cpp/router.cc; docs/delivery.md): a status goes back to
 * its sender (receipts) and confirms a live copy or deletes a stored one; a
 * message is checked (destination, group, inbox) and each recipient's copy
 * is sent now, sent as a live copy, held until the commit, stored, or
 * handed to another node. One N-API call per client frame does the core's
 * submit and the routing; the delivery room performs the batch.
 *
 * What stays here is what the engine hands back: the send and format
 * middleware stages, which run per recipient in JavaScript (the engine then
 * lists the recipients and this room delivers each copy through it), the
 * presence room's record of who talked, and module messages.
 */
import type { Core, Message } from '../core';
import { CommitDue, type Delivery as Engine } from '../delivery';
import type { Logger } from '../log';
import { Info } from '../native';
import type { Conn, WS } from './connections';
import type { Delivery } from './delivery';
import type { Directory } from './directory';
import type { Presence } from './presence';
import type { Stages } from './stages';

/** The sender's "sent", for the per-recipient path: queued behind the commit or written. */
interface Ack {
  ws: WS;
  conn: number;
  frame: Buffer;
  binary: boolean;
}

export class Router {
  /** What the engine was last told about the per-recipient stages. */
  private perRecipient = false;

  constructor(
    private readonly core: Core,
    private readonly engine: Engine,
    private readonly directory: Directory,
    private readonly delivery: Delivery,
    private readonly presence: Presence,
    private readonly stages: Stages,
    private readonly logger: Logger,
  ) {}

  /**
   * One frame from a logged-in connection through the rate limits (unless
   * `admitted` says they were met already), the core and, when the chain
   * decided, routed: the core's verdict (2 deferred: its completion comes to
   * completed()), a negative wire error, or an Admit refusal. The core's info slots
   * describe the frame afterwards, as after Core.submitRaw.
   */
  submit(ws: WS, c: Conn, frame: ArrayBuffer | Uint8Array, admitted: number): number {
    this.syncStages();
    const v = this.engine.submit(c.uid, c.id, frame, undefined, admitted);
    if (v === 0 || v === 1) this.routed(c.address, ws, c.id);
    return v;
  }

  /**
   * A frame from the backend API as `from`: the same path. Returns the
   * verdict, or a negative wire error; `due` says whether copies were
   * stored (CommitDue.Now: the answer waits for their commit).
   */
  submitAs(from: string, frame: Uint8Array): { verdict: number; due: number } {
    this.syncStages();
    const v = this.engine.submit(this.engine.intern(from), -1, frame);
    if (v !== 0 && v !== 1) return { verdict: v, due: CommitDue.None };
    return { verdict: v, due: this.routed(from, null, -1) };
  }

  /**
   * A deferred message was decided: the core's info slots and out buffer
   * describe it. `ws` is the sender's connection if still open. Returns the
   * batch's CommitDue.
   */
  completed(from: string, ws: WS | null, outFormat: number): number {
    this.syncStages();
    const conn = ws ? ws.getUserData().id : -1;
    this.engine.route(this.engine.intern(from), conn, Date.now(), outFormat);
    return this.routed(from, ws, conn);
  }

  /** The status the last submit or completion gave its sender. */
  get status(): number {
    return this.engine.status;
  }

  /** The forms the last submit encoded deliveries in (a deferred message's completion reads them). */
  get submittedFormat(): number {
    return this.engine.submittedFormat;
  }

  /** After the engine routed: per-recipient stages, presence, then the batch. */
  private routed(from: string, ws: WS | null, conn: number): number {
    const e = this.engine;
    if (e.perRecipient) {
      this.perRecipientCopies(from, ws, conn);
      return CommitDue.None;
    }
    if (e.talked && this.presence.tracksMessages) this.presence.messaged(from, this.to(this.core.infoArray()));
    return this.delivery.perform();
  }

  /**
   * A module's mesibo_message, after the rest of the chain passed it: the
   * same delivery rules as a client's message (stored first when durable,
   * live only to devices whose backlog is done).
   */
  moduleMessage(m: Message): void {
    this.syncStages();
    const rc = this.engine.moduleMessage(m.from, m, m.payload, Date.now());
    if (rc < 0) {
      this.logger.event('module.unknown_destination', { id: m.id, to: m.to || undefined, groupid: m.groupid || undefined, outcome: 'dropped' });
      return;
    }
    if (this.engine.perRecipient) {
      this.deliverEach(m, null);
      return;
    }
    this.delivery.perform();
  }

  private syncStages(): void {
    const on = this.stages.perRecipient;
    if (on !== this.perRecipient) {
      this.perRecipient = on;
      this.engine.setPerRecipient(on);
    }
  }

  private to(info: Float64Array): string {
    const toAt = info[Info.FrameLen] + info[Info.Frame2Len] + info[Info.PayloadLen];
    return info[Info.ToLen] ? this.core.outBuffer().toString('utf8', toAt, toAt + info[Info.ToLen]) : '';
  }

  /**
   * The engine checked the message (destination, group, inbox) and left
   * the copies to the send and format stages: each copy is built, stored
   * and sent on its own; the sender's "sent" follows the last one.
   */
  private perRecipientCopies(from: string, ws: WS | null, conn: number): void {
    const info = this.core.infoArray();
    const out = this.core.outBuffer();
    const payloadAt = info[Info.FrameLen] + info[Info.Frame2Len];
    const toAt = payloadAt + info[Info.PayloadLen];
    const ackAt = toAt + info[Info.ToLen];
    const m: Message = {
      from, to: this.to(info), id: info[Info.Id], refid: info[Info.Refid], groupid: info[Info.Groupid], flags: info[Info.Flags],
      type: info[Info.Type], expiry: info[Info.Expiry], payload: Buffer.from(out.subarray(payloadAt, toAt)),
    };
    const ack = ws && conn >= 0 ? { ws, conn, frame: Buffer.from(out.subarray(ackAt, ackAt + info[Info.AckLen])), binary: info[Info.Format] === 1 } : null;
    this.deliverEach(m, ack);
  }

  /**
   * The send stage per recipient (in order per recipient), then storage and
   * delivery of that recipient's copy; `ack` goes to the sender after the
   * last copy (after the commit when a copy was stored).
   */
  private deliverEach(m: Message, ack: Ack | null): void {
    const from = m.from;
    const recipients = this.directory.recipients(m.to, m.groupid) ?? [];
    const targets = recipients.filter((r) => !(r === from && m.groupid));
    let remaining = targets.length;
    let stored = false;
    const category = this.stages.category(from, m.id, m.to, m.groupid);
    const one = (): void => {
      if (--remaining > 0) return;
      this.stages.forget(from, m.id);
      // A stored copy asked for the commit itself (its batch's CommitDue).
      if (!ack) return;
      if (stored) {
        this.engine.queueAck(ack.conn, ack.frame, ack.binary);
        this.delivery.perform();
      } else if (ack.ws.getUserData().open) {
        this.delivery.send(ack.conn, ack.frame, ack.binary);
      }
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

  /** One recipient's copy after the send stage, through the engine. Returns whether it was stored. */
  private deliverCopy(r: string, m: Message): boolean {
    const e = this.engine;
    const stored = e.deliverCopy(e.intern(r), e.intern(m.from), m, m.payload, Date.now());
    this.delivery.perform();
    return stored;
  }
}
