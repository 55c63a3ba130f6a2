/**
 * A synchronous store (SQLite) seen through the asynchronous interface the
 * server uses (AsyncStore). Only the calls off the per-message path become
 * Promises: reads, user and group changes. The write side is passed through
 * untouched, so SQLite keeps its speed: enqueue and ack buffer in memory,
 * and commit() still commits before it returns, with no Promise and no
 * extra turn per batch. A synchronous throw becomes a rejection, so the
 * server handles both engines' errors the same way.
 */
import type { AsyncStore, NewMessage, Store, StoredMessage } from './types';

export class SyncStoreAdapter implements AsyncStore {
  constructor(readonly inner: Store) {}

  async addUser(address: string, tokenHash: string): Promise<boolean> {
    return this.inner.addUser(address, tokenHash);
  }
  async removeUser(address: string): Promise<boolean> {
    return this.inner.removeUser(address);
  }
  async setTokenHash(address: string, tokenHash: string): Promise<boolean> {
    return this.inner.setTokenHash(address, tokenHash);
  }
  async userByTokenHash(tokenHash: string): Promise<string | null> {
    return this.inner.userByTokenHash(tokenHash);
  }
  async userExists(address: string): Promise<boolean> {
    return this.inner.userExists(address);
  }
  async listUsers(): Promise<string[]> {
    return this.inner.listUsers();
  }

  async addGroup(gid: number, name: string): Promise<boolean> {
    return this.inner.addGroup(gid, name);
  }
  async removeGroup(gid: number): Promise<boolean> {
    return this.inner.removeGroup(gid);
  }
  async groupExists(gid: number): Promise<boolean> {
    return this.inner.groupExists(gid);
  }
  async editMembers(gid: number, add: string[], remove: string[]): Promise<void> {
    this.inner.editMembers(gid, add, remove);
  }
  async members(gid: number): Promise<string[]> {
    return this.inner.members(gid);
  }
  async groupsOf(address: string): Promise<number[]> {
    return this.inner.groupsOf(address);
  }
  async listGroups(): Promise<{ gid: number; members: string[] }[]> {
    return this.inner.listGroups();
  }

  enqueue(m: NewMessage): void {
    this.inner.enqueue(m);
  }
  ack(recipient: string, sender: string, id: number): void {
    this.inner.ack(recipient, sender, id);
  }
  onCopyDeleted(fn: (recipient: string) => void): () => void {
    return this.inner.onCopyDeleted(fn);
  }
  commit(): Promise<void> | void {
    return this.inner.commit();
  }
  get pendingWrites(): number {
    return this.inner.pendingWrites;
  }

  async pending(recipient: string, limit?: number, afterSeq?: number): Promise<StoredMessage[]> {
    return this.inner.pending(recipient, limit, afterSeq);
  }
  async receiptFlagsPending(mask: number): Promise<{ recipient: string; sender: string; id: number; groupid: number; flags: number }[]> {
    return this.inner.receiptFlagsPending(mask);
  }
  async queued(recipient: string): Promise<{ messages: number; bytes: number }> {
    return this.inner.queued(recipient);
  }
  async queuedAll(): Promise<{ recipient: string; messages: number; bytes: number }[]> {
    return this.inner.queuedAll();
  }
  async countPending(recipient?: string): Promise<number> {
    return this.inner.countPending(recipient);
  }
  async purgeExpired(nowMs?: number): Promise<number> {
    return this.inner.purgeExpired(nowMs);
  }
  close(): Promise<void> | void {
    return this.inner.close();
  }
}
