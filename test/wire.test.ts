// The wire format through the addon and the TypeScript client encoder. The
// exhaustive cases (every error code, truncation at every byte, escapes,
// allocation) are in test/native/wire_test.cc; these check the two sides
// agree and what a client sees.
import { describe, expect, it } from 'vitest';
import { decodeFrame, encodeClientMessage, encodeFrame, type DecodedFrame, type FrameError } from '../lib/index';

describe('client frames', () => {
  for (const format of ['json', 'binary'] as const) {
    it(`the TypeScript encoder and the C++ decoder agree (${format})`, () => {
      const payload = Buffer.from([0, 1, 2, 0xff, 0xfe, 0x41]);
      const f = encodeClientMessage({ id: 4000000000, to: 'bób', refid: 7, groupid: 0, flags: 3, type: 9, expiry: 3600, payload }, format);
      const d = decodeFrame(f) as DecodedFrame;
      expect(d).toMatchObject({ op: 'msg', format, id: 4000000000, refid: 7, flags: 3, type: 9, expiry: 3600, to: 'bób' });
      expect(Buffer.compare(d.payload, payload)).toBe(0);
    });
  }

  it('carries text in "data" and group messages without "to"', () => {
    const d = decodeFrame(encodeClientMessage({ id: 1, groupid: 12, payload: 'héllo "q" \n' })) as DecodedFrame;
    expect(d).toMatchObject({ groupid: 12, to: '' });
    expect(d.payload.toString()).toBe('héllo "q" \n');
  });

  it('decodes receipts (status frames)', () => {
    const d = decodeFrame(Buffer.from('{"op":"status","id":17,"to":"alice","status":3}')) as DecodedFrame;
    expect(d).toMatchObject({ op: 'status', id: 17, to: 'alice', status: 3 });
  });

  const bad: [string, string | Buffer][] = [
    ['E_FRAME_EMPTY', ''],
    ['E_FRAME_MALFORMED', '{"op":"msg","id":1,"to":"b","data":"x"'],
    ['E_UNKNOWN_OP', '{"op":"dance","id":1}'],
    ['E_NO_DESTINATION', '{"op":"msg","id":1,"data":"x"}'],
    ['E_BAD_FIELD', '{"op":"msg","id":-1,"to":"b","data":"x"}'],
    ['E_BAD_ADDRESS', '{"op":"msg","id":1,"to":"a\\u0001b","data":"x"}'],
    ['E_BAD_BASE64', '{"op":"msg","id":1,"to":"b","b64":"!!!"}'],
    ['E_BAD_VERSION', Buffer.from([0xb5, 9, 1, 0])],
    ['E_FRAME_TRUNCATED', Buffer.from([0xb5, 1, 1, 1, 1, 0])],
  ];
  for (const [code, frame] of bad) {
    it(`refuses with ${code} and a message that says what to do`, () => {
      const e = decodeFrame(typeof frame === 'string' ? Buffer.from(frame) : frame) as FrameError;
      expect(e.code).toBe(code);
      expect(e.message.length).toBeGreaterThan(20);
    });
  }

  it('E_PAYLOAD_TOO_LARGE and E_FRAME_TOO_LARGE against the limit', () => {
    const f = encodeClientMessage({ id: 1, to: 'b', payload: 'x'.repeat(2000) });
    expect((decodeFrame(f, 1000) as FrameError).code).toBe('E_PAYLOAD_TOO_LARGE');
    expect((decodeFrame(Buffer.alloc(10_000, 0x20), 1000) as FrameError).code).toBe('E_FRAME_TOO_LARGE');
  });
});

describe('server frames', () => {
  it('a delivery carries from, and text or base64 by content', () => {
    const text = JSON.parse(encodeFrame('msg', { id: 5, from: 'alice', to: 'bob', payload: Buffer.from('hi') }).toString());
    expect(text).toMatchObject({ op: 'msg', id: 5, from: 'alice', to: 'bob', data: 'hi' });
    const bin = JSON.parse(encodeFrame('msg', { id: 5, from: 'alice', to: 'bob', payload: Buffer.from([0xff, 0]) }).toString());
    expect(Buffer.from(bin.b64, 'base64')).toEqual(Buffer.from([0xff, 0]));
  });

  it('status and error frames', () => {
    expect(JSON.parse(encodeFrame('status', { id: 5, from: 'bob', to: 'alice', status: 2 }).toString())).toMatchObject({ op: 'status', id: 5, from: 'bob', status: 2 });
    const err = JSON.parse(encodeFrame('error', { error: -3, id: 8, detail: 'byte 4' }).toString());
    expect(err).toMatchObject({ op: 'error', code: 'E_FRAME_MALFORMED', id: 8 });
  });
});
