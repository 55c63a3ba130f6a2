/**
 * Configuration reload: SIGHUP (lib/cli.ts), the backend API's op `reload`
 * and Server.reload() read the config the server started from again, apply
 * what can change while it runs, and name what needs a restart. A config
 * that the parser or the settings refuse changes nothing: the server runs
 * on the one it has, and the error (code, file:line) goes to the log and to
 * the caller. docs/operations.md "Reloading"; which setting takes effect
 * how: RELOAD below, the one source of the table in docs/config.md.
 *
 * Rooms read `server.settings` when they use a value (the rate limits per
 * frame, the inbox caps per copy, presence per request), so a reload only
 * writes the new values into that one object; it never reaches into
 * connections.
 */
import path from 'node:path';
import { parseConfig, type ParsedConfig } from '../config';
import type { CoreConfig, ModuleReloadReport } from '../core';
import { SwitchboardError } from '../errors';
import { errorText, type Logger } from '../log';
import { setConnectionCap, type LimitStats } from './limits';
import type { MetricCounts } from './metrics';
import { settingsFrom, type ServerSettings } from './settings';

/** `live`: a reload puts a change in force at once. `restart`: a reload reports it and keeps the old value. */
export type Reloadability = 'live' | 'restart';

/**
 * Every setting of the config (the parser's list, cpp/config.cc) and how a
 * change to it takes effect. What is `restart` is bound when the server
 * starts: a socket (listen, metrics_listen, tls_*), the store (data_dir,
 * store, durable: copies held in memory follow the mode they were sent
 * under), the frame sizes the transport and the core were built with
 * (max_message_size), uWebSockets.js' per-route idle_timeout, and the CA
 * bundle the core's HTTPS client loaded (http_ca_file).
 */
export const RELOAD = {
  listen: 'restart',
  // Modules whose library path it changes are reloaded (the report's `modules`).
  module_dir: 'live',
  app_token: 'live',
  data_dir: 'restart',
  store: 'restart',
  tls_cert: 'restart',
  tls_key: 'restart',
  max_message_size: 'restart',
  rate_limit: 'live',
  idle_timeout: 'restart',
  log_level: 'live',
  log_format: 'live',
  http_ca_file: 'restart',
  durable: 'restart',
  durable_grace: 'live',
  login_timeout: 'live',
  max_connections: 'live',
  max_unauthenticated: 'live',
  max_unauthenticated_per_ip: 'live',
  max_connections_per_ip: 'live',
  max_connections_per_user: 'live',
  user_rate_limit: 'live',
  max_presence: 'live',
  presence: 'live',
  max_inbox_messages: 'live',
  max_inbox_bytes: 'live',
  metrics_listen: 'restart',
  metrics_token: 'live',
  cluster: 'restart',
  node: 'restart',
} as const satisfies Record<string, Reloadability>;

export type SettingName = keyof typeof RELOAD;

/** The setting each field of ServerSettings comes from: the compiler checks that every field has one. */
export const SETTING_OF: Record<keyof ServerSettings, SettingName> = {
  host: 'listen',
  port: 'listen',
  appToken: 'app_token',
  dataDir: 'data_dir',
  tlsCert: 'tls_cert',
  tlsKey: 'tls_key',
  maxMessageSize: 'max_message_size',
  rateLimit: 'rate_limit',
  idleTimeout: 'idle_timeout',
  logLevel: 'log_level',
  logFormat: 'log_format',
  durable: 'durable',
  durableGrace: 'durable_grace',
  loginTimeout: 'login_timeout',
  maxConnections: 'max_connections',
  maxUnauthenticated: 'max_unauthenticated',
  maxUnauthenticatedPerIp: 'max_unauthenticated_per_ip',
  maxConnectionsPerIp: 'max_connections_per_ip',
  maxConnectionsPerUser: 'max_connections_per_user',
  userRateLimit: 'user_rate_limit',
  maxPresence: 'max_presence',
  presence: 'presence',
  maxInboxMessages: 'max_inbox_messages',
  maxInboxBytes: 'max_inbox_bytes',
  metricsListen: 'metrics_listen',
  metricsToken: 'metrics_token',
  store: 'store',
  cluster: 'cluster',
  node: 'node',
};

/** Settings that are not ServerSettings fields (the core reads them, or only one value is accepted): compared as written, paths resolved. */
const OTHER = ['module_dir', 'http_ca_file'] as const satisfies readonly SettingName[];

function otherValues(cfg: ParsedConfig): Record<(typeof OTHER)[number], string> {
  const get = (k: string) => cfg.settings.find((s) => s.key === k)?.value;
  const resolved = (v: string | undefined) => (v === undefined ? '' : path.resolve(cfg.dir, v));
  return { module_dir: resolved(get('module_dir')), http_ca_file: resolved(get('http_ca_file')) };
}

/** What a reload did. */
export interface ReloadReport {
  /** The config file read (for config text, its label). */
  config: string;
  /** Settings whose value changed, in force now. */
  applied: SettingName[];
  /** Settings whose value differs from the running one and that only a restart applies; they keep their old value. */
  restart: SettingName[];
  /** What became of the module blocks (Core.reloadModules). */
  modules: ModuleReloadReport;
}

/** Where the server's config came from (Server.start's options), with the overrides that stay on top of every reload. */
export interface ConfigOrigin {
  configFile?: string;
  configText?: string;
  baseDir?: string;
  overrides?: Partial<ServerSettings>;
}

/** What a reload needs of the server: the settings object the rooms read, the core, and where to count and log. */
export interface Reloadable {
  readonly settings: ServerSettings;
  readonly logger: Logger;
  readonly stats: LimitStats;
  readonly metrics: MetricCounts;
  readonly core: { readonly closed: boolean; reloadModules(config: CoreConfig): Promise<ModuleReloadReport>; setLogLevel(serverLevel: number): void };
  /** After live settings were written: parts that keep their own copy (the delivery engine) take them. */
  settingsChanged(): void;
}

export class Reloader {
  /** Reloads run one after another: two SIGHUPs in a row must not interleave their module swaps. */
  private queue: Promise<unknown> = Promise.resolve();
  private readonly origin: CoreConfig;
  private readonly others: Record<(typeof OTHER)[number], string>;
  private readonly overrides: Partial<ServerSettings>;

  /** `cfg` is the config the server started with; relative paths resolve as they did then. */
  constructor(
    private readonly server: Reloadable,
    origin: ConfigOrigin,
    cfg: ParsedConfig,
  ) {
    this.overrides = origin.overrides ?? {};
    this.origin =
      origin.configText !== undefined
        ? { configText: origin.configText, configFile: origin.configFile, baseDir: origin.baseDir ?? process.cwd() }
        : { configFile: path.resolve(origin.configFile ?? 'mesibo.conf') };
    this.others = otherValues(cfg);
  }

  /**
   * Reads the config again and applies it (`configText`: this text instead,
   * for a server started from config text; later reloads read it again).
   * Rejects with the parser's or the settings' SwitchboardError (E_CONFIG_*)
   * when the config is refused; the server then runs on unchanged.
   */
  reload(configText?: string): Promise<ReloadReport> {
    const run = this.queue.then(() => this.run(configText));
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async run(configText: string | undefined): Promise<ReloadReport> {
    const { server } = this;
    const label = 'configText' in this.origin ? (this.origin.configFile ?? '<inline>') : this.origin.configFile;
    let source: CoreConfig = this.origin;
    if (configText !== undefined) {
      source = 'configText' in this.origin ? { ...this.origin, configText } : { configText, configFile: this.origin.configFile, baseDir: path.dirname(this.origin.configFile) };
    }
    let cfg: ParsedConfig;
    let next: ServerSettings;
    let modules: ModuleReloadReport;
    try {
      if (server.core.closed) throw new SwitchboardError('E_CORE_CLOSED', 'the server is stopped: there is nothing to reload');
      cfg = parseConfig('configText' in source ? { text: source.configText, file: label, dir: source.baseDir } : { file: source.configFile });
      next = { ...settingsFrom(cfg), ...this.overrides };
      modules = await server.core.reloadModules(source);
    } catch (e) {
      const err = SwitchboardError.from(e);
      server.metrics.reloadsFailed++;
      server.logger.event('server.reload_failed', {
        config: label,
        code: err.code,
        // The message names file:line for a config error; a bug keeps its stack.
        error: err.code === 'E_INTERNAL' ? errorText(e) : err.message,
        outcome: 'the server runs on with the configuration it had',
      });
      throw err;
    }
    if (configText !== undefined && 'configText' in this.origin) this.origin.configText = configText;
    const { applied, restart } = this.apply(cfg, next);
    // Modules follow the config's log_level, as at start (an override of the server's own level does not reach them).
    server.core.setLogLevel(settingsFrom(cfg).logLevel);
    server.metrics.reloadsOk++;
    const names = (l: string[]) => (l.length ? l.join(',') : undefined);
    const trouble = restart.length > 0 || modules.failed.length > 0 || modules.restart.length > 0;
    server.logger.event(
      'server.reloaded',
      {
        config: cfg.file,
        applied: names(applied) ?? 'none',
        restart: names(restart),
        modules_reloaded: names(modules.reloaded),
        modules_failed: names(modules.failed.map((f) => `${f.module} (${f.code}: ${f.message})`)),
        modules_restart: names(modules.restart),
      },
      trouble ? 'warn' : 'info',
    );
    return { config: cfg.file, applied, restart, modules };
  }

  /** Writes the live changes into server.settings and lists what changed. */
  private apply(cfg: ParsedConfig, next: ServerSettings): { applied: SettingName[]; restart: SettingName[] } {
    const { settings, logger } = this.server;
    const applied = new Set<SettingName>();
    const restart = new Set<SettingName>();
    const fields = Object.keys(SETTING_OF) as (keyof ServerSettings)[];
    for (const field of fields) {
      if (JSON.stringify(settings[field]) === JSON.stringify(next[field])) continue;
      (RELOAD[SETTING_OF[field]] === 'live' ? applied : restart).add(SETTING_OF[field]);
    }
    // Written per setting, not per field: a setting over two fields (listen) is applied whole or not at all.
    for (const field of fields) if (applied.has(SETTING_OF[field])) (settings as unknown as Record<string, unknown>)[field] = next[field];
    const others = otherValues(cfg);
    for (const key of OTHER) {
      if (others[key] === this.others[key]) continue;
      if (RELOAD[key] === 'live') {
        applied.add(key);
        this.others[key] = others[key];
      } else {
        restart.add(key);
      }
    }
    if (applied.has('log_level')) logger.setLevel(settings.logLevel);
    if (applied.has('log_format')) logger.setFormat(settings.logFormat);
    if (applied.has('max_connections')) setConnectionCap(this.server.stats, settings.maxConnections, logger);
    if (applied.size) this.server.settingsChanged();
    const order = Object.keys(RELOAD) as SettingName[];
    return { applied: order.filter((k) => applied.has(k)), restart: order.filter((k) => restart.has(k)) };
  }
}
