/**
 * The store behind store-and-forward, users and groups. The server talks only
 * to this interface, so the embedded SQLite store (`./sqlite`) can be swapped
 * for another engine without touching the server. A networked engine
 * (PostgreSQL, `./postgres`) answers reads later: it implements `AsyncStore`
 * (at the end of this file), which is what the server uses; a synchronous
 * `Store` is adapted to it (lib/store/async.ts).
 *
 * Durability contract: message writes (`enqueue`, `ack`) are buffered in
 * memory and become durable together, as one batch, at the next `commit()`.
 * The server (lib/server/commit.ts) commits once per event-loop turn and
 * only then tells senders their messages were sent, so "sent" always means
 * "survives a killed process". User and group changes are rare and commit
 * immediately.
 *
 * The write side may be asynchronous: `commit()` returns nothing when the
 * batch was committed before it returned (SQLite: no Promise, no extra
 * turn), or a Promise that resolves once the batch is durable (PostgreSQL).
 * The server keeps at most one commit in flight; writes buffered meanwhile
 * are the next batch, committed when the flight lands. Reads see committed
 * copies only. docs/store.md lists the reads that must become asynchronous
 * for a networked store, and where the server awaits them.
 */
/** One recipient's copy of a message, as committed. */
export interface StoredMessage {
  /**
   * Assigned by the store when the copy is committed, and never reused. It
   * increases in the order copies were enqueued, so delivering a recipient's
   * copies by seq keeps every sender's order.
   */
  seq: number;
  /** The user address this copy is for (a group message has one copy per member). */
  recipient: string;
  /** The authenticated address of the sender. */
  sender: string;
  /** The sender's 32-bit message id; with recipient and sender it names the copy for `ack`. */
  id: number;
  refid: number;
  groupid: number;
  flags: number;
  type: number;
  /** Seconds to live, as the sender gave it (0 = none); kept so it can be forwarded as is. */
  expiry: number;
  /** Milliseconds since the epoch after which the copy is no longer delivered (0 = never). */
  expiresAt: number;
  payload: Buffer;
}

/** A copy to enqueue: everything but the seq, which the store assigns. */
export type NewMessage = Omit<StoredMessage, 'seq'>;

/**
 * Errors carry a stable `code` (see SwitchboardError): E_STORE_OPEN,
 * E_STORE_CORRUPT, E_STORE_LOCKED, E_STORE_VERSION when opening; E_STORE_WRITE when a commit
 * (or, on a networked store, a user or group change) fails; E_STORE_READ when
 * a networked store cannot be read; E_STORE_READONLY, E_STORE_CLOSED, E_STORE_NO_GROUP, E_STORE_NO_USER,
 * E_STORE_TOKEN_IN_USE and E_STORE_ARGUMENT for calls the store cannot serve.
 */
export interface Store {
  // ---- users -------------------------------------------------------------
  // Tokens are hashed by the caller: the store never sees a raw token.

  /** Creates a user. Returns false, changing nothing, if the address exists. Throws E_STORE_TOKEN_IN_USE if another user has this token hash. */
  addUser(address: string, tokenHash: string): boolean;
  /**
   * Deletes a user with its group memberships and its pending messages,
   * buffered ones included. Returns false if there was no such user. The
   * server calls it only with no commit in flight (Commit.afterFlight), so a
   * batch can never insert a copy for the user after the delete.
   */
  removeUser(address: string): boolean;
  /** Replaces a user's token hash (the old token stops working). Returns false if there is no such user. */
  setTokenHash(address: string, tokenHash: string): boolean;
  /** The address whose token hash this is, or null. */
  userByTokenHash(tokenHash: string): string | null;
  userExists(address: string): boolean;
  /** Every address, sorted. */
  listUsers(): string[];

  // ---- groups (gid: a positive 32-bit integer) ---------------------------

  /** Creates a group. Returns false, changing nothing, if the gid exists. Throws E_STORE_ARGUMENT for a gid out of range. */
  addGroup(gid: number, name: string): boolean;
  /** Deletes a group and its memberships. Copies already fanned out to members stay. Returns false if there was no such group. */
  removeGroup(gid: number): boolean;
  groupExists(gid: number): boolean;
  /**
   * Adds then removes members, all or nothing (an address in both lists ends
   * up not a member). Adding a member twice or removing a non-member is not an
   * error. Throws E_STORE_NO_GROUP for an unknown group, E_STORE_NO_USER
   * naming any address in `add` that is not a user.
   */
  editMembers(gid: number, add: string[], remove: string[]): void;
  /** The group's member addresses, sorted; empty for an unknown group. */
  members(gid: number): string[];
  /** The gids the address is a member of, ascending. */
  groupsOf(address: string): number[];
  /** Every group, by ascending gid, with its members sorted (a group without members too): the server holds them all in memory. */
  listGroups(): { gid: number; members: string[] }[];

  // ---- messages: buffered, durable at the next commit() -----------------

  /**
   * Buffers one recipient's copy; nothing is written until commit(). Throws
   * E_STORE_ARGUMENT at once for a malformed copy, so one bad message can
   * never make a whole batch fail. The recipient is not checked against the
   * users: that costs a read per copy and the server knows its recipients.
   * A copy named like one the recipient still has committed (same sender and
   * id: a resend after a lost "sent") is dropped at commit, so the original
   * keeps its place in the order and its expiry.
   */
  enqueue(m: NewMessage): void;
  /**
   * Buffers the deletion of a delivered copy: every copy named (recipient,
   * sender, id), should the sender have repeated an id. It also cancels such
   * copies enqueued earlier in the same buffer, so a copy enqueued and
   * acknowledged between two commits is never written at all. A deletion
   * committed in a later batch than the copy's insert must still find it.
   * What it deletes is reported to onCopyDeleted.
   */
  ack(recipient: string, sender: string, id: number): void;
  /**
   * Calls `fn` with the recipient of each copy an ack deleted: at once for
   * a copy cancelled in the buffer, after the commit for a committed one.
   * An ack for a copy that was never stored (a transient message) or is
   * gone already calls nothing, so the inbox count (the delivery engine's, cpp/router.cc)
   * goes down only for copies that were counted. Returns a function that
   * removes `fn`.
   */
  onCopyDeleted(fn: (recipient: string) => void): () => void;
  /**
   * Takes everything buffered as one batch and commits it, in the order it
   * was buffered, in ONE transaction. When it returns, the buffer is empty:
   * writes made from then on belong to the next batch.
   *
   * Returns undefined when the batch is already committed (a synchronous
   * engine: the server then releases its "sent"s in the same call), or a
   * Promise that resolves when the batch is durable. The caller starts the
   * next commit only after this one settled, so batches commit in order.
   *
   * On failure it throws, or the Promise rejects, with E_STORE_WRITE, and
   * nothing of the batch is committed. The store then drops the failed batch
   * AND whatever was buffered while it was in flight: the caller tells none
   * of their senders "sent" (they resend), and a later message of a sender
   * must not be committed ahead of the resend of an earlier one.
   */
  commit(): Promise<void> | void;
  /** Writes buffered and not yet committed. */
  readonly pendingWrites: number;
  /**
   * The recipient's committed, unexpired copies in seq order, at most `limit`
   * of them, starting after `afterSeq` (for paging). Buffered and in-flight writes are not seen: a copy is readable only once it is
   * durable, so nothing is delivered that a crash could take back.
   */
  pending(recipient: string, limit?: number, afterSeq?: number): StoredMessage[];
  /** Committed copies whose flags ask for a receipt (`flags & mask`), for the server to remember at start-up. */
  receiptFlagsPending(mask: number): { recipient: string; sender: string; id: number; groupid: number; flags: number }[];
  /** How many committed, unexpired copies wait for the recipient and their payload bytes (the server's inbox limit). */
  queued(recipient: string): { messages: number; bytes: number };
  /** `queued` for every recipient that has a committed, unexpired copy, in one read (the server's inbox counts at start). */
  queuedAll(): { recipient: string; messages: number; bytes: number }[];
  /** How many committed, unexpired copies wait for the recipient (or for everyone). */
  countPending(recipient?: string): number;
  /** Deletes committed copies that expired at `nowMs` (default: now). Returns how many. */
  purgeExpired(nowMs?: number): number;
  /**
   * Commits what is buffered, then closes, even if that commit fails (those
   * writes were never reported as committed). Calling it again does nothing.
   * The server calls it once no commit is in flight, and awaits it.
   */
  close(): Promise<void> | void;
}

/**
 * The store interface the server uses (issue 15, "Scale out"), made for
 * engines whose every call crosses a network (PostgreSQL,
 * lib/store/postgres.ts): the same calls and the same contract as `Store`,
 * but every read, and every user and group change, returns a Promise, and
 * so do `commit()` and `close()`. Only the buffering calls stay synchronous:
 * `enqueue` and `ack` touch nothing but memory, so the routing path never
 * waits on the store before the batch's commit. docs/store.md lists where
 * the server has to await each read.
 */
export interface AsyncStore {
  addUser(address: string, tokenHash: string): Promise<boolean>;
  /** As Store.removeUser; the server must not take a batch until the delete has landed (docs/store.md). */
  removeUser(address: string): Promise<boolean>;
  setTokenHash(address: string, tokenHash: string): Promise<boolean>;
  userByTokenHash(tokenHash: string): Promise<string | null>;
  userExists(address: string): Promise<boolean>;
  listUsers(): Promise<string[]>;

  addGroup(gid: number, name: string): Promise<boolean>;
  removeGroup(gid: number): Promise<boolean>;
  groupExists(gid: number): Promise<boolean>;
  editMembers(gid: number, add: string[], remove: string[]): Promise<void>;
  members(gid: number): Promise<string[]>;
  groupsOf(address: string): Promise<number[]>;
  listGroups(): Promise<{ gid: number; members: string[] }[]>;

  enqueue(m: NewMessage): void;
  ack(recipient: string, sender: string, id: number): void;
  onCopyDeleted(fn: (recipient: string) => void): () => void;
  /**
   * As Store.commit: a Promise that resolves once the batch is durable and
   * rejects with E_STORE_WRITE, or nothing when the batch was committed
   * before it returned (the SQLite store behind asAsyncStore, lib/store/async.ts,
   * which so keeps its speed: no Promise and no extra turn per batch).
   */
  commit(): Promise<void> | void;
  readonly pendingWrites: number;

  pending(recipient: string, limit?: number, afterSeq?: number): Promise<StoredMessage[]>;
  receiptFlagsPending(mask: number): Promise<{ recipient: string; sender: string; id: number; groupid: number; flags: number }[]>;
  queued(recipient: string): Promise<{ messages: number; bytes: number }>;
  queuedAll(): Promise<{ recipient: string; messages: number; bytes: number }[]>;
  countPending(recipient?: string): Promise<number>;
  purgeExpired(nowMs?: number): Promise<number>;
  close(): Promise<void> | void;
}
