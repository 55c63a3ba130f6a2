// Client sockets as a module sees them: mesibo_util_socket_connect, _write and
// _close called by test/modules/sockmod.c against real servers on 127.0.0.1
// (TCP, TLS, WebSocket over both, and raw servers that break the protocol).
// The module logs every callback; the tests read those lines.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { WebSocketServer, type WebSocket } from 'ws';
import { compileModule, msg, open, tempDir, until, type Opened } from './helpers';

const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

let dir: string;
const opened: Opened[] = [];
const closers: (() => void)[] = [];

function start(): Opened {
  const o = open(dir, 'module sockmod\n');
  opened.push(o);
  return o;
}

/** Sends a command to the module: the destination is the command, the payload its arguments. */
function cmd(o: Opened, command: string, args: string): void {
  expect(o.core.submit('tester', msg(command, args)).verdict).toBe('consumed');
}

/** The module's lines about socket NAME, without the name. */
function ev(o: Opened, name: string): string[] {
  return o.lines().filter((l) => l.startsWith(`${name} `)).map((l) => l.slice(name.length + 1));
}

async function waitFor(o: Opened, name: string, line: string | RegExp, ms?: number): Promise<void> {
  await until(() => ev(o, name).some((l) => (typeof line === 'string' ? l === line : line.test(l))), ms);
}

function listen(server: net.Server): Promise<number> {
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port));
    closers.push(() => server.close());
  });
}

// ---------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------

interface TcpEcho {
  port: number;
  conns: net.Socket[];
  received: Buffer[];
  ended: number;
}

/** A TCP server that echoes and records what it received. */
async function tcpEcho(echo = true): Promise<TcpEcho> {
  const e: TcpEcho = { port: 0, conns: [], received: [], ended: 0 };
  const server = net.createServer((s) => {
    e.conns.push(s);
    s.on('data', (d) => {
      e.received.push(d);
      if (echo) s.write(d);
    });
    s.on('end', () => e.ended++);
    s.on('error', () => {});
  });
  e.port = await listen(server);
  return e;
}

interface Pki {
  ca: string;
  good: { key: Buffer; cert: Buffer }; // for 127.0.0.1 and localhost, signed by the CA
  wrongName: { key: Buffer; cert: Buffer }; // for wrong.example, signed by the CA
  selfSigned: { key: Buffer; cert: Buffer }; // for 127.0.0.1 and localhost, signed by nobody we trust
}

function makePki(): Pki {
  const d = tempDir('sb-pki-');
  const ossl = (...args: string[]) => execFileSync('openssl', args, { cwd: d, stdio: 'pipe' });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  ossl('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=Switchboard Test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
  const leaf = (name: string, san: string) => {
    ossl('req', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`);
    fs.writeFileSync(path.join(d, `${name}.ext`), `subjectAltName=${san}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n`);
    ossl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.pem`,
      '-days', '2', '-extfile', `${name}.ext`);
    return { key: fs.readFileSync(path.join(d, `${name}.key`)), cert: fs.readFileSync(path.join(d, `${name}.pem`)) };
  };
  const good = leaf('good', 'IP:127.0.0.1,DNS:localhost');
  const wrongName = leaf('wrong', 'DNS:wrong.example');
  ossl('req', '-x509', ...ec, '-keyout', 'self.key', '-out', 'self.pem', '-days', '2', '-subj', '/CN=localhost',
    '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost');
  const selfSigned = { key: fs.readFileSync(path.join(d, 'self.key')), cert: fs.readFileSync(path.join(d, 'self.pem')) };
  return { ca: path.join(d, 'ca.pem'), good, wrongName, selfSigned };
}

async function tlsEcho(creds: { key: Buffer; cert: Buffer }): Promise<TcpEcho> {
  const e: TcpEcho = { port: 0, conns: [], received: [], ended: 0 };
  const server = tls.createServer(creds, (s) => {
    e.conns.push(s);
    s.on('data', (d) => {
      e.received.push(d);
      s.write(d);
    });
    s.on('end', () => e.ended++);
    s.on('error', () => {});
  });
  server.on('tlsClientError', () => {});
  e.port = await listen(server);
  return e;
}

interface WsRecord {
  port: number;
  clients: WebSocket[];
  protocols: string[];
  messages: { binary: boolean; data: Buffer }[];
  closes: number[];
}

/**
 * A WebSocket server (the `ws` package) that echoes text and binary messages
 * and obeys a few commands: "ping-me", "fragment", "big", "close-me",
 * "close-normal", "drop".
 */
async function wsServer(creds?: { key: Buffer; cert: Buffer }): Promise<WsRecord> {
  const r: WsRecord = { port: 0, clients: [], protocols: [], messages: [], closes: [] };
  const handleProtocols = (offered: Set<string>) => (offered.has('chat') ? 'chat' : false);
  let wss: WebSocketServer;
  if (creds) {
    const server = https.createServer(creds);
    wss = new WebSocketServer({ server, handleProtocols });
    r.port = await listen(server);
  } else {
    wss = new WebSocketServer({ host: '127.0.0.1', port: 0, handleProtocols });
    await new Promise((resolve) => wss.on('listening', resolve));
    r.port = (wss.address() as net.AddressInfo).port;
  }
  closers.push(() => wss.close());
  wss.on('connection', (ws) => {
    r.clients.push(ws);
    r.protocols.push(ws.protocol);
    ws.on('close', (code) => r.closes.push(code));
    ws.on('error', () => {});
    ws.on('message', (data: Buffer, isBinary) => {
      r.messages.push({ binary: isBinary, data });
      const text = data.toString();
      if (isBinary) ws.send(data, { binary: true });
      else if (text === 'ping-me') {
        ws.once('pong', (payload) => ws.send(`got pong ${payload.toString()}`));
        ws.ping('pp');
      } else if (text === 'fragment') {
        ws.send('part1-', { fin: false });
        ws.ping('between');
        ws.send('part2-', { fin: false });
        ws.send('end', { fin: true });
      } else if (text === 'big') ws.send('x'.repeat(200_000));
      else if (text === 'close-me') ws.close(4001, 'bye');
      else if (text === 'close-normal') ws.close(1000);
      else if (text === 'drop') ws.terminate();
      else ws.send(text);
    });
  });
  return r;
}

interface FakeWs {
  port: number;
  /** What the client sent after its upgrade request. */
  received(): Buffer;
}

/**
 * A raw TCP server that plays WebSocket server: it answers the upgrade
 * request with `response(key)` (a correct 101 by default) and then writes
 * `frames`, one byte at a time when `trickle` is set.
 */
async function fakeWs(frames: Buffer, opts: { response?: (accept: string) => string; trickle?: boolean } = {}): Promise<FakeWs> {
  const got: Buffer[] = [];
  const server = net.createServer((s) => {
    let head = Buffer.alloc(0);
    let upgraded = false;
    s.on('error', () => {});
    s.on('data', async (d) => {
      if (upgraded) {
        got.push(d);
        return;
      }
      head = Buffer.concat([head, d]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) return;
      upgraded = true;
      if (head.length > end + 4) got.push(head.subarray(end + 4));
      const key = /sec-websocket-key: *(\S+)/i.exec(head.toString())![1];
      const accept = createHash('sha1').update(key + WS_GUID).digest('base64');
      const response =
        opts.response?.(accept) ??
        `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`;
      if (!opts.trickle) {
        s.write(Buffer.concat([Buffer.from(response), frames]));
        return;
      }
      s.setNoDelay(true);
      s.write(response);
      for (const byte of frames) {
        await new Promise((r) => setTimeout(r, 2));
        if (!s.destroyed) s.write(Buffer.from([byte]));
      }
    });
  });
  const port = await listen(server);
  return { port, received: () => Buffer.concat(got) };
}

/** Unmasks the frames a client sent. */
function clientFrames(buf: Buffer): { opcode: number; payload: Buffer }[] {
  const out: { opcode: number; payload: Buffer }[] = [];
  let i = 0;
  while (i + 2 <= buf.length) {
    const opcode = buf[i] & 0x0f;
    expect(buf[i + 1] & 0x80).toBe(0x80); // a client always masks
    let len = buf[i + 1] & 0x7f;
    let at = i + 2;
    if (len === 126) {
      len = buf.readUInt16BE(at);
      at += 2;
    } else if (len === 127) {
      len = Number(buf.readBigUInt64BE(at));
      at += 8;
    }
    const mask = buf.subarray(at, at + 4);
    at += 4;
    const payload = Buffer.from(buf.subarray(at, at + len));
    for (let k = 0; k < payload.length; k++) payload[k] ^= mask[k & 3];
    out.push({ opcode, payload });
    i = at + len;
  }
  return out;
}

/** A port nothing listens on. */
async function closedPort(): Promise<number> {
  const s = net.createServer();
  const port = await new Promise<number>((resolve) => s.listen(0, '127.0.0.1', () => resolve((s.address() as net.AddressInfo).port)));
  await new Promise((r) => s.close(r));
  return port;
}

let pki: Pki;

beforeAll(() => {
  dir = compileModule({ name: 'sockmod', source: 'test/modules/sockmod.c' });
  pki = makePki();
  // The extra CA the server trusts for verify_host (besides the system's).
  process.env.SWITCHBOARD_CA_FILE = pki.ca;
});

afterEach(() => {
  while (opened.length) opened.pop()!.core.close();
});

afterAll(() => {
  for (const c of closers) c();
});

// ---------------------------------------------------------------------------

describe('tcp://', () => {
  it('connects, sends what was written before on_connect, echoes, reports the flush, and closes on request', async () => {
    const srv = await tcpEcho();
    const o = start();
    cmd(o, 'open', `a tcp://127.0.0.1:${srv.port}`);
    cmd(o, 'send', 'a early');
    const [openLine, sendLine] = ev(o, 'a');
    const handle = Number(/^open ret=(\d+)$/.exec(openLine)![1]);
    expect(handle).toBeGreaterThan(0);
    expect(sendLine).toBe('send ret=0'); // queued: not connected yet
    await waitFor(o, 'a', 'data len=5 text=early');
    expect(ev(o, 'a')).toContain(`connect handle=${handle} fdok=1`);
    expect(ev(o, 'a').indexOf(`connect handle=${handle} fdok=1`)).toBeLessThan(ev(o, 'a').indexOf('data len=5 text=early'));
    expect(ev(o, 'a')).toContain('write');

    cmd(o, 'send', 'a second');
    await waitFor(o, 'a', 'data len=6 text=second');
    cmd(o, 'close', 'a');
    await waitFor(o, 'a', 'close type=0');
    await until(() => srv.ended === 1);
    expect(Buffer.concat(srv.received).toString()).toBe('earlysecond');
    // on_close is the last call, exactly once; the handle is dead now.
    expect(ev(o, 'a').filter((l) => l.startsWith('close type'))).toEqual(['close type=0']);
    cmd(o, 'send', 'a late');
    expect(ev(o, 'a').at(-1)).toBe('send ret=-1');
  });

  it('reports a close by the server as a normal close', async () => {
    const srv = await tcpEcho();
    const o = start();
    cmd(o, 'open', `b tcp://127.0.0.1:${srv.port} keepalive=1`);
    await waitFor(o, 'b', /^connect /);
    srv.conns[0].end();
    await waitFor(o, 'b', 'close type=0');
    expect(ev(o, 'b').filter((l) => l.startsWith('close'))).toEqual(['close type=0']);
  });

  it('gives on_close with an error and no on_connect when the connection is refused', async () => {
    const o = start();
    cmd(o, 'open', `r tcp://127.0.0.1:${await closedPort()}`);
    cmd(o, 'send', 'r queued-but-never-sent');
    await waitFor(o, 'r', 'close type=-2');
    expect(ev(o, 'r').some((l) => l.startsWith('connect'))).toBe(false);
  });

  it('gives on_close(-1) for a host name that does not resolve', async () => {
    const o = start();
    cmd(o, 'open', 'n tcp://no-such-host.invalid:80');
    await waitFor(o, 'n', 'close type=-1');
  });

  it('tries every address a name resolves to', async () => {
    // "localhost" may resolve to ::1 first; the server listens on 127.0.0.1 only.
    const srv = await tcpEcho();
    const o = start();
    cmd(o, 'open', `lh tcp://localhost:${srv.port}`);
    cmd(o, 'send', 'lh hi');
    await waitFor(o, 'lh', 'data len=2 text=hi');
  });

  it('refuses invalid URLs at once with -1 and calls nothing', async () => {
    const o = start();
    const bad = ['http://127.0.0.1:80', 'tcp://127.0.0.1', 'tcp://:80', 'tcp://127.0.0.1:0', 'tcp://127.0.0.1:70000', 'tcp://h:8x',
      'ws://[::1', 'tcp://user@127.0.0.1:80', 'tcp://127.0.0.1:80/path', 'nonsense'];
    bad.forEach((url, i) => cmd(o, 'open', `bad${i} ${url}`));
    bad.forEach((_, i) => expect(ev(o, `bad${i}`)).toEqual(['open ret=-1']));
    await new Promise((r) => setTimeout(r, 50));
    bad.forEach((_, i) => expect(ev(o, `bad${i}`)).toEqual(['open ret=-1']));
  });

  it('returns -1 for a write to an unknown handle', () => {
    const o = start();
    cmd(o, 'sendhandle', '987654321 data');
    cmd(o, 'sendhandle', '0 data');
    cmd(o, 'sendhandle', '-5 data');
    expect(o.lines()).toEqual(['handle 987654321 send ret=-1', 'handle 0 send ret=-1', 'handle -5 send ret=-1']);
  });

  it('takes writes from a module thread, in order, and connects from one', async () => {
    const srv = await tcpEcho(false);
    const o = start();
    cmd(o, 'open', `t tcp://127.0.0.1:${srv.port}`);
    await waitFor(o, 't', /^connect /);
    cmd(o, 'thread', 't 2000');
    await waitFor(o, 't', 'thread done fails=0');
    const expected = Array.from({ length: 2000 }, (_, i) => `line ${i}\n`).join('');
    await until(() => Buffer.concat(srv.received).length >= expected.length);
    expect(Buffer.concat(srv.received).toString()).toBe(expected);

    const srv2 = await tcpEcho();
    cmd(o, 'threadopen', `th tcp://127.0.0.1:${srv2.port}`);
    await waitFor(o, 'th', 'data len=12 text=from-thread\\x0a');
    expect(ev(o, 'th')).toContain('threadopen ret=ok write=0');
    cmd(o, 'close', 'th');
    await waitFor(o, 'th', 'close type=0');
  });

  it('runs 200 sockets at once, with distinct, increasing handles', async () => {
    const srv = await tcpEcho();
    const o = start();
    cmd(o, 'many', 'x 200 tcp://127.0.0.1:' + srv.port);
    await until(() => o.lines().filter((l) => / data len=\d+ text=hello manyx\d+$/.test(l)).length === 200, 60_000);
    const handles = o.lines().map((l) => /^manyx(\d+) connect handle=(\d+)/.exec(l)).filter((m) => m).map((m) => [Number(m![1]), Number(m![2])]);
    expect(handles).toHaveLength(200);
    const byIndex = handles.sort((a, b) => a[0] - b[0]).map(([, h]) => h);
    for (let i = 1; i < byIndex.length; i++) expect(byIndex[i]).toBeGreaterThan(byIndex[i - 1]);
    cmd(o, 'closeall', 'manyx');
    await until(() => o.lines().filter((l) => /^manyx\d+ close type=0$/.test(l)).length === 200, 60_000);
    expect(o.lines().filter((l) => / close type=/.test(l) && !/ close type=0$/.test(l))).toEqual([]);
  });

  it('closes what a module left open when it is unloaded, and calls back safely afterwards', async () => {
    const srv = await tcpEcho();
    const o = open(dir, 'module sockmod\n');
    cmd(o, 'open', `u tcp://127.0.0.1:${srv.port}`);
    await waitFor(o, 'u', /^connect /);
    o.core.close(); // on_cleanup closes the socket; its on_close runs after the unload
    await until(() => srv.ended === 1);
    await new Promise((r) => setTimeout(r, 50));
  });
});

describe('ssl://', () => {
  it('verifies the server against the CA file and the host name, then echoes', async () => {
    const srv = await tlsEcho(pki.good);
    const o = start();
    cmd(o, 'open', `s ssl://127.0.0.1:${srv.port}`);
    cmd(o, 'send', 's secret');
    await waitFor(o, 's', 'data len=6 text=secret');
    cmd(o, 'open', `s2 ssl://localhost:${srv.port}`);
    await waitFor(o, 's2', /^connect /);
    cmd(o, 'close', 's');
    cmd(o, 'close', 's2');
    await waitFor(o, 's', 'close type=0');
    await waitFor(o, 's2', 'close type=0');
  });

  it('refuses a certificate from an untrusted issuer with -5', async () => {
    const srv = await tlsEcho(pki.selfSigned);
    const o = start();
    cmd(o, 'open', `u ssl://127.0.0.1:${srv.port}`);
    cmd(o, 'send', 'u never');
    await waitFor(o, 'u', 'close type=-5');
    expect(ev(o, 'u').some((l) => l.startsWith('connect'))).toBe(false);
    expect(srv.received).toEqual([]);
  });

  it('refuses a trusted certificate for another host name with -5', async () => {
    const srv = await tlsEcho(pki.wrongName);
    const o = start();
    cmd(o, 'open', `w ssl://127.0.0.1:${srv.port}`);
    cmd(o, 'open', `w2 ssl://localhost:${srv.port}`);
    await waitFor(o, 'w', 'close type=-5');
    await waitFor(o, 'w2', 'close type=-5');
  });

  it('accepts any certificate when verify_host is 0', async () => {
    const srv = await tlsEcho(pki.selfSigned);
    const o = start();
    cmd(o, 'open', `v ssl://127.0.0.1:${srv.port} verify=0`);
    cmd(o, 'send', 'v hello');
    await waitFor(o, 'v', 'data len=5 text=hello');
    srv.conns[0].end();
    await waitFor(o, 'v', 'close type=0');
  });

  it('fails with -4 when the server does not speak TLS', async () => {
    const srv = await tcpEcho(false);
    const o = start();
    cmd(o, 'open', `p ssl://127.0.0.1:${srv.port}`);
    await until(() => srv.conns.length === 1);
    srv.conns[0].end('HTTP/1.1 400 Bad Request\r\n\r\n');
    await waitFor(o, 'p', 'close type=-4');
  });
});

describe('ws:// and wss://', () => {
  it('echoes text and binary messages, masked, as whole messages', async () => {
    const srv = await wsServer();
    const o = start();
    cmd(o, 'open', `w ws://127.0.0.1:${srv.port}/echo?x=1`);
    cmd(o, 'send', 'w hello world');
    cmd(o, 'sendhex', 'w 00ff10');
    await waitFor(o, 'w', 'data len=3 text=\\x00\\xff\\x10');
    expect(ev(o, 'w')).toContain('data len=11 text=hello world');
    expect(srv.messages.map((m) => [m.binary, m.data.toString('hex')])).toEqual([
      [false, Buffer.from('hello world').toString('hex')],
      [true, '00ff10'],
    ]);
    expect(srv.protocols).toEqual(['']);
  });

  it('offers ws_protocol and accepts the one the server picks', async () => {
    const srv = await wsServer();
    const o = start();
    cmd(o, 'open', `c ws://127.0.0.1:${srv.port}/ proto=other,chat`);
    await waitFor(o, 'c', /^connect /);
    expect(srv.protocols).toEqual(['chat']);
  });

  it('fails the upgrade (-6) when the server picks no protocol though one was asked for', async () => {
    const srv = await wsServer();
    const o = start();
    cmd(o, 'open', `c ws://127.0.0.1:${srv.port}/ proto=nosuch`);
    await waitFor(o, 'c', 'close type=-6');
    expect(ev(o, 'c').some((l) => l.startsWith('connect'))).toBe(false);
  });

  it('answers a server ping with a pong carrying its payload', async () => {
    const srv = await wsServer();
    const o = start();
    cmd(o, 'open', `p ws://127.0.0.1:${srv.port}`);
    cmd(o, 'send', 'p ping-me');
    await waitFor(o, 'p', 'data len=11 text=got pong pp');
  });

  it('joins a fragmented message (with a ping between fragments) and delivers it once', async () => {
    const srv = await wsServer();
    const o = start();
    cmd(o, 'open', `f ws://127.0.0.1:${srv.port}`);
    cmd(o, 'send', 'f fragment');
    cmd(o, 'send', 'f big');
    await waitFor(o, 'f', /^data len=200000 /);
    expect(ev(o, 'f').filter((l) => l.startsWith('data'))[0]).toBe('data len=15 text=part1-part2-end');
  });

  it('reports the server\'s close code, and 0 for 1000', async () => {
    const srv = await wsServer();
    const o = start();
    cmd(o, 'open', `k ws://127.0.0.1:${srv.port}`);
    cmd(o, 'send', 'k close-me');
    await waitFor(o, 'k', 'close type=4001');
    await until(() => srv.closes.length === 1);
    expect(srv.closes).toEqual([4001]); // the client echoed the code
    cmd(o, 'open', `n ws://127.0.0.1:${srv.port}`);
    cmd(o, 'send', 'n close-normal');
    await waitFor(o, 'n', 'close type=0');
  });

  it('reports -8 when the server drops the connection without a close frame', async () => {
    const srv = await wsServer();
    const o = start();
    cmd(o, 'open', `d ws://127.0.0.1:${srv.port}`);
    cmd(o, 'send', 'd drop');
    await waitFor(o, 'd', 'close type=-8');
  });

  it('closes with a close frame (1000) when the module closes', async () => {
    const srv = await wsServer();
    const o = start();
    cmd(o, 'open', `m ws://127.0.0.1:${srv.port}`);
    cmd(o, 'send', 'm hi');
    await waitFor(o, 'm', 'data len=2 text=hi');
    cmd(o, 'close', 'm');
    cmd(o, 'send', 'm after');
    expect(ev(o, 'm').at(-1)).toBe('send ret=-1');
    await waitFor(o, 'm', 'close type=0');
    await until(() => srv.closes.length === 1);
    expect(srv.closes).toEqual([1000]);
  });

  it('runs over TLS (wss://) with verification', async () => {
    const srv = await wsServer(pki.good);
    const o = start();
    cmd(o, 'open', `s wss://localhost:${srv.port}/secure proto=chat`);
    cmd(o, 'send', 's over tls');
    await waitFor(o, 's', 'data len=8 text=over tls');
    cmd(o, 'close', 's');
    await waitFor(o, 's', 'close type=0');
    expect(srv.protocols).toEqual(['chat']);
  });

  it('runs 200 WebSockets at once', async () => {
    const srv = await wsServer();
    const o = start();
    cmd(o, 'many', `w 200 ws://127.0.0.1:${srv.port}/`);
    await until(() => o.lines().filter((l) => /^manyw\d+ data len=\d+ text=hello manyw\d+$/.test(l)).length === 200, 60_000);
    cmd(o, 'closeall', 'manyw');
    await until(() => o.lines().filter((l) => /^manyw\d+ close type=0$/.test(l)).length === 200, 60_000);
    await until(() => srv.closes.length === 200);
    expect(new Set(srv.closes)).toEqual(new Set([1000]));
  });
});

describe('a server that breaks the WebSocket protocol', () => {
  const ok = Buffer.from([0x81, 0x02, 0x6f, 0x6b]); // a valid text frame, "ok"
  const cases: [string, number[], number][] = [
    ['an unknown opcode', [0x83, 0x00], 1002],
    ['a control frame over 125 bytes', [0x89, 0x7e, 0x00, 0x7e, ...new Array(126).fill(0x61)], 1002],
    ['a masked server frame', [0x81, 0x82, 1, 2, 3, 4, 0x6e, 0x6d], 1002],
    ['a 16-bit length that fits in 7 bits', [0x81, 0x7e, 0x00, 0x02, 0x68, 0x69], 1002],
    ['a 64-bit length with the top bit set', [0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 0x01], 1002],
    ['a close frame with a 1-byte payload', [0x88, 0x01, 0x03], 1002],
    ['a close frame with a reserved code', [0x88, 0x02, 0x03, 0xed], 1002],
    ['a continuation with no message begun', [0x80, 0x01, 0x78], 1002],
    ['reserved bits set', [0xc1, 0x01, 0x78], 1002],
    ['a fragmented ping', [0x09, 0x00], 1002],
    ['a new message inside a fragmented one', [0x01, 0x01, 0x61, 0x01, 0x01, 0x62], 1002],
    ['a text message that is not UTF-8', [0x81, 0x02, 0xc3, 0x28], 1007],
  ];
  for (const [what, bytes, code] of cases) {
    it(`closes with -7 (and sends close ${code}) on ${what}`, async () => {
      const srv = await fakeWs(Buffer.concat([ok, Buffer.from(bytes)]));
      const o = start();
      cmd(o, 'open', `z ws://127.0.0.1:${srv.port}`);
      await waitFor(o, 'z', 'close type=-7');
      expect(ev(o, 'z').filter((l) => !l.startsWith('open'))).toEqual(['connect handle=' + /open ret=(\d+)/.exec(ev(o, 'z')[0])![1] + ' fdok=1', 'data len=2 text=ok', 'close type=-7']);
      await until(() => srv.received().length > 0);
      const frames = clientFrames(srv.received());
      expect(frames[0].opcode).toBe(0x8);
      expect(frames[0].payload.readUInt16BE(0)).toBe(code);
    });
  }

  it('parses frames that arrive one byte at a time', async () => {
    const frames = Buffer.concat([
      Buffer.from([0x01, 0x03]), Buffer.from('abc'), // fragment 1
      Buffer.from([0x89, 0x01, 0x70]), // ping "p"
      Buffer.from([0x80, 0x7e, 0x00, 0x80]), Buffer.alloc(128, 0x64), // last fragment, 16-bit length
      Buffer.from([0x88, 0x02, 0x03, 0xe8]), // close 1000
    ]);
    const srv = await fakeWs(frames, { trickle: true });
    const o = start();
    cmd(o, 'open', `t ws://127.0.0.1:${srv.port}`);
    await waitFor(o, 't', 'close type=0');
    expect(ev(o, 't').filter((l) => l.startsWith('data'))).toEqual([`data len=131 text=abc${'d'.repeat(128)}`]);
    // The close reply is written just before the close event; under a slow
    // (sanitised, busy) run it may reach the fake server a moment later.
    await until(() => clientFrames(srv.received()).some((f) => f.opcode === 0x8));
    const got = clientFrames(srv.received());
    expect(got.map((f) => [f.opcode, f.payload.toString('hex')])).toEqual([
      [0xa, Buffer.from('p').toString('hex')],
      [0x8, '03e8'],
    ]);
  });

  const handshakes: [string, (accept: string) => string][] = [
    ['a status other than 101', () => 'HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n'],
    ['a wrong Sec-WebSocket-Accept', () => 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n'],
    ['no Upgrade header', (a) => `HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${a}\r\n\r\n`],
    ['an extension never offered', (a) => `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${a}\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n`],
    ['a protocol never offered', (a) => `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${a}\r\nSec-WebSocket-Protocol: chat\r\n\r\n`],
    ['garbage', () => 'SSH-2.0-OpenSSH\r\n\r\n'],
    ['an endless header', () => `HTTP/1.1 101 Switching Protocols\r\n${'X-Filler: 0123456789012345678901234567890123456789\r\n'.repeat(400)}`],
  ];
  for (const [what, response] of handshakes) {
    it(`fails the upgrade with -6 on ${what}`, async () => {
      const srv = await fakeWs(Buffer.alloc(0), { response });
      const o = start();
      cmd(o, 'open', `h ws://127.0.0.1:${srv.port}`);
      cmd(o, 'send', 'h queued');
      await waitFor(o, 'h', 'close type=-6');
      expect(ev(o, 'h').some((l) => l.startsWith('connect') || l.startsWith('data'))).toBe(false);
    });
  }
});
