/**
 * The messaging server: uWebSockets.js carries client traffic, the native
 * core decodes each frame and runs the module chain, this file routes what
 * comes back (publish to the recipient's topics, store for later, statuses
 * to the sender) and keeps sessions, presence and the store in step.
 */
import fs from 'node:fs';
import path from 'node:path';
import uWS from 'uWebSockets.js';
import { parseConfig } from '../config';
import { Core, type LogEntry } from '../core';
import { SwitchboardError, type ErrorCode } from '../errors';
import { errorText, EVENTS, Logger, type LogEvent } from '../log';
import { Info, native, VERDICT_DEFERRED } from '../native';
import type { ChainMessage, ModuleExport, UseOptions } from '../modules';
import { Bot } from './bot';
import { Decoded, Format, Ingest, KeyedSerial, Stage, type MessageFields, type Middlewares } from './pipeline';
import { SqliteStore } from '../store/sqlite';
import type { NewMessage, Store } from '../store/types';
import { handleApi, type ApiContext } from './api';
import { settingsFrom, type ServerSettings } from './settings';
import { requireNativeUws } from './transport';
import { hashToken, newToken } from './tokens';
import { Inboxes } from './inbox';
import { charge, connectionCap, fileDescriptorLimit, has, looksLikeStatus, newBucket, newStats, take, validAddress, validDevice, type Bucket, type IpCount, type LimitStats } from './limits';
import { Presence } from './presence';
import { countCommit, metricsAuthorized, newCounts, ProcessMetrics, renderMetrics, type MetricCounts, type MetricSources } from './metrics';
import { renderStatusPage, statusSnapshot, WarningRing } from './status';
import { CLOSE_AUTH, CLOSE_BAD_LOGIN, CLOSE_LOGIN_TIMEOUT, CLOSE_TOO_MANY, FLAG_DELIVERY_RECEIPT, FLAG_READ_RECEIPT, FLAG_TRANSIENT, OP_STATUS, OUT_BINARY, OUT_BOTH, OUT_JSON, Status, WIRE_E_TOO_LARGE, WIRE_E_UNKNOWN_OP } from './protocol';

export { Status } from './protocol';

const MAX_BACKPRESSURE = 4 * 1024 * 1024;
/** The backlog is sent while less than this waits in the socket's buffer. */
const BACKLOG_BUFFER = 512 * 1024;
const BACKLOG_PAGE = 500;
/** Receipt flags remembered for messages still in flight, so a receipt goes back only when asked for. */
const MAX_TRACKED_RECEIPTS = 1_000_000;

/** Per-connection state (uWebSockets.js user data). */
interface Conn {
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
   * read) per delivery it was sent. Acknowledging a large backlog is never rate limited.
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


type WS = uWS.WebSocket<Conn>;

/** Shared by one user's connections. */
interface UserLimits {
  bucket: Bucket;
  connections: number;
}

interface PendingAck {
  ws: WS;
  frame: Buffer;
  binary: boolean;
}

/** A sender's "sent" that waits for its live copies (below) to be confirmed or stored. */
interface LiveAck extends PendingAck {
  /** Live copies not yet confirmed or stored. */
  left: number;
}

/**
 * With durable on and durable_grace > 0, a copy for an online recipient is
 * sent at once and kept here instead of being written to the store. The
 * sender hears "sent" when the recipient confirms delivery, or, if it has
 * not within the grace (or disconnects first), when the copy has been
 * written to the store. Either way "sent" means the message can no longer
 * be lost with the process; most copies never touch the disk.
 */
interface LiveCopy {
  /** `sender\0recipient\0id`, the receiptFlags key. */
  key: string;
  recipient: string;
  /** The message as the store takes it, less the recipient (shared by a group message's copies); null once confirmed or stored. */
  base: Omit<NewMessage, 'recipient'> | null;
  /** Date.now() when it went out; the queue is in this order. */
  sentAt: number;
  ack: LiveAck;
  /** Resends of the message while it was live (the sender reconnected before its "sent"). */
  more: LiveAck[] | null;
}

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
}

const VERSION: string = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'package.json'), 'utf8')).version;

export class Server {
  readonly settings: ServerSettings;
  readonly core: Core;
  readonly store: Store;
  /** The port actually listened on (useful with port 0). */
  port = 0;

  private readonly app: uWS.TemplatedApp;
  private listenSocket: uWS.us_listen_socket | null = null;
  /** The server's log (log_level, log_format); tap() it to see what it writes. */
  readonly logger: Logger;
  private readonly users = new Set<string>();
  private readonly groups = new Map<number, Set<string>>();
  /** Live connections per address. */
  private readonly devices = new Map<string, Set<WS>>();
  private jsonDevices = 0;
  private binaryDevices = 0;
  private readonly receiptFlags = new Map<string, number>();
  private acks: PendingAck[] = [];
  /** Deliveries waiting for this turn's group commit (durable on). */
  private held: { to: string; frames: HeldFrames }[] = [];
  /** Recipients in `held`: a live copy to them would overtake the held one. */
  private readonly heldTo = new Set<string>();
  /** Copies delivered before they were stored (durable_grace), by key, and in the order they were sent. */
  private readonly live = new Map<string, LiveCopy>();
  private liveQueue: LiveCopy[] = [];
  private liveHead = 0;
  private liveTimer: NodeJS.Timeout | null = null;
  /**
   * Copies past the grace whose recipient is still confirming others, oldest
   * first: they get more time (expireLive).
   */
  private liveLate: LiveCopy[] = [];
  /** When the live timer should fire: how late it does shows how busy the loop is. */
  private liveTimerAt = 0;
  /** Receipts for confirmed live copies: they go out after the acks, so "sent" comes first. */
  private receiptsAfterAcks: { to: string; frames: HeldFrames }[] = [];
  private flushScheduled = false;
  private purgeTimer: NodeJS.Timeout | null = null;
  private stopped = false;
  /** Messages waiting for a deferred decision, by the core's token: who to answer when it completes. */
  private readonly deferred = new Map<number, Deferred>();
  /**
   * The Botkit-style stages (docs/pipeline.md). An empty stage costs one
   * property check per message.
   */
  readonly middleware: Middlewares;
  /** Frames of one connection (pre-chain stages) and deliveries to one user (send stage) stay in order. */
  private readonly serial: KeyedSerial<unknown>;
  /** Categories set before the chain, for the receive and send stages ("from\0id"). */
  private readonly categories = new Map<string, string>();
  private readonly bots = new Map<string, Bot>();
  /** Devices per address whose stored backlog is still being sent (not yet subscribed to live deliveries). */
  private readonly pumping = new Map<string, number>();
  private warnedAsyncFormat = false;
  /**
   * What the limits did (limits.ts, docs/config.md "Limits"); also in
   * /health. Plain numbers, for a metrics exporter.
   */
  readonly stats: LimitStats;
  /** Sockets not logged in yet, oldest first: the login deadline and eviction go in this order. */
  private readonly unauth = new Set<WS>();
  private readonly perIp = new Map<string, IpCount>();
  private readonly perUser = new Map<string, UserLimits>();
  private loginTimer: NodeJS.Timeout | null = null;
  private readonly inboxes: Inboxes;
  private readonly presence: Presence;
  /** Counts for GET /metrics (metrics.ts): plain numbers, rendered only when scraped. */
  readonly metrics: MetricCounts = newCounts();
  private readonly processMetrics = new ProcessMetrics();
  private metricsApp: uWS.TemplatedApp | null = null;
  private metricsSocket: uWS.us_listen_socket | null = null;
  /** The port /metrics is served on: metrics_listen's, or the server's. */
  metricsPort = 0;
  /** The last level-0 log events, for GET /status (status.ts). */
  private readonly warnings = new WarningRing();
  private readonly untapWarnings: () => void;
  private readonly startedAt = Date.now();

  private constructor(settings: ServerSettings, core: Core, store: Store, logger: Logger) {
    this.settings = settings;
    this.core = core;
    this.store = store;
    this.logger = logger;
    this.untapWarnings = logger.tap((r) => this.warnings.add(r));
    for (const u of store.listUsers()) this.users.add(u);
    for (const r of store.receiptFlagsPending(FLAG_DELIVERY_RECEIPT | FLAG_READ_RECEIPT)) this.trackReceipt(r.sender, r.recipient, r.id, r.flags, r.groupid);
    const fds = fileDescriptorLimit();
    this.stats = newStats(connectionCap(settings.maxConnections, fds));
    if (settings.maxConnections > this.stats.connectionCap) {
      logger.event('server.setting_lowered', {
        setting: 'max_connections',
        value: settings.maxConnections,
        used: this.stats.connectionCap,
        reason: `the process may open ${fds} file descriptors, less a reserve for the store and modules; raise the limit with ulimit -n or LimitNOFILE=`,
      });
    }
    this.inboxes = new Inboxes(store, settings.maxInboxMessages, settings.maxInboxBytes);
    this.presence = new Presence(settings.presence, store, this.users);
    this.app = settings.tlsCert ? uWS.SSLApp({ cert_file_name: settings.tlsCert, key_file_name: settings.tlsKey! }) : uWS.App();
    const stageError = (stage: string, e: unknown) => logger.event('middleware.error', { stage, error: errorText(e), outcome: 'the message went on as it was' });
    this.serial = new KeyedSerial((e) => logger.event('transport.error', { error: errorText(e) }));
    this.middleware = {
      ingest: new Stage('ingest', stageError),
      normalize: new Stage('normalize', stageError),
      categorize: new Stage('categorize', stageError),
      // The receive stage is a script module at the end of the chain, added
      // when its first middleware is.
      receive: new Stage('receive', stageError, () => {
        this.core.use('middleware.receive', { onMessage: (m) => this.receiveStage(m) }, { timeout: 30_000 }).catch((e) => this.logger.event('middleware.error', { stage: 'receive', error: String(e) }));
      }),
      send: new Stage('send', stageError),
      format: new Stage('format', stageError),
    };
    core.on('message', (m) => this.routeModuleMessage(m));
    core.on('complete', (token, verdict, from) => this.completed(token, verdict, from));
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
    const store = SqliteStore.open(storeFile);
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
      store.close();
      throw e;
    }
    const server = new Server(settings, core, store, logger);
    try {
      await core.ready; // script modules' init
      core.drain(); // what their init logged comes before "listening"
      await server.listen();
    } catch (e) {
      server.core.close();
      server.store.close();
      throw e;
    }
    server.purgeTimer = setInterval(() => {
      try {
        if (server.store.purgeExpired()) server.inboxes.forget();
      } catch (e) {
        // Expired messages stay until the next purge succeeds; nothing is lost.
        logger.event('store.error', { op: 'purge', error: errorText(e) });
      }
      for (const [address, u] of server.perUser) if (u.connections === 0) server.perUser.delete(address);
    }, 60_000);
    server.purgeTimer.unref();
    const scheme = settings.tlsCert ? 'wss' : 'ws';
    for (const m of core.modules) logger.event('module.loaded', { module: m.name, position: m.position, kind: m.script ? 'script' : 'native', file: m.file, log_level: m.logLevel });
    const host = settings.host.includes(':') ? `[${settings.host}]` : settings.host;
    logger.event('server.listening', { url: `${scheme}://${host}:${server.port}`, modules: core.modules.map((m) => m.name).join(',') || 'none', store: storeFile, durable: settings.durable ? 'on' : 'off', log_level: settings.logLevel });
    return server;
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
   * `opts.position` 0 is first). Resolves once its init has finished.
   */
  use(name: string, module: ModuleExport, opts: UseOptions = {}): Promise<void> {
    return this.core.use(name, module, opts);
  }

  /**
   * A bot user: messages to `address` go to its handlers (hears/on) instead
   * of a person. The user is created when it does not exist.
   */
  bot(address: string): Bot {
    let b = this.bots.get(address);
    if (b) return b;
    if (!this.users.has(address)) {
      // Nobody learns this token: no one can log in as the bot.
      this.store.addUser(address, hashToken(newToken()));
      this.users.add(address);
    }
    b = new Bot(address, (text) => this.logger.event('bot.error', { bot: address, text }), (from, id) => this.categories.get(`${from}\0${id}`) ?? 'bot');
    this.bots.set(address, b);
    const bot = b;
    this.core
      .use(`bot:${address}`, { init: (ctx) => bot.attach(ctx), onMessage: (m) => bot.handle(m) }, { onlyTo: address })
      .catch((e) => this.logger.event('bot.error', { bot: address, text: String(e) }));
    return b;
  }

  /** Stops accepting, closes every connection, flushes the store, runs on_cleanup. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.logger.event('server.stopping', { connections: this.jsonDevices + this.binaryDevices });
    if (this.listenSocket) uWS.us_listen_socket_close(this.listenSocket);
    this.listenSocket = null;
    if (this.metricsSocket) uWS.us_listen_socket_close(this.metricsSocket);
    this.metricsSocket = null;
    this.processMetrics.stop();
    this.untapWarnings();
    for (const set of [...this.devices.values()]) for (const ws of [...set]) ws.end(1001, 'server shutting down');
    if (this.purgeTimer) clearInterval(this.purgeTimer);
    if (this.loginTimer) clearInterval(this.loginTimer);
    for (const ws of [...this.unauth]) ws.end(1001, 'server shutting down');
    if (this.liveTimer) clearTimeout(this.liveTimer);
    this.liveTimer = null;
    // Unconfirmed live copies: their senders never heard "sent" and will
    // resend, but a copy stored now is not lost if they do not come back.
    for (const lc of [...this.liveCopies()]) this.storeLive(lc);
    this.flushNow();
    this.store.close();
    this.core.close();
    (this.app as unknown as { close?: () => void }).close?.();
    (this.metricsApp as unknown as { close?: () => void } | null)?.close?.();
    this.logger.event('server.stopped');
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
    const text = renderMetrics(this.metricSources(), this.processMetrics);
    res.cork(() => {
      res.writeHeader('Content-Type', 'text/plain; version=0.0.4; charset=utf-8').end(text);
    });
  }

  private metricSources(): MetricSources {
    return {
      counts: this.metrics,
      stats: this.stats,
      modules: this.core.modules,
      deferredWaiting: this.core.counters().waiting,
      storeWaiting: this.store.countPending(),
      version: VERSION,
    };
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
    const snap = statusSnapshot({ ...this.metricSources(), startedAt: this.startedAt, durable: this.settings.durable, warnings: this.warnings });
    res.cork(() => {
      // no-store and no-referrer: the page's URL may carry the token.
      res.writeHeader('Cache-Control', 'no-store').writeHeader('Referrer-Policy', 'no-referrer');
      if (what === 'json') res.writeHeader('Content-Type', 'application/json').end(JSON.stringify(snap));
      else res.writeHeader('Content-Type', 'text/html; charset=utf-8').end(renderStatusPage(snap));
    });
  }

  // --- sessions -------------------------------------------------------------

  private installRoutes(): void {
    const s = this.settings;
    const api: ApiContext = {
      appToken: s.appToken,
      store: this.store,
      users: this.users,
      groups: this.groups,
      online: () => [...this.devices.keys()],
      send: (from, frame) => this.sendAs(from, frame),
      revoke: (address) => {
        this.inboxes.forget(address);
        this.disconnect(address, 'E_AUTH', 'your token was revoked or your user was removed; log in again with a new token');
      },
      loadGroup: (gid) => this.group(gid),
      logger: this.logger,
    };
    this.app.get('/health', (res) => {
      res.cork(() => {
        res.writeHeader('Content-Type', 'application/json').end(JSON.stringify({ ok: true, connections: this.jsonDevices + this.binaryDevices, unauthenticated: this.unauth.size, modules: this.core.modules.length, limits: this.stats }));
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
      upgrade: (res, req, context) => {
        const ip = Buffer.from(res.getRemoteAddressAsText()).toString();
        const st = this.stats;
        // Refused before the upgrade: no socket is kept, nothing is buffered.
        if (this.jsonDevices + this.binaryDevices + this.unauth.size >= st.connectionCap) {
          st.refusedServerFull++;
          refuseUpgrade(res, '503 Service Unavailable', 'E_SERVER_FULL', 'the server is at its connection limit; try again later');
          return;
        }
        const perIp = this.perIp.get(ip);
        if (s.maxConnectionsPerIp && perIp && perIp.all >= s.maxConnectionsPerIp) {
          st.refusedPerIp++;
          refuseUpgrade(res, '429 Too Many Requests', 'E_TOO_MANY_CONNECTIONS', `this IP has ${perIp.all} connections, the most the server allows (max_connections_per_ip); close some`);
          return;
        }
        const query = new URLSearchParams(req.getQuery() ?? '');
        const key = req.getHeader('sec-websocket-key');
        const protocol = req.getHeader('sec-websocket-protocol');
        const extensions = req.getHeader('sec-websocket-extensions');
        const now = Date.now();
        const conn: Conn = {
          address: '',
          device: query.get('device') ?? '',
          binary: query.get('format') === 'binary',
          open: true,
          ip,
          openedAt: now,
          bucket: newBucket(s.rateLimit, now),
          user: null,
          owed: 0,
          presence: new Set(),
          backlogSeq: 0,
          backlogDone: false,
          stored: s.durable ? null : new Set(),
          confirmedAt: 0,
        };
        const token = query.get('token');
        if (token) {
          const address = this.store.userByTokenHash(hashToken(token));
          if (address) conn.address = address;
          else conn.authError = 'the token is unknown or was revoked; ask the backend for a new one';
        }
        if (!conn.address) {
          if (s.maxUnauthenticatedPerIp && perIp && perIp.unauth >= s.maxUnauthenticatedPerIp) {
            st.refusedPerIp++;
            refuseUpgrade(res, '429 Too Many Requests', 'E_TOO_MANY_CONNECTIONS', `this IP has ${perIp.unauth} connections that have not logged in (max_unauthenticated_per_ip); log in or close them`);
            return;
          }
          // Full: the oldest socket that has not logged in makes room, so a
          // flood of idle sockets cannot keep a real client from logging in.
          if (this.unauth.size >= s.maxUnauthenticated) {
            const oldest = this.unauth.values().next().value;
            if (oldest) {
              st.unauthenticatedEvicted++;
              this.refuse(oldest, 'E_LOGIN_TIMEOUT', 'the server has too many connections that have not logged in; log in right after connecting', CLOSE_LOGIN_TIMEOUT);
            }
          }
        }
        res.upgrade(conn, key, protocol, extensions, context);
      },
      open: (ws) => {
        const c = ws.getUserData();
        let n = this.perIp.get(c.ip);
        if (!n) this.perIp.set(c.ip, (n = { all: 0, unauth: 0 }));
        n.all++;
        this.logger.event('conn.open', { peer: c.ip });
        if (c.authError) return this.loginFailed(ws, 'E_AUTH', c.authError);
        if (c.address) return this.loggedIn(ws);
        n.unauth++;
        this.unauth.add(ws);
        this.stats.unauthenticated = this.unauth.size;
        this.loginTimer ??= setInterval(() => this.loginDeadline(), 1000).unref();
      },
      message: (ws, ab, isBinary) => this.onFrame(ws, ab, isBinary),
      drain: (ws) => this.pump(ws),
      close: (ws, code, reason) => {
        if (this.logger.enabled('conn.close')) {
          const c = ws.getUserData();
          this.logger.event('conn.close', { address: c.address || undefined, device: c.device || undefined, peer: c.ip, code });
        }
        this.onClose(ws, code, reason);
      },
    });
  }

  private refuse(ws: WS, code: ErrorCode, message: string, close = CLOSE_AUTH): void {
    const c = ws.getUserData();
    if (!c.open) return;
    ws.send(JSON.stringify({ op: 'error', code, message, id: 0 }), false);
    ws.end(close, code);
  }

  /** No longer an unauthenticated socket (logged in or closed). */
  private leftUnauth(ws: WS, c: Conn): void {
    if (!this.unauth.delete(ws)) return;
    this.stats.unauthenticated = this.unauth.size;
    const n = this.perIp.get(c.ip);
    if (n) n.unauth--;
  }

  /** Closes the sockets that have not logged in within login_timeout, oldest first. */
  private loginDeadline(): void {
    const due = Date.now() - this.settings.loginTimeout * 1000;
    for (const ws of this.unauth) {
      if (ws.getUserData().openedAt > due) break;
      this.stats.loginTimeouts++;
      this.countLogin('E_LOGIN_TIMEOUT');
      this.refuse(ws, 'E_LOGIN_TIMEOUT', `no login within ${this.settings.loginTimeout} s of connecting; send the login frame right after the socket opens`, CLOSE_LOGIN_TIMEOUT);
    }
    if (!this.unauth.size && this.loginTimer) {
      clearInterval(this.loginTimer);
      this.loginTimer = null;
    }
  }

  private countLogin(result: ErrorCode | 'ok'): void {
    this.metrics.logins.set(result, (this.metrics.logins.get(result) ?? 0) + 1);
  }

  private loginFailed(ws: WS, code: ErrorCode, message: string): void {
    this.countLogin(code);
    this.logger.event('login.failed', { peer: ws.getUserData().ip, code, reason: message });
    this.refuse(ws, code, message);
  }

  private loggedIn(ws: WS): void {
    const c = ws.getUserData();
    const addr = c.address;
    this.leftUnauth(ws, c);
    if (!validDevice(c.device)) {
      this.stats.refusedBadDevice++;
      this.countLogin('E_BAD_DEVICE');
      c.address = '';
      this.refuse(ws, 'E_BAD_DEVICE', `the device label must be up to 64 bytes of text without control characters; got ${Buffer.byteLength(c.device)} bytes`, CLOSE_BAD_LOGIN);
      return;
    }
    let limits = this.perUser.get(addr);
    if (limits && limits.connections >= this.settings.maxConnectionsPerUser) {
      this.stats.refusedPerUser++;
      this.countLogin('E_TOO_MANY_CONNECTIONS');
      c.address = '';
      this.refuse(ws, 'E_TOO_MANY_CONNECTIONS', `${addr} has ${limits.connections} connections, the most the server allows (max_connections_per_user); close one`, CLOSE_TOO_MANY);
      return;
    }
    if (!limits) this.perUser.set(addr, (limits = { bucket: newBucket(this.settings.userRateLimit, Date.now()), connections: 0 }));
    limits.connections++;
    c.user = limits;
    this.countLogin('ok');
    this.logger.event('login.ok', { address: addr, device: c.device || undefined, format: c.binary ? 'binary' : 'json', peer: c.ip });
    let set = this.devices.get(addr);
    const first = !set;
    if (!set) this.devices.set(addr, (set = new Set()));
    set.add(ws);
    if (c.binary) this.binaryDevices++;
    else this.jsonDevices++;
    this.stats.connections = this.jsonDevices + this.binaryDevices;
    this.core.login(addr, true);
    ws.send(JSON.stringify({ op: 'hello', address: addr, device: c.device, v: 1, max: this.settings.maxMessageSize }), false);
    if (first) this.app.publish(`p/${addr}`, JSON.stringify({ op: 'presence', from: addr, online: true }), false);
    // A message routed earlier in this loop turn, while this user was
    // offline, is buffered but not committed: the backlog would miss it and
    // the live subscription comes too late for it. Commit it first.
    if (this.store.pendingWrites) this.flushNow();
    this.pumping.set(addr, (this.pumping.get(addr) ?? 0) + 1);
    this.pump(ws);
  }

  private pumpDone(address: string): void {
    const n = (this.pumping.get(address) ?? 1) - 1;
    if (n > 0) this.pumping.set(address, n);
    else this.pumping.delete(address);
  }

  private onClose(ws: WS, code: number, reason: ArrayBuffer): void {
    const c = ws.getUserData();
    c.open = false;
    const n = this.perIp.get(c.ip);
    if (n && --n.all === 0) this.perIp.delete(c.ip);
    this.leftUnauth(ws, c);
    // uWebSockets.js ends these itself, without a close frame.
    if (code === 1006) {
      const why = Buffer.from(reason).toString();
      if (why === 'Received too big message') this.stats.framesTooLarge++;
      else if (why === 'Received invalid UTF-8') this.stats.invalidText++;
    }
    if (c.presence.size) this.stats.presenceSubscriptions -= c.presence.size;
    if (!c.address) return;
    const set = this.devices.get(c.address);
    if (!set || !set.delete(ws)) return;
    // The user's bucket outlives its last connection (until the purge
    // timer), so reconnecting does not buy a fresh budget.
    if (c.user) c.user.connections--;
    if (!c.backlogDone) {
      c.backlogDone = true;
      this.pumpDone(c.address);
    }
    if (c.binary) this.binaryDevices--;
    else this.jsonDevices--;
    this.stats.connections = this.jsonDevices + this.binaryDevices;
    // stop() stores every live copy itself, before it closes the store.
    if (this.stopped) return;
    // What this device was sent but did not confirm may be lost with it:
    // store it now, in the order it was sent (another device of the same
    // user that confirms it deletes it).
    if (this.live.size) for (const lc of [...this.liveCopies(c.address)]) this.storeLive(lc);
    this.core.login(c.address, false);
    if (set.size === 0) {
      this.devices.delete(c.address);
      this.app.publish(`p/${c.address}`, JSON.stringify({ op: 'presence', from: c.address, online: false }), false);
    }
  }

  /** Closes every connection of `address` with an error (revoked token, removed user). */
  private disconnect(address: string, code: ErrorCode, message: string): void {
    for (const ws of [...(this.devices.get(address) ?? [])]) this.refuse(ws, code, message);
  }

  /**
   * Sends what the store holds for this user (messages that arrived while it
   * was offline or were not acknowledged yet), page by page as the socket
   * drains, and only then subscribes it to live deliveries, so that nothing
   * live overtakes the backlog.
   */
  private pump(ws: WS): void {
    const c = ws.getUserData();
    if (!c.open || c.backlogDone) return;
    while (ws.getBufferedAmount() < BACKLOG_BUFFER) {
      // What was stored for this user since the last page (while this device
      // was not subscribed yet) must be in the next one.
      if (this.store.pendingWrites) this.flushNow();
      const page = this.store.pending(c.address, BACKLOG_PAGE, c.backlogSeq);
      if (!page.length) {
        c.backlogDone = true;
        this.pumpDone(c.address);
        ws.subscribe(topic(c.address, c.binary));
        return;
      }
      this.metrics.backlogPages++;
      ws.cork(() => {
        const format = !this.middleware.format.empty;
        for (const m of page) {
          const f = format ? this.formatFrame(c, c.address, encodeStored(m, c.binary)) : encodeStored(m, c.binary);
          if (f) ws.send(f, c.binary);
          this.metrics.delivered++;
          c.owed += 2;
          c.stored?.add(`${m.sender}\0${m.id}`);
          c.backlogSeq = m.seq;
          // Large messages: stop within the page rather than overshoot the
          // buffer (a slow reader would then look like one that stopped).
          if (ws.getBufferedAmount() >= BACKLOG_BUFFER) break;
        }
      });
    }
  }

  // --- frames -----------------------------------------------------------

  private onFrame(ws: WS, ab: ArrayBuffer, isBinary: boolean): void {
    const c = ws.getUserData();
    if (!c.address) {
      this.login(ws, ab, isBinary);
      return;
    }
    const frame = new Uint8Array(ab);
    if (!this.allow(ws, c, frame, isBinary)) return;
    const mw = this.middleware;
    if (!mw.ingest.empty || !mw.normalize.empty || !mw.categorize.empty) {
      // Middleware may take its time: the frame must outlive this callback,
      // and frames of one connection keep their order.
      const copy = Buffer.from(frame);
      this.serial.run(ws, () => this.preChain(ws, c, copy, isBinary));
      return;
    }
    this.submitFrame(ws, c, frame, isBinary);
  }

  /** Which forms the core encodes deliveries in: only those some connected device reads. */
  private outFormat(): number {
    return this.binaryDevices === 0 ? OUT_JSON : this.jsonDevices === 0 ? OUT_BINARY : OUT_BOTH;
  }

  private submitFrame(ws: WS, c: Conn, frame: Uint8Array, isBinary: boolean): void {
    const outFormat = this.outFormat();
    const v = this.core.submitRaw(c.address, frame, outFormat);
    if (this.logger.enabled('message.in')) this.logFrame(c, v);
    if (v < 0) {
      if (v === WIRE_E_UNKNOWN_OP && !isBinary && this.control(ws, c, frame)) return;
      if (v === WIRE_E_TOO_LARGE) this.stats.framesTooLarge++;
      // In the form of the refused frame, naming it by its id (0 when the
      // decoder could not read one), as the protocol's error section says.
      ws.send(native.encodeFrame('error', { error: v, id: this.core.infoArray()[Info.Id], detail: this.core.lastErrorDetail() }, isBinary ? 1 : 0), isBinary);
      return;
    }
    // A message whose JSON looked like a status to allow() spends the
    // message budget after all.
    if (this.core.infoArray()[Info.Op] !== OP_STATUS && looksLikeStatus(frame)) this.chargeMessage(c);
    if (v === VERDICT_DEFERRED) {
      this.deferred.set(this.core.infoArray()[Info.Token], { ws, outFormat, api: null });
      return;
    }
    this.route(c.address, v, outFormat, ws);
    if (this.categories.size) this.categories.delete(`${c.address}\0${this.core.infoArray()[Info.Id]}`);
  }

  /** message.in / frame.refused (log_level 3): what the core made of one frame. */
  private logFrame(c: Conn, v: number): void {
    if (v === WIRE_E_UNKNOWN_OP) return; // a control frame (presence), or refused by control()
    if (v < 0) this.logger.event('frame.refused', { address: c.address, error: v, detail: this.core.lastErrorDetail() || undefined });
    else this.logger.event('message.in', { from: c.address, id: this.core.infoArray()[Info.Id], verdict: v === VERDICT_DEFERRED ? 'deferred' : v === 1 ? 'consumed' : 'pass' });
  }

  /**
   * A deferred message has been decided; infoArray()/outBuffer() describe it
   * as they would after submitRaw. The sender's "sent" comes now, so a
   * message that was waiting when the server died was never acknowledged
   * and the client resends it.
   */
  private completed(token: number, verdict: number, from: string): void {
    const d = this.deferred.get(token);
    if (!d) return;
    this.deferred.delete(token);
    const ws = d.ws && d.ws.getUserData().open ? d.ws : null;
    const status = this.route(from, verdict, d.outFormat, ws);
    if (this.categories.size) this.categories.delete(`${from}\0${this.core.infoArray()[Info.Id]}`);
    d.api?.({ status, id: this.core.infoArray()[Info.Id], verdict: verdict === 1 ? 'consumed' : 'pass' });
  }

  /** ingest, normalize and categorize, then the core. */
  private preChain(ws: WS, c: Conn, frame: Buffer, isBinary: boolean): void | Promise<void> {
    if (!c.open) return; // the client resends what was not acknowledged
    const mw = this.middleware;
    if (!mw.ingest.empty) {
      const m = new Ingest(c.address, 'client', frame, isBinary);
      const r = mw.ingest.run(m);
      if (r instanceof Promise) return r.then((ok) => (ok ? this.decodedStages(ws, c, m.frame, isBinary) : this.ackDropped(ws, c, m.frame)));
      if (!r) return this.ackDropped(ws, c, m.frame);
      frame = m.frame;
    }
    return this.decodedStages(ws, c, frame, isBinary);
  }

  private decodedStages(ws: WS, c: Conn, frame: Buffer, isBinary: boolean): void | Promise<void> {
    const mw = this.middleware;
    if (mw.normalize.empty && mw.categorize.empty) return this.submitIfOpen(ws, c, frame, isBinary);
    const d = native.decodeFrame(frame, this.settings.maxMessageSize);
    // Statuses, control frames and bad frames go to the core as they are.
    if (d.error !== undefined || d.op !== 'msg') return this.submitIfOpen(ws, c, frame, isBinary);
    const m = this.decoded(c.address, d);
    const after = (ok: boolean): void => {
      if (!ok) return this.ackDropped(ws, c, frame);
      this.submitIfOpen(ws, c, this.reencode(m, d.format === 'binary'), isBinary);
    };
    const r = this.runDecoded(m);
    if (r instanceof Promise) return r.then(after);
    after(r);
  }

  private submitIfOpen(ws: WS, c: Conn, frame: Uint8Array, isBinary: boolean): void {
    if (c.open) this.submitFrame(ws, c, frame, isBinary);
  }

  private decoded(from: string, d: Record<string, unknown>): Decoded {
    const f = d as unknown as MessageFields;
    return new Decoded(from, f, this.defaultCategory(f.to, f.groupid));
  }

  private defaultCategory(to: string, groupid: number): string {
    return groupid ? 'group' : this.bots.has(to) ? 'bot' : 'direct';
  }

  /** normalize, then categorize; remembers the category for the later stages. */
  private runDecoded(m: Decoded): boolean | Promise<boolean> {
    const mw = this.middleware;
    const remember = (ok: boolean): boolean => {
      if (ok && (!mw.receive.empty || !mw.send.empty || this.bots.size)) this.categories.set(`${m.from}\0${m.id}`, m.category);
      return ok;
    };
    const r = mw.normalize.run(m);
    const cat = (ok: boolean): boolean | Promise<boolean> => {
      if (!ok) return false;
      m.category = m.category || this.defaultCategory(m.to, m.groupid);
      const r2 = mw.categorize.run(m);
      return r2 instanceof Promise ? r2.then(remember) : remember(r2);
    };
    return r instanceof Promise ? r.then(cat) : cat(r);
  }

  private reencode(m: Decoded, binary: boolean): Buffer {
    return native.encodeFrame('msg', { id: m.id, to: m.groupid ? '' : m.to, groupid: m.groupid, refid: m.refid, flags: m.flags, type: m.type, expiry: m.expiry, payload: m.payload }, binary ? 1 : 0) as Buffer;
  }

  /** A message a pre-chain stage dropped is "sent" for its sender (as one a module consumed), so the client does not resend it. */
  private ackDropped(ws: WS, c: Conn, frame: Buffer): void {
    const d = native.decodeFrame(frame, this.settings.maxMessageSize);
    if (d.error !== undefined || d.op !== 'msg' || !c.open) return;
    const binary = d.format === 'binary';
    ws.send(this.core.statusFrame({ id: d.id as number, status: Status.SENT, from: d.to as string, to: c.address, groupid: d.groupid as number }, binary ? 'binary' : 'json'), binary);
  }

  /** The receive stage, run as the last module of the chain. */
  private receiveStage(cm: ChainMessage): 'pass' | 'consumed' | Promise<'pass' | 'consumed'> {
    const m = new Decoded(cm.from, cm, this.categories.get(`${cm.from}\0${cm.id}`) ?? this.defaultCategory(cm.to, cm.groupid));
    const back = (ok: boolean): 'pass' | 'consumed' => {
      if (!ok) return 'consumed';
      if (m.payload !== cm.payload) cm.payload = m.payload;
      cm.refid = m.refid;
      cm.flags = m.flags;
      cm.type = m.type;
      cm.expiry = m.expiry;
      return 'pass';
    };
    const r = this.middleware.receive.run(m);
    return r instanceof Promise ? r.then(back) : back(r);
  }

  /**
   * The rate limits, before the frame costs anything: a message spends a
   * token of the connection's bucket (rate_limit) and of its user's
   * (user_rate_limit), each a token bucket with a burst of one second's
   * worth. A status answering a delivery this connection was sent spends
   * neither (c.owed), so acknowledging a backlog is never limited; other
   * statuses spend the connection's bucket. A dropped frame gets
   * E_RATE_LIMITED with its id.
   */
  private allow(ws: WS, c: Conn, frame: Uint8Array, isBinary: boolean): boolean {
    const s = this.settings;
    const now = Date.now();
    if (looksLikeStatus(frame)) {
      if (c.owed > 0) {
        c.owed--;
        return true;
      }
      if (take(c.bucket, s.rateLimit, s.rateLimit, now)) return true;
      this.stats.statusesRateLimited++;
      this.rateLimited(ws, frame, isBinary, `more than ${s.rateLimit} statuses a second for messages this connection was not sent; send statuses only for deliveries`);
      return false;
    }
    const user = c.user!;
    if (has(c.bucket, s.rateLimit, s.rateLimit, now) && take(user.bucket, s.userRateLimit, s.userRateLimit, now)) {
      c.bucket.tokens--;
      return true;
    }
    this.stats.rateLimited++;
    const which = c.bucket.tokens < 1 ? `${s.rateLimit} messages a second on this connection` : `${s.userRateLimit} messages a second for all connections of ${c.address}`;
    this.rateLimited(ws, frame, isBinary, `more than ${which}; the frame was dropped: send it again later, more slowly`);
    return false;
  }

  private chargeMessage(c: Conn): void {
    const s = this.settings;
    const now = Date.now();
    charge(c.bucket, s.rateLimit, s.rateLimit, now);
    charge(c.user!.bucket, s.userRateLimit, s.userRateLimit, now);
  }

  /** E_RATE_LIMITED naming the dropped frame (a session error: always JSON). Decoding it costs only on this path. */
  private rateLimited(ws: WS, frame: Uint8Array, isBinary: boolean, message: string): void {
    let id = 0;
    if (isBinary) {
      const d = native.decodeFrame(frame, this.settings.maxMessageSize);
      if (typeof d.id === 'number') id = d.id;
    } else {
      const v = native.jsonExtract(frame, 'id');
      if (v && /^\d+$/.test(v.value)) id = Number(v.value);
    }
    const c = ws.getUserData();
    this.logger.event('frame.rate_limited', { address: c.address, peer: c.ip, id, reason: message });
    ws.send(JSON.stringify({ op: 'error', code: 'E_RATE_LIMITED' satisfies ErrorCode, message, id }), false);
  }

  private login(ws: WS, ab: ArrayBuffer, isBinary: boolean): void {
    let req: { op?: unknown; token?: unknown; device?: unknown; format?: unknown } | null = null;
    if (!isBinary) {
      try {
        req = JSON.parse(Buffer.from(ab).toString('utf8'));
      } catch {
        req = null;
      }
    }
    if (!req || req.op !== 'login') {
      this.loginFailed(ws, 'E_NOT_LOGGED_IN', 'log in first: connect with ?token=TOKEN or send {"op":"login","token":"TOKEN"}');
      return;
    }
    const address = typeof req.token === 'string' ? this.store.userByTokenHash(hashToken(req.token)) : null;
    if (!address) {
      this.loginFailed(ws, 'E_AUTH', 'the token is unknown or was revoked; ask the backend for a new one');
      return;
    }
    const c = ws.getUserData();
    c.address = address;
    if (req.device !== undefined) {
      if (typeof req.device !== 'string') {
        c.address = '';
        this.stats.refusedBadDevice++;
        this.refuse(ws, 'E_BAD_DEVICE', '"device" must be a string of up to 64 bytes of text without control characters', CLOSE_BAD_LOGIN);
        return;
      }
      c.device = req.device;
    }
    if (req.format === 'binary') c.binary = true;
    this.loggedIn(ws);
  }

  /** JSON control frames the core does not route: presence. Returns false for anything else. */
  private control(ws: WS, c: Conn, bytes: Uint8Array): boolean {
    let req: { op?: unknown; id?: unknown; to?: unknown; sub?: unknown };
    try {
      req = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8'));
    } catch {
      return false;
    }
    if (!req || typeof req !== 'object') return false;
    const id = typeof req.id === 'number' && Number.isInteger(req.id) && req.id >= 0 && req.id <= 0xffffffff ? req.id : 0;
    if (req.op === 'presence') {
      this.presenceRequest(ws, c, id, req.to, req.sub !== false);
      return true;
    }
    if (req.op === 'login') {
      ws.send(JSON.stringify({ op: 'error', code: 'E_ALREADY_LOGGED_IN' satisfies ErrorCode, message: `this connection is already logged in as ${c.address}`, id }), false);
      return true;
    }
    return false;
  }

  /**
   * A presence subscription (sub) or its end. Refused, with an error naming
   * the request's id: an address that breaks the address rule
   * (E_BAD_ADDRESS), more than max_presence subscriptions on the connection
   * (E_PRESENCE_LIMIT), a user the presence policy does not let this user
   * watch or that does not exist (E_PRESENCE_DENIED, one code for both).
   */
  private presenceRequest(ws: WS, c: Conn, id: number, to: unknown, sub: boolean): void {
    const refuse = (code: ErrorCode, message: string): void => {
      this.stats.presenceRefused++;
      ws.send(JSON.stringify({ op: 'error', code, message, id }), false);
    };
    if (!validAddress(to)) return refuse('E_BAD_ADDRESS', '"to" must be an address: 1 to 255 bytes of UTF-8 without control characters');
    const t = `p/${to}`;
    if (!sub) {
      if (c.presence.delete(to)) {
        ws.unsubscribe(t);
        this.stats.presenceSubscriptions--;
      }
      ws.send(JSON.stringify({ op: 'presence', from: to, online: this.devices.has(to) }), false);
      return;
    }
    if (!c.presence.has(to)) {
      if (c.presence.size >= this.settings.maxPresence) return refuse('E_PRESENCE_LIMIT', `this connection follows ${c.presence.size} users, the most the server allows (max_presence); end a subscription with "sub":false first`);
      if (!this.presence.mayWatch(c.address, to)) return refuse('E_PRESENCE_DENIED', `the server does not let ${c.address} follow the presence of ${to} (presence = ${this.settings.presence}; with contacts: users who share a group or have messaged each other)`);
      ws.subscribe(t);
      c.presence.add(to);
      this.stats.presenceSubscriptions++;
    }
    ws.send(JSON.stringify({ op: 'presence', from: to, online: this.devices.has(to) }), false);
  }

  // --- routing ----------------------------------------------------------

  /**
   * Routes what the core returned for one frame from `from`. `ws` is the
   * sender's connection (null for the backend API). Returns the status the
   * sender gets.
   */
  private route(from: string, verdict: number, outFormat: number, ws: WS | null): number {
    const info = this.core.infoArray();
    const out = this.core.outBuffer();
    const frameLen = info[Info.FrameLen];
    const frame2Len = info[Info.Frame2Len];
    const payloadAt = frameLen + frame2Len;
    const toAt = payloadAt + info[Info.PayloadLen];
    const ackAt = toAt + info[Info.ToLen];
    const to = info[Info.ToLen] ? out.toString('utf8', toAt, ackAt) : '';
    const id = info[Info.Id];

    if (info[Info.Op] === OP_STATUS) {
      const status = info[Info.Status];
      this.metrics.statuses[status & 255]++;
      const confirms = status === Status.DELIVERED || status === Status.READ;
      // Built only when a map may hold it.
      const key = this.live.size || this.receiptFlags.size ? `${to}\0${from}\0${id}` : '';
      // A live copy confirmed: nothing was stored, nothing to delete. Its
      // "sent" goes before the receipt.
      const lc = confirms && this.live.size ? this.live.get(key) : undefined;
      if (lc) this.confirmLive(lc);
      // Any confirmation shows the device is reading (expireLive), also one
      // for a stored copy: an overloaded server may have stored the copies
      // it now reads confirmations for, and must not take the device for a
      // silent one and store its next copies too.
      if (ws && confirms && this.settings.durable) ws.getUserData().confirmedAt = Date.now();
      const receiptGid = this.receiptFor(key, status);
      if (receiptGid >= 0) {
        // The core's frame does not know the group; a group message's
        // receipt names it, as the sender's "sent" did.
        const frames = receiptGid ? this.groupReceipt(id, status, from, to, receiptGid, outFormat) : null;
        // Statuses reach the sender in the order sent, delivered, read: a
        // "sent" still waiting in this.acks (a live copy confirmed in this
        // turn, a commit not yet done) goes first, so the receipt waits
        // behind it, as any receipt queued before it does.
        if (lc || this.acks.length || this.receiptsAfterAcks.length) {
          this.receiptsAfterAcks.push({ to, frames: frames ?? holdFrames(out, frameLen, frame2Len, outFormat) });
          this.scheduleFlush();
        } else if (frames) this.publishFrames(to, frames);
        else this.publish(to, out, frameLen, frame2Len, outFormat);
      }
      // With durability off only messages for offline users are stored: a
      // receipt for anything else has no copy to delete.
      if (!lc && status === Status.DELIVERED && (this.settings.durable || ws?.getUserData().stored?.delete(`${to}\0${id}`))) {
        this.store.ack(from, to, id);
        this.inboxes.removed(from);
        this.scheduleFlush();
      }
      return status;
    }

    const ackLen = info[Info.AckLen];
    /** The sender's "sent" frame, copied out of the core's reused buffer to be sent later. */
    const ackFrame = () => Buffer.from(out.subarray(ackAt, ackAt + ackLen));
    const senderBinary = info[Info.Format] === 1;
    const gid = info[Info.Groupid];
    const flags = info[Info.Flags];
    let status: number = Status.SENT;
    let stored = false;
    let liveAck: LiveAck | null = null;
    if (verdict !== 0) this.metrics.receivedConsumed++;
    else {
      const recipients = gid ? this.group(gid) : this.users.has(to) ? [to] : null;
      if (!recipients) status = Status.INVALIDDEST;
      else if (gid && !recipients.includes(from)) status = Status.BLOCKED;
      else if (flags & FLAG_TRANSIENT && !gid && !this.devices.has(to)) status = Status.NOTACTIVE;
      else if (!gid && this.mayStore(to, flags) && this.inboxes.full(to, info[Info.PayloadLen], Date.now())) {
        this.stats.inboxFull++;
        status = Status.INBOXFULL;
      } else if (!this.middleware.send.empty || !this.middleware.format.empty) {
        // Per-recipient middleware: each copy is built, stored and sent on
        // its own; the sender's "sent" follows the last one.
        const snap: MessageFields = {
          id, refid: info[Info.Refid], groupid: gid, flags, type: info[Info.Type], expiry: info[Info.Expiry], to,
          payload: Buffer.from(out.subarray(payloadAt, toAt)),
        };
        const ack = ws ? { ws, frame: ackFrame(), binary: senderBinary } : null;
        this.metrics.receivedPass++;
        this.deliverEach(from, recipients, snap, ack);
        return status;
      } else {
        let payload: Buffer | null = null;
        let held: HeldFrames | null = null;
        const expiry = info[Info.Expiry];
        const transient = (flags & FLAG_TRANSIENT) !== 0;
        // With durability on, a recipient sees a message only once it is in
        // the store (a copy published before the commit could be lost with
        // a killed process, and its resend would then arrive after later
        // messages, out of the sender's order), unless it is a live copy:
        // sent at once, and "sent" waits for its confirmation (LiveCopy).
        const hold = this.settings.durable && !transient;
        const live = hold && ws !== null && this.settings.durableGrace > 0;
        const now = Date.now();
        let liveBase: Omit<NewMessage, 'recipient'> | null = null;
        if (this.presence.tracksMessages && !gid) this.presence.messaged(from, to);
        for (const r of recipients) {
          if (r === from && gid) continue;
          // A member whose inbox is full misses a group message; the sender
          // still hears "sent" for the others (a 1:1 message was refused above).
          if (gid && this.mayStore(r, flags) && this.inboxes.full(r, info[Info.PayloadLen], now)) {
            this.stats.inboxFull++;
            continue;
          }
          const online = this.devices.has(r);
          if (flags & (FLAG_DELIVERY_RECEIPT | FLAG_READ_RECEIPT)) this.trackReceipt(from, r, id, flags, gid);
          if (online && live && !this.pumping.has(r) && !(this.heldTo.size && this.heldTo.has(r))) {
            this.publish(r, out, frameLen, frame2Len, outFormat);
            this.metrics.delivered++;
            payload ??= Buffer.from(out.subarray(payloadAt, toAt));
            liveAck ??= { ws: ws!, frame: ackFrame(), binary: senderBinary, left: 0 };
            liveBase ??= {
              sender: from, id, refid: info[Info.Refid], groupid: gid, flags, type: info[Info.Type], expiry,
              expiresAt: expiry ? now + expiry * 1000 : 0, payload,
            };
            this.addLive(liveAck, r, liveBase, now);
            continue;
          }
          if (online) {
            this.metrics.delivered++;
            if (!hold) this.publish(r, out, frameLen, frame2Len, outFormat);
            else {
              held ??= holdFrames(out, frameLen, frame2Len, outFormat);
              this.held.push({ to: r, frames: held });
              this.heldTo.add(r);
            }
          }
          if (transient || (online && !this.settings.durable && !this.pumping.has(r))) continue;
          payload ??= Buffer.from(out.subarray(payloadAt, toAt));
          this.store.enqueue({
            recipient: r, sender: from, id, refid: info[Info.Refid], groupid: gid, flags, type: info[Info.Type], expiry,
            expiresAt: expiry ? now + expiry * 1000 : 0, payload,
          });
          this.inboxes.added(r, payload.length);
          this.metrics.copiesStored++;
          stored = true;
        }
      }
      if (status === Status.SENT) this.metrics.receivedPass++;
      else this.metrics.receivedFailed++;
    }
    if (!ws) {
      if (stored) this.flushNow();
      return status;
    }
    if (status !== Status.SENT) {
      const f = this.core.statusFrame({ id, status, from: to, to: from, groupid: gid }, senderBinary ? 'binary' : 'json');
      ws.send(f, senderBinary);
    } else if (liveAck) {
      // "Sent" when the last live copy is confirmed or stored (confirmLive,
      // storeLive), with the acks of that turn, after its commit: so also
      // after the commit of any copy stored here.
    } else if (stored) {
      // "Sent" means durable: the ack waits for this turn's group commit.
      this.acks.push({ ws, frame: ackFrame(), binary: senderBinary });
      this.scheduleFlush();
    } else {
      ws.send(out.subarray(ackAt, ackAt + ackLen), senderBinary);
    }
    return status;
  }

  /**
   * The send stage per recipient (in order per recipient), then storage and
   * delivery of that recipient's copy; `ack` goes to the sender after the
   * last copy (after the commit when a copy was stored).
   */
  private deliverEach(from: string, recipients: string[], snap: MessageFields, ack: PendingAck | null): void {
    const targets = recipients.filter((r) => !(r === from && snap.groupid));
    let remaining = targets.length;
    let stored = false;
    const category = this.categories.get(`${from}\0${snap.id}`) ?? this.defaultCategory(snap.to, snap.groupid);
    const one = () => {
      if (--remaining > 0) return;
      this.categories.delete(`${from}\0${snap.id}`);
      if (!ack) {
        if (stored) this.scheduleFlush();
        return;
      }
      if (stored) {
        this.acks.push(ack);
        this.scheduleFlush();
      } else if (ack.ws.getUserData().open) {
        ack.ws.send(ack.frame, ack.binary);
      }
    };
    if (!remaining) {
      remaining = 1;
      one();
      return;
    }
    for (const r of targets) {
      this.serial.run(`r\0${r}`, () => {
        const m = new Decoded(from, snap, category);
        if (snap.groupid) m.to = '';
        m.recipient = r;
        const go = (ok: boolean): void => {
          if (ok && this.deliverCopy(r, from, m)) stored = true;
          one();
        };
        const res = this.middleware.send.empty ? true : this.middleware.send.run(m);
        if (res instanceof Promise) return res.then(go);
        go(res);
      });
    }
  }

  /**
   * Stores (as the rules say) and sends one recipient's copy of a message
   * that did not come from a client frame (a module's, or one the send stage
   * saw). `shared` carries the encoded frames to the next recipient when the
   * copies are the same. Returns whether it was stored.
   */
  private deliverCopy(r: string, from: string, m: MessageFields, shared: { frames: HeldFrames | null } = { frames: null }): boolean {
    const copy: NewMessage = {
      recipient: r, sender: from, id: m.id, refid: m.refid, groupid: m.groupid, flags: m.flags, type: m.type,
      expiry: m.expiry, expiresAt: m.expiry ? Date.now() + m.expiry * 1000 : 0, payload: m.payload,
    };
    const transient = (m.flags & FLAG_TRANSIENT) !== 0;
    if (this.mayStore(r, m.flags) && this.inboxes.full(r, m.payload.length, Date.now())) {
      this.stats.inboxFull++;
      return false;
    }
    const online = this.devices.has(r);
    if (online) {
      this.metrics.delivered++;
      const frames = (shared.frames ??= { json: this.jsonDevices ? encodeStored(copy, false) : null, binary: this.binaryDevices ? encodeStored(copy, true) : null });
      if (this.settings.durable && !transient) {
        this.held.push({ to: r, frames });
        this.heldTo.add(r);
      } else this.publishHeld({ to: r, frames });
    }
    if (m.flags & (FLAG_DELIVERY_RECEIPT | FLAG_READ_RECEIPT)) this.trackReceipt(from, r, m.id, m.flags, m.groupid);
    if (transient || (online && !this.settings.durable && !this.pumping.has(r))) return false;
    this.store.enqueue(copy);
    this.metrics.copiesStored++;
    this.inboxes.added(r, copy.payload.length);
    return true;
  }

  /** The format stage: each connection of `to` whose backlog is done gets its own frame. Synchronous by contract. */
  private sendFormatted(to: string, frames: HeldFrames): void {
    for (const ws of this.devices.get(to) ?? []) {
      const c = ws.getUserData();
      if (!c.open || !c.backlogDone) continue;
      const f = c.binary ? frames.binary : frames.json;
      if (!f) continue;
      const out = this.formatFrame(c, to, f);
      if (out) ws.send(out, c.binary);
    }
    this.closeSlow(to);
  }

  /** Runs the format stage on one frame for one connection; null when dropped. */
  private formatFrame(c: Conn, to: string, frame: Buffer): Buffer | null {
    const m = new Format(to, c.device, c.binary, frame);
    const r = this.middleware.format.run(m);
    if (r instanceof Promise) {
      if (!this.warnedAsyncFormat) {
        this.warnedAsyncFormat = true;
        this.logger.event('middleware.error', { stage: 'format', error: 'a format middleware returned a Promise or did not call next at once; format runs per connection and must be synchronous, so the frame was sent as it stood (logged once)' }, 'warn');
      }
      r.catch(() => undefined);
      return m.dropped ? null : m.frame;
    }
    return r ? m.frame : null;
  }

  private publish(to: string, out: Buffer, frameLen: number, frame2Len: number, outFormat: number): void {
    if (outFormat === OUT_BOTH) {
      this.app.publish(topic(to, false), out.subarray(0, frameLen), false);
      this.app.publish(topic(to, true), out.subarray(frameLen, frameLen + frame2Len), true);
    } else {
      this.app.publish(topic(to, outFormat === OUT_BINARY), out.subarray(0, frameLen), outFormat === OUT_BINARY);
    }
    this.closeSlow(to);
  }

  private publishHeld(h: { to: string; frames: HeldFrames }): void {
    if (!this.middleware.format.empty) return this.sendFormatted(h.to, h.frames);
    this.publishFrames(h.to, h.frames);
  }

  /** Frames already encoded, to every device of `to` in its form; no format stage (statuses, or format is empty). */
  private publishFrames(to: string, frames: HeldFrames): void {
    if (frames.json) this.app.publish(topic(to, false), frames.json, false);
    if (frames.binary) this.app.publish(topic(to, true), frames.binary, true);
    this.closeSlow(to);
  }

  private closeSlow(to: string): void {
    // uWebSockets.js skips a subscriber whose backpressure would pass the
    // limit; such a device would silently miss messages. Close it once it is
    // half way there instead: what it missed waits in the store and comes
    // on its next connection.
    for (const ws of this.devices.get(to) ?? []) {
      // Each frame sent may be answered with a delivered and a read status
      // that the rate limit does not count (allow()).
      ws.getUserData().owed += 2;
      if (ws.getBufferedAmount() >= MAX_BACKPRESSURE / 2) {
        // Not end(): a close frame would queue behind what it does not read.
        if (ws.getUserData().open) {
          this.metrics.slowClosed++;
          this.logger.event('conn.slow_closed', { address: to, peer: ws.getUserData().ip, buffered: ws.getBufferedAmount() });
          ws.close();
        }
      }
    }
  }

  /** Remembers the receipt flags of a message and its group, packed in one number (gid × 4 + flags): no object per message. */
  private trackReceipt(sender: string, recipient: string, id: number, flags: number, gid: number): void {
    if (this.receiptFlags.size >= MAX_TRACKED_RECEIPTS) {
      const oldest = this.receiptFlags.keys().next().value;
      if (oldest !== undefined) this.receiptFlags.delete(oldest);
    }
    this.receiptFlags.set(`${sender}\0${recipient}\0${id}`, gid * 4 + (flags & (FLAG_DELIVERY_RECEIPT | FLAG_READ_RECEIPT)));
  }

  /**
   * Whether `recipient`'s receipt `status` for `sender`'s message `id` goes
   * back to the sender: only when the message's flags asked for it. Returns
   * the message's gid (0 for a 1:1 message) when it does, -1 when not. The
   * flags of messages that want receipts are kept in memory from routing
   * (and, at start-up, from the store) until the receipt has gone back.
   */
  private receiptFor(key: string, status: number): number {
    if (this.receiptFlags.size === 0) return -1;
    const packed = this.receiptFlags.get(key);
    if (!packed) return -1;
    const flags = packed & 3;
    if (status === Status.READ || !(flags & FLAG_READ_RECEIPT)) this.receiptFlags.delete(key);
    const wanted = status === Status.READ ? (flags & FLAG_READ_RECEIPT) !== 0 : (flags & FLAG_DELIVERY_RECEIPT) !== 0;
    return wanted ? Math.floor(packed / 4) : -1;
  }

  /** `from`'s receipt for `to`'s group message, in the forms `to`'s devices read. */
  private groupReceipt(id: number, status: number, from: string, to: string, gid: number, outFormat: number): HeldFrames {
    const f = { id, status, from, to, groupid: gid };
    return {
      json: outFormat !== OUT_BINARY ? this.core.statusFrame(f, 'json') : null,
      binary: outFormat !== OUT_JSON ? this.core.statusFrame(f, 'binary') : null,
    };
  }

  /** Whether a copy for `r` may end up in the store, and so counts against its inbox. */
  private mayStore(r: string, flags: number): boolean {
    if (flags & FLAG_TRANSIENT) return false;
    return this.settings.durable || !this.devices.has(r) || this.pumping.has(r);
  }

  private group(gid: number): string[] | null {
    let members = this.groups.get(gid);
    if (!members) {
      if (!this.store.groupExists(gid)) return null;
      members = new Set(this.store.members(gid));
      this.groups.set(gid, members);
    }
    return [...members];
  }

  /** A message from the backend API, as user `from`: the same path as a client frame. */
  private sendAs(from: string, frame: Uint8Array): SendResult | Promise<SendResult> {
    const mw = this.middleware;
    if (!mw.ingest.empty || !mw.normalize.empty || !mw.categorize.empty) return this.sendAsStaged(from, Buffer.from(frame));
    return this.submitAs(from, frame);
  }

  /** The backend API's message through ingest, normalize and categorize. A drop answers verdict 'consumed'. */
  private async sendAsStaged(from: string, frame: Buffer): Promise<SendResult> {
    const mw = this.middleware;
    const dropped = (f: Buffer): SendResult => {
      const d = native.decodeFrame(f, this.settings.maxMessageSize);
      return { status: Status.SENT, id: (d.id as number) ?? 0, verdict: 'consumed' };
    };
    if (!mw.ingest.empty) {
      const m = new Ingest(from, 'api', frame, false);
      if (!(await mw.ingest.run(m))) return dropped(m.frame);
      frame = m.frame;
    }
    if (!mw.normalize.empty || !mw.categorize.empty) {
      const d = native.decodeFrame(frame, this.settings.maxMessageSize);
      if (d.error === undefined && d.op === 'msg') {
        const m = this.decoded(from, d);
        if (!(await this.runDecoded(m))) return dropped(frame);
        frame = this.reencode(m, d.format === 'binary');
      }
    }
    return this.submitAs(from, frame);
  }

  private submitAs(from: string, frame: Uint8Array): SendResult | Promise<SendResult> {
    const outFormat = this.outFormat();
    const v = this.core.submitRaw(from, frame, outFormat);
    if (v < 0) throw wireErrorFor(v, this.core.lastErrorDetail());
    if (v === VERDICT_DEFERRED) {
      const token = this.core.infoArray()[Info.Token];
      return new Promise((resolve) => this.deferred.set(token, { ws: null, outFormat, api: resolve }));
    }
    const status = this.route(from, v, outFormat, null);
    return { status, id: this.core.infoArray()[Info.Id], verdict: v === 1 ? 'consumed' : 'pass' };
  }

  /**
   * A module's mesibo_message, after the rest of the chain passed it: the
   * same delivery rules as a client's message (stored first when durable,
   * live only to devices whose backlog is done).
   */
  private routeModuleMessage(m: { from: string; to: string; id: number; refid: number; groupid: number; flags: number; type: number; expiry: number; payload: Buffer }): void {
    const recipients = m.groupid ? this.group(m.groupid) : this.users.has(m.to) ? [m.to] : null;
    if (!recipients) {
      this.logger.event('module.unknown_destination', { id: m.id, to: m.to || undefined, groupid: m.groupid || undefined, outcome: 'dropped' });
      return;
    }
    if (!this.middleware.send.empty || !this.middleware.format.empty) {
      this.deliverEach(m.from, recipients, { id: m.id, refid: m.refid, groupid: m.groupid, flags: m.flags, type: m.type, expiry: m.expiry, to: m.to, payload: m.payload }, null);
      return;
    }
    // Every recipient gets the same copy: its frames are encoded once.
    const shared: { frames: HeldFrames | null } = { frames: null };
    for (const r of recipients) if (!(r === m.from && m.groupid)) this.deliverCopy(r, m.from, m, shared);
    this.scheduleFlush();
  }

  // --- live copies (durable on, durable_grace > 0) ------------------------

  private addLive(ack: LiveAck, recipient: string, base: Omit<NewMessage, 'recipient'>, now: number): void {
    ack.left++;
    const key = `${base.sender}\0${recipient}\0${base.id}`;
    const had = this.live.get(key);
    if (had) {
      // A resend of a message still live (the sender reconnected before
      // its "sent"): one confirmation answers both.
      (had.more ??= []).push(ack);
      return;
    }
    const lc: LiveCopy = { key, recipient, base, sentAt: now, ack, more: null };
    this.live.set(key, lc);
    this.liveQueue.push(lc);
    if (!this.liveTimer) this.armLive();
  }

  /**
   * The recipient confirmed a live copy: its sender hears "sent" at the end
   * of this loop turn, with every other ack of the turn, in one write per
   * connection.
   */
  private confirmLive(lc: LiveCopy): void {
    this.live.delete(lc.key);
    lc.base = null;
    this.settleLive(lc);
  }

  /** Not confirmed in time (or its recipient left): written to the store, and "sent" follows the commit. */
  private storeLive(lc: LiveCopy): void {
    this.live.delete(lc.key);
    this.store.enqueue({ ...lc.base!, recipient: lc.recipient });
    this.metrics.copiesStored++;
    this.inboxes.added(lc.recipient, lc.base!.payload.length);
    lc.base = null;
    this.settleLive(lc);
    this.scheduleFlush();
  }

  /** One fewer copy for each "sent" waiting on lc; the last one queues it. */
  private settleLive(lc: LiveCopy): void {
    if (--lc.ack.left === 0) this.queueAck(lc.ack);
    if (lc.more) for (const a of lc.more) if (--a.left === 0) this.queueAck(a);
  }

  private queueAck(a: PendingAck): void {
    this.acks.push(a);
    this.scheduleFlush();
  }

  /**
   * One timer for all live copies. It fires at most every quarter of the
   * grace, so a copy waits between the grace and 1.25 times it; and it
   * decides in a setImmediate, after the loop's poll phase has read the
   * confirmations that already arrived.
   */
  private armLive(): void {
    const q = this.liveQueue;
    while (this.liveHead < q.length && q[this.liveHead].base === null) this.liveHead++;
    if (this.liveHead >= q.length) {
      this.liveQueue = [];
      this.liveHead = 0;
    }
    const grace = this.settings.durableGrace;
    let wait = Math.ceil(grace / 4);
    if (this.liveHead < this.liveQueue.length) wait = Math.max(this.liveQueue[this.liveHead].sentAt + grace - Date.now(), wait);
    else if (!this.liveLate.length) {
      this.liveTimer = null;
      return;
    }
    wait = Math.max(wait, 1);
    this.liveTimerAt = Date.now() + wait;
    this.liveTimer = setTimeout(() => setImmediate(() => this.expireLive()), wait);
  }

  /**
   * Stores the copies that are past the grace, unless the server or their
   * recipient gives a reason to wait, up to 5 s (or the grace, if longer):
   * - the loop is busy (this timer fired over half a grace late): the server
   *   reads confirmations late, so silence says nothing about recipients;
   * - the recipient is still confirming other messages (expireLive saw a
   *   confirmation from one of its devices within the grace).
   * Storing copies whose confirmations are merely late would add a store
   * write and a delete per message exactly when the server has no time for
   * them, and it would fall further behind: measured, at 40-50k msg/s in
   * rate mode a plain 50 ms grace sent half the copies to the store and p50
   * latency to 300 ms. A connected recipient that confirms nothing has its
   * copies stored after the grace. Whatever is stored for one recipient is
   * an oldest-first run of its copies (one decision per recipient per pass,
   * older copies first), so the store keeps each sender's order.
   */
  private expireLive(): void {
    this.liveTimer = null;
    if (this.stopped) return;
    const now = Date.now();
    const grace = this.settings.durableGrace;
    const due = now - grace;
    const cap = now - Math.max(grace, 5000);
    const busy = now - this.liveTimerAt > grace / 2;
    const confirming = new Map<string, boolean>();
    const decide = (lc: LiveCopy): void => {
      const r = lc.recipient;
      let alive = confirming.get(r);
      if (alive === undefined && !busy) {
        alive = false;
        for (const ws of this.devices.get(r) ?? []) if (ws.getUserData().confirmedAt > due) alive = true;
        confirming.set(r, alive);
      }
      if ((busy || alive) && lc.sentAt > cap) this.liveLate.push(lc);
      else this.storeLive(lc);
    };
    const late = this.liveLate;
    this.liveLate = [];
    for (const lc of late) if (lc.base) decide(lc);
    const q = this.liveQueue;
    // Copies went out in queue order, so the expired ones are a prefix.
    while (this.liveHead < q.length && q[this.liveHead].sentAt <= due) {
      const lc = q[this.liveHead++];
      if (lc.base) decide(lc);
    }
    if (this.liveHead > 1024 && this.liveHead * 2 > q.length) {
      this.liveQueue = q.slice(this.liveHead);
      this.liveHead = 0;
    }
    this.armLive();
  }

  /** Every unconfirmed copy (of `recipient`, or all), oldest first. */
  private *liveCopies(recipient?: string): Generator<LiveCopy> {
    for (const lc of this.liveLate) if (lc.base && (recipient === undefined || lc.recipient === recipient)) yield lc;
    for (let i = this.liveHead; i < this.liveQueue.length; i++) {
      const lc = this.liveQueue[i];
      if (lc.base && (recipient === undefined || lc.recipient === recipient)) yield lc;
    }
  }

  // --- group commit -------------------------------------------------------

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => this.flushNow());
  }

  private flushNow(): void {
    this.flushScheduled = false;
    if (this.store.pendingWrites) {
      try {
        const t0 = performance.now();
        this.store.flush();
        countCommit(this.metrics, (performance.now() - t0) / 1000);
      } catch (e) {
        // Nothing held is published and no "sent" goes out: senders resend.
        this.logger.event('store.error', { op: 'flush', error: errorText(e) });
        throw e;
      }
    }
    const held = this.held;
    if (held.length) {
      this.held = [];
      this.heldTo.clear();
      for (const h of held) this.publishHeld(h);
    }
    const acks = this.acks;
    if (acks.length) {
      this.acks = [];
      this.sendAcks(acks);
    }
    const receipts = this.receiptsAfterAcks;
    if (receipts.length) {
      this.receiptsAfterAcks = [];
      for (const r of receipts) this.publishFrames(r.to, r.frames);
    }
  }

  private sendAcks(acks: PendingAck[]): void {
    if (acks.length === 1) {
      const a = acks[0];
      if (a.ws.getUserData().open) a.ws.send(a.frame, a.binary);
      return;
    }
    // One write per connection, not one per status: outside a uWebSockets.js
    // callback every uncorked send is a system call.
    const byWs = new Map<WS, PendingAck[]>();
    for (const a of acks) {
      const list = byWs.get(a.ws);
      if (list) list.push(a);
      else byWs.set(a.ws, [a]);
    }
    for (const [ws, list] of byWs) {
      if (!ws.getUserData().open) continue;
      ws.cork(() => {
        for (const a of list) ws.send(a.frame, a.binary);
      });
    }
  }
}

type SendResult = { status: number; id: number; verdict: 'pass' | 'consumed' };

interface Deferred {
  ws: WS | null;
  outFormat: number;
  /** A backend API request waiting for the answer. */
  api: ((r: SendResult) => void) | null;
}

/** Copies of a delivery's frames that outlive the core's reused buffer. */
interface HeldFrames {
  json: Buffer | null;
  binary: Buffer | null;
}

function holdFrames(out: Buffer, frameLen: number, frame2Len: number, outFormat: number): HeldFrames {
  const first = Buffer.from(out.subarray(0, frameLen));
  if (outFormat === OUT_BOTH) return { json: first, binary: Buffer.from(out.subarray(frameLen, frameLen + frame2Len)) };
  return outFormat === OUT_BINARY ? { json: null, binary: first } : { json: first, binary: null };
}

function topic(address: string, binary: boolean): string {
  return binary ? `u/${address}/b` : `u/${address}/j`;
}

function encodeStored(m: NewMessage, binary: boolean): Buffer {
  return native.encodeFrame('msg', { id: m.id, from: m.sender, to: m.groupid ? '' : m.recipient, groupid: m.groupid, refid: m.refid, flags: m.flags, type: m.type, expiry: m.expiry, payload: m.payload }, binary ? 1 : 0);
}

function wireErrorFor(code: number, detail: string): SwitchboardError {
  const e = native.wireError(code);
  return new SwitchboardError(e.code, detail ? `${e.message} (${detail})` : e.message, { detail });
}

/** The largest WebSocket message the transport reads (see maxPayloadLength). */
function transportLimit(maxMessageSize: number): number {
  return 4 * (2 * maxMessageSize + 4096);
}

/** Answers an upgrade request with an HTTP error instead of a WebSocket. */
function refuseUpgrade(res: uWS.HttpResponse, status: string, code: ErrorCode, message: string): void {
  res.cork(() => {
    res.writeStatus(status).writeHeader('Content-Type', 'application/json').end(JSON.stringify({ ok: false, code, message }));
  });
}
