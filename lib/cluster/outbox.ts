/**
 * What the bus has accepted and not yet handed to NATS: this loop turn's
 * batches (one per subject, items in the order published) and, while NATS is
 * unreachable, the frames waiting for it (docs/cluster.md#during-a-nats-outage).
 *
 * The nats client cannot hold them itself: it empties its write buffer at
 * every reconnect attempt, so what it was given while disconnected is gone
 * without a word. The outbox gives NATS a frame only while the bus says it
 * flows, keeps the rest in order, and refuses (E_CLUSTER_BUFFER_FULL) what
 * would take it past its byte limit, so the caller knows the copy was not
 * handed over and keeps it elsewhere.
 */
import { SwitchboardError } from '../errors';
import { FRAME_VERSION, frameOverhead, type FrameKind } from './frame';

/** A frame being written: the header, then each item as it is added (a copy, so the caller may reuse its buffer). */
interface Batch {
  kind: FrameKind;
  buf: Uint8Array;
  view: DataView;
  bytes: number;
  count: number;
}

interface Ready {
  subject: string;
  data: Uint8Array;
  items: number;
}

export interface OutboxOptions {
  /** Bytes held at most while NATS is unreachable (frames and their headers). */
  limit: number;
  /** A batch is cut at this many bytes (at most NATS's max_payload). */
  maxBatch: number;
}

export class Outbox {
  private readonly open = new Map<string, Batch>();
  private ready: Ready[] = [];
  private readyHead = 0;
  /** Bytes in open batches and ready frames. */
  private bytes = 0;
  private scheduled = false;
  private flowingNow = false;
  private maxPayload: number;

  /**
   * `send` hands one frame to NATS and says whether it took it; on false the
   * frame and those after it stay, in order, for the next flush.
   */
  constructor(
    private readonly origin: Uint8Array,
    private readonly opts: OutboxOptions,
    private readonly send: (subject: string, data: Uint8Array) => boolean,
  ) {
    this.maxPayload = opts.maxBatch;
  }

  /** Whether frames go to NATS as they are made (else they wait here). */
  get flowing(): boolean {
    return this.flowingNow;
  }

  /** Bytes accepted and not yet handed to NATS. */
  get heldBytes(): number {
    return this.bytes;
  }

  /** NATS's max_payload, from the server's greeting: no frame may be larger. */
  setMaxPayload(n: number): void {
    this.maxPayload = n;
  }

  /**
   * Accepts one item for `subject`. Throws E_CLUSTER_TOO_LARGE for an item no
   * frame can carry, and E_CLUSTER_BUFFER_FULL while NATS is unreachable and
   * the item would take the held bytes past the limit: the item is then not
   * taken, and nothing taken before it is lost.
   */
  add(subject: string, kind: FrameKind, item: Uint8Array): void {
    const single = frameOverhead(this.origin.length, 1) + item.length;
    if (single > this.maxPayload) {
      throw new SwitchboardError('E_CLUSTER_TOO_LARGE', `a ${item.length}-byte item does not fit in one NATS message (max_payload ${this.maxPayload} bytes, with the frame header)`);
    }
    let b = this.open.get(subject);
    const full = b !== undefined && (b.kind !== kind || b.bytes + 4 + item.length > Math.min(this.opts.maxBatch, this.maxPayload));
    const cost = 4 + item.length + (b && !full ? 0 : frameOverhead(this.origin.length, 0));
    if (!this.flowingNow && this.bytes + cost > this.opts.limit) {
      throw new SwitchboardError('E_CLUSTER_BUFFER_FULL', `NATS is unreachable and the cluster bus holds ${this.bytes} bytes already (limit ${this.opts.limit}): this item was not sent`);
    }
    if (b && full) {
      this.close(subject, b);
      b = undefined;
    }
    if (!b) {
      b = this.start(kind, 4 + item.length);
      this.open.set(subject, b);
      this.bytes += b.bytes;
    }
    if (b.bytes + 4 + item.length > b.buf.length) this.grow(b, b.bytes + 4 + item.length);
    b.view.setUint32(b.bytes, item.length);
    b.buf.set(item, b.bytes + 4);
    b.bytes += 4 + item.length;
    b.count++;
    this.bytes += 4 + item.length;
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(this.flushNow);
    }
  }

  /** Closes this turn's batches and, while flowing, hands everything ready to NATS in order. */
  flush(): void {
    for (const [subject, b] of this.open) this.close(subject, b);
    if (!this.flowingNow) return;
    while (this.readyHead < this.ready.length) {
      const r = this.ready[this.readyHead];
      if (!this.send(r.subject, r.data)) break;
      this.ready[this.readyHead++] = undefined as unknown as Ready;
      this.bytes -= r.data.length;
    }
    if (this.readyHead === this.ready.length) {
      this.ready = [];
      this.readyHead = 0;
    }
  }

  /** NATS is reachable and every peer is back: send what waited, then send as made. */
  resume(): void {
    this.flowingNow = true;
    this.flush();
  }

  /** NATS is unreachable: keep what is made. */
  pause(): void {
    this.flowingNow = false;
  }

  /** The bus closes: forgets what is still held; returns how many items that was. */
  drop(): number {
    for (const [subject, b] of this.open) this.close(subject, b);
    let items = 0;
    for (let i = this.readyHead; i < this.ready.length; i++) items += this.ready[i].items;
    this.ready = [];
    this.readyHead = 0;
    this.bytes = 0;
    return items;
  }

  private readonly flushNow = (): void => {
    this.scheduled = false;
    this.flush();
  };

  private start(kind: FrameKind, first: number): Batch {
    const header = frameOverhead(this.origin.length, 0);
    const buf = new Uint8Array(Math.max(1024, header + first));
    const b = { kind, buf, view: new DataView(buf.buffer), bytes: header, count: 0 };
    buf[0] = FRAME_VERSION;
    buf[1] = kind;
    buf[2] = this.origin.length;
    buf.set(this.origin, 3);
    return b;
  }

  private grow(b: Batch, need: number): void {
    const buf = new Uint8Array(Math.max(need, b.buf.length * 2));
    buf.set(b.buf.subarray(0, b.bytes));
    b.buf = buf;
    b.view = new DataView(buf.buffer);
  }

  private close(subject: string, b: Batch): void {
    this.open.delete(subject);
    b.view.setUint32(3 + this.origin.length, b.count);
    // A frame that waits for NATS keeps only its own bytes, not the batch's spare room.
    this.ready.push({ subject, data: this.flowingNow ? b.buf.subarray(0, b.bytes) : b.buf.slice(0, b.bytes), items: b.count });
  }
}
