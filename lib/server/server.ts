/**
 * The messaging server: the public facade over its rooms. uWebSockets.js
 * carries client traffic; each room has one job and its own file:
 *
 * - sessions.ts: a socket from upgrade to close (limits, login, backlog);
 * - intake.ts: a frame from a client or the backend API up to the core
 *   (rate limits, control frames, deferred decisions);
 * - stages.ts: the middleware stages around the chain;
 * - router.ts: the core and the delivery engine (lib/delivery.ts, in C++:
 *   where each copy goes, live copies, receipts, what waits for the
 *   commit), and the per-recipient middleware the engine hands back;
 * - delivery.ts: performs the engine's batch (writes to this node's
 *   connections, store operations, the live timer);
 * - commit.ts: the group commit, then the release of what waited for it;
 * - connections.ts, directory.ts: who is connected, who exists.
 *
 * A frame goes: Sessions (login) or Intake.frame -> Router.submit (core
 * and engine, one native call) -> Delivery.perform -> Commit.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import uWS from 'uWebSockets.js';
import { parseConfig, type ParsedConfig } from '../config';
import { Core, type LogEntry } from '../core';
import { SwitchboardError, type ErrorCode } from '../errors';
import { errorText, EVENTS, Logger, type LogEvent } from '../log';
import type { ModuleExport, ModuleHandle, UseOptions } from '../modules';
import { Bot } from './bot';
import type { Middlewares } from './pipeline';
import { SyncStoreAdapter } from '../store/async';
import { PostgresStore } from '../store/postgres';
import { SqliteStore } from '../store/sqlite';
import type { AsyncStore, Store } from '../store/types';
import { handleApi, type ApiContext } from './api';
import { settingsFrom, storeLabel, type ServerSettings } from './settings';
import { Reloader, type ReloadReport } from './reload';
import { requireNativeUws } from './transport';
import { hashToken, newToken } from './tokens';
import { newStats, setConnectionCap, type LimitStats } from './limits';
import { Presence } from './presence';
import { metricsAuthorized, newCounts, ProcessMetrics, renderMetrics, type MetricCounts, type MetricSources } from './metrics';
import { renderStatusPage, statusSnapshot, WarningRing } from './status';
import { Delivery as Engine } from '../delivery';
import { Commit } from './commit';
import { Connections, type Conn } from './connections';
import { Delivery, MAX_BACKPRESSURE } from './delivery';
import { Directory } from './directory';
import { Intake } from './intake';
import { FLAG_RECEIPTS } from './protocol';
import { Router } from './router';
import { Sessions } from './sessions';
import { Stages } from './stages';
import { InboxCounts } from './inbox-counts';
import { StoreHealth } from './store-health';
import { ClusterBus } from '../cluster/bus';
import { Cluster, type DirectoryChange } from './cluster';

export { Status } from './protocol';

export interface StartOptions {
  /** A config file (default: ./mesibo.conf), or config text. */
  configFile?: string;
  configText?: string;
  /** Folder relative paths in configText resolve against (default: cwd). */
  baseDir?: string;
  /**
   * Replace settings after the config is read (tests: port 0, a temp
   * data_dir). A logLevel here sets the server's own log only: modules
   * follow the config's log_level (their `log` items are read by the core).
   */
  overrides?: Partial<ServerSettings>;
  /** Receives every log line (in the config's log_format, without the newline); default: stderr. */
  log?: (line: string) => void;
  /**
   * Opens the store on the data_dir's file when `store = sqlite` (default:
   * SqliteStore.open). The seam for another synchronous engine
   * (docs/store.md), and for tests that wrap the SQLite store, e.g. to make
   * its commit asynchronous. With `store = postgresql://...` the server
   * opens a PostgresStore instead.
   */
  openStore?: (file: string) => Store;
}

/** What the server reads from the store before it serves anyone. */
interface Loaded {
  users: string[];
  groups: { gid: number; members: string[] }[];
  receipts: { recipient: string; sender: string; id: number; groupid: number; flags: number }[];
}

const VERSION: string = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'package.json'), 'utf8')).version;

export class Server {
  readonly settings: ServerSettings;
  readonly core: Core;
  /**
   * The store as opened: the SqliteStore (or openStore's) with `store =
   * sqlite`, whose calls answer at once, or the PostgresStore. The server
   * itself uses it through the asynchronous interface (`db`).
   */
  readonly store: Store | AsyncStore;
  private readonly db: AsyncStore;
  /** The port actually listened on (useful with port 0). */
  port = 0;

  private readonly app: uWS.TemplatedApp;
  private listenSocket: uWS.us_listen_socket | null = null;
  /** The server's log (log_level, log_format); tap() it to see what it writes. */
  readonly logger: Logger;
  private purgeTimer: NodeJS.Timeout | null = null;
  private stopped = false;
  /**
   * The Botkit-style stages (docs/pipeline.md). An empty stage costs one
   * property check per message.
   */
  readonly middleware: Middlewares;
  private readonly bots = new Map<string, Bot>();
  private readonly limitStats: LimitStats;
  private readonly counts: MetricCounts = newCounts();
  private readonly processMetrics = new ProcessMetrics();
  private metricsApp: uWS.TemplatedApp | null = null;
  private metricsSocket: uWS.us_listen_socket | null = null;
  /** The port /metrics is served on: metrics_listen's, or the server's. */
  metricsPort = 0;
  /** The last level-0 log events, for GET /status (status.ts). */
  private readonly warnings = new WarningRing();
  private readonly untapWarnings: () => void;
  private readonly startedAt = Date.now();
  /** Set by start(): re-reads the config it started from. */
  private reloader!: Reloader;

  // The rooms, in the order a message meets them.
  private readonly sessions: Sessions;
  private readonly intake: Intake;
  private readonly stages: Stages;
  private readonly router: Router;
  private readonly engine: Engine;
  private readonly delivery: Delivery;
  private readonly commit: Commit;
  private readonly connections = new Connections();
  private readonly directory: Directory;
  private readonly presence: Presence;
  private readonly inbox: InboxCounts;
  private readonly health: StoreHealth;
  /** What server.listening and the status page say the store is (a PostgreSQL URL without its password). */
  private readonly storeName: string;
  /** This node's part of a cluster (`cluster = nats://...`); null on a single node. */
  private readonly cluster: Cluster | null = null;
  /** Directory changes other nodes made while this node read the directory again at start (catchUpDirectory). */
  private heldChanges: DirectoryChange[] | null = null;
  /** afterOutage() runs; an outage that ended meanwhile has it run again. */
  private catchingUp = false;
  private catchUpAgain = false;

  private constructor(settings: ServerSettings, core: Core, opened: Store | AsyncStore, store: AsyncStore, storeName: string, loaded: Loaded, inbox: InboxCounts, logger: Logger, bus: ClusterBus | null) {
    this.settings = settings;
    this.core = core;
    this.store = opened;
    this.db = store;
    this.storeName = storeName;
    this.inbox = inbox;
    this.logger = logger;
    this.untapWarnings = logger.tap((r) => this.warnings.add(r));
    this.health = new StoreHealth(store, logger, () => inbox.reload());
    this.directory = new Directory(loaded.users, loaded.groups);
    this.limitStats = newStats(0);
    setConnectionCap(this.limitStats, settings.maxConnections, logger);
    this.presence = new Presence(settings, this.directory);
    this.app = settings.tlsCert ? uWS.SSLApp({ cert_file_name: settings.tlsCert, key_file_name: settings.tlsKey! }) : uWS.App();
    // The delivery engine: every per-message decision, on integer ids
    // (docs/delivery.md). Its two questions for the store are off the
    // plain path and answered from memory, since it asks synchronously: a
    // group's members (the directory holds every group), and an inbox's
    // committed count (inbox-counts.ts reads them ahead).
    const engine = new Engine(
      {
        durable: settings.durable, graceMs: settings.durableGrace,
        // Room for this many at first; the table doubles when full (the
        // server's own limits decide how many connections there are).
        maxConnections: 64,
        maxInboxMessages: settings.maxInboxMessages, maxInboxBytes: settings.maxInboxBytes,
        rateLimit: settings.rateLimit, userRateLimit: settings.userRateLimit,
        cluster: bus !== null,
      },
      {
        loadGroup: (gid) => this.directory.group(gid),
        inboxCount: (user: number): [number, number] => inbox.count(engine.name(user)),
      },
      core,
    );
    this.engine = engine;
    this.directory.attach(engine);
    inbox.attach(engine);
    for (const r of loaded.receipts) engine.trackReceipt(engine.intern(r.sender), engine.intern(r.recipient), r.id, r.flags, r.groupid);
    // Only the store knows whether an acknowledgement deleted a copy (a
    // transient message's never does). Not undone: the server closes the
    // store with itself.
    store.onCopyDeleted((recipient) => engine.inboxRemoved(engine.intern(recipient)));
    // Every room holds the one settings object and reads it when it acts.
    this.stages = new Stages(settings, core, logger, this.bots);
    this.middleware = this.stages.middleware;
    this.delivery = new Delivery(engine, store, settings, this.connections, this.middleware, this.counts, logger);
    this.commit = new Commit(store, engine, this.delivery, this.counts, logger, this.health);
    this.delivery.commit = this.commit;
    this.router = new Router(core, engine, this.directory, this.delivery, this.presence, this.stages, logger);
    this.sessions = new Sessions(settings, this.app, store, core, this.connections, engine, this.commit, this.delivery, this.limitStats, this.counts, logger, this.health);
    this.intake = new Intake(settings, core, engine, this.connections, this.sessions, this.stages, this.router, this.presence, this.commit, this.limitStats, logger);
    this.sessions.replay = (ws, ab, isBinary) => this.intake.frame(ws, ab, isBinary);
    if (bus) {
      this.cluster = new Cluster(
        bus,
        engine,
        {
          perform: () => this.delivery.perform(),
          whenCommitted: (fn) => this.commit.whenCommitted(fn),
          presence: (user, online) => this.app.publish(`p/${user}`, JSON.stringify({ op: 'presence', from: user, online }), false),
          directory: (change) => (this.heldChanges ? this.heldChanges.push(change) : this.directoryChanged(change)),
          talked: (a, b) => this.presence.heard(a, b),
        },
        logger,
        settings.durable,
      );
      this.heldChanges = [];
      bus.on('connected', () => void this.afterOutage(bus));
      this.delivery.cluster = this.cluster;
      this.sessions.cluster = this.cluster;
      this.intake.cluster = this.cluster;
      const cluster = this.cluster;
      this.presence.shared = (a, b) => cluster.talked(a, b);
    }
    core.on('message', (m) => this.router.moduleMessage(m));
    core.on('complete', (token, verdict, from) => this.intake.completed(token, verdict, from));
    this.installRoutes();
  }

  /** Reads the config, opens the core and the store, and listens. Rejects with a SwitchboardError on any start-up problem. */
  static async start(opts: StartOptions = {}): Promise<Server> {
    requireNativeUws(uWS);
    const cfg =
      opts.configText !== undefined
        ? parseConfig({ text: opts.configText, file: opts.configFile ?? '<inline>', dir: opts.baseDir ?? process.cwd() })
        : parseConfig({ file: path.resolve(opts.configFile ?? 'mesibo.conf') });
    const settings = { ...settingsFrom(cfg), ...opts.overrides };
    const logger = new Logger({ level: settings.logLevel, format: settings.logFormat, sink: opts.log });
    logger.event('server.start', { version: VERSION, node: process.version, config: cfg.file, pid: process.pid });
    for (const f of [settings.tlsCert, settings.tlsKey]) {
      if (f && !fs.existsSync(f)) throw new SwitchboardError('E_TLS', `TLS file ${f} does not exist; fix tls_cert/tls_key in ${cfg.file}`);
    }
    try {
      fs.mkdirSync(settings.dataDir, { recursive: true });
      fs.accessSync(settings.dataDir, fs.constants.W_OK);
    } catch (e) {
      throw new SwitchboardError('E_DATA_DIR', `data_dir ${settings.dataDir} is not a writable folder (${(e as Error).message}); create it or point data_dir elsewhere`);
    }
    const storeFile = path.join(settings.dataDir, 'switchboard.db');
    let opened: Store | AsyncStore;
    let store: AsyncStore;
    if (settings.store === 'sqlite') {
      opened = (opts.openStore ?? SqliteStore.open)(storeFile);
      store = new SyncStoreAdapter(opened);
    } else {
      // Bounded: an unreachable database fails the start (E_STORE_OPEN)
      // within the timeout instead of hanging it.
      store = opened = await PostgresStore.open(settings.store);
    }
    // SQLite answers the engine's question at once; PostgreSQL's counts are read ahead.
    const sync = settings.store === 'sqlite' ? (opened as Store) : null;
    const inbox = new InboxCounts(store, sync && ((recipient) => sync.queued(recipient)), settings, logger);
    let loaded: Loaded;
    try {
      const [users, groups, receipts] = await Promise.all([store.listUsers(), store.listGroups(), store.receiptFlagsPending(FLAG_RECEIPTS), inbox.load()]);
      loaded = { users, groups, receipts };
    } catch (e) {
      await closeAfterFailedStart(store, logger);
      throw e;
    }
    let core: Core;
    try {
      // The core's own lines (module null) are its warnings.
      const coreLog = (e: LogEntry) => {
        if (e.module) logger.moduleLine(e.module, e.level, e.text);
        else if (e.event && e.event in EVENTS) logger.event(e.event as LogEvent, { module: e.subject, text: e.text });
        else logger.event('core.warning', { text: e.text });
      };
      core =
        opts.configText !== undefined
          ? Core.open({ configText: opts.configText, configFile: opts.configFile, baseDir: opts.baseDir ?? process.cwd() }, { onLog: coreLog })
          : Core.open({ configFile: path.resolve(opts.configFile ?? 'mesibo.conf') }, { onLog: coreLog });
    } catch (e) {
      await closeAfterFailedStart(store, logger);
      throw e;
    }
    let bus: ClusterBus | null = null;
    if (settings.cluster) {
      // The room is made with the server; what the bus delivers for a user
      // before then has nobody to go to (no user is subscribed yet).
      let received: ((user: string, item: Uint8Array, from: string) => void) | null = null;
      try {
        // The default name (HOSTNAME-PORT) takes the configured port; a node on port 0 has no stable name and should set one.
        const node = settings.node ?? `${os.hostname()}-${settings.port}`;
        // Silent until the cluster room has subscribed to its broadcasts:
        // the others announce their users to a node the moment they hear it.
        bus = await ClusterBus.connect({ servers: settings.cluster, node, join: false, onUser: (user, item, from) => received?.(user, item, from) });
      } catch (e) {
        core.close();
        await closeAfterFailedStart(store, logger);
        throw e;
      }
      watchBus(bus, logger);
      const server = new Server(settings, core, opened, store, storeLabel(settings.store), loaded, inbox, logger, bus);
      received = (user, item, from) => server.cluster!.received(user, item, from);
      bus.join();
      await server.catchUpDirectory(bus);
      return Server.started(server, opts, cfg, settings, logger);
    }
    const server = new Server(settings, core, opened, store, settings.store === 'sqlite' ? storeFile : storeLabel(settings.store), loaded, inbox, logger, null);
    return Server.started(server, opts, cfg, settings, logger);
  }

  /** The rest of start(), once the server is built: modules' init, listening, the purge timer. */
  private static async started(server: Server, opts: StartOptions, cfg: ParsedConfig, settings: ServerSettings, logger: Logger): Promise<Server> {
    const core = server.core;
    server.reloader = new Reloader(server, opts, cfg);
    try {
      await core.ready; // script modules' init
      core.drain(); // what their init logged comes before "listening"
      await server.listen();
    } catch (e) {
      await server.abandon();
      throw e;
    }
    let purging = false;
    server.purgeTimer = setInterval(() => {
      server.sessions.purge();
      if (purging) return;
      purging = true;
      server.db.purgeExpired().then(
        (n) => {
          purging = false;
          if (n) server.inbox.reload();
        },
        (e: unknown) => {
          purging = false;
          // Expired messages stay until the next purge succeeds; nothing is lost.
          logger.event('store.error', { op: 'purge', error: errorText(e) });
        },
      );
    }, 60_000);
    server.purgeTimer.unref();
    const scheme = settings.tlsCert ? 'wss' : 'ws';
    for (const m of core.modules) logger.event('module.loaded', { module: m.name, position: m.position, kind: m.script ? 'script' : 'native', file: m.file, log_level: m.logLevel });
    const host = settings.host.includes(':') ? `[${settings.host}]` : settings.host;
    logger.event('server.listening', { url: `${scheme}://${host}:${server.port}`, modules: core.modules.map((m) => m.name).join(',') || 'none', store: server.storeName, durable: settings.durable ? 'on' : 'off', log_level: settings.logLevel });
    return server;
  }

  /**
   * Undoes a start that failed once the server was built (a module's init,
   * listening): nothing was routed and nothing listens (listen() closes
   * what it opened), so this releases the rest, and start rejects only once
   * the store, whose close may be asynchronous, has closed.
   */
  private async abandon(): Promise<void> {
    this.processMetrics.stop();
    this.untapWarnings();
    this.core.close();
    (this.app as unknown as { close?: () => void }).close?.();
    (this.metricsApp as unknown as { close?: () => void } | null)?.close?.();
    this.health.stop();
    await closeAfterFailedStart(this.db, this.logger);
  }

  private async listen(): Promise<void> {
    const { host, port } = this.settings;
    this.listenSocket = await this.listenOn(this.app, host, port, 'listen');
    this.port = uWS.us_socket_local_port(this.listenSocket as unknown as uWS.us_socket);
    this.metricsPort = this.port;
    const ml = this.settings.metricsListen;
    if (ml) {
      this.metricsApp = uWS.App();
      this.metricsApp.get('/metrics', (res, req) => this.serveMetrics(res, req));
      this.metricsApp.get('/status', (res, req) => this.serveStatus(res, req, 'page'));
      this.metricsApp.get('/status.json', (res, req) => this.serveStatus(res, req, 'json'));
      this.metricsApp.any('/*', (res) => {
        res.cork(() => {
          res.writeStatus('404 Not Found').writeHeader('Content-Type', 'application/json').end(JSON.stringify({ ok: false, code: 'E_NOT_FOUND' satisfies ErrorCode, message: 'metrics_listen serves GET /metrics, /status and /status.json only' }));
        });
      });
      try {
        this.metricsSocket = await this.listenOn(this.metricsApp, ml.host, ml.port, 'metrics_listen');
      } catch (e) {
        uWS.us_listen_socket_close(this.listenSocket);
        this.listenSocket = null;
        throw e;
      }
      this.metricsPort = uWS.us_socket_local_port(this.metricsSocket as unknown as uWS.us_socket);
    }
  }

  private listenOn(app: uWS.TemplatedApp, host: string, port: number, setting: string): Promise<uWS.us_listen_socket> {
    return new Promise((resolve, reject) => {
      // Exclusive: a busy port is an error, not a second server sharing it.
      // The typings lack the (host, port, options, cb) form the binary has.
      const listen = app.listen as unknown as (h: string, p: number, o: number, cb: (ls: uWS.us_listen_socket | false) => void) => void;
      const exclusive = (uWS as unknown as { LIBUS_LISTEN_EXCLUSIVE_PORT: number }).LIBUS_LISTEN_EXCLUSIVE_PORT;
      listen.call(app, host, port, exclusive, (ls: uWS.us_listen_socket | false) => {
        if (!ls) {
          reject(new SwitchboardError('E_LISTEN', `cannot listen on ${host}:${port}: the port is in use or the address is not local; change ${setting} in the config`));
          return;
        }
        resolve(ls);
      });
    });
  }

  /**
   * Adds a TypeScript/JavaScript module to the chain (default: at its end;
   * `opts.position` 0 is first). Resolves once its init has finished, to a
   * handle whose remove() takes it out again.
   */
  use(name: string, module: ModuleExport, opts: UseOptions = {}): Promise<ModuleHandle> {
    return this.core.use(name, module, opts);
  }

  /**
   * A bot user: messages to `address` go to its handlers (hears/on) instead
   * of a person. The user is created when it does not exist.
   */
  bot(address: string): Bot {
    let b = this.bots.get(address);
    if (b) return b;
    if (!this.directory.users.has(address)) {
      // Nobody learns this token: no one can log in as the bot. Routed to
      // at once; the store has it once the write lands (a failed write is
      // logged, and the bot still answers until the next start).
      this.directory.users.add(address);
      this.db.addUser(address, hashToken(newToken())).catch((e: unknown) => this.logger.event('bot.error', { bot: address, text: `the store did not take the bot's user: ${errorText(e)}` }));
    }
    b = new Bot(address, (text) => this.logger.event('bot.error', { bot: address, text }), (from, id) => this.stages.categoryOf(from, id) ?? 'bot');
    this.bots.set(address, b);
    const bot = b;
    this.core
      .use(`bot:${address}`, { init: (ctx) => bot.attach(ctx), onMessage: (m) => bot.handle(m) }, { onlyTo: address })
      .catch((e) => this.logger.event('bot.error', { bot: address, text: String(e) }));
    return b;
  }

  /**
   * Reads the config again (the file or text start() was given, `configText`
   * instead for a server started from text; start()'s overrides stay on
   * top), applies what can change while running and reports what needs a
   * restart (docs/operations.md, "Reloading"). Rejects with the config's
   * error (E_CONFIG_*) when it is refused: the server runs on unchanged.
   */
  reload(opts: { configText?: string } = {}): Promise<ReloadReport> {
    return this.reloader.reload(opts.configText);
  }

  /** Stops accepting, closes every connection, flushes the store, runs on_cleanup. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.logger.event('server.stopping', { connections: this.connections.count });
    if (this.listenSocket) uWS.us_listen_socket_close(this.listenSocket);
    this.listenSocket = null;
    if (this.metricsSocket) uWS.us_listen_socket_close(this.metricsSocket);
    this.metricsSocket = null;
    this.processMetrics.stop();
    this.untapWarnings();
    if (this.purgeTimer) clearInterval(this.purgeTimer);
    this.health.stop();
    // Every unconfirmed live copy is stored now; a close from here on stores nothing.
    this.delivery.stop();
    this.engine.stop();
    this.delivery.perform();
    this.sessions.stop();
    // With an asynchronous store the last batches land first (a failed one
    // is logged); SQLite commits and closes in this turn, as before.
    this.commit.now();
    if (!this.commit.idle) await new Promise<boolean>((resolve) => this.commit.afterCommit(resolve));
    // After the last commit: the copies it released for other nodes are handed to the bus first.
    if (this.cluster) await this.cluster.close();
    await this.db.close();
    this.core.close();
    (this.app as unknown as { close?: () => void }).close?.();
    (this.metricsApp as unknown as { close?: () => void } | null)?.close?.();
    this.logger.event('server.stopped');
  }

  /**
   * What the limits did (limits.ts, docs/config.md "Limits"); also in
   * /health. Plain numbers, for a metrics exporter.
   */
  get stats(): LimitStats {
    this.limitStats.inboxFull = this.engine.counters().inboxFull;
    return this.limitStats;
  }

  /**
   * Counts for GET /metrics (metrics.ts): plain numbers, rendered only when
   * scraped. The per-message ones are the engine's, copied in here.
   */
  get metrics(): MetricCounts {
    const m = this.counts;
    const e = this.engine.counters();
    m.receivedPass = e.receivedPass;
    m.receivedConsumed = e.receivedConsumed;
    m.receivedFailed = e.receivedFailed;
    m.delivered = e.delivered + m.backlogDelivered;
    m.copiesStored = e.copiesStored;
    m.statuses = e.statuses;
    return m;
  }

  /** The reloader changed settings: the engine keeps its own copy of those it reads per message. */
  settingsChanged(): void {
    const s = this.settings;
    this.engine.configure({ graceMs: s.durableGrace, maxInboxMessages: s.maxInboxMessages, maxInboxBytes: s.maxInboxBytes, rateLimit: s.rateLimit, userRateLimit: s.userRateLimit });
  }

  /** GET /metrics: the exposition text, or 401 without the metrics_token. */
  private serveMetrics(res: uWS.HttpResponse, req: uWS.HttpRequest): void {
    if (!metricsAuthorized(this.settings.metricsToken, req.getHeader('authorization'))) {
      res.cork(() => {
        res
          .writeStatus('401 Unauthorized')
          .writeHeader('Content-Type', 'application/json')
          .writeHeader('WWW-Authenticate', 'Bearer')
          .end(JSON.stringify({ ok: false, code: 'E_METRICS_TOKEN' satisfies ErrorCode, message: 'GET /metrics needs the header Authorization: Bearer <metrics_token>; set it in the scraper (Prometheus: authorization.credentials)' }));
      });
      return;
    }
    this.withSources(res, (src) => {
      const text = renderMetrics(src, this.processMetrics);
      res.cork(() => {
        res.writeHeader('Content-Type', 'text/plain; version=0.0.4; charset=utf-8').end(text);
      });
    });
  }

  /** Calls `fn` with the metrics' sources once the store has said how much waits, unless the request went away meanwhile. */
  private withSources(res: uWS.HttpResponse, fn: (src: MetricSources) => void): void {
    let aborted = false;
    res.onAborted(() => {
      aborted = true;
    });
    this.db.countPending().then(
      (n) => n,
      (e: unknown) => {
        this.health.failed(e);
        return NaN;
      },
    ).then((waiting) => {
      if (aborted) return;
      fn({
        counts: this.metrics,
        stats: this.stats,
        modules: this.core.modules,
        deferredWaiting: this.core.counters().waiting,
        storeWaiting: waiting,
        storeKind: this.settings.store === 'sqlite' ? 'sqlite' : 'postgresql',
        storeDown: this.health.down?.code ?? null,
        version: VERSION,
      });
    });
  }

  /**
   * GET /status (the page) and /status.json, with /metrics' token rules.
   * A browser cannot send a header when a person opens a link, so the page
   * also takes the token as ?token=; the page's script sends it to
   * /status.json as the Authorization header, and nothing logs URLs.
   */
  private serveStatus(res: uWS.HttpResponse, req: uWS.HttpRequest, what: 'page' | 'json'): void {
    let auth = req.getHeader('authorization');
    if (!auth && what === 'page') {
      const t = new URLSearchParams(req.getQuery() ?? '').get('token');
      if (t) auth = `Bearer ${t}`;
    }
    if (!metricsAuthorized(this.settings.metricsToken, auth)) {
      const how = what === 'page' ? 'open /status?token=<metrics_token> (or send Authorization: Bearer <metrics_token>)' : 'send the header Authorization: Bearer <metrics_token>';
      res.cork(() => {
        res
          .writeStatus('401 Unauthorized')
          .writeHeader('Content-Type', 'application/json')
          .writeHeader('WWW-Authenticate', 'Bearer')
          .end(JSON.stringify({ ok: false, code: 'E_METRICS_TOKEN' satisfies ErrorCode, message: `GET /status${what === 'json' ? '.json' : ''} needs the metrics_token: ${how}` }));
      });
      return;
    }
    this.withSources(res, (src) => {
      const snap = statusSnapshot({ ...src, startedAt: this.startedAt, durable: this.settings.durable, warnings: this.warnings });
      res.cork(() => {
        // no-store and no-referrer: the page's URL may carry the token.
        res.writeHeader('Cache-Control', 'no-store').writeHeader('Referrer-Policy', 'no-referrer');
        if (what === 'json') res.writeHeader('Content-Type', 'application/json').end(JSON.stringify(snap));
        else res.writeHeader('Content-Type', 'text/html; charset=utf-8').end(renderStatusPage(snap));
      });
    });
  }

  // --- routes ---------------------------------------------------------------

  /**
   * The users and groups were read before this node heard the other nodes'
   * directory changes: one made in between (another node's API, while this
   * one started, or while it was away from NATS) would be missing here.
   * Once NATS has this node's subscriptions, they are read again and the
   * difference applied, then the changes heard meanwhile (held from before
   * the read: heldChanges), in order (each states a user's or a group's
   * whole state, so one already in the read does no harm). A read that
   * fails is logged: the node goes on with what it had.
   */
  private async catchUpDirectory(bus: ClusterBus): Promise<void> {
    try {
      await bus.subscriptionsConfirmed();
      const [users, groups] = await Promise.all([this.db.listUsers(), this.db.listGroups()]);
      const now = new Set(users);
      for (const u of [...this.directory.users]) if (!now.has(u)) this.directoryChanged({ op: 'user', address: u, exists: false });
      for (const u of users) if (!this.directory.users.has(u)) this.directoryChanged({ op: 'user', address: u, exists: true });
      const gids = new Set(groups.map((g) => g.gid));
      for (const gid of [...this.directory.groups.keys()]) if (!gids.has(gid)) this.directoryChanged({ op: 'group', gid, members: null });
      for (const g of groups) {
        const had = this.directory.groups.get(g.gid);
        if (!had || had.size !== g.members.length || g.members.some((m) => !had.has(m))) this.directoryChanged({ op: 'group', gid: g.gid, members: g.members });
      }
    } catch (e) {
      this.logger.event('cluster.error', { node: bus.node, error: `reading the directory again (at start or after a NATS outage): ${errorText(e)}; users or groups another node made meanwhile may be missing here until this node restarts` });
    } finally {
      const held = this.heldChanges ?? [];
      this.heldChanges = null;
      for (const change of held) this.directoryChanged(change);
    }
  }

  /**
   * Back on NATS after an outage: the directory changes other nodes
   * broadcast meanwhile went by unheard. The directory is read again as at
   * start (catchUpDirectory), and each session's token looked up again: a
   * token another node's API revoked meanwhile closes its sessions here
   * too. An outage that ends while this runs has it run again.
   */
  private async afterOutage(bus: ClusterBus): Promise<void> {
    if (this.catchingUp) {
      this.catchUpAgain = true;
      return;
    }
    this.catchingUp = true;
    try {
      do {
        this.catchUpAgain = false;
        this.heldChanges ??= [];
        await this.catchUpDirectory(bus);
        if (this.stopped) return;
        try {
          await this.sessions.recheckTokens();
        } catch (e) {
          this.logger.event('cluster.error', { node: bus.node, error: `looking the sessions' tokens up again after a NATS outage: ${errorText(e)}; a token revoked on another node meanwhile keeps its sessions here open until they end` });
        }
      } while (this.catchUpAgain && !this.stopped);
    } finally {
      this.catchingUp = false;
    }
  }

  /** Another node of the cluster changed the directory through its API: the same change here. */
  private directoryChanged(change: DirectoryChange): void {
    if (change.op === 'user') {
      if (change.exists) {
        this.directory.users.add(change.address);
        return;
      }
      this.sessions.disconnect(change.address, 'E_AUTH', 'your token was revoked or your user was removed; log in again with a new token');
      this.directory.removeUser(change.address);
      this.inbox.refresh(change.address);
    } else if (change.op === 'token') {
      this.sessions.disconnect(change.address, 'E_AUTH', 'your token was revoked or your user was removed; log in again with a new token');
    } else if (change.op === 'group') {
      if (change.members === null) this.directory.groups.delete(change.gid);
      else this.directory.groups.set(change.gid, new Set(change.members));
    }
  }

  private installRoutes(): void {
    const s = this.settings;
    const api: ApiContext = {
      // Read per request: a reload rotates it.
      get appToken() {
        return s.appToken;
      },
      store: this.db,
      users: this.directory.users,
      groups: this.directory.groups,
      online: () => (this.cluster ? [...new Set([...this.connections.addresses(), ...this.cluster.elsewhereUsers()])] : this.connections.addresses()),
      send: (from, frame) => this.intake.sendAs(from, frame),
      revoke: (address) => {
        this.inbox.refresh(address);
        this.sessions.disconnect(address, 'E_AUTH', 'your token was revoked or your user was removed; log in again with a new token');
      },
      removing: (address) => {
        const restore = this.directory.removeUser(address);
        return (deleted) => {
          if (!deleted) restore();
          // Read after the delete: the count read at the revoke may predate it.
          this.inbox.refresh(address);
        };
      },
      afterFlight: (fn) => this.commit.afterFlight(fn),
      changed: async (change) => this.cluster?.changed(change),
      reload: () => this.reload(),
      logger: this.logger,
    };
    this.app.get('/health', (res) => {
      // A node that lost NATS still serves its own users and keeps every
      // message (copies for other nodes wait in the bus or are stored when
      // their grace runs out): ok, with the bus's state for the operator.
      const body = { ok: true, connections: this.connections.count, unauthenticated: this.sessions.unauthenticated, modules: this.core.modules.length, limits: this.stats, ...(this.cluster ? { cluster: this.cluster.status } : {}) };
      const down = this.health.down;
      res.cork(() => {
        if (!down) {
          res.writeHeader('Content-Type', 'application/json').end(JSON.stringify(body));
          return;
        }
        // 503: a load balancer sends new clients to a node that can keep their messages.
        res
          .writeStatus('503 Service Unavailable')
          .writeHeader('Content-Type', 'application/json')
          .end(JSON.stringify({ ...body, ok: false, code: 'E_STORE_DOWN' satisfies ErrorCode, message: `the store has failed since ${new Date(down.since).toISOString()} (${down.code}: ${down.error}); no message is acknowledged until it is back`, store: down }));
      });
    });
    this.app.get('/metrics', (res, req) => {
      if (!s.metricsListen) return this.serveMetrics(res, req);
      // Said plainly, rather than the WebSocket route's silent close, so a
      // scraper pointed at the wrong port says why.
      res.cork(() => {
        res.writeStatus('404 Not Found').writeHeader('Content-Type', 'application/json').end(JSON.stringify({ ok: false, code: 'E_NOT_FOUND' satisfies ErrorCode, message: `metrics are served on metrics_listen (port ${this.metricsPort}), not on this port` }));
      });
    });
    for (const [route, what] of [['/status', 'page'], ['/status.json', 'json']] as const) {
      this.app.get(route, (res, req) => {
        if (!s.metricsListen) return this.serveStatus(res, req, what);
        res.cork(() => {
          res.writeStatus('404 Not Found').writeHeader('Content-Type', 'application/json').end(JSON.stringify({ ok: false, code: 'E_NOT_FOUND' satisfies ErrorCode, message: `the status page is served on metrics_listen (port ${this.metricsPort}), not on this port` }));
        });
      });
    }
    this.app.any('/api', (res, req) => handleApi(api, res, req));
    this.app.any('/api/*', (res, req) => handleApi(api, res, req));

    this.app.ws<Conn>('/*', {
      // Four times the frame limit (2 x max_message_size + 4096): a frame
      // over the frame limit but within this is read and answered with
      // E_FRAME_TOO_LARGE; uWebSockets.js drops a connection whose frame is
      // larger still, without a close frame (1006), before buffering it.
      // Four times bounds what one socket can make the server buffer.
      maxPayloadLength: transportLimit(s.maxMessageSize),
      // A client that does not read is cut off rather than buffered without
      // bound; what it missed stays in the store until it acknowledges.
      maxBackpressure: MAX_BACKPRESSURE,
      closeOnBackpressureLimit: 1 as unknown as number,
      idleTimeout: s.idleTimeout,
      sendPingsAutomatically: true,
      upgrade: (res, req, context) => this.sessions.upgrade(res, req, context),
      open: (ws) => this.sessions.open(ws),
      message: (ws, ab, isBinary) => this.intake.frame(ws, ab, isBinary),
      drain: (ws) => this.sessions.pump(ws),
      close: (ws, code, reason) => this.sessions.close(ws, code, reason),
    });
  }
}

/** The largest WebSocket message the transport reads (see maxPayloadLength). */
function transportLimit(maxMessageSize: number): number {
  return 4 * (2 * maxMessageSize + 4096);
}

/**
 * Closes the store of a start that failed, and waits for it. The start's
 * error is the one to report: a close that fails as well is logged.
 */
/** The bus's own events, in the log. */
function watchBus(bus: ClusterBus, logger: Logger): void {
  bus.on('connected', (server) => logger.event('cluster.connected', { node: bus.node, server }));
  bus.on('disconnected', (server) => logger.event('cluster.disconnected', { node: bus.node, server }));
  bus.on('nodeUp', (node) => logger.event('cluster.node_up', { node }));
  bus.on('nodeDown', (node, reason) => logger.event('cluster.node_down', { node, reason }));
  bus.on('nodeRejoined', (node) => logger.event('cluster.node_rejoined', { node }));
  bus.on('error', (e) => logger.event('cluster.error', { node: bus.node, code: e.code, error: e.message }));
}

async function closeAfterFailedStart(store: AsyncStore, logger: Logger): Promise<void> {
  try {
    await store.close();
  } catch (e) {
    logger.event('store.error', { op: 'close', error: errorText(e) });
  }
}
