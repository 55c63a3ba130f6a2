/**
 * The middleware stages around the chain (docs/pipeline.md): ingest,
 * normalize and categorize before it, receive as its last module, send per
 * recipient and format per connection after it. Each runs only when it has
 * middleware; this room holds the stages, the order they keep (per
 * connection before the chain, per recipient after it) and the category a
 * message was given, which the later stages and bots read.
 */
import type { Core, Message } from '../core';
import { errorText, type Logger } from '../log';
import type { ChainMessage } from '../modules';
import { native } from '../native';
import type { Bot } from './bot';
import { Decoded, Ingest, KeyedSerial, Stage, type Middlewares } from './pipeline';
import type { ServerSettings } from './settings';

/** Where a frame goes once the stages before the chain are done: `ok` false when one dropped it. */
export type AfterStages = (frame: Buffer, ok: boolean) => void;

export class Stages {
  readonly middleware: Middlewares;
  /** Frames of one connection (pre-chain stages) and deliveries to one user (send stage) stay in order. */
  private readonly serial: KeyedSerial<unknown>;
  /** Categories set before the chain, for the receive and send stages and bots ("from\0id"). */
  private readonly categories = new Map<string, string>();

  constructor(
    private readonly settings: ServerSettings,
    private readonly core: Core,
    private readonly logger: Logger,
    private readonly bots: ReadonlyMap<string, Bot>,
  ) {
    const stageError = (stage: string, e: unknown) => logger.event('middleware.error', { stage, error: errorText(e), outcome: 'the message went on as it was' });
    this.serial = new KeyedSerial((e) => logger.event('transport.error', { error: errorText(e) }));
    this.middleware = {
      ingest: new Stage('ingest', stageError),
      normalize: new Stage('normalize', stageError),
      categorize: new Stage('categorize', stageError),
      // The receive stage is a script module at the end of the chain, added
      // when its first middleware is.
      receive: new Stage('receive', stageError, () => {
        this.core.use('middleware.receive', { onMessage: (m) => this.receive(m) }, { timeout: 30_000 }).catch((e) => this.logger.event('middleware.error', { stage: 'receive', error: String(e) }));
      }),
      send: new Stage('send', stageError),
      format: new Stage('format', stageError),
    };
  }

  /** Whether a frame meets a stage before the chain (then it is copied and may wait). */
  get beforeChain(): boolean {
    const mw = this.middleware;
    return !mw.ingest.empty || !mw.normalize.empty || !mw.categorize.empty;
  }

  /** Whether a message's copies go through the send or the format stage, one recipient at a time. */
  get perRecipient(): boolean {
    return !this.middleware.send.empty || !this.middleware.format.empty;
  }

  /** Runs `task` after the earlier tasks of `key` (a connection, a recipient) have settled. */
  inOrder(key: unknown, task: () => void | Promise<void>): void {
    this.serial.run(key, task);
  }

  /**
   * ingest, normalize and categorize on one frame from `from`, then `done`
   * with the frame as they left it. Returns a Promise while a middleware
   * takes its time.
   */
  runBeforeChain(from: string, source: 'client' | 'api', frame: Buffer, binary: boolean, done: AfterStages): void | Promise<void> {
    const mw = this.middleware;
    if (!mw.ingest.empty) {
      const m = new Ingest(from, source, frame, binary);
      const r = mw.ingest.run(m);
      if (r instanceof Promise) return r.then((ok) => (ok ? this.decodedStages(from, m.frame, done) : done(m.frame, false)));
      if (!r) return done(m.frame, false);
      frame = m.frame;
    }
    return this.decodedStages(from, frame, done);
  }

  private decodedStages(from: string, frame: Buffer, done: AfterStages): void | Promise<void> {
    const mw = this.middleware;
    if (mw.normalize.empty && mw.categorize.empty) return done(frame, true);
    const d = native.decodeFrame(frame, this.settings.maxMessageSize);
    // Statuses, control frames and bad frames go to the core as they are.
    if (d.error !== undefined || d.op !== 'msg') return done(frame, true);
    const m = new Decoded({ ...(d as unknown as Message), from }, '');
    m.category = this.defaultCategory(m.to, m.groupid);
    const after = (ok: boolean): void => (ok ? done(reencode(m, d.format === 'binary'), true) : done(frame, false));
    const r = this.runDecoded(m);
    if (r instanceof Promise) return r.then(after);
    after(r);
  }

  /** normalize, then categorize; remembers the category for the later stages. */
  private runDecoded(m: Decoded): boolean | Promise<boolean> {
    const mw = this.middleware;
    const remember = (ok: boolean): boolean => {
      if (ok && (!mw.receive.empty || !mw.send.empty || this.bots.size)) this.categories.set(`${m.from}\0${m.id}`, m.category);
      return ok;
    };
    const r = mw.normalize.run(m);
    const cat = (ok: boolean): boolean | Promise<boolean> => {
      if (!ok) return false;
      m.category = m.category || this.defaultCategory(m.to, m.groupid);
      const r2 = mw.categorize.run(m);
      return r2 instanceof Promise ? r2.then(remember) : remember(r2);
    };
    return r instanceof Promise ? r.then(cat) : cat(r);
  }

  /** The receive stage, run as the last module of the chain. */
  private receive(cm: ChainMessage): 'pass' | 'consumed' | Promise<'pass' | 'consumed'> {
    const m = new Decoded(cm, this.category(cm.from, cm.id, cm.to, cm.groupid));
    const back = (ok: boolean): 'pass' | 'consumed' => {
      if (!ok) return 'consumed';
      if (m.payload !== cm.payload) cm.payload = m.payload;
      cm.refid = m.refid;
      cm.flags = m.flags;
      cm.type = m.type;
      cm.expiry = m.expiry;
      return 'pass';
    };
    const r = this.middleware.receive.run(m);
    return r instanceof Promise ? r.then(back) : back(r);
  }

  /**
   * The send stage on `recipient`'s copy of `m` (in order per recipient),
   * then `done` with whether it goes on.
   */
  runSend(m: Message, recipient: string, category: string, done: (copy: Decoded, ok: boolean) => void): void {
    this.serial.run(`r\0${recipient}`, () => {
      const copy = new Decoded(m, category);
      if (m.groupid) copy.to = '';
      copy.recipient = recipient;
      const res = this.middleware.send.empty ? true : this.middleware.send.run(copy);
      if (res instanceof Promise) return res.then((ok) => done(copy, ok));
      done(copy, res);
    });
  }

  /** The category categorize gave `from`'s message `id`, or the default one. */
  category(from: string, id: number, to: string, groupid: number): string {
    return this.categories.get(`${from}\0${id}`) ?? this.defaultCategory(to, groupid);
  }

  /** The category categorize gave, if any (bots default to 'bot'). */
  categoryOf(from: string, id: number): string | undefined {
    return this.categories.size ? this.categories.get(`${from}\0${id}`) : undefined;
  }

  /** `from`'s message `id` has been routed: its category is no longer needed. */
  forget(from: string, id: number): void {
    if (this.categories.size) this.categories.delete(`${from}\0${id}`);
  }

  private defaultCategory(to: string, groupid: number): string {
    return groupid ? 'group' : this.bots.has(to) ? 'bot' : 'direct';
  }
}

function reencode(m: Decoded, binary: boolean): Buffer {
  return native.encodeFrame('msg', { id: m.id, to: m.groupid ? '' : m.to, groupid: m.groupid, refid: m.refid, flags: m.flags, type: m.type, expiry: m.expiry, payload: m.payload }, binary ? 1 : 0) as Buffer;
}
