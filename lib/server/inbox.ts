/**
 * The per-recipient inbox limit (`max_inbox_messages`, `max_inbox_bytes`):
 * how much may wait in the store for one user. A copy that would take the
 * recipient over either limit is refused, and a 1:1 sender hears status
 * 0x82 (inbox full) instead of "sent".
 *
 * The counts are kept in memory so the check costs a map lookup per copy:
 * read from the store the first time a recipient is seen, then moved by
 * every store write the server makes. An acknowledgement does not say how
 * large the deleted copy was, so it takes off the average size, and a
 * resend that the store drops as a duplicate was counted: the count drifts.
 * It is read again from the store whenever it says "full" (at most once a
 * second per recipient), so drift can only delay a refusal, never cause a
 * wrong one for long.
 */
import type { Store } from '../store/types';
import type { ServerSettings } from './settings';

interface Count {
  messages: number;
  bytes: number;
  /** ms time the count was last read from the store. */
  readAt: number;
}

const REREAD_MS = 1000;

export class Inboxes {
  private readonly counts = new Map<string, Count>();

  /** `limits` is read at each check, so a config reload that changes it applies to the next copy. */
  constructor(
    private readonly store: Store,
    private readonly limits: Pick<ServerSettings, 'maxInboxMessages' | 'maxInboxBytes'>,
    /** Commits what is buffered (Commit.now), so the store's counts include it. */
    private readonly commitNow: () => void,
  ) {
    // Only the store knows whether an acknowledgement deleted a copy (a
    // transient message's never does). Not undone: the server closes the
    // store with itself.
    store.onCopyDeleted((recipient) => this.removed(recipient));
  }

  private count(recipient: string, now: number): Count {
    let c = this.counts.get(recipient);
    if (!c) {
      const q = this.store.queued(recipient);
      c = { messages: q.messages, bytes: q.bytes, readAt: now };
      this.counts.set(recipient, c);
    }
    return c;
  }

  /** Whether one more copy of `bytes` payload bytes would take the recipient over a limit. */
  full(recipient: string, bytes: number, now: number): boolean {
    const { maxInboxMessages: maxMessages, maxInboxBytes: maxBytes } = this.limits;
    let c = this.count(recipient, now);
    if (c.messages + 1 <= maxMessages && c.bytes + bytes <= maxBytes) return false;
    if (now - c.readAt < REREAD_MS) return true;
    // The store counts committed copies only: commit this turn's first (the
    // group commit would a moment later), or they would be missed. (With a
    // batch in flight, its copies are missed until it lands: the count errs
    // low for a moment, never high.)
    if (this.store.pendingWrites) this.commitNow();
    this.counts.delete(recipient);
    c = this.count(recipient, now);
    return c.messages + 1 > maxMessages || c.bytes + bytes > maxBytes;
  }

  /** A copy was written (or buffered to be) for the recipient. */
  added(recipient: string, bytes: number): void {
    const c = this.counts.get(recipient);
    if (!c) return; // read from the store, with this copy, when first needed
    c.messages++;
    c.bytes += bytes;
  }

  /** The store deleted a copy for the recipient (Store.onCopyDeleted). */
  removed(recipient: string): void {
    const c = this.counts.get(recipient);
    if (!c || c.messages === 0) return;
    const avg = c.bytes / c.messages;
    c.messages--;
    c.bytes = c.messages === 0 ? 0 : Math.max(0, c.bytes - avg);
  }

  /** Forget a recipient (removed user, expired copies purged): read again when next needed. */
  forget(recipient?: string): void {
    if (recipient === undefined) this.counts.clear();
    else this.counts.delete(recipient);
  }
}
