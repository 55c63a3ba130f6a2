// Helpers for tests that run the real server: the backend API over HTTP and
// SDK clients over real WebSockets.
import WebSocket from 'ws';
import { afterEach, beforeAll } from 'vitest';
import { SwitchboardClient, type IncomingMessage, type StatusEvent } from '../lib/client';
import { Server } from '../lib/index';
import { compileModule, tempDir } from './helpers';

export async function apiCall(port: number, appToken: string, body: Record<string, unknown>): Promise<Record<string, unknown>> {
  const r = await fetch(`http://127.0.0.1:${port}/api`, { method: 'POST', headers: { Authorization: `Bearer ${appToken}` }, body: JSON.stringify(body) });
  return (await r.json()) as Record<string, unknown>;
}

export interface Peer {
  c: SwitchboardClient;
  got: IncomingMessage[];
  statuses: StatusEvent[];
  texts(): string[];
}

/** A connected SDK client that records what it receives; `clients` collects it for cleanup. */
export async function connectPeer(port: number, token: string, device: string, clients: SwitchboardClient[]): Promise<Peer> {
  const c = new SwitchboardClient({ url: `ws://127.0.0.1:${port}/`, token, device, WebSocket: WebSocket as never, reconnect: { minDelayMs: 20, maxDelayMs: 200 } });
  clients.push(c);
  const got: IncomingMessage[] = [];
  const statuses: StatusEvent[] = [];
  c.on('message', (m) => got.push(m));
  c.on('status', (st) => statuses.push(st));
  await c.connect();
  return { c, got, statuses, texts: () => got.map((m) => m.text ?? '') };
}

/**
 * Servers on a free port with the test module compiled once, `app` as the
 * backend token and a quiet log; after each test its clients are closed and
 * its servers stopped. Call at the top of a test file.
 */
export function serverFixture(app: string, module: { name: string; source: string }) {
  const running: Server[] = [];
  const clients: SwitchboardClient[] = [];
  let moduleDir = '';
  beforeAll(() => {
    moduleDir = compileModule(module);
  });
  afterEach(async () => {
    for (const c of clients.splice(0)) c.close();
    for (const s of running.splice(0)) await s.stop();
  });
  return {
    clients,
    async start(body = ''): Promise<Server> {
      const s = await Server.start({ configText: `listen = 127.0.0.1:0\ndata_dir = ${tempDir()}\napp_token = ${app}\nmodule_dir = ${moduleDir}\n${body}`, log: () => {} });
      running.push(s);
      return s;
    },
    /** Creates the user and returns its login token. */
    async user(s: Server, address: string): Promise<string> {
      return (await apiCall(s.port, app, { op: 'useradd', address })).token as string;
    },
  };
}
