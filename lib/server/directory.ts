/**
 * Who exists: the users, the groups and their members, all read from the
 * store at start (Server.start awaits it) and then kept in step by the
 * backend API (which edits these sets once the store has the change) and by
 * Server.bot. Held whole in memory because the delivery engine asks for a
 * group's members synchronously (loadGroup), which a networked store could
 * only answer later. The engine keeps its own copy by integer id
 * (lib/delivery.ts); every change made here is passed on to it, so the two
 * never disagree.
 */
import type { Delivery as Engine } from '../delivery';

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

/**
 * Every group's members, as a Map whose changes make the engine read the
 * group again. A member set is replaced, not edited in place, so the index
 * of each user's groups (presence) follows every change.
 */
class Groups extends Map<number, Set<string>> {
  engine: Engine | null = null;
  /** The gids each address is a member of. */
  readonly of = new Map<string, Set<number>>();

  override set(gid: number, members: Set<string>): this {
    this.unindex(gid);
    for (const a of members) {
      let gids = this.of.get(a);
      if (!gids) this.of.set(a, (gids = new Set()));
      gids.add(gid);
    }
    this.engine?.groupForget(gid);
    return super.set(gid, members);
  }

  override delete(gid: number): boolean {
    this.unindex(gid);
    this.engine?.groupForget(gid);
    return super.delete(gid);
  }

  override clear(): void {
    this.of.clear();
    this.engine?.groupForget();
    super.clear();
  }

  private unindex(gid: number): void {
    for (const a of this.get(gid) ?? []) {
      const gids = this.of.get(a);
      gids?.delete(gid);
      if (gids?.size === 0) this.of.delete(a);
    }
  }
}

export class Directory {
  readonly users: Set<string> = new Users();
  /** Every group's members; the API sets an entry to what the store holds after a change. */
  readonly groups: Map<number, Set<string>> = new Groups();

  /** What the store holds at start (listUsers, listGroups). */
  constructor(users: string[], groups: { gid: number; members: string[] }[]) {
    for (const u of users) this.users.add(u);
    for (const g of groups) this.groups.set(g.gid, new Set(g.members));
  }

  /** From now on every change reaches `engine`, which is told every user now. */
  attach(engine: Engine): void {
    for (const u of this.users) engine.userAdd(u);
    (this.users as Users).engine = engine;
    (this.groups as Groups).engine = engine;
  }

  /** The members of group `gid`, or null when there is no such group. */
  group(gid: number): string[] | null {
    const members = this.groups.get(gid);
    return members ? [...members] : null;
  }

  /**
   * A user being removed leaves the users and every group (the store's
   * delete cascades to its memberships). Returns how to put it back, should
   * the store's delete fail.
   */
  removeUser(address: string): () => void {
    const wasUser = this.users.delete(address);
    const groups = this.groups as Groups;
    const gids = [...(groups.of.get(address) ?? [])];
    for (const gid of gids) {
      const members = new Set(groups.get(gid));
      members.delete(address);
      groups.set(gid, members);
    }
    return () => {
      if (wasUser) this.users.add(address);
      for (const gid of gids) {
        const members = groups.get(gid);
        if (members) groups.set(gid, new Set([...members, address]));
      }
    };
  }

  /** Whether `a` and `b` are members of one group (presence = contacts). */
  shareGroup(a: string, b: string): boolean {
    const of = (this.groups as Groups).of;
    const mine = of.get(a);
    const theirs = of.get(b);
    if (!mine || !theirs) return false;
    for (const g of mine) if (theirs.has(g)) return true;
    return false;
  }

  /** Who a message goes to: a group's members, or the one user `to`; null when neither exists. */
  recipients(to: string, gid: number): string[] | null {
    return gid ? this.group(gid) : this.users.has(to) ? [to] : null;
  }
}
