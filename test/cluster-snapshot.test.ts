// The location snapshot a node sends on `loc` when another node (or NATS)
// comes back (lib/server/cluster.ts, docs/cluster.md "Where users are"):
// its parts, as the receiving node reads them.
import { describe, expect, it } from 'vitest';
import { readSnapshotPart, snapshotParts, validSnapshotPart } from '../lib/server/cluster';

describe('location snapshots', () => {
  it('a long list travels in parts under the size limit, numbered alike, only the last marked last, every user once', () => {
    const users = Array.from({ length: 5000 }, (_, i) => `user-${i}-${'x'.repeat(i % 40)}`);
    const parts = snapshotParts(users, 77);
    expect(parts.length).toBeGreaterThan(2);
    const seen: string[] = [];
    parts.forEach((p, i) => {
      expect(p.length).toBeLessThanOrEqual(6 + 60_000);
      expect(validSnapshotPart(p)).toBe(true);
      const r = readSnapshotPart(p);
      expect(r.id).toBe(77);
      expect(r.last).toBe(i === parts.length - 1);
      seen.push(...r.users);
    });
    expect(seen).toEqual(users);
  });

  it('an empty list is one last part with nobody: the receiver drops every user of that node', () => {
    const parts = snapshotParts([], 3);
    expect(parts).toHaveLength(1);
    expect(readSnapshotPart(parts[0])).toEqual({ id: 3, last: true, users: [] });
  });

  it('names outside ASCII and a name longer than a small part keep their bytes', () => {
    const users = ['Zoë', '用户', 'a'.repeat(255), '🙂x'];
    const parts = snapshotParts(users, 0xffffffff, 10);
    expect(parts).toHaveLength(4);
    expect(parts.flatMap((p) => readSnapshotPart(p).users)).toEqual(users);
    expect(readSnapshotPart(parts[3]).id).toBe(0xffffffff);
  });

  it('a part cut short, with a name running past its end, or of another kind is not taken', () => {
    const [p] = snapshotParts(['alice', 'bob'], 1);
    expect(validSnapshotPart(p.subarray(0, p.length - 1))).toBe(false);
    expect(validSnapshotPart(p.subarray(0, 5))).toBe(false);
    const other = p.slice();
    other[0] = 1;
    expect(validSnapshotPart(other)).toBe(false);
  });
});
