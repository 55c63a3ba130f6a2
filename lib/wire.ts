/** The wire codec (C++), exposed for clients, tools and tests. See docs/protocol.md. */
import { native } from './native';
import type { WireFormat } from './core';
import type { ErrorCode } from './errors';

const FORMAT: Record<WireFormat, number> = { json: 0, binary: 1 };

export interface DecodedFrame {
  op: 'msg' | 'status';
  format: WireFormat;
  id: number; refid: number; groupid: number; flags: number; type: number; expiry: number; status: number;
  to: string;
  payload: Buffer;
}
export interface FrameError { error: number; code: ErrorCode; message: string; detail: string }

/** Decodes a client frame; returns the fields or {error, code, message, detail}. */
export function decodeFrame(buf: Uint8Array, maxPayload = 65536): DecodedFrame | FrameError {
  return native.decodeFrame(buf, maxPayload) as unknown as DecodedFrame | FrameError;
}

/** Encodes a server frame: a delivery ('msg'), a status, or an error. */
export function encodeFrame(kind: 'msg' | 'status' | 'error', fields: Record<string, unknown>, format: WireFormat = 'json'): Buffer {
  return native.encodeFrame(kind, fields, FORMAT[format]);
}

/** mesibo_util_json_extract over a buffer, from `offset`: the value and where the match ended. */
export function jsonExtract(buf: Uint8Array, key: string, offset = 0): { value: string; next: number } | null {
  return native.jsonExtract(buf, key, offset);
}

export interface ClientMessage {
  id: number;
  to?: string;
  groupid?: number;
  refid?: number;
  flags?: number;
  type?: number;
  expiry?: number;
  payload: Uint8Array | string;
}

const BINARY_MAGIC = 0xb5;
const BINARY_VERSION = 1;
const OP_MESSAGE = 1;

/**
 * Encodes a client's message frame (docs/protocol.md): JSON text, with the
 * payload as "data" when it is text and "b64" otherwise, or the binary form.
 */
export function encodeClientMessage(m: ClientMessage, format: WireFormat = 'json'): Buffer {
  const payload = typeof m.payload === 'string' ? Buffer.from(m.payload) : Buffer.from(m.payload.buffer, m.payload.byteOffset, m.payload.byteLength);
  if (format === 'json') {
    const o: Record<string, unknown> = { op: 'msg', id: m.id };
    if (m.to) o.to = m.to;
    if (m.groupid) o.gid = m.groupid;
    if (m.refid) o.refid = m.refid;
    if (m.flags) o.flags = m.flags;
    if (m.type) o.type = m.type;
    if (m.expiry) o.expiry = m.expiry;
    if (typeof m.payload === 'string') o.data = m.payload;
    else o.b64 = payload.toString('base64');
    return Buffer.from(JSON.stringify(o));
  }
  // Fields in presence-mask bit order: id, refid, gid, flags, type, expiry, status.
  const numbers = [m.id, m.refid ?? 0, m.groupid ?? 0, m.flags ?? 0, m.type ?? 0, m.expiry ?? 0];
  let mask = 0;
  const present: number[] = [];
  numbers.forEach((v, i) => {
    if (v) {
      mask |= 1 << i;
      present.push(v);
    }
  });
  const to = Buffer.from(m.to ?? '');
  const b = Buffer.alloc(4 + present.length * 4 + 1 + to.length + 1 + 4 + payload.length);
  let o = 0;
  o = b.writeUInt8(BINARY_MAGIC, o);
  o = b.writeUInt8(BINARY_VERSION, o);
  o = b.writeUInt8(OP_MESSAGE, o);
  o = b.writeUInt8(mask, o);
  for (const v of present) o = b.writeUInt32LE(v >>> 0, o);
  o = b.writeUInt8(to.length, o);
  o += to.copy(b, o);
  o = b.writeUInt8(0, o); // "from" is the server's to set
  o = b.writeUInt32LE(payload.length, o);
  payload.copy(b, o);
  return b;
}
