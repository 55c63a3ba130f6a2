/**
 * The Botkit-style message pipeline: named stages on the server's flow, each
 * a list of middleware. docs/pipeline.md describes the order and what each
 * stage may change. A stage with no middleware is never entered: the server
 * checks `stage.empty` before building anything for it.
 */
import type { Message } from '../core';

/**
 * Middleware: `fn(message, next)` (a function declared with two parameters
 * gets `next`; call it once, with an error to report one), or
 * `fn(message)` returning nothing or a Promise. Call `message.drop()` to
 * stop the message.
 */
export type Middleware<T> = (message: T, next: (err?: unknown) => void) => void | Promise<void>;

/** What every pipeline message has. */
export interface Droppable {
  /** Stops the message here: no later middleware, stage or recipient sees it. */
  drop(): void;
  readonly dropped: boolean;
}

/** `ingest`: the raw frame from a client or the backend API, before decoding. */
export interface IngestMessage extends Droppable {
  /** The authenticated sender. */
  readonly from: string;
  readonly source: 'client' | 'api';
  /** The frame's bytes; assign a new Buffer to change what is decoded. */
  frame: Buffer;
  /** The client sent a binary frame. */
  readonly binary: boolean;
}

/** `normalize`, `categorize`, `receive` and `send`: a decoded message. */
export interface PipelineMessage extends Droppable, Message {
  readonly from: string;
  /** The recipient ('' for a group message). In `send`, see `recipient`. */
  to: string;
  /** The payload as UTF-8 text; assign to replace it. */
  text: string;
  /** 'direct', 'group' or 'bot' by default; categorize may set anything. */
  category: string;
  /** `send` only: the one user this copy goes to. */
  readonly recipient?: string;
}

/** `format`: one outgoing frame for one connection. Must be synchronous. */
export interface FormatMessage extends Droppable {
  /** The user the connection belongs to. */
  readonly to: string;
  /** The device name the connection gave (?device=), or ''. */
  readonly device: string;
  readonly binary: boolean;
  /** The encoded frame; assign a new one to send that instead. */
  frame: Buffer;
}

/** What a one-parameter middleware is given as `next`: it never calls it. */
const ignoreNext = (): void => undefined;

export class Stage<T extends Droppable> {
  private readonly fns: Middleware<T>[] = [];

  constructor(
    readonly name: string,
    private readonly onError: (stage: string, e: unknown) => void,
    private readonly onFirstUse?: () => void,
  ) {}

  /** Adds middleware at the end of this stage. */
  use(fn: Middleware<T>): this {
    if (typeof fn !== 'function') throw new TypeError(`middleware.${this.name}.use expects a function`);
    this.fns.push(fn);
    if (this.fns.length === 1) this.onFirstUse?.();
    return this;
  }

  get empty(): boolean {
    return this.fns.length === 0;
  }

  /**
   * Runs every middleware in order. Returns whether the message goes on (not
   * dropped): synchronously when every middleware finished synchronously, a
   * Promise otherwise. A middleware that throws, rejects or passes an error
   * to next is logged and the message goes on as that middleware left it.
   */
  run(m: T): boolean | Promise<boolean> {
    return this.from(m, 0);
  }

  private from(m: T, start: number): boolean | Promise<boolean> {
    const fns = this.fns;
    for (let i = start; i < fns.length; i++) {
      if (m.dropped) return false;
      const fn = fns[i];
      if (fn.length >= 2) {
        let sync = true;
        let called = false;
        let resume: ((e: unknown) => void) | null = null;
        const next = (e?: unknown) => {
          if (called) return; // a second call is ignored
          called = true;
          if (e) this.onError(this.name, e);
          if (!sync && resume) resume(e);
        };
        try {
          const ret = fn(m, next);
          // A callback-style middleware that also returns a Promise: its rejection is its error.
          if (ret && typeof (ret as Promise<void>).then === 'function') (ret as Promise<void>).then(undefined, next);
        } catch (e) {
          if (!called) {
            called = true;
            this.onError(this.name, e);
          }
        }
        sync = false;
        if (!called) {
          return new Promise<boolean>((res) => {
            resume = () => res(this.from(m, i + 1));
          });
        }
        continue;
      }
      let r: void | Promise<void>;
      try {
        r = fn(m, ignoreNext);
      } catch (e) {
        this.onError(this.name, e);
        continue;
      }
      if (r && typeof (r as Promise<void>).then === 'function') {
        return Promise.resolve(r).then(
          () => this.from(m, i + 1),
          (e) => {
            this.onError(this.name, e);
            return this.from(m, i + 1);
          },
        );
      }
    }
    return !m.dropped;
  }
}

/** The six stages, in the order a message meets them. */
export interface Middlewares {
  ingest: Stage<IngestMessage>;
  normalize: Stage<PipelineMessage>;
  categorize: Stage<PipelineMessage>;
  receive: Stage<PipelineMessage>;
  send: Stage<PipelineMessage>;
  format: Stage<FormatMessage>;
}

/** Base for the message objects: drop() and dropped. */
export class DropFlag {
  private isDropped = false;
  drop(): void {
    this.isDropped = true;
  }
  get dropped(): boolean {
    return this.isDropped;
  }
}

export class Ingest extends DropFlag implements IngestMessage {
  constructor(
    readonly from: string,
    readonly source: 'client' | 'api',
    public frame: Buffer,
    readonly binary: boolean,
  ) {
    super();
  }
}

export class Decoded extends DropFlag implements PipelineMessage {
  to: string;
  groupid: number;
  id: number;
  refid: number;
  flags: number;
  type: number;
  expiry: number;
  payload: Buffer;
  recipient?: string;
  readonly from: string;
  constructor(
    m: Message,
    public category: string,
  ) {
    super();
    this.from = m.from;
    this.to = m.to;
    this.groupid = m.groupid;
    this.id = m.id;
    this.refid = m.refid;
    this.flags = m.flags;
    this.type = m.type;
    this.expiry = m.expiry;
    this.payload = m.payload;
  }
  get text(): string {
    return this.payload.toString('utf8');
  }
  set text(v: string) {
    this.payload = Buffer.from(v, 'utf8');
  }
}

export class Format extends DropFlag implements FormatMessage {
  constructor(
    readonly to: string,
    readonly device: string,
    readonly binary: boolean,
    public frame: Buffer,
  ) {
    super();
  }
}

/**
 * Runs tasks one after another per key (a connection, a recipient): a task
 * that returns a Promise holds back later tasks of its key until it settles.
 * Tasks that finish synchronously run at once, with no Promise made.
 */
export class KeyedSerial<K> {
  private readonly waiting = new Map<K, (() => void | Promise<void>)[]>();

  constructor(private readonly onError: (e: unknown) => void) {}

  run(key: K, task: () => void | Promise<void>): void {
    const q = this.waiting.get(key);
    if (q) {
      q.push(task);
      return;
    }
    this.start(key, task);
  }

  private start(key: K, task: () => void | Promise<void>): void {
    let r: void | Promise<void>;
    try {
      r = task();
    } catch (e) {
      this.onError(e);
      r = undefined;
    }
    if (!r || typeof (r as Promise<void>).then !== 'function') return;
    this.waiting.set(key, []);
    const next = () => {
      const q = this.waiting.get(key)!;
      while (q.length) {
        const t = q.shift()!;
        let r2: void | Promise<void>;
        try {
          r2 = t();
        } catch (e) {
          this.onError(e);
          continue;
        }
        if (r2 && typeof (r2 as Promise<void>).then === 'function') {
          (r2 as Promise<void>).then(next, (e) => {
            this.onError(e);
            next();
          });
          return;
        }
      }
      this.waiting.delete(key);
    };
    (r as Promise<void>).then(next, (e) => {
      this.onError(e);
      next();
    });
  }
}
