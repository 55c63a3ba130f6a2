/** The wire codec (C++), exposed for clients, tools and tests. See docs/protocol.md. */
import { native } from './native';
import type { WireFormat } from './core';

const FORMAT: Record<WireFormat, number> = { json: 0, binary: 1 };

export interface DecodedFrame {
  op: 'msg' | 'status';
  format: WireFormat;
  id: number; refid: number; groupid: number; flags: number; type: number; expiry: number; status: number;
  to: string;
  payload: Buffer;
}
export interface FrameError { error: number; code: string; message: string; detail: string }

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
