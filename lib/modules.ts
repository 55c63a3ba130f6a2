/**
 * TypeScript (and JavaScript) modules: the same hooks as a native module, at
 * their own position in the same chain. The core calls into JavaScript only
 * at the position of a script module that implements the hook; a chain
 * without one never runs JavaScript per message.
 *
 * A module is an object with any of the hooks below (or a function that
 * returns one). docs/modules.md, "TypeScript modules", is the user's guide.
 */
import fs from 'node:fs';
import Module from 'node:module';
import path from 'node:path';
import { SwitchboardError } from './errors';
import { HookKind, HookSlot, RESULT_DEFER, type NativeCoreHandle } from './native';

/** What onMessage decides. `undefined` (no return) passes the message on. */
export type ModuleVerdict = 'pass' | 'consumed' | void;

/**
 * A message as a script module sees it; `payload`/`text` and the writable
 * fields may be changed. Read what you need during onMessage (or before the
 * Promise it returned settles): the sender, recipient and payload are read
 * from the core's buffer on first use, and a message kept past that and read
 * for the first time afterwards throws E_MESSAGE_EXPIRED.
 */
export class ChainMessage {
  readonly id: number;
  readonly groupid: number;
  /** MOD_MESIBO_UFLAG_DESTONLINE (1) when the recipient is connected. */
  readonly uflags: number;
  private _refid: number;
  private _flags: number;
  private _type: number;
  private _expiry: number;
  private fieldsChanged = false;
  private _from: string | undefined;
  private _to: string | undefined;
  private bytes: Buffer | undefined;
  private replaced = false;
  /** The core's buffer while the hook runs; null once detached or expired. */
  private buf: Buffer | null;
  private readonly fromLen: number;
  private readonly toLen: number;
  private readonly payloadLen: number;

  /** @internal */
  constructor(info: Float64Array, buf: Buffer) {
    this.fromLen = info[HookSlot.FromLen];
    this.toLen = info[HookSlot.ToLen];
    this.payloadLen = info[HookSlot.PayloadLen];
    this.id = info[HookSlot.Id];
    this.groupid = info[HookSlot.Groupid];
    this.uflags = info[HookSlot.Uflags];
    this._refid = info[HookSlot.Refid];
    this._flags = info[HookSlot.Flags];
    this._type = info[HookSlot.Type];
    this._expiry = info[HookSlot.Expiry];
    this.buf = buf;
  }

  private source(): Buffer {
    if (this.buf) return this.buf;
    throw new SwitchboardError('E_MESSAGE_EXPIRED', `message ${this.id}: its sender, recipient and payload can only be read during onMessage (or before its Promise settles); read them there and keep the values`);
  }

  /** The authenticated sender. */
  get from(): string {
    return (this._from ??= this.source().toString('utf8', 0, this.fromLen));
  }
  /** The recipient ('' for a group message). */
  get to(): string {
    if (this._to === undefined) this._to = this.toLen ? this.source().toString('utf8', this.fromLen, this.fromLen + this.toLen) : '';
    return this._to;
  }

  get refid(): number {
    return this._refid;
  }
  set refid(v: number) {
    this._refid = v;
    this.fieldsChanged = true;
  }
  get flags(): number {
    return this._flags;
  }
  set flags(v: number) {
    this._flags = v;
    this.fieldsChanged = true;
  }
  get type(): number {
    return this._type;
  }
  set type(v: number) {
    this._type = v;
    this.fieldsChanged = true;
  }
  get expiry(): number {
    return this._expiry;
  }
  set expiry(v: number) {
    this._expiry = v;
    this.fieldsChanged = true;
  }

  /** The payload bytes. Assign a new value (any length) to change what later modules and the recipient get. */
  get payload(): Buffer {
    if (!this.bytes) {
      const at = this.fromLen + this.toLen;
      this.bytes = Buffer.from(this.source().subarray(at, at + this.payloadLen));
    }
    return this.bytes;
  }
  set payload(v: Uint8Array | string) {
    this.bytes = typeof v === 'string' ? Buffer.from(v, 'utf8') : Buffer.from(v);
    this.replaced = true;
  }

  /** The payload as UTF-8 text; assign to replace it. */
  get text(): string {
    if (this.bytes) return this.bytes.toString('utf8');
    const at = this.fromLen + this.toLen;
    return this.source().toString('utf8', at, at + this.payloadLen);
  }
  set text(v: string) {
    this.payload = v;
  }

  /** True for a group message. */
  get isGroup(): boolean {
    return this.groupid !== 0;
  }

  /** @internal The hook is returning a Promise: copy what was not read yet, the buffer is about to be reused. */
  detach(): void {
    if (!this.buf) return;
    // One copy of what the module may still read (the hook buffer is reused
    // by the next message), decoded only if it does.
    this.buf = Buffer.from(this.buf.subarray(0, this.fromLen + this.toLen + this.payloadLen));
  }

  /** @internal The hook returned: what was not read can no longer be. */
  expire(): void {
    this.buf = null;
  }

  /** @internal What changed, for the core: [payload or null, fields or null]. */
  changes(): [Buffer | null, number[] | null] {
    return [this.replaced ? this.bytes! : null, this.fieldsChanged ? [this._type, this._flags, this._expiry, this._refid] : null];
  }

  /** @internal */
  get changed(): boolean {
    return this.replaced || this.fieldsChanged;
  }
}

/** A status (sent, delivered, read, failures) as on_message_status sees it. */
export interface ModuleStatus {
  id: number;
  /** 1 sent, 2 delivered, 3 read, 0x80 and up failures (see include/module.h). */
  status: number;
  /** The peer the status is about. */
  from: string;
  /** The user the status is for. */
  to: string;
  groupid: number;
}

export interface ModuleLogin {
  address: string;
  /** true: a connection opened; false: one closed. */
  online: boolean;
  flags: number;
}

/** What `ctx.send` takes: the same fields as mesibo_message. */
export interface SendParams {
  to?: string;
  groupid?: number;
  /** Default: the module's name. */
  from?: string;
  /** Default: a new id. */
  id?: number;
  refid?: number;
  flags?: number;
  type?: number;
  expiry?: number;
  payload: string | Uint8Array;
}

export interface ModuleContext {
  /** The block's name in the config (or the name given to use()). */
  readonly name: string;
  /** The block's items (key = value), as strings. */
  readonly config: Readonly<Record<string, string>>;
  /** The block's `log` level (without one: one below the server's log_level, also after a reload): log(level, ...) with a higher level is dropped. */
  readonly logLevel: number;
  /**
   * Sends a message (mesibo_message): it enters the chain after this module,
   * so this module never sees it. Returns false when it was refused (no
   * destination, too large, the core is closed).
   */
  send(params: SendParams): boolean;
  /** Logs a line when `level` <= the block's log level (0 always). */
  log(level: number, ...args: unknown[]): void;
  /**
   * In a reload (Core.reloadModules), what the instance being replaced
   * returned from its saveState; undefined on a first start.
   */
  readonly savedState?: unknown;
}

export interface SwitchboardModule {
  /** Shown in `core.modules`. */
  description?: string;
  /** Called once, before any message; may be async (the server waits before it listens). */
  init?(ctx: ModuleContext): void | Promise<void>;
  /**
   * Every message reaching this position. Return 'pass' (or nothing) or
   * 'consumed', or a Promise of one: the message then waits here (later
   * messages of the same conversation wait behind it) until it settles, at
   * most the block's timeout.
   */
  onMessage?(message: ChainMessage, ctx: ModuleContext): ModuleVerdict | Promise<ModuleVerdict>;
  onMessageStatus?(status: ModuleStatus, ctx: ModuleContext): void;
  onLogin?(login: ModuleLogin, ctx: ModuleContext): void;
  /** Called once when the core closes, the module is removed (use()'s handle) or replaced by a reload. */
  onCleanup?(ctx: ModuleContext): void;
  /**
   * Called on the instance being replaced by a reload, before the new one is
   * made: what it returns reaches the new instance as ctx.savedState (the
   * same object, not a copy). Take a snapshot: if the new init fails, this
   * instance keeps running.
   */
  saveState?(ctx: ModuleContext): unknown;
}

/** What use() resolves to: the way to take the module out again. */
export interface ModuleHandle {
  /** The name given to use(). */
  readonly name: string;
  /**
   * Takes the module out of the chain (later messages skip it) and runs its
   * onCleanup. Messages it is deciding (a pending onMessage Promise) still
   * get its decision. Calling it again, or after the core closed, does nothing.
   */
  remove(): Promise<void>;
}

/** A module, or a factory that makes one from its context. */
export type ModuleExport = SwitchboardModule | ((ctx: ModuleContext) => SwitchboardModule);

/** Identity helper that types a module literal. */
export function defineModule<T extends SwitchboardModule>(m: T): T {
  return m;
}

export interface UseOptions {
  /** Chain position (0 = first); default: the end of the chain. */
  position?: number;
  /** Items the module sees as ctx.config. */
  config?: Record<string, string>;
  /** How long an async onMessage may take, in ms (default 5000). */
  timeout?: number;
  /** What a message becomes when onMessage throws, rejects or times out (default 'pass'). */
  onError?: 'pass' | 'consume';
  /** ctx.log level (default: as a config block without a `log` item, one below log_level, so 0 with the default log_level). */
  log?: number;
  /** onMessage only for direct messages to this user (the core skips the call for all others). */
  onlyTo?: string;
}

interface Script {
  id: number;
  name: string;
  module: SwitchboardModule;
  ctx: ModuleContext;
  onError: number;
  warnedVerdict: boolean;
}

const PASS = 0;
const CONSUMED = 1;

function hooksOf(m: SwitchboardModule): number {
  return (m.onMessage ? 1 << HookKind.Message : 0) | (m.onMessageStatus ? 1 << HookKind.Status : 0) | (m.onLogin ? 1 << HookKind.Login : 0);
}

function describe(e: unknown): string {
  if (e instanceof Error) return e.stack ?? `${e.name}: ${e.message}`;
  return String(e);
}

/**
 * Loads a script module from a `module_script =` (or `script =`) value: a path (already resolved
 * against the config's folder by the core) or a package name resolved from
 * `baseDir`. `.ts` files are compiled with the `typescript` package when it
 * is installed.
 */
export function loadScript(spec: string, baseDir: string, blockName: string, fresh = false): ModuleExport {
  const file = resolveScript(spec, baseDir, blockName);
  // A reload must run the file as it is now: Node would hand back the
  // module it loaded before. (.ts files are compiled afresh every time.)
  if (fresh) delete require.cache[file];
  let exported: unknown;
  try {
    if (file.endsWith('.ts') || file.endsWith('.mts') || file.endsWith('.cts')) exported = requireTs(file, blockName);
    else exported = require(file);
  } catch (e) {
    if (e instanceof SwitchboardError) throw e;
    throw new SwitchboardError('E_SCRIPT_LOAD_FAILED', `module "${blockName}": loading ${file} failed: ${describe(e)}`, { module: blockName, file });
  }
  const ex = exported as { default?: unknown } | null;
  const m = ex && typeof ex === 'object' && 'default' in ex && ex.default ? ex.default : exported;
  if (!m || (typeof m !== 'object' && typeof m !== 'function')) {
    throw new SwitchboardError('E_SCRIPT_BAD_EXPORT', `module "${blockName}": ${file} must export a module object (with onMessage, onLogin, ...) or a function that returns one`, { module: blockName, file });
  }
  return m as ModuleExport;
}

/** The file a `module_script =` value names (see loadScript). */
export function resolveScript(spec: string, baseDir: string, blockName: string): string {
  try {
    return path.isAbsolute(spec) ? require.resolve(spec) : require.resolve(spec, { paths: [baseDir] });
  } catch {
    throw new SwitchboardError('E_SCRIPT_NOT_FOUND', `module "${blockName}": script ${spec} was not found; give a path to a .js/.ts file (relative to the config file) or an installed package name (if the block is a native module with a script item of its own, put mesibo_mod_${blockName}.so in module_dir or give the block a path = item)`, { module: blockName, file: spec });
  }
}

/** Which version of a script file is on disk: a changed file has a new stamp. */
export function scriptStamp(file: string): string {
  try {
    const st = fs.statSync(file);
    return `${file}\0${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}`;
  } catch {
    return `${file}\0missing`;
  }
}

function requireTs(file: string, blockName: string): unknown {
  let ts: typeof import('typescript');
  try {
    ts = require('typescript');
  } catch {
    throw new SwitchboardError('E_SCRIPT_TS_UNAVAILABLE', `module "${blockName}": ${file} is TypeScript and the typescript package is not installed; compile it to .js (tsc) or npm install typescript`, { module: blockName, file });
  }
  const out = ts.transpileModule(fs.readFileSync(file, 'utf8'), {
    compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true, sourceMap: false },
    fileName: file,
  });
  const m = new Module(file, module);
  m.filename = file;
  m.paths = (Module as unknown as { _nodeModulePaths(dir: string): string[] })._nodeModulePaths(path.dirname(file));
  (m as unknown as { _compile(code: string, file: string): void })._compile(out.outputText, file);
  return m.exports;
}

/**
 * Runs the script modules of one core: the core calls `hook` at their
 * positions and this calls the module, turning what it returns (or the
 * Promise it returns) into the core's verdict.
 */
export class ScriptHost {
  /** By id (small integers). */
  private readonly scripts: (Script | undefined)[] = [];
  private nextId = 1;
  private readonly info: Float64Array;
  private readonly buf: Buffer;
  private readonly log: (module: string, text: string) => void;

  constructor(
    private readonly handle: NativeCoreHandle,
    onComplete: (token: number, verdict: number, from: string) => void,
    log: (module: string, text: string) => void,
  ) {
    this.log = log;
    [this.info, this.buf] = handle.scripts((hook, id) => this.hook(hook, id), onComplete);
  }

  /** A new script id: give it to the core (attachScript/addScript) before create(), so ctx.log works in the factory and init. */
  newId(): number {
    return this.nextId++;
  }

  /** Makes the context and the module and calls init; the script gets no calls until register(). */
  create(id: number, name: string, exported: ModuleExport, config: Record<string, string>, logLevel: number, onError: number, savedState?: unknown): { script: Script; init: void | Promise<void> } {
    const handle = this.handle;
    const ctx: ModuleContext = {
      name,
      config: Object.freeze({ ...config }),
      // Read from the core: a module without a level of its own follows a reloaded log_level.
      get logLevel() {
        return handle.scriptLogLevel(id) ?? logLevel;
      },
      savedState,
      send: (p) => {
        const payload = typeof p.payload === 'string' ? Buffer.from(p.payload, 'utf8') : p.payload;
        return handle.send(id, { to: p.to, groupid: p.groupid, from: p.from, id: p.id, refid: p.refid, flags: p.flags, type: p.type, expiry: p.expiry }, payload) === 0;
      },
      log: (level, ...args) => handle.log(id, level, args.map((a) => (typeof a === 'string' ? a : a instanceof Error ? describe(a) : JSON.stringify(a))).join(' ')),
    };
    let module: SwitchboardModule;
    try {
      module = typeof exported === 'function' ? exported(ctx) : exported;
    } catch (e) {
      throw new SwitchboardError('E_SCRIPT_INIT_FAILED', `module "${name}": the module factory threw: ${describe(e)}`, { module: name });
    }
    if (!module || typeof module !== 'object') {
      throw new SwitchboardError('E_SCRIPT_BAD_EXPORT', `module "${name}": the module factory returned ${String(module)}; return an object with onMessage, onLogin, ...`, { module: name });
    }
    const script: Script = { id, name, module, ctx, onError, warnedVerdict: false };
    let init: void | Promise<void>;
    try {
      init = module.init?.(ctx);
    } catch (e) {
      throw new SwitchboardError('E_SCRIPT_INIT_FAILED', `module "${name}": init threw: ${describe(e)}`, { module: name });
    }
    return { script, init };
  }

  /** Starts calling the script's hooks. */
  register(script: Script): void {
    this.scripts[script.id] = script;
    this.handle.scriptHooks(script.id, hooksOf(script.module));
  }

  /** The registered script with this id. */
  get(id: number): Script | undefined {
    return this.scripts[id];
  }

  /** What the script returns from saveState, for its successor; undefined when it has none or it threw (logged). */
  saveState(id: number): unknown {
    const s = this.scripts[id];
    if (!s?.module.saveState) return undefined;
    try {
      return s.module.saveState(s.ctx);
    } catch (e) {
      this.log(s.name, `saveState threw: ${describe(e)}; the new instance starts without saved state`);
      return undefined;
    }
  }

  /** The script is out of the chain: runs its onCleanup and forgets it. */
  retire(id: number): void {
    const s = this.scripts[id];
    if (!s) return;
    this.scripts[id] = undefined;
    try {
      s.module.onCleanup?.(s.ctx);
    } catch (e) {
      this.log(s.name, `onCleanup threw: ${describe(e)}`);
    }
  }

  /** Runs onCleanup of every script, last first. */
  cleanup(): void {
    for (const s of this.scripts.filter((x): x is Script => x !== undefined).reverse()) {
      try {
        s.module.onCleanup?.(s.ctx);
      } catch (e) {
        this.log(s.name, `onCleanup threw: ${describe(e)}`);
      }
    }
    this.scripts.length = 0;
  }

  private drainScheduled = false;

  /**
   * One drain for every decision made in this microtask checkpoint: Promises
   * that settle together (a burst of traffic) continue in one pass through
   * the core instead of one each.
   */
  private drainSoon(): void {
    if (this.drainScheduled) return;
    this.drainScheduled = true;
    queueMicrotask(() => {
      this.drainScheduled = false;
      try {
        this.handle.drain();
      } catch {
        // the core was closed meanwhile: nothing is waiting any more
      }
    });
  }

  private fail(s: Script, what: string, e: unknown): void {
    this.handle.countError(s.id);
    this.log(s.name, `${what}: ${describe(e)}; the message was ${s.onError === CONSUMED ? 'dropped' : 'passed on'} (on_error)`);
  }

  private verdict(s: Script, v: unknown): number {
    if (v === undefined || v === 'pass' || v === PASS) return PASS;
    if (v === 'consumed' || v === 'consume' || v === CONSUMED) return CONSUMED;
    if (!s.warnedVerdict) {
      s.warnedVerdict = true;
      this.log(s.name, `onMessage returned ${JSON.stringify(v)}, which is neither 'pass' nor 'consumed'; treating it as 'pass' (logged once)`);
    }
    return PASS;
  }

  /** Called by the core, synchronously, at the script's position. */
  private hook(kind: number, id: number): number {
    const s = this.scripts[id];
    if (!s) return PASS;
    const info = this.info;
    if (kind === HookKind.Message) {
      const msg = new ChainMessage(info, this.buf);
      let r: unknown;
      try {
        r = s.module.onMessage!(msg, s.ctx);
      } catch (e) {
        msg.expire();
        this.fail(s, 'onMessage threw', e);
        return s.onError;
      }
      if (r !== null && typeof r === 'object' && typeof (r as PromiseLike<unknown>).then === 'function') {
        msg.detach();
        const handle = this.handle.defer();
        (r as PromiseLike<unknown>).then(
          (v) => {
            const code = this.verdict(s, v);
            const [payload, fields] = msg.changes();
            let ok: boolean;
            try {
              ok = this.handle.resolve(handle, code, payload, fields, false);
            } catch (e) {
              this.fail(s, 'onMessage resolved with a payload the core refused', e);
              ok = this.handle.resolve(handle, s.onError, null, null, false);
            }
            this.drainSoon();
            if (!ok) this.log(s.name, `onMessage for message ${msg.id} settled after its timeout (or after the core closed); the late decision was ignored`);
          },
          (e) => {
            this.fail(s, 'onMessage rejected', e);
            this.handle.resolve(handle, s.onError, null, null, false);
            this.drainSoon();
          },
        );
        return RESULT_DEFER;
      }
      msg.expire();
      const code = r === undefined ? PASS : this.verdict(s, r);
      if (msg.changed) {
        const [payload, fields] = msg.changes();
        try {
          this.handle.hookSet(payload, fields);
        } catch (e) {
          this.fail(s, 'onMessage set a payload the core refused', e);
          return s.onError;
        }
      }
      return code;
    }
    const fromLen = info[HookSlot.FromLen];
    try {
      if (kind === HookKind.Status) {
        const toLen = info[HookSlot.ToLen];
        s.module.onMessageStatus!(
          { id: info[HookSlot.Id], status: info[HookSlot.Status], groupid: info[HookSlot.Groupid], from: this.buf.toString('utf8', 0, fromLen), to: this.buf.toString('utf8', fromLen, fromLen + toLen) },
          s.ctx,
        );
      } else if (kind === HookKind.Login) {
        s.module.onLogin!({ address: this.buf.toString('utf8', 0, fromLen), online: info[HookSlot.Online] === 1, flags: info[HookSlot.Flags] }, s.ctx);
      }
    } catch (e) {
      this.handle.countError(s.id);
      this.log(s.name, `${kind === HookKind.Status ? 'onMessageStatus' : 'onLogin'} threw: ${describe(e)}`);
    }
    return PASS;
  }
}
