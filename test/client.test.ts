// The client SDK (lib/client) against a fake server that speaks the session
// protocol of docs/protocol.md: it logs users in, records the frames the
// client sends and sends the frames each test scripts. The real server's
// end-to-end tests live elsewhere; these check what the client puts on the
// wire and what it makes of what it reads.
import path from 'node:path';
import ts from 'typescript';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { WebSocket, WebSocketServer } from 'ws';
import { Flag, Status, SwitchboardClient, SwitchboardClientError, type ClientEvents, type SwitchboardClientOptions } from '../lib/client';

type Frame = { op: string; [key: string]: unknown };

const USERS: Record<string, string> = { 'alice-token': 'alice', 'bob-token': 'bob' };

/** One logged-in connection, seen from the server. */
class FakeConnection {
  private readonly frames: Frame[] = [];
  private readonly waiters: Array<{ match: (f: Frame) => boolean; resolve: (f: Frame) => void }> = [];

  constructor(
    readonly socket: WebSocket,
    readonly url: string,
    readonly address: string,
    /** The login frame, or undefined when the token came in the URL. */
    readonly login: Frame | undefined,
  ) {}

  receive(frame: Frame): void {
    const i = this.waiters.findIndex((w) => w.match(frame));
    if (i >= 0) this.waiters.splice(i, 1)[0].resolve(frame);
    else this.frames.push(frame);
  }

  /** The next frame from the client (matching `match`), in arrival order. */
  next(match: (f: Frame) => boolean = () => true): Promise<Frame> {
    const i = this.frames.findIndex(match);
    if (i >= 0) return Promise.resolve(this.frames.splice(i, 1)[0]);
    return new Promise((resolve) => this.waiters.push({ match, resolve }));
  }

  send(frame: object | Uint8Array): void {
    this.socket.send(frame instanceof Uint8Array ? frame : JSON.stringify(frame));
  }

  /** Cuts the connection the way a crash or a network failure does. */
  drop(): void {
    this.socket.terminate();
  }
}

class FakeServer {
  /** Every socket that connected, logged in or not. */
  attempts = 0;
  /** When false, logins get no answer (for the handshake timeout). */
  answerLogin = true;
  private readonly loggedIn: FakeConnection[] = [];
  private readonly waiters: Array<(c: FakeConnection) => void> = [];

  private constructor(
    private readonly wss: WebSocketServer,
    readonly url: string,
    readonly max: number,
  ) {
    wss.on('connection', (socket, req) => this.accept(socket, req.url ?? '/'));
  }

  static async start(max = 65536): Promise<FakeServer> {
    const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    await new Promise<void>((resolve) => wss.once('listening', resolve));
    const { port } = wss.address() as { port: number };
    return new FakeServer(wss, `ws://127.0.0.1:${port}/`, max);
  }

  /** The next connection that logs in successfully. */
  nextConnection(): Promise<FakeConnection> {
    const c = this.loggedIn.shift();
    return c ? Promise.resolve(c) : new Promise((resolve) => this.waiters.push(resolve));
  }

  close(): Promise<void> {
    for (const s of this.wss.clients) s.terminate();
    return new Promise((resolve) => this.wss.close(() => resolve()));
  }

  private accept(socket: WebSocket, url: string): void {
    this.attempts++;
    let connection: FakeConnection | undefined;
    const refuse = (code: string, message: string) => {
      socket.send(JSON.stringify({ op: 'error', code, message, id: 0 }));
      socket.close(4001, code);
    };
    const login = (token: string, frame?: Frame) => {
      if (token === 'closed-without-a-word') return socket.close(4001);
      const address = USERS[token];
      if (!address) return refuse('E_AUTH', 'The token is not valid.');
      if (!this.answerLogin) return;
      const device = typeof frame?.device === 'string' ? frame.device : '';
      socket.send(JSON.stringify({ op: 'hello', address, device, v: 1, max: this.max }));
      connection = new FakeConnection(socket, url, address, frame);
      const waiter = this.waiters.shift();
      if (waiter) waiter(connection);
      else this.loggedIn.push(connection);
    };
    socket.on('message', (data, isBinary) => {
      const frame = JSON.parse(isBinary ? '{}' : data.toString()) as Frame;
      if (connection) return connection.receive(frame);
      if (frame.op !== 'login') return refuse('E_NOT_LOGGED_IN', 'Log in first.');
      login(String(frame.token), frame);
    });
    const token = new URL(url, 'ws://x').searchParams.get('token');
    if (token !== null) login(token);
  }
}

let server: FakeServer;
const clients: SwitchboardClient[] = [];

async function startServer(max?: number): Promise<FakeServer> {
  server = await FakeServer.start(max);
  return server;
}

function makeClient(options: Partial<SwitchboardClientOptions> = {}): SwitchboardClient {
  const client = new SwitchboardClient({
    url: server.url,
    token: 'alice-token',
    WebSocket,
    reconnect: { minDelayMs: 5, maxDelayMs: 20 },
    ...options,
  });
  clients.push(client);
  return client;
}

/** Connects a client and returns it with its server-side connection. */
async function connected(options: Partial<SwitchboardClientOptions> = {}): Promise<[SwitchboardClient, FakeConnection]> {
  const client = makeClient(options);
  const [, connection] = await Promise.all([client.connect(), server.nextConnection()]);
  return [client, connection];
}

function nextEvent<K extends keyof ClientEvents>(client: SwitchboardClient, event: K): Promise<ClientEvents[K]> {
  return new Promise((resolve) => {
    const off = client.on(event, (value) => {
      off();
      resolve(value);
    });
  });
}

function collect<K extends keyof ClientEvents>(client: SwitchboardClient, event: K): ClientEvents[K][] {
  const seen: ClientEvents[K][] = [];
  client.on(event, (value) => seen.push(value));
  return seen;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  await server?.close();
  vi.unstubAllGlobals();
});

describe('logging in', () => {
  it('sends the token and the device label in a login frame; connect() resolves with hello', async () => {
    await startServer(1000);
    const client = makeClient({ device: 'phone-1' });
    const connectedEvent = nextEvent(client, 'connected');
    const [hello, connection] = await Promise.all([client.connect(), server.nextConnection()]);
    expect(connection.login).toEqual({ op: 'login', token: 'alice-token', device: 'phone-1' });
    expect(connection.url).toBe('/');
    expect(hello).toEqual({ address: 'alice', device: 'phone-1', v: 1, max: 1000 });
    expect(await connectedEvent).toEqual(hello);
    expect(client.state).toBe('open');
    expect(client.hello).toEqual(hello);
  });

  it("with auth: 'query', puts the token in the URL and sends no login frame", async () => {
    await startServer();
    const [client, connection] = await connected({ auth: 'query' });
    expect(connection.url).toBe('/?token=alice-token');
    expect(connection.login).toBeUndefined();
    client.send('bob', 'first');
    expect(await connection.next()).toMatchObject({ op: 'msg', to: 'bob', data: 'first' });
  });

  it('a refused token rejects connect() with E_AUTH, and the client does not try again', async () => {
    await startServer();
    const client = makeClient({ token: 'stolen' });
    const disconnected = nextEvent(client, 'disconnected');
    const errors = collect(client, 'error');
    const error = await client.connect().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(SwitchboardClientError);
    expect(error).toMatchObject({ code: 'E_AUTH' });
    expect(await disconnected).toMatchObject({ code: 4001, willReconnect: false });
    expect(errors.map((e) => e.code)).toEqual(['E_AUTH']);
    expect(client.state).toBe('closed');
    await sleep(100); // twenty times the reconnection delay
    expect(server.attempts).toBe(1);
  });

  it('close code 4001 alone, without an error frame, is an authentication failure too', async () => {
    await startServer();
    const client = makeClient({ token: 'closed-without-a-word' });
    await expect(client.connect()).rejects.toMatchObject({ code: 'E_AUTH' });
    await sleep(50);
    expect(server.attempts).toBe(1);
  });

  it('gives up on an attempt that gets no hello in time, and tries again', async () => {
    await startServer();
    server.answerLogin = false;
    const client = makeClient({ handshakeTimeoutMs: 50 });
    const hello = client.connect();
    const disconnected = await nextEvent(client, 'disconnected');
    expect(disconnected).toMatchObject({ willReconnect: true, reason: 'no hello from the server within 50 ms' });
    server.answerLogin = true;
    await expect(hello).resolves.toMatchObject({ address: 'alice' });
    expect(server.attempts).toBe(2);
  });

  it('refuses options it cannot work with, at once', async () => {
    await startServer();
    const bad = (o: Partial<SwitchboardClientOptions>) => () => makeClient(o);
    expect(bad({ url: 'not a url' })).toThrow(expect.objectContaining({ code: 'E_BAD_OPTION' }));
    expect(bad({ token: '' })).toThrow(expect.objectContaining({ code: 'E_BAD_OPTION' }));
    expect(bad({ auth: 'query', device: 'phone-1' })).toThrow(expect.objectContaining({ code: 'E_BAD_OPTION' }));
    expect(bad({ format: 'binary' as 'json' })).toThrow(expect.objectContaining({ code: 'E_BAD_OPTION' }));
    expect(bad({ reconnect: { minDelayMs: 100, maxDelayMs: 10 } })).toThrow(expect.objectContaining({ code: 'E_BAD_OPTION' }));
  });
});

describe('sending', () => {
  it('sends a msg frame with an id that increases by one; sent resolves with 1 on status 1', async () => {
    await startServer();
    const [client, connection] = await connected();
    const statuses = collect(client, 'status');
    const first = client.send('bob', 'hello', { flags: Flag.DELIVERY_RECEIPT | Flag.READ_RECEIPT, type: 7, refid: 3, expiry: 60 });
    const second = client.send('bob', 'again');
    expect(first.id).toBeGreaterThan(0);
    expect(first.id).toBeLessThanOrEqual(0xffffffff);
    expect(second.id).toBe(first.id + 1);
    expect(await connection.next()).toEqual({ op: 'msg', id: first.id, to: 'bob', refid: 3, flags: 3, type: 7, expiry: 60, data: 'hello' });
    expect(await connection.next()).toEqual({ op: 'msg', id: second.id, to: 'bob', data: 'again' });
    connection.send({ op: 'status', id: first.id, from: 'bob', status: 1 });
    await expect(first.sent).resolves.toBe(1);
    expect(statuses).toEqual([{ id: first.id, from: 'bob', groupid: 0, status: 1 }]);
  });

  it('relays later statuses (delivered, read) as status events', async () => {
    await startServer();
    const [client, connection] = await connected();
    const { id, sent } = client.send('bob', 'hello', { flags: Flag.DELIVERY_RECEIPT });
    await connection.next();
    const statuses = collect(client, 'status');
    connection.send({ op: 'status', id, from: 'bob', status: Status.SENT });
    connection.send({ op: 'status', id, from: 'bob', status: Status.DELIVERED });
    await vi.waitFor(() => expect(statuses.map((s) => s.status)).toEqual([1, 2]));
    await expect(sent).resolves.toBe(1);
  });

  it('a repeated status (same from, id, status and group) is emitted once: receipts are at least once', async () => {
    await startServer();
    const [client, connection] = await connected();
    const { id } = client.send('bob', 'hello', { flags: Flag.DELIVERY_RECEIPT });
    await connection.next();
    const statuses = collect(client, 'status');
    connection.send({ op: 'status', id, from: 'bob', status: Status.SENT });
    connection.send({ op: 'status', id, from: 'bob', status: Status.DELIVERED });
    connection.send({ op: 'status', id, from: 'bob', status: Status.DELIVERED });
    connection.send({ op: 'status', id, from: 'carol', gid: 5, status: Status.DELIVERED });
    connection.send({ op: 'status', id, from: 'bob', status: Status.READ });
    connection.send({ op: 'status', id, from: 'carol', gid: 5, status: Status.DELIVERED });
    await vi.waitFor(() => expect(statuses.map((s) => `${s.from}:${s.status}`)).toEqual(['bob:1', 'bob:2', 'carol:2', 'bob:3']));
    // Nothing more comes after a moment.
    await new Promise((r) => setTimeout(r, 50));
    expect(statuses).toHaveLength(4);
  });

  it('a failure status rejects sent with a code and the status value', async () => {
    await startServer();
    const [client, connection] = await connected();
    const cases: [number, string][] = [
      [0x83, 'E_INVALID_DESTINATION'],
      [0x88, 'E_BLOCKED'],
      [0x81, 'E_NOT_ACTIVE'],
      [0x85, 'E_DELIVERY_FAILED'], // a failure value the client does not know is still a failure
    ];
    for (const [status, code] of cases) {
      const { id, sent } = client.send('nobody', 'x');
      await connection.next();
      connection.send({ op: 'status', id, from: 'nobody', status });
      const error = await sent.catch((e: unknown) => e);
      expect(error).toBeInstanceOf(SwitchboardClientError);
      expect(error).toMatchObject({ code, status, id });
    }
  });

  it('a failed message nobody waits on raises no unhandled rejection', async () => {
    await startServer();
    const [client, connection] = await connected();
    const status = nextEvent(client, 'status');
    const { id } = client.send('nobody', 'x');
    await connection.next();
    connection.send({ op: 'status', id, from: 'nobody', status: 0x83 });
    expect(await status).toMatchObject({ id, status: 0x83 });
    await sleep(20); // vitest fails the file on an unhandled rejection
  });

  it('an error frame about a message rejects its sent and is emitted', async () => {
    await startServer();
    const [client, connection] = await connected();
    const error = nextEvent(client, 'error');
    const { id, sent } = client.send('bob', 'x');
    await connection.next();
    connection.send({ op: 'error', code: 'E_PAYLOAD_TOO_LARGE', message: 'Too large.', id, detail: 'data' });
    await expect(sent).rejects.toMatchObject({ code: 'E_PAYLOAD_TOO_LARGE', id, detail: 'data' });
    expect(await error).toMatchObject({ code: 'E_PAYLOAD_TOO_LARGE', id });
  });

  it('a message rate-limited by the server is sent again, with the same id, after a pause', async () => {
    await startServer();
    const [client, connection] = await connected();
    const { id, sent } = client.send('bob', 'x');
    await connection.next();
    const error = nextEvent(client, 'error');
    connection.send({ op: 'error', code: 'E_RATE_LIMITED', message: 'Slow down.', id });
    expect(await error).toMatchObject({ code: 'E_RATE_LIMITED', id });
    const later = client.send('bob', 'y'); // held back during the pause, so it goes after the resend
    expect(await connection.next()).toMatchObject({ id, data: 'x' });
    expect(await connection.next()).toMatchObject({ id: later.id, data: 'y' });
    connection.send({ op: 'status', id, from: 'bob', status: 1 });
    await expect(sent).resolves.toBe(1);
  });

  it("a payload over the server's limit is refused without being sent", async () => {
    await startServer(4);
    const [client, connection] = await connected();
    const big = client.send('bob', 'héllo'); // 6 bytes of UTF-8
    await expect(big.sent).rejects.toMatchObject({ code: 'E_PAYLOAD_TOO_LARGE', id: big.id });
    client.send('bob', 'ok');
    expect(await connection.next()).toMatchObject({ data: 'ok' });
  });

  it('sends text whose escapes would exceed the frame limit as b64', async () => {
    await startServer(3000);
    const [client, connection] = await connected();
    const text = '\u0001'.repeat(3000); // 6 bytes each as a JSON escape: over 2 × 3000 + 4096
    client.send('bob', text);
    const frame = await connection.next();
    expect(frame.data).toBeUndefined();
    expect(Buffer.from(frame.b64 as string, 'base64').toString()).toBe(text);
  });

  it('refuses invalid arguments at once, with the wire format codes', async () => {
    await startServer();
    const client = makeClient();
    expect(() => client.send('', 'x')).toThrow(expect.objectContaining({ code: 'E_BAD_ADDRESS' }));
    expect(() => client.send('b\nob', 'x')).toThrow(expect.objectContaining({ code: 'E_BAD_ADDRESS' }));
    expect(() => client.send('x'.repeat(256), 'x')).toThrow(expect.objectContaining({ code: 'E_BAD_ADDRESS' }));
    expect(() => client.send('bob', 'x', { flags: -1 })).toThrow(expect.objectContaining({ code: 'E_BAD_FIELD' }));
    expect(() => client.send('bob', 'x', { expiry: 1.5 })).toThrow(expect.objectContaining({ code: 'E_BAD_FIELD' }));
    expect(() => client.sendToGroup(0, 'x')).toThrow(expect.objectContaining({ code: 'E_BAD_FIELD' }));
    expect(() => client.send('bob', 'a\ud800b')).toThrow(expect.objectContaining({ code: 'E_BAD_PAYLOAD' }));
    expect(() => client.send('bob', 42 as unknown as string)).toThrow(expect.objectContaining({ code: 'E_BAD_PAYLOAD' }));
  });

  it('sends group messages with gid and no to', async () => {
    await startServer();
    const [client, connection] = await connected();
    const { id, sent } = client.sendToGroup(42, 'hi all', { flags: Flag.READ_RECEIPT });
    expect(await connection.next()).toEqual({ op: 'msg', id, gid: 42, flags: 2, data: 'hi all' });
    connection.send({ op: 'status', id, from: '', gid: 42, status: 1 });
    await expect(sent).resolves.toBe(1);
  });
});

describe('binary payloads', () => {
  const bytes = new Uint8Array([0, 1, 0xff, 0xfe, 0x80, 0x41]);

  it('go out as b64 and come back as bytes, with text null when they are not UTF-8', async () => {
    await startServer();
    const [client, connection] = await connected();
    client.send('bob', bytes);
    const frame = await connection.next();
    expect(new Uint8Array(Buffer.from(frame.b64 as string, 'base64'))).toEqual(bytes);
    const message = nextEvent(client, 'message');
    connection.send({ op: 'msg', id: 9, from: 'bob', to: 'alice', b64: frame.b64 });
    expect(await message).toMatchObject({ id: 9, from: 'bob', payload: bytes, text: null });
  });

  it('bytes that are UTF-8 also give the text', async () => {
    await startServer();
    const [client, connection] = await connected();
    const message = nextEvent(client, 'message');
    connection.send({ op: 'msg', id: 9, from: 'bob', to: 'alice', b64: Buffer.from('héllo').toString('base64') });
    expect(await message).toMatchObject({ text: 'héllo', payload: new Uint8Array(Buffer.from('héllo')) });
  });

  it('server frames in the binary form are read too (the example of docs/protocol.md)', async () => {
    await startServer();
    const [client, connection] = await connected();
    const message = nextEvent(client, 'message');
    // B5 01 01 01 | id 17 | to "bob" | from "alice" | payload "hello"
    connection.send(new Uint8Array([0xb5, 1, 1, 1, 17, 0, 0, 0, 3, 0x62, 0x6f, 0x62, 5, 0x61, 0x6c, 0x69, 0x63, 0x65, 5, 0, 0, 0, 0x68, 0x65, 0x6c, 0x6c, 0x6f]));
    expect(await message).toMatchObject({ id: 17, from: 'alice', to: 'bob', text: 'hello' });
    expect(await connection.next()).toEqual({ op: 'status', id: 17, to: 'alice', status: 2 });
  });
});

describe('receiving', () => {
  it('emits a message once, then acknowledges it with status 2', async () => {
    await startServer();
    const [client, connection] = await connected();
    const messages = collect(client, 'message');
    connection.send({ op: 'msg', id: 17, from: 'bob', to: 'alice', gid: 0, refid: 16, type: 7, flags: 1, expiry: 3600, data: 'hello' });
    expect(await connection.next()).toEqual({ op: 'status', id: 17, to: 'bob', status: 2 });
    expect(messages).toEqual([
      { id: 17, from: 'bob', to: 'alice', groupid: 0, refid: 16, type: 7, flags: 1, expiry: 3600, payload: new TextEncoder().encode('hello'), text: 'hello' },
    ]);
  });

  it('a delivery seen before (same from and id) is not emitted again, but is acknowledged again', async () => {
    await startServer();
    const [client, connection] = await connected();
    const messages = collect(client, 'message');
    connection.send({ op: 'msg', id: 17, from: 'bob', to: 'alice', data: 'hello' });
    connection.send({ op: 'msg', id: 17, from: 'bob', to: 'alice', data: 'hello' });
    connection.send({ op: 'msg', id: 17, from: 'carol', to: 'alice', data: 'another sender, another message' });
    expect(await connection.next()).toEqual({ op: 'status', id: 17, to: 'bob', status: 2 });
    expect(await connection.next()).toEqual({ op: 'status', id: 17, to: 'bob', status: 2 });
    expect(await connection.next()).toEqual({ op: 'status', id: 17, to: 'carol', status: 2 });
    expect(messages.map((m) => m.from)).toEqual(['bob', 'carol']);
  });

  it('remembers deliveries across reconnections (the server redelivers what was not acknowledged)', async () => {
    await startServer();
    const [client, connection] = await connected();
    const messages = collect(client, 'message');
    connection.send({ op: 'msg', id: 5, from: 'bob', to: 'alice', data: 'hello' });
    await connection.next();
    connection.drop();
    const again = await server.nextConnection();
    again.send({ op: 'msg', id: 5, from: 'bob', to: 'alice', data: 'hello' });
    expect(await again.next()).toEqual({ op: 'status', id: 5, to: 'bob', status: 2 });
    expect(messages).toHaveLength(1);
  });

  it('markRead sends status 3 only when the sender asked for a read receipt', async () => {
    await startServer();
    const [client, connection] = await connected();
    const message = nextEvent(client, 'message');
    connection.send({ op: 'msg', id: 1, from: 'bob', to: 'alice', flags: Flag.DELIVERY_RECEIPT, data: 'no read receipt wanted' });
    const unwanted = await message;
    await connection.next(); // its delivered status
    expect(client.markRead(unwanted)).toBe(false);
    const wanted = nextEvent(client, 'message');
    connection.send({ op: 'msg', id: 2, from: 'bob', to: 'alice', flags: Flag.READ_RECEIPT, data: 'read receipt wanted' });
    expect(client.markRead(await wanted)).toBe(true);
    expect(await connection.next()).toEqual({ op: 'status', id: 2, to: 'bob', status: 2 });
    expect(await connection.next()).toEqual({ op: 'status', id: 2, to: 'bob', status: 3 });
  });

  it('a read receipt made inside the message listener goes after the delivered status', async () => {
    await startServer();
    const [client, connection] = await connected();
    client.on('message', (m) => client.markRead(m));
    connection.send({ op: 'msg', id: 3, from: 'bob', to: 'alice', flags: Flag.READ_RECEIPT, data: 'seen at once' });
    expect(await connection.next()).toMatchObject({ id: 3, status: 2 });
    expect(await connection.next()).toMatchObject({ id: 3, status: 3 });
  });

  it('a read receipt made while disconnected is sent on the next connection', async () => {
    await startServer();
    const [client, connection] = await connected();
    const message = nextEvent(client, 'message');
    connection.send({ op: 'msg', id: 4, from: 'bob', to: 'alice', flags: Flag.READ_RECEIPT, data: 'read later' });
    const m = await message;
    await connection.next();
    const disconnected = nextEvent(client, 'disconnected');
    connection.drop();
    await disconnected;
    expect(client.markRead(m)).toBe(true);
    const again = await server.nextConnection();
    expect(await again.next()).toEqual({ op: 'status', id: 4, to: 'bob', status: 3 });
  });

  it('a listener that throws is reported, and the message is still acknowledged', async () => {
    await startServer();
    const reportError = vi.fn();
    vi.stubGlobal('reportError', reportError);
    const [client, connection] = await connected();
    const boom = new Error('listener bug');
    client.on('message', () => {
      throw boom;
    });
    connection.send({ op: 'msg', id: 6, from: 'bob', to: 'alice', data: 'x' });
    expect(await connection.next()).toMatchObject({ op: 'status', id: 6, status: 2 });
    expect(reportError).toHaveBeenCalledWith(boom);
  });

  it('skips ops and keys it does not know, and reports frames it cannot read', async () => {
    await startServer();
    const [client, connection] = await connected();
    const errors = collect(client, 'error');
    const message = nextEvent(client, 'message');
    connection.send({ op: 'typing', from: 'bob' });
    connection.socket.send('not json');
    connection.send({ op: 'msg', id: 8, from: 'bob', to: 'alice', data: 'x', future: { key: [1] } });
    expect(await message).toMatchObject({ id: 8, text: 'x' });
    expect(errors.map((e) => e.code)).toEqual(['E_PROTOCOL']);
  });
});

describe('presence', () => {
  it('subscribes, reports every change, and unsubscribes', async () => {
    await startServer();
    const [client, connection] = await connected();
    const events = collect(client, 'presence');
    client.subscribePresence('bob');
    const sub = await connection.next();
    expect(sub).toMatchObject({ op: 'presence', to: 'bob', sub: true });
    expect(sub.id).toEqual(expect.any(Number));
    connection.send({ op: 'presence', from: 'bob', online: true });
    connection.send({ op: 'presence', from: 'bob', online: false });
    await vi.waitFor(() => expect(events).toEqual([{ address: 'bob', online: true }, { address: 'bob', online: false }]));
    client.unsubscribePresence('bob');
    expect(await connection.next()).toMatchObject({ op: 'presence', to: 'bob', sub: false });
  });

  it('takes presence ids from the message ids, so an error frame names one frame', async () => {
    await startServer();
    const [client, connection] = await connected();
    const a = client.send('bob', 'x');
    client.subscribePresence('bob');
    const b = client.send('bob', 'y');
    await connection.next();
    expect(await connection.next()).toMatchObject({ op: 'presence', id: a.id + 1 });
    expect(b.id).toBe(a.id + 2);
  });
});

describe('reconnecting', () => {
  it('after a drop, logs in again, re-subscribes and resends the messages without status, with their ids', async () => {
    await startServer();
    const [client, connection] = await connected({ device: 'laptop' });
    const events: string[] = [];
    client.on('connected', () => events.push('connected'));
    client.on('disconnected', (d) => events.push(`disconnected ${d.code} ${d.willReconnect}`));
    client.subscribePresence('bob');
    await connection.next();
    const accepted = client.send('bob', 'one');
    const pending = [client.send('bob', 'two'), client.sendToGroup(42, 'three')];
    await connection.next();
    connection.send({ op: 'status', id: accepted.id, from: 'bob', status: 1 });
    await accepted.sent;
    await connection.next();
    await connection.next();

    connection.drop();
    const again = await server.nextConnection();
    expect(again.login).toEqual({ op: 'login', token: 'alice-token', device: 'laptop' });
    expect(await again.next()).toMatchObject({ op: 'presence', to: 'bob', sub: true });
    expect(await again.next()).toEqual({ op: 'msg', id: pending[0].id, to: 'bob', data: 'two' });
    expect(await again.next()).toEqual({ op: 'msg', id: pending[1].id, gid: 42, data: 'three' });
    for (const p of pending) again.send({ op: 'status', id: p.id, from: 'bob', status: 1 });
    await expect(Promise.all(pending.map((p) => p.sent))).resolves.toEqual([1, 1]);
    expect(events).toEqual(['disconnected 1006 true', 'connected']);
  });

  it('with several URLs, a dropped connection is taken up by the next node, with the unacknowledged messages resent there', async () => {
    await startServer();
    const first = server;
    const second = await FakeServer.start();
    try {
      const client = makeClient({ url: [first.url, second.url] });
      const [, connection] = await Promise.all([client.connect(), first.nextConnection()]);
      const pending = client.send('bob', 'unacknowledged');
      expect(await connection.next()).toMatchObject({ op: 'msg', data: 'unacknowledged' });
      // The first node dies: the next attempt goes to the second, which gets the message again with its id.
      await first.close();
      const there = await second.nextConnection();
      expect(await there.next()).toEqual({ op: 'msg', id: pending.id, to: 'bob', data: 'unacknowledged' });
      there.send({ op: 'status', id: pending.id, from: 'bob', status: 1 });
      await expect(pending.sent).resolves.toBe(1);
      // And round again: the second drops, the first is gone, so the client keeps trying both until one answers.
      there.drop();
      await sleep(60);
      expect(second.attempts).toBeGreaterThanOrEqual(2);
    } finally {
      await second.close();
    }
  });

  it('refuses a url list that is empty or holds something that is not a URL', async () => {
    await startServer();
    expect(() => makeClient({ url: [] })).toThrow(expect.objectContaining({ code: 'E_BAD_OPTION' }));
    expect(() => makeClient({ url: [server.url, 'not a url'] })).toThrow(expect.objectContaining({ code: 'E_BAD_OPTION' }));
  });

  it('messages sent before connect() wait, then go out in order after the login', async () => {
    await startServer();
    const client = makeClient();
    const queued = [client.send('bob', 'a'), client.send('bob', 'b')];
    await sleep(20);
    expect(server.attempts).toBe(0);
    const [, connection] = await Promise.all([client.connect(), server.nextConnection()]);
    expect(await connection.next()).toMatchObject({ id: queued[0].id, data: 'a' });
    expect(await connection.next()).toMatchObject({ id: queued[1].id, data: 'b' });
  });

  it('messages sent while the connection is down go out after the reconnection', async () => {
    await startServer();
    const [client, connection] = await connected();
    const disconnected = nextEvent(client, 'disconnected');
    connection.drop();
    await disconnected;
    expect(client.state === 'waiting' || client.state === 'connecting').toBe(true);
    const { id, sent } = client.send('bob', 'written offline');
    const again = await server.nextConnection();
    expect(await again.next()).toEqual({ op: 'msg', id, to: 'bob', data: 'written offline' });
    again.send({ op: 'status', id, from: 'bob', status: 1 });
    await expect(sent).resolves.toBe(1);
  });

  it('backs off between failed attempts, and connects once the server is back', async () => {
    await startServer();
    const [client] = await connected({ reconnect: { minDelayMs: 10, maxDelayMs: 40 } });
    const disconnects = collect(client, 'disconnected');
    const url = server.url;
    await server.close(); // drops the connection; attempts now fail
    await vi.waitFor(() => expect(disconnects.length).toBeGreaterThanOrEqual(5), { timeout: 2000 });
    for (const [n, d] of disconnects.entries()) {
      const ceiling = Math.min(40, 10 * 2 ** n);
      expect(d.willReconnect).toBe(true);
      expect(d.delayMs).toBeGreaterThanOrEqual(ceiling / 2);
      expect(d.delayMs).toBeLessThanOrEqual(ceiling);
    }
    const port = Number(new URL(url).port);
    const wss = new WebSocketServer({ host: '127.0.0.1', port });
    const back = nextEvent(client, 'connected');
    wss.on('connection', (s) => s.on('message', () => s.send(JSON.stringify({ op: 'hello', address: 'alice', device: '', v: 1, max: 65536 }))));
    await expect(back).resolves.toMatchObject({ address: 'alice' });
    client.close();
    await new Promise((resolve) => wss.close(resolve));
  });

  it('close() stops for good: no reconnection, and messages without status reject with E_CLOSED', async () => {
    await startServer();
    const [client, connection] = await connected();
    const { sent } = client.send('bob', 'x');
    await connection.next();
    const disconnected = nextEvent(client, 'disconnected');
    client.close();
    await expect(sent).rejects.toMatchObject({ code: 'E_CLOSED' });
    expect(await disconnected).toMatchObject({ code: 1000, willReconnect: false });
    await expect(client.connect()).rejects.toMatchObject({ code: 'E_CLOSED' });
    await expect(client.send('bob', 'y').sent).rejects.toMatchObject({ code: 'E_CLOSED' });
    await sleep(50);
    expect(server.attempts).toBe(1);
  });

  it('with reconnect: false, a drop leaves the client idle; connect() resends what had no status', async () => {
    await startServer();
    const [client, connection] = await connected({ reconnect: false });
    const { id, sent } = client.send('bob', 'x');
    await connection.next();
    const disconnected = nextEvent(client, 'disconnected');
    connection.drop();
    expect(await disconnected).toMatchObject({ willReconnect: false, delayMs: null });
    expect(client.state).toBe('idle');
    const [, again] = await Promise.all([client.connect(), server.nextConnection()]);
    expect(await again.next()).toMatchObject({ id, data: 'x' });
    again.send({ op: 'status', id, from: 'bob', status: 1 });
    await expect(sent).resolves.toBe(1);
  });
});

describe('portability', () => {
  const root = path.resolve(__dirname, '..');
  const client = path.join(root, 'lib/client/index.ts');
  const base: ts.CompilerOptions = {
    strict: true,
    noEmit: true,
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.CommonJS,
    moduleResolution: ts.ModuleResolutionKind.Node10,
    esModuleInterop: true,
    skipLibCheck: true,
    lib: ['lib.es2022.d.ts', 'lib.dom.d.ts'],
  };
  const messages = (program: ts.Program) => ts.getPreEmitDiagnostics(program).map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n'));

  it('lib/client type-checks with the ES2022 and DOM libraries alone: it uses no Node API', () => {
    const program = ts.createProgram([client], { ...base, types: [] });
    expect(messages(program)).toEqual([]);
    expect(program.getSourceFiles().map((f) => f.fileName).filter((f) => f.includes('@types/node'))).toEqual([]);
  });

  it("both the browser's WebSocket and the ws package's fit the WebSocket option", () => {
    const check = path.join(root, 'test', 'websocket-fit.check.ts');
    const source = [
      "import WS from 'ws';",
      "import { SwitchboardClient } from '../lib/client';",
      "new SwitchboardClient({ url: 'ws://127.0.0.1/', token: 't', WebSocket: WS });",
      "new SwitchboardClient({ url: 'ws://127.0.0.1/', token: 't', WebSocket: globalThis.WebSocket });",
    ].join('\n');
    const options = { ...base, types: ['node'] };
    const host = ts.createCompilerHost(options);
    const { getSourceFile, fileExists, readFile } = host;
    host.getSourceFile = (name, ...rest) => (name === check ? ts.createSourceFile(name, source, ts.ScriptTarget.ES2022) : getSourceFile.call(host, name, ...rest));
    host.fileExists = (name) => name === check || fileExists.call(host, name);
    host.readFile = (name) => (name === check ? source : readFile.call(host, name));
    expect(messages(ts.createProgram([check], options, host))).toEqual([]);
  });
});
