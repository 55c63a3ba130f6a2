// The cluster bus's outbox (lib/cluster/outbox.ts) without NATS: what NATS
// was given never changes afterwards (the nats client keeps a reference to
// it until it writes it, and callers reuse their item buffers), items keep
// their order per subject across batches and flushes, and what waits while
// NATS is away comes out intact and in order; also under random
// interleavings of adds, flushes, outages and refused sends.
import { describe, expect, it } from 'vitest';
import { decodeFrame, FrameKind } from '../lib/cluster/frame';
import { Outbox } from '../lib/cluster/outbox';

const origin = new TextEncoder().encode('node-a');

function harness(opts = { limit: 1 << 20, maxBatch: 2048 }) {
  // What the "NATS client" was handed, kept by reference as the nats client keeps it until it writes.
  const given: { subject: string; data: Uint8Array }[] = [];
  let accept = true;
  const box = new Outbox(origin, opts, (subject, data) => {
    if (!accept) return false;
    given.push({ subject, data });
    return true;
  });
  const items = (subject: string) =>
    given.filter((g) => g.subject === subject).flatMap((g) => decodeFrame(g.data).items.map((i) => Buffer.from(i).toString()));
  return { box, given, items, setAccept: (a: boolean) => (accept = a) };
}

describe('cluster outbox', () => {
  it('frames handed over stay as they were while later turns reuse the staging buffers; order per subject holds', () => {
    const { box, given, items } = harness();
    box.resume();
    const scratch = Buffer.alloc(200);
    const expected = new Map<string, string[]>();
    let seq = 0;
    for (let turn = 0; turn < 50; turn++) {
      for (let k = 0; k < 40; k++) {
        const subject = `u.${(k * 7 + turn) % 13}`;
        // The caller reuses one buffer for every item (as the cluster room does).
        const text = `${subject}#${seq++}:${'x'.repeat((seq * 31) % 150)}`;
        const n = scratch.write(text);
        box.add(subject, FrameKind.User, scratch.subarray(0, n));
        if (!expected.has(subject)) expected.set(subject, []);
        expected.get(subject)!.push(text);
      }
      box.flush();
    }
    expect(given.length).toBeGreaterThan(50);
    for (const [subject, texts] of expected) expect(items(subject)).toEqual(texts);
    expect(box.heldBytes).toBe(0);
  });

  it('a batch past maxBatch is cut: both frames arrive whole, in order', () => {
    const { box, given, items } = harness({ limit: 1 << 20, maxBatch: 600 });
    box.resume();
    const texts = Array.from({ length: 30 }, (_, i) => `item-${i}-${'y'.repeat(90)}`);
    for (const t of texts) box.add('u.one', FrameKind.User, Buffer.from(t));
    box.flush();
    expect(given.length).toBeGreaterThan(4);
    for (const g of given) expect(g.data.length).toBeLessThanOrEqual(600);
    expect(items('u.one')).toEqual(texts);
  });

  it('while NATS is away frames wait, unchanged by the turns after them, and go in order when it is back', () => {
    const { box, given, items, setAccept } = harness();
    box.resume();
    box.add('u.a', FrameKind.User, Buffer.from('before'));
    box.flush();
    box.pause();
    const texts: string[] = [];
    for (let turn = 0; turn < 20; turn++) {
      for (let k = 0; k < 5; k++) {
        const t = `t${turn}k${k}`;
        texts.push(t);
        box.add('u.a', FrameKind.User, Buffer.from(t));
      }
      box.flush();
    }
    expect(given.length).toBe(1);
    expect(box.heldBytes).toBeGreaterThan(0);
    // NATS refuses the first attempt after it is back: nothing is lost or reordered.
    setAccept(false);
    box.resume();
    expect(given.length).toBe(1);
    setAccept(true);
    box.flush();
    expect(items('u.a')).toEqual(['before', ...texts]);
    expect(box.heldBytes).toBe(0);
  });

  it('drop() reports every item still held, staged or waiting', () => {
    const { box } = harness();
    box.pause();
    box.add('u.a', FrameKind.User, Buffer.from('1'));
    box.flush();
    box.add('u.a', FrameKind.User, Buffer.from('2'));
    box.add('u.b', FrameKind.User, Buffer.from('3'));
    expect(box.drop()).toBe(3);
    expect(box.heldBytes).toBe(0);
  });

  it('random adds, flushes, outages and refused sends: every item arrives once, in order per subject', () => {
    for (let seed = 1; seed < 200; seed++) {
      let x = seed;
      const rnd = (n: number) => {
        x = (x * 1103515245 + 12345) & 0x7fffffff;
        return (x >>> 16) % n;
      };
      const given: { subject: string; data: Uint8Array }[] = [];
      const box = new Outbox(origin, { limit: 1 << 20, maxBatch: 300 }, (subject, data) => {
        if (rnd(10) === 0) return false;
        given.push({ subject, data });
        return true;
      });
      box.resume();
      const expected = new Map<string, string[]>();
      const scratch = new Uint8Array(400);
      for (let step = 0; step < 400; step++) {
        const r = rnd(20);
        if (r < 14) {
          const subject = `s${rnd(5)}`;
          const t = `${subject}-${step}-${'z'.repeat(rnd(120))}`;
          const n = new TextEncoder().encodeInto(t, scratch).written;
          box.add(subject, subject === 's0' ? FrameKind.Broadcast : FrameKind.User, scratch.subarray(0, n));
          scratch.fill(0);
          if (!expected.has(subject)) expected.set(subject, []);
          expected.get(subject)!.push(t);
        } else if (r < 17) box.flush();
        else if (r < 18) box.pause();
        else box.resume();
      }
      box.resume();
      for (let i = 0; i < 50 && box.heldBytes; i++) box.flush();
      expect(box.heldBytes).toBe(0);
      for (const [subject, texts] of expected) {
        const got = given.filter((g) => g.subject === subject).flatMap((g) => decodeFrame(g.data).items.map((i) => Buffer.from(i).toString()));
        expect(got, `seed ${seed}, ${subject}`).toEqual(texts);
      }
    }
  });
});
