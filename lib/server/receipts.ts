/**
 * Receipts: a recipient's "delivered" or "read" goes back to the sender only
 * when the message's flags asked for it. The flags of messages that want
 * receipts are kept in memory from routing (and, at start-up, from the
 * store) until the receipt has gone back, keyed `sender\0recipient\0id`.
 */
import { native } from '../native';
import type { Store } from '../store/types';
import type { HeldFrames } from './delivery';
import { FLAG_READ_RECEIPT, FLAG_RECEIPTS, FLAG_DELIVERY_RECEIPT, OUT_BINARY, OUT_JSON, Status } from './protocol';

/** Receipt flags remembered for messages still in flight, so a receipt goes back only when asked for. */
const MAX_TRACKED_RECEIPTS = 1_000_000;

export class Receipts {
  private readonly flags = new Map<string, number>();

  constructor(store: Store) {
    for (const r of store.receiptFlagsPending(FLAG_RECEIPTS)) this.track(r.sender, r.recipient, r.id, r.flags, r.groupid);
  }

  /** Whether any message waits for a receipt (else a status needs no key). */
  get active(): boolean {
    return this.flags.size !== 0;
  }

  /** Remembers the receipt flags of a message and its group, packed in one number (gid × 4 + flags): no object per message. */
  track(sender: string, recipient: string, id: number, flags: number, gid: number): void {
    if (this.flags.size >= MAX_TRACKED_RECEIPTS) {
      const oldest = this.flags.keys().next().value;
      if (oldest !== undefined) this.flags.delete(oldest);
    }
    this.flags.set(`${sender}\0${recipient}\0${id}`, gid * 4 + (flags & FLAG_RECEIPTS));
  }

  /**
   * Whether the receipt `status` for the message `key` goes back to its
   * sender. Returns the message's gid (0 for a 1:1 message) when it does,
   * -1 when not.
   */
  due(key: string, status: number): number {
    if (this.flags.size === 0) return -1;
    const packed = this.flags.get(key);
    if (!packed) return -1;
    const flags = packed & 3;
    if (status === Status.READ || !(flags & FLAG_READ_RECEIPT)) this.flags.delete(key);
    const wanted = status === Status.READ ? (flags & FLAG_READ_RECEIPT) !== 0 : (flags & FLAG_DELIVERY_RECEIPT) !== 0;
    return wanted ? Math.floor(packed / 4) : -1;
  }

  /**
   * `from`'s receipt for `to`'s group message, in the forms `to`'s devices
   * read (the core's frame does not know the group). Only encoded: the
   * status hooks ran once for this status when the core took it.
   */
  groupFrames(id: number, status: number, from: string, to: string, gid: number, outFormat: number): HeldFrames {
    const f = { id, status, from, to, groupid: gid };
    return {
      json: outFormat !== OUT_BINARY ? native.encodeFrame('status', f, 0) : null,
      binary: outFormat !== OUT_JSON ? native.encodeFrame('status', f, 1) : null,
    };
  }
}
