/**
 * The embedded SQLite the default store runs on. SQLite is compiled into the
 * addon (deps/sqlite/), so the store needs no other package, no compiler and
 * no download: whatever loads the addon has the store.
 *
 * Errors thrown here carry SQLite's result code name as `code`
 * ("SQLITE_ERROR", "SQLITE_CONSTRAINT_UNIQUE", "SQLITE_BUSY", ...);
 * lib/store/sqlite.ts turns the ones a user can hit into E_STORE_* errors.
 */
import { native, type NativeSqliteDb, type NativeSqliteStatement } from '../native';

export type Statement = NativeSqliteStatement;

export interface DatabaseOptions {
  readonly?: boolean;
  /** Fail with SQLITE_CANTOPEN instead of creating a missing file (implied by readonly). */
  fileMustExist?: boolean;
  /** How long a statement waits for another connection's lock before SQLITE_BUSY. Default 5000. */
  busyTimeoutMs?: number;
}

export class Database {
  private readonly db: NativeSqliteDb;
  private tx?: { begin: Statement; commit: Statement; rollback: Statement };

  constructor(file: string, opts: DatabaseOptions = {}) {
    const readonly = opts.readonly ?? false;
    this.db = new native.SqliteDb(file, readonly, readonly || (opts.fileMustExist ?? false), opts.busyTimeoutMs ?? 5000);
  }

  /** Runs one or more ;-separated statements that return nothing. */
  exec(sql: string): void {
    this.db.exec(sql);
  }

  /** Prepares one statement; get()/all() return rows as objects keyed by column name. */
  prepare(sql: string): Statement {
    return new native.SqliteStatement(this.db, sql, false);
  }

  /** Prepares one statement whose get()/all() return only the first column's value. */
  pluck(sql: string): Statement {
    return new native.SqliteStatement(this.db, sql, true);
  }

  get inTransaction(): boolean {
    return this.db.inTransaction();
  }

  /** True when SQLite opened the file read-only although writing was asked for (the file is not writable here). */
  get openedReadonly(): boolean {
    return this.db.openedReadonly();
  }

  /**
   * Wraps `fn` so each call runs in one transaction: committed when it
   * returns, rolled back when it (or the commit) throws. Not nestable.
   */
  transaction<A extends unknown[], R>(fn: (...args: A) => R): (...args: A) => R {
    // Prepared once: a commit per event-loop turn should not parse SQL.
    const tx = (this.tx ??= { begin: this.prepare('BEGIN'), commit: this.prepare('COMMIT'), rollback: this.prepare('ROLLBACK') });
    return (...args: A): R => {
      tx.begin.run();
      try {
        const r = fn(...args);
        tx.commit.run();
        return r;
      } catch (e) {
        // A failed COMMIT can leave the transaction open (SQLITE_BUSY); a
        // failed statement inside may already have rolled it back.
        if (this.db.inTransaction()) tx.rollback.run();
        throw e;
      }
    };
  }

  /** Finalizes every statement prepared on it and closes the file. */
  close(): void {
    this.db.close();
  }
}
