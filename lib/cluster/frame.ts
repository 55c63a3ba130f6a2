/**
 * The binary frame every cluster bus message carries (docs/cluster.md#frames):
 *
 *     u8  version (1)
 *     u8  kind (FrameKind)
 *     u8  length of the origin node's name, 1..255
 *     ..  the origin node's name, UTF-8
 *     u32 item count (big-endian)
 *     per item: u32 length (big-endian), then its bytes
 *
 * One NATS message holds a batch of items for one subject (the copies one
 * node published for one user in one loop turn), in the order published.
 */
import { SwitchboardError } from '../errors';

export const FRAME_VERSION = 1;

export enum FrameKind {
  /** Items for a user's subject. */
  User = 1,
  /** Items for a broadcast channel. */
  Broadcast = 2,
  /** One item: a request to a node; the NATS reply subject carries where the answer goes. */
  Request = 3,
  /** One item: the answer. */
  Reply = 4,
  /** One item: the answering node's handler failed; the item is its message. */
  ReplyError = 5,
  /** Membership: items are the node's incarnation and a hello flag (answer at once). */
  Beat = 6,
  /** Membership: the node is leaving. */
  Bye = 7,
}

/** The bytes a frame takes besides its items' own bytes. */
export function frameOverhead(originBytes: number, items: number): number {
  return 3 + originBytes + 4 + 4 * items;
}

/** Encodes a frame; `origin` is the node's name already as UTF-8. */
export function encodeFrame(kind: FrameKind, origin: Uint8Array, items: readonly Uint8Array[]): Uint8Array {
  let size = frameOverhead(origin.length, items.length);
  for (const it of items) size += it.length;
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  out[0] = FRAME_VERSION;
  out[1] = kind;
  out[2] = origin.length;
  out.set(origin, 3);
  let at = 3 + origin.length;
  view.setUint32(at, items.length);
  at += 4;
  for (const it of items) {
    view.setUint32(at, it.length);
    out.set(it, at + 4);
    at += 4 + it.length;
  }
  return out;
}

export interface Frame {
  kind: FrameKind;
  origin: string;
  /** Views into the message's bytes, in the order they were published. */
  items: Uint8Array[];
}

function bad(why: string): SwitchboardError {
  return new SwitchboardError('E_CLUSTER_FRAME', `a cluster bus message is not a frame this node reads: ${why}`);
}

/** Decodes a frame; throws E_CLUSTER_FRAME for anything else (another version, a foreign publisher, a cut message). */
export function decodeFrame(data: Uint8Array): Frame {
  if (data.length < 3) throw bad(`${data.length} bytes`);
  if (data[0] !== FRAME_VERSION) throw bad(`version ${data[0]}, this node reads ${FRAME_VERSION}`);
  const kind = data[1] as FrameKind;
  if (kind < FrameKind.User || kind > FrameKind.Bye) throw bad(`kind ${kind}`);
  const n = data[2];
  if (n === 0 || data.length < 3 + n + 4) throw bad('truncated header');
  const origin = Buffer.from(data.buffer, data.byteOffset + 3, n).toString('utf8');
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  let at = 3 + n;
  const count = view.getUint32(at);
  at += 4;
  // Each item takes at least its 4-byte length: a count beyond that is a lie.
  if (count > (data.length - at) / 4) throw bad(`${count} items in ${data.length} bytes`);
  const items: Uint8Array[] = new Array(count);
  for (let i = 0; i < count; i++) {
    if (at + 4 > data.length) throw bad('truncated item length');
    const len = view.getUint32(at);
    at += 4;
    if (at + len > data.length) throw bad('item runs past the end');
    items[i] = data.subarray(at, at + len);
    at += len;
  }
  if (at !== data.length) throw bad(`${data.length - at} bytes after the last item`);
  return { kind, origin, items };
}
