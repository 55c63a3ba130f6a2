// The server with TypeScript modules, the Botkit-style stages and bot users,
// end to end: the real server, real WebSocket clients (the SDK), a real
// SQLite file, a real HTTP server standing in for an OpenAI-compatible API.
import http from 'node:http';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { SwitchboardClient } from '../lib/client';
import { Server } from '../lib/index';
import { parseLogLine, root, tempDir, until } from './helpers';
import { apiCall, connectPeer, type Peer } from './server-helpers';

const APP = 'pipeline-token';
const samples = path.join(root, 'build', 'modules');
const running: Server[] = [];
const clients: SwitchboardClient[] = [];
const httpServers: http.Server[] = [];
const tokens = new Map<string, string>();

async function start(body = '', opts: { durable?: boolean; log?: string[] } = {}): Promise<Server> {
  const s = await Server.start({
    configText: `listen = 127.0.0.1:0\ndata_dir = ${tempDir()}\napp_token = ${APP}\nmodule_dir = ${samples}\ndurable = ${opts.durable === false ? 'off' : 'on'}\n${body}`,
    baseDir: tempDir(),
    log: (l) => opts.log?.push(l),
  });
  running.push(s);
  return s;
}

function api(s: Server, body: Record<string, unknown>): Promise<Record<string, unknown>> {
  return apiCall(s.port, APP, body);
}


async function connect(s: Server, address: string, device = ''): Promise<Peer> {
  // One token per user: a new one (usertoken) would revoke the first device's.
  const key = `${s.port} ${address}`;
  let token = tokens.get(key) ?? ((await api(s, { op: 'useradd', address })).token as string | undefined);
  if (!token) token = (await api(s, { op: 'usertoken', address })).token as string;
  tokens.set(key, token);
  return connectPeer(s.port, token, device, clients);
}

afterEach(async () => {
  while (clients.length) clients.pop()!.close();
  while (running.length) await running.pop()!.stop();
  while (httpServers.length) await new Promise((r) => httpServers.pop()!.close(r));
});

describe('TypeScript modules in the server', () => {
  it('an async module delays the message; "sent" comes after the decision and receipts keep the id', async () => {
    const s = await start();
    await s.use('slowcheck', {
      async onMessage(m) {
        await new Promise((r) => setTimeout(r, 80));
        m.text = `${m.text} ✓`;
      },
    });
    const alice = await connect(s, 'alice');
    const bob = await connect(s, 'bob');
    const t0 = Date.now();
    const sending = alice.c.send('bob', 'hello', { flags: 0x3 });
    expect(await sending.sent).toBe(1);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(70);
    await until(() => bob.got.length === 1);
    expect(bob.got[0]).toMatchObject({ id: sending.id, from: 'alice', text: 'hello ✓' });
    bob.c.markRead(bob.got[0]);
    await until(() => alice.statuses.filter((x) => x.id === sending.id).length === 3);
    expect(alice.statuses.filter((x) => x.id === sending.id).map((x) => x.status)).toEqual([1, 2, 3]);
  });

  it('loads a script module from the config file and keeps a conversation in order under async verdicts', async () => {
    const dir = tempDir();
    require('node:fs').writeFileSync(path.join(dir, 'jitter.js'), 'module.exports = { onMessage(m) { const n = Number(m.text); return new Promise(r => setTimeout(r, (n * 37) % 23)); } };');
    const s = await start(`module jitter {\n script = ${path.join(dir, 'jitter.js')}\n}\n`);
    const alice = await connect(s, 'alice');
    const bob = await connect(s, 'bob');
    for (let i = 0; i < 50; i++) alice.c.send('bob', String(i));
    await until(() => bob.got.length === 50);
    expect(bob.texts()).toEqual(Array.from({ length: 50 }, (_, i) => String(i)));
  });

  it('a module sees MOD_MESIBO_UFLAG_DESTONLINE (uflags 1) while the recipient has a connection here, and not once it has none', async () => {
    const s = await start();
    const seen: Record<string, number> = {};
    await s.use('watch', { onMessage: (m) => void (seen[m.text] = m.uflags) });
    await api(s, { op: 'useradd', address: 'carol' });
    const alice = await connect(s, 'alice');
    const bob = await connect(s, 'bob');
    await alice.c.send('bob', 'bob online').sent;
    await alice.c.send('carol', 'carol never here').sent;
    bob.c.close();
    await until(async () => !((await api(s, { op: 'online' })).online as string[]).includes('bob'));
    await alice.c.send('bob', 'bob gone').sent;
    expect(seen).toEqual({ 'bob online': 1, 'carol never here': 0, 'bob gone': 0 });
  });

  it('the backend API waits for a deferred decision before it answers', async () => {
    const s = await start();
    await s.use('veto', { onMessage: (m) => new Promise((r) => setTimeout(() => r(m.text.includes('no') ? 'consumed' : 'pass'), 30)) });
    await api(s, { op: 'useradd', address: 'alice' });
    await api(s, { op: 'useradd', address: 'bob' });
    expect(await api(s, { op: 'message', from: 'alice', to: 'bob', data: 'yes' })).toMatchObject({ ok: true, status: 1, verdict: 'pass' });
    expect(await api(s, { op: 'message', from: 'alice', to: 'bob', data: 'no' })).toMatchObject({ ok: true, verdict: 'consumed' });
    expect(s.store.countPending('bob')).toBe(1);
  });

  it('without script modules or middleware the addon makes no call into JavaScript per message', async () => {
    const s = await start('module filter {\n blocked_words = spam\n}\nmodule echo {\n address = echo\n}\n', { durable: false });
    const alice = await connect(s, 'alice');
    const bob = await connect(s, 'bob');
    alice.c.send('bob', 'warm up');
    await until(() => bob.got.length === 1);
    const before = s.core.counters().jsCalls;
    for (let i = 0; i < 300; i++) alice.c.send('bob', `m${i}`);
    await until(() => bob.got.length === 301);
    expect(s.core.counters().jsCalls).toBe(before);
  });
});

describe('middleware stages', () => {
  it('run in the documented order, each seeing what the one before left', async () => {
    const s = await start();
    const trace: string[] = [];
    s.middleware.ingest.use((m) => {
      trace.push(`ingest ${m.source} ${m.binary}`);
      // Raw bytes: a client that sends "data" in upper case, fixed up before decoding.
      m.frame = Buffer.from(m.frame.toString().replace('SHOUT', 'shout'));
    });
    s.middleware.normalize.use((m, next) => {
      trace.push(`normalize ${m.text}`);
      m.text = m.text.trim();
      next();
    });
    s.middleware.categorize.use(async (m) => {
      trace.push(`categorize ${m.category}`);
      if (m.text.startsWith('!')) m.category = 'command';
    });
    s.middleware.receive.use((m) => {
      trace.push(`receive ${m.category} ${m.text}`);
      m.text = `[${m.category}] ${m.text}`;
    });
    s.middleware.send.use((m) => void trace.push(`send ${m.recipient} ${m.category} ${m.text}`));
    s.middleware.format.use((m) => {
      trace.push(`format ${m.to} ${m.device}`);
      const f = JSON.parse(m.frame.toString());
      m.frame = Buffer.from(JSON.stringify({ ...f, via: 'format' }));
    });
    const alice = await connect(s, 'alice');
    const bob = await connect(s, 'bob', 'phone');
    const sending = alice.c.send('bob', '  !SHOUT  ');
    expect(await sending.sent).toBe(1);
    await until(() => bob.got.length === 1);
    expect(bob.got[0]).toMatchObject({ id: sending.id, text: '[command] !shout' });
    // (bob's delivered status, a client frame too, may be ingested after these.)
    expect(trace.slice(0, 6)).toEqual(['ingest client false', 'normalize   !shout  ', 'categorize direct', 'receive command !shout', 'send bob command [command] !shout', 'format bob phone']);
  });

  it('messages from the backend API go through ingest, normalize and categorize too', async () => {
    const s = await start();
    const seen: string[] = [];
    s.middleware.ingest.use((m) => void seen.push(`ingest ${m.source}`));
    s.middleware.normalize.use(async (m) => {
      seen.push(`normalize ${m.text}`);
      if (m.text === 'nope') m.drop();
      m.text = m.text.toUpperCase();
    });
    const bob = await connect(s, 'bob');
    await api(s, { op: 'useradd', address: 'alice' });
    expect(await api(s, { op: 'message', from: 'alice', to: 'bob', data: 'hi', id: 5 })).toMatchObject({ ok: true, id: 5, verdict: 'pass' });
    expect(await api(s, { op: 'message', from: 'alice', to: 'bob', data: 'nope', id: 6 })).toMatchObject({ ok: true, id: 6, verdict: 'consumed' });
    await until(() => bob.got.length === 1);
    expect(bob.got[0]).toMatchObject({ id: 5, text: 'HI' });
    expect(seen.filter((x) => x !== 'ingest client')).toEqual(['ingest api', 'normalize hi', 'ingest api', 'normalize nope']);
  });

  it('any stage can drop a message; the sender still gets "sent" and nobody receives it', async () => {
    for (const stage of ['ingest', 'normalize', 'categorize', 'receive', 'send', 'format'] as const) {
      const s = await start('', { durable: false });
      (s.middleware[stage] as { use(fn: (m: { drop(): void; text?: string; frame?: Buffer }) => void): void }).use((m) => {
        const text = m.text ?? m.frame!.toString();
        if (text.includes('secret')) m.drop();
      });
      const alice = await connect(s, 'alice');
      const bob = await connect(s, 'bob');
      const dropped = alice.c.send('bob', 'the secret');
      const kept = alice.c.send('bob', 'hello');
      expect(await dropped.sent, stage).toBe(1);
      await kept.sent;
      await until(() => bob.got.length >= 1);
      await new Promise((r) => setTimeout(r, 30));
      expect(bob.texts(), stage).toEqual(['hello']);
      clients.splice(0).forEach((c) => c.close());
      await running.pop()!.stop();
    }
  });

  it('send runs per recipient (per-member translation of a group message, stored per member)', async () => {
    const s = await start();
    const langs: Record<string, string> = { bob: 'es', carol: 'fr' };
    s.middleware.send.use(async (m) => {
      await new Promise((r) => setTimeout(r, 5));
      const lang = langs[m.recipient!];
      if (lang) m.text = `${lang}:${m.text}`;
    });
    const alice = await connect(s, 'alice');
    const bob = await connect(s, 'bob');
    await api(s, { op: 'useradd', address: 'carol' });
    await api(s, { op: 'groupadd', gid: 7, members: ['alice', 'bob', 'carol'] });
    const g = alice.c.sendToGroup(7, 'hello');
    expect(await g.sent).toBe(1);
    await until(() => bob.got.length === 1);
    expect(bob.got[0]).toMatchObject({ text: 'es:hello', groupid: 7, id: g.id });
    // carol was offline: her stored copy is her translation.
    const carol = await connect(s, 'carol');
    await until(() => carol.got.length === 1);
    expect(carol.got[0]).toMatchObject({ text: 'fr:hello', groupid: 7 });
    expect(alice.got).toHaveLength(0);
  });

  it('format runs per connection, also for the stored backlog', async () => {
    const s = await start();
    s.middleware.format.use((m) => {
      if (m.binary) return;
      if (m.device === 'watch') return m.drop();
      const f = JSON.parse(m.frame.toString());
      m.frame = Buffer.from(JSON.stringify({ ...f, data: `${f.data} (${m.device})` }));
    });
    const alice = await connect(s, 'alice');
    await api(s, { op: 'useradd', address: 'bob' });
    alice.c.send('bob', 'while offline');
    await until(() => s.store.countPending('bob') === 1);
    const phone = await connect(s, 'bob', 'phone');
    const watch = await connect(s, 'bob', 'watch');
    await until(() => phone.got.length === 1);
    alice.c.send('bob', 'live');
    await until(() => phone.got.length === 2);
    expect(phone.texts()).toEqual(['while offline (phone)', 'live (phone)']);
    expect(watch.got).toHaveLength(0);
  });

  it('a middleware that throws is logged with its stage and the message goes on', async () => {
    const log: string[] = [];
    const s = await start('', { log });
    s.middleware.normalize.use(() => {
      throw new Error('normalizer bug');
    });
    s.middleware.send.use(async () => {
      throw new Error('send bug');
    });
    const alice = await connect(s, 'alice');
    const bob = await connect(s, 'bob');
    alice.c.send('bob', 'still here');
    await until(() => bob.got.length === 1);
    const errors = log.map(parseLogLine).filter((l) => l.event === 'middleware.error');
    expect(errors.find((l) => l.fields.stage === 'normalize')).toMatchObject({ severity: 'error', fields: { error: expect.stringMatching(/^Error: normalizer bug/), outcome: 'the message went on as it was' } });
    expect(errors.find((l) => l.fields.stage === 'send')?.fields.error).toMatch(/^Error: send bug/);
  });

  it('a format middleware that is not synchronous is reported once and the frame goes out as it stood', async () => {
    const log: string[] = [];
    const s = await start('', { log });
    s.middleware.format.use(async () => undefined);
    const alice = await connect(s, 'alice');
    const bob = await connect(s, 'bob');
    alice.c.send('bob', 'a');
    alice.c.send('bob', 'b');
    await until(() => bob.got.length === 2);
    expect(log.filter((l) => l.includes('must be synchronous'))).toHaveLength(1);
  });
});

describe('bots', () => {
  function openai(answer: (q: string) => string | null, delayMs = 0): Promise<string> {
    const srv = http.createServer((req, res) => {
      let body = '';
      req.on('data', (c) => (body += c));
      req.on('end', () => {
        const q = JSON.parse(body).messages[0].content as string;
        const a = answer(q);
        setTimeout(() => {
          if (a === null) {
            res.writeHead(500).end('{}');
            return;
          }
          res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify({ choices: [{ message: { role: 'assistant', content: a } }] }));
        }, delayMs);
      });
    });
    httpServers.push(srv);
    return new Promise((r) => srv.listen(0, '127.0.0.1', () => r(`http://127.0.0.1:${(srv.address() as { port: number }).port}/v1/chat/completions`)));
  }

  it('the README assistant answers "time" itself and forwards the rest to the model, in order', async () => {
    const url = await openai((q) => `model says: ${q}`, 20);
    const s = await start();
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { assistant } = require('../examples/assistant-bot.js');
    assistant(s, { url });
    const alice = await connect(s, 'alice');
    const before = Date.now();
    alice.c.send('assistant', 'TIME ');
    alice.c.send('assistant', 'what is 2+2?');
    alice.c.send('assistant', 'and 3+3?');
    await until(() => alice.got.length === 3);
    expect(alice.got.every((m) => m.from === 'assistant')).toBe(true);
    const when = Date.parse(alice.texts()[0].replace(/^It is (.*) on the server\.$/, '$1'));
    expect(when).toBeGreaterThanOrEqual(before - 1000);
    expect(alice.texts().slice(1)).toEqual(['model says: what is 2+2?', 'model says: and 3+3?']);
  });

  it('apologises when the model fails, logs it, and keeps answering', async () => {
    const url = await openai((q) => (q === 'boom' ? null : 'ok'));
    const log: string[] = [];
    const s = await start('', { log });
    const { assistant } = require('../examples/assistant-bot.js');
    const bot = assistant(s, { url });
    const alice = await connect(s, 'alice');
    alice.c.send('assistant', 'boom');
    alice.c.send('assistant', 'fine?');
    await until(() => alice.got.length === 2);
    expect(alice.texts()).toEqual(['Sorry, I cannot answer right now.', 'ok']);
    expect(bot.stats).toEqual({ heard: 2, errors: 1 });
    expect(log.map(parseLogLine).find((l) => l.event === 'bot.error')).toMatchObject({ severity: 'error', fields: { bot: 'assistant', text: expect.stringMatching(/^\[bot assistant\] a handler failed on message/) } });
  });

  it('hears strings, RegExps and functions; on() sees the rest; messages to others never reach the bot', async () => {
    const s = await start();
    const bot = s.bot('helper');
    bot.hears(/^add (\d+) (\d+)$/, (m, b) => void b.reply(m, String(Number(m.match![1]) + Number(m.match![2]))));
    bot.hears((m) => m.text.endsWith('?'), (m, b) => void b.reply(m, 'good question'));
    bot.hears(['hi', 'hello'], (m, b) => void b.reply(m, `hi ${m.from}`));
    bot.on('message', (m, b) => void b.reply(m, `unknown: ${m.text}`));
    const alice = await connect(s, 'alice');
    const bob = await connect(s, 'bob');
    for (const t of ['add 2 40', 'why?', 'Hello', 'dance']) alice.c.send('helper', t);
    alice.c.send('bob', 'add 1 1');
    await until(() => alice.got.length === 4 && bob.got.length === 1);
    expect(alice.texts()).toEqual(['42', 'good question', 'hi alice', 'unknown: dance']);
    expect(bot.stats.heard).toBe(4);
    expect(s.core.modules.find((m) => m.name === 'bot:helper')!.stats.on_message.calls).toBe(4);
  });

  it('a categorize middleware can mark messages the bot handles with on(category)', async () => {
    const log: string[] = [];
    const s = await start('', { log });
    s.middleware.categorize.use((m) => {
      if (m.text.startsWith('/')) m.category = 'command';
    });
    const bot = s.bot('ops');
    bot.on('command', (m, b) => void b.reply(m, `running ${m.text.slice(1)}`));
    bot.on('message', (m, b) => void b.reply(m, 'commands start with /'));
    const alice = await connect(s, 'alice');
    alice.c.send('ops', '/deploy');
    alice.c.send('ops', 'hello');
    await until(() => alice.got.length === 2);
    expect(alice.texts()).toEqual(['running deploy', 'commands start with /']);
  });
});
