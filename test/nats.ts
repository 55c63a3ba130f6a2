// A real nats-server for tests and the bus bench: Debian's nats-server 2.9,
// on a free loopback port, its log in a temporary folder. stop() kills it by
// PID with SIGKILL, as a crash would (core NATS keeps nothing on disk, so a
// gentler stop would test nothing more); start() brings it back on the same
// port, which is what the bus's clients reconnect to. Self-contained (Node
// built-ins only), so bench/cluster-bus.mjs can load it too.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

export interface NatsServer {
  readonly port: number;
  /** nats://127.0.0.1:PORT */
  readonly url: string;
  /** Whether the server process is running. */
  readonly running: boolean;
  /** Kills the server (SIGKILL, by PID); resolves once it has exited. */
  stop(): Promise<void>;
  /** Starts it again on the same port; resolves once it answers a client. */
  start(): Promise<void>;
  /** Stops the server and removes its folder. */
  close(): Promise<void>;
}

export const NATS_SERVER = '/usr/sbin/nats-server';

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

/** Whether a NATS server answers on the port: it greets every client with an INFO line. */
function answers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    let got = '';
    const done = (ok: boolean): void => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(1_000, () => done(false));
    s.once('error', () => done(false));
    s.on('data', (b) => {
      got += b.toString('latin1');
      if (got.includes('\r\n')) done(got.startsWith('INFO '));
    });
  });
}

export async function startNats(): Promise<NatsServer> {
  if (!fs.existsSync(NATS_SERVER)) throw new Error(`nats-server is not installed (no ${NATS_SERVER}): apt-get install nats-server`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sb-nats-'));
  const logFile = path.join(dir, 'nats.log');
  let port = await freePort();
  let child: ChildProcess | undefined;
  const killOnExit = (): void => {
    child?.kill('SIGKILL');
  };
  process.on('exit', killOnExit);

  const start = async (): Promise<void> => {
    if (child) throw new Error('nats-server is running already');
    // The AddressSanitizer preload of CI's ASan run is for node, not for a Go program.
    const env = { ...process.env };
    delete env.LD_PRELOAD;
    const p = spawn(NATS_SERVER, ['-a', '127.0.0.1', '-p', String(port), '-l', logFile], { stdio: 'ignore', env });
    child = p;
    p.once('exit', () => {
      if (child === p) child = undefined;
    });
    const deadline = Date.now() + 20_000;
    for (;;) {
      if (child !== p) throw new Error(`nats-server exited while starting: ${fs.existsSync(logFile) ? fs.readFileSync(logFile, 'utf8').slice(-2000) : ''}`);
      if (await answers(port)) return;
      if (Date.now() > deadline) throw new Error('nats-server did not answer within 20 s');
      await new Promise((r) => setTimeout(r, 50));
    }
  };

  const stop = async (): Promise<void> => {
    const p = child;
    if (!p) return;
    const exited = new Promise<void>((resolve) => p.once('exit', () => resolve()));
    p.kill('SIGKILL');
    await exited;
  };

  try {
    // The free port may be taken by someone else before nats-server binds it: try another.
    for (let attempt = 1; ; attempt++) {
      try {
        await start();
        break;
      } catch (e) {
        if (attempt === 3 || !/address already in use/i.test(String(e))) throw e;
        port = await freePort();
      }
    }
  } catch (e) {
    await stop();
    process.off('exit', killOnExit);
    fs.rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  return {
    port,
    get url() {
      return `nats://127.0.0.1:${port}`;
    },
    get running() {
      return child !== undefined;
    },
    stop,
    start,
    async close() {
      await stop();
      process.off('exit', killOnExit);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
