// The real SQLite store behind an asynchronous commit, for tests of the
// server's pipelined group commit and of the store contract: commit() takes
// the buffered writes as a batch and returns a Promise; the batch is written
// to SQLite (the real transaction, through SqliteStore) only when it lands,
// on a timer or when the test lands it. Everything else is the SQLite
// store's own behaviour.
import { SqliteStore, checkMessage } from '../lib/store/sqlite';
import type { NewMessage, Store, StoredMessage } from '../lib/store/types';

type Write = { m: NewMessage } | { recipient: string; sender: string; id: number };

interface Flight {
  writes: Write[];
  resolve: () => void;
  reject: (e: unknown) => void;
}

export class AsyncSqliteStore implements Store {
  /** Writes since the last commit(): the next batch. */
  private buffer: Write[] = [];
  private readonly flights: Flight[] = [];
  /** While true, batches wait in flight until land(); else each lands after `delayMs`. */
  paused = false;
  /** Batches committed and failed so far. */
  landed = 0;
  failed = 0;
  /** Write counts of the batches commit() took, in order. */
  readonly batches: number[] = [];

  constructor(
    readonly inner: SqliteStore,
    private readonly delayMs = 1,
  ) {}

  static open(file: string, delayMs?: number): AsyncSqliteStore {
    return new AsyncSqliteStore(SqliteStore.open(file), delayMs);
  }

  /** Batches taken by commit() and not landed yet. */
  get inFlight(): number {
    return this.flights.length;
  }

  /** Lands the oldest batch in flight now (committing it for real); resolves when its Promise has settled. */
  async land(): Promise<void> {
    const f = this.flights.shift();
    if (!f) throw new Error('no batch in flight');
    this.write(f);
    // Let the server's then/catch run before the caller looks.
    await new Promise((r) => setImmediate(r));
  }

  /** Stops pausing and lands what waits. */
  async resume(): Promise<void> {
    this.paused = false;
    while (this.flights.length) await this.land();
  }

  commit(): Promise<void> {
    const writes = this.buffer;
    this.buffer = [];
    this.batches.push(writes.length);
    return new Promise<void>((resolve, reject) => {
      const f: Flight = { writes, resolve, reject };
      this.flights.push(f);
      if (!this.paused) {
        setTimeout(() => {
          const i = this.flights.indexOf(f);
          if (i < 0) return;
          this.flights.splice(i, 1);
          this.write(f);
        }, this.delayMs);
      }
    });
  }

  private write(f: Flight): void {
    try {
      for (const w of f.writes) {
        if ('m' in w) this.inner.enqueue(w.m);
        else this.inner.ack(w.recipient, w.sender, w.id);
      }
      this.inner.commit();
    } catch (e) {
      // The contract: the failed batch and what was buffered behind it are dropped.
      this.buffer = [];
      this.failed++;
      f.reject(e);
      return;
    }
    this.landed++;
    f.resolve();
  }

  get pendingWrites(): number {
    return this.buffer.length;
  }

  enqueue(m: NewMessage): void {
    checkMessage(m);
    this.buffer.push({ m });
  }

  ack(recipient: string, sender: string, id: number): void {
    this.buffer.push({ recipient, sender, id });
  }

  /** Deletions are the inner store's to report: a batch's acks run there when it lands. */
  onCopyDeleted(fn: (recipient: string) => void): () => void {
    return this.inner.onCopyDeleted(fn);
  }

  removeUser(address: string): boolean {
    this.buffer = this.buffer.filter((w) => ('m' in w ? w.m.recipient : w.recipient) !== address);
    return this.inner.removeUser(address);
  }

  async close(): Promise<void> {
    while (this.flights.length) await this.land();
    if (this.buffer.length) {
      try {
        await this.commit();
      } catch {
        // Never reported as committed; the store closes anyway.
      }
    }
    this.inner.close();
  }

  // Users, groups and reads: the SQLite store's, synchronous as issue 15 finds them.
  addUser(address: string, tokenHash: string): boolean {
    return this.inner.addUser(address, tokenHash);
  }
  setTokenHash(address: string, tokenHash: string): boolean {
    return this.inner.setTokenHash(address, tokenHash);
  }
  userByTokenHash(tokenHash: string): string | null {
    return this.inner.userByTokenHash(tokenHash);
  }
  listGroups(): { gid: number; members: string[] }[] {
    return this.inner.listGroups();
  }
  queuedAll(): { recipient: string; messages: number; bytes: number }[] {
    return this.inner.queuedAll();
  }
  userExists(address: string): boolean {
    return this.inner.userExists(address);
  }
  listUsers(): string[] {
    return this.inner.listUsers();
  }
  addGroup(gid: number, name: string): boolean {
    return this.inner.addGroup(gid, name);
  }
  removeGroup(gid: number): boolean {
    return this.inner.removeGroup(gid);
  }
  groupExists(gid: number): boolean {
    return this.inner.groupExists(gid);
  }
  editMembers(gid: number, add: string[], remove: string[]): void {
    this.inner.editMembers(gid, add, remove);
  }
  members(gid: number): string[] {
    return this.inner.members(gid);
  }
  groupsOf(address: string): number[] {
    return this.inner.groupsOf(address);
  }
  pending(recipient: string, limit?: number, afterSeq?: number): StoredMessage[] {
    return this.inner.pending(recipient, limit, afterSeq);
  }
  receiptFlagsPending(mask: number): { recipient: string; sender: string; id: number; groupid: number; flags: number }[] {
    return this.inner.receiptFlagsPending(mask);
  }
  queued(recipient: string): { messages: number; bytes: number } {
    return this.inner.queued(recipient);
  }
  countPending(recipient?: string): number {
    return this.inner.countPending(recipient);
  }
  purgeExpired(nowMs?: number): number {
    return this.inner.purgeExpired(nowMs);
  }
}
