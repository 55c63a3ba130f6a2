/**
 * The PostgreSQL store, for a node that must not keep its data to itself
 * (issue 15: several nodes on one database). Same contract as the SQLite
 * store (lib/store/types.ts), through the asynchronous interface every
 * networked engine needs (`AsyncStore`): every read and every user or group
 * change is a round trip, so it returns a Promise.
 *
 * Message writes use group commit, as with SQLite: enqueue() and ack() only
 * append to an in-memory buffer, and commit() sends the whole buffer as ONE
 * statement, a call of the schema's switchboard_commit() function with the
 * batch as arrays. One statement is one transaction and one round trip,
 * whatever the batch holds; the function applies the acks first, then
 * inserts the copies, with seq in the order enqueued. It takes its rows in
 * key order, so that two nodes' commits of the same copies cannot deadlock;
 * a batch PostgreSQL still aborts as a deadlock victim is sent again.
 *
 * Commits run on a connection of their own, so a burst of reads (logins,
 * backlog pages) never delays a batch behind it; reads share a small pool.
 * Every statement is a named (prepared) one: each connection parses it once.
 */
import { Pool, types as pgTypes, type PoolConfig, type QueryConfig, type QueryResult } from 'pg';
import { SwitchboardError } from '../errors';
import { checkMessage, groupsWithMembers } from './sqlite';
import type { AsyncStore, NewMessage, StoredMessage } from './types';
import { WriteBuffer, type Write } from './write-buffer';

/**
 * Stored in switchboard_schema. Bump it, and migrate in openSchema(), when
 * the tables or the functions change: an older database gets what is new
 * (version 2: switchboard_commit() takes its rows in key order).
 */
export const PG_SCHEMA_VERSION = 2;

/**
 * How often a batch is sent at most when PostgreSQL aborts it as a deadlock
 * victim (40P01) or a serialization failure (40001): each commit takes its
 * rows in key order, so only statements outside it (a user removed, the
 * expiry purge) can still be part of such a cycle.
 */
const COMMIT_ATTEMPTS = 4;
const RETRYABLE = new Set(['40P01', '40001']);

export interface PostgresStoreOptions {
  /** Connections for reads and user/group changes (the commit has one more of its own). Default 8. */
  poolSize?: number;
  /** A connection attempt or a statement that takes longer fails (E_STORE_OPEN, E_STORE_WRITE, E_STORE_READ). Default 10000. */
  timeoutMs?: number;
}

// Addresses compare and sort byte by byte (COLLATE "C"), as in SQLite, and
// whatever locale the database was created with. Numbers SQLite keeps as
// 64-bit integers are bigint: message ids are unsigned 32-bit.
const SCHEMA = `
  CREATE TABLE IF NOT EXISTS users (
    address    text COLLATE "C" PRIMARY KEY,
    token_hash text COLLATE "C" NOT NULL UNIQUE
  );

  CREATE TABLE IF NOT EXISTS groups (
    gid  bigint PRIMARY KEY CHECK (gid BETWEEN 1 AND 4294967295),
    name text NOT NULL
  );

  CREATE TABLE IF NOT EXISTS members (
    gid     bigint NOT NULL REFERENCES groups (gid) ON DELETE CASCADE,
    address text COLLATE "C" NOT NULL REFERENCES users (address) ON DELETE CASCADE,
    PRIMARY KEY (gid, address)
  );
  CREATE INDEX IF NOT EXISTS members_by_address ON members (address, gid);

  -- An identity is never handed out twice, even after the newest copy is
  -- deleted, so a seq can safely name a copy outside the store. No read
  -- looks a copy up by seq alone: the primary key is the backlog's order
  -- (recipient, seq), one index fewer for every insert to maintain.
  CREATE TABLE IF NOT EXISTS messages (
    seq        bigint GENERATED ALWAYS AS IDENTITY,
    recipient  text COLLATE "C" NOT NULL,
    sender     text COLLATE "C" NOT NULL,
    id         bigint NOT NULL,
    refid      bigint NOT NULL,
    groupid    bigint NOT NULL,
    flags      bigint NOT NULL,
    type       bigint NOT NULL,
    expiry     bigint NOT NULL,
    expires_at bigint NOT NULL,
    payload    bytea NOT NULL,
    PRIMARY KEY (recipient, seq)
  );
  -- One copy per recipient, sender and id: a resend after a lost "sent" is
  -- dropped (ON CONFLICT DO NOTHING), and an ack finds its copy by index.
  CREATE UNIQUE INDEX IF NOT EXISTS messages_copy ON messages (recipient, sender, id);
  CREATE INDEX IF NOT EXISTS messages_by_expiry ON messages (expires_at) WHERE expires_at > 0;

  -- A batch in one statement: one round trip and one transaction. The acks
  -- run first: each one has already cancelled the copies of its name
  -- enqueued before it in the buffer, so what it may delete is committed
  -- already, and a copy enqueued after it must survive. Returns the
  -- recipient of each copy deleted.
  --
  -- Two nodes may delete and insert the same copies (recipient, sender,
  -- id) at once, each batch in its own order: every commit therefore takes
  -- its rows in key order, the copies it deletes and the existing ones it
  -- would insert locked first, then the inserts made in key order. seq is
  -- drawn in enqueue order before that, so each sender's copies keep their
  -- order in the backlog.
  CREATE OR REPLACE FUNCTION switchboard_commit(
    ack_recipient text[], ack_sender text[], ack_id bigint[],
    m_recipient text[], m_sender text[], m_id bigint[], m_refid bigint[], m_groupid bigint[],
    m_flags bigint[], m_type bigint[], m_expiry bigint[], m_expires_at bigint[], m_payload bytea[]
  ) RETURNS SETOF text LANGUAGE plpgsql AS $$
  BEGIN
    PERFORM 1 FROM messages m
      JOIN (
        SELECT * FROM unnest(ack_recipient, ack_sender, ack_id)
        UNION
        SELECT * FROM unnest(m_recipient, m_sender, m_id)
      ) AS k (recipient, sender, id) ON m.recipient = k.recipient AND m.sender = k.sender AND m.id = k.id
      ORDER BY m.recipient, m.sender, m.id
      FOR UPDATE OF m;
    RETURN QUERY
      WITH gone AS (
        DELETE FROM messages m
        USING unnest(ack_recipient, ack_sender, ack_id) AS a (recipient, sender, id)
        WHERE m.recipient = a.recipient AND m.sender = a.sender AND m.id = a.id
        RETURNING m.recipient
      )
      SELECT gone.recipient::text FROM gone;
    -- A duplicate within the batch: the first enqueued is the one kept (n).
    WITH c AS MATERIALIZED (
      SELECT nextval(pg_get_serial_sequence('messages', 'seq')) AS seq, u.*
      FROM unnest(m_recipient, m_sender, m_id, m_refid, m_groupid, m_flags, m_type, m_expiry, m_expires_at, m_payload)
        WITH ORDINALITY AS u (recipient, sender, id, refid, groupid, flags, type, expiry, expires_at, payload, n)
      ORDER BY u.n
    )
    INSERT INTO messages (seq, recipient, sender, id, refid, groupid, flags, type, expiry, expires_at, payload)
      OVERRIDING SYSTEM VALUE
      SELECT c.seq, c.recipient, c.sender, c.id, c.refid, c.groupid, c.flags, c.type, c.expiry, c.expires_at, c.payload
      FROM c
      ORDER BY c.recipient, c.sender, c.id, c.n
      ON CONFLICT (recipient, sender, id) DO NOTHING;
  END
  $$;
`;

const MESSAGE_COLUMNS = 'seq, recipient, sender, id, refid, groupid, flags, type, expiry, expires_at AS "expiresAt", payload';
const UNEXPIRED = '(expires_at = 0 OR expires_at > $2)';

/** Every statement the store runs, named so that each connection prepares it once. */
function statement(name: string, text: string): (values: unknown[]) => QueryConfig {
  return (values) => ({ name: `sb_${name}`, text, values });
}

const SQL = {
  addUser: statement('add_user', 'INSERT INTO users (address, token_hash) VALUES ($1, $2) ON CONFLICT (address) DO NOTHING'),
  // The user's copies go in the same statement, so no copy outlives its user.
  removeUser: statement('remove_user', 'WITH copies AS (DELETE FROM messages WHERE recipient = $1) DELETE FROM users WHERE address = $1'),
  setTokenHash: statement('set_token_hash', 'UPDATE users SET token_hash = $2 WHERE address = $1'),
  userByTokenHash: statement('user_by_token_hash', 'SELECT address FROM users WHERE token_hash = $1'),
  userExists: statement('user_exists', 'SELECT 1 FROM users WHERE address = $1'),
  listUsers: statement('list_users', 'SELECT address FROM users ORDER BY address'),

  addGroup: statement('add_group', 'INSERT INTO groups (gid, name) VALUES ($1, $2) ON CONFLICT (gid) DO NOTHING'),
  removeGroup: statement('remove_group', 'DELETE FROM groups WHERE gid = $1'),
  groupExists: statement('group_exists', 'SELECT 1 FROM groups WHERE gid = $1'),
  // FOR KEY SHARE: the group cannot be deleted while its members change.
  lockGroup: statement('lock_group', 'SELECT 1 FROM groups WHERE gid = $1 FOR KEY SHARE'),
  unknownUsers: statement('unknown_users', 'SELECT a FROM unnest($1::text[]) AS a WHERE NOT EXISTS (SELECT 1 FROM users WHERE address = a)'),
  addMembers: statement('add_members', 'INSERT INTO members (gid, address) SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING'),
  removeMembers: statement('remove_members', 'DELETE FROM members WHERE gid = $1 AND address = ANY ($2::text[])'),
  members: statement('members', 'SELECT address FROM members WHERE gid = $1 ORDER BY address'),
  groupsOf: statement('groups_of', 'SELECT gid FROM members WHERE address = $1 ORDER BY gid'),
  listGroups: statement('list_groups', 'SELECT gid FROM groups ORDER BY gid'),
  allMembers: statement('all_members', 'SELECT gid, address FROM members ORDER BY gid, address'),

  commit: statement(
    'commit',
    'SELECT r FROM switchboard_commit($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::bigint[], $7::bigint[], ' +
      '$8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[], $13::bytea[]) AS r',
  ),
  pending: statement('pending', `SELECT ${MESSAGE_COLUMNS} FROM messages WHERE recipient = $1 AND ${UNEXPIRED} AND seq > $3 ORDER BY seq LIMIT $4`),
  receiptFlags: statement('receipt_flags', 'SELECT recipient, sender, id, groupid, flags FROM messages WHERE (flags & $1) != 0 ORDER BY seq'),
  queued: statement('queued', `SELECT count(*) AS messages, coalesce(sum(octet_length(payload)), 0) AS bytes FROM messages WHERE recipient = $1 AND ${UNEXPIRED}`),
  queuedAll: statement('queued_all', 'SELECT recipient, count(*) AS messages, coalesce(sum(octet_length(payload)), 0) AS bytes FROM messages WHERE (expires_at = 0 OR expires_at > $1) GROUP BY recipient'),
  countFor: statement('count_for', `SELECT count(*) AS n FROM messages WHERE recipient = $1 AND ${UNEXPIRED}`),
  countAll: statement('count_all', 'SELECT count(*) AS n FROM messages WHERE (expires_at = 0 OR expires_at > $1)'),
  purgeExpired: statement('purge_expired', 'DELETE FROM messages WHERE expires_at > 0 AND expires_at <= $1'),
};

// Every count and id the store reads is a bigint, far below 2^53: numbers,
// as the SQLite store returns them, not pg's default strings. Per pool, so
// the application's own use of pg keeps its parsers.
const INT8_OID = 20;
const parseInt8 = (v: string): number => Number(v);
const typeParsers = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') => (oid === INT8_OID && format !== 'binary' ? parseInt8 : pgTypes.getTypeParser(oid, format as 'text'))) as typeof pgTypes.getTypeParser,
};

function pgCode(e: unknown): string {
  return String((e as { code?: unknown }).code ?? '');
}

/** The URL without its password, for messages and logs. */
function redact(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return url.replace(/\/\/[^@/]*@/, '//***@');
  }
}

function argumentError(what: string): SwitchboardError {
  return new SwitchboardError('E_STORE_ARGUMENT', what);
}

export class PostgresStore implements AsyncStore {
  private closing?: Promise<void>;
  /** The commit in flight, if any: the caller keeps at most one. */
  private flight?: Promise<void>;

  private readonly buffer = new WriteBuffer();

  private constructor(
    private readonly url: string,
    /** Reads and user/group changes. */
    private readonly pool: Pool,
    /** The commit's own connection (a pool of one, so it reconnects by itself after an outage). */
    private readonly writer: Pool,
  ) {}

  /**
   * Connects to `url` (`postgresql://USER[:PASSWORD]@HOST:PORT/DB`; without a
   * password in the URL, PGPASSWORD), creates the schema in a database that
   * has none, and accepts one of this version. Several nodes may open the
   * same database at once: the first creates the schema, under a lock.
   * Rejects with E_STORE_OPEN if the database cannot be reached or logged
   * into, E_STORE_VERSION if a newer Switchboard created its schema.
   */
  static async open(url: string, opts: PostgresStoreOptions = {}): Promise<PostgresStore> {
    if (!/^postgres(ql)?:\/\//.test(url)) {
      throw new SwitchboardError('E_STORE_OPEN', `"${redact(url)}" is not a PostgreSQL URL; write it as postgresql://USER@HOST:PORT/DB.`);
    }
    const timeout = opts.timeoutMs ?? 10_000;
    const config: PoolConfig = {
      connectionString: url,
      types: typeParsers,
      application_name: 'switchboard',
      connectionTimeoutMillis: timeout,
      // A statement that hangs (a network that drops packets) fails instead
      // of stalling every "sent" behind it. A commit that timed out may
      // still have committed: its senders resend, and the copies already
      // stored are recognised as resends and dropped.
      query_timeout: timeout,
      keepAlive: true,
    };
    const pool = new Pool({ ...config, max: opts.poolSize ?? 8 });
    const writer = new Pool({ ...config, max: 1, idleTimeoutMillis: 0 });
    // An idle connection that the server drops (a restart) is reported
    // here; without a listener it would crash the process. The next
    // statement on that pool reconnects, or fails with a code.
    const ignore = (): void => {};
    pool.on('error', ignore);
    writer.on('error', ignore);
    try {
      await openSchema(pool, url);
      // Connect the writer now, so the first batch pays no connection set-up.
      (await writer.connect()).release();
    } catch (e) {
      await Promise.allSettled([pool.end(), writer.end()]);
      if (e instanceof SwitchboardError) throw e;
      throw new SwitchboardError('E_STORE_OPEN', `Cannot open the PostgreSQL store at ${redact(url)}: ${(e as Error).message}. Check that the server runs and accepts this user (password in the URL or PGPASSWORD), and that the database exists.`, { detail: pgCode(e) || undefined });
    }
    return new PostgresStore(url, pool, writer);
  }

  // ---- users ---------------------------------------------------------------

  async addUser(address: string, tokenHash: string): Promise<boolean> {
    this.checkOpen();
    if (typeof address !== 'string' || address.length === 0) throw argumentError('A user address must be a non-empty string.');
    return (await this.write(SQL.addUser([address, tokenHash]))).rowCount! > 0;
  }

  async removeUser(address: string): Promise<boolean> {
    this.checkOpen();
    this.buffer.dropFor(address);
    return (await this.write(SQL.removeUser([address]))).rowCount! > 0;
  }

  async setTokenHash(address: string, tokenHash: string): Promise<boolean> {
    this.checkOpen();
    return (await this.write(SQL.setTokenHash([address, tokenHash]))).rowCount! > 0;
  }

  async userByTokenHash(tokenHash: string): Promise<string | null> {
    const rows = await this.read<{ address: string }>(SQL.userByTokenHash([tokenHash]));
    return rows.length ? rows[0].address : null;
  }

  async userExists(address: string): Promise<boolean> {
    return (await this.read(SQL.userExists([address]))).length > 0;
  }

  async listUsers(): Promise<string[]> {
    return (await this.read<{ address: string }>(SQL.listUsers([]))).map((r) => r.address);
  }

  // ---- groups --------------------------------------------------------------

  async addGroup(gid: number, name: string): Promise<boolean> {
    this.checkOpen();
    if (!Number.isInteger(gid) || gid < 1 || gid > 0xffffffff) throw argumentError(`A group id must be an integer from 1 to 4294967295, not ${gid}.`);
    return (await this.write(SQL.addGroup([gid, name]))).rowCount! > 0;
  }

  async removeGroup(gid: number): Promise<boolean> {
    this.checkOpen();
    return (await this.write(SQL.removeGroup([gid]))).rowCount! > 0;
  }

  async groupExists(gid: number): Promise<boolean> {
    return (await this.read(SQL.groupExists([gid]))).length > 0;
  }

  /** All or nothing: one transaction, with the group locked against a concurrent delete. */
  async editMembers(gid: number, add: string[], remove: string[]): Promise<void> {
    this.checkOpen();
    const client = await this.pool.connect().catch((e: unknown) => {
      throw storeError('E_STORE_WRITE', this.url, e);
    });
    try {
      await client.query('BEGIN');
      if ((await client.query(SQL.lockGroup([gid]))).rowCount === 0) {
        throw new SwitchboardError('E_STORE_NO_GROUP', `There is no group ${gid}; create it before editing its members.`);
      }
      const unknown = (await client.query<{ a: string }>(SQL.unknownUsers([add]))).rows.map((r) => r.a);
      if (unknown.length > 0) throw noUser(gid, unknown);
      await client.query(SQL.addMembers([gid, add]));
      await client.query(SQL.removeMembers([gid, remove]));
      await client.query('COMMIT');
      client.release();
    } catch (e) {
      // A connection that cannot even roll back is not given back for reuse.
      const rolledBack = await client.query('ROLLBACK').then(
        () => true,
        () => false,
      );
      client.release(!rolledBack);
      // 23503: a user deleted between the check and the insert.
      throw pgCode(e) === '23503' ? noUser(gid, add) : storeError('E_STORE_WRITE', this.url, e);
    }
  }

  async members(gid: number): Promise<string[]> {
    return (await this.read<{ address: string }>(SQL.members([gid]))).map((r) => r.address);
  }

  async groupsOf(address: string): Promise<number[]> {
    return (await this.read<{ gid: number }>(SQL.groupsOf([address]))).map((r) => r.gid);
  }

  /** The groups, then the members, in one read-only transaction, so that both see the same moment. */
  async listGroups(): Promise<{ gid: number; members: string[] }[]> {
    this.checkOpen();
    const client = await this.pool.connect().catch((e: unknown) => {
      throw storeError('E_STORE_READ', this.url, e);
    });
    let broken = false;
    try {
      await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
      const gids = (await client.query<{ gid: number }>(SQL.listGroups([]))).rows.map((r) => r.gid);
      const members = (await client.query<{ gid: number; address: string }>(SQL.allMembers([]))).rows;
      await client.query('COMMIT');
      return groupsWithMembers(gids, members);
    } catch (e) {
      broken = !(await client.query('ROLLBACK').then(
        () => true,
        () => false,
      ));
      throw storeError('E_STORE_READ', this.url, e);
    } finally {
      client.release(broken);
    }
  }

  // ---- messages ------------------------------------------------------------

  enqueue(m: NewMessage): void {
    this.checkOpen();
    checkMessage(m);
    // PostgreSQL text cannot hold NUL: such a copy would fail its whole batch.
    if (m.recipient.includes('\0') || m.sender.includes('\0')) throw argumentError("A stored message's recipient and sender must not contain a NUL character.");
    this.buffer.enqueue(m);
  }

  ack(recipient: string, sender: string, id: number): void {
    this.checkOpen();
    // No committed copy can have such a name, and the ack would fail its batch.
    if (recipient.includes('\0') || sender.includes('\0') || !Number.isSafeInteger(id) || id < 0) this.buffer.cancelBuffered(recipient, sender, id);
    else this.buffer.ack(recipient, sender, id);
  }

  onCopyDeleted(fn: (recipient: string) => void): () => void {
    return this.buffer.onCopyDeleted(fn);
  }

  /**
   * Takes the buffer as one batch and commits it in one statement. On
   * failure it rejects with E_STORE_WRITE, nothing of the batch is stored,
   * and what was buffered while it was in flight is dropped too (the
   * contract: none of it may be committed ahead of the resends).
   */
  commit(): Promise<void> {
    if (this.closing) return Promise.reject(closedError());
    if (this.flight) return Promise.reject(new SwitchboardError('E_INTERNAL', 'commit() was called while a commit was in flight; the caller must wait for it to settle, so that batches commit in order.'));
    return this.commitBuffer();
  }

  get pendingWrites(): number {
    return this.buffer.size;
  }

  async pending(recipient: string, limit = -1, afterSeq = 0): Promise<StoredMessage[]> {
    return this.read<StoredMessage>(SQL.pending([recipient, Date.now(), afterSeq, limit < 0 ? null : limit]));
  }

  async receiptFlagsPending(mask: number): Promise<{ recipient: string; sender: string; id: number; groupid: number; flags: number }[]> {
    return this.read(SQL.receiptFlags([mask]));
  }

  async queued(recipient: string): Promise<{ messages: number; bytes: number }> {
    return (await this.read<{ messages: number; bytes: number }>(SQL.queued([recipient, Date.now()])))[0];
  }

  async queuedAll(): Promise<{ recipient: string; messages: number; bytes: number }[]> {
    return this.read(SQL.queuedAll([Date.now()]));
  }

  async countPending(recipient?: string): Promise<number> {
    const now = Date.now();
    return (await this.read<{ n: number }>(recipient === undefined ? SQL.countAll([now]) : SQL.countFor([recipient, now])))[0].n;
  }

  async purgeExpired(nowMs = Date.now()): Promise<number> {
    this.checkOpen();
    return (await this.write(SQL.purgeExpired([nowMs]))).rowCount!;
  }

  /** Waits for the commit in flight, commits what is buffered (a failure is swallowed: never reported as committed), then disconnects. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      await this.flight?.catch(() => undefined);
      if (this.buffer.size > 0) await this.commitBuffer().catch(() => undefined);
      await Promise.allSettled([this.pool.end(), this.writer.end()]);
    })();
    return this.closing;
  }

  // ---- internals -----------------------------------------------------------

  private commitBuffer(): Promise<void> {
    const count = this.buffer.size;
    const writes = this.buffer.take();
    if (count === 0) return Promise.resolve();
    const flight = this.sendBatch(SQL.commit(batchArrays(writes))).then(
      (res) => {
        this.flight = undefined;
        for (const row of res.rows) this.buffer.copyDeleted(row.r);
      },
      (e: unknown) => {
        this.flight = undefined;
        this.buffer.clear();
        throw new SwitchboardError('E_STORE_WRITE', `Could not commit ${count} buffered store writes to PostgreSQL at ${redact(this.url)}: ${(e as Error).message}. Nothing of this batch was stored; check that the database is up and reachable.`, { detail: pgCode(e) || undefined });
      },
    );
    this.flight = flight;
    return flight;
  }

  /** The commit statement, sent again (it was rolled back) while PostgreSQL aborts it as a deadlock victim, up to COMMIT_ATTEMPTS times. */
  private async sendBatch(q: QueryConfig): Promise<QueryResult<{ r: string }>> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.writer.query<{ r: string }>(q);
      } catch (e) {
        if (attempt === COMMIT_ATTEMPTS || !RETRYABLE.has(pgCode(e))) throw e;
      }
    }
  }

  private async read<R>(q: QueryConfig): Promise<R[]> {
    this.checkOpen();
    try {
      return (await this.pool.query(q)).rows as R[];
    } catch (e) {
      throw storeError('E_STORE_READ', this.url, e);
    }
  }

  private async write(q: QueryConfig) {
    try {
      return await this.pool.query(q);
    } catch (e) {
      throw storeError('E_STORE_WRITE', this.url, e);
    }
  }

  private checkOpen(): void {
    if (this.closing) throw closedError();
  }
}

function closedError(): SwitchboardError {
  return new SwitchboardError('E_STORE_CLOSED', 'The store is closed.');
}

/**
 * What a failed statement means to the caller: a value PostgreSQL cannot
 * take (a NUL in a text, a number out of range) is the caller's
 * E_STORE_ARGUMENT, a duplicate token hash E_STORE_TOKEN_IN_USE, anything
 * else (the server gone, a timeout) `code`.
 */
function storeError(code: 'E_STORE_READ' | 'E_STORE_WRITE', url: string, e: unknown): SwitchboardError {
  if (e instanceof SwitchboardError) return e;
  const pg = pgCode(e);
  const reason = (e as Error).message ?? String(e);
  if (pg === '22021' || pg === '22P02' || pg === '22003') return argumentError(`PostgreSQL cannot take this value: ${reason}.`);
  if (pg === '23505') return new SwitchboardError('E_STORE_TOKEN_IN_USE', 'Another user already has this token. Issue a fresh random token.');
  const what = code === 'E_STORE_READ' ? 'read from' : 'write to';
  return new SwitchboardError(code, `Could not ${what} the PostgreSQL store at ${redact(url)}: ${reason}. Check that the database is up and reachable.`, { detail: pg || undefined });
}

function noUser(gid: number, unknown: string[]): SwitchboardError {
  return new SwitchboardError('E_STORE_NO_USER', `Cannot add ${unknown.map((a) => `"${a}"`).join(', ')} to group ${gid}: not a user. Create the user first.`, { detail: unknown.join(',') });
}

/** The batch as switchboard_commit()'s thirteen arrays: the acks' three, then one per message column. */
function batchArrays(writes: Write[]): unknown[] {
  const ackRecipient: string[] = [];
  const ackSender: string[] = [];
  const ackId: number[] = [];
  const cols: [string[], string[], number[], number[], number[], number[], number[], number[], number[], Buffer[]] = [[], [], [], [], [], [], [], [], [], []];
  for (const w of writes) {
    if (w === null) continue;
    if (w.kind === 'ack') {
      ackRecipient.push(w.recipient);
      ackSender.push(w.sender);
      ackId.push(w.id);
    } else {
      const m = w.m;
      cols[0].push(m.recipient);
      cols[1].push(m.sender);
      cols[2].push(m.id);
      cols[3].push(m.refid);
      cols[4].push(m.groupid);
      cols[5].push(m.flags);
      cols[6].push(m.type);
      cols[7].push(m.expiry);
      cols[8].push(m.expiresAt);
      cols[9].push(m.payload);
    }
  }
  return [ackRecipient, ackSender, ackId, ...cols];
}

/**
 * Creates the schema in a database that has none and checks the version of
 * one that has. Under a transaction-scoped advisory lock, so that nodes
 * starting together do not race to create it.
 */
async function openSchema(pool: Pool, url: string): Promise<void> {
  const client = await pool.connect();
  let failed = false;
  try {
    await client.query('BEGIN');
    // Any fixed key; the lock is released at COMMIT or ROLLBACK.
    await client.query("SELECT pg_advisory_xact_lock(hashtext('switchboard_schema'))");
    // Looked up, not CREATE ... IF NOT EXISTS: once the schema exists, a
    // node needs no right to create anything, only to read and write.
    const exists = (await client.query<{ e: boolean }>("SELECT to_regclass('switchboard_schema') IS NOT NULL AS e")).rows[0].e;
    const rows = exists ? (await client.query<{ version: number }>('SELECT version FROM switchboard_schema')).rows : [];
    const version = rows.length ? rows[0].version : 0;
    if (version > PG_SCHEMA_VERSION) {
      throw new SwitchboardError('E_STORE_VERSION', `The PostgreSQL store at ${redact(url)} has schema version ${version}, written by a newer Switchboard; this one reads up to version ${PG_SCHEMA_VERSION}. Upgrade Switchboard, or point it at another database.`);
    }
    if (version < PG_SCHEMA_VERSION) {
      await client.query('CREATE TABLE IF NOT EXISTS switchboard_schema (version integer NOT NULL)');
      await client.query(SCHEMA);
      await client.query('DELETE FROM switchboard_schema');
      await client.query('INSERT INTO switchboard_schema (version) VALUES ($1)', [PG_SCHEMA_VERSION]);
    }
    await client.query('COMMIT');
  } catch (e) {
    failed = true;
    await client.query('ROLLBACK').catch(() => undefined);
    throw e;
  } finally {
    client.release(failed);
  }
}
