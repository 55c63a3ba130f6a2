// mesibo_util_http as a module sees it: test/modules/httpmod.c starts the
// request a message to "fetch" describes and logs every callback; real
// servers in this process answer (Node's http and https, and raw TCP servers
// for the responses no well-behaved server sends).
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import path from 'node:path';
import zlib from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compileModule, msg, open, tempDir, until, type Opened } from './helpers';

let o: Opened;
let dir: string;
let certs: Record<string, string>;
let plain: http.Server;
let plainConnections = 0;
let plainUrl: string;
let tlsServer: https.Server;
let tlsConnections = 0;
let tlsPort: number;
let wrongNameServer: https.Server;
let untrustedServer: https.Server;
let raw: net.Server;
let rawUrl: string;
let rawPort: number;
const rawSockets = new Set<net.Socket>();
const timers = new Set<NodeJS.Timeout>();
let seq = 0;

/** What one request looked like to the module. */
interface Fetched {
  tag: string;
  lines: string[];
  status?: string;
  data: { size: number; progress: number; state: number }[];
  closed: boolean;
  result?: number;
  bytes?: number;
  hash?: string;
  body?: string;
  ms: number;
}

function parse(tag: string, lines: string[], ms: number): Fetched {
  const mine = lines.filter((l) => l.startsWith(`${tag} `)).map((l) => l.slice(tag.length + 1));
  const f: Fetched = { tag, lines: mine, data: [], closed: false, ms };
  for (const l of mine) {
    let m: RegExpMatchArray | null;
    if ((m = l.match(/^status (.*)$/))) f.status = m[1];
    else if ((m = l.match(/^data (\d+) progress (-?\d+) state (\d+)$/))) f.data.push({ size: +m[1], progress: +m[2], state: +m[3] });
    else if ((m = l.match(/^close (-?\d+) bytes (\d+) calls \d+ hash ([0-9a-f]{8}) body ([\s\S]*)$/))) {
      f.closed = true;
      f.result = +m[1];
      f.bytes = +m[2];
      f.hash = m[3];
      f.body = m[4];
    }
  }
  return f;
}

/** Sends a request description to the module and waits for its last callback (or a refusal). */
async function fetch(desc: Record<string, unknown>, waitMs = 40_000): Promise<Fetched> {
  const tag = (desc.tag as string) ?? `r${++seq}`;
  const t0 = Date.now();
  o.core.submit('tester', msg('fetch', JSON.stringify({ ...desc, tag })));
  // The last call: close 0, or after a failure the negative progress that
  // follows close -1 (close -1 itself when the module set no on_data).
  const done = (l: string) =>
    l.startsWith(`${tag} close 0 `) || l.startsWith(`${tag} fail `) || l === `${tag} call -1` || (!!desc.no_data && l.startsWith(`${tag} close -1 `));
  await until(() => o.lines().some(done), waitMs);
  const f = parse(tag, o.lines(), Date.now() - t0);
  // No module promise (one status, one close, progress order) was broken.
  expect(f.lines.filter((l) => l.startsWith('error'))).toEqual([]);
  return f;
}

/** A request that must fail: no 100, close -1, then one negative progress as the last call. */
function expectFailure(f: Fetched) {
  expect(f.closed).toBe(true);
  expect(f.result).toBe(-1);
  expect(f.lines.filter((l) => /^fail progress -\d+ state \d$/.test(l))).toHaveLength(1);
  expect(f.lines.at(-1)).toMatch(/^fail progress -\d+ state \d$/);
  expect(f.lines.findIndex((l) => l.startsWith('close -1 '))).toBe(f.lines.length - 2);
  expect(f.data.some((d) => d.progress === 100)).toBe(false);
}

function fnv(buf: Buffer): string {
  let h = 2166136261;
  for (const b of buf) h = Math.imul(h ^ b, 16777619) >>> 0;
  return h.toString(16).padStart(8, '0');
}

function later(ms: number, fn: () => void) {
  const t = setTimeout(() => {
    timers.delete(t);
    fn();
  }, ms);
  timers.add(t);
}

function listen(server: net.Server): Promise<number> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port)));
}

function makeCerts(d: string): Record<string, string> {
  const run = (...args: string[]) => execFileSync('openssl', args, { cwd: d, stdio: 'pipe' });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  const ca = (name: string) =>
    run('req', '-x509', ...ec, '-keyout', `${name}.key`, '-out', `${name}.pem`, '-days', '2', '-subj', `/CN=Switchboard test ${name}`,
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
  const leaf = (name: string, caName: string, san: string) => {
    fs.writeFileSync(path.join(d, `${name}.ext`), `subjectAltName=${san}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n`);
    run('req', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`);
    run('x509', '-req', '-in', `${name}.csr`, '-CA', `${caName}.pem`, '-CAkey', `${caName}.key`, '-CAcreateserial', '-out', `${name}.pem`,
      '-days', '2', '-extfile', `${name}.ext`);
  };
  ca('ca');
  ca('rogue');
  leaf('server', 'ca', 'DNS:localhost');
  leaf('wrongname', 'ca', 'DNS:wrong.example');
  leaf('untrusted', 'rogue', 'DNS:localhost');
  const read = (f: string) => fs.readFileSync(path.join(d, f), 'utf8');
  return {
    caFile: path.join(d, 'ca.pem'),
    serverKey: read('server.key'), serverCert: read('server.pem'),
    wrongKey: read('wrongname.key'), wrongCert: read('wrongname.pem'),
    untrustedKey: read('untrusted.key'), untrustedCert: read('untrusted.pem'),
  };
}

const bigBody = Buffer.alloc(1 << 20);
for (let i = 0; i < bigBody.length; i++) bigBody[i] = (i * 7 + (i >> 9)) & 0xff;
const text = 'The quick brown fox jumps over the lazy dog.\n'.repeat(5000);

// The well-behaved server: Node's http (and, with the same routes, https).
function routes(req: http.IncomingMessage, res: http.ServerResponse) {
  const chunks: Buffer[] = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const url = new URL(req.url!, 'http://x');
    const body = Buffer.concat(chunks).toString();
    switch (url.pathname) {
      case '/echo':
        res.setHeader('Content-Type', 'application/json');
        res.end(JSON.stringify({ method: req.method, url: req.url, headers: req.headers, body }));
        return;
      case '/text':
        res.setHeader('Content-Type', 'text/plain; charset=utf-8');
        res.end('hello from switchboard tests');
        return;
      case '/big':
        res.setHeader('Content-Type', 'application/octet-stream');
        res.setHeader('Content-Length', bigBody.length);
        res.end(bigBody);
        return;
      case '/chunked':
        res.setHeader('Content-Type', 'text/plain');
        res.write('one,');
        later(20, () => res.write('two,'));
        later(40, () => res.end('three'));
        return;
      case '/gzip':
      case '/deflate':
      case '/deflate-raw': {
        const enc = url.pathname === '/gzip' ? 'gzip' : 'deflate';
        const z =
          url.pathname === '/gzip' ? zlib.gzipSync(text) : url.pathname === '/deflate' ? zlib.deflateSync(text) : zlib.deflateRawSync(text);
        res.setHeader('Content-Type', 'text/plain');
        res.setHeader('Content-Encoding', enc);
        res.setHeader('Vary', 'Accept-Encoding');
        if (url.searchParams.has('chunked')) {
          res.write(z.subarray(0, 100));
          res.end(z.subarray(100));
        } else {
          res.setHeader('Content-Length', z.length);
          res.end(z);
        }
        return;
      }
      case '/redirect':
        res.writeHead(302, { Location: '/text', 'Content-Type': 'text/plain' });
        res.end('moved');
        return;
      case '/nocontent':
        res.writeHead(204);
        res.end();
        return;
      case '/etag':
        if (req.headers['if-none-match'] === '"v1"') {
          res.writeHead(304, { ETag: '"v1"' });
          res.end();
        } else {
          res.writeHead(200, { ETag: '"v1"', 'Content-Type': 'text/plain' });
          res.end('fresh');
        }
        return;
      case '/ims': {
        const since = Date.parse(String(req.headers['if-modified-since'] ?? ''));
        if (since >= Date.UTC(2020, 0, 1)) {
          res.writeHead(304);
          res.end();
        } else {
          res.writeHead(200, { 'Last-Modified': new Date(Date.UTC(2020, 0, 1)).toUTCString(), 'Content-Type': 'text/plain' });
          res.end('modified');
        }
        return;
      }
      case '/status':
        res.writeHead(Number(url.searchParams.get('code')), { 'Content-Type': 'text/plain' });
        res.end(`status ${url.searchParams.get('code')}`);
        return;
      default:
        res.writeHead(404);
        res.end('not found');
    }
  });
}

// The raw server: the path of the request picks a scripted answer.
const HEAD_OK = 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n';
const rawScripts: Record<string, (s: net.Socket) => void> = {
  'until-close': (s) => s.end(`${HEAD_OK}\r\nread until the server closes`),
  'http10-until-close': (s) => s.end('HTTP/1.0 200 OK\nContent-Type: text/plain\n\nold school'),
  interim: (s) =>
    s.end('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </style.css>\r\n\r\n' + `${HEAD_OK}Content-Length: 2\r\n\r\nok`),
  'interim-split': (s) => {
    s.write('HTTP/1.1 100 Continue\r\n\r\n');
    later(30, () => s.end(`${HEAD_OK}Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n`));
  },
  'switching-protocols': (s) => s.end('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n'),
  'bad-status-code': (s) => s.end('HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n'),
  'bad-status-line': (s) => s.end('200 OK\r\nContent-Length: 0\r\n\r\n'),
  'bad-version': (s) => s.end('HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n'),
  'status-out-of-range': (s) => s.end('HTTP/1.1 999 Odd\r\nContent-Length: 0\r\n\r\n'),
  'no-colon': (s) => s.end(`${HEAD_OK}Content-Length 5\r\n\r\nhello`),
  'space-before-colon': (s) => s.end(`${HEAD_OK}Content-Length : 5\r\n\r\nhello`),
  'obs-fold': (s) => s.end(`${HEAD_OK}X-Folded: a\r\n b\r\nContent-Length: 5\r\n\r\nhello`),
  'negative-length': (s) => s.end(`${HEAD_OK}Content-Length: -5\r\n\r\nhello`),
  'huge-length': (s) => s.end(`${HEAD_OK}Content-Length: 99999999999999999999999\r\n\r\nhello`),
  'length-2^53': (s) => s.end(`${HEAD_OK}Content-Length: 9007199254740992\r\n\r\nhello`),
  'conflicting-lengths': (s) => s.end(`${HEAD_OK}Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!`),
  'length-and-chunked': (s) => s.end(`${HEAD_OK}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n`),
  'unknown-transfer-coding': (s) => s.end(`${HEAD_OK}Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n`),
  'bad-chunk-size': (s) => s.end(`${HEAD_OK}Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n`),
  'negative-chunk-size': (s) => s.end(`${HEAD_OK}Transfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n`),
  'huge-chunk-size': (s) => s.end(`${HEAD_OK}Transfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nhello\r\n0\r\n\r\n`),
  'chunk-longer-than-size': (s) => s.end(`${HEAD_OK}Transfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n`),
  'chunked-then-close': (s) => s.end(`${HEAD_OK}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n`),
  'body-longer-than-declared': (s) => s.end(`${HEAD_OK}Content-Length: 5\r\n\r\nhello, and then some`),
  'body-shorter-than-declared': (s) => s.end(`${HEAD_OK}Content-Length: 50\r\n\r\nhello`),
  'nul-in-head': (s) => s.end(`${HEAD_OK}X-Nul: a\u0000b\r\nContent-Length: 0\r\n\r\n`),
  'head-too-large': (s) =>
    s.end(HEAD_OK + Array.from({ length: 8 }, (_, i) => `X-Filler-${i}: ${'x'.repeat(9000)}\r\n`).join('') + 'Content-Length: 0\r\n\r\n'),
  'line-too-long': (s) => s.end(`${HEAD_OK}X-Long: ${'z'.repeat(20000)}\r\nContent-Length: 0\r\n\r\n`),
  'bare-cr': (s) => s.end(`${HEAD_OK}X-A: 1\rX-B: 2\r\nContent-Length: 0\r\n\r\n`),
  'bad-gzip': (s) => s.end(`${HEAD_OK}Content-Encoding: gzip\r\nContent-Length: 10\r\n\r\nnot gzip!!`),
  'truncated-gzip': (s) => {
    const z = zlib.gzipSync(text);
    s.end(Buffer.concat([Buffer.from(`${HEAD_OK}Content-Encoding: gzip\r\nContent-Length: 100\r\n\r\n`), z.subarray(0, 100)]));
  },
  'close-before-head': (s) => s.end(),
  'reset-before-head': (s) => s.resetAndDestroy(),
  'reset-mid-head': (s) => {
    s.write('HTTP/1.1 200 OK\r\nContent-');
    later(30, () => s.resetAndDestroy());
  },
  'reset-mid-body': (s) => {
    s.write(`${HEAD_OK}Content-Length: 100\r\n\r\nonly ten b`);
    later(30, () => s.resetAndDestroy());
  },
  'reset-mid-chunked': (s) => {
    s.write(`${HEAD_OK}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n`);
    later(30, () => s.resetAndDestroy());
  },
  'reset-mid-until-close': (s) => {
    s.write(`${HEAD_OK}\r\npartial`);
    later(30, () => s.resetAndDestroy());
  },
  'never-answers': () => {},
  'slow-body': (s) => s.write(`${HEAD_OK}Content-Length: 100\r\n\r\nonly ten b`),
  trickle: (s) => {
    s.write(`${HEAD_OK}Transfer-Encoding: chunked\r\n\r\n`);
    const tick = () => {
      if (s.destroyed) return;
      s.write('1\r\n.\r\n');
      later(100, tick);
    };
    tick();
  },
};

const rawConnections: Record<string, number> = {};

function rawHandler(s: net.Socket) {
  rawSockets.add(s);
  s.on('close', () => rawSockets.delete(s));
  s.on('error', () => {});
  let buffered = '';
  let requests = 0;
  s.on('data', (d) => {
    buffered += d.toString('latin1');
    let end: number;
    while ((end = buffered.indexOf('\r\n\r\n')) >= 0) {
      const head = buffered.slice(0, end);
      buffered = buffered.slice(end + 4);
      const name = head.split(' ')[1]?.slice(1) ?? '';
      if (requests++ === 0) rawConnections[name] = (rawConnections[name] ?? 0) + 1;
      if (name === 'drop-second') {
        // Keep-alive for one request, then drop the connection unanswered:
        // what a server does when it closes an idle connection just as the
        // client reuses it.
        if (requests === 1) s.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
        else s.destroy();
        continue;
      }
      const script = rawScripts[name];
      if (script) script(s);
      else s.end('HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n');
      return;
    }
  });
}

beforeAll(async () => {
  dir = compileModule({ name: 'httpmod', source: 'test/modules/httpmod.c' });
  const certDir = tempDir('sb-http-certs-');
  certs = makeCerts(certDir);

  plain = http.createServer(routes);
  plain.on('connection', () => plainConnections++);
  plainUrl = `http://127.0.0.1:${await listen(plain)}`;

  tlsServer = https.createServer({ key: certs.serverKey, cert: certs.serverCert }, routes);
  tlsServer.on('secureConnection', () => tlsConnections++);
  tlsPort = await listen(tlsServer);
  wrongNameServer = https.createServer({ key: certs.wrongKey, cert: certs.wrongCert }, routes);
  await listen(wrongNameServer);
  untrustedServer = https.createServer({ key: certs.untrustedKey, cert: certs.untrustedCert }, routes);
  await listen(untrustedServer);

  raw = net.createServer(rawHandler);
  rawPort = await listen(raw);
  rawUrl = `http://127.0.0.1:${rawPort}`;

  compileModule({ name: 'mesibohttp', source: 'test/modules/mesibohttp.c', outDir: dir });
  o = open(dir, `http_ca_file = ${certs.caFile}\nmodule httpmod\nmodule mesibohttp\n`);
});

afterAll(async () => {
  for (const t of timers) clearTimeout(t);
  for (const s of rawSockets) s.destroy();
  for (const s of [plain, tlsServer, wrongNameServer, untrustedServer]) s?.closeAllConnections();
  await Promise.all([plain, tlsServer, wrongNameServer, untrustedServer, raw].map((s) => new Promise((r) => (s ? s.close(r) : r(null)))));
  // Idle pooled connections see the servers close; give them a turn.
  await new Promise((r) => setTimeout(r, 50));
  o?.core.close();
});

const portOf = (s: net.Server) => (s.address() as net.AddressInfo).port;

describe('requests and responses', () => {
  it('GETs a resource: one status with the content type, the body with progress 100, close 0', async () => {
    const f = await fetch({ url: `${plainUrl}/text` });
    expect(f.lines[0]).toBe('call 0');
    expect(f.status).toBe('200 text/plain; charset=utf-8');
    expect(f.data).toEqual([{ size: 28, progress: 100, state: 3 }]);
    expect(f.result).toBe(0);
    expect(f.body).toBe('hello from switchboard tests');
    // status, then data, then close, nothing after
    expect(f.lines.slice(1).map((l) => l.split(' ')[0])).toEqual(['status', 'data', 'close']);
  });

  it('sends a GET without a body and a POST with the body and its Content-Length', async () => {
    const get = JSON.parse((await fetch({ url: `${plainUrl}/echo?q=1` })).body!);
    expect(get).toMatchObject({ method: 'GET', url: '/echo?q=1', body: '' });
    expect(get.headers['content-length']).toBeUndefined();
    expect(get.headers.host).toBe(`127.0.0.1:${portOf(plain)}`);

    const post = JSON.parse((await fetch({ url: `${plainUrl}/echo`, post: 'a=1&b=two', content_type: 'application/x-www-form-urlencoded' })).body!);
    expect(post).toMatchObject({ method: 'POST', body: 'a=1&b=two' });
    expect(post.headers['content-length']).toBe('9');
    expect(post.headers['content-type']).toBe('application/x-www-form-urlencoded');

    const empty = JSON.parse((await fetch({ url: `${plainUrl}/echo`, post: '' })).body!);
    expect(empty).toMatchObject({ method: 'POST', body: '' });
    expect(empty.headers['content-length']).toBe('0');
  });

  it('sends every header field of mesibo_http_t that is set', async () => {
    const f = await fetch({
      url: `${plainUrl}/echo`,
      post: '{"x":1}',
      content_type: 'application/json',
      extra_header: 'X-One: 1\r\nX-Two: two\r\n\r\nAuthorization: Bearer token-123\nX-Three: 3',
      user_agent: 'httpmod/1.0',
      referrer: 'https://referrer.example/page',
      origin: 'https://origin.example',
      cookie: 'a=1; b=2',
      encoding: 'identity',
      cache_control: 'no-cache',
      accept: 'application/json',
      etag: '"abc"',
      ims: 1000000000,
    });
    const h = JSON.parse(f.body!).headers;
    expect(h).toMatchObject({
      'content-type': 'application/json',
      'x-one': '1',
      'x-two': 'two',
      'x-three': '3',
      authorization: 'Bearer token-123',
      'user-agent': 'httpmod/1.0',
      referer: 'https://referrer.example/page',
      origin: 'https://origin.example',
      cookie: 'a=1; b=2',
      'accept-encoding': 'identity',
      'cache-control': 'no-cache',
      accept: 'application/json',
      'if-none-match': '"abc"',
      'if-modified-since': 'Sun, 09 Sep 2001 01:46:40 GMT',
    });
  });

  it('sends a default User-Agent and no optional header that is not set', async () => {
    const h = JSON.parse((await fetch({ url: `${plainUrl}/echo` })).body!).headers;
    expect(h['user-agent']).toBe('switchboard/0.1');
    for (const k of ['referer', 'origin', 'cookie', 'accept-encoding', 'cache-control', 'if-none-match', 'if-modified-since', 'authorization', 'content-type'])
      expect(h[k]).toBeUndefined();
  });

  it('sends user:password from the URL as Basic authentication, percent-decoded, and not in the request line', async () => {
    const port = portOf(plain);
    const e = JSON.parse((await fetch({ url: `http://alice:s%3Acret%40@127.0.0.1:${port}/echo` })).body!);
    expect(Buffer.from(e.headers.authorization.replace(/^Basic /, ''), 'base64').toString()).toBe('alice:s:cret@');
    expect(e.url).toBe('/echo');
    const u = JSON.parse((await fetch({ url: `http://bob@127.0.0.1:${port}/echo` })).body!);
    expect(u.headers.authorization).toBe(`Basic ${Buffer.from('bob:').toString('base64')}`);
  });

  it('reports a large Content-Length body in pieces whose progress rises to exactly 100 with the last one', async () => {
    const f = await fetch({ url: `${plainUrl}/big` });
    expect(f.result).toBe(0);
    expect(f.bytes).toBe(bigBody.length);
    expect(f.hash).toBe(fnv(bigBody));
    expect(f.data.length).toBeGreaterThan(1);
    const progress = f.data.map((d) => d.progress);
    expect(progress.slice(0, -1).every((p) => p < 100)).toBe(true);
    expect(progress).toEqual([...progress].sort((a, b) => a - b));
    expect(f.data[f.data.length - 1].progress).toBe(100);
    expect(f.data[f.data.length - 1].size).toBeGreaterThan(0);
  });

  it('reads a chunked body: progress stays below 100, then a last call with progress 100', async () => {
    const f = await fetch({ url: `${plainUrl}/chunked` });
    expect(f.result).toBe(0);
    expect(f.body).toBe('one,two,three');
    const last = f.data[f.data.length - 1];
    expect(last).toEqual({ size: 0, progress: 100, state: 3 });
    expect(f.data.slice(0, -1).every((d) => d.progress < 100 && d.size > 0)).toBe(true);
  });

  it('reads a body that ends when the server closes (HTTP/1.1 and HTTP/1.0)', async () => {
    const f = await fetch({ url: `${rawUrl}/until-close` });
    expect(f.result).toBe(0);
    expect(f.status).toBe('200 text/plain');
    expect(f.body).toBe('read until the server closes');
    expect(f.data[f.data.length - 1]).toEqual({ size: 0, progress: 100, state: 3 });
    const old = await fetch({ url: `${rawUrl}/http10-until-close` });
    expect(old.result).toBe(0);
    expect(old.body).toBe('old school');
  });

  it.each(['/gzip', '/deflate', '/deflate-raw', '/gzip?chunked', '/deflate?chunked'])('decodes %s bodies', async (p) => {
    const f = await fetch({ url: `${plainUrl}${p}`, encoding: 'gzip, deflate' });
    expect(f.result).toBe(0);
    expect(f.bytes).toBe(text.length);
    expect(f.hash).toBe(fnv(Buffer.from(text)));
    expect(f.data[f.data.length - 1].progress).toBe(100);
    expect(f.data.slice(0, -1).every((d) => d.progress < 100)).toBe(true);
  });

  it('skips interim 1xx responses', async () => {
    for (const p of ['interim', 'interim-split']) {
      const f = await fetch({ url: `${rawUrl}/${p}` });
      expect(f.status).toBe('200 text/plain');
      expect(f.body).toBe('ok');
      expect(f.result).toBe(0);
    }
  });

  it('does not follow a redirect: the 302 and its body reach the module', async () => {
    const f = await fetch({ url: `${plainUrl}/redirect` });
    expect(f.status).toBe('302 text/plain');
    expect(f.body).toBe('moved');
    expect(f.result).toBe(0);
  });

  it('passes error statuses through as responses, not failures', async () => {
    const f = await fetch({ url: `${plainUrl}/status?code=503` });
    expect(f.status).toBe('503 text/plain');
    expect(f.body).toBe('status 503');
    expect(f.result).toBe(0);
  });

  it('answers a conditional GET with 304 and no body (etag and ims)', async () => {
    const fresh = await fetch({ url: `${plainUrl}/etag` });
    expect(fresh.status).toBe('200 text/plain');
    const cached = await fetch({ url: `${plainUrl}/etag`, etag: '"v1"' });
    expect(cached.status).toBe('304 -');
    expect(cached.data).toEqual([{ size: 0, progress: 100, state: 3 }]);
    expect(cached.result).toBe(0);

    const old = await fetch({ url: `${plainUrl}/ims`, ims: Date.UTC(2019, 0, 1) / 1000 });
    expect(old.status).toBe('200 text/plain');
    const notModified = await fetch({ url: `${plainUrl}/ims`, ims: Date.UTC(2021, 0, 1) / 1000 });
    expect(notModified.status).toBe('304 -');
    expect(notModified.result).toBe(0);
  });

  it('reports an empty 204 with one progress-100 call of size 0', async () => {
    const f = await fetch({ url: `${plainUrl}/nocontent` });
    expect(f.status).toBe('204 -');
    expect(f.data).toEqual([{ size: 0, progress: 100, state: 3 }]);
    expect(f.result).toBe(0);
  });

  it('works with any callback left NULL', async () => {
    const noStatus = await fetch({ url: `${plainUrl}/text`, no_status: 1 });
    expect(noStatus.status).toBeUndefined();
    expect(noStatus.result).toBe(0);
    const noData = await fetch({ url: `${plainUrl}/text`, no_data: 1 });
    expect(noData.data).toEqual([]);
    expect(noData.result).toBe(0);
    const tag = `noclose${++seq}`;
    o.core.submit('tester', msg('fetch', JSON.stringify({ url: `${plainUrl}/text`, no_close: 1, tag })));
    await until(() => o.lines().some((l) => l.startsWith(`${tag} data `) && l.includes('progress 100')));
  });
});

/** The core's own lines (module null): where the HTTP client reports failures. */
function coreLines(): string[] {
  o.core.drain();
  return o.logs.filter((l) => l.module === null).map((l) => l.text);
}

describe('refusals', () => {
  it.each([
    ['an unsupported scheme', 'ftp://127.0.0.1/file'],
    ['no scheme', '127.0.0.1/file'],
    ['no host', 'http:///path'],
    ['a bad port', 'http://127.0.0.1:99999/'],
    ['a space', 'http://127.0.0.1/a b'],
  ])('returns -1 at once and calls nothing for %s, and the log says why', async (_what, url) => {
    const before = coreLines().length;
    const f = await fetch({ url });
    expect(f.lines).toEqual(['call -1']);
    await new Promise((r) => setTimeout(r, 100));
    expect(parse(f.tag, o.lines(), 0).lines).toEqual(['call -1']);
    expect(coreLines().slice(before)).toEqual([expect.stringMatching(/^http: request refused: the URL /)]);
  });

  it('returns -1 for header values that would inject lines', async () => {
    expect((await fetch({ url: `${plainUrl}/echo`, cookie: 'a=1\r\nX-Evil: 1' })).lines).toEqual(['call -1']);
    expect((await fetch({ url: `${plainUrl}/echo`, extra_header: 'no colon here' })).lines).toEqual(['call -1']);
  });

  it('returns -1 for a NULL url', async () => {
    expect((await fetch({})).lines).toEqual(['call -1']);
  });
});

describe('failures end in a negative progress and close -1', () => {
  it.each(Object.keys(rawScripts).filter((k) => !['until-close', 'http10-until-close', 'interim', 'interim-split', 'never-answers', 'slow-body', 'trickle'].includes(k)))(
    'a server that sends %s',
    async (name) => {
      const f = await fetch({ url: `${rawUrl}/${name}`, total_timeout: 10 });
      expectFailure(f);
      expect(f.ms).toBeLessThan(5000);
      // The operator's side: the server log (a core line) names the URL and the reason.
      expect(coreLines()).toContainEqual(expect.stringMatching(new RegExp(`^http: GET ${rawUrl}/${name.replace(/[?^$]/g, '\\$&')}: \\S`)));
    },
  );

  it('a refused connection', async () => {
    const s = net.createServer();
    const port = await listen(s);
    await new Promise((r) => s.close(r));
    const f = await fetch({ url: `http://127.0.0.1:${port}/` });
    expectFailure(f);
    expect(f.lines).toContain('fail progress -1 state 0');
  });

  it('a name that does not resolve', async () => {
    const f = await fetch({ url: 'http://no-such-host.invalid/', conn_timeout: 5 });
    expectFailure(f);
  });

  it('every timeout, each after its own limit', async () => {
    // Connect covers DNS, TCP and the TLS handshake: a TCP server that never
    // answers the ClientHello stalls the connect phase.
    const [connect, header, body, total] = await Promise.all([
      fetch({ url: `https://127.0.0.1:${rawPort}/never-answers`, conn_timeout: 1, total_timeout: 20 }),
      fetch({ url: `${rawUrl}/never-answers`, header_timeout: 1, total_timeout: 20 }),
      fetch({ url: `${rawUrl}/slow-body`, body_timeout: 1, total_timeout: 20 }),
      fetch({ url: `${rawUrl}/trickle`, total_timeout: 2 }),
    ]);
    for (const f of [connect, header, body, total]) expectFailure(f);
    expect(connect.lines).toContain('fail progress -1 state 0');
    expect(header.lines).toContain('fail progress -1 state 2');
    expect(body.lines).toContain('fail progress -1 state 3');
    expect(body.status).toBe('200 text/plain');
    expect(total.data.length).toBeGreaterThan(3);  // it was making progress, just too slowly
    for (const f of [connect, header, body]) {
      expect(f.ms).toBeGreaterThanOrEqual(900);
      expect(f.ms).toBeLessThan(4000);
    }
    expect(total.ms).toBeGreaterThanOrEqual(1900);
    expect(total.ms).toBeLessThan(5000);
  });
});

describe('a module written in mesibo\'s style: frees its context in on_data on failure, only logs in on_close', () => {
  /** Asks test/modules/mesibohttp.c for `url`; resolves with its lines for this request once the last one came. */
  async function ask(desc: Record<string, unknown>): Promise<string[]> {
    const tag = `m${++seq}`;
    o.core.submit('tester', msg('ask', JSON.stringify({ ...desc, tag })));
    const mine = () => o.lines('mesibohttp').filter((l) => l.startsWith(`${tag} `)).map((l) => l.slice(tag.length + 1));
    await until(() => mine().some((l) => /^(error in http callback|answer|refused)/.test(l)), 40_000);
    // Give any call that (wrongly) comes after the last one a turn to show.
    await new Promise((r) => setTimeout(r, 50));
    expect(o.lines('mesibohttp').filter((l) => l.includes('use after free'))).toEqual([]);
    return mine();
  }

  /** on_close(FAIL) logged, then on_data(progress < 0) freed the context, and nothing came after it. */
  function expectMesiboFailure(lines: string[], state: number) {
    expect(lines.filter((l) => !l.startsWith('status '))).toEqual(['invalid http response', `error in http callback -1 ${state}`]);
  }

  it('a refused connection', async () => {
    const s = net.createServer();
    const port = await listen(s);
    await new Promise((r) => s.close(r));
    expectMesiboFailure(await ask({ url: `http://127.0.0.1:${port}/` }), 0);
  });

  it('a name that does not resolve', async () => {
    expectMesiboFailure(await ask({ url: 'http://no-such-host.invalid/', conn_timeout: 5 }), 0);
  });

  it('a TLS certificate that does not verify, and a server that does not speak TLS', async () => {
    expectMesiboFailure(await ask({ url: `https://localhost:${portOf(untrustedServer)}/text` }), 0);
    expectMesiboFailure(await ask({ url: `https://127.0.0.1:${portOf(plain)}/text` }), 0);
  });

  it('each timeout: connect (a TLS handshake that never ends), header and body', async () => {
    const [connect, header, body] = await Promise.all([
      ask({ url: `https://127.0.0.1:${rawPort}/never-answers`, conn_timeout: 1 }),
      ask({ url: `${rawUrl}/never-answers`, header_timeout: 1 }),
      ask({ url: `${rawUrl}/slow-body`, body_timeout: 1 }),
    ]);
    expectMesiboFailure(connect, 0);
    expectMesiboFailure(header, 2);
    expect(body[0]).toBe('status 200');
    expectMesiboFailure(body, 3);
  });

  it('a malformed response', async () => {
    expectMesiboFailure(await ask({ url: `${rawUrl}/bad-status-line` }), 2);
  });

  it('a connection reset in the middle of the body, after on_status and some data', async () => {
    const lines = await ask({ url: `${rawUrl}/reset-mid-body` });
    expect(lines[0]).toBe('status 200');
    expectMesiboFailure(lines, 3);
  });

  it('three refused requests at once, as in the crash report', async () => {
    const s = net.createServer();
    const port = await listen(s);
    await new Promise((r) => s.close(r));
    const all = await Promise.all([1, 2, 3].map(() => ask({ url: `http://127.0.0.1:${port}/` })));
    for (const lines of all) expectMesiboFailure(lines, 0);
  });

  it('a success: on_close(OK) is the last call, with the whole body', async () => {
    const lines = await ask({ url: `${plainUrl}/text` });
    expect(lines).toEqual(['status 200', 'answer 28 hello from switchboard tests']);
  });
});

describe('TLS', () => {
  it('GETs from a server whose certificate chains to http_ca_file, with SNI and the host name checked', async () => {
    let sni: string | undefined;
    const onSecure = (s: import('node:tls').TLSSocket) => (sni = (s as unknown as { servername?: string }).servername);
    tlsServer.once('secureConnection', onSecure);
    const f = await fetch({ url: `https://localhost:${tlsPort}/text` });
    expect(f.status).toBe('200 text/plain; charset=utf-8');
    expect(f.body).toBe('hello from switchboard tests');
    expect(f.result).toBe(0);
    expect(sni).toBe('localhost');
    const g = await fetch({ url: `https://localhost:${tlsPort}/gzip`, encoding: 'gzip' });
    expect(g.hash).toBe(fnv(Buffer.from(text)));
    const p = JSON.parse((await fetch({ url: `https://u:p@localhost:${tlsPort}/echo`, post: 'over tls' })).body!);
    expect(p).toMatchObject({ method: 'POST', body: 'over tls' });
    expect(p.headers.authorization).toBe(`Basic ${Buffer.from('u:p').toString('base64')}`);
  });

  it('refuses a server whose certificate does not chain to a trusted CA', async () => {
    expectFailure(await fetch({ url: `https://localhost:${portOf(untrustedServer)}/text` }));
  });

  it('refuses a certificate for another host name, and an IP address the certificate does not name', async () => {
    expectFailure(await fetch({ url: `https://localhost:${portOf(wrongNameServer)}/text` }));
    expectFailure(await fetch({ url: `https://127.0.0.1:${tlsPort}/text` }));
  });

  it('fails on a server that does not speak TLS, and on one that resets the handshake', async () => {
    expectFailure(await fetch({ url: `https://127.0.0.1:${portOf(plain)}/text` }));
    const resetter = net.createServer((s) => s.once('data', () => s.resetAndDestroy()));
    const port = await listen(resetter);
    const f = await fetch({ url: `https://localhost:${port}/text` });
    expectFailure(f);
    expect(f.ms).toBeLessThan(5000);
    await new Promise((r) => resetter.close(r));
  });

  it('refuses to open a core whose http_ca_file cannot be read', () => {
    expect(() => open(dir, 'http_ca_file = /nonexistent/ca.pem\n')).toThrow(expect.objectContaining({ code: 'E_CONFIG_BAD_VALUE' }));
  });
});

describe('connections', () => {
  it('reuses a keep-alive connection for the next request to the same host', async () => {
    // A fresh pool entry: connect by name rather than by address.
    const base = `http://localhost:${portOf(plain)}`;
    const before = plainConnections;
    for (let i = 0; i < 5; i++) expect((await fetch({ url: `${base}/text` })).result).toBe(0);
    expect((await fetch({ url: `${base}/echo`, post: 'x' })).result).toBe(0);
    expect(plainConnections - before).toBe(1);

    const tlsBefore = tlsConnections;
    for (let i = 0; i < 3; i++) expect((await fetch({ url: `https://localhost:${tlsPort}/text` })).result).toBe(0);
    expect(tlsConnections - tlsBefore).toBeLessThanOrEqual(1);
  });

  it('opens a new connection when the server closed the idle one', async () => {
    const base = `http://localhost:${portOf(plain)}`;
    expect((await fetch({ url: `${base}/text` })).result).toBe(0);
    plain.closeIdleConnections();
    await new Promise((r) => setTimeout(r, 50));
    const before = plainConnections;
    expect((await fetch({ url: `${base}/text` })).result).toBe(0);
    expect(plainConnections - before).toBe(1);
  });

  it('retries a GET once on a fresh connection when the reused one was dropped unanswered; never a POST', async () => {
    const before = rawConnections['drop-second'] ?? 0;
    expect((await fetch({ url: `${rawUrl}/drop-second` })).body).toBe('ok');
    const again = await fetch({ url: `${rawUrl}/drop-second` });
    expect(again.result).toBe(0);
    expect(again.body).toBe('ok');
    expect(rawConnections['drop-second'] - before).toBe(2);
    expectFailure(await fetch({ url: `${rawUrl}/drop-second`, post: 'not twice' }));
  });

  it('runs 1,000 requests at once', async () => {
    const before = plainConnections;
    const tag = `many${++seq}`;
    o.core.submit('tester', msg('fetch', JSON.stringify({ url: `${plainUrl}/text`, count: 1000, quiet: 1, tag })));
    const closes = () => o.lines().filter((l) => l.startsWith(`${tag}.`) && l.includes(' close '));
    await until(() => closes().length === 1000, 60_000);
    expect(closes().every((l) => / close 0 bytes 28 /.test(l))).toBe(true);
    expect(o.lines().filter((l) => l.startsWith(`${tag}.`) && l.includes(' error '))).toEqual([]);
    expect(plainConnections - before).toBeLessThanOrEqual(128);
  });
});

describe('threads and memory', () => {
  it('takes requests from a module thread; the callbacks still come on the loop', async () => {
    const f = await fetch({ url: `${plainUrl}/text`, from_thread: 1 });
    expect(f.lines).toContain('call 0');
    expect(f.status).toBe('200 text/plain; charset=utf-8');
    expect(f.result).toBe(0);
  });

  it('copies everything: the request and its strings may be freed right after the call', async () => {
    const fields = {
      post: 'body that is freed',
      content_type: 'text/plain',
      extra_header: 'X-Freed: yes',
      user_agent: 'ua',
      referrer: 'https://r.example/',
      origin: 'https://o.example',
      cookie: 'c=1',
      encoding: 'identity',
      cache_control: 'no-store',
      accept: 'text/plain',
      etag: '"e"',
    };
    for (const from_thread of [0, 1]) {
      const f = await fetch({ url: `http://user:pw@127.0.0.1:${portOf(plain)}/echo`, scribble: 1, from_thread, ...fields });
      expect(f.result).toBe(0);
      const e = JSON.parse(f.body!);
      expect(e.body).toBe('body that is freed');
      expect(e.headers).toMatchObject({ 'x-freed': 'yes', cookie: 'c=1', 'user-agent': 'ua', 'if-none-match': '"e"' });
      expect(e.headers.authorization).toBe(`Basic ${Buffer.from('user:pw').toString('base64')}`);
    }
  });

  it('threads may start many requests at once', async () => {
    const tag = `threads${++seq}`;
    o.core.submit('tester', msg('fetch', JSON.stringify({ url: `${plainUrl}/text`, from_thread: 1, count: 50, quiet: 1, scribble: 1, tag })));
    const closes = () => o.lines().filter((l) => l.startsWith(`${tag}.`) && l.includes(' close '));
    await until(() => closes().length === 50);
    expect(closes().every((l) => / close 0 bytes 28 /.test(l))).toBe(true);
  });
});

describe('module unloading', () => {
  it('keeps a module loaded until its requests end, even when its core closes first', async () => {
    // Its own copy of the library, so that closing this core really unloads it.
    const copy = compileModule({ name: 'httpmod', source: 'test/modules/httpmod.c', outDir: tempDir('sb-httpmod-copy-') });
    const other = open(copy, `http_ca_file = ${certs.caFile}\nmodule httpmod\n`);
    other.core.submit('tester', msg('fetch', JSON.stringify({ url: `${rawUrl}/never-answers`, header_timeout: 1, tag: 'orphan' })));
    other.core.close();
    // The request times out after the library was closed by the loader; its
    // callbacks still run, in a library that is still mapped.
    await new Promise((r) => setTimeout(r, 1500));
    expect((await fetch({ url: `${plainUrl}/text` })).result).toBe(0);
    // The orphaned module's lines reach the open core's log, not stderr.
    const orphan = o.logs.filter((l) => l.module === null && l.text.startsWith('[module ?] orphan')).map((l) => l.text);
    expect(orphan).toEqual([expect.stringMatching(/^\[module \?\] orphan close -\d+/), expect.stringMatching(/^\[module \?\] orphan fail progress -\d+/)]);
  });
});
