// Helpers for tests that run the real server: the backend API over HTTP and
// SDK clients over real WebSockets.
import WebSocket from 'ws';
import { SwitchboardClient, type IncomingMessage, type StatusEvent } from '../lib/client';

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
