// bench/e2e/baseline: the transport's ceiling. A bare uWebSockets.js server
// that does the least a message router can: each connection subscribes to
// its own topic (?u=NAME) and, for group fan-out, its group's (&g=gGID), and a
// text frame is published, unchanged, to the topic named by its "to" field,
// found with indexOf (no JSON.parse, no auth, no store, no statuses of its
// own). Switchboard's numbers in bench/e2e/run.mjs are read against it, in
// two forms:
//
// - plain (the default): messages only. A delivered status from a receiver
//   (its op starts with "s") is read and dropped: 2 frames routed per
//   message (message in, message out), the status read as Switchboard reads
//   it.
// - --status: the recipient's delivered status is forwarded to the sender
//   too, so the router handles the 4 frames per message Switchboard does
//   (message in, delivery out, status in, "sent" out).
//
//   node bench/e2e/baseline.mjs [port] [--status] [--exit-on-stdin-eof]
//
// It prints "PORT <n>" once listening. With --exit-on-stdin-eof it exits when
// its stdin closes, so a parent that dies takes it along (bench/e2e/run.mjs),
// and answers a line on stdin with a full collection (under --expose-gc).
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const uWS = require('uWebSockets.js');

const TO = Buffer.from('"to":"');
const QUOTE = 0x22;
// The generator's frames start {"op":"msg" or {"op":"status": byte 7 tells them apart.
const OP_AT = 7;
const OP_STATUS = 0x73;
const args = process.argv.slice(2);
const forwardStatuses = args.includes('--status');

const app = uWS.App();
app.ws('/*', {
  maxPayloadLength: 1 << 20,
  maxBackpressure: 1 << 20,
  idleTimeout: 120,
  upgrade: (res, req, context) => {
    const q = new URLSearchParams(req.getQuery() ?? '');
    const u = q.get('u') ?? '';
    const g = q.get('g') ?? '';
    res.upgrade({ u, g }, req.getHeader('sec-websocket-key'), req.getHeader('sec-websocket-protocol'), req.getHeader('sec-websocket-extensions'), context);
  },
  open: (ws) => {
    const d = ws.getUserData();
    ws.subscribe(d.u);
    if (d.g) ws.subscribe(d.g); // group fan-out: &g=g<gid>
  },
  message: (ws, ab, isBinary) => {
    const b = Buffer.from(ab);
    if (!forwardStatuses && b[OP_AT] === OP_STATUS) return;
    const at = b.indexOf(TO);
    if (at < 0) return;
    const start = at + TO.length;
    const end = b.indexOf(QUOTE, start);
    if (end < 0) return;
    const topic = b.latin1Slice(start, end);
    // A group topic ("g<gid>") reaches every member but the sender, as a
    // Switchboard group message does.
    if (topic.charCodeAt(0) === 0x67) ws.publish(topic, ab, isBinary);
    else app.publish(topic, ab, isBinary);
  },
});

const port = Number(args.find((a) => /^\d+$/.test(a)) ?? 0);
if (args.includes('--exit-on-stdin-eof')) {
  process.stdin.on('end', () => process.exit(0));
  // A line on stdin asks for a full garbage collection (with node --expose-gc); the answer is "GC done".
  let line = '';
  process.stdin.on('data', (d) => {
    line += d;
    if (line.includes('\n')) {
      line = '';
      globalThis.gc?.();
      console.log('GC done');
    }
  });
  process.stdin.resume();
}

app.listen('127.0.0.1', port, (ls) => {
  if (!ls) {
    console.error('baseline: cannot listen');
    process.exit(1);
  }
  console.log(`PORT ${uWS.us_socket_local_port(ls)}`);
});
