/**
 * Intake: a frame from a logged-in client (or a message from the backend
 * API) up to the core. The rate limits, control frames (presence), the
 * stages before the chain, the core's verdict, and a deferred decision's
 * completion; then the frame goes on to the router.
 */
import type { Core } from '../core';
import { Admit, CommitDue, type Delivery as Engine } from '../delivery';
import { SwitchboardError, type ErrorCode } from '../errors';
import { EVENTS, type Logger } from '../log';
import { Info, native, VERDICT_DEFERRED } from '../native';
import type { Cluster } from './cluster';
import type { Commit } from './commit';
import type { Conn, Connections, WS } from './connections';
import { validAddress, type LimitStats } from './limits';
import type { Presence } from './presence';
import { Status, WIRE_E_TOO_LARGE, WIRE_E_UNKNOWN_OP } from './protocol';
import type { Router } from './router';
import type { Sessions } from './sessions';
import type { ServerSettings } from './settings';
import type { Stages } from './stages';

/** The log level from which every frame is logged (message.in). */
const MESSAGE_IN_LEVEL = EVENTS['message.in'].level;

export type SendResult = { status: number; id: number; verdict: 'pass' | 'consumed' };

/** A message waiting for a deferred decision: who to answer when it completes. */
interface Deferred {
  ws: WS | null;
  outFormat: number;
  /** A backend API request waiting for the answer: its result, or the error of a commit that failed. */
  api: ((r: SendResult | SwitchboardError) => void) | null;
}

export class Intake {
  /** Messages waiting for a deferred decision, by the core's token. */
  private readonly deferred = new Map<number, Deferred>();

  /** This node's part of a cluster (set by the server), or null on a single node. */
  cluster: Cluster | null = null;

  constructor(
    private readonly settings: ServerSettings,
    private readonly core: Core,
    private readonly engine: Engine,
    private readonly connections: Connections,
    private readonly sessions: Sessions,
    private readonly stages: Stages,
    private readonly router: Router,
    private readonly presence: Presence,
    private readonly commit: Commit,
    private readonly stats: LimitStats,
    private readonly logger: Logger,
  ) {}

  /**
   * A WebSocket frame: the ArrayBuffer uWebSockets.js lends for this call
   * only. The rate limits (the engine's admission, cpp/admit.h) come first,
   * before the frame costs anything: in the same native call as the core
   * and the routing, or, when middleware sees the frame before the chain,
   * on their own before it.
   */
  frame(ws: WS, ab: ArrayBuffer, isBinary: boolean): void {
    const c = ws.getUserData();
    if (!c.address) {
      this.sessions.login(ws, ab, isBinary);
      return;
    }
    if (this.stages.beforeChain) {
      const admitted = this.engine.admit(c.id, ab, Date.now());
      if (admitted < 0) return this.rateLimited(ws, c, new Uint8Array(ab), isBinary, admitted);
      // Middleware may take its time: the frame must outlive this callback,
      // and frames of one connection keep their order.
      const copy = Buffer.from(ab.slice(0));
      this.stages.inOrder(ws, () => {
        if (!c.open) return; // the client resends what was not acknowledged
        return this.stages.runBeforeChain(c.address, 'client', copy, isBinary, (f, ok) => {
          if (!ok) this.ackDropped(ws, c, f);
          else if (c.open) this.submit(ws, c, f, isBinary, admitted);
        });
      });
      return;
    }
    this.submit(ws, c, ab, isBinary, 0);
  }

  /**
   * A deferred message has been decided; infoArray()/outBuffer() describe it
   * as they would after submitRaw. The sender's "sent" comes now, so a
   * message that was waiting when the server died was never acknowledged
   * and the client resends it.
   */
  completed(token: number, verdict: number, from: string): void {
    const d = this.deferred.get(token);
    if (!d) return;
    this.deferred.delete(token);
    const ws = d.ws && d.ws.getUserData().open ? d.ws : null;
    const due = this.router.completed(from, ws, d.outFormat);
    const id = this.core.infoArray()[Info.Id];
    this.stages.forget(from, id);
    if (!d.api) return;
    const r = this.afterStored(due, { status: this.router.status, id, verdict: verdict === 1 ? 'consumed' : 'pass' });
    if (r instanceof Promise) r.then(d.api, d.api);
    else d.api(r);
  }

  /** A message from the backend API, as user `from`: the same path as a client frame. */
  sendAs(from: string, frame: Uint8Array): SendResult | Promise<SendResult> {
    if (!this.stages.beforeChain) return this.submitAs(from, frame);
    // A drop answers verdict 'consumed'.
    return new Promise((resolve, reject) => {
      const done = (f: Buffer, ok: boolean): void => {
        try {
          if (ok) return resolve(this.submitAs(from, f));
          const d = native.decodeFrame(f, this.settings.maxMessageSize);
          resolve({ status: Status.SENT, id: (d.id as number) ?? 0, verdict: 'consumed' });
        } catch (e) {
          reject(e);
        }
      };
      const r = this.stages.runBeforeChain(from, 'api', Buffer.from(frame), false, done);
      if (r) r.catch(reject);
    });
  }

  /** `admitted`: what the engine's admission said of the frame already, or 0 for the submit to admit it. */
  private submit(ws: WS, c: Conn, frame: ArrayBuffer | Uint8Array, isBinary: boolean, admitted: number): void {
    const v = this.router.submit(ws, c, frame, admitted);
    if (v <= Admit.RefusedStatus) return this.rateLimited(ws, c, frame instanceof Uint8Array ? frame : new Uint8Array(frame), isBinary, v);
    // The level read once: EVENTS is keyed by strings, a lookup V8 does the slow way, per frame.
    if (this.logger.level >= MESSAGE_IN_LEVEL) this.logFrame(c, v);
    if (v < 0) {
      if (v === WIRE_E_UNKNOWN_OP && !isBinary && this.control(ws, c, frame instanceof Uint8Array ? frame : new Uint8Array(frame))) return;
      if (v === WIRE_E_TOO_LARGE) this.stats.framesTooLarge++;
      // In the form of the refused frame, naming it by its id (0 when the
      // decoder could not read one), as the protocol's error section says.
      ws.send(native.encodeFrame('error', { error: v, id: this.core.infoArray()[Info.Id], detail: this.core.lastErrorDetail() }, isBinary ? 1 : 0), isBinary);
      return;
    }
    const info = this.core.infoArray();
    if (v === VERDICT_DEFERRED) {
      this.deferred.set(info[Info.Token], { ws, outFormat: this.router.submittedFormat, api: null });
      return;
    }
    this.stages.forget(c.address, info[Info.Id]);
  }

  private submitAs(from: string, frame: Uint8Array): SendResult | Promise<SendResult> {
    const { verdict: v, due } = this.router.submitAs(from, frame);
    if (v < 0) throw wireErrorFor(v, this.core.lastErrorDetail());
    if (v === VERDICT_DEFERRED) {
      const token = this.core.infoArray()[Info.Token];
      const outFormat = this.router.submittedFormat;
      return new Promise((resolve, reject) => this.deferred.set(token, { ws: null, outFormat, api: (r) => (r instanceof SwitchboardError ? reject(r) : resolve(r)) }));
    }
    return this.afterStored(due, { status: this.router.status, id: this.core.infoArray()[Info.Id], verdict: v === 1 ? 'consumed' : 'pass' });
  }

  /**
   * The answer to a backend API message means what "sent" means to a
   * client: its copies are committed. The engine says whether it stored
   * any (CommitDue.Now); a synchronous store commits them here (a failure
   * is E_STORE_WRITE), and with an asynchronous one the answer waits for
   * the batch that holds them, in flight or queued behind the flight. A
   * message that stored nothing is answered at once, whatever is in flight.
   */
  private afterStored(due: number, r: SendResult): SendResult | Promise<SendResult> {
    if (due !== CommitDue.Now) return r;
    if (!this.commit.now()) throw notStored();
    if (this.commit.idle) return r;
    return new Promise((resolve, reject) => this.commit.afterCommit((ok) => (ok ? resolve(r) : reject(notStored()))));
  }

  /** message.in / frame.refused (log_level 3): what the core made of one frame. */
  private logFrame(c: Conn, v: number): void {
    if (v === WIRE_E_UNKNOWN_OP) return; // a control frame (presence), or refused by control()
    if (v < 0) this.logger.event('frame.refused', { address: c.address, error: v, detail: this.core.lastErrorDetail() || undefined });
    else this.logger.event('message.in', { from: c.address, id: this.core.infoArray()[Info.Id], verdict: v === VERDICT_DEFERRED ? 'deferred' : v === 1 ? 'consumed' : 'pass' });
  }

  /** A message a pre-chain stage dropped is "sent" for its sender (as one a module consumed), so the client does not resend it. */
  private ackDropped(ws: WS, c: Conn, frame: Buffer): void {
    const d = native.decodeFrame(frame, this.settings.maxMessageSize);
    if (d.error !== undefined || d.op !== 'msg' || !c.open) return;
    const binary = d.format === 'binary';
    ws.send(this.core.statusFrame({ id: d.id as number, status: Status.SENT, from: d.to as string, to: c.address, groupid: d.groupid as number }, binary ? 'binary' : 'json'), binary);
  }

  /**
   * A frame the rate limits refused (`code`, Admit): E_RATE_LIMITED naming
   * it (a session error: always JSON). A message spends a token of its
   * connection's bucket (rate_limit) and of its user's (user_rate_limit); a
   * status answering a delivery this connection was sent spends neither, so
   * acknowledging a backlog is never limited; other statuses spend the
   * connection's bucket. Decoding the frame for its id costs only here.
   */
  private rateLimited(ws: WS, c: Conn, frame: Uint8Array, isBinary: boolean, code: number): void {
    const s = this.settings;
    let message: string;
    if (code === Admit.RefusedStatus) {
      this.stats.statusesRateLimited++;
      message = `more than ${s.rateLimit} statuses a second for messages this connection was not sent; send statuses only for deliveries`;
    } else {
      this.stats.rateLimited++;
      const which = code === Admit.RefusedConnection ? `${s.rateLimit} messages a second on this connection` : `${s.userRateLimit} messages a second for all connections of ${c.address}`;
      message = `more than ${which}; the frame was dropped: send it again later, more slowly`;
    }
    let id = 0;
    if (isBinary) {
      const d = native.decodeFrame(frame, this.settings.maxMessageSize);
      if (typeof d.id === 'number') id = d.id;
    } else {
      const v = native.jsonExtract(frame, 'id');
      if (v && /^\d+$/.test(v.value)) id = Number(v.value);
    }
    this.logger.event('frame.rate_limited', { address: c.address, peer: c.ip, id, reason: message });
    ws.send(JSON.stringify({ op: 'error', code: 'E_RATE_LIMITED' satisfies ErrorCode, message, id }), false);
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
  /** Online here or, in a cluster, on another node. */
  private online(address: string): boolean {
    return this.connections.has(address) || (this.cluster?.elsewhere(address) ?? false);
  }

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
      } else if (!this.presence.mayWatch(c.address, to)) {
        // The answer carries the user's state: not for who may not follow it.
        return refuse('E_PRESENCE_DENIED', `the server does not let ${c.address} follow the presence of ${to} (presence = ${this.settings.presence})`);
      }
      ws.send(JSON.stringify({ op: 'presence', from: to, online: this.online(to) }), false);
      return;
    }
    if (!c.presence.has(to)) {
      if (c.presence.size >= this.settings.maxPresence) return refuse('E_PRESENCE_LIMIT', `this connection follows ${c.presence.size} users, the most the server allows (max_presence); end a subscription with "sub":false first`);
      if (!this.presence.mayWatch(c.address, to)) return refuse('E_PRESENCE_DENIED', `the server does not let ${c.address} follow the presence of ${to} (presence = ${this.settings.presence}; with contacts: users who share a group or have messaged each other)`);
      ws.subscribe(t);
      c.presence.add(to);
      this.stats.presenceSubscriptions++;
    }
    ws.send(JSON.stringify({ op: 'presence', from: to, online: this.online(to) }), false);
  }
}

function notStored(): SwitchboardError {
  return new SwitchboardError('E_STORE_WRITE', 'The store could not commit this message; nothing of it was kept. Send it again.');
}

function wireErrorFor(code: number, detail: string): SwitchboardError {
  const e = native.wireError(code);
  return new SwitchboardError(e.code, detail ? `${e.message} (${detail})` : e.message, { detail });
}
