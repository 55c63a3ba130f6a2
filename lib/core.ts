/**
 * The typed facade over the native core: open a chain from a config file,
 * push client frames through it, hear what modules send and log.
 */
import { EventEmitter } from 'node:events';
import { SwitchboardError, type ErrorCode } from './errors';
import { loadScript, resolveScript, scriptStamp, ScriptHost, type ModuleExport, type ModuleHandle, type UseOptions } from './modules';
import { Info, native, VERDICT_DEFERRED, type ConfigSource, type NativeCoreHandle, type NativeDelivery, type NativeInstance, type NativeLogLine } from './native';

/** 'deferred': a module decides later (or an earlier message of the same conversation is still waiting); a 'complete' event follows. */
export type Verdict = 'pass' | 'consumed' | 'deferred';
export type WireFormat = 'json' | 'binary';

/** A message as the chain left it. */
export interface Message {
  id: number;
  refid: number;
  groupid: number;
  flags: number;
  type: number;
  expiry: number;
  from: string;
  to: string;
  payload: Buffer;
}

/** A message a module sent with mesibo_message, after the rest of the chain passed it. */
export interface ModuleMessage extends Message {
  /** The instance that sent it. */
  module: string;
}

export interface SubmitResult {
  /** 'msg': a message went through the chain; 'status': a receipt (delivered/read) from the recipient. */
  op: 'msg' | 'status';
  verdict: Verdict;
  /** The message after the chain; for a receipt, id and `to` (the user the receipt is for). */
  message: Message;
  /** For a receipt: 2 delivered, 3 read. */
  status: number;
  /** MOD_MESIBO_UFLAG_DESTONLINE (1) when the recipient had a connection (see login()). */
  uflags: number;
  /** The encoded delivery frame for the recipient (or the status frame for a receipt); null when a module consumed the message. */
  frame: Buffer | null;
  /** The "sent" status frame for the sender (messages only; null while deferred). */
  ack: Buffer | null;
  /** For verdict 'deferred': the token the 'complete' event will carry. */
  token: number;
}

export interface LogEntry {
  /** The module instance that logged, or null for the core's own lines. */
  module: string | null;
  level: number;
  text: string;
  /** A core line with its own log event (e.g. module.bypassed), about the module `subject`. */
  event?: string;
  subject?: string;
}

export type ModuleInfo = NativeInstance;

export interface StatusParams {
  id: number;
  status: number;
  /** The peer the status is about. */
  from: string;
  /** The user the status is for. */
  to: string;
  groupid?: number;
  refid?: number;
  flags?: number;
  type?: number;
  expiry?: number;
  uflags?: number;
  aid?: number;
}

export interface OpenOptions {
  /** Receives every log line, including those logged while modules load. Default: stderr. */
  onLog?: (entry: LogEntry) => void;
}

export type CoreConfig = { configFile: string } | { configText: string; configFile?: string; baseDir?: string };

/**
 * What Core.reloadModules did with each module block of the new config, by
 * instance name: reloaded (a new instance took the old one's place),
 * unchanged, failed (the old instance is still running; `code` and
 * `message` say why, with what the module logged) or restart (a block
 * added, removed, renamed or moved: not applied; it takes a restart).
 */
export interface ModuleReloadReport { reloaded: string[]; unchanged: string[]; failed: { module: string; code: ErrorCode; message: string }[]; restart: string[] }

function sourceOf(config: CoreConfig): ConfigSource {
  return 'configText' in config ? { text: config.configText, file: config.configFile, dir: config.baseDir } : { file: config.configFile };
}

const FORMAT_CODE: Record<WireFormat, number> = { json: 0, binary: 1 };

function defaultLog(e: LogEntry): void {
  process.stderr.write(`${e.module ? `[${e.module}] ` : '[switchboard] '}${e.text}\n`);
}

export interface CoreEvents {
  message: [ModuleMessage];
  log: [LogEntry];
  /**
   * A message that submit returned as deferred has been decided (verdict 0
   * pass, 1 consumed). While the listeners run, infoArray()/outBuffer()
   * describe it as submitRaw would have, and result(from) builds the object.
   */
  complete: [token: number, verdict: number, from: string];
}

export class Core extends EventEmitter<CoreEvents> {
  private handle: NativeCoreHandle | null;
  private out: Buffer;
  private readonly info: Float64Array;

  private constructor(src: ConfigSource, opts: OpenOptions) {
    super();
    const onLog = opts.onLog ?? defaultLog;
    // A listener that throws must not cost the events after it (the addon
    // hands over a batch in one call): report it and go on.
    const safely = (what: string, fn: () => void) => {
      try {
        fn();
      } catch (e) {
        try {
          onLog({ module: null, level: 0, text: `a '${what}' listener threw: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}` });
        } catch {
          // the log itself failed; nothing more to do
        }
      }
    };
    const onEvents = (deliveries: NativeDelivery[], logs: NativeLogLine[]) => {
      for (const l of logs) {
        const entry: LogEntry = { module: l.module || null, level: l.level, text: l.text };
        if (l.event) {
          entry.event = l.event;
          entry.subject = l.subject;
        }
        safely('log', () => {
          onLog(entry);
          this.emit('log', entry);
        });
      }
      for (const d of deliveries) safely('message', () => this.emit('message', d));
    };
    try {
      this.handle = new native.CoreHandle(src, onEvents);
    } catch (e) {
      throw SwitchboardError.from(e);
    }
    this.out = this.handle.out();
    this.info = this.handle.info();
    const handle = this.handle;
    this.scripts = new ScriptHost(
      handle,
      (token, verdict, from) => {
        if (this.info[Info.OutGrown] === 1) this.out = handle.out();
        safely('complete', () => this.emit('complete', token, verdict, from));
      },
      (module, text) => onEvents([], [{ module, level: 0, text }]),
    );
    try {
      this.ready = this.loadConfigScripts(src);
    } catch (e) {
      this.close();
      throw e;
    }
    this.ready.catch(() => undefined); // the caller awaits it; never an unhandled rejection
  }

  /** Resolves when every script module's init (which may be async) has finished; rejects with its error. */
  readonly ready: Promise<void>;
  private readonly scripts: ScriptHost;

  private loadConfigScripts(src: ConfigSource): Promise<void> {
    const instances = this.live().instances();
    if (!instances.some((i) => i.script)) return Promise.resolve();
    const cfg = native.parseConfig(src);
    const inits: Promise<void>[] = [];
    for (const inst of instances) {
      if (!inst.script) continue;
      const decl = cfg.modules[inst.position];
      const items: Record<string, string> = {};
      for (const it of decl?.items ?? []) items[it.key] = it.value;
      const exported = loadScript(inst.file, cfg.dir, inst.name);
      const onError = items.on_error === 'consume' || items.on_error === 'consumed' ? 1 : 0;
      const id = this.scripts.newId();
      this.scriptStamps.set(id, scriptStamp(resolveScript(inst.file, cfg.dir, inst.name)));
      this.live().attachScript(inst.position, id, 0);
      const { script, init } = this.scripts.create(id, inst.name, exported, items, inst.logLevel, onError);
      const attach = () => {
        if (this.handle) this.scripts.register(script);
      };
      if (init && typeof (init as Promise<void>).then === 'function') {
        inits.push(
          Promise.resolve(init).then(attach, (e) => {
            throw new SwitchboardError('E_SCRIPT_INIT_FAILED', `module "${inst.name}": init rejected: ${e instanceof Error ? e.message : String(e)}`, { module: inst.name });
          }),
        );
      } else {
        attach();
      }
    }
    return Promise.all(inits).then(() => undefined);
  }

  /** Config-declared script modules by script id: the file version they were loaded from. */
  private readonly scriptStamps = new Map<number, string>();
  /** The reload in progress: reloads run one after another. */
  private reloading: Promise<unknown> = Promise.resolve();

  /**
   * Applies the module blocks of a new config to the running chain, one
   * instance at a time (docs/modules.md, "Reloading modules"). A block with
   * the same name at the same place as a running instance is compared with
   * it: the same library file (path, inode, size, mtime) or script file and
   * the same items leave it running; otherwise a new instance is made from
   * the block and, once its init succeeded, takes the old one's place
   * without dropping a message. Blocks added, removed, renamed or moved are
   * reported in `restart` and not applied. Rejects (E_CONFIG_*) only when
   * the config itself cannot be read; nothing changes then.
   */
  reloadModules(config: CoreConfig): Promise<ModuleReloadReport> {
    const run = this.reloading.then(() => this.reloadNow(sourceOf(config)));
    this.reloading = run.catch(() => undefined);
    return run;
  }

  private async reloadNow(src: ConfigSource): Promise<ModuleReloadReport> {
    await Promise.resolve(); // never from inside a hook: after it returns
    let plan: ReturnType<NativeCoreHandle['reloadPlan']>;
    try {
      plan = this.live().reloadPlan(src);
    } catch (e) {
      throw SwitchboardError.from(e);
    }
    const report: ModuleReloadReport = { reloaded: [], unchanged: [], failed: [], restart: [] };
    const restart = new Set<string>();
    for (const step of plan.steps) {
      if (step.action === 'restart') {
        restart.add(step.name);
        continue;
      }
      if (this.closed) break;
      const changed = step.action === 'changed' || (step.script && this.scriptChanged(step.scriptId!, step.file, plan.dir, step.name));
      if (!changed) {
        report.unchanged.push(step.name);
        continue;
      }
      try {
        if (step.script) await this.reloadScript(src, plan.dir, step);
        else this.live().reloadInstance(src, step.index);
        report.reloaded.push(step.name);
      } catch (e) {
        const err = SwitchboardError.from(e);
        report.failed.push({ module: step.name, code: err.code as ErrorCode, message: err.message });
      }
    }
    for (const name of plan.removed) restart.add(name);
    report.restart = [...restart];
    return report;
  }

  private scriptChanged(id: number, spec: string, dir: string, name: string): boolean {
    try {
      return this.scriptStamps.get(id) !== scriptStamp(resolveScript(spec, dir, name));
    } catch {
      return true; // gone: the reload says why
    }
  }

  /** A fresh require of the block's script; the new instance replaces the old one once its init has finished. */
  private async reloadScript(src: ConfigSource, dir: string, step: ReturnType<NativeCoreHandle['reloadPlan']>['steps'][number]): Promise<void> {
    const exported = loadScript(step.file, dir, step.name, true);
    const stamp = scriptStamp(resolveScript(step.file, dir, step.name));
    const oldId = step.scriptId!;
    const id = this.scripts.newId();
    const { logLevel } = this.live().reloadInstance(src, step.index, id) as { logLevel: number };
    const onError = step.items.on_error === 'consume' || step.items.on_error === 'consumed' ? 1 : 0;
    try {
      const { script, init } = this.scripts.create(id, step.name, exported, step.items, logLevel, onError, this.scripts.saveState(oldId));
      try {
        await init;
      } catch (e) {
        throw new SwitchboardError('E_SCRIPT_INIT_FAILED', `module "${step.name}": init rejected: ${e instanceof Error ? e.message : String(e)}`, { module: step.name });
      }
      if (this.closed) return;
      this.scripts.register(script);
    } catch (e) {
      if (!this.closed) this.live().abortReload(id);
      throw e;
    }
    await Promise.resolve(); // the commit, like the plan, happens between hooks
    if (this.closed) return;
    // The old onCleanup runs just before the swap, in the same turn (no
    // message runs in between), while its ctx.log still reaches the core.
    this.scripts.retire(oldId);
    this.scriptStamps.delete(oldId);
    if (!this.live().commitReload(id)) {
      this.scripts.retire(id);
      throw new SwitchboardError('E_SCRIPT_INIT_FAILED', `module "${step.name}": the running instance went away while the new one started; nothing was replaced`, { module: step.name });
    }
    this.scriptStamps.set(id, stamp);
  }

  /**
   * Adds a TypeScript/JavaScript module to the chain at `opts.position`
   * (default: the end), after its init (which may be async) has finished.
   * Resolves to a handle whose remove() takes it out again; a module whose
   * factory or init fails is taken out before the rejection.
   */
  async use(name: string, module: ModuleExport, opts: UseOptions = {}): Promise<ModuleHandle> {
    const onError = opts.onError === 'consume' ? 1 : 0;
    // Never in the middle of a chain: a use() from inside a module's hook
    // (or a middleware added there) takes effect after it returns.
    await Promise.resolve();
    const id = this.scripts.newId();
    // In the chain (with no hooks yet) before the factory and init run, so
    // they can log. A module whose init fails stays there, inert.
    // Without opts.log the module takes the level of a config block without
    // a `log` item (one below log_level), which the core decides.
    const position = this.live().addScript(name, opts.position ?? Number.MAX_SAFE_INTEGER, id, 0, opts.timeout ?? 0, onError, opts.log, opts.onlyTo);
    const logLevel = opts.log ?? this.live().instances()[position].logLevel;
    try {
      const { script, init } = this.scripts.create(id, name, module, opts.config ?? {}, logLevel, onError);
      try {
        await init;
      } catch (e) {
        throw new SwitchboardError('E_SCRIPT_INIT_FAILED', `module "${name}": init rejected: ${e instanceof Error ? e.message : String(e)}`, { module: name });
      }
      if (this.handle) this.scripts.register(script);
    } catch (e) {
      await this.removeScript(id);
      throw e;
    }
    let removed = false;
    return {
      name,
      remove: async () => {
        if (removed) return;
        removed = true;
        await this.removeScript(id);
      },
    };
  }

  /** Takes script `id` out of the chain between messages and runs its onCleanup. */
  private async removeScript(id: number): Promise<void> {
    await Promise.resolve(); // not in the middle of a chain
    if (!this.handle) return;
    // onCleanup first, in the same turn (no message runs in between), so
    // that its ctx.log still reaches the core.
    this.scripts.retire(id);
    this.handle.removeScript(id);
  }

  /** Calls from the addon into JavaScript so far, and messages waiting for a deferred decision. */
  /**
   * The server's log_level changed (a reload): every module without a level
   * of its own (no `log` item, no use() log option) takes one below it.
   */
  setLogLevel(serverLevel: number): void {
    this.live().setLogLevel(serverLevel);
  }

    counters(): { jsCalls: number; waiting: number } {
    return this.live().counters();
  }

  /** Loads and initialises every module of the config, in order. Throws a SwitchboardError (E_CONFIG_*, E_MODULE_*) on failure. */
  static open(config: CoreConfig, opts: OpenOptions = {}): Core {
    const src = sourceOf(config);
    return new Core(src, opts);
  }

  /** The module instances in chain order, with the hooks each set and the time spent in them. */
  get modules(): ModuleInfo[] {
    return this.live().instances();
  }

  /**
   * Runs one client frame from the authenticated `from` through the chain.
   * Throws a SwitchboardError with the wire error code (E_FRAME_*, ...) when
   * the frame is bad. `format` picks the delivery frame's encoding (default:
   * the one the frame came in).
   */
  submit(from: string, frame: Uint8Array | string, format?: WireFormat): SubmitResult {
    const bytes = typeof frame === 'string' ? Buffer.from(frame) : frame;
    const v = this.submitRaw(from, bytes, format ? FORMAT_CODE[format] : -1);
    if (v < 0) throw this.frameError(v);
    return this.result(from);
  }

  /** The object form of what infoArray()/outBuffer() hold now (after submitRaw, or in a 'complete' listener). */
  result(from: string): SubmitResult {
    const info = this.info;
    const v = info[Info.Verdict];
    const out = this.outBuffer();
    const frameEnd = info[Info.FrameLen];
    const payloadAt = frameEnd + info[Info.Frame2Len];
    const toAt = payloadAt + info[Info.PayloadLen];
    const ackAt = toAt + info[Info.ToLen];
    const message: Message = {
      id: info[Info.Id],
      refid: info[Info.Refid],
      groupid: info[Info.Groupid],
      flags: info[Info.Flags],
      type: info[Info.Type],
      expiry: info[Info.Expiry],
      from,
      to: out.toString('utf8', toAt, ackAt),
      payload: Buffer.from(out.subarray(payloadAt, toAt)),
    };
    const op = info[Info.Op] === 2 ? 'status' : 'msg';
    return {
      op,
      verdict: v === 1 ? 'consumed' : v === VERDICT_DEFERRED ? 'deferred' : 'pass',
      message,
      status: info[Info.Status],
      uflags: info[Info.Uflags],
      frame: v === 0 ? Buffer.from(out.subarray(0, frameEnd)) : null,
      ack: info[Info.AckLen] ? Buffer.from(out.subarray(ackAt, ackAt + info[Info.AckLen])) : null,
      token: info[Info.Token],
    };
  }

  /**
   * The allocation-free form of submit for transports: returns the verdict
   * (0 pass, 1 consumed, 2 deferred: a 'complete' event with
   * info[Token] follows) or a negative wire error, and leaves the delivery
   * frame in `outBuffer()` at [0, info[FrameLen]).
   */
  submitRaw(from: string, frame: Uint8Array, outFormat = -1): number {
    const v = this.live().submit(from, frame, outFormat);
    if (v >= 0 && this.info[Info.OutGrown] === 1) this.out = this.live().out();
    return v;
  }

  /** What the last failed submit said about its frame (which field, which byte). */
  lastErrorDetail(): string {
    return this.live().info(true);
  }

  /**
   * The addon's handle, for the delivery engine (lib/delivery.ts): the
   * status frames it encodes run the chain's on_message_status as
   * statusFrame() does. Throws E_CORE_CLOSED once closed.
   */
  nativeHandle(): NativeCoreHandle {
    return this.live();
  }

  outBuffer(): Buffer {
    // A submit through the delivery engine (lib/delivery.ts) fills the core
    // without passing submitRaw.
    if (this.info[Info.OutGrown] === 1) this.out = this.live().out();
    return this.out;
  }

  infoArray(): Float64Array {
    return this.info;
  }

  /** Runs on_login on every instance that set it (online=false for a logout), once per connection; the core counts connections per address to set uflags. */
  login(address: string, online = true, flags = 0): void {
    this.live().login(address, online, flags);
  }

  /** Runs on_message_status on every instance that set it. */
  status(p: StatusParams): void {
    this.live().status(p);
  }

  /** Runs on_message_status and returns the status frame for `p.to` (about peer `p.from`), e.g. a failure the server decided. */
  statusFrame(p: StatusParams, format: WireFormat = 'json'): Buffer {
    return this.live().status(p, FORMAT_CODE[format]);
  }

  call(): void {
    this.live().call();
  }

  callStatus(): void {
    this.live().callStatus();
  }

  /** Processes now what modules sent from other threads, instead of on the next loop turn. */
  drain(): void {
    this.live().drain();
  }

  /** Runs on_cleanup once per instance in reverse order and unloads the modules. Safe to call twice. */
  close(): void {
    if (!this.handle) return;
    this.scripts?.cleanup();
    this.handle.close();
    this.handle = null;
  }

  get closed(): boolean {
    return this.handle === null;
  }

  private live(): NativeCoreHandle {
    if (!this.handle) throw new SwitchboardError('E_CORE_CLOSED', 'this core is closed; open a new one with Core.open()');
    return this.handle;
  }

  private frameError(code: number): SwitchboardError {
    return wireError(code, this.live().info(true));
  }
}

/** Turns a negative wire error number into a SwitchboardError with its stable code and message. */
export function wireError(code: number, detail = ''): SwitchboardError {
  const e = native.wireError(code);
  return new SwitchboardError(e.code, detail ? `${e.message} (${detail})` : e.message, { detail: detail || undefined });
}
