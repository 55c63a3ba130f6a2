// The "defer" extension (include/switchboard.h) as a native module author
// uses it: test/modules/deferrer.c takes a handle in on_message, returns
// SWITCHBOARD_RESULT_DEFER and resolves from its own threads; the core queues
// the conversation behind the waiting message and emits 'complete'.
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { SubmitResult } from '../lib/index';
import { Info } from '../lib/native';
import { compileModule, msg, open, tempDir, until, type Opened } from './helpers';

let dir: string;
let recorderSo: string;

interface Done {
  token: number;
  verdict: number;
  from: string;
  at: number;
  r: SubmitResult;
}
interface Harness extends Opened {
  done: Done[];
  /** Core log lines (not modules'). */
  coreLines(): string[];
}

const opened: Opened[] = [];
function start(body: string): Harness {
  const o = open(dir, body);
  opened.push(o);
  const done: Done[] = [];
  o.core.on('complete', (token, verdict, from) => done.push({ token, verdict, from, at: Date.now(), r: o.core.result(from) }));
  return {
    ...o,
    done,
    coreLines: () => {
      if (!o.core.closed) o.core.drain();
      return o.logs.filter((l) => l.module === null).map((l) => l.text);
    },
  };
}

function group(gid: number, data: string, id = 1): string {
  return JSON.stringify({ op: 'msg', id, gid, data });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

beforeAll(() => {
  dir = compileModule({ name: 'deferrer', source: 'test/modules/deferrer.c' });
  recorderSo = path.join(compileModule({ name: 'recorder', source: 'test/modules/recorder.c' }), 'mesibo_mod_recorder.so');
});

afterEach(() => {
  while (opened.length) opened.pop()!.core.close();
});

describe('a native module that decides later', () => {
  it('finds the extension at init (and no unknown one)', () => {
    const { lines } = start('module deferrer\n');
    expect(lines('deferrer')).toEqual(['deferrer defer supported: yes', 'deferrer unknown extension supported: no']);
  });

  it('completes with the replacement payload and the same id; the "sent" ack and later modules come only then', async () => {
    const { core, done, lines } = start(`module deferrer\nmodule recorder {\n path = ${recorderSo}\n tag = rec\n}\n`);
    const t0 = Date.now();
    const r = core.submit('alice', msg('bob', 'later:60:hello world', { id: 77 }));
    expect(r.verdict).toBe('deferred');
    expect(r.token).toBeGreaterThan(0);
    expect(r.frame).toBeNull();
    expect(r.ack).toBeNull();
    expect(core.counters().waiting).toBe(1);
    // Nothing after the deferring module has run, and no "sent" status yet.
    expect(lines('recorder')).toEqual([]);

    await until(() => done.length === 1);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(55);
    const d = done[0];
    expect(d).toMatchObject({ token: r.token, verdict: 0, from: 'alice' });
    expect(d.r.token).toBe(r.token);
    expect(d.r.verdict).toBe('pass');
    expect(d.r.message).toMatchObject({ id: 77, from: 'alice', to: 'bob' });
    const text = 'HELLO WORLD [deferrer after 60 ms]';
    expect(d.r.message.payload.toString()).toBe(text);
    expect(text.length).toBeGreaterThan('later:60:hello world'.length);
    expect(JSON.parse(d.r.frame!.toString())).toMatchObject({ op: 'msg', id: 77, from: 'alice', to: 'bob', data: text });
    expect(JSON.parse(d.r.ack!.toString())).toEqual({ op: 'status', id: 77, from: 'bob', status: 1 });
    expect(lines('recorder')).toEqual([
      `rec saw from=alice to=bob id=77 len=${text.length} text=${text}`,
      'rec status id=77 status=1 from=bob to=alice',
    ]);
    expect(core.counters().waiting).toBe(0);
  });

  it('encodes the completed delivery in the format submit asked for', async () => {
    const { core, done } = start('module deferrer\n');
    const r = core.submit('alice', msg('bob', 'later:5:bin'), 'binary');
    expect(r.verdict).toBe('deferred');
    await until(() => done.length === 1);
    const f = done[0].r.frame!;
    expect(f[0]).not.toBe('{'.charCodeAt(0));
    expect(f.includes(Buffer.from('BIN [deferrer after 5 ms]'))).toBe(true);
    // The ack keeps the sender's own (JSON) form.
    expect(JSON.parse(done[0].r.ack!.toString())).toMatchObject({ op: 'status', status: 1 });
  });

  it('accepts a resolve made inside on_message itself, before it returns DEFER', async () => {
    const { core, done, lines } = start('module deferrer\n');
    const a = core.submit('alice', msg('bob', 'sync:now', { id: 1 }));
    const b = core.submit('alice', msg('bob', 'next', { id: 2 }));
    expect([a.verdict, b.verdict]).toEqual(['deferred', 'deferred']);
    await until(() => done.length === 2);
    expect(done.map((d) => [d.token, d.r.message.payload.toString()])).toEqual([
      [a.token, 'NOW'],
      [b.token, 'next'],
    ]);
    expect(lines('deferrer').filter((l) => l.includes('returned'))).toEqual([]);
  });

  it('gives a transport both encodings on completion when submitRaw asked for both', async () => {
    const { core } = start('module deferrer\n');
    const got: { json: string; bin: Buffer }[] = [];
    core.on('complete', () => {
      const info = core.infoArray();
      const out = core.outBuffer();
      got.push({
        json: out.toString('utf8', 0, info[Info.FrameLen]),
        bin: Buffer.from(out.subarray(info[Info.FrameLen], info[Info.FrameLen] + info[Info.Frame2Len])),
      });
    });
    expect(core.submitRaw('alice', Buffer.from(msg('bob', 'later:5:both')), 2)).toBe(2);
    await until(() => got.length === 1);
    expect(JSON.parse(got[0].json).data).toBe('BOTH [deferrer after 5 ms]');
    expect(got[0].bin[0]).toBe(0xb5);
    expect(got[0].bin.includes(Buffer.from('BOTH [deferrer after 5 ms]'))).toBe(true);
  });

  it('drops a message resolved CONSUMED: verdict 1, no frame, the sender still hears "sent"', async () => {
    const { core, done, lines } = start(`module deferrer\nmodule recorder {\n path = ${recorderSo}\n tag = rec\n}\n`);
    const r = core.submit('alice', msg('bob', 'drop:20', { id: 9 }));
    expect(r.verdict).toBe('deferred');
    await until(() => done.length === 1);
    expect(done[0]).toMatchObject({ token: r.token, verdict: 1, from: 'alice' });
    expect(done[0].r.verdict).toBe('consumed');
    expect(done[0].r.frame).toBeNull();
    expect(JSON.parse(done[0].r.ack!.toString())).toEqual({ op: 'status', id: 9, from: 'bob', status: 1 });
    expect(lines('recorder').some((l) => l.startsWith('rec saw'))).toBe(false);
  });

  it('gives the same handle to a second switchboard_defer in on_message, and none to a thread while no on_message runs', async () => {
    const { core, done, lines } = start('module deferrer {\n idle_probe = 1\n}\n');
    await until(() => lines('deferrer').some((l) => l.includes('idle off-thread defer')));
    expect(lines('deferrer')).toContain('deferrer idle off-thread defer: null');
    expect(core.submit('alice', msg('bob', 'probe')).verdict).toBe('deferred');
    // The thread logs its result after resolving: wait for both.
    await until(() => done.length === 1 && lines('deferrer').some((l) => l.includes('probe rc=')));
    expect(done[0].r.message.payload.toString()).toBe('PROBED');
    expect(lines('deferrer')).toEqual(expect.arrayContaining(['deferrer probe same handle: yes', 'deferrer probe rc=0']));
  });

  // switchboard.h: NULL "anywhere else" includes another thread while the
  // loop thread is inside this very instance's on_message (the module holds
  // on_message until its thread has made the call).
  it('gives no handle to another thread while on_message runs', async () => {
    const { core, done, lines } = start('module deferrer\n');
    core.submit('alice', msg('bob', 'probe'));
    await until(() => done.length === 1 && lines('deferrer').some((l) => l.includes('probe rc=')));
    expect(lines('deferrer')).toContain('deferrer probe off-thread defer: null');
    expect(lines('deferrer')).toContain('deferrer probe rc=0');
  });

  it('refuses invalid resolves (bad verdict, payload over max_message_size, NULL with a length) and keeps waiting', async () => {
    const { core, done, lines, coreLines } = start('max_message_size = 1000\nmodule deferrer\n');
    const r = core.submit('alice', msg('bob', 'bad:1000'));
    expect(r.verdict).toBe('deferred');
    await until(() => done.length === 1 && lines('deferrer').some((l) => l.includes(' bad ')));
    expect(lines('deferrer')).toContain('deferrer bad verdict=-1 big=-1 null=-1 ok=0');
    expect(done[0].r.message.payload.toString()).toBe('x'.repeat(1000));
    expect(coreLines().some((l) => l.includes('switchboard_resolve with a 1001-byte payload'))).toBe(true);
  });
});

describe('conversations', () => {
  it('queues later messages of the same conversation and completes them in submit order, even a faster one', async () => {
    const { core, done, lines } = start('module deferrer {\n log = 1\n}\n');
    const a = core.submit('alice', msg('bob', 'later:80:first', { id: 1 }));
    const b = core.submit('alice', msg('bob', 'plain', { id: 2 })); // alone it would pass at once
    const c = core.submit('alice', msg('bob', 'later:1:third', { id: 3 })); // decides in 1 ms
    expect([a.verdict, b.verdict, c.verdict]).toEqual(['deferred', 'deferred', 'deferred']);
    expect(new Set([a.token, b.token, c.token]).size).toBe(3);
    expect(core.counters().waiting).toBe(3);
    // The queued ones have not reached the module yet.
    expect(lines('deferrer').filter((l) => l.includes(' saw '))).toEqual(['deferrer saw later:80:first']);

    await until(() => done.length === 3);
    expect(done.map((d) => d.token)).toEqual([a.token, b.token, c.token]);
    expect(done.map((d) => d.r.message.id)).toEqual([1, 2, 3]);
    expect(done.map((d) => d.r.message.payload.toString())).toEqual(['FIRST [deferrer after 80 ms]', 'plain', 'THIRD [deferrer after 1 ms]']);
    expect(done.every((d) => d.verdict === 0 && d.r.ack !== null)).toBe(true);
    expect(lines('deferrer').filter((l) => l.includes(' saw '))).toEqual([
      'deferrer saw later:80:first',
      'deferrer saw plain',
      'deferrer saw later:1:third',
    ]);
    expect(core.counters().waiting).toBe(0);
  });

  it('lets two instances in a row defer the same message; its conversation waits for both', async () => {
    const { core, done, lines } = start(
      `module deferrer {\n tag = one\n prefix = later:5:\n}\nmodule deferrer {\n tag = two\n}\nmodule recorder {\n path = ${recorderSo}\n tag = rec\n}\n`,
    );
    const a = core.submit('alice', msg('bob', 'later:30:hi', { id: 1 }));
    const b = core.submit('alice', msg('bob', 'plain', { id: 2 }));
    expect([a.verdict, b.verdict]).toEqual(['deferred', 'deferred']);
    await until(() => done.length === 2);
    expect(done.map((d) => d.token)).toEqual([a.token, b.token]);
    expect(done.map((d) => d.r.message.payload.toString())).toEqual(['HI [ONE AFTER 30 MS] [two after 5 ms]', 'plain']);
    expect(lines('recorder').filter((l) => l.startsWith('rec saw'))).toEqual([
      'rec saw from=alice to=bob id=1 len=37 text=HI [ONE AFTER 30 MS] [two after 5 ms]',
      'rec saw from=alice to=bob id=2 len=5 text=plain',
    ]);
  });

  it('does not block other conversations: another recipient, another sender, a group', async () => {
    const { core, done } = start('module deferrer\n');
    const head = core.submit('alice', msg('bob', 'later:150:head'));
    expect(head.verdict).toBe('deferred');
    expect(core.submit('alice', msg('carol', 'x')).verdict).toBe('pass');
    expect(core.submit('dave', msg('bob', 'x')).verdict).toBe('pass');
    expect(core.submit('alice', group(9, 'x')).verdict).toBe('pass');
    expect(core.submit('bob', msg('alice', 'x')).verdict).toBe('pass'); // the reverse direction too
    // A deferred message elsewhere is not held up by the slow head either.
    const quick = core.submit('alice', msg('carol', 'later:5:quick'));
    const behind = core.submit('alice', msg('bob', 'behind'));
    expect([quick.verdict, behind.verdict]).toEqual(['deferred', 'deferred']);
    await until(() => done.length === 3);
    expect(done.map((d) => d.token)).toEqual([quick.token, head.token, behind.token]);
    expect(done[0].at).toBeLessThan(done[1].at);
  });

  it('makes group messages their own conversation per sender and group', async () => {
    const { core, done } = start('module deferrer\n');
    const g1 = core.submit('alice', group(9, 'later:100:g-first', 1));
    const g2 = core.submit('alice', group(9, 'g-second', 2));
    expect([g1.verdict, g2.verdict]).toEqual(['deferred', 'deferred']);
    expect(core.submit('bob', group(9, 'other sender')).verdict).toBe('pass');
    expect(core.submit('alice', group(10, 'other group')).verdict).toBe('pass');
    expect(core.submit('alice', msg('bob', 'a user')).verdict).toBe('pass');
    expect(core.counters().waiting).toBe(2);
    await until(() => done.length === 2);
    expect(done.map((d) => d.token)).toEqual([g1.token, g2.token]);
    expect(done.map((d) => [d.r.message.groupid, d.r.message.id, d.r.message.payload.toString()])).toEqual([
      [9, 1, 'G-FIRST [deferrer after 100 ms]'],
      [9, 2, 'g-second'],
    ]);
  });
});

describe('timeouts', () => {
  it('passes an undecided message on after defer_timeout, logs and counts it, and voids the handle', async () => {
    const { core, done, lines, coreLines } = start('module deferrer {\n defer_timeout = 200ms\n}\n');
    const t0 = Date.now();
    const never = core.submit('alice', msg('bob', 'never', { id: 5 }));
    const behind = core.submit('alice', msg('bob', 'behind', { id: 6 }));
    const slow = core.submit('alice', msg('carol', 'later:400:slow', { id: 7 })); // decides after its timeout
    expect([never.verdict, behind.verdict, slow.verdict]).toEqual(['deferred', 'deferred', 'deferred']);
    await until(() => done.length === 3, 5000);
    const elapsed = done[0].at - t0;
    expect(elapsed).toBeGreaterThanOrEqual(190);
    expect(elapsed).toBeLessThan(1500);
    const by = new Map(done.map((d) => [d.token, d]));
    expect(by.get(never.token)!).toMatchObject({ verdict: 0 });
    expect(by.get(never.token)!.r.message.payload.toString()).toBe('never');
    expect(JSON.parse(by.get(never.token)!.r.frame!.toString()).data).toBe('never');
    expect(by.get(behind.token)!.r.message.payload.toString()).toBe('behind');
    expect(done.findIndex((d) => d.token === behind.token)).toBeGreaterThan(done.findIndex((d) => d.token === never.token));
    expect(by.get(slow.token)!.r.message.payload.toString()).toBe('later:400:slow'); // not the late replacement
    const timeouts = coreLines().filter((l) => l.includes('did not decide message'));
    expect(timeouts).toHaveLength(2);
    expect(timeouts.find((l) => l.includes('message 5 from alice'))).toMatch(/within 200 ms; it was passed on/);
    expect(core.modules[0].errors).toBe(2);
    // The late resolve finds a void handle.
    await until(() => lines('deferrer').includes("deferrer resolve of 'slow' returned -1"), 5000);
    expect(done).toHaveLength(3);
    expect(core.counters().waiting).toBe(0);
  });

  it('drops it instead with on_error = consume', async () => {
    const { core, done, coreLines } = start('module deferrer {\n defer_timeout = 0.2\n on_error = consume\n}\n');
    const t0 = Date.now();
    const r = core.submit('alice', msg('bob', 'never', { id: 5 }));
    await until(() => done.length === 1, 5000);
    expect(done[0].at - t0).toBeGreaterThanOrEqual(190);
    expect(done[0]).toMatchObject({ token: r.token, verdict: 1 });
    expect(done[0].r.frame).toBeNull();
    expect(coreLines().filter((l) => l.includes('did not decide message'))).toEqual([
      expect.stringMatching(/message 5 from alice within 200 ms; it was dropped/),
    ]);
    expect(core.modules[0].errors).toBe(1);
  });

  it('counts timeouts per instance', async () => {
    const { core, done } = start('module deferrer {\n defer_timeout = 100ms\n only = later\n}\nmodule deferrer {\n defer_timeout = 100ms\n}\n');
    core.submit('alice', msg('bob', 'never'));
    await until(() => done.length === 1, 5000);
    expect(core.modules.map((m) => m.errors)).toEqual([0, 1]);
  });

  const bad = ['defer_timeout = abc', 'defer_timeout = 0', 'defer_timeout = -1', 'defer_timeout = 5m', 'defer_timeout = 3601', 'defer_timeout =', 'on_error = drop', 'on_error ='];
  for (const item of bad) {
    it(`refuses "${item}" with E_CONFIG_BAD_VALUE`, () => {
      let err: unknown;
      try {
        start(`module deferrer {\n ${item}\n}\n`);
      } catch (e) {
        err = e;
      }
      expect(err).toMatchObject({ code: 'E_CONFIG_BAD_VALUE', module: 'deferrer' });
      expect((err as Error).message).toContain(item.split(' ')[0]);
    });
  }

  it('accepts the documented forms', () => {
    for (const item of ['defer_timeout = 250ms', 'defer_timeout = 2s', 'defer_timeout = 0.5', 'defer_timeout = 3600', 'on_error = pass', 'on_error = consume']) {
      expect(() => start(`module deferrer {\n ${item}\n}\n`)).not.toThrow();
    }
  });
});

describe('misuse', () => {
  it('returns FAIL for a second resolve and keeps the first decision', async () => {
    const { core, done, lines } = start('module deferrer\n');
    core.submit('alice', msg('bob', 'twice'));
    await until(() => done.length === 1 && lines('deferrer').some((l) => l.includes('twice rc1')));
    expect(lines('deferrer')).toContain('deferrer twice rc1=0 rc2=-1');
    expect(done[0].verdict).toBe(0);
    expect(done[0].r.message.payload.toString()).toBe('twice');
  });

  it('warns once and passes a DEFER without a handle', () => {
    const { core, coreLines } = start('module deferrer\n');
    const r1 = core.submit('alice', msg('bob', 'nohandle'));
    const r2 = core.submit('alice', msg('bob', 'nohandle'));
    expect([r1.verdict, r2.verdict]).toEqual(['pass', 'pass']);
    expect(r1.message.payload.toString()).toBe('nohandle');
    expect(r1.ack).not.toBeNull();
    const warnings = coreLines().filter((l) => l.includes('without taking a handle'));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain('"deferrer"');
    expect(core.counters().waiting).toBe(0);
  });

  it('voids the handle of a module that defers and then returns PASS', async () => {
    const { core, done, lines } = start('module deferrer\n');
    const r = core.submit('alice', msg('bob', 'takeback'));
    expect(r.verdict).toBe('pass');
    expect(r.message.payload.toString()).toBe('takeback');
    expect(r.frame).not.toBeNull();
    expect(r.ack).not.toBeNull();
    expect(core.counters().waiting).toBe(0);
    // Not queued behind anything: the conversation is free.
    expect(core.submit('alice', msg('bob', 'next')).verdict).toBe('pass');
    await until(() => lines('deferrer').some((l) => l.startsWith('deferrer takeback')));
    expect(lines('deferrer')).toContain('deferrer takeback rc=-1');
    core.drain();
    expect(done).toHaveLength(0);
  });
});

describe('threads', () => {
  it('2,000 messages in 20 conversations, resolved from threads: each completes once, in order per conversation', async () => {
    const { core, done, lines } = start('module deferrer\n');
    type Sent = { conv: number; seq: number; id: number; expect: string | null };
    const byToken = new Map<number, Sent>();
    const seqs = new Array(20).fill(0);
    for (let i = 0; i < 2000; i++) {
      const conv = i % 20;
      const from = `s${conv % 5}`;
      const to = `r${Math.floor(conv / 5)}`;
      const seq = seqs[conv]++;
      const ms = Math.floor(Math.random() * 6);
      const drop = i % 7 === 3;
      const text = `c${conv}-${seq}`;
      const r = core.submit(from, msg(to, drop ? `drop:${ms}` : `later:${ms}:${text}`, { id: i + 1 }));
      expect(r.verdict).toBe('deferred');
      expect(byToken.has(r.token)).toBe(false);
      byToken.set(r.token, { conv, seq, id: i + 1, expect: drop ? null : `${text.toUpperCase()} [deferrer after ${ms} ms]` });
      if (i % 50 === 49) await new Promise((r) => setImmediate(r)); // let decisions land between submits
    }
    await until(() => done.length >= 2000, 60_000);
    await sleep(50);
    core.drain();
    expect(done).toHaveLength(2000);
    expect(new Set(done.map((d) => d.token)).size).toBe(2000);
    const next = new Array(20).fill(0);
    const wrong: string[] = [];
    for (const d of done) {
      const s = byToken.get(d.token);
      if (!s) {
        wrong.push(`unknown token ${d.token}`);
        continue;
      }
      const ok =
        s.seq === next[s.conv] &&
        d.r.message.id === s.id &&
        d.from === `s${s.conv % 5}` &&
        d.r.message.to === `r${Math.floor(s.conv / 5)}` &&
        (s.expect === null ? d.verdict === 1 && d.r.frame === null : d.verdict === 0 && d.r.message.payload.toString() === s.expect);
      if (!ok && wrong.length < 5) wrong.push(`conv ${s.conv} seq ${s.seq} (expected ${next[s.conv]}) id ${d.r.message.id} verdict ${d.verdict} ${d.r.message.payload.toString()}`);
      next[s.conv] = s.seq + 1;
    }
    expect(wrong).toEqual([]);
    expect(next).toEqual(new Array(20).fill(100));
    expect(lines('deferrer').filter((l) => l.includes('returned'))).toEqual([]);
    expect(core.counters().waiting).toBe(0);
  });
});

describe('listeners', () => {
  it('a throwing "complete" listener is reported and the rest of the same drain still completes', async () => {
    const { core, done, logs } = start('module deferrer\n');
    let first = true;
    core.on('complete', () => {
      if (first) {
        first = false;
        throw new Error('boom');
      }
    });
    const a = core.submit('alice', msg('bob', 'later:10:a'));
    const b = core.submit('carol', msg('bob', 'later:10:b'));
    // Both decided by their threads before the loop drains: one batch.
    const end = Date.now() + 80;
    while (Date.now() < end) {
      // busy wait on purpose: keep the loop from draining
    }
    core.drain();
    await sleep(20);
    core.drain();
    expect(done.map((d) => d.token).sort()).toEqual([a.token, b.token].sort());
    expect(core.counters().waiting).toBe(0);
    expect(logs.some((l) => l.text.startsWith("a 'complete' listener threw: Error: boom"))).toBe(true);
  });
});

describe('messages modules send', () => {
  it('are deferred by a later instance and come out through the message event once decided', async () => {
    const { core, done, sent, lines } = start('module deferrer {\n tag = first\n only = send\n}\nmodule deferrer {\n tag = second\n only = later\n log = 1\n}\n');
    const r = core.submit('alice', msg('bot', 'send:carol', { id: 5 }));
    expect(r.verdict).toBe('pass');
    core.drain(); // the module's message enters the chain after "first" and waits at "second"
    expect(sent).toHaveLength(0);
    expect(core.counters().waiting).toBe(1);
    await until(() => sent.length === 1);
    expect(sent[0]).toMatchObject({ module: 'deferrer', from: 'bot', to: 'carol', id: 1005, refid: 5 });
    expect(sent[0].payload.toString()).toBe('FROM-MODULE [second after 10 ms]');
    expect(lines('deferrer').filter((l) => l.includes(' saw '))).toEqual(['second saw send:carol', 'second saw later:10:from-module']);
    expect(done).toHaveLength(0); // module messages have no submit token
    expect(core.counters().waiting).toBe(0);
  });
});

describe('closing while messages wait', () => {
  it('a resolve during on_cleanup fails harmlessly; nothing completes; a new core works', async () => {
    const { core, done, logs } = start('module deferrer\n');
    core.submit('alice', msg('bob', 'later:200:pending'));
    core.submit('alice', msg('bob', 'queued'));
    core.submit('carol', msg('bob', 'never'));
    expect(core.counters().waiting).toBe(3);
    core.close(); // on_cleanup waits for the module's thread, whose resolve meets a closed core
    expect(logs.map((l) => l.text)).toContain("deferrer resolve of 'pending' returned -1");
    await sleep(100);
    expect(done).toHaveLength(0);

    const again = start('module deferrer\n');
    again.core.submit('alice', msg('bob', 'later:5:again'));
    await until(() => again.done.length === 1);
    expect(again.done[0].r.message.payload.toString()).toBe('AGAIN [deferrer after 5 ms]');
  });

  it('a thread that resolves after the core and its module are gone gets FAIL and the process is fine', async () => {
    const report = path.join(tempDir(), 'report.txt');
    const { core, done } = start(`module deferrer {\n linger = 1\n report = ${report}\n}\n`);
    const r = core.submit('alice', msg('bob', 'later:150:late'));
    expect(r.verdict).toBe('deferred');
    core.close();
    expect(fs.existsSync(report)).toBe(false); // the thread is still asleep
    await until(() => fs.existsSync(report) && fs.readFileSync(report, 'utf8').endsWith('\n'), 5000);
    expect(fs.readFileSync(report, 'utf8')).toBe('resolve=-1 message=-1\n');
    await sleep(50);
    expect(done).toHaveLength(0);

    const again = start('module deferrer\n');
    const t = again.core.submit('alice', msg('bob', 'later:5:again'));
    await until(() => again.done.length === 1);
    expect(again.done[0]).toMatchObject({ token: t.token, verdict: 0 });
    expect(again.done[0].r.message.payload.toString()).toBe('AGAIN [deferrer after 5 ms]');
  });
});
