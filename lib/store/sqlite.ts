/**
 * The default store: one embedded SQLite file, so nothing else has to run
 * for `npm start`. SQLite is compiled into the addon (lib/store/db.ts), so
 * the store installs wherever the addon does, with no compiler.
 *
 * Message writes use group commit: enqueue() and ack() only append to an
 * in-memory buffer, and commit() (or flush()) writes the whole buffer in one
 * transaction. The server commits once per event-loop turn and tells
 * senders "sent" only after that, so all the messages of a turn share one
 * commit. SQLite commits synchronously: commit() returns nothing, and the
 * server releases the batch in the same call.
 */
import { SwitchboardError } from '../errors';
import { Database } from './db';
import type { NewMessage, Store, StoredMessage } from './types';
import { WriteBuffer, type Write } from './write-buffer';

/** Stored in PRAGMA user_version. Bump it, and migrate in openSchema(), when the tables change. */
export const SCHEMA_VERSION = 2;

// STRICT tables refuse a value of the wrong type instead of storing it.
const SCHEMA = `
  CREATE TABLE IF NOT EXISTS users (
    address    TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE
  ) STRICT, WITHOUT ROWID;

  CREATE TABLE IF NOT EXISTS groups (
    gid  INTEGER PRIMARY KEY,
    name TEXT NOT NULL
  ) STRICT;

  CREATE TABLE IF NOT EXISTS members (
    gid     INTEGER NOT NULL REFERENCES groups(gid) ON DELETE CASCADE,
    address TEXT NOT NULL REFERENCES users(address) ON DELETE CASCADE,
    PRIMARY KEY (gid, address)
  ) STRICT, WITHOUT ROWID;
  CREATE INDEX IF NOT EXISTS members_by_address ON members (address, gid);

  -- AUTOINCREMENT: a seq is never handed out twice, even after the newest
  -- copy is deleted, so a seq can safely name a copy outside the store.
  CREATE TABLE IF NOT EXISTS messages (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    recipient  TEXT NOT NULL,
    sender     TEXT NOT NULL,
    id         INTEGER NOT NULL,
    refid      INTEGER NOT NULL,
    groupid    INTEGER NOT NULL,
    flags      INTEGER NOT NULL,
    type       INTEGER NOT NULL,
    expiry     INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    payload    BLOB NOT NULL
  ) STRICT;
  CREATE INDEX IF NOT EXISTS messages_by_recipient ON messages (recipient, seq);
  -- One copy per recipient, sender and id (version 2; version 1 had a plain
  -- index and checked with NOT EXISTS): a resend after a lost "sent" is
  -- ignored, and inserts need no statement journal.
  CREATE UNIQUE INDEX IF NOT EXISTS messages_copy ON messages (recipient, sender, id);
  CREATE INDEX IF NOT EXISTS messages_by_expiry ON messages (expires_at) WHERE expires_at > 0;
`;

const MESSAGE_COLUMNS = 'seq, recipient, sender, id, refid, groupid, flags, type, expiry, expires_at AS expiresAt, payload';
const UNEXPIRED = '(expires_at = 0 OR expires_at > ?)';

function sqliteCode(e: unknown): string {
  return String((e as { code?: unknown }).code ?? '');
}

function openError(e: unknown, file: string): SwitchboardError {
  if (e instanceof SwitchboardError) return e;
  const code = sqliteCode(e);
  const reason = (e as Error).message ?? String(e);
  if (code === 'SQLITE_NOTADB' || code.startsWith('SQLITE_CORRUPT')) {
    return new SwitchboardError('E_STORE_CORRUPT', `The store file "${file}" is not a SQLite database or is damaged (${reason}). Restore it from a backup, or move it aside to start with an empty store.`, { file, detail: code });
  }
  if (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED')) {
    return new SwitchboardError('E_STORE_LOCKED', `The store file "${file}" is locked by another process (${reason}). Is another Switchboard (or a SQLite tool) using the same data_dir? Stop it, or give this server its own data_dir.`, { file, detail: code });
  }
  return new SwitchboardError('E_STORE_OPEN', `Cannot open the store file "${file}": ${reason}. Check that its folder exists and that the server's user may write there, or point the store at another file.`, { file, detail: code || undefined });
}

function argumentError(what: string): SwitchboardError {
  return new SwitchboardError('E_STORE_ARGUMENT', what);
}

const isAddress = (a: unknown): a is string => typeof a === 'string' && a.length > 0;

/** What every store checks in enqueue(), before buffering. */
export function checkMessage(m: NewMessage): void {
  if (!isAddress(m.recipient) || !isAddress(m.sender)) throw argumentError('A stored message needs a non-empty recipient and sender.');
  for (const f of ['id', 'refid', 'groupid', 'flags', 'type', 'expiry', 'expiresAt'] as const) {
    if (!Number.isSafeInteger(m[f]) || m[f] < 0) throw argumentError(`A stored message's ${f} must be a non-negative integer, not ${String(m[f])}.`);
  }
  if (!Buffer.isBuffer(m.payload)) throw argumentError('A stored message payload must be a Buffer.');
}

/**
 * Creates the tables of a new file, accepts a file of this version, and
 * refuses one written by a newer Switchboard rather than guess at it.
 */
function openSchema(db: Database, file: string, readonly: boolean): void {
  const version = db.pluck('PRAGMA user_version').get() as number;
  if (version > SCHEMA_VERSION) {
    throw new SwitchboardError('E_STORE_VERSION', `The store file "${file}" has schema version ${version}, written by a newer Switchboard; this one reads up to version ${SCHEMA_VERSION}. Upgrade Switchboard, or restore a backup made by this version.`, { file });
  }
  if (readonly) {
    if (version === 0) throw new SwitchboardError('E_STORE_OPEN', `The store file "${file}" holds no Switchboard store yet; open it writable once to create one.`, { file });
    return;
  }
  db.transaction(() => {
    if (version === 1) {
      // 1 -> 2: the copy index becomes unique. Version 1 never stored a copy
      // twice, but keep the first one of any duplicate rather than fail.
      db.exec(`
        DELETE FROM messages WHERE seq NOT IN (SELECT min(seq) FROM messages GROUP BY recipient, sender, id);
        DROP INDEX IF EXISTS messages_by_copy;
      `);
    }
    db.exec(SCHEMA);
    db.exec(`PRAGMA user_version = ${SCHEMA_VERSION}`);
  })();
}

/** listGroups' answer from the gids in order and the members in (gid, address) order, so that a group without members is there too. */
export function groupsWithMembers(gids: number[], members: { gid: number; address: string }[]): { gid: number; members: string[] }[] {
  const byGid = new Map<number, string[]>();
  const out = gids.map((gid) => {
    const g = { gid, members: [] as string[] };
    byGid.set(gid, g.members);
    return g;
  });
  for (const m of members) byGid.get(m.gid)?.push(m.address);
  return out;
}

/** Every statement the store runs, prepared once when it opens. */
function prepareStatements(db: Database) {
  return {
    addUser: db.prepare('INSERT INTO users (address, token_hash) VALUES (?, ?) ON CONFLICT (address) DO NOTHING'),
    deleteUser: db.prepare('DELETE FROM users WHERE address = ?'),
    setTokenHash: db.prepare('UPDATE users SET token_hash = ? WHERE address = ?'),
    userByTokenHash: db.pluck('SELECT address FROM users WHERE token_hash = ?'),
    userExists: db.pluck('SELECT 1 FROM users WHERE address = ?'),
    listUsers: db.pluck('SELECT address FROM users ORDER BY address'),

    addGroup: db.prepare('INSERT INTO groups (gid, name) VALUES (?, ?) ON CONFLICT (gid) DO NOTHING'),
    deleteGroup: db.prepare('DELETE FROM groups WHERE gid = ?'),
    groupExists: db.pluck('SELECT 1 FROM groups WHERE gid = ?'),
    addMember: db.prepare('INSERT INTO members (gid, address) VALUES (?, ?) ON CONFLICT DO NOTHING'),
    deleteMember: db.prepare('DELETE FROM members WHERE gid = ? AND address = ?'),
    members: db.pluck('SELECT address FROM members WHERE gid = ? ORDER BY address'),
    groupsOf: db.pluck('SELECT gid FROM members WHERE address = ? ORDER BY gid'),
    listGroups: db.pluck('SELECT gid FROM groups ORDER BY gid'),
    allMembers: db.prepare('SELECT gid, address FROM members ORDER BY gid, address'),

    // A copy the recipient still has pending is not stored twice: a sender
    // that resends after a crash (its "sent" was lost) must not get a fresh
    // copy behind later messages, nor a fresh expiry for an old message. The
    // unique index says so; OR IGNORE keeps the first copy. (checkMessage
    // has vouched for every other constraint, which OR IGNORE would also
    // silence.) Positional parameters: binding an object costs more.
    insertMessage: db.prepare(
      'INSERT OR IGNORE INTO messages (recipient, sender, id, refid, groupid, flags, type, expiry, expires_at, payload) ' +
        'VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
    ),
    receiptFlags: db.prepare('SELECT recipient, sender, id, groupid, flags FROM messages WHERE (flags & ?) != 0 ORDER BY seq'),
    deleteCopy: db.prepare('DELETE FROM messages WHERE recipient = ? AND sender = ? AND id = ?'),
    deleteRecipient: db.prepare('DELETE FROM messages WHERE recipient = ?'),
    pending: db.prepare(`SELECT ${MESSAGE_COLUMNS} FROM messages WHERE recipient = ? AND seq > ? AND ${UNEXPIRED} ORDER BY seq LIMIT ?`),
    countFor: db.pluck(`SELECT count(*) FROM messages WHERE recipient = ? AND ${UNEXPIRED}`),
    queued: db.prepare(`SELECT count(*) AS messages, coalesce(sum(length(payload)), 0) AS bytes FROM messages WHERE recipient = ? AND ${UNEXPIRED}`),
    queuedAll: db.prepare(`SELECT recipient, count(*) AS messages, coalesce(sum(length(payload)), 0) AS bytes FROM messages WHERE ${UNEXPIRED} GROUP BY recipient`),
    countAll: db.pluck(`SELECT count(*) FROM messages WHERE ${UNEXPIRED}`),
    purgeExpired: db.prepare('DELETE FROM messages WHERE expires_at > 0 AND expires_at <= ?'),
  };
}

export class SqliteStore implements Store {
  private readonly db: Database;
  private readonly readonly: boolean;
  private closed = false;

  private readonly buffer = new WriteBuffer();

  private readonly sql: ReturnType<typeof prepareStatements>;
  /** Commits `writes`; the recipient of each committed copy an ack deleted is pushed to `deleted`. */
  private readonly commitWrites: (writes: readonly Write[], deleted: string[]) => number;
  private readonly removeUserTx: (address: string) => boolean;
  private readonly editMembersTx: (gid: number, add: string[], remove: string[]) => void;

  /**
   * Opens the store in `file`, creating the file and its tables if needed.
   * Throws E_STORE_OPEN if the file cannot be opened or created (missing or
   * unwritable folder, a file this user may not write, or with `readonly` a
   * file that does not exist), E_STORE_CORRUPT if it is not a SQLite
   * database, E_STORE_LOCKED if another process still holds a lock on it
   * after `busyTimeoutMs` (default 5000), and E_STORE_VERSION if a newer
   * Switchboard wrote it.
   */
  static open(file: string, opts: { readonly?: boolean; busyTimeoutMs?: number } = {}): SqliteStore {
    const readonly = opts.readonly ?? false;
    let db: Database | undefined;
    try {
      db = new Database(file, { readonly, busyTimeoutMs: opts.busyTimeoutMs });
      // SQLite quietly opens a file it may not write read-only; the server
      // would then fail on its first commit instead of at start-up.
      if (!readonly && db.openedReadonly) {
        throw new SwitchboardError('E_STORE_OPEN', `The store file "${file}" is read-only for this user. Give the server's user write access to it and its folder, or point the store at another file.`, { file, detail: 'SQLITE_READONLY' });
      }
      if (!readonly) {
        // WAL with synchronous=NORMAL: before flush() returns, the commit is
        // written to the WAL file, i.e. handed to the OS, so a killed server
        // process loses nothing it reported as sent. That is the guarantee we
        // give. A power cut or kernel crash can still lose the last commits
        // (not corrupt the file); covering that too (FULL) costs an fsync on
        // every event-loop turn.
        db.exec('PRAGMA journal_mode = WAL');
        db.exec('PRAGMA synchronous = NORMAL');
      }
      db.exec('PRAGMA foreign_keys = ON');
      openSchema(db, file, readonly);
      return new SqliteStore(db, readonly);
    } catch (e) {
      db?.close();
      throw openError(e, file);
    }
  }

  private constructor(db: Database, readonly: boolean) {
    this.db = db;
    this.readonly = readonly;
    this.sql = prepareStatements(db);

    const sql = this.sql;
    this.commitWrites = db.transaction((writes: readonly Write[], deleted: string[]) => {
      let n = 0;
      for (const w of writes) {
        if (w === null) continue;
        if (w.kind === 'enqueue') {
          const m = w.m;
          sql.insertMessage.run(m.recipient, m.sender, m.id, m.refid, m.groupid, m.flags, m.type, m.expiry, m.expiresAt, m.payload);
        } else {
          for (let gone = sql.deleteCopy.run(w.recipient, w.sender, w.id) as number; gone > 0; gone--) deleted.push(w.recipient);
        }
        n++;
      }
      return n;
    });
    this.removeUserTx = db.transaction((address: string) => {
      sql.deleteRecipient.run(address);
      return sql.deleteUser.run(address) > 0;
    });
    this.editMembersTx = db.transaction((gid: number, add: string[], remove: string[]) => {
      if (!sql.groupExists.get(gid)) throw new SwitchboardError('E_STORE_NO_GROUP', `There is no group ${gid}; create it before editing its members.`);
      const unknown = add.filter((a) => !sql.userExists.get(a));
      if (unknown.length > 0) throw new SwitchboardError('E_STORE_NO_USER', `Cannot add ${unknown.map((a) => `"${a}"`).join(', ')} to group ${gid}: not a user. Create the user first.`, { detail: unknown.join(',') });
      for (const a of add) sql.addMember.run(gid, a);
      for (const r of remove) sql.deleteMember.run(gid, r);
    });
  }

  // ---- users ---------------------------------------------------------------

  addUser(address: string, tokenHash: string): boolean {
    this.checkWritable();
    if (!isAddress(address)) throw argumentError('A user address must be a non-empty string.');
    return this.withTokenCheck(() => this.sql.addUser.run(address, tokenHash) > 0);
  }

  removeUser(address: string): boolean {
    this.checkWritable();
    this.buffer.dropFor(address);
    return this.removeUserTx(address);
  }

  setTokenHash(address: string, tokenHash: string): boolean {
    this.checkWritable();
    return this.withTokenCheck(() => this.sql.setTokenHash.run(tokenHash, address) > 0);
  }

  userByTokenHash(tokenHash: string): string | null {
    this.checkOpen();
    return (this.sql.userByTokenHash.get(tokenHash) as string | undefined) ?? null;
  }

  userExists(address: string): boolean {
    this.checkOpen();
    return this.sql.userExists.get(address) !== undefined;
  }

  listUsers(): string[] {
    this.checkOpen();
    return this.sql.listUsers.all() as string[];
  }

  // ---- groups --------------------------------------------------------------

  addGroup(gid: number, name: string): boolean {
    this.checkWritable();
    if (!Number.isInteger(gid) || gid < 1 || gid > 0xffffffff) throw argumentError(`A group id must be an integer from 1 to 4294967295, not ${gid}.`);
    return this.sql.addGroup.run(gid, name) > 0;
  }

  removeGroup(gid: number): boolean {
    this.checkWritable();
    return this.sql.deleteGroup.run(gid) > 0;
  }

  groupExists(gid: number): boolean {
    this.checkOpen();
    return this.sql.groupExists.get(gid) !== undefined;
  }

  editMembers(gid: number, add: string[], remove: string[]): void {
    this.checkWritable();
    this.editMembersTx(gid, add, remove);
  }

  members(gid: number): string[] {
    this.checkOpen();
    return this.sql.members.all(gid) as string[];
  }

  groupsOf(address: string): number[] {
    this.checkOpen();
    return this.sql.groupsOf.all(address) as number[];
  }

  listGroups(): { gid: number; members: string[] }[] {
    this.checkOpen();
    return groupsWithMembers(this.sql.listGroups.all() as number[], this.sql.allMembers.all() as { gid: number; address: string }[]);
  }

  // ---- messages ------------------------------------------------------------

  enqueue(m: NewMessage): void {
    this.checkWritable();
    checkMessage(m);
    this.buffer.enqueue(m);
  }

  ack(recipient: string, sender: string, id: number): void {
    this.checkWritable();
    this.buffer.ack(recipient, sender, id);
  }

  onCopyDeleted(fn: (recipient: string) => void): () => void {
    return this.buffer.onCopyDeleted(fn);
  }

  /** The Store contract's commit: synchronous, and on failure the batch is dropped (the server answers for it). */
  commit(): void {
    try {
      this.flush();
    } catch (e) {
      this.buffer.clear();
      throw e;
    }
  }

  /**
   * Commits everything buffered in one transaction and returns how many
   * writes that was. On failure it throws E_STORE_WRITE, nothing of the
   * batch is committed, and the buffer is kept for the next flush (for a
   * caller that retries; the server's commit() drops it instead).
   */
  flush(): number {
    this.checkOpen();
    if (this.buffer.size === 0) {
      this.buffer.clear();
      return 0;
    }
    let n: number;
    const deleted: string[] = [];
    try {
      n = this.commitWrites(this.buffer.entries, deleted);
    } catch (e) {
      // Rolled back: keep the buffer so the next flush retries it.
      throw new SwitchboardError('E_STORE_WRITE', `Could not commit ${this.buffer.size} buffered store writes: ${(e as Error).message}. Nothing of this batch was stored; check the disk holding the store file.`, { detail: sqliteCode(e) || undefined });
    }
    this.buffer.clear();
    for (const r of deleted) this.buffer.copyDeleted(r);
    return n;
  }

  get pendingWrites(): number {
    return this.buffer.size;
  }

  pending(recipient: string, limit = -1, afterSeq = 0): StoredMessage[] {
    this.checkOpen();
    return this.sql.pending.all(recipient, afterSeq, Date.now(), limit) as StoredMessage[];
  }

  receiptFlagsPending(mask: number): { recipient: string; sender: string; id: number; groupid: number; flags: number }[] {
    this.checkOpen();
    return this.sql.receiptFlags.all(mask) as { recipient: string; sender: string; id: number; groupid: number; flags: number }[];
  }

  queued(recipient: string): { messages: number; bytes: number } {
    this.checkOpen();
    return this.sql.queued.get(recipient, Date.now()) as { messages: number; bytes: number };
  }

  queuedAll(): { recipient: string; messages: number; bytes: number }[] {
    this.checkOpen();
    return this.sql.queuedAll.all(Date.now()) as { recipient: string; messages: number; bytes: number }[];
  }

  countPending(recipient?: string): number {
    this.checkOpen();
    const now = Date.now();
    return (recipient === undefined ? this.sql.countAll.get(now) : this.sql.countFor.get(recipient, now)) as number;
  }

  purgeExpired(nowMs = Date.now()): number {
    this.checkWritable();
    return this.sql.purgeExpired.run(nowMs);
  }

  close(): void {
    if (this.closed) return;
    try {
      if (!this.readonly) this.flush();
    } finally {
      this.closed = true;
      this.db.close();
    }
  }

  // ---- internals -----------------------------------------------------------

  /** Two users with one token hash would make login ambiguous, so the column is UNIQUE. */
  private withTokenCheck(write: () => boolean): boolean {
    try {
      return write();
    } catch (e) {
      if (sqliteCode(e) === 'SQLITE_CONSTRAINT_UNIQUE') throw new SwitchboardError('E_STORE_TOKEN_IN_USE', 'Another user already has this token. Issue a fresh random token.');
      throw e;
    }
  }

  private checkOpen(): void {
    if (this.closed) throw new SwitchboardError('E_STORE_CLOSED', 'The store is closed.');
  }

  private checkWritable(): void {
    this.checkOpen();
    if (this.readonly) throw new SwitchboardError('E_STORE_READONLY', 'The store was opened read-only; open it without { readonly: true } to change it.');
  }
}
