// The server's copies of C constants (lib/server/protocol.ts, lib/native.ts)
// are read here against the headers they copy, so a change on either side
// that the other does not follow fails this test instead of a message.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import * as P from '../lib/server/protocol';
import { Info, RESULT_DEFER, VERDICT_DEFERRED } from '../lib/native';

const root = path.join(__dirname, '..');
const read = (f: string): string => fs.readFileSync(path.join(root, f), 'utf8');

/** The value of `#define NAME value` in a C header. */
function define(file: string, name: string): number {
  const m = read(file).match(new RegExp(`^#define\\s+${name}\\s+(0x[0-9a-fA-F]+|\\d+)\\b`, 'm'));
  if (!m) throw new Error(`${name} is not #defined in ${file}`);
  return Number(m[1]);
}

/** The value of `NAME = value` (an enumerator or a constexpr) in a C++ file. */
function assigned(file: string, name: string): number {
  const m = read(file).match(new RegExp(`\\b${name}\\s*=\\s*(-?(?:0x[0-9a-fA-F]+|\\d+))\\b`));
  if (!m) throw new Error(`${name} is not assigned in ${file}`);
  return Number(m[1]);
}

/** The enumerators of `enum NAME { ... }` in order (values implicit from 0). */
function enumerators(file: string, name: string): string[] {
  const m = read(file).match(new RegExp(`enum\\s+${name}\\s*\\{([^}]*)\\}`));
  if (!m) throw new Error(`enum ${name} is not in ${file}`);
  const body = m[1].replace(/\/\/.*$/gm, '');
  return body.split(',').map((s) => s.trim()).filter(Boolean);
}

describe('the constants the server shares with the core', () => {
  it('statuses are include/module.h\'s (sent is cpp/core.h\'s MSGSTATUS_SENT)', () => {
    expect(P.Status.SENT).toBe(assigned('cpp/core.h', 'MSGSTATUS_SENT'));
    expect(P.Status.DELIVERED).toBe(define('include/module.h', 'MESIBO_MODULE_MSGSTATUS_DELIVERED'));
    expect(P.Status.READ).toBe(define('include/module.h', 'MESIBO_MODULE_MSGSTATUS_READ'));
    expect(P.Status.NOTACTIVE).toBe(define('include/module.h', 'MESIBO_MODULE_MSGSTATUS_NOTACTIVE'));
    expect(P.Status.INBOXFULL).toBe(define('include/module.h', 'MESIBO_MODULE_MSGSTATUS_INBOXFULL'));
    expect(P.Status.INVALIDDEST).toBe(define('include/module.h', 'MESIBO_MODULE_MSGSTATUS_INVALIDDEST'));
    expect(P.Status.BLOCKED).toBe(define('include/module.h', 'MESIBO_MODULE_MSGSTATUS_BLOCKED'));
  });

  it('message flags are include/module.h\'s', () => {
    expect(P.FLAG_DELIVERY_RECEIPT).toBe(define('include/module.h', 'MOD_MESIBO_MSGFLAG_DELIVERYRECEIPT'));
    expect(P.FLAG_READ_RECEIPT).toBe(define('include/module.h', 'MOD_MESIBO_MSGFLAG_READRECEIPT'));
  });

  it('wire errors are cpp/wire.h\'s', () => {
    expect(P.WIRE_E_TOO_LARGE).toBe(assigned('cpp/wire.h', 'WIRE_E_TOO_LARGE'));
    expect(P.WIRE_E_UNKNOWN_OP).toBe(assigned('cpp/wire.h', 'WIRE_E_UNKNOWN_OP'));
  });

  it('verdicts are cpp/core.h\'s and include/switchboard.h\'s', () => {
    expect(VERDICT_DEFERRED).toBe(assigned('cpp/core.h', 'VERDICT_DEFERRED'));
    expect(RESULT_DEFER).toBe(define('include/switchboard.h', 'SWITCHBOARD_RESULT_DEFER'));
  });

  it('the info slots are cpp/slots.h\'s InfoSlot, in order', () => {
    const slots = enumerators('cpp/slots.h', 'InfoSlot');
    // INFO_TO_LEN is Info.ToLen: the names match once the prefix and underscores go.
    const camel = (s: string) => s.replace(/^INFO_/, '').toLowerCase().replace(/_/g, '');
    const ours: [string, number][] = [
      ['Verdict', Info.Verdict], ['Op', Info.Op], ['Format', Info.Format], ['Id', Info.Id], ['Refid', Info.Refid],
      ['Groupid', Info.Groupid], ['Flags', Info.Flags], ['Type', Info.Type], ['Expiry', Info.Expiry], ['Status', Info.Status],
      ['Uflags', Info.Uflags], ['FrameLen', Info.FrameLen], ['Frame2Len', Info.Frame2Len], ['PayloadLen', Info.PayloadLen],
      ['ToLen', Info.ToLen], ['AckLen', Info.AckLen], ['OutGrown', Info.OutGrown], ['Token', Info.Token],
    ];
    expect(slots.at(-1)).toBe('INFO_COUNT');
    expect(ours.length).toBe(slots.length - 1);
    for (const [name, value] of ours) expect([name, camel(slots[value])]).toEqual([name, name.toLowerCase()]);
  });

  it('close codes are the ones docs/protocol.md tells clients', () => {
    const doc = read('docs/protocol.md');
    for (const [name, code] of [['CLOSE_AUTH', P.CLOSE_AUTH], ['CLOSE_BAD_LOGIN', P.CLOSE_BAD_LOGIN], ['CLOSE_LOGIN_TIMEOUT', P.CLOSE_LOGIN_TIMEOUT], ['CLOSE_TOO_MANY', P.CLOSE_TOO_MANY]] as const) {
      expect([name, doc.includes(`close code ${code}`) || doc.includes(`close code **${code}**`)]).toEqual([name, true]);
    }
  });
});
