/**
 * Who exists: the users and the groups' members, read from the store once
 * and then kept in step by the backend API (which edits these sets) and by
 * Server.bot. The delivery engine keeps its own copy by integer id
 * (lib/delivery.ts); every change made here is passed on to it, so the two
 * never disagree.
 */
import type { Delivery as Engine } from '../delivery';
import type { Store } from '../store/types';

/** The users, as a Set whose changes reach the engine (1:1 messages to a user that is not one are INVALIDDEST). */
class Users extends Set<string> {
  engine: Engine | null = null;

  override add(address: string): this {
    super.add(address);
    this.engine?.userAdd(address);
    return this;
  }

  override delete(address: string): boolean {
    this.engine?.userRemove(address);
    return super.delete(address);
  }
}

/** Groups used since start, as a Map whose deletions make the engine read the group again. */
class Groups extends Map<number, Set<string>> {
  engine: Engine | null = null;

  override delete(gid: number): boolean {
    this.engine?.groupForget(gid);
    return super.delete(gid);
  }

  override clear(): void {
    this.engine?.groupForget();
    super.clear();
  }
}

export class Directory {
  readonly users: Set<string> = new Users();
  /** Members of the groups used since start; the API drops an entry it changes, and it is read again. */
  readonly groups: Map<number, Set<string>> = new Groups();

  constructor(private readonly store: Store) {
    for (const u of store.listUsers()) this.users.add(u);
  }

  /** From now on every change reaches `engine`, which is told every user now. */
  attach(engine: Engine): void {
    for (const u of this.users) engine.userAdd(u);
    (this.users as Users).engine = engine;
    (this.groups as Groups).engine = engine;
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
