// The server's rooms hold the one settings object and read a setting when
// they use it, so a change to server.settings (a config reload) applies to
// the next message or request, without a restart. The delivery engine, in
// C++, keeps its own copy of the settings it reads per message
// (durable_grace, the inbox limits): Server.settingsChanged(), which every
// reload calls, passes them on. Real server, real WebSocket clients, a real
// SQLite file.
import WebSocket from 'ws';
import { afterEach, describe, expect, it } from 'vitest';
import { SwitchboardClient } from '../lib/client';
import { Server } from '../lib/index';
import { tempDir, until } from './helpers';
import { apiCall, connectPeer } from './server-helpers';

const APP = 'settings-live-token';
const running: Server[] = [];
const clients: SwitchboardClient[] = [];
const sockets: WebSocket[] = [];

afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  for (const w of sockets.splice(0)) w.terminate();
  for (const s of running.splice(0)) await s.stop();
});

async function start(body = ''): Promise<Server> {
  const s = await Server.start({ configText: `listen = 127.0.0.1:0\ndata_dir = ${tempDir()}\napp_token = ${APP}\n${body}`, log: () => {} });
  running.push(s);
  return s;
}

async function user(s: Server, address: string): Promise<string> {
  return (await apiCall(s.port, APP, { op: 'useradd', address })).token as string;
}

/** A bare logged-in socket that records the JSON frames it gets. */
async function raw(s: Server, token: string): Promise<{ ws: WebSocket; frames: Record<string, unknown>[] }> {
  const ws = new WebSocket(`ws://127.0.0.1:${s.port}/?token=${token}`);
  sockets.push(ws);
  const frames: Record<string, unknown>[] = [];
  ws.on('message', (d) => frames.push(JSON.parse(d.toString())));
  await until(() => frames.some((f) => f.op === 'hello'));
  return { ws, frames };
}

describe('settings changed in place', () => {
  it('max_inbox_messages: the next message to a full inbox is refused, and room comes back when it is raised', async () => {
    const s = await start('max_inbox_messages = 100\n');
    const alice = await connectPeer(s.port, await user(s, 'alice'), '', clients);
    await user(s, 'bob');
    for (let i = 0; i < 3; i++) expect(await alice.c.send('bob', `m${i}`).sent).toBe(1);
    s.settings.maxInboxMessages = 3;
    s.settingsChanged();
    await expect(alice.c.send('bob', 'one too many').sent).rejects.toMatchObject({ code: 'E_INBOX_FULL', status: 0x82 });
    s.settings.maxInboxMessages = 4;
    s.settingsChanged();
    expect(await alice.c.send('bob', 'room again').sent).toBe(1);
  });

  it('presence: a subscription the old policy allowed is refused under the new one', async () => {
    const s = await start('presence = all\n');
    const alice = await raw(s, await user(s, 'alice'));
    await user(s, 'bob');
    alice.ws.send(JSON.stringify({ op: 'presence', id: 1, to: 'bob' }));
    await until(() => alice.frames.some((f) => f.op === 'presence' && f.from === 'bob'));
    s.settings.presence = 'none';
    alice.ws.send(JSON.stringify({ op: 'presence', id: 2, to: 'alice' }));
    await until(() => alice.frames.some((f) => f.id === 2));
    expect(alice.frames.find((f) => f.id === 2)).toMatchObject({ code: 'E_PRESENCE_DENIED' });
  });

  it('app_token: the backend API takes the new token at once and refuses the old one', async () => {
    const s = await start();
    expect((await apiCall(s.port, APP, { op: 'useradd', address: 'carol' })).ok).toBe(true);
    s.settings.appToken = 'a-new-token';
    expect((await apiCall(s.port, APP, { op: 'useradd', address: 'dave' })).ok).toBe(false);
    expect((await apiCall(s.port, 'a-new-token', { op: 'useradd', address: 'dave' })).ok).toBe(true);
  });

  it('durable_grace: with the grace set to 0, the next message is stored before anyone sees it', async () => {
    const s = await start('durable = on\ndurable_grace = 60000\n');
    const alice = await connectPeer(s.port, await user(s, 'alice'), '', clients);
    const bob = await raw(s, await user(s, 'bob'));
    // A live copy: "sent" waits for bob's confirmation, which a bare socket never sends.
    let sent = false;
    // (It is still waiting when the test ends and the client closes.)
    alice.c.send('bob', 'live').sent.then(() => (sent = true), () => undefined);
    await until(() => bob.frames.some((f) => f.op === 'msg'));
    expect(s.store.countPending('bob')).toBe(0);
    expect(sent).toBe(false);
    s.settings.durableGrace = 0;
    s.settingsChanged();
    expect(await alice.c.send('bob', 'stored').sent).toBe(1);
    // The live copy before it, still unconfirmed, was stored first (a
    // backlog keeps alice's order), and its "sent" followed that commit.
    expect(s.store.countPending('bob')).toBe(2);
    expect(sent).toBe(true);
  });
});
