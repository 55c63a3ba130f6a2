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

/** A message as a script module sees it; `payload`/`text` and the writable fields may be changed. */
export class ChainMessage {
  readonly id: number;
  readonly groupid: number;
  /** MOD_MESIBO_UFLAG_DESTONLINE (1) when the recipient is connected. */
  readonly uflags: number;
  /** The authenticated sender. */
  readonly from: string;
  /** The recipient ('' for a group message). */
  readonly to: string;
  refid: number;
  flags: number;
  type: number;
  expiry: number;
  private bytes: Buffer;
  private replaced = false;
  private readonly orig: [number, number, number, number];

  /** @internal */
  constructor(info: Float64Array, buf: Buffer) {
    const fromLen = info[HookSlot.FromLen];
    const toLen = info[HookSlot.ToLen];
    const payloadLen = info[HookSlot.PayloadLen];
    this.id = info[HookSlot.Id];
    this.groupid = info[HookSlot.Groupid];
    this.uflags = info[HookSlot.Uflags];
    this.refid = info[HookSlot.Refid];
    this.flags = info[HookSlot.Flags];
    this.type = info[HookSlot.Type];
    this.expiry = info[HookSlot.Expiry];
    this.from = buf.toString('utf8', 0, fromLen);
    this.to = toLen ? buf.toString('utf8', fromLen, fromLen + toLen) : '';
    this.bytes = Buffer.from(buf.subarray(fromLen + toLen, fromLen + toLen + payloadLen));
    this.orig = [this.type, this.flags, this.expiry, this.refid];
  }

  /** The payload bytes. Assign a new value (any length) to change what later modules and the recipient get. */
  get payload(): Buffer {
    return this.bytes;
  }
  set payload(v: Uint8Array | string) {
    this.bytes = typeof v === 'string' ? Buffer.from(v, 'utf8') : Buffer.from(v);
    this.replaced = true;
  }

  /** The payload as UTF-8 text; assign to replace it. */
  get text(): string {
    return this.bytes.toString('utf8');
  }
  set text(v: string) {
    this.payload = v;
  }

  /** True for a group message. */
  get isGroup(): boolean {
    return this.groupid !== 0;
  }

  /** @internal What changed, for the core: [payload or null, fields or null]. */
  changes(): [Buffer | null, number[] | null] {
    const f = [this.type, this.flags, this.expiry, this.refid];
    const o = this.orig;
    const fieldsChanged = f[0] !== o[0] || f[1] !== o[1] || f[2] !== o[2] || f[3] !== o[3];
    return [this.replaced ? this.bytes : null, fieldsChanged ? f : null];
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
  /** The block's `log` level: log(level, ...) with a higher level is dropped. */
  readonly logLevel: number;
  /**
   * Sends a message (mesibo_message): it enters the chain after this module,
   * so this module never sees it. Returns false when it was refused (no
   * destination, too large, the core is closed).
   */
  send(params: SendParams): boolean;
  /** Logs a line when `level` <= the block's log level (0 always). */
  log(level: number, ...args: unknown[]): void;
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
  /** Called once when the core closes. */
  onCleanup?(ctx: ModuleContext): void;
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
  /** ctx.log level (default 0). */
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
 * Loads a script module from a `script =` value: a path (already resolved
 * against the config's folder by the core) or a package name resolved from
 * `baseDir`. `.ts` files are compiled with the `typescript` package when it
 * is installed.
 */
export function loadScript(spec: string, baseDir: string, blockName: string): ModuleExport {
  let file: string;
  try {
    file = path.isAbsolute(spec) ? require.resolve(spec) : require.resolve(spec, { paths: [baseDir] });
  } catch {
    throw new SwitchboardError('E_SCRIPT_NOT_FOUND', `module "${blockName}": script ${spec} was not found; give a path to a .js/.ts file (relative to the config file) or an installed package name`, { module: blockName, file: spec });
  }
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
  private readonly scripts = new Map<number, Script>();
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

  get size(): number {
    return this.scripts.size;
  }

  /** A new script id: give it to the core (attachScript/addScript) before create(), so ctx.log works in the factory and init. */
  newId(): number {
    return this.nextId++;
  }

  /** Makes the context and the module and calls init; the script gets no calls until register(). */
  create(id: number, name: string, exported: ModuleExport, config: Record<string, string>, logLevel: number, onError: number): { script: Script; init: void | Promise<void> } {
    const handle = this.handle;
    const ctx: ModuleContext = {
      name,
      config: Object.freeze({ ...config }),
      logLevel,
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
    this.scripts.set(script.id, script);
    this.handle.scriptHooks(script.id, hooksOf(script.module));
  }

  /** Runs onCleanup of every script, last first. */
  cleanup(): void {
    for (const s of [...this.scripts.values()].reverse()) {
      try {
        s.module.onCleanup?.(s.ctx);
      } catch (e) {
        this.log(s.name, `onCleanup threw: ${describe(e)}`);
      }
    }
    this.scripts.clear();
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
    const s = this.scripts.get(id);
    if (!s) return PASS;
    const info = this.info;
    if (kind === HookKind.Message) {
      const msg = new ChainMessage(info, this.buf);
      let r: unknown;
      try {
        r = s.module.onMessage!(msg, s.ctx);
      } catch (e) {
        this.fail(s, 'onMessage threw', e);
        return s.onError;
      }
      if (r !== null && typeof r === 'object' && typeof (r as PromiseLike<unknown>).then === 'function') {
        const handle = this.handle.defer();
        (r as PromiseLike<unknown>).then(
          (v) => {
            const code = this.verdict(s, v);
            const [payload, fields] = msg.changes();
            let ok: boolean;
            try {
              ok = this.handle.resolve(handle, code, payload, fields);
            } catch (e) {
              this.fail(s, 'onMessage resolved with a payload the core refused', e);
              ok = this.handle.resolve(handle, s.onError, null, null);
            }
            if (!ok) this.log(s.name, `onMessage for message ${msg.id} settled after its timeout (or after the core closed); the late decision was ignored`);
          },
          (e) => {
            this.fail(s, 'onMessage rejected', e);
            this.handle.resolve(handle, s.onError, null, null);
          },
        );
        return RESULT_DEFER;
      }
      const code = this.verdict(s, r);
      const [payload, fields] = msg.changes();
      if (payload || fields) {
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
