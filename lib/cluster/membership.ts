/**
 * Which other nodes are alive, from their heartbeats (docs/cluster.md#membership).
 *
 * Every node publishes a beat on the members subject every `heartbeat` ms,
 * carrying its incarnation (random per start), and a goodbye when it closes.
 * A node not heard from for `timeout` ms is gone; a beat with another
 * incarnation under a known name is a restart (gone, then back: what it
 * held in memory is lost). Time only counts while this node is connected
 * to NATS: during an outage it hears nobody and cannot tell who is gone,
 * so `resumed()` gives every node a full timeout again after a reconnect.
 *
 * Plain state and a clock passed in, so the bus owns the timers and events.
 */

export type NodeGone = 'left' | 'timeout' | 'restarted';

export type Change = { kind: 'up'; node: string } | { kind: 'down'; node: string; reason: NodeGone };

interface Peer {
  incarnation: string;
  lastSeen: number;
}

export class Membership {
  private readonly peers = new Map<string, Peer>();

  constructor(private readonly timeout: number) {}

  /** The other live nodes, in the order they were first heard. */
  get live(): string[] {
    return [...this.peers.keys()];
  }

  has(node: string): boolean {
    return this.peers.has(node);
  }

  /** A beat from `node`: what changed (nothing for a known node's next beat). */
  heard(node: string, incarnation: string, now: number): Change[] {
    const p = this.peers.get(node);
    if (!p) {
      this.peers.set(node, { incarnation, lastSeen: now });
      return [{ kind: 'up', node }];
    }
    p.lastSeen = now;
    if (p.incarnation === incarnation) return [];
    p.incarnation = incarnation;
    return [
      { kind: 'down', node, reason: 'restarted' },
      { kind: 'up', node },
    ];
  }

  /** A goodbye from `node`. */
  left(node: string): Change[] {
    return this.peers.delete(node) ? [{ kind: 'down', node, reason: 'left' }] : [];
  }

  /** The nodes silent for longer than the timeout, removed. Call only while connected. */
  sweep(now: number): Change[] {
    const out: Change[] = [];
    for (const [node, p] of this.peers) {
      if (now - p.lastSeen > this.timeout) {
        this.peers.delete(node);
        out.push({ kind: 'down', node, reason: 'timeout' });
      }
    }
    return out;
  }

  /** After a reconnect: nobody could be heard during the outage, so every node gets a full timeout from now. */
  resumed(now: number): void {
    for (const p of this.peers.values()) p.lastSeen = now;
  }

  /** After close: nobody is known any more. */
  clear(): void {
    this.peers.clear();
  }
}
