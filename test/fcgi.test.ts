// mesibo_util_fcgi against FastCGI responders written here over `net` (well
// behaved, broken in the ways real ones break, silent), and against a real
// php-fpm when one is installed. The module driving it is
// test/modules/fcgimod.c: a message to "fcgi" becomes a request, and the
// stdout (or "error <code>: <text>") comes back to the sender.
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { compileModule, msg, open, root, tempDir, until, type Opened } from './helpers';

// ---------------------------------------------------------------------------
// A FastCGI responder
// ---------------------------------------------------------------------------

const T = { BEGIN_REQUEST: 1, END_REQUEST: 3, PARAMS: 4, STDIN: 5, STDOUT: 6, STDERR: 7 } as const;

function record(type: number, content: Buffer | string = Buffer.alloc(0), { id = 1, version = 1 } = {}): Buffer {
  const body = Buffer.from(content);
  const h = Buffer.from([version, type, id >> 8, id & 0xff, body.length >> 8, body.length & 0xff, 0, 0]);
  return Buffer.concat([h, body]);
}

function endRequest(appStatus = 0, protocolStatus = 0): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt32BE(appStatus, 0);
  b[4] = protocolStatus;
  return record(T.END_REQUEST, b);
}

function decodePairs(buf: Buffer): Record<string, string> {
  const out: Record<string, string> = {};
  let p = 0;
  const len = () => {
    if (buf[p] < 128) return buf[p++];
    const n = buf.readUInt32BE(p) & 0x7fffffff;
    p += 4;
    return n;
  };
  while (p < buf.length) {
    const nl = len();
    const vl = len();
    const name = buf.subarray(p, p + nl).toString();
    out[name] = buf.subarray(p + nl, p + nl + vl).toString();
    p += nl + vl;
  }
  return out;
}

interface FcgiRequest {
  role: number;
  keepConn: boolean;
  params: Record<string, string>;
  stdin: Buffer;
  /** Content length of every STDIN record, the closing empty one included. */
  stdinRecords: number[];
  paramRecords: number;
}

type Handler = (req: FcgiRequest, sock: net.Socket) => void;

/** Replies with the request as JSON on stdout (in two records), one stderr
 * line, and FCGI_END_REQUEST; closes unless the client asked to keep it. */
const echo: Handler = (req, sock) => {
  const json = JSON.stringify({ params: req.params, stdin: req.stdin.toString(), keepConn: req.keepConn });
  const out = `Content-Type: application/json\r\n\r\n${json}`;
  sock.write(record(T.STDOUT, out.slice(0, 20)));
  sock.write(record(T.STDOUT, out.slice(20)));
  sock.write(record(T.STDOUT)); // end of stdout
  sock.write(record(T.STDERR, 'PHP Notice: first line\nsecond line\n'));
  sock.write(endRequest());
  if (!req.keepConn) sock.end();
};

interface Responder {
  port: number;
  connections: number;
  requests: FcgiRequest[];
  closed: number;
  close(): Promise<void>;
}

const responders: Responder[] = [];

async function responder(handler: Handler = echo): Promise<Responder> {
  const sockets = new Set<net.Socket>();
  const r: Responder = { port: 0, connections: 0, requests: [], closed: 0, close: async () => {} };
  const server = net.createServer((sock) => {
    r.connections++;
    sockets.add(sock);
    sock.on('close', () => {
      r.closed++;
      sockets.delete(sock);
    });
    sock.on('error', () => {});
    let buf = Buffer.alloc(0);
    let req: FcgiRequest | null = null;
    let params = Buffer.alloc(0);
    sock.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 8) {
        const len = buf.readUInt16BE(4);
        const total = 8 + len + buf[6];
        if (buf.length < total) break;
        const type = buf[1];
        const content = buf.subarray(8, 8 + len);
        buf = buf.subarray(total);
        if (type === T.BEGIN_REQUEST) {
          req = { role: content.readUInt16BE(0), keepConn: (content[2] & 1) === 1, params: {}, stdin: Buffer.alloc(0), stdinRecords: [], paramRecords: 0 };
          params = Buffer.alloc(0);
        } else if (type === T.PARAMS && req) {
          req.paramRecords++;
          params = Buffer.concat([params, content]);
          if (len === 0) req.params = decodePairs(params);
        } else if (type === T.STDIN && req) {
          req.stdinRecords.push(len);
          req.stdin = Buffer.concat([req.stdin, content]);
          if (len === 0) {
            r.requests.push(req);
            handler(req, sock);
            req = null;
          }
        }
      }
    });
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  r.port = (server.address() as net.AddressInfo).port;
  r.close = () =>
    new Promise<void>((ok) => {
      for (const s of sockets) s.destroy();
      server.close(() => ok());
    });
  responders.push(r);
  return r;
}

// ---------------------------------------------------------------------------
// The module side
// ---------------------------------------------------------------------------

const fcgimod = () => compileModule({ name: 'fcgimod', source: 'test/modules/fcgimod.c' });
const opened: Opened[] = [];

function start(items: string): Opened {
  const o = open(fcgimod(), `module fcgimod {\n${items}\n}\n`);
  opened.push(o);
  return o;
}

afterEach(async () => {
  while (opened.length) opened.pop()!.core.close();
  while (responders.length) await responders.pop()!.close();
  delete process.env.SWITCHBOARD_FCGI_TIMEOUT_MS;
});

/** Sends `text` to the module as message `id` from alice and waits for its reply. */
async function ask(o: Opened, text: string, id = 1): Promise<string> {
  o.core.submit('alice', msg('fcgi', text, { id }));
  await until(() => o.sent.some((m) => m.refid === id));
  return o.sent.find((m) => m.refid === id)!.payload.toString();
}

function body(reply: string): { params: Record<string, string>; stdin: string; keepConn: boolean } {
  const [head, json] = reply.split('\r\n\r\n');
  expect(head).toBe('Content-Type: application/json');
  return JSON.parse(json);
}

const ALL_FIELDS = ['USER', 'SCRIPT_FILENAME', 'QUERY_STRING', 'CONTENT_TYPE', 'SCRIPT_NAME', 'REQUEST_URI', 'DOCUMENT_URI', 'DOCUMENT_ROOT', 'SERVER_PROTOCOL', 'REQUEST_SCHEME', 'REMOTE_ADDR', 'REMOTE_PORT', 'SERVER_ADDR', 'SERVER_PORT', 'SERVER_NAME', 'HTTP_HOST', 'HTTP_CONNECTION', 'HTTP_CACHE_CONTROL', 'HTTP_UPGRADE_INSECURE_REQUESTS', 'HTTP_USER_AGENT', 'HTTP_ACCEPT', 'HTTP_ACCEPT_ENCODING', 'HTTP_ACCEPT_LANGUAGE'];

describe('a request', () => {
  it('sends every set field as a param, the body as stdin, role RESPONDER; the whole stdout comes back in one call, and no empty one after it', async () => {
    const r = await responder();
    const fields = ALL_FIELDS.map((f) => ` ${f} = v-${f.toLowerCase()}`).join('\n');
    const o = start(` port = ${r.port}\n${fields}`);
    const reply = await ask(o, 'hello "stdin"');
    const got = body(reply);
    const expected: Record<string, string> = Object.fromEntries(ALL_FIELDS.map((f) => [f, `v-${f.toLowerCase()}`]));
    // Fields the module set are sent as they are; the rest is what has no field.
    expect(got.params).toEqual({ ...expected, SERVER_SOFTWARE: 'switchboard/0.1', GATEWAY_INTERFACE: 'CGI/1.1', REQUEST_METHOD: 'POST', CONTENT_LENGTH: '13', REDIRECT_STATUS: '200' });
    expect(got.stdin).toBe('hello "stdin"');
    expect(got.keepConn).toBe(false);
    expect(r.requests[0].role).toBe(1);
    // The responder wrote stdout in two records: the module still got one call, with all of it.
    await new Promise((ok) => setTimeout(ok, 50));
    expect(o.lines('fcgimod')).toEqual([`request 1: done, ${Buffer.byteLength(reply)} bytes`]);
    expect(o.sent).toHaveLength(1);
  });

  it('derives the CGI variables a module leaves out; without a body it is a GET with no CONTENT_LENGTH and an empty stdin', async () => {
    const r = await responder();
    const o = start(` port = ${r.port}\n SCRIPT_FILENAME = /srv/x.php`);
    const got = body(await ask(o, ''));
    expect(got.params).toEqual({
      SCRIPT_FILENAME: '/srv/x.php',
      SCRIPT_NAME: '/x.php',
      DOCUMENT_ROOT: '/srv',
      QUERY_STRING: '',
      REQUEST_URI: '/x.php',
      DOCUMENT_URI: '/x.php',
      SERVER_PROTOCOL: 'HTTP/1.1',
      REQUEST_SCHEME: 'http',
      REMOTE_ADDR: '127.0.0.1',
      SERVER_NAME: 'localhost',
      SERVER_SOFTWARE: 'switchboard/0.1',
      GATEWAY_INTERFACE: 'CGI/1.1',
      REQUEST_METHOD: 'GET',
      REDIRECT_STATUS: '200',
    });
    expect(r.requests[0].stdinRecords).toEqual([0]);
  });

  it('derives SCRIPT_FILENAME from DOCUMENT_ROOT and SCRIPT_NAME (as mesibo\'s FastCGI module sets them), with one slash between', async () => {
    const r = await responder();
    const o = start(` port = ${r.port}\n DOCUMENT_ROOT = /usr/share/nginx/html/\n SCRIPT_NAME = test.php\n QUERY_STRING = a=1`);
    const got = body(await ask(o, 'hi'));
    expect(got.params).toMatchObject({
      DOCUMENT_ROOT: '/usr/share/nginx/html/',
      SCRIPT_NAME: 'test.php',
      SCRIPT_FILENAME: '/usr/share/nginx/html/test.php',
      REQUEST_URI: '/test.php?a=1',
      DOCUMENT_URI: '/test.php',
      CONTENT_TYPE: 'application/octet-stream',
      CONTENT_LENGTH: '2',
      REQUEST_METHOD: 'POST',
    });
    const o2 = start(` port = ${r.port}\n DOCUMENT_ROOT = /srv\n SCRIPT_NAME = /bot/a.php`);
    expect(body(await ask(o2, '', 2)).params).toMatchObject({ SCRIPT_FILENAME: '/srv/bot/a.php', REQUEST_URI: '/bot/a.php', QUERY_STRING: '' });
  });

  it('splits a body into stdin records of at most 65535 bytes, then an empty one', async () => {
    const big = Array.from({ length: 60_000 }, (_, i) => String.fromCharCode(97 + (i % 26))).join('');
    const r = await responder((req, sock) => {
      const digest = createHash('sha256').update(req.stdin).digest('hex');
      sock.write(record(T.STDOUT, `${req.stdin.length} ${digest} ${req.params.CONTENT_LENGTH}`));
      sock.write(endRequest());
      sock.end();
    });
    // The body is the message: 60,000 bytes, under the server's 64 KiB limit,
    // so a longer param pushes the params over one record as well.
    const o = start(` port = ${r.port}\n QUERY_STRING = ${'q'.repeat(70_000)}`);
    const reply = await ask(o, big);
    expect(reply).toBe(`60000 ${createHash('sha256').update(big).digest('hex')} 60000`);
    expect(r.requests[0].params.QUERY_STRING).toHaveLength(70_000);
    expect(r.requests[0].paramRecords).toBeGreaterThan(2);
    expect(r.requests[0].stdinRecords).toEqual([60000, 0]);
  });

  it('can be started from a thread of the module; callbacks still arrive', async () => {
    const r = await responder();
    const o = start(` port = ${r.port}\n thread = 1`);
    for (let id = 1; id <= 5; id++) o.core.submit('alice', msg('fcgi', `t${id}`, { id }));
    await until(() => o.sent.length === 5);
    for (let id = 1; id <= 5; id++) expect(body(o.sent.find((m) => m.refid === id)!.payload.toString()).stdin).toBe(`t${id}`);
  });

  it('resolves a host name and tries each address in turn', async () => {
    const r = await responder();
    const o = start(` host = localhost\n port = ${r.port}`);
    expect(body(await ask(o, 'by name')).stdin).toBe('by name');
  });

  it('still ends cleanly when the module was unloaded while its request was in flight', async () => {
    let answer: (() => void) | null = null;
    const r = await responder((req, sock) => {
      if (answer) echo(req, sock);
      else answer = () => echo(req, sock);
    });
    const o = start(` port = ${r.port}`);
    o.core.submit('alice', msg('fcgi', 'late'));
    await until(() => answer !== null);
    o.core.close(); // on_cleanup, then dlclose: the library stays mapped for the callback
    // The orphaned module's lines, and the client's, go to the open core's log.
    const again = start(` port = ${r.port}`);
    answer!();
    await until(() => r.closed === 1);
    await until(() => (again.core.drain(), again.logs.some((l) => l.text.includes('request 1: done'))));
    // Whose line it is depends on whether the new instance took the old
    // one's slot address ("[module ?]" when it did not): only the text is sure.
    const texts = again.logs.map((l) => l.text.replace(/^\[module \?\] /, '').replace(/:\d+:/, ':PORT:'));
    expect(texts).toEqual(expect.arrayContaining([
      'fcgi: 127.0.0.1:PORT: stderr: PHP Notice: first line',
      'fcgi: 127.0.0.1:PORT: stderr: second line',
      expect.stringMatching(/^request 1: done, \d+ bytes/),
    ]));
    // This process is still here, and a new instance works.
    expect(body(await ask(again, 'next', 2)).stdin).toBe('next');
  });

  it('is refused at once for a port outside 1..65535', async () => {
    const o = start(' port = 0');
    expect(await ask(o, 'x')).toBe('refused');
  });
});

describe('keepalive', () => {
  it('sets FCGI_KEEP_CONN and sends every request over one connection', async () => {
    const r = await responder();
    const o = start(` port = ${r.port}\n keepalive = 1`);
    for (let id = 1; id <= 4; id++) expect(body(await ask(o, `n${id}`, id))).toMatchObject({ stdin: `n${id}`, keepConn: true });
    expect(r.connections).toBe(1);
    expect(r.requests).toHaveLength(4);
  });

  it('without it, opens one connection per request', async () => {
    const r = await responder();
    const o = start(` port = ${r.port}\n keepalive = 0`);
    for (let id = 1; id <= 3; id++) await ask(o, `n${id}`, id);
    expect(r.connections).toBe(3);
  });

  it('opens more connections for requests in flight together, then reuses them', async () => {
    const r = await responder((req, sock) => setTimeout(() => echo(req, sock), 30));
    const o = start(` port = ${r.port}\n keepalive = 1`);
    for (let id = 1; id <= 3; id++) o.core.submit('alice', msg('fcgi', `p${id}`, { id }));
    await until(() => o.sent.length === 3);
    for (let id = 4; id <= 6; id++) o.core.submit('alice', msg('fcgi', `p${id}`, { id }));
    await until(() => o.sent.length === 6);
    for (let id = 1; id <= 6; id++) expect(body(o.sent.find((m) => m.refid === id)!.payload.toString()).stdin).toBe(`p${id}`);
    expect(r.connections).toBe(3);
  });

  it('a kept connection the application closed is replaced without failing the request', async () => {
    // Answers, then closes although asked to keep the connection.
    const r = await responder((req, sock) => {
      echo(req, sock);
      sock.end();
    });
    const o = start(` port = ${r.port}\n keepalive = 1`);
    for (let id = 1; id <= 3; id++) expect(body(await ask(o, `k${id}`, id)).stdin).toBe(`k${id}`);
    expect(r.connections).toBe(3);
  });
});

describe('failures end in one call with MESIBO_RESULT_FAIL and a description naming the errno', () => {
  async function failure(handler: Handler): Promise<string> {
    const r = await responder(handler);
    const o = start(` port = ${r.port}`);
    const reply = await ask(o, 'x');
    await new Promise((ok) => setTimeout(ok, 30));
    expect(o.lines('fcgimod').filter((l) => l.includes('failed') || l.includes('done'))).toHaveLength(1);
    return reply;
  }

  it('connection refused', async () => {
    const r = await responder();
    const port = r.port;
    await responders.pop()!.close();
    const o = start(` port = ${port}`);
    expect(await ask(o, 'x')).toBe(`error -1: 127.0.0.1:${port}: cannot connect: connection refused (ECONNREFUSED)`);
  });

  it('a record with a bad version byte', async () => {
    const reply = await failure((_req, sock) => sock.write(record(T.STDOUT, 'hi', { version: 2 })));
    expect(reply).toMatch(/^error -1: 127\.0\.0\.1:\d+: malformed response: record version 2, expected 1 \(EPROTO\)$/);
  });

  it('a record for another request id', async () => {
    const reply = await failure((_req, sock) => sock.write(record(T.STDOUT, 'hi', { id: 7 })));
    expect(reply).toMatch(/^error -1: .*record for request 7, expected 1 \(EPROTO\)$/);
  });

  it('a truncated record, then the connection closes', async () => {
    const reply = await failure((_req, sock) => {
      const full = record(T.STDOUT, 'x'.repeat(100));
      sock.end(full.subarray(0, 30));
    });
    expect(reply).toMatch(/^error -1: .*closed the connection before FCGI_END_REQUEST \(ECONNRESET\)$/);
  });

  it('stdout, then a reset instead of FCGI_END_REQUEST: only the failure reaches the module', async () => {
    const r = await responder((_req, sock) => {
      sock.write(record(T.STDOUT, 'partial'), () => setTimeout(() => sock.resetAndDestroy(), 20));
    });
    const o = start(` port = ${r.port}`);
    expect(await ask(o, 'x')).toMatch(/^error -1: .*\(ECONNRESET\)$/);
    expect(o.lines('fcgimod').filter((l) => l.includes('done'))).toEqual([]);
  });

  it('a response larger than 16 MiB', async () => {
    const reply = await failure((_req, sock) => {
      const chunk = record(T.STDOUT, Buffer.alloc(65535, 'x'));
      const write = (left: number) => {
        if (left === 0 || sock.destroyed) return;
        if (sock.write(chunk)) setImmediate(() => write(left - 1));
        else sock.once('drain', () => write(left - 1));
      };
      write(260);
    });
    expect(reply).toMatch(/^error -1: .*the response is larger than 16 MiB \(EMSGSIZE\)$/);
  });

  it('an application that refuses the role', async () => {
    const reply = await failure((_req, sock) => sock.write(endRequest(0, 3)));
    expect(reply).toMatch(/^error -1: .*refused the request \(protocol status 3\) \(EPROTO\)$/);
  });

  it('silence until the timeout (SWITCHBOARD_FCGI_TIMEOUT_MS, 30 s by default)', async () => {
    process.env.SWITCHBOARD_FCGI_TIMEOUT_MS = '300';
    const t0 = Date.now();
    const reply = await failure(() => {});
    expect(reply).toMatch(/^error -1: .*no complete response within 300 ms \(ETIMEDOUT\)$/);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(250);
  });
});

/**
 * The client writes to the process's stderr (fd 2), which only another
 * process can read: a child node opens a core with fcgimod on `port`, asks
 * once, and exits after the reply. Resolves with its exit code, stdout and
 * stderr.
 */
describe('what the operator sees', () => {
  // The client serves the whole process; its reports go to the log of the
  // open core (a server's log: core.warning events), not to stderr.
  it('a failure is a core line "fcgi: HOST:PORT: ...", with the errno by name', async () => {
    const r = await responder();
    const port = r.port;
    await responders.pop()!.close();
    const o = start(` port = ${port}`);
    expect(await ask(o, 'x')).toBe(`error -1: 127.0.0.1:${port}: cannot connect: connection refused (ECONNREFUSED)`);
    await until(() => (o.core.drain(), o.logs.some((l) => l.module === null && l.text.startsWith('fcgi:'))));
    expect(o.logs.filter((l) => l.module === null && l.text.startsWith('fcgi:')).map((l) => [l.level, l.text])).toEqual([
      [0, `fcgi: 127.0.0.1:${port}: cannot connect: connection refused (ECONNREFUSED)`],
    ]);
  });

  it('stderr records and a non-zero application status are logged as core lines "fcgi: HOST:PORT: ..."; the request still succeeds', async () => {
    const r = await responder((_req, sock) => {
      sock.write(record(T.STDOUT, 'Status: 500\r\n\r\nboom'));
      sock.write(record(T.STDERR, 'PHP Warning: one\nPHP Warning: '));
      sock.write(record(T.STDERR, 'two\r\nno newline at the end'));
      sock.write(endRequest(3));
      sock.end();
    });
    const o = start(` port = ${r.port}`);
    expect(await ask(o, 'x')).toBe('Status: 500\r\n\r\nboom');
    const port = r.port;
    await until(() => (o.core.drain(), o.logs.some((l) => l.text.includes('ended with status'))));
    expect(o.logs.filter((l) => l.module === null && l.text.startsWith('fcgi:')).map((l) => [l.level, l.text])).toEqual([
      [0, `fcgi: 127.0.0.1:${port}: stderr: PHP Warning: one`],
      [0, `fcgi: 127.0.0.1:${port}: stderr: PHP Warning: two`],
      [0, `fcgi: 127.0.0.1:${port}: stderr: no newline at the end`],
      [0, `fcgi: 127.0.0.1:${port}: the application ended with status 3`],
    ]);
  });
});

// ---------------------------------------------------------------------------
// A real php-fpm
// ---------------------------------------------------------------------------

function findPhpFpm(): string | null {
  for (const dir of (process.env.PATH ?? '').split(':').concat(['/usr/sbin', '/usr/local/sbin'])) {
    let names: string[] = [];
    try {
      names = fs.readdirSync(dir);
    } catch {
      continue;
    }
    const name = names.filter((n) => /^php-fpm[\d.]*$/.test(n)).sort().at(-1);
    if (name) return path.join(dir, name);
  }
  return null;
}
const phpFpm = findPhpFpm();
// CI installs php-fpm (.ci/run), so there a missing php-fpm fails the test
// instead of skipping it.
const hasPhpFpm = phpFpm !== null || process.env.CI === 'true';

describe('php-fpm', () => {
  let fpm: ChildProcess | null = null;
  afterEach(async () => {
    // SIGTERM: the master stops its workers before it exits (SIGKILL would
    // leave them running).
    const p = fpm;
    fpm = null;
    if (!p || p.exitCode !== null) return;
    const exited = new Promise((ok) => p.on('exit', ok));
    p.kill('SIGTERM');
    const forced = setTimeout(() => p.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(forced);
  });

  /** Starts php-fpm with a pool of 2 workers on a free port; resolves with the port once it accepts connections. */
  async function startFpm(dir: string): Promise<number> {
    const port = await new Promise<number>((ok) => {
      const s = net.createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as net.AddressInfo).port;
        s.close(() => ok(p));
      });
    });
    const root_ = process.getuid?.() === 0;
    fs.writeFileSync(
      path.join(dir, 'fpm.conf'),
      `[global]
error_log = ${dir}/fpm.log
pid = ${dir}/fpm.pid
daemonize = no
[bot]
listen = 127.0.0.1:${port}
${root_ ? 'user = root\ngroup = root\n' : ''}pm = static
pm.max_children = 2
`,
    );
    fpm = spawn(phpFpm!, ['--nodaemonize', '--fpm-config', path.join(dir, 'fpm.conf'), '-n', ...(root_ ? ['-R'] : [])], { stdio: 'ignore' });
    await until(
      () =>
        new Promise<boolean>((ok) => {
          const c = net.connect(port, '127.0.0.1', () => {
            c.destroy();
            ok(true);
          });
          c.on('error', () => ok(false));
        }),
      10_000,
    );
    return port;
  }

  it.runIf(hasPhpFpm)(
    "runs mesibo's FastCGI module as written: root and script from its block, SCRIPT_FILENAME derived, one reply per message, failures as MESIBO_RESULT_FAIL",
    async () => {
      const dir = tempDir('sb-fpm-');
      fs.writeFileSync(
        path.join(dir, 'test.php'),
        `<?php
header('Content-Type: text/plain');
$s = $_SERVER;
foreach (['SCRIPT_FILENAME', 'SCRIPT_NAME', 'DOCUMENT_ROOT', 'REQUEST_URI', 'REQUEST_METHOD', 'CONTENT_LENGTH', 'CONTENT_TYPE', 'QUERY_STRING', 'SERVER_PROTOCOL', 'GATEWAY_INTERFACE', 'SERVER_SOFTWARE', 'REMOTE_ADDR', 'USER'] as $k)
  echo $k . "=" . ($s[$k] ?? "(unset)") . "\n";
echo "body=" . file_get_contents('php://input');
`,
      );
      const port = await startFpm(dir);
      const modDir = compileModule({ name: 'mesibofcgi', source: 'test/modules/mesibofcgi.c' });
      const block = (p: number) => `module mesibofcgi {\n host = 127.0.0.1\n port = ${p}\n keepalive = 0\n root = ${dir}/\n script = test.php\n log = 0\n}\n`;
      const o = open(modDir, block(port));
      opened.push(o);
      // The block's script item is the module's own: the server started, and the module read it.
      expect(o.lines('mesibofcgi')).toContain(`configured root ${dir}/ script test.php`);
      for (let id = 1; id <= 3; id++) o.core.submit('alice', msg('php', `question ${id}`, { id }));
      await until(() => o.sent.length === 3);
      await new Promise((ok) => setTimeout(ok, 100));
      expect(o.sent).toHaveLength(3); // no empty message after each reply
      for (let id = 1; id <= 3; id++) {
        const reply = o.sent.find((m) => m.refid === id)!;
        expect(reply.to).toBe('alice');
        const [head, text] = reply.payload.toString().split('\r\n\r\n');
        expect(head).toMatch(/Content-type: text\/plain/i);
        const vars = Object.fromEntries(text.split('\n').filter((l) => l.includes('=')).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
        expect(vars).toEqual({
          SCRIPT_FILENAME: `${dir}/test.php`,
          SCRIPT_NAME: 'test.php',
          DOCUMENT_ROOT: `${dir}/`,
          REQUEST_URI: '/test.php',
          REQUEST_METHOD: 'POST',
          CONTENT_LENGTH: String(`question ${id}`.length),
          CONTENT_TYPE: 'application/octet-stream',
          QUERY_STRING: '',
          SERVER_PROTOCOL: 'HTTP/1.1',
          GATEWAY_INTERFACE: 'CGI/1.1',
          SERVER_SOFTWARE: 'switchboard/0.1',
          REMOTE_ADDR: '127.0.0.1',
          USER: 'alice',
          body: `question ${id}`,
        });
      }
      expect(o.lines('mesibofcgi').filter((l) => l.startsWith('reply '))).toHaveLength(3);

      // Nothing listens: the module sees MESIBO_RESULT_FAIL, logs, and sends the user nothing.
      const closed = await new Promise<number>((ok) => {
        const s = net.createServer().listen(0, '127.0.0.1', () => {
          const p = (s.address() as net.AddressInfo).port;
          s.close(() => ok(p));
        });
      });
      const down = open(modDir, block(closed));
      opened.push(down);
      down.core.submit('alice', msg('php', 'anyone?', { id: 9 }));
      await until(() => down.lines('mesibofcgi').includes('bad response to fcgi request'));
      await new Promise((ok) => setTimeout(ok, 50));
      expect(down.sent).toEqual([]);
    },
  );

  it.runIf(hasPhpFpm)(
    hasPhpFpm ? `runs a PHP script on a real php-fpm (${phpFpm}), over one kept connection` : 'runs a PHP script on a real php-fpm: SKIPPED, php-fpm is not installed (apt-get install php-fpm)',
    async () => {
      const dir = tempDir('sb-fpm-');
      fs.writeFileSync(
        path.join(dir, 'bot.php'),
        `<?php
header('Content-Type: text/plain');
$in = file_get_contents('php://input');
echo "method=" . $_SERVER['REQUEST_METHOD'] . " query=" . $_SERVER['QUERY_STRING'] . " pid=" . getmypid() . "\\n";
echo "answer=" . strtoupper($in) . "\\n";
error_log("bot.php answered");
`,
      );
      const port = await startFpm(dir);
      const o = start(` port = ${port}\n keepalive = 1\n SCRIPT_FILENAME = ${dir}/bot.php\n QUERY_STRING = lang=en\n CONTENT_TYPE = text/plain`);
      const first = await ask(o, 'hello php', 1);
      expect(first).toMatch(/\r\n\r\nmethod=POST query=lang=en pid=\d+\nanswer=HELLO PHP\n$/);
      expect(first).toMatch(/^(.*\r\n)*Content-type: text\/plain/i);
      const second = await ask(o, 'again', 2);
      expect(second).toMatch(/answer=AGAIN\n$/);
      // One kept connection: the same php-fpm worker answered both.
      expect(second.match(/pid=(\d+)/)![1]).toBe(first.match(/pid=(\d+)/)![1]);
      const missing = start(` port = ${port}\n SCRIPT_FILENAME = ${dir}/nope.php`);
      expect(await ask(missing, 'x', 3)).toMatch(/^Status: 404 Not Found\r\n/m);
    },
  );
});
