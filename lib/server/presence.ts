/**
 * Who may watch whose presence (the `presence` setting, docs/config.md):
 *
 * - `all`: any logged-in user may watch any existing user;
 * - `contacts`: only users who share a group, or who have sent each other a
 *   message since the server started (either direction);
 * - `none`: presence requests are refused.
 *
 * Only existing users can be watched in any mode, so a subscription names
 * at most one of a bounded set of addresses.
 *
 * In a cluster, a pair is a fact of the whole cluster: the node that
 * records it first tells the others (`shared`, the cluster room's `talk`
 * broadcast), and they record it without passing it on (heard()).
 */
import type { Directory } from './directory';
import type { ServerSettings } from './settings';

export type PresencePolicy = 'all' | 'contacts' | 'none';

/** Pairs of users who messaged each other, kept at most this many (oldest forgotten first). */
const MAX_CONTACT_PAIRS = 1_000_000;

export class Presence {
  /** "a\0b" with a < b, in the order the pairs were first seen. */
  private readonly talked = new Set<string>();

  /** Told of each pair a message here made contacts for the first time (the cluster room tells the other nodes). */
  shared: ((a: string, b: string) => void) | null = null;

  /**
   * `settings.presence` is read at each check, so a config reload that
   * changes it applies to the next request. Contacts are recorded only
   * while the policy is `contacts`: after a switch to it, only messages
   * since the switch (and shared groups) make contacts.
   */
  constructor(
    private readonly settings: Pick<ServerSettings, 'presence'>,
    private readonly directory: Directory,
  ) {}

  get policy(): PresencePolicy {
    return this.settings.presence;
  }

  /** Whether messages should be recorded as contacts (policy contacts only: it costs a string per message). */
  get tracksMessages(): boolean {
    return this.policy === 'contacts';
  }

  /** A message went from `a` to `b`: they are contacts from now on. */
  messaged(a: string, b: string): void {
    if (this.record(a, b)) this.shared?.(a, b);
  }

  /**
   * Another node recorded that `a` and `b` messaged each other, or this
   * node received a copy one sent the other: recorded here, not passed on
   * (the node that routed the message told every node).
   */
  heard(a: string, b: string): void {
    if (this.tracksMessages) this.record(a, b);
  }

  /** Whether the pair is new. */
  private record(a: string, b: string): boolean {
    if (a === b) return false;
    const key = a < b ? `${a}\0${b}` : `${b}\0${a}`;
    if (this.talked.has(key)) return false;
    if (this.talked.size >= MAX_CONTACT_PAIRS) {
      const oldest = this.talked.values().next().value;
      if (oldest !== undefined) this.talked.delete(oldest);
    }
    this.talked.add(key);
    return true;
  }

  /**
   * Whether `watcher` may subscribe to `target`'s presence. The same answer
   * for a user that does not exist and for one the policy hides, so a
   * refusal says nothing about who exists.
   */
  mayWatch(watcher: string, target: string): boolean {
    if (this.policy === 'none' || !this.directory.users.has(target)) return false;
    if (this.policy === 'all' || watcher === target) return true;
    const key = watcher < target ? `${watcher}\0${target}` : `${target}\0${watcher}`;
    if (this.talked.has(key)) return true;
    return this.directory.shareGroup(watcher, target);
  }
}
