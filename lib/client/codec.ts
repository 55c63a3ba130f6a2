/**
 * The client's side of the wire format (docs/protocol.md): the JSON frames it
 * sends, and the server frames it reads in either form. Uses only what
 * browsers and Node share: TextEncoder/TextDecoder, btoa/atob, DataView.
 */
import { SwitchboardClientError } from './errors';
import type { Hello, IncomingMessage, PresenceEvent, StatusEvent } from './types';

const encoder = new TextEncoder();
const strictDecoder = new TextDecoder('utf-8', { fatal: true });

export function utf8Encode(text: string): Uint8Array {
  return encoder.encode(text);
}

/** The text, or null when the bytes are not valid UTF-8. */
export function utf8DecodeStrict(bytes: Uint8Array): string | null {
  try {
    return strictDecoder.decode(bytes);
  } catch {
    return null;
  }
}

/** The number of bytes TextEncoder would produce, without producing them. */
export function utf8Length(text: string): number {
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length && (text.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      n += 4;
      i++;
    } else n += 3;
  }
  return n;
}

/** True when the string has a surrogate without its partner (it has no UTF-8 form). */
export function hasLoneSurrogate(text: string): boolean {
  return /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/.test(text);
}

export function toBase64(bytes: Uint8Array): string {
  let binary = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000) as unknown as number[]);
  }
  return btoa(binary);
}

export function fromBase64(text: string): Uint8Array {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/**
 * The JSON fields of a message frame, in the order the server reads best:
 * `id` first, so an error about a later field still names the message.
 */
export interface MessageFields {
  op: 'msg';
  id: number;
  to?: string;
  gid?: number;
  refid?: number;
  flags?: number;
  type?: number;
  expiry?: number;
  data?: string;
  b64?: string;
}

/** The largest frame a server with payload limit `max` reads (docs/protocol.md, "Size limits"). */
export function frameLimit(max: number): number {
  return 2 * max + 4096;
}

/**
 * The message frame as JSON text. A text payload travels as "data" unless its
 * escapes would push the frame over the frame limit, in which case it goes as
 * "b64", which always fits when the payload does.
 */
export function encodeMessage(fields: MessageFields, max: number): string {
  const json = JSON.stringify(fields);
  const limit = frameLimit(max);
  if (fields.data === undefined || json.length * 3 <= limit || utf8Length(json) <= limit) return json;
  const { data, ...rest } = fields;
  return JSON.stringify({ ...rest, b64: toBase64(utf8Encode(data)) });
}

export type ServerFrame =
  | ({ op: 'hello' } & Hello)
  | ({ op: 'msg' } & IncomingMessage)
  | ({ op: 'status' } & StatusEvent)
  | ({ op: 'presence' } & PresenceEvent)
  | { op: 'error'; code: string; message: string; id: number; detail: string }
  /** An op this client does not know: servers add ops within version 1. */
  | { op: 'unknown'; name: string };

function protocolError(detail: string): SwitchboardClientError {
  return new SwitchboardClientError('E_PROTOCOL', 'The server sent a frame this client cannot read; check that the server speaks protocol version 1.', { detail });
}

/** Decodes a WebSocket message from the server; throws E_PROTOCOL when it cannot. */
export function decodeServerFrame(data: unknown): ServerFrame {
  if (typeof data === 'string') return decodeJson(data);
  if (data instanceof ArrayBuffer) return decodeBinary(new Uint8Array(data));
  if (ArrayBuffer.isView(data)) return decodeBinary(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  throw protocolError(`a WebSocket message of type ${Object.prototype.toString.call(data)}`);
}

function decodeJson(text: string): ServerFrame {
  let o: unknown;
  try {
    o = JSON.parse(text);
  } catch {
    throw protocolError('a text frame that is not JSON');
  }
  if (typeof o !== 'object' || o === null || Array.isArray(o)) throw protocolError('a JSON frame that is not an object');
  const f = o as Record<string, unknown>;
  const op = f.op;
  if (typeof op !== 'string') throw protocolError('a JSON frame without "op"');
  switch (op) {
    case 'hello':
      return { op, address: str(f, 'address'), device: str(f, 'device'), v: u32(f, 'v'), max: u32(f, 'max') };
    case 'msg': {
      let payload: Uint8Array;
      let text: string | null;
      if (typeof f.data === 'string') {
        text = f.data;
        payload = utf8Encode(text);
      } else if (typeof f.b64 === 'string') {
        try {
          payload = fromBase64(f.b64);
        } catch {
          throw protocolError('"b64" is not base64');
        }
        text = utf8DecodeStrict(payload);
      } else if (f.data === undefined && f.b64 === undefined) {
        payload = new Uint8Array(0);
        text = '';
      } else throw protocolError('"data" or "b64" is not a string');
      return {
        op,
        id: u32(f, 'id'),
        from: str(f, 'from'),
        to: str(f, 'to'),
        groupid: u32(f, 'gid'),
        refid: u32(f, 'refid'),
        type: u32(f, 'type'),
        flags: u32(f, 'flags'),
        expiry: u32(f, 'expiry'),
        payload,
        text,
      };
    }
    case 'status':
      return { op, id: u32(f, 'id'), from: str(f, 'from'), groupid: u32(f, 'gid'), status: u32(f, 'status') };
    case 'presence':
      if (typeof f.online !== 'boolean') throw protocolError('a presence frame without a boolean "online"');
      return { op, address: str(f, 'from'), online: f.online };
    case 'error':
      return { op, code: str(f, 'code'), message: str(f, 'message'), id: u32(f, 'id'), detail: str(f, 'detail') };
    default:
      return { op: 'unknown', name: op };
  }
}

function u32(f: Record<string, unknown>, key: string): number {
  const v = f[key];
  if (v === undefined) return 0;
  if (typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 0xffffffff) return v;
  throw protocolError(`"${key}" is not an unsigned 32-bit integer`);
}

function str(f: Record<string, unknown>, key: string): string {
  const v = f[key];
  if (v === undefined) return '';
  if (typeof v === 'string') return v;
  throw protocolError(`"${key}" is not a string`);
}

const BINARY_MAGIC = 0xb5;
const BINARY_OPS: Record<number, 'msg' | 'status' | 'error'> = { 1: 'msg', 2: 'status', 3: 'error' };

/** The binary form: header, the u32 fields its presence bits name, to, from, payload. */
function decodeBinary(b: Uint8Array): ServerFrame {
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  if (b.length < 4 || b[0] !== BINARY_MAGIC) throw protocolError('a binary frame without the 0xB5 magic byte');
  if (b[1] !== 1) throw protocolError(`a binary frame of version ${b[1]}`);
  const op = BINARY_OPS[b[2]];
  if (!op) return { op: 'unknown', name: `binary op ${b[2]}` };
  const mask = b[3];
  let at = 4;
  const need = (n: number) => {
    if (at + n > b.length) throw protocolError('a binary frame cut short');
  };
  // Presence-bit order: id, refid, gid, flags, type, expiry, status.
  const n = [0, 0, 0, 0, 0, 0, 0];
  for (let i = 0; i < 7; i++) {
    if (mask & (1 << i)) {
      need(4);
      n[i] = view.getUint32(at, true);
      at += 4;
    }
  }
  const [id, refid, groupid, flags, type, expiry, status] = n;
  const address = () => {
    need(1);
    const len = b[at++];
    need(len);
    const s = utf8DecodeStrict(b.subarray(at, at + len));
    if (s === null) throw protocolError('an address that is not UTF-8');
    at += len;
    return s;
  };
  const to = address();
  const from = address();
  need(4);
  const len = view.getUint32(at, true);
  at += 4;
  need(len);
  const payload = b.slice(at, at + len);
  if (at + len !== b.length) throw protocolError('bytes after the payload of a binary frame');
  if (op === 'msg') return { op, id, from, to, groupid, refid, type, flags, expiry, payload, text: utf8DecodeStrict(payload) };
  if (op === 'status') return { op, id, from, groupid, status };
  const [code = '', message = '', ...detail] = (utf8DecodeStrict(payload) ?? '').split('\n');
  return { op, code, message, id, detail: detail.join('\n') };
}
