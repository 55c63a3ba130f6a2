/**
 * Delivery to the connections of this node: frames go to a user's topics
 * (one per form, JSON and binary), through the format stage when it has
 * middleware, and a device that stops reading is closed before
 * uWebSockets.js would skip it silently.
 */
import uWS from 'uWebSockets.js';
import type { Logger } from '../log';
import { native } from '../native';
import type { NewMessage } from '../store/types';
import { owe, type Conn, type Connections } from './connections';
import type { MetricCounts } from './metrics';
import { Format, type Middlewares } from './pipeline';
import { OUT_BINARY, OUT_BOTH } from './protocol';
import type { ServerSettings } from './settings';

/** A client that does not read is cut off at this much buffered (uWebSockets.js maxBackpressure). */
export const MAX_BACKPRESSURE = 4 * 1024 * 1024;

/** Copies of a delivery's frames that outlive the core's reused buffer. */
export interface HeldFrames {
  json: Buffer | null;
  binary: Buffer | null;
}

/** Frames for one user, sent later (after a commit, or after the "sent" before them). */
export interface HeldDelivery {
  to: string;
  frames: HeldFrames;
}

export function holdFrames(out: Buffer, frameLen: number, frame2Len: number, outFormat: number): HeldFrames {
  const first = Buffer.from(out.subarray(0, frameLen));
  if (outFormat === OUT_BOTH) return { json: first, binary: Buffer.from(out.subarray(frameLen, frameLen + frame2Len)) };
  return outFormat === OUT_BINARY ? { json: null, binary: first } : { json: first, binary: null };
}

/** The topic a user's devices of one form subscribe to once their backlog is sent. */
export function topic(address: string, binary: boolean): string {
  return binary ? `u/${address}/b` : `u/${address}/j`;
}

/** A stored copy as the frame its recipient reads. */
export function encodeStored(m: NewMessage, binary: boolean): Buffer {
  return native.encodeFrame('msg', { id: m.id, from: m.sender, to: m.groupid ? '' : m.recipient, groupid: m.groupid, refid: m.refid, flags: m.flags, type: m.type, expiry: m.expiry, payload: m.payload }, binary ? 1 : 0);
}

export class Delivery {
  private warnedAsyncFormat = false;

  constructor(
    private readonly app: uWS.TemplatedApp,
    private readonly settings: Pick<ServerSettings, 'maxInboxMessages'>,
    private readonly connections: Connections,
    private readonly middleware: Middlewares,
    private readonly metrics: MetricCounts,
    private readonly logger: Logger,
  ) {}

  /**
   * What the core's `out` holds for one message (`message`) or status, to
   * `to`'s devices in the forms asked for.
   */
  publish(to: string, out: Buffer, frameLen: number, frame2Len: number, outFormat: number, message: boolean): void {
    if (outFormat === OUT_BOTH) {
      this.app.publish(topic(to, false), out.subarray(0, frameLen), false);
      this.app.publish(topic(to, true), out.subarray(frameLen, frameLen + frame2Len), true);
    } else {
      this.app.publish(topic(to, outFormat === OUT_BINARY), out.subarray(0, frameLen), outFormat === OUT_BINARY);
    }
    this.closeSlow(to, message);
  }

  /** A message's frames built earlier, through the format stage when it has middleware. */
  publishHeld(h: HeldDelivery): void {
    if (!this.middleware.format.empty) return this.sendFormatted(h.to, h.frames);
    this.publishFrames(h.to, h.frames, true);
  }

  /**
   * Frames already encoded, to every device of `to` in its form; no format
   * stage (statuses, or format is empty). `message` unless they are a status.
   */
  publishFrames(to: string, frames: HeldFrames, message = false): void {
    if (frames.json) this.app.publish(topic(to, false), frames.json, false);
    if (frames.binary) this.app.publish(topic(to, true), frames.binary, true);
    this.closeSlow(to, message);
  }

  /** A stored copy's frames, in the forms the connected devices read. */
  storedFrames(copy: NewMessage): HeldFrames {
    return { json: this.connections.json ? encodeStored(copy, false) : null, binary: this.connections.binary ? encodeStored(copy, true) : null };
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

  /** The format stage: each connection of `to` whose backlog is done gets its own frame. Synchronous by contract. */
  private sendFormatted(to: string, frames: HeldFrames): void {
    for (const ws of this.connections.of(to)) {
      const c = ws.getUserData();
      if (!c.open || !c.backlogDone) continue;
      const f = c.binary ? frames.binary : frames.json;
      if (!f) continue;
      const out = this.formatFrame(c, to, f);
      if (out) ws.send(out, c.binary);
    }
    this.closeSlow(to, true);
  }

  /** After a publish to `to`; `message` when it was a message, which its readers may answer. */
  private closeSlow(to: string, message: boolean): void {
    // uWebSockets.js skips a subscriber whose backpressure would pass the
    // limit; such a device would silently miss messages. Close it once it is
    // half way there instead: what it missed waits in the store and comes
    // on its next connection.
    for (const ws of this.connections.of(to)) {
      // A message may be answered with a delivered and a read status that
      // the rate limit does not count (Intake.allow); a status is not
      // answered, and a device still sent its backlog did not get this one
      // (the backlog brings it, and owes for it then).
      const c = ws.getUserData();
      if (message && c.backlogDone) owe(c, this.settings.maxInboxMessages);
      if (ws.getBufferedAmount() >= MAX_BACKPRESSURE / 2) {
        // Not end(): a close frame would queue behind what it does not read.
        if (ws.getUserData().open) {
          this.metrics.slowClosed++;
          this.logger.event('conn.slow_closed', { address: to, peer: ws.getUserData().ip, buffered: ws.getBufferedAmount() });
          ws.close();
        }
      }
    }
  }
}
