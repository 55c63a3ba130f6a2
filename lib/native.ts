/**
 * Loads the addon: a local build (through `bindings`) first, then a prebuilt
 * binary from prebuilds/ (node-gyp-build). SWITCHBOARD_ADDON names a specific
 * .node file, which is how the AddressSanitizer build is tested.
 */
import path from 'node:path';
import type { ErrorCode } from './errors';

export interface NativeConfigItem { key: string; value: string; line: number }
export interface NativeConfig {
  file: string;
  dir: string;
  settings: NativeConfigItem[];
  modules: { name: string; line: number; items: NativeConfigItem[] }[];
}
export interface NativeDelivery {
  module: string; from: string; to: string;
  id: number; refid: number; groupid: number; flags: number; type: number; expiry: number;
  payload: Buffer;
}
export interface NativeLogLine { module: string; level: number; text: string; event?: string; subject?: string }
export interface NativeInstance {
  name: string; file: string; position: number; description: string | null; logLevel: number;
  /** A TypeScript/JavaScript module (a `script =` block, or added with use()). */
  script: boolean;
  /** A script module's id in its host (lib/modules.ts ScriptHost). */
  scriptId?: number;
  /** Timeouts of deferred decisions, and errors its host counted (throws, rejections). */
  errors: number;
  /** Deferred decisions that ended in a timeout (also counted in errors). */
  timeouts: number;
  /** What on_message returned; deferred counts the decisions taken with switchboard_defer. */
  verdicts: { pass: number; consumed: number; deferred: number };
  /** The on_message time budget (budgetNs 0 = none): calls over it, messages that bypassed it, trips, and whether it is bypassed now. */
  budget: { budgetNs: number; overBudget: number; bypassed: number; trips: number; active: boolean };
  hooks: string[];
  /** buckets: calls per bucket of hookBucketBounds (not cumulative), the last one past every bound. */
  stats: Record<string, { calls: number; totalNs: number; maxNs: number; buckets: number[] }>;
}
export type ConfigSource = { file: string } | { text: string; file?: string; dir?: string };

export interface NativeCoreHandle {
  submit(from: string, frame: Uint8Array, outFormat: number): number;
  out(): Buffer;
  info(): Float64Array;
  info(detail: true): string;
  instances(): NativeInstance[];
  login(address: string, online: boolean, flags: number): void;
  status(p: object): void;
  status(p: object, format: number): Buffer;
  call(): void;
  callStatus(): void;
  drain(): void;
  close(): void;
  scripts(onHook: (hook: number, scriptId: number) => number, onComplete: (token: number, verdict: number, from: string) => void): [Float64Array, Buffer];
  attachScript(position: number, scriptId: number, hooks: number): void;
  scriptHooks(scriptId: number, hooks: number): void;
  addScript(name: string, position: number, scriptId: number, hooks: number, timeoutMs: number, onError: number, logLevel: number | undefined, onlyTo?: string): number;
  defer(): number;
  resolve(handle: number, verdict: number, payload: Uint8Array | null, fields: number[] | null, drainNow?: boolean): boolean;
  hookSet(payload: Uint8Array | null, fields: number[] | null): boolean;
  send(scriptId: number, params: Record<string, unknown>, payload: Uint8Array | string): number;
  log(scriptId: number, level: number, text: string): void;
  countError(scriptId: number): void;
  counters(): { jsCalls: number; waiting: number };
  /** How a new config's module blocks compare with the running instances (cpp/loader.cc core_reload_plan). */
  reloadPlan(src: ConfigSource): {
    dir: string;
    steps: { name: string; index: number; position: number | null; scriptId?: number; action: 'unchanged' | 'changed' | 'restart'; script: boolean; file: string; sameFile: boolean; sameItems: boolean; items: Record<string, string> }[];
    removed: string[];
  };
  /** Native: reloads the instance of config block `index` now (its new position). Script: stages it under scriptId ({logLevel}). Throws the load error. */
  reloadInstance(src: ConfigSource, index: number, scriptId?: number): number | { logLevel: number };
  commitReload(scriptId: number): boolean;
  abortReload(scriptId: number): void;
  removeScript(scriptId: number): boolean;
  /** The server's log_level changed: modules without a `log` item (or use()'s log option) take one below it. */
  setLogLevel(serverLevel: number): void;
  /** A script's log level now (undefined for an unknown id). */
  scriptLogLevel(scriptId: number): number | undefined;
}

/** The delivery engine's handle (cpp/delivery_binding.cc); lib/delivery.ts wraps it. */
export interface NativeDeliveryEngine {
  views(): { head: Float64Array; writes: Uint32Array; ops: Float64Array; bytes: Buffer; recipients: Uint32Array; owed: Int32Array };
  userAdd(name: string): number;
  userRemove(name: string): void;
  intern(name: string): number;
  name(user: number): string | undefined;
  setRemote(user: number, nodes: number): void;
  setRemotePumping(user: number, nodes: number): void;
  login(user: number, binary: boolean): number;
  logout(conn: number): boolean;
  storeLive(user: number): void;
  backlogSent(conn: number, sender: number, id: number): void;
  backlogDone(conn: number): void;
  backlogRecheck(conn: number): boolean;
  remoteMessage(recipient: number, from: number, id: number, refid: number, groupid: number, flags: number, type: number, expiry: number, payload: Uint8Array, stored: boolean, now: number): boolean;
  remoteStatus(from: number, to: number, id: number, status: number, now: number, receiptGid?: number, keep?: boolean): void;
  groupSet(gid: number, members: string[]): void;
  groupForget(gid: number): void;
  outFormat(): number;
  route(from: number, conn: number, now: number, out: Buffer, outFormat: number): number;
  submit(from: number, conn: number, frame: Uint8Array | ArrayBuffer, admitted: number, now?: number): number;
  admit(conn: number, frame: Uint8Array | ArrayBuffer, now: number): number;
  moduleMessage(from: string, fields: Record<string, unknown>, payload: Uint8Array, now: number): number;
  deliverCopy(recipient: number, from: number, fields: Record<string, unknown>, payload: Uint8Array, now: number): boolean;
  queueAck(conn: number, frame: Uint8Array, binary: boolean): void;
  trackReceipt(sender: number, recipient: number, id: number, flags: number, gid: number): void;
  inboxForget(user: number): void;
  inboxRemoved(user: number): void;
  setPerRecipient(on: boolean): void;
  configure(settings: { graceMs?: number; maxInboxMessages?: number; maxInboxBytes?: number; rateLimit?: number; userRateLimit?: number }): void;
  commitFailed(): void;
  commitBegin(): number;
  committed(epoch: number): void;
  expire(now: number): void;
  stop(): void;
  counters(): Float64Array;
  liveCount(): number;
}
/** Where each field of the delivery engine's views is (cpp/delivery_binding.cc). */
export interface NativeDeliveryLayout {
  head: Record<'status' | 'writes' | 'ops' | 'bytes' | 'commit' | 'liveWait' | 'perRecipient' | 'recipients' | 'talked' | 'grown' | 'outFormat', number>;
  op: Record<'kind' | 'recipient' | 'sender' | 'id' | 'refid' | 'gid' | 'flags' | 'type' | 'expiry' | 'expiresAt' | 'payloadOff' | 'payloadLen' | 'afterCommit' | 'status' | 'receipt' | 'keep', number>;
  opFields: number;
  writeFields: number;
  opKinds: Record<'enqueue' | 'ack' | 'forward' | 'forwardStatus', number>;
  admit: Record<'message' | 'status' | 'refusedStatus' | 'refusedConnection' | 'refusedUser', number>;
}

/** A value SQLite stores: what a parameter takes and a column gives back (cpp/sqlite_binding.cc). */
export type SqliteValue = number | bigint | string | Buffer | null;
/** One SQLite connection (cpp/sqlite_binding.cc). Errors carry SQLite's result code name as `code`. */
export interface NativeSqliteDb {
  exec(sql: string): void;
  inTransaction(): boolean;
  /** True when SQLite fell back to read-only because the file is not writable. */
  openedReadonly(): boolean;
  close(): void;
}
/** A prepared statement; every call binds all of its `?` parameters. */
export interface NativeSqliteStatement {
  /** Runs it; returns the number of rows changed. */
  run(...params: (SqliteValue | boolean | undefined | Uint8Array)[]): number;
  /** The first row (or with pluck its first column), undefined when there is none. */
  get(...params: (SqliteValue | boolean | undefined | Uint8Array)[]): unknown;
  all(...params: (SqliteValue | boolean | undefined | Uint8Array)[]): unknown[];
}

export interface NativeAddon {
  symbolsGlobal: boolean;
  symbolsGlobalError?: string;
  moduleVersion: number;
  infoSlots: number;
  /** Upper bounds in seconds of the buckets hook call times are counted in (cpp/core.h kHookBucketBounds). */
  hookBucketBounds: number[];
  CoreHandle: new (src: ConfigSource, onEvents: (d: NativeDelivery[], l: NativeLogLine[]) => void) => NativeCoreHandle;
  parseConfig(src: ConfigSource): NativeConfig;
  noop(): void;
  decodeFrame(buf: Uint8Array, maxPayload?: number): Record<string, unknown>;
  encodeFrame(kind: 'msg' | 'status' | 'error', fields: Record<string, unknown>, format: number): Buffer;
  /** `code` is one of ERRORS' codes: test/errors.test.ts checks every code cpp/ emits. */
  wireError(code: number): { code: ErrorCode; message: string };
  jsonExtract(buf: Uint8Array, key: string, offset?: number): { value: string; next: number } | null;
  Delivery: new (settings: Record<string, unknown>, host: Record<string, unknown>, core?: NativeCoreHandle) => NativeDeliveryEngine;
  deliveryLayout: NativeDeliveryLayout;
  SqliteDb: new (file: string, readonly: boolean, mustExist: boolean, busyTimeoutMs: number) => NativeSqliteDb;
  SqliteStatement: new (db: NativeSqliteDb, sql: string, pluck: boolean) => NativeSqliteStatement;
}

/** Slots of the Float64Array that `submit` fills (mirrors InfoSlot in cpp/slots.h; test/protocol.test.ts checks it). */
export const enum Info {
  Verdict, Op, Format,
  Id, Refid, Groupid, Flags, Type, Expiry, Status, Uflags,
  FrameLen, Frame2Len, PayloadLen, ToLen, AckLen, OutGrown, Token,
}

/** Slots of the Float64Array a script hook call fills (mirrors HookSlot in cpp/slots.h). */
export const enum HookSlot {
  Id, Refid, Groupid, Flags, Type, Expiry, Uflags, Status, Online,
  FromLen, ToLen, PayloadLen,
}

/** Hook numbers (mirror sb::Hook in cpp/core.h). */
export const enum HookKind { Message = 0, Status = 1, Login = 2 }

/** on_message's "decide later" (SWITCHBOARD_RESULT_DEFER in include/switchboard.h). */
export const RESULT_DEFER = 0x5342;
/** submit's verdict for a message that waits for a deferred decision. */
export const VERDICT_DEFERRED = 2;

export const packageRoot = path.resolve(__dirname, '..');

function load(): NativeAddon {
  const explicit = process.env.SWITCHBOARD_ADDON;
  if (explicit) return require(path.resolve(explicit)) as NativeAddon;
  try {
    return require('bindings')({ bindings: 'switchboard.node', module_root: packageRoot }) as NativeAddon;
  } catch (first) {
    try {
      return require('node-gyp-build')(packageRoot) as NativeAddon;
    } catch {
      throw first;
    }
  }
}

export const native: NativeAddon = load();
