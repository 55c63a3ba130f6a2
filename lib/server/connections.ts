/**
 * Who is connected to this node: each logged-in user's sockets, how many
 * read JSON and how many binary, and whose stored backlog is still being
 * sent. Sessions change it (login, close, end of a backlog); the router and
 * delivery read it. It is the table a core-side router (issue 14, item 1)
 * would keep in C++.
 */
import type uWS from 'uWebSockets.js';
import type { Bucket } from './limits';
import { OUT_BINARY, OUT_BOTH, OUT_JSON } from './protocol';

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
  /** Message frames of this connection (rate_limit). */
  bucket: Bucket;
  /** Message frames of all this user's connections (user_rate_limit); set at login. */
  user: UserLimits | null;
  /**
   * Statuses this connection may send without spending a budget: two (delivered,
   * read) per message it was sent (owe()). Acknowledging a large backlog is never rate limited.
   */
  owed: number;
  presence: Set<string>;
  /** The stored backlog is sent page by page; live deliveries start after it. */
  backlogSeq: number;
  backlogDone: boolean;
  /** With durability off: "sender\0id" of stored copies sent from the backlog, awaiting their receipt. */
  stored: Set<string> | null;
  /** Date.now() when this device last confirmed a message (durable_grace). */
  confirmedAt: number;
  /** Set when the upgrade carried a token that did not authenticate. */
  authError?: string;
}

export type WS = uWS.WebSocket<Conn>;

/** Shared by one user's connections. */
export interface UserLimits {
  bucket: Bucket;
  connections: number;
}

const NONE: ReadonlySet<WS> = new Set();

/**
 * A message was written to `c`: it may be answered with a delivered and a
 * read status that spend no budget. Capped at two per message an inbox may
 * hold (max_inbox_messages), the most a connection legitimately has
 * unanswered from its backlog: a client that never answers cannot save up
 * an allowance for a flood of statuses later.
 */
export function owe(c: Conn, maxInboxMessages: number): void {
  c.owed = Math.min(c.owed + 2, 2 * maxInboxMessages);
}

export class Connections {
  /** Logged-in connections per address. */
  private readonly devices = new Map<string, Set<WS>>();
  private jsonDevices = 0;
  private binaryDevices = 0;
  /** Devices per address whose stored backlog is still being sent (not yet subscribed to live deliveries). */
  private readonly pumping = new Map<string, number>();

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
    return this.jsonDevices + this.binaryDevices;
  }

  get json(): number {
    return this.jsonDevices;
  }

  get binary(): number {
    return this.binaryDevices;
  }

  /** Which forms the core encodes deliveries in: only those some connected device reads. */
  outFormat(): number {
    return this.binaryDevices === 0 ? OUT_JSON : this.jsonDevices === 0 ? OUT_BINARY : OUT_BOTH;
  }

  /** A connection logged in; its backlog is to be sent. Returns whether it is the user's first. */
  add(ws: WS): boolean {
    const c = ws.getUserData();
    let set = this.devices.get(c.address);
    const first = !set;
    if (!set) this.devices.set(c.address, (set = new Set()));
    set.add(ws);
    if (c.binary) this.binaryDevices++;
    else this.jsonDevices++;
    this.pumping.set(c.address, (this.pumping.get(c.address) ?? 0) + 1);
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
    if (!c.backlogDone) {
      c.backlogDone = true;
      this.backlogSent(c.address);
    }
    if (c.binary) this.binaryDevices--;
    else this.jsonDevices--;
    if (set.size === 0) this.devices.delete(c.address);
    return set.size;
  }

  /** Whether a device of `address` is still being sent its backlog: a copy for it must be stored. */
  pumpingTo(address: string): boolean {
    return this.pumping.has(address);
  }

  /** One device of `address` has been sent its whole backlog. */
  backlogSent(address: string): void {
    const n = (this.pumping.get(address) ?? 1) - 1;
    if (n > 0) this.pumping.set(address, n);
    else this.pumping.delete(address);
  }
}
