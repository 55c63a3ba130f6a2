// The module chain as a module author sees it: modules compiled with the
// system compiler, declared in config text, driven through Core.submit.
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Info } from '../lib/native';
import { compileModule, msg, open, until, type Opened } from './helpers';

let dir: string;
const opened: Opened[] = [];
function start(body: string): Opened {
  const o = open(dir, body);
  opened.push(o);
  return o;
}

beforeAll(() => {
  dir = compileModule({ name: 'recorder', source: 'test/modules/recorder.c' });
});

afterEach(() => {
  while (opened.length) opened.pop()!.core.close();
});

describe('on_message in configuration order', () => {
  it('passes a message through every module, in order, and encodes the delivery', () => {
    const { core, lines } = start('module recorder {\n tag = first\n}\nmodule recorder {\n tag = second\n}\n');
    const r = core.submit('alice', msg('bob', 'hello', { id: 42, flags: 3, expiry: 60 }));
    expect(r.verdict).toBe('pass');
    expect(r.message).toMatchObject({ id: 42, from: 'alice', to: 'bob', flags: 3, expiry: 60 });
    expect(r.message.payload.toString()).toBe('hello');
    const saw = lines().filter((l) => l.includes(' saw '));
    expect(saw).toEqual([
      'first saw from=alice to=bob id=42 len=5 text=hello',
      'second saw from=alice to=bob id=42 len=5 text=hello',
    ]);
    const frame = JSON.parse(r.frame!.toString());
    expect(frame).toMatchObject({ op: 'msg', id: 42, from: 'alice', to: 'bob', data: 'hello' });
  });

  it('sets from to the authenticated sender and refuses frames that claim one', () => {
    const { core } = start('module recorder\n');
    const r = core.submit('alice', msg('bob', 'x'));
    expect(r.message.from).toBe('alice');
    expect(JSON.parse(r.frame!.toString()).from).toBe('alice');
    expect(() => core.submit('alice', JSON.stringify({ op: 'msg', id: 1, to: 'bob', from: 'mallory', data: 'x' }))).toThrow(
      expect.objectContaining({ code: 'E_BAD_FIELD' }),
    );
  });

  it('stops at a module that consumes: later modules and the recipient see nothing', () => {
    const { core, lines } = start('module recorder {\n tag = a\n verdict = consume\n}\nmodule recorder {\n tag = b\n}\n');
    const r = core.submit('alice', msg('bob', 'drop me'));
    expect(r.verdict).toBe('consumed');
    expect(r.frame).toBeNull();
    expect(lines().some((l) => l.startsWith('a saw'))).toBe(true);
    expect(lines().some((l) => l.startsWith('b saw'))).toBe(false);
  });

  it('shows in-place rewrites to later modules and to the recipient', () => {
    const { core, lines } = start('module recorder {\n tag = up\n rewrite = upper\n}\nmodule recorder {\n tag = after\n}\n');
    const r = core.submit('alice', msg('bob', 'quiet please'));
    expect(lines()).toContain('after saw from=alice to=bob id=1 len=12 text=QUIET PLEASE');
    expect(r.message.payload.toString()).toBe('QUIET PLEASE');
    expect(JSON.parse(r.frame!.toString()).data).toBe('QUIET PLEASE');
  });

  it('takes a NUL written into a text payload as the new, shorter length', () => {
    const { core, lines } = start('module recorder {\n tag = cut\n rewrite = shorten:4\n}\nmodule recorder {\n tag = after\n}\n');
    const r = core.submit('alice', msg('bob', 'truncated'));
    expect(lines()).toContain('after saw from=alice to=bob id=1 len=4 text=trun');
    expect(r.message.payload.toString()).toBe('trun');
  });

  it('keeps the length of binary payloads that already contained NUL bytes', () => {
    const { core } = start('module recorder {\n rewrite = shorten:2\n}\n');
    const payload = Buffer.from([0x61, 0x00, 0x62, 0x63, 0x64]);
    const r = core.submit('alice', JSON.stringify({ op: 'msg', id: 1, to: 'bob', b64: payload.toString('base64') }));
    expect(r.message.payload.length).toBe(5);
  });

  it('lets a module re-address a message', () => {
    const { core } = start('module recorder {\n rewrite = to:carol\n}\n');
    const r = core.submit('alice', msg('bob', 'hi'));
    expect(r.message.to).toBe('carol');
    expect(JSON.parse(r.frame!.toString()).to).toBe('carol');
  });

  it('logs a result that is neither PASS nor CONSUMED once and treats it as PASS', () => {
    const { core, logs } = start('module recorder {\n tag = odd\n verdict = odd\n}\n');
    expect(core.submit('alice', msg('bob', 'one')).verdict).toBe('pass');
    expect(core.submit('alice', msg('bob', 'two')).verdict).toBe('pass');
    core.drain();
    const warnings = logs.filter((l) => l.module === null && l.text.includes('returned 7'));
    expect(warnings).toHaveLength(1);
    expect(warnings[0].text).toContain('treating it as PASS');
  });

  it('runs several instances of one module, each with its own config and context', () => {
    const { core, lines } = start(
      'module recorder {\n tag = one\n only_to = x\n verdict = consume\n}\nmodule recorder {\n tag = two\n only_to = y\n verdict = consume\n}\n',
    );
    expect(core.modules.map((m) => m.name)).toEqual(['recorder', 'recorder']);
    expect(core.submit('alice', msg('x', 'to x')).verdict).toBe('consumed');
    expect(core.submit('alice', msg('y', 'to y')).verdict).toBe('consumed');
    expect(core.submit('alice', msg('z', 'to z')).verdict).toBe('pass');
    expect(lines().filter((l) => l.includes(' saw '))).toEqual([
      'one saw from=alice to=x id=1 len=4 text=to x',
      'two saw from=alice to=y id=1 len=4 text=to y',
    ]);
  });

  it('encodes the delivery in the requested format', () => {
    const { core } = start('module recorder\n');
    const r = core.submit('alice', msg('bob', 'bin'), 'binary');
    expect(r.frame![0]).not.toBe('{'.charCodeAt(0));
    expect(r.frame!.includes(Buffer.from('bin'))).toBe(true);
  });

  it('rejects a malformed frame with a stable code and keeps serving', () => {
    const { core } = start('module recorder\n');
    expect(() => core.submit('alice', '{"op":"msg",')).toThrow(expect.objectContaining({ code: expect.stringMatching(/^E_FRAME_/) }));
    expect(() => core.submit('alice', JSON.stringify({ op: 'msg', id: 1, data: 'no destination' }))).toThrow(
      expect.objectContaining({ code: 'E_NO_DESTINATION' }),
    );
    expect(core.submit('alice', msg('bob', 'still fine')).verdict).toBe('pass');
  });

  it('keeps module stats per hook', () => {
    const { core } = start('module recorder\n');
    for (let i = 0; i < 5; i++) core.submit('alice', msg('bob', 'x'));
    const [m] = core.modules;
    expect(m.hooks).toEqual(['on_message', 'on_message_status', 'on_login', 'on_call', 'on_call_status']);
    expect(m.stats.on_message.calls).toBe(5);
    expect(m.stats.on_message.totalNs).toBeGreaterThan(0);
    expect(m.description).toBe('records what it sees');
  });
});

describe('mesibo_message from a module', () => {
  it('enters the chain after the sending module and is then delivered', async () => {
    const { core, lines, sent } = start(
      'module recorder {\n tag = before\n}\nmodule recorder {\n tag = bot\n only_to = bot\n reply = pong\n verdict = consume\n}\nmodule recorder {\n tag = after\n}\n',
    );
    const r = core.submit('alice', msg('bot', 'ping', { id: 7 }));
    expect(r.verdict).toBe('consumed');
    await until(() => sent.length === 1);
    expect(sent[0]).toMatchObject({ module: 'recorder', from: 'bot', to: 'alice', refid: 7, id: 1007 });
    expect(sent[0].payload.toString()).toBe('pong');
    // "before" saw only the original; "bot" never sees its own reply; "after" sees only the reply.
    const saw = lines().filter((l) => l.includes(' saw '));
    expect(saw).toEqual([
      'before saw from=alice to=bot id=7 len=4 text=ping',
      'bot saw from=alice to=bot id=7 len=4 text=ping',
      'after saw from=bot to=alice id=1007 len=4 text=pong',
    ]);
  });

  it('is stopped by a later module that consumes it', async () => {
    const { core, lines, sent } = start(
      'module recorder {\n tag = bot\n only_to = bot\n reply = pong\n verdict = consume\n}\nmodule recorder {\n tag = wall\n only_to = alice\n verdict = consume\n}\n',
    );
    core.submit('alice', msg('bot', 'ping'));
    await until(() => lines().some((l) => l.startsWith('wall saw')));
    core.drain();
    expect(sent).toHaveLength(0);
  });

  it('from 8 threads x 10,000 messages loses none and corrupts none', async () => {
    const tdir = compileModule({ name: 'threads', source: 'test/modules/threads.c' });
    const { core, sent, logs } = open(tdir, 'module threads {\n threads = 8\n count = 10000\n}\n');
    opened.push({ core, sent, logs, lines: () => [] });
    expect(core.submit('driver', msg('go', 'start')).verdict).toBe('consumed');
    await until(() => sent.length >= 80_000, 60_000);
    await new Promise((r) => setTimeout(r, 50));
    core.drain();
    expect(sent).toHaveLength(80_000);
    expect(logs.filter((l) => l.text.includes('send failed'))).toEqual([]);
    const next = new Array(8).fill(0);
    const wrong: string[] = [];
    for (const m of sent) {
      const t = Number(m.from.slice(1));
      // Each thread's messages arrive complete and in the order it sent them.
      const ok = m.payload.toString() === `T${t}:${next[t]}` && m.id === t * 1_000_000 + next[t] + 1 && m.to === 'sink';
      if (!ok && wrong.length < 5) wrong.push(`${m.from} ${m.id} ${m.to} ${m.payload.toString()}`);
      next[t]++;
    }
    expect(wrong).toEqual([]);
    expect(next).toEqual(new Array(8).fill(10_000));
  });
});

describe('statuses and receipts', () => {
  it('answers every accepted message with a "sent" status for the sender, which runs on_message_status', () => {
    const { core, lines } = start('module recorder {\n tag = r\n verdict = consume\n}\n');
    const r = core.submit('alice', msg('bob', 'hi', { id: 21 }));
    expect(r.verdict).toBe('consumed');
    expect(JSON.parse(r.ack!.toString())).toEqual({ op: 'status', id: 21, from: 'bob', status: 1 });
    expect(lines()).toContain('r status id=21 status=1 from=bob to=alice');
  });

  it('turns a receipt from the recipient into a status frame for the original sender', () => {
    const { core, lines } = start('module recorder {\n tag = r\n}\n');
    const r = core.submit('bob', JSON.stringify({ op: 'status', id: 21, to: 'alice', status: 2 }));
    expect(r.op).toBe('status');
    expect(r.status).toBe(2);
    expect(r.message.to).toBe('alice');
    expect(JSON.parse(r.frame!.toString())).toEqual({ op: 'status', id: 21, from: 'bob', status: 2 });
    expect(r.ack).toBeNull();
    expect(lines()).toContain('r status id=21 status=2 from=bob to=alice');
  });

  it('encodes a status the server decides, such as an invalid destination', () => {
    const { core } = start('module recorder\n');
    const f = core.statusFrame({ id: 4, status: 0x83, from: 'nobody', to: 'alice' });
    expect(JSON.parse(f.toString())).toEqual({ op: 'status', id: 4, from: 'nobody', status: 0x83 });
  });

  it('sets MOD_MESIBO_UFLAG_DESTONLINE while the recipient has a connection', () => {
    const { core } = start('module recorder\n');
    expect(core.submit('alice', msg('bob', 'x')).uflags).toBe(0);
    core.login('bob', true);
    core.login('bob', true);
    expect(core.submit('alice', msg('bob', 'x')).uflags).toBe(1);
    core.login('bob', false);
    expect(core.submit('alice', msg('bob', 'x')).uflags).toBe(1);
    core.login('bob', false);
    expect(core.submit('alice', msg('bob', 'x')).uflags).toBe(0);
  });

  it('encodes the delivery in both forms for a recipient with JSON and binary devices', () => {
    const { core } = start('module recorder\n');
    const v = core.submitRaw('alice', Buffer.from(msg('bob', 'both')), 2);
    expect(v).toBe(0);
    const info = core.infoArray();
    const out = core.outBuffer();
    const json = out.subarray(0, info[Info.FrameLen]);
    const bin = out.subarray(info[Info.FrameLen], info[Info.FrameLen] + info[Info.Frame2Len]);
    expect(JSON.parse(json.toString()).data).toBe('both');
    expect(bin[0]).toBe(0xb5);
    expect(bin.includes(Buffer.from('both'))).toBe(true);
  });
});

describe('helpers modules call', () => {
  it('mesibo_util_json_extract finds nested values and continues with next', () => {
    const { core, lines } = start('module recorder {\n tag = j\n extract = name\n}\n');
    const body = JSON.stringify({ items: [{ name: 'a' }, { note: 'name', name: 'b "q"' }, { deep: { name: 3 } }] });
    core.submit('alice', msg('bob', body));
    expect(lines().filter((l) => l.includes('extracted'))).toEqual(['j extracted a', 'j extracted b "q"', 'j extracted 3']);
  });
});

describe('other hooks', () => {
  it('dispatches on_login, on_message_status, on_call and on_call_status to the instances that set them', () => {
    const { core, lines } = start('module recorder {\n tag = r1\n}\nmodule recorder {\n tag = r2\n}\n');
    core.login('alice', true);
    core.login('alice', false);
    core.status({ id: 9, status: 3, from: 'bob', to: 'alice' });
    core.call();
    core.callStatus();
    expect(lines().filter((l) => !l.includes('debug line'))).toEqual([
      'r1 login alice online=1',
      'r2 login alice online=1',
      'r1 login alice online=0',
      'r2 login alice online=0',
      'r1 status id=9 status=3 from=bob to=alice',
      'r2 status id=9 status=3 from=bob to=alice',
      'r1 call',
      'r2 call',
      'r1 call_status',
      'r2 call_status',
    ]);
  });
});

describe('logging', () => {
  it('honours each instance\'s log level and names the module', () => {
    const { logs } = start('module recorder {\n tag = quiet\n}\nmodule recorder {\n tag = loud\n log = 1\n}\n');
    const debug = logs.filter((l) => l.text.includes('debug line'));
    expect(debug).toEqual([{ module: 'recorder', level: 1, text: 'loud debug line at level 1' }]);
  });
});

describe('shutdown', () => {
  it('runs on_cleanup once per instance in reverse order', () => {
    const o = open(dir, 'module recorder {\n tag = first\n}\nmodule recorder {\n tag = second\n}\nmodule recorder {\n tag = third\n}\n');
    o.core.close();
    o.core.close();
    expect(o.lines().filter((l) => l.endsWith('cleanup'))).toEqual(['third cleanup', 'second cleanup', 'first cleanup']);
    expect(() => o.core.submit('a', msg('b', 'c'))).toThrow(expect.objectContaining({ code: 'E_CORE_CLOSED' }));
  });
});
