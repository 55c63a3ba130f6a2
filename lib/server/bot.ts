/**
 * Bot users: `server.bot(address)` makes a user whose messages go to code
 * instead of a person. Built on a script module at the head of the chain
 * that consumes the messages addressed to the bot and answers with
 * `ctx.send` (mesibo_message), so replies run through the rest of the chain
 * like any module message. README.md has the worked example.
 */
import type { ChainMessage, ModuleContext } from '../modules';

/** A message a bot heard. */
export interface BotMessage {
  readonly from: string;
  /** The bot's address. */
  readonly to: string;
  readonly id: number;
  readonly type: number;
  readonly text: string;
  readonly payload: Buffer;
  /** 'direct' or 'bot' by default, or what a categorize middleware set. */
  readonly category: string;
  /** For hears() with a RegExp: the match. */
  match?: RegExpMatchArray;
}

export type BotHandler = (message: BotMessage, bot: Bot) => void | Promise<void>;
/** A string matches the whole text (ignoring case and surrounding spaces); a RegExp is tested; a function decides. */
export type Pattern = string | RegExp | ((message: BotMessage) => boolean);

interface Hearing {
  patterns: Pattern[];
  handler: BotHandler;
}

export class Bot {
  private readonly hearings: Hearing[] = [];
  private readonly handlers = new Map<string, BotHandler[]>();
  private ctx: ModuleContext | null = null;
  /** Handlers for one sender run one after another, so replies keep the order of the questions. */
  private readonly queues = new Map<string, Promise<void>>();
  /** Messages heard, and handler errors (thrown or rejected). */
  readonly stats = { heard: 0, errors: 0 };

  /** @internal use server.bot(address) */
  constructor(
    readonly address: string,
    private readonly log: (line: string) => void,
    private readonly categoryOf: (from: string, id: number) => string = () => 'bot',
  ) {}

  /** Runs `handler` for messages whose text matches one of `patterns` (the first matching hears wins). */
  hears(patterns: Pattern | Pattern[], handler: BotHandler): this {
    this.hearings.push({ patterns: Array.isArray(patterns) ? patterns : [patterns], handler });
    return this;
  }

  /**
   * Runs `handler` for messages no hears() matched. Types: a category name
   * (set by a categorize middleware; 'bot' by default), 'direct_message', or
   * 'message'. Only the most specific type that has handlers runs: the
   * message's category, else 'direct_message', else 'message'.
   */
  on(types: string | string[], handler: BotHandler): this {
    for (const t of Array.isArray(types) ? types : [types]) {
      const list = this.handlers.get(t) ?? [];
      list.push(handler);
      this.handlers.set(t, list);
    }
    return this;
  }

  /** Answers the sender of `message`. Returns false when the core refused the message. */
  reply(message: BotMessage, text: string | Uint8Array, opts: { type?: number; flags?: number } = {}): boolean {
    return this.say(message.from, text, opts);
  }

  /** Sends to any user, as the bot. */
  say(to: string, text: string | Uint8Array, opts: { type?: number; flags?: number } = {}): boolean {
    if (!this.ctx) {
      this.log(`[bot ${this.address}] say() before the bot was attached to the chain; message to ${to} dropped`);
      return false;
    }
    return this.ctx.send({ to, from: this.address, payload: text, type: opts.type, flags: opts.flags });
  }

  /** @internal the module's init */
  attach(ctx: ModuleContext): void {
    this.ctx = ctx;
  }

  /** @internal the module's onMessage: consumes what is addressed to the bot. */
  handle(m: ChainMessage): 'pass' | 'consumed' {
    if (m.groupid || m.to !== this.address) return 'pass';
    this.stats.heard++;
    const message: BotMessage = {
      from: m.from, to: m.to, id: m.id, type: m.type, text: m.text, payload: m.payload, category: this.categoryOf(m.from, m.id),
    };
    const prev = this.queues.get(m.from) ?? Promise.resolve();
    const run = prev.then(() => this.dispatch(message)).catch((e) => {
      this.stats.errors++;
      this.log(`[bot ${this.address}] a handler failed on message ${m.id} from ${m.from}: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    });
    this.queues.set(m.from, run);
    run.then(() => {
      if (this.queues.get(m.from) === run) this.queues.delete(m.from);
    });
    return 'consumed';
  }

  private async dispatch(message: BotMessage): Promise<void> {
    for (const h of this.hearings) {
      for (const p of h.patterns) {
        if (this.matches(p, message)) {
          await h.handler(message, this);
          return;
        }
      }
    }
    // The most specific type with handlers wins: the category, then
    // direct_message, then message.
    const list = this.handlers.get(message.category) ?? this.handlers.get('direct_message') ?? this.handlers.get('message') ?? [];
    for (const handler of list) await handler(message, this);
  }

  private matches(p: Pattern, message: BotMessage): boolean {
    if (typeof p === 'string') return message.text.trim().toLowerCase() === p.trim().toLowerCase();
    if (p instanceof RegExp) {
      p.lastIndex = 0;
      const m = message.text.match(p);
      if (m) message.match = m;
      return m !== null;
    }
    return p(message) === true;
  }
}
