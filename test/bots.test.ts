// The chatbot and translate samples (modules/chatbot, modules/translate, as
// built by CMake) end to end: the real server, real clients (the SDK over
// `ws`), and real HTTP services on loopback started here, one acting as an
// OpenAI-compatible chat completions endpoint (or Dialogflow), one as
// LibreTranslate.
import http from 'node:http';
import path from 'node:path';
import WebSocket from 'ws';
import { afterEach, describe, expect, it } from 'vitest';
import { SwitchboardClient, type IncomingMessage } from '../lib/client';
import { Server } from '../lib/index';
import { moduleLine, root, tempDir, until } from './helpers';

const APP = 'bots-token';
const samples = path.join(root, 'build', 'modules');
const running: Server[] = [];
const clients: SwitchboardClient[] = [];
const services: http.Server[] = [];

afterEach(async () => {
  while (clients.length) clients.pop()!.close();
  while (running.length) await running.pop()!.stop();
  while (services.length) {
    const s = services.pop()!;
    s.closeAllConnections();
    await new Promise((ok) => s.close(ok));
  }
});

// ---------------------------------------------------------------------------
// HTTP services
// ---------------------------------------------------------------------------

interface Seen {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  body: string;
}

type Reply = (seen: Seen, res: http.ServerResponse) => void;

/** An HTTP service on loopback: records every request and answers with `reply`. */
async function service(reply: Reply): Promise<{ url: string; seen: Seen[] }> {
  const seen: Seen[] = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      const s = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, body };
      seen.push(s);
      reply(s, res);
    });
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  services.push(server);
  return { url: `http://127.0.0.1:${(server.address() as { port: number }).port}`, seen };
}

function json(res: http.ServerResponse, status: number, value: unknown): void {
  res.writeHead(status, { 'Content-Type': 'application/json' });
  res.end(typeof value === 'string' ? value : JSON.stringify(value));
}

/** An OpenAI-compatible chat completions answer. */
const completions: Reply = (seen, res) => {
  const req = JSON.parse(seen.body);
  json(res, 200, {
    id: 'chatcmpl-1',
    object: 'chat.completion',
    model: req.model,
    choices: [{ index: 0, message: { role: 'assistant', content: `You said: ${req.messages[0].content}` }, finish_reason: 'stop' }],
    usage: { prompt_tokens: 5, completion_tokens: 5, total_tokens: 10 },
  });
};

/** LibreTranslate: a two-word dictionary, anything else tagged with the target. */
const libretranslate: Reply = (seen, res) => {
  const req = JSON.parse(seen.body);
  const words: Record<string, string> = { hello: 'hola', 'good "morning"\n': 'buenos "días"\n' };
  json(res, 200, { detectedLanguage: { confidence: 90, language: 'en' }, translatedText: words[req.q] ?? `[${req.target}] ${req.q}` });
};

// ---------------------------------------------------------------------------
// Server and users
// ---------------------------------------------------------------------------

async function start(modules: string): Promise<{ s: Server; log: string[] }> {
  const log: string[] = [];
  const s = await Server.start({
    configText: `listen = 127.0.0.1:0\ndata_dir = ${tempDir()}\napp_token = ${APP}\nmodule_dir = ${samples}\n${modules}`,
    // What the modules and the core said, as "[module] text".
    log: (l) => {
      const said = moduleLine(l);
      if (said !== null) log.push(said);
    },
  });
  running.push(s);
  return { s, log };
}

interface Peer {
  c: SwitchboardClient;
  got: IncomingMessage[];
}

async function connect(s: Server, address: string): Promise<Peer> {
  const r = await fetch(`http://127.0.0.1:${s.port}/api`, { method: 'POST', headers: { Authorization: `Bearer ${APP}` }, body: JSON.stringify({ op: 'useradd', address }) });
  const { token } = (await r.json()) as { token: string };
  const c = new SwitchboardClient({ url: `ws://127.0.0.1:${s.port}/`, token, WebSocket: WebSocket as never });
  clients.push(c);
  const got: IncomingMessage[] = [];
  c.on('message', (m) => got.push(m));
  await c.connect();
  return { c, got };
}

const APOLOGY = 'Sorry, I cannot answer right now. Please try again later.';

// ---------------------------------------------------------------------------
// chatbot
// ---------------------------------------------------------------------------

describe('chatbot', () => {
  function bot(endpoint: string, timeout = 5): string {
    return `module chatbot {\n address = assistant\n endpoint = ${endpoint}\n access_token = sk-test\n model = test-model\n timeout = ${timeout}\n log = 1\n}\n`;
  }

  it('answers a question through an OpenAI-compatible endpoint, as a reply to it', async () => {
    const api = await service(completions);
    const { s } = await start(bot(`${api.url}/v1/chat/completions`));
    const alice = await connect(s, 'alice');
    const question = 'What is "2+2"?\nAnswer in one word, ü.';
    const sending = alice.c.send('assistant', question);
    await sending.sent;
    await until(() => alice.got.length === 1);
    expect(alice.got[0]).toMatchObject({ from: 'assistant', to: 'alice', refid: sending.id, text: `You said: ${question}` });
    expect(api.seen).toHaveLength(1);
    expect(api.seen[0]).toMatchObject({ method: 'POST', url: '/v1/chat/completions' });
    expect(api.seen[0].headers).toMatchObject({ authorization: 'Bearer sk-test', 'content-type': 'application/json' });
    expect(JSON.parse(api.seen[0].body)).toEqual({ model: 'test-model', messages: [{ role: 'user', content: question }] });
  });

  it('leaves messages to anyone else alone', async () => {
    const api = await service(completions);
    const { s } = await start(bot(`${api.url}/v1/chat/completions`));
    const alice = await connect(s, 'alice');
    const bob = await connect(s, 'bob');
    await alice.c.send('bob', 'not a question for the bot').sent;
    await until(() => bob.got.length === 1);
    expect(bob.got[0].text).toBe('not a question for the bot');
    expect(api.seen).toHaveLength(0);
  });

  it('apologizes when the service answers 500, and logs why', async () => {
    const api = await service((_s, res) => json(res, 500, { error: { message: 'model crashed' } }));
    const { s, log } = await start(bot(`${api.url}/v1/chat/completions`));
    const alice = await connect(s, 'alice');
    const sending = alice.c.send('assistant', 'hello?');
    await until(() => alice.got.length === 1);
    expect(alice.got[0]).toMatchObject({ from: 'assistant', refid: sending.id, text: APOLOGY });
    expect(log).toContain(`[chatbot] no answer to message ${sending.id} from alice: the service answered with HTTP status 500`);
  });

  it('apologizes when the service is slower than the timeout', async () => {
    const api = await service(() => {}); // never answers
    const { s, log } = await start(bot(`${api.url}/v1/chat/completions`, 1));
    const alice = await connect(s, 'alice');
    const t0 = Date.now();
    const sending = alice.c.send('assistant', 'are you there?');
    await until(() => alice.got.length === 1);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(900);
    expect(alice.got[0]).toMatchObject({ refid: sending.id, text: APOLOGY });
    expect(log.some((l) => l.startsWith(`[chatbot] no answer to message ${sending.id} from alice: the request failed`))).toBe(true);
  });

  it('apologizes when the service is down, or its answer is not what was configured', async () => {
    const down = await service(() => {});
    const downUrl = down.url;
    services.pop()!.close();
    const html = await service((_s, res) => {
      res.writeHead(200, { 'Content-Type': 'text/html' });
      res.end('<html>maintenance</html>');
    });
    const { s, log } = await start(`${bot(`${downUrl}/v1/chat/completions`)}${bot(`${html.url}/v1`).replace('assistant', 'helper')}`);
    const alice = await connect(s, 'alice');
    alice.c.send('assistant', 'one');
    alice.c.send('helper', 'two');
    await until(() => alice.got.length === 2);
    expect(alice.got.map((m) => m.text)).toEqual([APOLOGY, APOLOGY]);
    expect(log.some((l) => l.includes('from alice: no "choices.0.message.content" in the answer'))).toBe(true);
  });

  it('formats a Dialogflow detectIntent request and reads queryResult.fulfillmentText', async () => {
    const api = await service((seen, res) => {
      const req = JSON.parse(seen.body);
      json(res, 200, { responseId: 'r1', queryResult: { queryText: req.queryInput.text.text, fulfillmentText: 'Hallo!', languageCode: 'de' } });
    });
    const { s } = await start(`module chatbot {\n address = df\n format = dialogflow\n endpoint = ${api.url}/v2\n project = my-project\n language = de\n access_token = ya29.token\n}\n`);
    const alice = await connect(s, 'alice');
    const sending = alice.c.send('df', 'Hi');
    await until(() => alice.got.length === 1);
    expect(alice.got[0]).toMatchObject({ from: 'df', refid: sending.id, text: 'Hallo!' });
    expect(api.seen[0].url).toMatch(/^\/v2\/projects\/my-project\/agent\/sessions\/sb-[0-9a-f]+:detectIntent$/);
    expect(api.seen[0].headers.authorization).toBe('Bearer ya29.token');
    expect(JSON.parse(api.seen[0].body)).toEqual({ queryInput: { text: { text: 'Hi', languageCode: 'de' } } });
  });

  it('posts the simple format and follows a configured dotted path through arrays', async () => {
    const api = await service((seen, res) => {
      const req = JSON.parse(seen.body);
      json(res, 200, { results: [{ text: 'not this' }, { alternatives: ['first', `${req.text} (${req.language})`] }] });
    });
    const { s } = await start(`module chatbot {\n address = simple\n format = simple\n endpoint = ${api.url}/ask\n language = fr\n response_field = results.1.alternatives.1\n}\n`);
    const alice = await connect(s, 'alice');
    alice.c.send('simple', 'bonjour');
    await until(() => alice.got.length === 1);
    expect(alice.got[0].text).toBe('bonjour (fr)');
    expect(api.seen[0].headers.authorization).toBeUndefined();
  });

  it('refuses to start without an endpoint, or with an unknown format', async () => {
    await expect(start('module chatbot {\n address = x\n}\n')).rejects.toMatchObject({ code: 'E_MODULE_INIT_FAILED' });
    await expect(start('module chatbot {\n endpoint = http://127.0.0.1:1/\n format = smoke-signals\n}\n')).rejects.toMatchObject({ code: 'E_MODULE_INIT_FAILED' });
  });
});

// ---------------------------------------------------------------------------
// translate
// ---------------------------------------------------------------------------

describe('translate', () => {
  // The server has Switchboard's "defer" extension, so the module defers each
  // message and resolves it with the translation: the message keeps its id.
  function translator(endpoint: string, extra = ''): string {
    return `module translate {\n endpoint = ${endpoint}\n source = en\n target = es\n api_key = lt-key\n timeout = 2\n log = 1\n${extra}}\n`;
  }

  /** LibreTranslate answering after `delayMs(q)` milliseconds. */
  function slowly(delayMs: (q: string) => number): Reply {
    return (seen, res) => {
      setTimeout(() => libretranslate(seen, res), delayMs(JSON.parse(seen.body).q));
    };
  }

  it('delivers the translation under the original id, and the sender gets delivered and read for it', async () => {
    const api = await service(libretranslate);
    const { s, log } = await start(translator(`${api.url}/translate`));
    const alice = await connect(s, 'alice');
    const bob = await connect(s, 'bob');
    const statuses: Array<{ id: number; status: number }> = [];
    alice.c.on('status', (st) => statuses.push(st));
    const sending = alice.c.send('bob', 'hello', { refid: 77, type: 5, flags: 0x3 });
    expect(await sending.sent).toBe(1);
    await until(() => bob.got.length === 1);
    expect(bob.got[0]).toMatchObject({ id: sending.id, from: 'alice', to: 'bob', refid: 77, type: 5, flags: 0x3, text: 'hola' });
    await until(() => statuses.some((x) => x.id === sending.id && x.status === 2));
    expect(bob.c.markRead(bob.got[0])).toBe(true);
    await until(() => statuses.some((x) => x.id === sending.id && x.status === 3));
    expect(statuses.filter((x) => x.id === sending.id).map((x) => x.status)).toEqual([1, 2, 3]);
    expect(statuses.every((x) => x.id === sending.id)).toBe(true);
    expect(JSON.parse(api.seen[0].body)).toEqual({ q: 'hello', source: 'en', target: 'es', format: 'text', api_key: 'lt-key' });
    expect(log).toContain(`[translate] translated message ${sending.id} from alice to bob`);
    expect(log.some((l) => l.includes('deferring (messages keep their ids)'))).toBe(true);
  });

  it('escapes the text it sends and delivers what comes back byte for byte', async () => {
    const api = await service(libretranslate);
    const { s } = await start(translator(`${api.url}/translate`));
    const alice = await connect(s, 'alice');
    const bob = await connect(s, 'bob');
    const sending = alice.c.send('bob', 'good "morning"\n');
    await until(() => bob.got.length === 1);
    expect(bob.got[0]).toMatchObject({ id: sending.id, text: 'buenos "días"\n' });
  });

  it('replaces the payload with a longer one of any length', async () => {
    const long = 'x'.repeat(20_000);
    const api = await service((_s, res) => json(res, 200, { translatedText: long }));
    const { s } = await start(translator(`${api.url}/translate`));
    const alice = await connect(s, 'alice');
    const bob = await connect(s, 'bob');
    const sending = alice.c.send('bob', 'hi');
    await until(() => bob.got.length === 1);
    expect(bob.got[0]).toMatchObject({ id: sending.id, text: long });
  });

  it('delivers the original when the translation is larger than max_message_size', async () => {
    const api = await service((_s, res) => json(res, 200, { translatedText: 'x'.repeat(2000) }));
    const { s, log } = await start(`max_message_size = 1000\n${translator(`${api.url}/translate`)}`);
    const alice = await connect(s, 'alice');
    const bob = await connect(s, 'bob');
    const sending = alice.c.send('bob', 'hello');
    await until(() => bob.got.length === 1);
    expect(bob.got[0]).toMatchObject({ id: sending.id, text: 'hello' });
    expect(log).toContain(`[translate] message ${sending.id} from alice to bob delivered untranslated: the translation is larger than max_message_size`);
  });

  it('without a timeout item, gives up on the service before defer_timeout, so the module decides', async () => {
    const api = await service(() => {}); // never answers
    const { s, log } = await start(`module translate {\n endpoint = ${api.url}/translate\n target = es\n defer_timeout = 2s\n}\n`);
    const alice = await connect(s, 'alice');
    const bob = await connect(s, 'bob');
    const t0 = Date.now();
    const sending = alice.c.send('bob', 'hello');
    await until(() => bob.got.length === 1);
    const waited = Date.now() - t0;
    expect(waited).toBeGreaterThanOrEqual(900); // timeout: 1 s, the whole seconds below 2 s
    expect(waited).toBeLessThan(1900);
    expect(bob.got[0]).toMatchObject({ id: sending.id, text: 'hello' });
    expect(log.some((l) => l.startsWith(`[translate] message ${sending.id} from alice to bob delivered untranslated: the request failed`))).toBe(true);
    expect(log.some((l) => l.includes('did not decide') || l.includes('warning'))).toBe(false);
  });

  it('translates only for the configured destinations; others get the original itself', async () => {
    const api = await service(libretranslate);
    const { s } = await start(translator(`${api.url}/translate`, ' destinations = carol, bob\n'));
    const alice = await connect(s, 'alice');
    const bob = await connect(s, 'bob');
    const dave = await connect(s, 'dave');
    const toDave = alice.c.send('dave', 'hello');
    const toBob = alice.c.send('bob', 'hello');
    await until(() => bob.got.length === 1 && dave.got.length === 1);
    expect(bob.got[0]).toMatchObject({ id: toBob.id, text: 'hola' });
    expect(dave.got[0]).toMatchObject({ id: toDave.id, text: 'hello' });
    expect(api.seen).toHaveLength(1);
  });

  it('delivers the original, untranslated, when the service is down', async () => {
    const down = await service(() => {});
    const url = down.url;
    services.pop()!.close();
    const { s, log } = await start(translator(`${url}/translate`));
    const alice = await connect(s, 'alice');
    const bob = await connect(s, 'bob');
    const sending = alice.c.send('bob', 'hello', { refid: 9 });
    await until(() => bob.got.length === 1);
    expect(bob.got[0]).toMatchObject({ id: sending.id, from: 'alice', refid: 9, text: 'hello' });
    expect(log.some((l) => l.startsWith(`[translate] message ${sending.id} from alice to bob delivered untranslated: the request failed`))).toBe(true);
  });

  it('delivers the original when the service refuses, and logs its reason', async () => {
    const api = await service((_s, res) => json(res, 400, { error: 'es is not a supported target language' }));
    const { s, log } = await start(translator(`${api.url}/translate`));
    const alice = await connect(s, 'alice');
    const bob = await connect(s, 'bob');
    const sending = alice.c.send('bob', 'hello');
    await until(() => bob.got.length === 1);
    expect(bob.got[0]).toMatchObject({ id: sending.id, text: 'hello' });
    expect(log).toContain(`[translate] message ${sending.id} from alice to bob delivered untranslated: HTTP status 400: es is not a supported target language`);
  });

  it('delivers the original at defer_timeout when the service is slower, and drops the late translation', async () => {
    const api = await service(slowly(() => 1000));
    const { s, log } = await start(translator(`${api.url}/translate`, ' defer_timeout = 300ms\n'));
    expect(log).toContain('[translate] warning: timeout (2 s) is not below defer_timeout (300 ms): a message whose translation takes longer is decided by the server\'s on_error, not translated');
    const alice = await connect(s, 'alice');
    const bob = await connect(s, 'bob');
    const t0 = Date.now();
    const sending = alice.c.send('bob', 'hello');
    expect(await sending.sent).toBe(1);
    await until(() => bob.got.length === 1);
    const waited = Date.now() - t0;
    expect(waited).toBeGreaterThanOrEqual(250);
    expect(waited).toBeLessThan(900);
    expect(bob.got[0]).toMatchObject({ id: sending.id, text: 'hello' });
    expect(log).toContain(`[core] module "translate" did not decide message ${sending.id} from alice within 300 ms; it was passed on (on_error)`);
    // The answer comes at 1 s: too late to change anything, and logged.
    await until(() => log.some((l) => l === `[translate] message ${sending.id} from alice to bob: decided by the server at defer_timeout (on_error) before the translation came`));
    await new Promise((r) => setTimeout(r, 50));
    expect(bob.got).toHaveLength(1);
  });

  it('keeps each conversation in order while a message waits; other conversations go on', async () => {
    const api = await service(slowly((q) => (q === 'first' ? 500 : 0)));
    const { s } = await start(translator(`${api.url}/translate`));
    const alice = await connect(s, 'alice');
    const bob = await connect(s, 'bob');
    const carol = await connect(s, 'carol');
    const first = alice.c.send('bob', 'first');
    const second = alice.c.send('bob', 'second');
    const third = alice.c.send('carol', 'third');
    await until(() => carol.got.length === 1);
    expect(bob.got).toHaveLength(0); // carol's message did not wait for bob's
    await until(() => bob.got.length === 2);
    expect(bob.got.map((m) => [m.id, m.text])).toEqual([
      [first.id, '[es] first'],
      [second.id, '[es] second'],
    ]);
    expect(carol.got[0]).toMatchObject({ id: third.id, text: '[es] third' });
    // The second reached the module only once the first was decided.
    const asked = api.seen.map((x) => JSON.parse(x.body).q as string);
    expect(asked).toHaveLength(3);
    expect(asked[2]).toBe('second');
  });

  it('a chatbot behind the translator answers in the translated language', async () => {
    // The chain: translate rewrites alice's question, the bot sees the
    // translation; the bot's answer enters the chain after the bot.
    const lt = await service(libretranslate);
    const ai = await service(completions);
    const { s } = await start(`${translator(`${lt.url}/translate`, ' destinations = assistant\n')}module chatbot {\n address = assistant\n endpoint = ${ai.url}/v1/chat/completions\n}\n`);
    const alice = await connect(s, 'alice');
    const sending = alice.c.send('assistant', 'hello');
    await until(() => alice.got.length === 1);
    expect(alice.got[0]).toMatchObject({ from: 'assistant', refid: sending.id, text: 'You said: hola' });
  });
});
