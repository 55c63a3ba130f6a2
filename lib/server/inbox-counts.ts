/**
 * The inbox counts the delivery engine asks for (its inboxCount host call,
 * cpp/router.cc router_inbox_full), answered without waiting on the store.
 * A store that can answer at once (SQLite) is simply read when the engine
 * asks, as it always was: one indexed read, off the plain path. What
 * follows is for a store that answers later (PostgreSQL).
 *
 * The engine asks synchronously, from C++, and only off the plain path: for
 * the first copy to a recipient, after inboxForget, and again, at most once
 * a second, while its own count says full. In between it counts by itself
 * (copies it stores, and the deletions the store reports).
 *
 * So the counts are read ahead, never while the engine waits: every
 * recipient's in one read at start (queuedAll), which the engine's first
 * question about a recipient gets (it asks before it stores anything for
 * one, so nothing was stored for them since). A purge, a failed commit or
 * a store that comes back reads them all again, a revoked or removed user
 * its own, and only once the fresh counts are here is the engine told to
 * ask again (inboxForget). A count is handed to the engine once. Asked again with
 * nothing fresh (its count said full), the answer is "full" while that
 * recipient's count is read: the inbox stays closed until the store says
 * otherwise, rather than open on a stale number.
 *
 * Like the store's own count, a fresh count does not include the copies of
 * the batch being committed when it was read: it errs low by at most one
 * batch, until the engine's next correction.
 */
import type { Delivery as Engine } from '../delivery';
import { errorText, type Logger } from '../log';
import type { AsyncStore } from '../store/types';
import type { ServerSettings } from './settings';

type Count = [messages: number, bytes: number];
const EMPTY: Count = [0, 0];

export class InboxCounts {
  /** Read from the store and not yet handed to the engine. */
  private fresh = new Map<string, Count>();
  /** Handed to the engine since the last full read: asked again, they need a fresh read. */
  private handed = new Set<string>();
  /** Recipients whose count is being read on its own, and whether it must be read again when that read is back (something changed meanwhile). */
  private readonly reading = new Map<string, boolean>();
  /** Bumped by every full read: a single read started before one is stale. */
  private generation = 0;
  private reloading: Promise<void> | null = null;
  private reloadAgain = false;
  private engine: Engine | null = null;

  constructor(
    private readonly store: AsyncStore,
    /** The store's own synchronous read, when it has one (SQLite): then nothing is read ahead. */
    private readonly readNow: ((recipient: string) => { messages: number; bytes: number }) | null,
    private readonly settings: Pick<ServerSettings, 'maxInboxMessages' | 'maxInboxBytes'>,
    private readonly logger: Logger,
  ) {}

  /** Every recipient's count, read before the engine exists (Server.start). */
  async load(): Promise<void> {
    if (!this.readNow) this.fill(await this.store.queuedAll());
  }

  /** From now on fresh counts are announced to `engine` (inboxForget). */
  attach(engine: Engine): void {
    this.engine = engine;
  }

  /** The engine's question for `recipient` (its name): [messages, bytes]. */
  count(recipient: string): Count {
    if (this.readNow) {
      const q = this.readNow(recipient);
      return [q.messages, q.bytes];
    }
    const f = this.fresh.get(recipient);
    if (f) {
      this.fresh.delete(recipient);
      this.handed.add(recipient);
      return f;
    }
    if (!this.handed.has(recipient)) {
      // Nothing waited at the last full read, and the engine asks before it
      // stores a copy for anyone (router_inbox_full): nothing since either.
      this.handed.add(recipient);
      return EMPTY;
    }
    this.refresh(recipient);
    return [this.settings.maxInboxMessages, this.settings.maxInboxBytes];
  }

  /**
   * Reads one recipient's count again, then has the engine ask for it (a
   * revoked or removed user). Asked while a read for it runs, it reads once
   * more after it: the later read is the one that counts.
   */
  refresh(recipient: string): void {
    if (this.readNow) return this.engine?.inboxForget(this.engine.intern(recipient));
    if (this.reading.has(recipient)) {
      this.reading.set(recipient, true);
      return;
    }
    this.reading.set(recipient, false);
    const generation = this.generation;
    this.store.queued(recipient).then(
      (q) => {
        const again = this.reading.get(recipient);
        this.reading.delete(recipient);
        if (again) return this.refresh(recipient);
        if (generation !== this.generation) return;
        this.fresh.set(recipient, [q.messages, q.bytes]);
        this.engine?.inboxForget(this.engine.intern(recipient));
      },
      (e: unknown) => {
        // The engine keeps its own count; it asks again at its next full check.
        this.reading.delete(recipient);
        this.logger.event('store.error', { op: 'inbox', error: errorText(e) });
      },
    );
  }

  /**
   * Reads every count again, then has the engine ask for them: after a
   * purge, a failed commit (the engine counted the copies it dropped), or
   * the store's return. Until then the engine keeps counting on its own.
   */
  reload(): void {
    if (this.readNow) return this.engine?.inboxForget();
    if (this.reloading) {
      this.reloadAgain = true;
      return;
    }
    this.reloading = this.store.queuedAll().then(
      (rows) => {
        this.fill(rows);
        this.engine?.inboxForget();
      },
      (e: unknown) => this.logger.event('store.error', { op: 'inbox', error: errorText(e) }),
    );
    this.reloading.finally(() => {
      this.reloading = null;
      if (this.reloadAgain) {
        this.reloadAgain = false;
        this.reload();
      }
    });
  }

  private fill(rows: { recipient: string; messages: number; bytes: number }[]): void {
    this.generation++;
    this.fresh = new Map(rows.map((r) => [r.recipient, [r.messages, r.bytes]]));
    this.handed = new Set();
  }
}
