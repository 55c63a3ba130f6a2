/**
 * Server settings from mesibo.conf's top-level keys (docs/config.md), with
 * the embedded defaults and a clear error for every bad value.
 */
import path from 'node:path';
import { SwitchboardError } from '../errors';
import type { ParsedConfig } from '../config';

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
  durable: boolean;
  /**
   * With durable on: ms a message to an online recipient may wait for the
   * recipient's delivered status before it is written to the store (0:
   * every message is written before anyone sees it).
   */
  durableGrace: number;
}

export const DEFAULTS = {
  listen: '127.0.0.1:5222',
  dataDir: 'data',
  maxMessageSize: 65536,
  rateLimit: 1000,
  idleTimeout: 120,
  logLevel: 1,
  durableGrace: 50,
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

export function settingsFrom(cfg: ParsedConfig): ServerSettings {
  const get = (k: string) => cfg.settings.find((s) => s.key === k)?.value;
  const listen = get('listen') ?? DEFAULTS.listen;
  const m = /^(\[[^\]]+\]|[^:]*):(\d+)$/.exec(listen);
  if (!m || Number(m[2]) > 65535) throw bad(cfg, 'listen', listen, 'expected HOST:PORT, e.g. 127.0.0.1:5222 (port 0 picks a free one)');
  const host = m[1].replace(/^\[|\]$/g, '') || '0.0.0.0';
  const resolve = (p: string) => (path.isAbsolute(p) ? p : path.join(cfg.dir, p));
  const tlsCert = get('tls_cert') ?? null;
  const tlsKey = get('tls_key') ?? null;
  if ((tlsCert === null) !== (tlsKey === null)) throw bad(cfg, tlsCert ? 'tls_cert' : 'tls_key', (tlsCert ?? tlsKey)!, 'TLS needs both tls_cert and tls_key');
  const durable = get('durable') ?? 'on';
  // Exactly the two documented words: "false" or "0" read as "on" would be
  // a durability promise the operator did not mean to give, or to take away.
  if (durable !== 'on' && durable !== 'off') throw bad(cfg, 'durable', durable, 'expected on or off');
  const store = get('store') ?? 'sqlite';
  if (store !== 'sqlite') throw bad(cfg, 'store', store, 'this release has the embedded SQLite store only: store = sqlite');
  return {
    host,
    port: Number(m[2]),
    appToken: get('app_token') || null,
    dataDir: resolve(get('data_dir') ?? DEFAULTS.dataDir),
    tlsCert: tlsCert && resolve(tlsCert),
    tlsKey: tlsKey && resolve(tlsKey),
    maxMessageSize: int(cfg, 'max_message_size', DEFAULTS.maxMessageSize, 1, 64 << 20),
    rateLimit: int(cfg, 'rate_limit', DEFAULTS.rateLimit, 1, 10_000_000),
    idleTimeout: int(cfg, 'idle_timeout', DEFAULTS.idleTimeout, 0, 3600),
    logLevel: int(cfg, 'log_level', DEFAULTS.logLevel, 0, 3),
    durable: durable === 'on',
    durableGrace: int(cfg, 'durable_grace', DEFAULTS.durableGrace, 0, 60_000),
  };
}
