/**
 * The message writes a store buffers until its next commit (docs/store.md,
 * "Store contract"), shared by the SQLite and PostgreSQL engines: enqueues
 * and acks in the order made, an ack cancelling a copy still buffered (and
 * reporting it deleted), a removed user's copies dropped, and the listeners
 * told of each copy deleted. The engine commits `entries` (null entries
 * were cancelled) and reports what its commit deleted through copyDeleted.
 */
import type { NewMessage } from './types';

/** A buffered write; null once cancelled by an ack or a removeUser. */
export type Write = { kind: 'enqueue'; m: NewMessage } | { kind: 'ack'; recipient: string; sender: string; id: number } | null;

/** Names one copy without ambiguity whatever characters the addresses hold. */
function copyKey(recipient: string, sender: string, id: number): string {
  return `${recipient.length}:${recipient}${sender.length}:${sender}${id}`;
}

export class WriteBuffer {
  private writes: Write[] = [];
  private live = 0;
  /** Buffered enqueues by copyKey, so an ack can cancel them. */
  private readonly enqueued = new Map<string, number[]>();
  private readonly listeners = new Set<(recipient: string) => void>();

  /** Writes buffered and not cancelled. */
  get size(): number {
    return this.live;
  }

  /** The buffer in the order written, cancelled writes as null; valid until the next change. */
  get entries(): readonly Write[] {
    return this.writes;
  }

  enqueue(m: NewMessage): void {
    const key = copyKey(m.recipient, m.sender, m.id);
    const at = this.enqueued.get(key);
    if (at) at.push(this.writes.length);
    else this.enqueued.set(key, [this.writes.length]);
    this.writes.push({ kind: 'enqueue', m });
    this.live++;
  }

  /**
   * `recipient` confirmed `sender`'s message `id`: the copies so named
   * still buffered are cancelled (and reported deleted), and the ack is
   * buffered, since a copy of that name may already be committed.
   */
  ack(recipient: string, sender: string, id: number): void {
    this.cancelBuffered(recipient, sender, id);
    this.writes.push({ kind: 'ack', recipient, sender, id });
    this.live++;
  }

  /** Cancels the buffered copies named (recipient, sender, id), reporting each deleted; buffers no ack. */
  cancelBuffered(recipient: string, sender: string, id: number): void {
    const key = copyKey(recipient, sender, id);
    for (const i of this.enqueued.get(key) ?? []) if (this.cancel(i)) this.copyDeleted(recipient);
    this.enqueued.delete(key);
  }

  /** A removed user's buffered copies must not be written after its committed ones are deleted. */
  dropFor(address: string): void {
    this.writes.forEach((w, i) => {
      if (w !== null && (w.kind === 'enqueue' ? w.m.recipient : w.recipient) === address) this.cancel(i);
    });
  }

  /** Empties the buffer and returns what it held: the next batch starts here. */
  take(): Write[] {
    const writes = this.writes;
    this.clear();
    return writes;
  }

  clear(): void {
    this.writes = [];
    this.enqueued.clear();
    this.live = 0;
  }

  onCopyDeleted(fn: (recipient: string) => void): () => void {
    this.listeners.add(fn);
    return () => void this.listeners.delete(fn);
  }

  /** A copy for `recipient` was deleted (cancelled here, or by a committed ack). */
  copyDeleted(recipient: string): void {
    for (const fn of this.listeners) fn(recipient);
  }

  private cancel(i: number): boolean {
    if (this.writes[i] === null) return false;
    this.writes[i] = null;
    this.live--;
    return true;
  }
}
