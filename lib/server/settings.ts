/**
 * Server settings from mesibo.conf's top-level keys (docs/config.md), with
 * the embedded defaults and a clear error for every bad value.
 */
import path from 'node:path';
import { SwitchboardError } from '../errors';
import type { ParsedConfig } from '../config';
import type { LogFormat } from '../log';
import type { PresencePolicy } from './presence';

export interface ServerSettings {
  host: string;
  port: number;
  appToken: string | null;
  dataDir: string;
  tlsCert: string | null;
  tlsKey: string | null;
  maxMessageSize: number;
  /** Frames per second per connection (token bucket, burst of one second). */
  rateLimit: number;
  idleTimeout: number;
  logLevel: number;
  /** `text` (one line per event, for people) or `json` (pino, for log collectors). */
  logFormat: LogFormat;
  durable: boolean;
  /**
   * With durable on: ms a message to an online recipient may wait for the
   * recipient's delivered status before it is written to the store (0:
   * every message is written before anyone sees it).
   */
  durableGrace: number;
  /** Seconds a socket may stay open without logging in (close 4008). */
  loginTimeout: number;
  /** Cap on all connections; 0: the file-descriptor limit less a reserve (limits.ts). */
  maxConnections: number;
  /** Sockets not logged in yet, in all and from one IP (0: no per-IP cap). */
  maxUnauthenticated: number;
  maxUnauthenticatedPerIp: number;
  /** Connections from one IP (0: no cap) and of one user. */
  maxConnectionsPerIp: number;
  maxConnectionsPerUser: number;
  /** Message frames per second for all connections of one user together. */
  userRateLimit: number;
  /** Presence subscriptions one connection may hold. */
  maxPresence: number;
  presence: PresencePolicy;
  /** What may wait in the store for one recipient. */
  maxInboxMessages: number;
  maxInboxBytes: number;
  /**
   * `sqlite` (the embedded file in data_dir) or a PostgreSQL URL,
   * postgresql://USER[:PASSWORD]@HOST:PORT/DB (lib/store/postgres.ts).
   */
  store: string;
  /**
   * NATS URLs (`cluster = nats://HOST:PORT[,nats://...]`): this server is
   * one node of a cluster (docs/cluster.md); null: a single node.
   */
  cluster: string[] | null;
  /** This node's name in the cluster (`node`); null: HOSTNAME-PORT, with the port it listens on (Server.nodeName). */
  node: string | null;
  /** GET /metrics on its own HOST:PORT (null: on the server's port). */
  metricsListen: { host: string; port: number } | null;
  /** When set, /metrics needs `Authorization: Bearer <metrics_token>`. */
  metricsToken: string | null;
}

export const DEFAULTS = {
  listen: '127.0.0.1:5222',
  dataDir: 'data',
  maxMessageSize: 65536,
  rateLimit: 1000,
  idleTimeout: 120,
  logLevel: 1,
  durableGrace: 50,
  loginTimeout: 10,
  maxConnections: 0,
  maxUnauthenticated: 1000,
  maxUnauthenticatedPerIp: 64,
  maxConnectionsPerIp: 1000,
  maxConnectionsPerUser: 16,
  maxPresence: 256,
  presence: 'all' as PresencePolicy,
  maxInboxMessages: 10_000,
  maxInboxBytes: 64 << 20,
};

function bad(cfg: ParsedConfig, key: string, value: string, expected: string): SwitchboardError {
  const item = cfg.settings.find((s) => s.key === key);
  return new SwitchboardError('E_CONFIG_BAD_VALUE', `${cfg.file}:${item?.line ?? 0}: ${key} = "${value}": ${expected}`, { file: cfg.file, line: item?.line });
}

function int(cfg: ParsedConfig, key: string, def: number, min: number, max: number): number {
  const v = cfg.settings.find((s) => s.key === key)?.value;
  if (v === undefined) return def;
  if (!/^\d+$/.test(v) || Number(v) < min || Number(v) > max) throw bad(cfg, key, v, `expected a whole number from ${min} to ${max}`);
  return Number(v);
}

/** HOST:PORT of `listen` or `metrics_listen`; an empty host is every address. */
function hostPort(cfg: ParsedConfig, key: string, v: string): { host: string; port: number } {
  const m = /^(\[[^\]]+\]|[^:]*):(\d+)$/.exec(v);
  if (!m || Number(m[2]) > 65535) throw bad(cfg, key, v, 'expected HOST:PORT, e.g. 127.0.0.1:5222 (port 0 picks a free one)');
  return { host: m[1].replace(/^\[|\]$/g, '') || '0.0.0.0', port: Number(m[2]) };
}

/** A store URL as it may be shown: without its password. */
export function storeLabel(store: string): string {
  return store.replace(/^(postgresql:\/\/[^:@/]*):[^@/]*@/, '$1:***@');
}

/**
 * `sqlite`, or postgresql://USER[:PASSWORD]@HOST:PORT/DB with every part
 * there: a URL that leaves one out would connect with a libpq default (the
 * OS user, port 5432, a database named after the user) the operator did not
 * choose. The password never appears in the error.
 */
function storeSetting(cfg: ParsedConfig, v: string): string {
  if (v === 'sqlite') return v;
  const shape = 'expected sqlite (the embedded file in data_dir) or postgresql://USER[:PASSWORD]@HOST:PORT/DB (the password may come from PGPASSWORD instead)';
  let u: URL | null = null;
  try {
    u = new URL(v);
  } catch {
    u = null;
  }
  if (!u || u.protocol !== 'postgresql:' || !u.username || !u.hostname || !u.port || !/^\/[^/]+$/.test(u.pathname)) throw bad(cfg, 'store', storeLabel(v), shape);
  return v;
}

/** nats://HOST:PORT, one or several, comma-separated; a cluster needs the shared PostgreSQL store. */
function clusterSetting(cfg: ParsedConfig, v: string | undefined, store: string): string[] | null {
  if (v === undefined || v.trim() === '') return null;
  const urls = v.split(',').map((u) => u.trim()).filter((u) => u !== '');
  for (const u of urls) {
    let ok = false;
    try {
      const url = new URL(u);
      ok = url.protocol === 'nats:' && url.hostname !== '' && url.port !== '';
    } catch {
      ok = false;
    }
    if (!ok) throw bad(cfg, 'cluster', v, 'expected nats://HOST:PORT, or several separated by commas');
  }
  if (store === 'sqlite') throw bad(cfg, 'cluster', v, 'a cluster shares its users, groups and waiting messages in PostgreSQL: set store = postgresql://USER@HOST:PORT/DB on every node');
  return urls;
}

/** A node name: what the cluster's subjects can carry, readable in logs. */
function nodeSetting(cfg: ParsedConfig, v: string): string {
  if (!/^[A-Za-z0-9_-][A-Za-z0-9_.:-]{0,63}$/.test(v)) throw bad(cfg, 'node', v, 'expected 1 to 64 letters, digits, "_", "-", "." or ":", unique in the cluster');
  return v;
}

export function settingsFrom(cfg: ParsedConfig): ServerSettings {
  const get = (k: string) => cfg.settings.find((s) => s.key === k)?.value;
  const { host, port } = hostPort(cfg, 'listen', get('listen') ?? DEFAULTS.listen);
  const metricsListen = get('metrics_listen');
  const resolve = (p: string) => (path.isAbsolute(p) ? p : path.join(cfg.dir, p));
  const tlsCert = get('tls_cert') ?? null;
  const tlsKey = get('tls_key') ?? null;
  if ((tlsCert === null) !== (tlsKey === null)) throw bad(cfg, tlsCert ? 'tls_cert' : 'tls_key', (tlsCert ?? tlsKey)!, 'TLS needs both tls_cert and tls_key');
  const durable = get('durable') ?? 'on';
  // Exactly the two documented words: "false" or "0" read as "on" would be
  // a durability promise the operator did not mean to give, or to take away.
  if (durable !== 'on' && durable !== 'off') throw bad(cfg, 'durable', durable, 'expected on or off');
  const logFormat = get('log_format') ?? 'text';
  if (logFormat !== 'text' && logFormat !== 'json') throw bad(cfg, 'log_format', logFormat, 'expected text (one line per event, for people) or json (for log collectors)');
  const store = storeSetting(cfg, get('store') ?? 'sqlite');
  const cluster = clusterSetting(cfg, get('cluster'), store);
  const presence = get('presence') ?? DEFAULTS.presence;
  if (presence !== 'all' && presence !== 'contacts' && presence !== 'none') throw bad(cfg, 'presence', presence, 'expected all, contacts or none');
  const rateLimit = int(cfg, 'rate_limit', DEFAULTS.rateLimit, 1, 10_000_000);
  return {
    host,
    port,
    appToken: get('app_token') || null,
    dataDir: resolve(get('data_dir') ?? DEFAULTS.dataDir),
    tlsCert: tlsCert && resolve(tlsCert),
    tlsKey: tlsKey && resolve(tlsKey),
    maxMessageSize: int(cfg, 'max_message_size', DEFAULTS.maxMessageSize, 1, 64 << 20),
    rateLimit,
    idleTimeout: int(cfg, 'idle_timeout', DEFAULTS.idleTimeout, 0, 3600),
    logLevel: int(cfg, 'log_level', DEFAULTS.logLevel, 0, 3),
    logFormat,
    durable: durable === 'on',
    durableGrace: int(cfg, 'durable_grace', DEFAULTS.durableGrace, 0, 60_000),
    loginTimeout: int(cfg, 'login_timeout', DEFAULTS.loginTimeout, 1, 3600),
    maxConnections: int(cfg, 'max_connections', DEFAULTS.maxConnections, 0, 10_000_000),
    maxUnauthenticated: int(cfg, 'max_unauthenticated', DEFAULTS.maxUnauthenticated, 1, 10_000_000),
    maxUnauthenticatedPerIp: int(cfg, 'max_unauthenticated_per_ip', DEFAULTS.maxUnauthenticatedPerIp, 0, 10_000_000),
    maxConnectionsPerIp: int(cfg, 'max_connections_per_ip', DEFAULTS.maxConnectionsPerIp, 0, 10_000_000),
    maxConnectionsPerUser: int(cfg, 'max_connections_per_user', DEFAULTS.maxConnectionsPerUser, 1, 10_000),
    // Twice one connection's: a user on two devices is not slowed down.
    userRateLimit: int(cfg, 'user_rate_limit', 2 * rateLimit, 1, 20_000_000),
    maxPresence: int(cfg, 'max_presence', DEFAULTS.maxPresence, 0, 1_000_000),
    presence,
    maxInboxMessages: int(cfg, 'max_inbox_messages', DEFAULTS.maxInboxMessages, 1, 1_000_000_000),
    maxInboxBytes: int(cfg, 'max_inbox_bytes', DEFAULTS.maxInboxBytes, 1, Number.MAX_SAFE_INTEGER),
    store,
    cluster,
    node: get('node') === undefined ? null : nodeSetting(cfg, get('node')!),
    metricsListen: metricsListen ? hostPort(cfg, 'metrics_listen', metricsListen) : null,
    metricsToken: get('metrics_token') || null,
  };
}
