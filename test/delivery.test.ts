// The delivery engine through its binding (lib/delivery.ts), with a real
// core and no server: each decision route() made in lib/server/server.ts,
// checked write by write. test/native/router_test.cc covers the same
// decisions without Node, under AddressSanitizer's leak checker.
import { afterEach, describe, expect, it } from 'vitest';
import { Core } from '../lib/core';
import { CommitDue, Delivery, StoreOpKind, type DeliverySettings } from '../lib/delivery';
import { decodeServerFrame } from '../lib/client/codec';
import { native, type NativeCoreHandle } from '../lib/native';

const open: Core[] = [];
afterEach(() => {
  for (const c of open.splice(0)) c.close();
});

function setup(settings: Partial<DeliverySettings> = {}, groups: Record<number, string[]> = {}) {
  const core = Core.open({ configText: '' }, { onLog: () => {} });
  open.push(core);
  const d = new Delivery(
    { durable: true, graceMs: 50, maxConnections: 64, maxInboxMessages: 10_000, maxInboxBytes: 64 << 20, ...settings },
    { loadGroup: (gid) => groups[gid] ?? null, inboxCount: () => [0, 0] },
    core,
  );
  const names: string[] = [];
  const user = (name: string) => {
    const id = d.userAdd(name);
    names[id] = name;
    return id;
  };
  const online = (u: number, binary = false) => {
    const c = d.login(u, binary);
    d.backlogDone(c);
    return c;
  };
  /** One frame from user `from` on connection `conn`: the core's submit, then the engine. */
  const send = (from: number, conn: number, frame: object, now = 1000) => {
    const of = d.outFormat();
    const v = core.submitRaw(names[from], Buffer.from(JSON.stringify(frame)), of);
    expect(v).toBeGreaterThanOrEqual(0);
    return d.route(from, conn, now, of);
  };
  /** The batch's writes as [conn, decoded frame]. */
  const writes = () => {
    const out: [number, Record<string, unknown>][] = [];
    for (let i = 0; i < d.writeCount; i++) {
      const bytes = d.writeBytes(i);
      const text = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString();
      const f = decodeServerFrame(d.writeBinary(i) ? bytes : text) as unknown as Record<string, unknown>;
      out.push([d.writeConn(i), d.writeBinary(i) ? { binary: true, ...f } : f]);
    }
    return out;
  };
  const commit = () => {
    const e = d.commitBegin();
    d.committed(e);
  };
  return { core, d, user, online, send, writes, commit };
}

/** What a client reads of a frame: the fields that matter here. */
function msg(id: number, from: string, to: string, extra: object = {}) {
  return expect.objectContaining({ op: 'msg', id, from, to, ...extra });
}
function status(id: number, from: string, st: number, extra: object = {}) {
  return expect.objectContaining({ op: 'status', id, from, status: st, ...extra });
}

describe('sessions', () => {
  it('login gives dense connection ids; logout of the last one says so', () => {
    const { d, user } = setup();
    const alice = user('alice');
    const c1 = d.login(alice, false);
    const c2 = d.login(alice, true);
    expect([c1, c2]).toEqual([0, 1]);
    expect(d.outFormat()).toBe(2); // both forms: JSON and binary devices
    expect(d.logout(c1)).toBe(false);
    expect(d.logout(c2)).toBe(true);
    expect(d.login(alice, false)).toBe(1); // ids are reused
  });

  it('route() without the core it reads says so with E_BAD_ARGUMENT', () => {
    const d = new Delivery({ durable: false, graceMs: 0, maxConnections: 4, maxInboxMessages: 10, maxInboxBytes: 1000 });
    expect(() => d.route(0, -1, 0, 0)).toThrow(expect.objectContaining({ code: 'E_BAD_ARGUMENT' }));
  });

  it('takes only a core\'s handle as its core, not another wrapped object', () => {
    const settings = { durable: false, graceMs: 0, maxConnections: 4, maxInboxMessages: 10, maxInboxBytes: 1000 };
    const other = new native.Delivery(settings, {});
    expect(() => new native.Delivery(settings, {}, other as unknown as NativeCoreHandle)).toThrow(expect.objectContaining({ code: 'E_BAD_ARGUMENT' }));
  });

  it('grows past maxConnections, as the server limits connections itself: ids stay dense and the owed counts move with them', () => {
    const { d, user } = setup({ maxConnections: 1 });
    const alice = user('alice');
    expect(d.login(alice, false)).toBe(0);
    d.owe(0);
    const ids = Array.from({ length: 100 }, () => d.login(alice, false));
    expect(ids).toEqual(Array.from({ length: 100 }, (_, i) => i + 1));
    expect(d.owed.length).toBeGreaterThanOrEqual(101);
    expect(d.owed[0]).toBe(2);
    d.owe(100);
    expect(d.owed[100]).toBe(2);
    // A closed id is the next one given.
    d.logout(50);
    expect(d.login(alice, true)).toBe(50);
  });
});

describe('1:1 messages, durable off', () => {
  it('an online recipient gets the copy now, the sender "sent" now, in the same batch', () => {
    const { d, user, online, send, writes } = setup({ durable: false });
    const alice = user('alice'), bob = user('bob');
    const a = online(alice), b = online(bob);
    expect(send(alice, a, { op: 'msg', id: 1, to: 'bob', data: 'hi' })).toBe(1);
    expect(writes()).toEqual([
      [b, msg(1, 'alice', 'bob', { text: 'hi' })],
      [a, status(1, 'bob', 1)],
    ]);
    expect(d.writeDelivery(0)).toBe(true);
    expect(d.writeDelivery(1)).toBe(false);
    expect(d.opCount).toBe(0);
    expect(d.commit).toBe(CommitDue.None);
    expect(d.owed[b]).toBe(2);
    expect(d.talked).toBe(true);
  });

  it('owed: two per message written, none for a receipt or a device still pumping, capped at 2 x maxInboxMessages', () => {
    const { d, user, online, send } = setup({ durable: false, maxInboxMessages: 2 });
    const alice = user('alice'), bob = user('bob');
    const a = online(alice), b = online(bob);
    send(alice, a, { op: 'msg', id: 1, to: 'bob', flags: 1, data: 'x' });
    expect(d.owed[b]).toBe(2);
    send(bob, b, { op: 'status', id: 1, to: 'alice', status: 2 });
    expect(d.writeCount).toBe(1); // the receipt, which alice does not answer
    expect(d.owed[a]).toBe(0);
    const pumping = d.login(bob, false);
    for (let id = 2; id < 6; id++) send(alice, a, { op: 'msg', id, to: 'bob', data: 'x' });
    expect(d.owed[b]).toBe(4);
    expect(d.owed[pumping]).toBe(0); // its backlog brings the copies, and owes then
    for (let i = 0; i < 3; i++) d.owe(pumping);
    expect(d.owed[pumping]).toBe(4);
  });

  it('an offline recipient: the copy goes to the store and "sent" waits for the commit', () => {
    const { d, user, online, send, writes, commit } = setup({ durable: false });
    const alice = user('alice'), bob = user('bob');
    const a = online(alice);
    send(alice, a, { op: 'msg', id: 2, to: 'bob', data: 'later', expiry: 60 }, 5000);
    expect(writes()).toEqual([]);
    expect(d.opCount).toBe(1);
    expect(d.op(0)).toMatchObject({ kind: StoreOpKind.Enqueue, recipient: bob, sender: alice, id: 2, expiry: 60, expiresAt: 65_000 });
    expect(d.op(0).payload.toString()).toBe('later');
    expect(d.commit).toBe(CommitDue.Soon);
    commit();
    expect(writes()).toEqual([[a, status(2, 'bob', 1)]]);
  });

  it('a binary device gets the binary form, a JSON device of the same user the JSON form', () => {
    const { user, online, send, writes } = setup({ durable: false });
    const alice = user('alice'), bob = user('bob');
    const a = online(alice, true);
    const bj = online(bob, false), bb = online(bob, true);
    send(alice, a, { op: 'msg', id: 3, to: 'bob', data: 'x' });
    const w = writes();
    expect(w).toHaveLength(3);
    expect(w).toContainEqual([bj, msg(3, 'alice', 'bob')]);
    expect(w).toContainEqual([bb, expect.objectContaining({ binary: true, op: 'msg', id: 3, from: 'alice', to: 'bob' })]);
    // The sender's "sent" in the form its frame came in (JSON here).
    expect(w).toContainEqual([a, status(3, 'bob', 1)]);
  });

  it('failures: INVALIDDEST for an unknown user, NOTACTIVE for transient to offline', () => {
    const { d, user, online, send, writes } = setup({ durable: false });
    const alice = user('alice');
    user('bob');
    const a = online(alice);
    expect(send(alice, a, { op: 'msg', id: 4, to: 'nobody', data: 'x' })).toBe(0x83);
    expect(writes()).toEqual([[a, status(4, 'nobody', 0x83)]]);
    expect(send(alice, a, { op: 'msg', id: 5, to: 'bob', flags: 4, data: 'x' })).toBe(0x81);
    expect(d.counters()).toMatchObject({ receivedFailed: 2, receivedPass: 0 });
  });
});

describe('groups', () => {
  it('each online member gets the copy, the sender none, an offline member a stored copy; BLOCKED for a non-member', () => {
    const { d, user, online, send, writes, commit } = setup({ durable: false }, { 42: ['alice', 'bob', 'carol'] });
    const alice = user('alice'), bob = user('bob'), carol = user('carol'), dave = user('dave');
    const a = online(alice), b = online(bob), dv = online(dave);
    send(alice, a, { op: 'msg', id: 6, gid: 42, flags: 1, data: 'g' });
    expect(writes()).toEqual([[b, expect.objectContaining({ op: 'msg', id: 6, from: 'alice', groupid: 42 })]]);
    expect(d.op(0)).toMatchObject({ kind: StoreOpKind.Enqueue, recipient: carol, gid: 42 });
    commit();
    expect(writes()).toEqual([[a, expect.objectContaining({ op: 'status', id: 6, status: 1, groupid: 42 })]]);
    // The receipt asked for names the group.
    send(bob, b, { op: 'status', id: 6, to: 'alice', status: 2 });
    expect(writes()).toEqual([[a, status(6, 'bob', 2, { groupid: 42 })]]);
    expect(send(dave, dv, { op: 'msg', id: 7, gid: 42, data: 'x' })).toBe(0x88);
    expect(send(dave, dv, { op: 'msg', id: 8, gid: 43, data: 'x' })).toBe(0x83);
  });
});

describe('receipts', () => {
  it('a delivered receipt goes back only when the message asked for it, once', () => {
    const { user, online, send, writes } = setup({ durable: false });
    const alice = user('alice'), bob = user('bob');
    const a = online(alice), b = online(bob);
    send(alice, a, { op: 'msg', id: 9, to: 'bob', data: 'x' });
    send(bob, b, { op: 'status', id: 9, to: 'alice', status: 2 });
    expect(writes()).toEqual([]);
    send(alice, a, { op: 'msg', id: 10, to: 'bob', flags: 1, data: 'x' });
    send(bob, b, { op: 'status', id: 10, to: 'alice', status: 2 });
    expect(writes()).toEqual([[a, status(10, 'bob', 2)]]);
    send(bob, b, { op: 'status', id: 10, to: 'alice', status: 2 });
    expect(writes()).toEqual([]);
  });

  it('a group receipt in both forms runs the status hooks once, in the core, not again per form', async () => {
    const { core, d, user, online, send, writes } = setup({ durable: false }, { 42: ['alice', 'bob', 'carol'] });
    const seen: number[] = [];
    await core.use('watch', { onMessageStatus: (st) => void seen.push(st.status) });
    const alice = user('alice'), bob = user('bob'), carol = user('carol');
    const a = online(alice), b = online(bob);
    online(carol, true); // a binary reader: every frame in both forms
    expect(d.outFormat()).toBe(2);
    send(alice, a, { op: 'msg', id: 12, gid: 42, flags: 1, data: 'g' });
    seen.length = 0;
    send(bob, b, { op: 'status', id: 12, to: 'alice', status: 2 });
    expect(writes()).toEqual([[a, status(12, 'bob', 2, { groupid: 42 })]]);
    expect(seen).toEqual([2]);
  });

  it('a transient group message an offline member misses tracks no receipt flags for it', () => {
    const { d, user, online, send, writes } = setup({}, { 42: ['alice', 'bob', 'dave'] });
    const alice = user('alice'), bob = user('bob'), dave = user('dave');
    const a = online(alice), b = online(bob);
    send(alice, a, { op: 'msg', id: 13, gid: 42, flags: 5, data: 'typing' });
    // dave connects later and claims it: no receipt, he never got it.
    const dv = online(dave);
    send(dave, dv, { op: 'status', id: 13, to: 'alice', status: 2 });
    expect(writes()).toEqual([]);
    send(bob, b, { op: 'status', id: 13, to: 'alice', status: 2 });
    expect(writes()).toEqual([[a, status(13, 'bob', 2, { groupid: 42 })]]);
    void d;
  });

  it('a delivered lowers the inbox count only through inboxRemoved(), when the store says a copy was deleted', () => {
    const { d, user, online, send } = setup({ maxInboxMessages: 1 });
    const alice = user('alice'), bob = user('bob');
    const a = online(alice);
    send(alice, a, { op: 'msg', id: 14, to: 'bob', data: 'x' }, 1000); // stored: bob's inbox is full
    const b = online(bob); // and confirms nothing of it
    // Within a second of the count's read: the host's count (0 here) is not read again.
    expect(send(alice, a, { op: 'msg', id: 15, to: 'bob', flags: 4, data: 'typing' }, 1100)).toBe(1);
    send(bob, b, { op: 'status', id: 15, to: 'alice', status: 2 }, 1200);
    expect(d.op(0)).toMatchObject({ kind: StoreOpKind.Ack, recipient: bob, sender: alice, id: 15 });
    expect(send(alice, a, { op: 'msg', id: 16, to: 'bob', data: 'x' }, 1300)).toBe(0x82);
    d.inboxRemoved(bob);
    expect(send(alice, a, { op: 'msg', id: 17, to: 'bob', data: 'x' }, 1400)).toBe(1);
  });

  it('durable on: delivered of a stored copy deletes it', () => {
    const { d, user, online, send } = setup({ graceMs: 0 });
    const alice = user('alice'), bob = user('bob');
    const b = online(bob);
    send(bob, b, { op: 'status', id: 11, to: 'alice', status: 2 });
    expect(d.opCount).toBe(1);
    expect(d.op(0)).toMatchObject({ kind: StoreOpKind.Ack, recipient: bob, sender: alice, id: 11 });
  });
});

describe('live copies (durable on, durable_grace)', () => {
  it('written at once; delivered confirms it without the store; "sent" at once, the receipt behind it, no commit', () => {
    const { d, user, online, send, writes } = setup();
    const alice = user('alice'), bob = user('bob');
    const a = online(alice), b = online(bob);
    send(alice, a, { op: 'msg', id: 12, to: 'bob', flags: 1, data: 'live' }, 1000);
    expect(writes()).toEqual([[b, msg(12, 'alice', 'bob')]]);
    expect(d.opCount).toBe(0);
    expect(d.liveWait).toBe(50);
    expect(d.liveCount()).toBe(1);
    send(bob, b, { op: 'status', id: 12, to: 'alice', status: 2 }, 1010);
    expect(d.liveCount()).toBe(0);
    expect(writes()).toEqual([
      [a, status(12, 'bob', 1)],
      [a, status(12, 'bob', 2)],
    ]);
    expect(d.opCount).toBe(0);
    expect(d.commit).toBe(CommitDue.None);
  });

  it('not confirmed within the grace: stored, then "sent" after the commit', () => {
    const { d, user, online, send, writes, commit } = setup();
    const alice = user('alice'), bob = user('bob');
    const a = online(alice);
    online(bob);
    send(alice, a, { op: 'msg', id: 13, to: 'bob', data: 'slow' }, 1000);
    d.expire(1050);
    expect(d.opCount).toBe(1);
    expect(d.op(0)).toMatchObject({ kind: StoreOpKind.Enqueue, recipient: bob, sender: alice, id: 13 });
    expect(d.op(0).payload.toString()).toBe('slow');
    expect(d.liveWait).toBe(-1);
    commit();
    expect(writes()).toEqual([[a, status(13, 'bob', 1)]]);
  });

  it('the recipient disconnecting stores its live copies', () => {
    const { d, user, online, send } = setup();
    const alice = user('alice'), bob = user('bob');
    const a = online(alice), b = online(bob);
    send(alice, a, { op: 'msg', id: 14, to: 'bob', data: '1' }, 1000);
    send(alice, a, { op: 'msg', id: 15, to: 'bob', data: '2' }, 1001);
    expect(d.logout(b)).toBe(true);
    expect([d.op(0).id, d.op(1).id]).toEqual([14, 15]);
    expect(d.commit).toBe(CommitDue.Soon);
  });
});

describe('the commit handshake', () => {
  it('durable on: held copies come out of committed(), before the "sent"; a later epoch waits', () => {
    const { d, user, online, send, writes } = setup({ graceMs: 0 });
    const alice = user('alice'), bob = user('bob');
    const a = online(alice), b = online(bob);
    send(alice, a, { op: 'msg', id: 16, to: 'bob', data: 'one' });
    expect(writes()).toEqual([]);
    const e1 = d.commitBegin();
    send(alice, a, { op: 'msg', id: 17, to: 'bob', data: 'two' });
    d.committed(e1);
    expect(writes()).toEqual([
      [b, msg(16, 'alice', 'bob')],
      [a, status(16, 'bob', 1)],
    ]);
    const e2 = d.commitBegin();
    d.committed(e2);
    expect(writes()).toEqual([
      [b, msg(17, 'alice', 'bob')],
      [a, status(17, 'bob', 1)],
    ]);
  });

  it('the backend API: a stored copy asks for the commit now', () => {
    const { d, user, send } = setup();
    const alice = user('alice');
    user('bob');
    expect(send(alice, -1, { op: 'msg', id: 18, to: 'bob', data: 'api' })).toBe(1);
    expect(d.commit).toBe(CommitDue.Now);
    expect(d.writeCount).toBe(0);
  });

  it('a batch larger than the views grows them', () => {
    const { d, user, online, send } = setup({ durable: false, maxConnections: 400 });
    const alice = user('alice'), bob = user('bob');
    const a = online(alice);
    const conns: number[] = [];
    for (let i = 0; i < 300; i++) conns.push(online(bob));
    send(alice, a, { op: 'msg', id: 19, to: 'bob', data: 'x'.repeat(100) });
    expect(d.writeCount).toBe(301);
    expect(new Set(Array.from({ length: 300 }, (_, i) => d.writeConn(i)))).toEqual(new Set(conns));
    expect(Buffer.from(d.writeBytes(299)).toString()).toContain('x'.repeat(100));
  });
});

describe('module messages and the per-recipient path', () => {
  it('a module message is stored and held for the commit; an unknown destination is -1', () => {
    const { d, user, online, writes, commit } = setup();
    user('alice');
    const bob = user('bob');
    const b = online(bob);
    expect(d.moduleMessage('alice', { to: 'bob', id: 20, refid: 0, groupid: 0, flags: 0, type: 0, expiry: 0 }, Buffer.from('m'), 1000)).toBe(0);
    expect(d.opCount).toBe(1);
    commit();
    expect(writes()).toEqual([[b, msg(20, 'alice', 'bob', { text: 'm' })]]);
    expect(d.moduleMessage('alice', { to: 'nobody', id: 21, refid: 0, groupid: 0, flags: 0, type: 0, expiry: 0 }, Buffer.from('m'), 1000)).toBe(-1);
  });

  it('with send/format middleware, route() lists the recipients and delivers nothing itself', () => {
    const { d, user, online, send, writes } = setup({ durable: false, perRecipientStages: true }, { 7: ['alice', 'bob', 'carol'] });
    const alice = user('alice'), bob = user('bob'), carol = user('carol');
    const a = online(alice);
    expect(send(alice, a, { op: 'msg', id: 22, gid: 7, data: 'x' })).toBe(1);
    expect(d.perRecipient).toBe(true);
    expect(d.recipients()).toEqual([alice, bob, carol]);
    expect(writes()).toEqual([]);
    const stored = d.deliverCopy(carol, alice, { id: 22, refid: 0, groupid: 7, flags: 0, type: 0, expiry: 0 }, Buffer.from('x'), 1000);
    expect(stored).toBe(true);
  });
});

describe('one call per frame', () => {
  it('submit() runs the core and routes; a refused frame is its wire error, with no batch', () => {
    const { d, user, online, writes } = setup({ durable: false });
    const alice = user('alice'), bob = user('bob');
    const a = online(alice), b = online(bob);
    expect(d.submit(alice, a, Buffer.from(JSON.stringify({ op: 'msg', id: 30, to: 'bob', data: 'one call' })), 1000)).toBe(0);
    expect(d.status).toBe(1);
    expect(d.submittedFormat).toBe(0);
    expect(writes()).toEqual([
      [b, msg(30, 'alice', 'bob', { text: 'one call' })],
      [a, status(30, 'bob', 1)],
    ]);
    expect(d.submit(alice, a, Buffer.from('{"op":"msg"'), 1000)).toBeLessThan(0);
  });

  it('a deferred message is routed from its completion, in the forms it was encoded in', async () => {
    const { core, d, user, online, writes } = setup({ durable: false });
    const alice = user('alice'), bob = user('bob');
    const a = online(alice), b = online(bob);
    await core.use('later', { onMessage: () => new Promise((resolve) => setTimeout(() => resolve('pass'), 5)) });
    const routed = new Promise<number>((resolve) => {
      core.once('complete', (_token, _verdict, from) => resolve(d.route(d.intern(from), a, 1000, of)));
    });
    expect(d.submit(alice, a, Buffer.from(JSON.stringify({ op: 'msg', id: 31, to: 'bob', data: 'wait' })), 1000)).toBe(2);
    const of = d.submittedFormat;
    expect(await routed).toBe(1);
    expect(writes()).toEqual([
      [b, msg(31, 'alice', 'bob', { text: 'wait' })],
      [a, status(31, 'bob', 1)],
    ]);
  });

  it('a failure status the engine encodes runs the modules\' status hook, as core.statusFrame() did', async () => {
    const { core, d, user, online } = setup({ durable: false });
    const seen: number[] = [];
    await core.use('watch', { onMessageStatus: (st) => void seen.push(st.status) });
    const alice = user('alice');
    const a = online(alice);
    d.submit(alice, a, Buffer.from(JSON.stringify({ op: 'msg', id: 32, to: 'nobody', data: 'x' })), 1000);
    expect(d.status).toBe(0x83);
    // The "sent" the core encoded for the sender (1), then the failure (0x83).
    expect(seen).toEqual([1, 0x83]);
  });
});

describe('a device still reading its backlog', () => {
  it('gets the statuses and transient copies that came meanwhile right after its backlog, in order; stored copies come with the backlog', () => {
    const { d, user, online, send, writes, commit } = setup();
    const alice = user('alice'), bob = user('bob');
    const a = online(alice);
    const pb = d.login(bob, false);
    // Now or never: bob is online, but his device is still sent its backlog.
    expect(send(alice, a, { op: 'msg', id: 1, to: 'bob', flags: 4, data: 'now' })).toBe(1);
    expect(writes()).toEqual([[a, status(1, 'bob', 1)]]);
    // Stored: the backlog brings it.
    send(alice, a, { op: 'msg', id: 2, to: 'bob', data: 'kept' });
    expect(writes()).toEqual([]);
    commit();
    expect(writes()).toEqual([[a, status(2, 'bob', 1)]]);
    // bob's own message, confirmed by alice: his "sent" goes at once, the receipt after his backlog.
    send(bob, pb, { op: 'msg', id: 3, to: 'alice', flags: 1, data: 'hi' });
    expect(writes()).toEqual([[a, msg(3, 'bob', 'alice', { text: 'hi' })]]);
    send(alice, a, { op: 'status', id: 3, to: 'bob', status: 2 });
    expect(writes()).toEqual([[pb, status(3, 'alice', 1)]]);
    d.backlogDone(pb);
    expect(writes()).toEqual([
      [pb, msg(1, 'alice', 'bob', { text: 'now' })],
      [pb, status(3, 'alice', 2)],
    ]);
    expect(d.owed[pb]).toBe(2); // the transient copy may be answered
    // Written once.
    d.backlogDone(pb);
    expect(writes()).toEqual([]);
  });

  it('that logs out drops what waited for it: the next connection with its id gets none of it', () => {
    const { d, user, online, send, writes } = setup();
    const alice = user('alice'), bob = user('bob');
    const a = online(alice);
    const pb = d.login(bob, false);
    send(alice, a, { op: 'msg', id: 1, to: 'bob', flags: 4, data: 'now' });
    d.logout(pb);
    const again = d.login(bob, false);
    expect(again).toBe(pb);
    d.backlogDone(again);
    expect(writes()).toEqual([]);
  });

  it('on another node: a transient copy and a receipt that cross nodes wait for its backlog', () => {
    const n1 = setup();
    const n2 = setup();
    const alice1 = n1.user('alice'), bob1 = n1.user('bob');
    const alice2 = n2.user('alice'), bob2 = n2.user('bob');
    const a = n1.online(alice1);
    const a2 = n1.d.login(alice1, false); // alice's second device on node 1, still sent its backlog
    const b = n2.d.login(bob2, false);
    n1.d.setRemote(bob1, 1);
    n2.d.setRemote(alice2, 1);
    const fields = { id: 41, refid: 0, groupid: 0, flags: 4, type: 0, expiry: 0 };
    n2.d.remoteMessage(bob2, n2.d.intern('alice'), fields, Buffer.from('now'), false, 1000);
    expect(n2.writes()).toEqual([]);
    n2.d.backlogDone(b);
    expect(n2.writes()).toEqual([[b, msg(41, 'alice', 'bob', { text: 'now' })]]);
    // bob's node kept the flags of alice's message 42 and asks for the receipt on every node of alice.
    n1.send(alice1, a, { op: 'msg', id: 42, to: 'bob', flags: 1, data: 'x' });
    n1.d.remoteStatus(n1.d.intern('bob'), alice1, 42, 2, 1001, 0);
    expect(n1.writes()).toEqual([[a, status(42, 'bob', 1)], [a, status(42, 'bob', 2)]]);
    n1.d.backlogDone(a2);
    expect(n1.writes()).toEqual([[a2, status(42, 'bob', 2)]]);
  });
});

describe('two engines as two nodes (the cluster room carries their Forward operations)', () => {
  it('a live copy crosses nodes, is written there, and its delivered comes back as the sender\'s sent and receipt', () => {
    const n1 = setup();
    const n2 = setup();
    const alice1 = n1.user('alice'), bob1 = n1.user('bob');
    const alice2 = n2.user('alice'), bob2 = n2.user('bob');
    const a = n1.online(alice1);
    const b = n2.online(bob2);
    // What the nodes' announcements tell each engine.
    n1.d.setRemote(bob1, 1);
    n2.d.setRemote(alice2, 1);
    expect(n1.send(alice1, a, { op: 'msg', id: 21, to: 'bob', flags: 1, data: 'across' })).toBe(1);
    const ops = Array.from({ length: n1.d.opCount }, (_, i) => n1.d.op(i));
    // A live copy: forwarded at once, kept on node 1 until bob confirms.
    expect(ops.map((o) => o.kind)).toEqual([StoreOpKind.Forward]);
    const fwd = ops[0];
    expect(fwd.afterCommit).toBe(false);
    expect(n1.d.name(fwd.recipient)).toBe('bob');
    expect(n1.writes()).toEqual([]); // "sent" waits for the confirmation
    expect(n1.d.liveCount()).toBe(1);
    const carried = { recipient: n1.d.name(fwd.recipient), from: n1.d.name(fwd.sender), fields: { id: fwd.id, refid: fwd.refid, groupid: fwd.gid, flags: fwd.flags, type: fwd.type, expiry: fwd.expiry }, payload: Buffer.from(fwd.payload) };
    // Node 2 gets the copy.
    expect(n2.d.remoteMessage(n2.d.intern(carried.recipient), n2.d.intern(carried.from), carried.fields, carried.payload, fwd.afterCommit, 1000)).toBe(true);
    expect(n2.writes()).toEqual([[b, msg(21, 'alice', 'bob', { text: 'across', flags: 1 })]]);
    // bob's delivered on node 2: the stored copy is deleted there, the status goes to alice's node.
    expect(n2.send(bob2, b, { op: 'status', id: 21, to: 'alice', status: 2 })).toBe(2);
    const sops = Array.from({ length: n2.d.opCount }, (_, i) => n2.d.op(i));
    expect(sops.map((o) => o.kind)).toEqual([StoreOpKind.ForwardStatus, StoreOpKind.Ack]);
    const st = sops[0];
    expect([n2.d.name(st.sender), n2.d.name(st.recipient), st.id, st.status]).toEqual(['bob', 'alice', 21, 2]);
    n1.d.remoteStatus(n1.d.intern('bob'), n1.d.intern('alice'), st.id, st.status, 1001);
    // The live copy confirmed: "sent", then the receipt alice asked for.
    expect(n1.writes()).toEqual([[a, status(21, 'bob', 1)], [a, status(21, 'bob', 2)]]);
    expect(n1.d.liveCount()).toBe(0);
  });
});
