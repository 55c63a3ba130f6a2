// The backend API over real HTTP: every operation, and a 4xx JSON error with
// a stable code for every bad request.
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Server } from '../lib/index';
import { root, tempDir } from './helpers';

let server: Server;
let url: string;
const TOKEN = 'test-app-token';

async function api(body: unknown, token: string | null = TOKEN): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(url, {
    method: 'POST',
    headers: token ? { Authorization: `Bearer ${token}` } : {},
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

beforeAll(async () => {
  server = await Server.start({
    configText: `listen = 127.0.0.1:0\ndata_dir = ${tempDir()}\napp_token = ${TOKEN}\nmodule_dir = ${path.join(root, 'build/modules')}\nmodule filter {\n blocked_words = forbidden\n}\n`,
    log: () => {},
  });
  url = `http://127.0.0.1:${server.port}/api`;
});
afterAll(async () => server.stop());

describe('users', () => {
  it('adds a user and returns its token once; the store keeps only a hash', async () => {
    const r = await api({ op: 'useradd', address: 'alice' });
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({ ok: true, address: 'alice' });
    expect(typeof r.json.token).toBe('string');
    expect((r.json.token as string).length).toBeGreaterThan(20);
    expect(server.store.userByTokenHash(r.json.token as string)).toBeNull();
    expect((await api({ op: 'users' })).json.users).toContain('alice');
  });

  it('refuses a second useradd, reissues tokens and deletes users', async () => {
    await api({ op: 'useradd', address: 'carol' });
    expect(await api({ op: 'useradd', address: 'carol' })).toMatchObject({ status: 409, json: { ok: false, code: 'E_USER_EXISTS' } });
    const t = await api({ op: 'usertoken', address: 'carol' });
    expect(t.status).toBe(200);
    expect(await api({ op: 'userdel', address: 'carol' })).toMatchObject({ status: 200 });
    expect(await api({ op: 'userdel', address: 'carol' })).toMatchObject({ status: 404, json: { code: 'E_NO_SUCH_USER' } });
    expect(await api({ op: 'usertoken', address: 'nobody' })).toMatchObject({ status: 404, json: { code: 'E_NO_SUCH_USER' } });
  });
});

describe('groups', () => {
  it('adds a group, edits its members and removes it', async () => {
    await api({ op: 'useradd', address: 'g1' });
    await api({ op: 'useradd', address: 'g2' });
    expect(await api({ op: 'groupadd', gid: 7, name: 'team', members: ['g1'] })).toMatchObject({ status: 200, json: { gid: 7, members: ['g1'] } });
    expect(await api({ op: 'groupeditmembers', gid: 7, add: ['g2'], remove: ['g1'] })).toMatchObject({ status: 200, json: { members: ['g2'] } });
    expect(await api({ op: 'groupadd', gid: 7 })).toMatchObject({ status: 409, json: { code: 'E_GROUP_EXISTS' } });
    expect(await api({ op: 'groupeditmembers', gid: 7, add: ['ghost'] })).toMatchObject({ status: 404, json: { code: 'E_NO_SUCH_USER' } });
    expect(await api({ op: 'groupdel', gid: 7 })).toMatchObject({ status: 200 });
    expect(await api({ op: 'groupeditmembers', gid: 7, add: ['g1'] })).toMatchObject({ status: 404, json: { code: 'E_NO_SUCH_GROUP' } });
  });
});

describe('messages', () => {
  it('sends into the chain as a given user: stored for an offline recipient, consumed by a module, refused for unknown users', async () => {
    await api({ op: 'useradd', address: 'm1' });
    await api({ op: 'useradd', address: 'm2' });
    expect(await api({ op: 'message', from: 'm1', to: 'm2', data: 'hello', id: 5 })).toMatchObject({ status: 200, json: { id: 5, status: 1, verdict: 'pass' } });
    expect(server.store.countPending('m2')).toBe(1);
    expect(await api({ op: 'message', from: 'm1', to: 'm2', data: 'this is forbidden', id: 6 })).toMatchObject({ status: 200, json: { status: 1, verdict: 'consumed' } });
    expect(server.store.countPending('m2')).toBe(1);
    expect(await api({ op: 'message', from: 'm1', to: 'ghost', data: 'x', id: 7 })).toMatchObject({ status: 200, json: { status: 0x83 } });
    expect(await api({ op: 'message', from: 'ghost', to: 'm1', data: 'x' })).toMatchObject({ status: 404, json: { code: 'E_NO_SUCH_USER' } });
    expect(await api({ op: 'message', from: 'm1', data: 'x' })).toMatchObject({ status: 400, json: { code: 'E_NO_DESTINATION' } });
  });

  it('lists online users', async () => {
    expect(await api({ op: 'online' })).toMatchObject({ status: 200, json: { online: [] } });
  });
});

describe('bad requests', () => {
  const cases: [string, unknown, string | null, number, string][] = [
    ['no token', { op: 'users' }, null, 401, 'E_UNAUTHORIZED'],
    ['wrong token', { op: 'users' }, 'nope', 401, 'E_UNAUTHORIZED'],
    ['not JSON', '{op:', TOKEN, 400, 'E_BAD_JSON'],
    ['not an object', '[1,2]', TOKEN, 400, 'E_BAD_JSON'],
    ['unknown op', { op: 'launch' }, TOKEN, 400, 'E_UNKNOWN_OP'],
    ['inherited name as op', { op: 'constructor' }, TOKEN, 400, 'E_UNKNOWN_OP'],
    ['missing field', { op: 'useradd' }, TOKEN, 400, 'E_BAD_REQUEST'],
    ['bad address', { op: 'useradd', address: 'a\u0001b' }, TOKEN, 400, 'E_BAD_ADDRESS'],
    ['bad gid', { op: 'groupadd', gid: -1 }, TOKEN, 400, 'E_BAD_REQUEST'],
  ];
  for (const [name, body, token, status, code] of cases) {
    it(`${name}: ${status} ${code}`, async () => {
      const r = await api(body, token);
      expect(r.status).toBe(status);
      expect(r.json).toMatchObject({ ok: false, code });
      expect(String(r.json.message).length).toBeGreaterThan(10);
    });
  }

  it('token in the body works too; GET is refused; oversized bodies get 413', async () => {
    expect((await api({ op: 'users', token: TOKEN }, null)).status).toBe(200);
    expect((await fetch(url)).status).toBe(405);
    const big = await fetch(url, { method: 'POST', headers: { Authorization: `Bearer ${TOKEN}` }, body: 'x'.repeat(2 * 1024 * 1024) });
    expect(big.status).toBe(413);
  });
});
