/**
 * Who exists: the users and the groups' members, read from the store once
 * and then kept in step by the backend API (which edits these sets) and by
 * Server.bot.
 */
import type { Store } from '../store/types';

export class Directory {
  readonly users = new Set<string>();
  /** Members of the groups used since start; the API drops an entry it changes, and it is read again. */
  readonly groups = new Map<number, Set<string>>();

  constructor(private readonly store: Store) {
    for (const u of store.listUsers()) this.users.add(u);
  }

  /** The members of group `gid`, or null when there is no such group. */
  group(gid: number): string[] | null {
    let members = this.groups.get(gid);
    if (!members) {
      if (!this.store.groupExists(gid)) return null;
      members = new Set(this.store.members(gid));
      this.groups.set(gid, members);
    }
    return [...members];
  }

  /** Who a message goes to: a group's members, or the one user `to`; null when neither exists. */
  recipients(to: string, gid: number): string[] | null {
    return gid ? this.group(gid) : this.users.has(to) ? [to] : null;
  }
}
