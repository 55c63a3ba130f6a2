/**
 * Sessions: a socket from its upgrade to its close. The connection limits
 * at the upgrade, the login (by ?token= or a login frame) and its deadline,
 * the stored backlog sent page by page before a device is subscribed to
 * live deliveries, and what a close leaves behind.
 */
import uWS from 'uWebSockets.js';
import type { Core } from '../core';
import type { ErrorCode } from '../errors';
import type { Logger } from '../log';
import type { AsyncStore, StoredMessage } from '../store/types';
import type { Delivery as Engine } from '../delivery';
import type { Commit } from './commit';
import type { Conn, Connections, UserLimits, WS } from './connections';
import { encodeStored, type Delivery } from './delivery';
import { validDevice, type IpCount, type LimitStats } from './limits';
import type { MetricCounts } from './metrics';
import { CLOSE_AUTH, CLOSE_BAD_LOGIN, CLOSE_LOGIN_TIMEOUT, CLOSE_STORE_FAILED, CLOSE_TOO_MANY } from './protocol';
import type { ServerSettings } from './settings';
import type { StoreHealth } from './store-health';
import { hashToken } from './tokens';
import type { Cluster } from './cluster';

/** The backlog is sent while less than this waits in the socket's buffer. */
const BACKLOG_BUFFER = 512 * 1024;
const BACKLOG_PAGE = 500;
/** Frames a client may send behind its login frame before the token is looked up; more is a client that does not wait for "hello". */
const MAX_HELD = 64;
const STORE_UNREADABLE = 'the server cannot read its store right now; connect again shortly';

export class Sessions {
  /** Sockets not logged in yet, oldest first: the login deadline and eviction go in this order. */
  private readonly unauth = new Set<WS>();
  private readonly perIp = new Map<string, IpCount>();
  private readonly perUser = new Map<string, UserLimits>();
  private loginTimer: NodeJS.Timeout | null = null;
  private stopped = false;
  /** Sockets open with a token in their URL that the store is looking up: neither logged in nor unauthenticated, they count against the connection cap. */
  private readonly lookingUp = new Set<WS>();
  /** Where frames held during a login go once it succeeded (Intake.frame; set once by the server). */
  replay: (ws: WS, ab: ArrayBuffer, isBinary: boolean) => void = () => {};
  /** This node's part of a cluster (set by the server), or null on a single node. */
  cluster: Cluster | null = null;

  constructor(
    private readonly settings: ServerSettings,
    private readonly app: uWS.TemplatedApp,
    private readonly store: AsyncStore,
    private readonly core: Core,
    private readonly connections: Connections,
    private readonly engine: Engine,
    private readonly commit: Commit,
    private readonly delivery: Delivery,
    private readonly stats: LimitStats,
    private readonly metrics: MetricCounts,
    private readonly logger: Logger,
    private readonly health: StoreHealth,
  ) {}

  get unauthenticated(): number {
    return this.unauth.size;
  }

  /** The WebSocket upgrade: refused before a socket exists when a connection limit is reached. */
  upgrade(res: uWS.HttpResponse, req: uWS.HttpRequest, context: uWS.us_socket_context_t): void {
    const s = this.settings;
    const ip = Buffer.from(res.getRemoteAddressAsText()).toString();
    const st = this.stats;
    // Refused before the upgrade: no socket is kept, nothing is buffered.
    if (this.connections.count + this.unauth.size + this.lookingUp.size >= st.connectionCap) {
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
    // The request is only valid in this call: everything needed later is read now.
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
      user: null,
      uid: -1,
      id: -1,
      presence: new Set(),
      backlogSeq: 0,
      backlogDone: false,
      backlogReading: false,
    };
    const token = query.get('token');
    // A token in the URL is looked up once the socket is open, as a login
    // frame's is, so that the upgrade is made here, in this handler: the
    // store may answer later, and uWebSockets.js 20.30 may close a socket
    // upgraded after the handler returned. Its res.cork() takes a WebSocket
    // that realloc left at the response's address for the response still,
    // reads HTTP state from memory that is no longer the response's, and
    // closes the socket (1006) right after its open handler when that reads
    // "Connection: close" (issue 15; fixed upstream in uWebSockets PR 1929).
    if (token) conn.tokenHash = hashToken(token);
    else if (!this.roomForUnauthenticated(res, ip)) return;
    // Inside this handler the response is corked already.
    res.upgrade(conn, key, protocol, extensions, context);
  }

  /** Room for one more socket that has not logged in, or false when the upgrade was refused. */
  private roomForUnauthenticated(res: uWS.HttpResponse, ip: string): boolean {
    const s = this.settings;
    const st = this.stats;
    const perIp = this.perIp.get(ip);
    if (s.maxUnauthenticatedPerIp && perIp && perIp.unauth >= s.maxUnauthenticatedPerIp) {
      st.refusedPerIp++;
      refuseUpgrade(res, '429 Too Many Requests', 'E_TOO_MANY_CONNECTIONS', `this IP has ${perIp.unauth} connections that have not logged in (max_unauthenticated_per_ip); log in or close them`);
      return false;
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
    return true;
  }

  open(ws: WS): void {
    const c = ws.getUserData();
    let n = this.perIp.get(c.ip);
    if (!n) this.perIp.set(c.ip, (n = { all: 0, unauth: 0 }));
    n.all++;
    this.logger.event('conn.open', { peer: c.ip });
    if (c.tokenHash) {
      const tokenHash = c.tokenHash;
      c.tokenHash = undefined;
      this.lookingUp.add(ws);
      return this.lookUp(ws, c, tokenHash, undefined, undefined);
    }
    n.unauth++;
    this.unauth.add(ws);
    this.stats.unauthenticated = this.unauth.size;
    this.loginTimer ??= setInterval(() => this.loginDeadline(), 1000).unref();
  }

  /** A frame on a socket that has not logged in: it must be the login. */
  login(ws: WS, ab: ArrayBuffer, isBinary: boolean): void {
    if (this.holdDuringLogin(ws, ab, isBinary)) return;
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
    if (typeof req.token !== 'string') {
      this.loginFailed(ws, 'E_AUTH', 'the token is unknown or was revoked; ask the backend for a new one');
      return;
    }
    this.lookUp(ws, ws.getUserData(), hashToken(req.token), req.device, req.format);
  }

  /** Logs the socket in once the store has found the token (by the URL's or a login frame's); frames behind it wait for the answer, then go in order. */
  private lookUp(ws: WS, c: Conn, tokenHash: string, device: unknown, format: unknown): void {
    c.held = [];
    this.store.userByTokenHash(tokenHash).then(
      (address) => {
        this.lookingUp.delete(ws);
        const held = c.held ?? [];
        c.held = undefined;
        if (!c.open) return;
        if (!address) {
          this.loginFailed(ws, 'E_AUTH', 'the token is unknown or was revoked; ask the backend for a new one');
          return;
        }
        if (device !== undefined) {
          if (typeof device !== 'string') {
            this.stats.refusedBadDevice++;
            this.refuse(ws, 'E_BAD_DEVICE', '"device" must be a string of up to 64 bytes of text without control characters', CLOSE_BAD_LOGIN);
            return;
          }
          c.device = device;
        }
        if (format === 'binary') c.binary = true;
        c.address = address;
        c.loginHash = tokenHash;
        this.loggedIn(ws);
        for (const f of held) {
          if (!c.open || !c.address) break;
          this.replay(ws, f.data, f.isBinary);
        }
      },
      (e: unknown) => {
        this.lookingUp.delete(ws);
        c.held = undefined;
        this.health.failed(e);
        if (c.open) this.refuse(ws, 'E_STORE_READ', STORE_UNREADABLE, CLOSE_STORE_FAILED);
      },
    );
  }

  /** A frame behind a login frame whose token is being looked up: kept for after it, or the socket is refused when too many wait. */
  private holdDuringLogin(ws: WS, ab: ArrayBuffer, isBinary: boolean): boolean {
    const c = ws.getUserData();
    if (!c.held) return false;
    if (c.held.length >= MAX_HELD) {
      c.held = undefined;
      this.loginFailed(ws, 'E_NOT_LOGGED_IN', `wait for the "hello" answer to the login before sending more than ${MAX_HELD} frames`);
      return true;
    }
    // uWebSockets.js lends `ab` for this call only.
    c.held.push({ data: ab.slice(0), isBinary });
    return true;
  }

  close(ws: WS, code: number, reason: ArrayBuffer): void {
    const c = ws.getUserData();
    if (this.logger.enabled('conn.close')) this.logger.event('conn.close', { address: c.address || undefined, device: c.device || undefined, peer: c.ip, code });
    c.open = false;
    const n = this.perIp.get(c.ip);
    if (n && --n.all === 0) this.perIp.delete(c.ip);
    this.leftUnauth(ws, c);
    this.lookingUp.delete(ws);
    // uWebSockets.js ends these itself, without a close frame.
    if (code === 1006) {
      const why = Buffer.from(reason).toString();
      if (why === 'Received too big message') this.stats.framesTooLarge++;
      else if (why === 'Received invalid UTF-8') this.stats.invalidText++;
    }
    if (c.presence.size) this.stats.presenceSubscriptions -= c.presence.size;
    if (!c.address) return;
    const left = this.connections.remove(ws);
    if (left < 0) return;
    // The user's count outlives its last connection until purge(); its rate
    // budget (the engine's) outlives it for good, so reconnecting does not
    // buy a fresh one.
    if (c.user) c.user.connections--;
    this.stats.connections = this.connections.count;
    if (!c.backlogDone) this.delivery.stopBacklogRead(c.uid);
    // The live copies this user's devices had not confirmed are stored
    // (once stopped, the engine has stored every one already).
    this.engine.logout(c.id);
    this.delivery.perform();
    if (this.stopped) return;
    this.core.login(c.address, false);
    if (left === 0) {
      this.cluster?.left(c.address);
      if (!this.cluster?.elsewhere(c.address)) this.app.publish(`p/${c.address}`, JSON.stringify({ op: 'presence', from: c.address, online: false }), false);
    }
  }

  /** Closes every connection of `address` with an error (revoked token, removed user). */
  disconnect(address: string, code: ErrorCode, message: string): void {
    for (const ws of [...this.connections.of(address)]) this.refuse(ws, code, message);
  }

  /**
   * Each logged-in connection's token looked up again (one lookup per
   * token, eight at a time): a connection whose token no longer names its
   * user is closed as a revoked one is. For a node of a cluster back on
   * NATS after an outage, during which another node's `usertoken` or
   * `userdel` broadcast went by unheard. Returns how many were closed.
   */
  async recheckTokens(): Promise<number> {
    const byHash = new Map<string, WS[]>();
    for (const ws of this.connections.all()) {
      const h = ws.getUserData().loginHash;
      if (!h) continue;
      const list = byHash.get(h);
      if (list) list.push(ws);
      else byHash.set(h, [ws]);
    }
    const hashes = [...byHash.keys()];
    let closed = 0;
    const next = async (): Promise<void> => {
      for (let h = hashes.pop(); h !== undefined; h = hashes.pop()) {
        const address = await this.store.userByTokenHash(h);
        for (const ws of byHash.get(h)!) {
          const c = ws.getUserData();
          if (!c.open || c.address === address) continue;
          closed++;
          this.refuse(ws, 'E_AUTH', 'your token was revoked or your user was removed; log in again with a new token');
        }
      }
    };
    await Promise.all(Array.from({ length: 8 }, next));
    return closed;
  }

  /**
   * Sends what the store holds for this user (messages that arrived while it
   * was offline or were not acknowledged yet), page by page as the socket
   * drains, and only then lets the engine write live deliveries to it, so
   * that nothing live overtakes the backlog. One page is read at a time
   * (the store may answer later); a drain meanwhile finds it reading.
   */
  pump(ws: WS): void {
    const c = ws.getUserData();
    if (!c.open || c.backlogDone || c.backlogReading || ws.getBufferedAmount() >= BACKLOG_BUFFER) return;
    // What was stored for this user since the last page (while this device
    // was not subscribed yet) must be in the next one: committed first,
    // and with an asynchronous store the page waits for that commit.
    if (!this.commit.idle) {
      this.commit.now();
      if (!this.commit.idle) {
        c.backlogReading = true;
        return this.commit.afterCommit(() => {
          c.backlogReading = false;
          this.pump(ws);
        });
      }
    }
    c.backlogReading = true;
    const storedBefore = this.delivery.storedDuringBacklog(c.uid);
    this.store.pending(c.address, BACKLOG_PAGE, c.backlogSeq).then(
      (page) => {
        c.backlogReading = false;
        if (c.open) this.sendPage(ws, c, page, storedBefore);
      },
      (e: unknown) => {
        c.backlogReading = false;
        this.health.failed(e);
        // The client reconnects and its backlog is read again from where the store has it.
        if (c.open) this.refuse(ws, 'E_STORE_READ', STORE_UNREADABLE, CLOSE_STORE_FAILED);
      },
    );
  }

  private sendPage(ws: WS, c: Conn, page: StoredMessage[], storedBefore: number): void {
    if (!page.length) {
      // A copy stored for this user while the page was read may have been
      // committed after the read looked: read again (pump commits first).
      if (this.delivery.storedDuringBacklog(c.uid) !== storedBefore) return this.pump(ws);
      // Another node stored a copy for this user meanwhile: its sequence
      // number may be below the last one read (PostgreSQL numbers copies
      // at insert and shows them at commit), so read again from the start.
      // A copy this connection was given already comes again (delivery is
      // at least once; clients drop a repeat by sender and id, as the SDK
      // does).
      if (this.engine.backlogRecheck(c.id)) {
        c.backlogSeq = 0;
        return this.pump(ws);
      }
      c.backlogDone = true;
      this.delivery.stopBacklogRead(c.uid);
      this.engine.backlogDone(c.id);
      // What waited for the backlog: statuses and transient copies, deferred deletes.
      this.delivery.perform();
      return;
    }
    this.metrics.backlogPages++;
    const durable = this.settings.durable;
    const cluster = this.cluster !== null;
    ws.cork(() => {
      const format = this.delivery.formats;
      for (const m of page) {
        const f = format ? this.delivery.formatFrame(c, c.address, encodeStored(m, c.binary)) : encodeStored(m, c.binary);
        if (f) ws.send(f, c.binary);
        this.metrics.backlogDelivered++;
        this.engine.owe(c.id);
        // With durability off, its "delivered" deletes the stored copy; in
        // a cluster, the same copy coming from another node is not written
        // to this connection again.
        if (!durable || cluster) this.engine.backlogSent(c.id, this.engine.intern(m.sender), m.id);
        c.backlogSeq = m.seq;
        // Large messages: stop within the page rather than overshoot the
        // buffer (a slow reader would then look like one that stopped).
        if (ws.getBufferedAmount() >= BACKLOG_BUFFER) break;
      }
    });
    this.pump(ws);
  }

  /** Sends an error naming `code` and closes the socket. */
  refuse(ws: WS, code: ErrorCode, message: string, close = CLOSE_AUTH): void {
    const c = ws.getUserData();
    if (!c.open) return;
    ws.send(JSON.stringify({ op: 'error', code, message, id: 0 }), false);
    ws.end(close, code);
  }

  /** Forgets the users with no connection left (the purge timer). */
  purge(): void {
    for (const [address, u] of this.perUser) if (u.connections === 0) this.perUser.delete(address);
  }

  /** Closes every socket; the engine, stopped first, has stored every live copy. */
  stop(): void {
    this.stopped = true;
    for (const ws of this.connections.all()) ws.end(1001, 'server shutting down');
    if (this.loginTimer) clearInterval(this.loginTimer);
    for (const ws of [...this.unauth, ...this.lookingUp]) ws.end(1001, 'server shutting down');
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
    if (!limits) this.perUser.set(addr, (limits = { connections: 0 }));
    limits.connections++;
    c.user = limits;
    this.countLogin('ok');
    this.logger.event('login.ok', { address: addr, device: c.device || undefined, format: c.binary ? 'binary' : 'json', peer: c.ip });
    // Nothing live is written to it until its backlog has been sent (backlogDone).
    c.uid = this.engine.intern(addr);
    c.id = this.engine.login(c.uid, c.binary);
    this.delivery.opened(c.id);
    // The other nodes hold their deletes of this user's stored copies until this read is done (Delivery tells them).
    this.delivery.startBacklogRead(c.uid);
    const first = this.connections.add(ws);
    this.stats.connections = this.connections.count;
    this.core.login(addr, true);
    ws.send(JSON.stringify({ op: 'hello', address: addr, device: c.device, v: 1, max: this.settings.maxMessageSize }), false);
    if (first) {
      // Subscribed to its user's copies on other nodes before its backlog
      // is read: a copy stored later comes this way (docs/cluster.md).
      const elsewhere = this.cluster?.elsewhere(addr) ?? false;
      this.cluster?.arrived(addr);
      if (!elsewhere) this.app.publish(`p/${addr}`, JSON.stringify({ op: 'presence', from: addr, online: true }), false);
    }
    // The copies this user's other devices here were sent live and have not
    // confirmed yet are stored now, so that this device's backlog has them:
    // once another device confirmed one, nothing would be stored for this
    // one (stored copies are per user). A confirmation from another device
    // while this one reads its backlog leaves the stored copy until it is
    // done (the engine's DeferredAck).
    if (!first) {
      this.engine.storeLive(c.uid);
      this.delivery.perform();
      // And the live copies other nodes keep for it (docs/cluster.md, "Multi-device").
      if (this.settings.durable) this.cluster?.anotherDevice(addr);
    }
    // A message routed earlier in this loop turn, while this user was
    // offline, is buffered but not committed: the backlog would miss it and
    // the live subscription comes too late for it. Commit it first (and
    // the live copies just stored).
    if (this.store.pendingWrites) this.commit.now();
    const subscribed = this.cluster?.subscribed(addr);
    if (subscribed) void subscribed.then(() => this.pump(ws));
    else this.pump(ws);
  }
}

/** Answers an upgrade request with an HTTP error instead of a WebSocket. */
function refuseUpgrade(res: uWS.HttpResponse, status: string, code: ErrorCode, message: string): void {
  res.cork(() => {
    res.writeStatus(status).writeHeader('Content-Type', 'application/json').end(JSON.stringify({ ok: false, code, message }));
  });
}
