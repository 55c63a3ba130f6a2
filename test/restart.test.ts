// Restarts, deterministically: what an offline recipient is owed survives a
// graceful stop (SIGTERM, exit code 0) and a SIGKILL right after the "sent"
// statuses, and arrives in order once it connects. The random version of this
// is kill.test.ts.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { freePort, writeChildServer } from './child-server';

const APP_TOKEN = 'restart-test-app-token';
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));


type Exit = { code: number | null; signal: NodeJS.Signals | null };

/** The server in a child process, on a fixed port and data_dir for its whole life. */
class ServerProcess {
  private readonly script: string;
  private readonly conf: string;
  private child: ChildProcess | null = null;
  private exited: Promise<Exit> | null = null;
  readonly dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sb-restart-'));
  log = '';

  constructor(readonly port: number) {
    [this.script, this.conf] = writeChildServer(this.dir, port, APP_TOKEN);
  }

  async start(): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      const child = spawn(process.execPath, [this.script, this.conf], { stdio: ['ignore', 'pipe', 'pipe'] });
      const exited = new Promise<Exit>((r) => child.once('exit', (code, signal) => r({ code, signal })));
      let out = '';
      child.stderr!.on('data', (d) => (this.log += d));
      let timer: NodeJS.Timeout | undefined;
      const ready = await new Promise<boolean>((resolve) => {
        child.stdout!.on('data', (d) => {
          out += d;
          if (out.includes('READY')) resolve(true);
        });
        void exited.then(() => resolve(false));
        timer = setTimeout(() => resolve(false), 15_000);
      });
      clearTimeout(timer);
      if (ready) {
        this.child = child;
        this.exited = exited;
        return;
      }
      child.kill('SIGKILL');
      const e = await exited;
      if (e.code === 2 && attempt < 50) {
        await sleep(100); // E_LISTEN: the previous server's port is not free yet
        continue;
      }
      throw new Error(`the server did not start (exit ${e.code}, signal ${e.signal}); its log:\n${this.log}`);
    }
  }

  /** Sends `signal` and waits for the process to end. */
  stop(signal: NodeJS.Signals): Promise<Exit> {
    const child = this.child!;
    const exited = this.exited!;
    this.child = null;
    this.exited = null;
    child.kill(signal);
    return exited;
  }

  async dispose(): Promise<void> {
    if (this.child) await this.stop('SIGKILL');
    fs.rmSync(this.dir, { recursive: true, force: true });
  }

  async api(body: unknown): Promise<Record<string, unknown>> {
    const res = await fetch(`http://127.0.0.1:${this.port}/api`, { method: 'POST', headers: { Authorization: `Bearer ${APP_TOKEN}` }, body: JSON.stringify(body) });
    const json = (await res.json()) as Record<string, unknown>;
    if (!json.ok) throw new Error(`api ${JSON.stringify(body)}: ${JSON.stringify(json)}`);
    return json;
  }
}

interface Frame {
  op: string;
  id?: number;
  from?: string;
  to?: string;
  status?: number;
  data?: string;
  expiry?: number;
}

/** A logged-in connection that records every frame after the hello; `ack` acknowledges each message as it arrives. */
class Session {
  readonly frames: Frame[] = [];
  /** Called for every frame after the hello, as it arrives. */
  onFrame: ((f: Frame) => void) | null = null;
  private constructor(readonly ws: WebSocket) {}

  static open(port: number, token: string, opts: { ack?: boolean } = {}): Promise<Session> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(`ws://127.0.0.1:${port}/?token=${encodeURIComponent(token)}`);
      const s = new Session(ws);
      let hello = false;
      ws.on('error', () => {});
      ws.on('message', (raw) => {
        const f = JSON.parse(String(raw)) as Frame;
        if (!hello && f.op === 'hello') {
          hello = true;
          resolve(s);
          return;
        }
        s.frames.push(f);
        s.onFrame?.(f);
        if (opts.ack && f.op === 'msg') ws.send(JSON.stringify({ op: 'status', id: f.id, to: f.from, status: 2 }));
      });
      ws.on('close', () => {
        if (!hello) reject(new Error('closed before hello'));
      });
    });
  }

  get messages(): Frame[] {
    return this.frames.filter((f) => f.op === 'msg');
  }

  /** Ids that got status `status` (1: sent), in arrival order. */
  statuses(status: number): number[] {
    return this.frames.filter((f) => f.op === 'status' && f.status === status).map((f) => f.id!);
  }

  send(frame: Record<string, unknown>): void {
    this.ws.send(JSON.stringify({ op: 'msg', ...frame }));
  }

  async until(what: string, done: () => boolean, ms = 10_000): Promise<void> {
    const end = Date.now() + ms;
    while (!done()) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}; frames so far: ${JSON.stringify(this.frames.slice(-5))}`);
      await sleep(5);
    }
  }

  /** Waits until nothing has arrived for `quietMs`. */
  async settle(quietMs = 300): Promise<void> {
    let n = -1;
    while (n !== this.frames.length) {
      n = this.frames.length;
      await sleep(quietMs);
    }
  }

  close(): Promise<void> {
    if (this.ws.readyState === WebSocket.CLOSED) return Promise.resolve();
    return new Promise((r) => {
      this.ws.once('close', () => r());
      this.ws.close();
    });
  }
}

const range = (a: number, b: number) => Array.from({ length: b - a + 1 }, (_, i) => a + i);

let server: ServerProcess | null = null;
afterEach(async () => {
  await server?.dispose();
  server = null;
});

async function setup(): Promise<{ s: ServerProcess; alice: string; bob: string }> {
  const s = (server = new ServerProcess(await freePort()));
  await s.start();
  const alice = (await s.api({ op: 'useradd', address: 'alice' })).token as string;
  const bob = (await s.api({ op: 'useradd', address: 'bob' })).token as string;
  return { s, alice, bob };
}

describe('restart', () => {
  it('keeps what an offline recipient is owed across a graceful stop (SIGTERM, exit 0), in order; expired messages are not delivered', async () => {
    const { s, alice, bob } = await setup();
    const a = await Session.open(s.port, alice);
    for (const id of range(1, 20)) a.send({ id, to: 'bob', data: `hello ${id}` });
    a.send({ id: 21, to: 'bob', data: 'short-lived', expiry: 1 });
    await a.until('21 "sent" statuses', () => a.statuses(1).length === 21);
    const sentAt = Date.now();
    expect(a.statuses(1)).toEqual(range(1, 21));
    expect(a.frames.filter((f) => f.op !== 'status')).toEqual([]);

    expect(await s.stop('SIGTERM')).toEqual({ code: 0, signal: null });
    expect(s.log).toMatch(/ info  server\.stopped\n/);
    await sleep(Math.max(0, sentAt + 1200 - Date.now())); // message 21 expires while the server is down
    await s.start();

    const b = await Session.open(s.port, bob, { ack: true });
    await b.until('20 messages', () => b.messages.length >= 20);
    await b.settle();
    expect(b.messages).toEqual(range(1, 20).map((id) => ({ op: 'msg', id, from: 'alice', to: 'bob', data: `hello ${id}` })));
    await b.close();

    // The acknowledgements were committed by the graceful stop: nothing comes again.
    expect(await s.stop('SIGTERM')).toEqual({ code: 0, signal: null });
    await s.start();
    const b2 = await Session.open(s.port, bob);
    await b2.settle(400);
    expect(b2.messages).toEqual([]);
    await b2.close();
  });

  it('keeps every message whose "sent" status arrived when the server is SIGKILLed right after', async () => {
    const { s, alice, bob } = await setup();
    const a = await Session.open(s.port, alice);
    const N = 50;
    // Killed from the frame handler of the last "sent", before anything else runs.
    let killed: Promise<Exit> | null = null;
    let sent = 0;
    a.onFrame = (f) => {
      if (f.op === 'status' && f.status === 1 && ++sent === N) killed = s.stop('SIGKILL');
    };
    for (const id of range(1, N)) a.send({ id, to: 'bob', data: `m${id}` });
    await a.until(`${N} "sent" statuses`, () => killed !== null);
    expect(await killed).toEqual({ code: null, signal: 'SIGKILL' });
    expect(a.statuses(1)).toEqual(range(1, N));

    await s.start();
    const b = await Session.open(s.port, bob, { ack: true });
    await b.until(`${N} messages`, () => b.messages.length >= N);
    await b.settle();
    expect(b.messages.map((m) => m.id)).toEqual(range(1, N));
    expect(b.messages.map((m) => m.data)).toEqual(range(1, N).map((id) => `m${id}`));
    await b.close();
    expect(await s.stop('SIGTERM')).toEqual({ code: 0, signal: null });
  });
});
