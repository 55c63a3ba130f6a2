/**
 * The limits that keep one client from exhausting the server
 * (docs/config.md, "Limits"): connection counts by IP and user, the
 * file-descriptor headroom, and the counters the server exposes as
 * `server.stats` and in `/health`. The rate limits (token buckets per
 * connection and per user) are the delivery engine's admission
 * (cpp/admit.h), met in the same native call as the frame's submit.
 */
import fs from 'node:fs';
import type { Logger } from '../log';

/**
 * File descriptors the process may open (the soft RLIMIT_NOFILE; Node
 * raises it to the hard limit at start-up), or null where /proc is missing.
 */
export function fileDescriptorLimit(): number | null {
  try {
    const m = /^Max open files\s+(\d+|unlimited)/m.exec(fs.readFileSync('/proc/self/limits', 'utf8'));
    if (!m) return null;
    return m[1] === 'unlimited' ? Number.MAX_SAFE_INTEGER : Number(m[1]);
  } catch {
    return null;
  }
}

/**
 * Descriptors kept free of client connections: the store (database, WAL,
 * journal), modules' HTTP/socket/FastCGI clients, the backend API's own
 * requests and log files. An attack that fills every connection slot then
 * still leaves the process able to work.
 */
export const FD_RESERVE = 256;

/**
 * The connection cap in effect: `configured` (0: automatic) but never more
 * than the descriptor limit less FD_RESERVE.
 */
export function connectionCap(configured: number, fdLimit: number | null): number {
  const room = fdLimit === null ? Number.MAX_SAFE_INTEGER : Math.max(fdLimit - FD_RESERVE, 16);
  if (configured === 0) return fdLimit === null ? 10_000 : room;
  return Math.min(configured, room);
}

/**
 * Puts the cap for `configured` (max_connections) into `stats`, at start and
 * when a reload changes it, and logs when the descriptors lowered it.
 * Connections already open above a lowered cap stay; new ones are refused.
 */
export function setConnectionCap(stats: LimitStats, configured: number, logger: Logger): void {
  const fds = fileDescriptorLimit();
  stats.connectionCap = connectionCap(configured, fds);
  if (configured > stats.connectionCap) {
    logger.event('server.setting_lowered', {
      setting: 'max_connections',
      value: configured,
      used: stats.connectionCap,
      reason: `the process may open ${fds} file descriptors, less a reserve for the store and modules; raise the limit with ulimit -n or LimitNOFILE=`,
    });
  }
}

/** Address rule of the wire format: 1 to 255 bytes of UTF-8, no byte below 0x20. */
export function validAddress(s: unknown): s is string {
  if (typeof s !== 'string' || s.length === 0 || s.length > 255) return false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20) return false;
    // A lone surrogate has no UTF-8 form.
    if (c >= 0xd800 && c <= 0xdfff) {
      const lead = c <= 0xdbff;
      const next = s.charCodeAt(i + 1);
      if (!lead || !(next >= 0xdc00 && next <= 0xdfff)) return false;
      i++;
    }
  }
  return Buffer.byteLength(s) <= 255;
}

/** The longest `device` label, in bytes. */
export const MAX_DEVICE = 64;

/** A device label: empty, or up to MAX_DEVICE bytes of UTF-8 with no control characters. */
export function validDevice(s: string): boolean {
  return s === '' || (validAddress(s) && Buffer.byteLength(s) <= MAX_DEVICE);
}

/**
 * What the limits did, for monitoring (`server.stats`, `/health`): gauges
 * of what is open now and counters that only grow. Plain numbers, so an
 * exporter can turn each into a metric of the same name.
 */
export interface LimitStats {
  /** Gauge: logged-in connections. */
  connections: number;
  /** Gauge: connections that have not logged in yet. */
  unauthenticated: number;
  /** The cap on all connections in effect (max_connections and the descriptor headroom). */
  connectionCap: number;
  /** Sockets closed because they did not log in within login_timeout (close 4008). */
  loginTimeouts: number;
  /** Oldest unauthenticated sockets closed to make room for a new one (max_unauthenticated). */
  unauthenticatedEvicted: number;
  /** Upgrades refused with HTTP 503: the server is at its connection cap. */
  refusedServerFull: number;
  /** Upgrades refused with HTTP 429: the IP is at max_connections_per_ip or max_unauthenticated_per_ip. */
  refusedPerIp: number;
  /** Logins refused with E_TOO_MANY_CONNECTIONS (max_connections_per_user). */
  refusedPerUser: number;
  /** Logins refused with E_BAD_DEVICE. */
  refusedBadDevice: number;
  /** Message frames dropped with E_RATE_LIMITED, by the connection's bucket or the user's. */
  rateLimited: number;
  /** Status frames (acknowledgements, receipts) dropped with E_RATE_LIMITED. */
  statusesRateLimited: number;
  /** Presence requests refused (E_BAD_ADDRESS, E_PRESENCE_LIMIT, E_PRESENCE_DENIED). */
  presenceRefused: number;
  /** Gauge: presence subscriptions held by all connections. */
  presenceSubscriptions: number;
  /** Copies refused because the recipient's inbox was full (status 0x82). */
  inboxFull: number;
  /** Frames over the frame limit, answered with E_FRAME_TOO_LARGE. */
  framesTooLarge: number;
  /** Connections uWebSockets.js ended (1006) for a text message that is not UTF-8. */
  invalidText: number;
}

export function newStats(connectionCap: number): LimitStats {
  return {
    connections: 0,
    unauthenticated: 0,
    connectionCap,
    loginTimeouts: 0,
    unauthenticatedEvicted: 0,
    refusedServerFull: 0,
    refusedPerIp: 0,
    refusedPerUser: 0,
    refusedBadDevice: 0,
    rateLimited: 0,
    statusesRateLimited: 0,
    presenceRefused: 0,
    presenceSubscriptions: 0,
    inboxFull: 0,
    framesTooLarge: 0,
    invalidText: 0,
  };
}

/** Connections of one IP: all of them, and those not logged in yet. */
export interface IpCount {
  all: number;
  unauth: number;
}
