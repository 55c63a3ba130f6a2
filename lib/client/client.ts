import { decodeServerFrame, encodeMessage, hasLoneSurrogate, toBase64, utf8Length, type MessageFields, type ServerFrame } from './codec';
import { Emitter } from './emitter';
import { statusError, SwitchboardClientError, type ClientErrorCode } from './errors';
import { RecentKeys } from './recent';
import {
  Flag,
  Status,
  type DisconnectedEvent,
  type Hello,
  type IncomingMessage,
  type PresenceEvent,
  type Sending,
  type SendOptions,
  type StatusEvent,
  type WebSocketConstructor,
  type WebSocketLike,
} from './types';

export interface SwitchboardClientOptions {
  /**
   * `ws://HOST:PORT/` or `wss://HOST:PORT/`; or several, the nodes of a
   * cluster: the client connects to the first and, whenever a connection
   * ends or an attempt fails, tries the next one (round robin).
   */
  url: string | readonly string[];
  token: string;
  /** A label for this connection, sent in the login frame. */
  device?: string;
  /**
   * How the token travels: 'login' (default) in the first frame, 'query' as
   * `?token=` in the URL. The login frame keeps the token out of the URLs
   * that proxies and servers log; a device label needs it.
   */
  auth?: 'login' | 'query';
  /** The WebSocket class; default `globalThis.WebSocket` (in Node 20, pass the `ws` package's). */
  WebSocket?: WebSocketConstructor;
  /** Delays between reconnection attempts (default 500 ms to 30 s), or false for none. */
  reconnect?: { minDelayMs?: number; maxDelayMs?: number } | false;
  /** The form of the frames this client sends; only JSON for now. */
  format?: 'json';
  /** How long to wait for the server's hello before giving up on an attempt (default 10 s). */
  handshakeTimeoutMs?: number;
}

export interface ClientEvents {
  /** A message for this user, once per (from, id); acknowledged as delivered after the listeners ran. */
  message: IncomingMessage;
  /** A status of a message this client sent: sent, delivered, read or a failure. */
  status: StatusEvent;
  /** A subscribed user went online or offline (and once, at once, on subscribing). */
  presence: PresenceEvent;
  /** An error frame from the server, a frame the client could not read, or the end of the session. */
  error: SwitchboardClientError;
  /** The server accepted the login: on the first connection and every reconnection. */
  connected: Hello;
  /** A connection ended, or an attempt failed. */
  disconnected: DisconnectedEvent;
}

/**
 * - idle: not connected and not trying (before connect(), or after a drop with `reconnect: false`)
 * - connecting: a socket is open or opening, waiting for hello
 * - open: hello received; messages go out at once
 * - waiting: between reconnection attempts
 * - closed: after close() or an authentication failure; final
 */
export type ClientState = 'idle' | 'connecting' | 'open' | 'waiting' | 'closed';

const WEBSOCKET_OPEN = 1;
/** The close code the server uses for a refused login. */
const AUTH_CLOSE_CODE = 4001;
const NORMAL_CLOSE_CODE = 1000;
const ABNORMAL_CLOSE_CODE = 1006;
const DEDUP_CAPACITY = 10_000;
const DEFAULT_MIN_DELAY_MS = 500;
const DEFAULT_MAX_DELAY_MS = 30_000;
const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;
const MAX_U32 = 0xffffffff;

/** A message waiting for its status from the server. */
interface Outgoing {
  fields: MessageFields;
  payloadBytes: number;
  /** Sent on the current connection; cleared when it ends, so the next one resends. */
  inFlight: boolean;
  resolve: (status: number) => void;
  reject: (error: SwitchboardClientError) => void;
}

/**
 * A Switchboard client for browsers and Node. It logs in, keeps the
 * connection up, and keeps every message until the server has it: messages
 * sent while disconnected wait, and those without a status when a
 * connection ends go out again, with the same id, on the next one.
 */
export class SwitchboardClient extends Emitter<ClientEvents> {
  private readonly urls: readonly string[];
  /** The URL in use: urls[at]. */
  private at = 0;
  private readonly token: string;
  private readonly device: string | undefined;
  private readonly auth: 'login' | 'query';
  private readonly WebSocketImpl: WebSocketConstructor;
  private readonly delays: { min: number; max: number } | null;
  private readonly handshakeTimeoutMs: number;

  private current: ClientState = 'idle';
  private ws: WebSocketLike | null = null;
  private lastHello: Hello | null = null;
  private lastId: number;
  /** Failed attempts since the last hello: the exponent of the backoff. */
  private attempt = 0;
  /** Consecutive E_RATE_LIMITED pauses: the exponent of their backoff. */
  private pauses = 0;
  private reconnectTimer: ReturnType<typeof setTimeout> | null = null;
  private handshakeTimer: ReturnType<typeof setTimeout> | null = null;
  private pauseTimer: ReturnType<typeof setTimeout> | null = null;
  private readonly connectWaiters: Array<{ resolve: (hello: Hello) => void; reject: (error: SwitchboardClientError) => void }> = [];
  /** Messages without a status, in the order they were sent (the order they are resent in). */
  private readonly outbox = new Map<number, Outgoing>();
  /** Read receipts made while disconnected. */
  private readonly pendingReceipts: Array<{ id: number; to: string }> = [];
  /**
   * Read receipts made by `message` listeners while they run: they go out
   * after the delivered status the listeners precede, never before it.
   */
  private receiptsAfterAck: Array<{ id: number; to: string }> | null = null;
  private readonly presence = new Set<string>();
  private readonly delivered = new RecentKeys(DEDUP_CAPACITY);
  /** Statuses already emitted: receipts are at least once, as deliveries are (a copy given twice is confirmed twice). */
  private readonly statusesSeen = new RecentKeys(DEDUP_CAPACITY);

  constructor(options: SwitchboardClientOptions) {
    super();
    const urls = typeof options.url === 'string' ? [options.url] : Array.isArray(options.url) ? [...options.url] : [];
    if (urls.length === 0) throw badOption('url must be a URL (ws://HOST:PORT/ or wss://HOST:PORT/) or a non-empty array of them.');
    for (const u of urls) {
      try {
        new URL(u);
      } catch {
        throw badOption(`url ${JSON.stringify(u)} is not a URL; use ws://HOST:PORT/ or wss://HOST:PORT/.`);
      }
    }
    if (typeof options.token !== 'string' || options.token === '') throw badOption('token must be a non-empty string.');
    if (options.device !== undefined && (typeof options.device !== 'string' || !deviceLabel(options.device))) {
      throw badOption('device must be a string of up to 64 bytes of UTF-8 without control characters (the server refuses other labels with E_BAD_DEVICE).');
    }
    const auth = options.auth ?? 'login';
    if (auth !== 'login' && auth !== 'query') throw badOption("auth must be 'login' or 'query'.");
    if (auth === 'query' && options.device !== undefined) throw badOption("a device label travels only in the login frame; use auth: 'login' (the default) to set one.");
    if (options.format !== undefined && options.format !== 'json') throw badOption("format must be 'json': this client sends JSON frames only.");
    const impl = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (typeof impl !== 'function') throw badOption("this platform has no global WebSocket; pass one as the WebSocket option (in Node: WebSocket from the 'ws' package).");
    let delays: { min: number; max: number } | null = null;
    if (options.reconnect !== false) {
      const min = options.reconnect?.minDelayMs ?? DEFAULT_MIN_DELAY_MS;
      const max = options.reconnect?.maxDelayMs ?? Math.max(DEFAULT_MAX_DELAY_MS, min);
      if (!(min > 0 && max >= min)) throw badOption('reconnect needs 0 < minDelayMs <= maxDelayMs.');
      delays = { min, max };
    }
    this.urls = urls;
    this.token = options.token;
    this.device = options.device;
    this.auth = auth;
    this.WebSocketImpl = impl;
    this.delays = delays;
    this.handshakeTimeoutMs = options.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS;
    this.lastId = randomIdStart();
  }

  get state(): ClientState {
    return this.current;
  }

  /** The server's hello on the latest connection; null before the first. */
  get hello(): Hello | null {
    return this.lastHello;
  }

  /**
   * Connects and logs in. Resolves with the server's hello. With reconnection
   * on, network failures are retried and the promise waits for the first
   * success; it rejects on an authentication failure (code E_AUTH), on
   * close(), and, with `reconnect: false`, when the attempt fails
   * (E_CONNECT_FAILED). While waiting between attempts, it tries at once.
   */
  connect(): Promise<Hello> {
    if (this.current === 'closed') return Promise.reject(closedError());
    if (this.current === 'open') return Promise.resolve(this.lastHello as Hello);
    const hello = new Promise<Hello>((resolve, reject) => this.connectWaiters.push({ resolve, reject }));
    if (this.current === 'idle') this.openSocket();
    else if (this.current === 'waiting') {
      this.clearTimer('reconnectTimer');
      this.openSocket();
    }
    return hello;
  }

  /**
   * Sends `payload` to the user `to`: a string travels as text, a Uint8Array
   * as bytes. Throws a SwitchboardClientError at once when an argument is
   * invalid; otherwise the message is kept until the server has it (see
   * Sending.sent). `sent` is already handled: leaving it unobserved never
   * raises an unhandled rejection.
   */
  send(to: string, payload: string | Uint8Array, options: SendOptions = {}): Sending {
    checkAddress(to);
    return this.enqueue(to, payload, options);
  }

  /** Sends `payload` to the group `gid` (a non-zero 32-bit number). */
  sendToGroup(gid: number, payload: string | Uint8Array, options: Omit<SendOptions, 'groupid'> = {}): Sending {
    if (!isU32(gid) || gid === 0) throw new SwitchboardClientError('E_BAD_FIELD', `The group id ${String(gid)} is not a non-zero unsigned 32-bit integer.`);
    return this.enqueue(undefined, payload, { ...options, groupid: gid });
  }

  /**
   * Tells the sender that `message` was read, if its flags ask for a read
   * receipt. Returns whether a receipt was sent (or, while disconnected,
   * queued for the next connection).
   */
  markRead(message: Pick<IncomingMessage, 'id' | 'from' | 'flags'>): boolean {
    if (!(message.flags & Flag.READ_RECEIPT) || this.current === 'closed') return false;
    const receipt = { id: message.id, to: message.from };
    if (this.receiptsAfterAck) this.receiptsAfterAck.push(receipt);
    else if (this.current === 'open') this.writeStatus(receipt.id, receipt.to, Status.READ);
    else this.pendingReceipts.push(receipt);
    return true;
  }

  /** Follows `address` online and offline (`presence` events), across reconnections. */
  subscribePresence(address: string): void {
    checkAddress(address);
    if (this.presence.has(address)) return;
    this.presence.add(address);
    if (this.current === 'open') this.writePresence(address, true);
  }

  unsubscribePresence(address: string): void {
    if (!this.presence.delete(address)) return;
    if (this.current === 'open') this.writePresence(address, false);
  }

  /**
   * Closes the connection for good. Messages the server has not accepted yet
   * are not sent: their `sent` rejects with E_CLOSED.
   */
  close(): void {
    if (this.current === 'closed') return;
    this.stop(closedError(), NORMAL_CLOSE_CODE, 'closed by the client');
  }

  private enqueue(to: string | undefined, payload: string | Uint8Array, options: SendOptions): Sending {
    for (const key of ['groupid', 'flags', 'expiry', 'type', 'refid'] as const) {
      const v = options[key];
      if (v !== undefined && !isU32(v)) throw new SwitchboardClientError('E_BAD_FIELD', `${key} must be an unsigned 32-bit integer, not ${String(v)}.`);
    }
    if (to === undefined && !options.groupid) throw new SwitchboardClientError('E_NO_DESTINATION', 'The message has no recipient; give an address or a group id.');
    const fields: MessageFields = { op: 'msg', id: 0 };
    if (to !== undefined) fields.to = to;
    if (options.groupid) fields.gid = options.groupid;
    if (options.refid) fields.refid = options.refid;
    if (options.flags) fields.flags = options.flags;
    if (options.type) fields.type = options.type;
    if (options.expiry) fields.expiry = options.expiry;
    let payloadBytes: number;
    if (typeof payload === 'string') {
      if (hasLoneSurrogate(payload)) throw new SwitchboardClientError('E_BAD_PAYLOAD', 'The text has a lone UTF-16 surrogate, which has no UTF-8 form; send it as a Uint8Array if it is binary data.');
      fields.data = payload;
      payloadBytes = utf8Length(payload);
    } else if (payload instanceof Uint8Array) {
      fields.b64 = toBase64(payload);
      payloadBytes = payload.byteLength;
    } else throw new SwitchboardClientError('E_BAD_PAYLOAD', 'The payload must be a string or a Uint8Array.');

    const id = (fields.id = this.nextId());
    let resolve!: (status: number) => void;
    let reject!: (error: SwitchboardClientError) => void;
    const sent = new Promise<number>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    sent.catch(() => undefined);
    if (this.current === 'closed') {
      reject(closedError(id));
      return { id, sent };
    }
    const entry: Outgoing = { fields, payloadBytes, inFlight: false, resolve, reject };
    this.outbox.set(id, entry);
    if (this.current === 'open' && !this.pauseTimer) this.transmit(entry);
    return { id, sent };
  }

  /** Ids increase from a random start, so a new client (a reloaded page) does not reuse recent ids. */
  private nextId(): number {
    this.lastId = this.lastId >= MAX_U32 ? 1 : this.lastId + 1;
    return this.lastId;
  }

  private transmit(entry: Outgoing): void {
    const max = (this.lastHello as Hello).max;
    if (max && entry.payloadBytes > max) {
      this.outbox.delete(entry.fields.id);
      entry.reject(
        new SwitchboardClientError('E_PAYLOAD_TOO_LARGE', `The payload is ${entry.payloadBytes} bytes and the server takes at most ${max}; send less data in one message.`, {
          id: entry.fields.id,
        }),
      );
      return;
    }
    entry.inFlight = true;
    this.write(encodeMessage(entry.fields, max || Infinity));
  }

  /** Sends every message that is not on its way yet, oldest first. */
  private flush(): void {
    for (const entry of this.outbox.values()) if (!entry.inFlight) this.transmit(entry);
  }

  private write(frame: string): void {
    const ws = this.ws;
    if (!ws || ws.readyState !== WEBSOCKET_OPEN) return;
    try {
      ws.send(frame);
    } catch {
      // The socket is closing; its close event resets what was in flight.
    }
  }

  private writeStatus(id: number, to: string, status: number): void {
    this.write(JSON.stringify({ op: 'status', id, to, status }));
  }

  private writePresence(address: string, sub: boolean): void {
    this.write(JSON.stringify({ op: 'presence', id: this.nextId(), to: address, sub }));
  }

  private openSocket(): void {
    this.current = 'connecting';
    let ws: WebSocketLike;
    try {
      ws = new this.WebSocketImpl(this.socketUrl());
    } catch (e) {
      this.stop(new SwitchboardClientError('E_WEBSOCKET', `Could not create a WebSocket for ${this.url}: ${(e as Error)?.message ?? String(e)}`), ABNORMAL_CLOSE_CODE, '');
      return;
    }
    this.ws = ws;
    ws.binaryType = 'arraybuffer';
    ws.onopen = () => {
      if (this.ws !== ws || this.auth !== 'login') return;
      this.write(JSON.stringify(this.device === undefined ? { op: 'login', token: this.token } : { op: 'login', token: this.token, device: this.device }));
    };
    ws.onmessage = (event: { data: unknown }) => {
      if (this.ws === ws) this.onFrame(event.data);
    };
    ws.onclose = (event: { code?: number; reason?: string }) => {
      if (this.ws === ws) this.socketEnded(event.code ?? ABNORMAL_CLOSE_CODE, event.reason ?? '');
    };
    // Every error is followed by a close event. The handler stays set even
    // after the socket is dropped: the ws package throws errors nobody listens to.
    ws.onerror = () => undefined;
    this.handshakeTimer = setTimeout(() => {
      this.handshakeTimer = null;
      if (this.ws === ws) this.socketEnded(ABNORMAL_CLOSE_CODE, `no hello from the server within ${this.handshakeTimeoutMs} ms`);
    }, this.handshakeTimeoutMs);
  }

  /** The URL of the current or next attempt. */
  private get url(): string {
    return this.urls[this.at];
  }

  private socketUrl(): string {
    if (this.auth !== 'query') return this.url;
    const url = new URL(this.url);
    url.searchParams.set('token', this.token);
    return url.toString();
  }

  private onFrame(data: unknown): void {
    let frame: ServerFrame;
    try {
      frame = decodeServerFrame(data);
    } catch (e) {
      this.emit('error', e as SwitchboardClientError);
      return;
    }
    switch (frame.op) {
      case 'hello':
        return this.onHello({ address: frame.address, device: frame.device, v: frame.v, max: frame.max });
      case 'msg':
        return this.onMessage(frame);
      case 'status':
        return this.onStatus({ id: frame.id, from: frame.from, groupid: frame.groupid, status: frame.status });
      case 'presence':
        return this.emit('presence', { address: frame.address, online: frame.online });
      case 'error':
        return this.onError(frame);
      case 'unknown':
        return; // Servers add ops within version 1; this client has no use for them.
    }
  }

  private onHello(hello: Hello): void {
    if (this.current !== 'connecting') return;
    this.clearTimer('handshakeTimer');
    this.lastHello = hello;
    this.current = 'open';
    this.attempt = 0;
    for (const address of this.presence) this.writePresence(address, true);
    this.flush();
    for (const r of this.pendingReceipts.splice(0)) this.writeStatus(r.id, r.to, Status.READ);
    this.emit('connected', hello);
    for (const w of this.connectWaiters.splice(0)) w.resolve(hello);
  }

  private onMessage(frame: IncomingMessage & { op: 'msg' }): void {
    const { op: _, ...message } = frame;
    if (this.delivered.add(`${message.from}\n${message.id}`)) {
      this.receiptsAfterAck = [];
      this.emit('message', message);
    }
    // Acknowledged even when it is a duplicate: the server redelivers until it gets one.
    this.writeStatus(message.id, message.from, Status.DELIVERED);
    for (const r of this.receiptsAfterAck?.splice(0) ?? []) this.writeStatus(r.id, r.to, Status.READ);
    this.receiptsAfterAck = null;
  }

  private onStatus(status: StatusEvent): void {
    const entry = this.outbox.get(status.id);
    if (entry) {
      // Delivered or read before sent can only follow a resend the server
      // had already accepted: it, too, means the server has the message.
      if (status.status === Status.SENT || status.status === Status.DELIVERED || status.status === Status.READ) {
        this.outbox.delete(status.id);
        this.pauses = 0;
        entry.resolve(Status.SENT);
      } else if (status.status >= Status.FAILED) {
        this.outbox.delete(status.id);
        entry.reject(statusError(status.id, status.status));
      }
    }
    if (this.statusesSeen.add(`${status.from}\n${status.id}\n${status.status}\n${status.groupid}`)) this.emit('status', status);
  }

  private onError(frame: { code: string; message: string; id: number; detail: string }): void {
    // A newer server may send a code this client's catalogs lack; it is
    // passed on as it came, so the type is a claim about known servers only.
    const code = (frame.code || 'E_UNKNOWN') as ClientErrorCode;
    const error = new SwitchboardClientError(code, frame.message || `The server reported ${code}.`, {
      id: frame.id || undefined,
      detail: frame.detail || undefined,
    });
    if (code === 'E_AUTH' || code === 'E_NOT_LOGGED_IN') {
      this.stop(error, AUTH_CLOSE_CODE, frame.message);
      return;
    }
    const entry = frame.id ? this.outbox.get(frame.id) : undefined;
    if (entry?.inFlight) {
      if (code === 'E_RATE_LIMITED') {
        entry.inFlight = false;
        this.pause();
      } else {
        this.outbox.delete(frame.id);
        entry.reject(error);
      }
    }
    this.emit('error', error);
  }

  /** After E_RATE_LIMITED: hold every message back for a backoff delay, then resend what was dropped. */
  private pause(): void {
    if (this.pauseTimer) return;
    this.pauseTimer = setTimeout(() => {
      this.pauseTimer = null;
      if (this.current === 'open') this.flush();
    }, this.backoff(this.pauses++));
  }

  private socketEnded(code: number, reason: string): void {
    this.dropSocket();
    if (code === AUTH_CLOSE_CODE) {
      this.stop(new SwitchboardClientError('E_AUTH', 'The server refused the login (close code 4001); check the token.'), code, reason);
      return;
    }
    if (!this.delays) {
      this.current = 'idle';
      const error = new SwitchboardClientError('E_CONNECT_FAILED', `The connection to ${this.url} ended (close code ${code}${reason ? `: ${reason}` : ''}); call connect() to try again.`);
      for (const w of this.connectWaiters.splice(0)) w.reject(error);
      this.emit('disconnected', { code, reason, willReconnect: false, delayMs: null });
      return;
    }
    // With several URLs, the next one: the node this one reached may be gone.
    this.at = (this.at + 1) % this.urls.length;
    const delayMs = this.backoff(this.attempt++);
    this.current = 'waiting';
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      this.openSocket();
    }, delayMs);
    this.emit('disconnected', { code, reason, willReconnect: true, delayMs });
  }

  /** Forgets the socket (closing it if needed) and everything tied to it. */
  private dropSocket(): void {
    const ws = this.ws;
    this.ws = null;
    this.clearTimer('handshakeTimer');
    this.clearTimer('pauseTimer');
    for (const entry of this.outbox.values()) entry.inFlight = false;
    if (ws && ws.readyState < 2) {
      try {
        ws.close();
      } catch {
        // Already closing.
      }
    }
  }

  /** Ends the client for good: nothing it holds will be sent. */
  private stop(error: SwitchboardClientError, code: number, reason: string): void {
    const wasActive = this.current !== 'idle';
    this.dropSocket();
    this.clearTimer('reconnectTimer');
    this.current = 'closed';
    for (const w of this.connectWaiters.splice(0)) w.reject(error);
    for (const [id, entry] of this.outbox) entry.reject(new SwitchboardClientError(error.code, error.message, { id }));
    this.outbox.clear();
    this.pendingReceipts.length = 0;
    if (error.code !== 'E_CLOSED') this.emit('error', error);
    if (wasActive) this.emit('disconnected', { code, reason, willReconnect: false, delayMs: null });
  }

  /** Exponential backoff with jitter: between half and all of min·2^n, capped at max. */
  private backoff(n: number): number {
    const { min, max } = this.delays ?? { min: DEFAULT_MIN_DELAY_MS, max: DEFAULT_MAX_DELAY_MS };
    const ceiling = Math.min(max, min * 2 ** Math.min(n, 30));
    return Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
  }

  private clearTimer(name: 'reconnectTimer' | 'handshakeTimer' | 'pauseTimer'): void {
    const timer = this[name];
    if (timer !== null) clearTimeout(timer);
    this[name] = null;
  }
}

function isU32(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= MAX_U32;
}

/** The wire format's address rule: 1 to 255 bytes of UTF-8, no control characters. */
function checkAddress(address: unknown): void {
  if (typeof address !== 'string' || address === '' || utf8Length(address) > 255 || /[\u0000-\u001f]/.test(address) || hasLoneSurrogate(address)) {
    throw new SwitchboardClientError('E_BAD_ADDRESS', `The address ${JSON.stringify(address)} is not 1 to 255 bytes of UTF-8 without control characters.`);
  }
}

/** The server's rule for a device label (docs/protocol.md, login). No Node API: the client runs in browsers too. */
function deviceLabel(s: string): boolean {
  let bytes = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20) return false;
    if (c >= 0xd800 && c <= 0xdbff) {
      const next = s.charCodeAt(i + 1);
      if (!(next >= 0xdc00 && next <= 0xdfff)) return false;
      i++;
      bytes += 4;
    } else if (c >= 0xdc00 && c <= 0xdfff) return false;
    else bytes += c < 0x80 ? 1 : c < 0x800 ? 2 : 3;
  }
  return bytes <= 64;
}

function badOption(message: string): SwitchboardClientError {
  return new SwitchboardClientError('E_BAD_OPTION', message);
}

function closedError(id?: number): SwitchboardClientError {
  return new SwitchboardClientError('E_CLOSED', 'The client was closed; create a new one to connect again.', { id });
}

function randomIdStart(): number {
  const crypto = (globalThis as { crypto?: { getRandomValues?: (a: Uint32Array) => Uint32Array } }).crypto;
  if (crypto?.getRandomValues) return crypto.getRandomValues(new Uint32Array(1))[0] >>> 1;
  return Math.floor(Math.random() * 0x80000000);
}
