/**
 * The NATS subjects of the cluster bus, and the one encoding that puts a
 * user address or a node name into a single subject token.
 *
 * A NATS token cannot be empty or hold '.', '*', '>' or whitespace, and a
 * user address may hold any of them. Bytes that are safe and readable are
 * kept; every other byte of the name's UTF-8 becomes `%XX` (two upper-case
 * hex digits), '%' itself included, so `alice` and `+49-170-1234` stay as
 * they are, `alice@example.com` is `alice@example%2Ecom`, and `a.b c` is
 * `a%2Eb%20c`.
 * The encoding is one-to-one (only upper-case escapes are read back, and only
 * for bytes that must be escaped), so two addresses never share a subject.
 * docs/cluster.md#subjects.
 */
import { SwitchboardError } from '../errors';

/** ASCII bytes kept as they are: letters, digits and punctuation NATS and shells read plainly. */
const KEPT = new Uint8Array(128);
for (const c of 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_@+=:,;!~#&()[]{}/|^$?') KEPT[c.charCodeAt(0)] = 1;

const HEX = '0123456789ABCDEF';

/** A user address or node name as one subject token. Throws E_CLUSTER_ADDRESS for an empty name or one over 255 bytes. */
export function encodeToken(name: string): string {
  // Most names are plain ASCII: checked without encoding them (a buffer per publish otherwise).
  if (name.length > 0 && name.length <= 255) {
    let plain = true;
    for (let i = 0; i < name.length && plain; i++) {
      const c = name.charCodeAt(i);
      plain = c < 128 && KEPT[c] === 1;
    }
    if (plain) return name;
  }
  const bytes = Buffer.from(name, 'utf8');
  if (bytes.length === 0 || bytes.length > 255) {
    throw new SwitchboardError('E_CLUSTER_ADDRESS', `cannot put ${JSON.stringify(name.slice(0, 40))} on the cluster bus: a user address or node name is 1 to 255 bytes`);
  }
  let plain = true;
  for (const b of bytes) if (b >= 128 || !KEPT[b]) plain = false;
  if (plain) return name;
  let out = '';
  for (const b of bytes) out += b < 128 && KEPT[b] ? String.fromCharCode(b) : `%${HEX[b >> 4]}${HEX[b & 15]}`;
  return out;
}

/** The name a token encodes, or null when the token is not one encodeToken makes. */
export function decodeToken(token: string): string | null {
  if (token.length === 0) return null;
  const bytes: number[] = [];
  for (let i = 0; i < token.length; i++) {
    const c = token.charCodeAt(i);
    if (c === 0x25) {
      if (i + 2 >= token.length) return null;
      const hi = HEX.indexOf(token[i + 1]);
      const lo = HEX.indexOf(token[i + 2]);
      if (hi < 0 || lo < 0) return null;
      const b = (hi << 4) | lo;
      if (b < 128 && KEPT[b]) return null;
      bytes.push(b);
      i += 2;
    } else if (c < 128 && KEPT[c]) {
      bytes.push(c);
    } else {
      return null;
    }
  }
  const buf = Buffer.from(bytes);
  const name = buf.toString('utf8');
  // Escaped bytes that are not UTF-8 would decode to U+FFFD: no name encodes to them.
  return Buffer.byteLength(name) === buf.length && Buffer.from(name, 'utf8').equals(buf) ? name : null;
}

/** A broadcast channel name: lower-case letters, digits, '-' and '_', so it is its own token. */
const CHANNEL = /^[a-z0-9_-]{1,64}$/;

/** A subject prefix: dot-separated tokens of letters, digits, '-' and '_'. */
const PREFIX = /^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/;

/** Every subject one cluster uses, under its prefix (several clusters can share a NATS). */
export class Subjects {
  readonly prefix: string;

  constructor(prefix: string) {
    if (!PREFIX.test(prefix)) {
      throw new SwitchboardError('E_CLUSTER_ADDRESS', `the cluster subject prefix ${JSON.stringify(prefix)} is not dot-separated tokens of letters, digits, '-' and '_'`);
    }
    this.prefix = prefix;
  }

  /** Copies for one user: every node with a connection of that user subscribes. */
  user(address: string): string {
    return `${this.prefix}.u.${encodeToken(address)}`;
  }

  /** What every node applies (directory changes, presence...). */
  broadcast(channel: string): string {
    if (!CHANNEL.test(channel)) {
      throw new SwitchboardError('E_CLUSTER_ADDRESS', `the broadcast channel ${JSON.stringify(channel)} is not 1 to 64 of a-z, 0-9, '-' and '_'`);
    }
    return `${this.prefix}.b.${channel}`;
  }

  /** Requests to one node. */
  node(name: string): string {
    return `${this.prefix}.n.${encodeToken(name)}`;
  }

  /** Membership: heartbeats and goodbyes of every node. */
  get members(): string {
    return `${this.prefix}.m`;
  }
}
