/**
 * Who is connected to this node, as JavaScript needs it: each logged-in
 * user's sockets (presence, disconnecting a user) and the sockets by the
 * delivery engine's connection id (performing its writes). Which form each
 * reads, whose backlog is still being sent and what each is owed are the
 * engine's (lib/delivery.ts).
 */
import type uWS from 'uWebSockets.js';

/** Per-connection state (uWebSockets.js user data). */
export interface Conn {
  address: string; // '' until logged in
  device: string;
  binary: boolean; // the form the server sends in
  open: boolean;
  /** Remote IP as text, for the per-IP counts. */
  ip: string;
  /** Date.now() at the upgrade: the login deadline runs from here. */
  openedAt: number;
  /** Shared by this user's connections (max_connections_per_user); set at login. The rate limits are the engine's (cpp/admit.h). */
  user: UserLimits | null;
  /** The delivery engine's ids (lib/delivery.ts): the user's, and this connection's once logged in (-1 before). */
  uid: number;
  id: number;
  presence: Set<string>;
  /** The stored backlog is sent page by page; live deliveries start after it. */
  backlogSeq: number;
  backlogDone: boolean;
  /** A backlog page is being read (or waits for a commit): one at a time, so pages keep their order. */
  backlogReading: boolean;
  /** Frames that arrived while the login's token was being looked up, replayed in order after it; undefined when no lookup runs. */
  held?: { data: ArrayBuffer; isBinary: boolean }[];
  /** The hash of the token in the upgrade's URL, from the upgrade to the open handler, which has the store look it up. */
  tokenHash?: string;
  /** The hash of the token this connection logged in with: in a cluster, checked again after this node was away from NATS (Sessions.recheckTokens). */
  loginHash?: string;
}

export type WS = uWS.WebSocket<Conn>;

/** Shared by one user's connections. */
export interface UserLimits {
  connections: number;
}

const NONE: ReadonlySet<WS> = new Set();

export class Connections {
  /** Logged-in connections per address. */
  private readonly devices = new Map<string, Set<WS>>();
  private total = 0;
  /**
   * Sockets by the engine's connection id: the engine's writes name a
   * connection by it. Dense (the engine gives the lowest free id).
   */
  readonly sockets: (WS | undefined)[] = [];

  /** Whether `address` has a logged-in connection on this node. */
  has(address: string): boolean {
    return this.devices.has(address);
  }

  /** The connections of `address` (none when offline). */
  of(address: string): ReadonlySet<WS> {
    return this.devices.get(address) ?? NONE;
  }

  addresses(): string[] {
    return [...this.devices.keys()];
  }

  /** Every logged-in connection, copied (closing one changes the sets). */
  all(): WS[] {
    const out: WS[] = [];
    for (const set of this.devices.values()) for (const ws of set) out.push(ws);
    return out;
  }

  get count(): number {
    return this.total;
  }

  /** A connection logged in (its engine id set). Returns whether it is the user's first. */
  add(ws: WS): boolean {
    const c = ws.getUserData();
    let set = this.devices.get(c.address);
    const first = !set;
    if (!set) this.devices.set(c.address, (set = new Set()));
    set.add(ws);
    this.total++;
    this.sockets[c.id] = ws;
    return first;
  }

  /**
   * A logged-in connection closed. Returns how many connections its user has
   * left, or -1 when it was not one of them.
   */
  remove(ws: WS): number {
    const c = ws.getUserData();
    const set = this.devices.get(c.address);
    if (!set || !set.delete(ws)) return -1;
    this.total--;
    if (this.sockets[c.id] === ws) this.sockets[c.id] = undefined;
    if (set.size === 0) this.devices.delete(c.address);
    return set.size;
  }
}
