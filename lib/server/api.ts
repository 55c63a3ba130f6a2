/**
 * The backend API, in the style of mesibo's: JSON POSTed to /api with an
 * `op`, authenticated by the config's app_token (the `Authorization: Bearer`
 * header or a `token` field). Every answer is JSON; every failure has a 4xx
 * status and a stable code. docs/api.md lists the operations.
 */
import type uWS from 'uWebSockets.js';
import { SwitchboardError, type ErrorCode } from '../errors';
import { errorText, type Logger } from '../log';
import type { AsyncStore } from '../store/types';
import type { DirectoryChange } from './cluster';
import type { ReloadReport } from './reload';
import { hashToken, newToken, sameSecret } from './tokens';

export interface ApiContext {
  /** Read at each request (a config reload may rotate it). */
  readonly appToken: string | null;
  store: AsyncStore;
  users: Set<string>;
  /** Every group's members (Directory.groups): set to what the store holds after each change. */
  groups: Map<number, Set<string>>;
  online(): string[];
  /** A Promise when a module deferred its decision: the answer waits for it. */
  send(from: string, frame: Uint8Array): SendResult | Promise<SendResult>;
  revoke(address: string): void;
  /**
   * Takes a user out of the directory and its groups before the store
   * deletes it (no message is routed to it meanwhile). Returns what to call
   * with the delete's outcome: false puts the user back.
   */
  removing(address: string): (deleted: boolean) => void;
  /** Runs `fn` with no batch of message writes in flight, and takes none until it settles (Commit.afterFlight). */
  afterFlight<T>(fn: () => Promise<T>): Promise<T>;
  /**
   * A change the store has now, for the other nodes of a cluster (nothing on
   * a single node). Resolves once every other live node has applied it (or
   * did not confirm within a second: logged), so that the API's answer
   * means the change is in effect on every node.
   */
  changed(change: DirectoryChange): Promise<void>;
  /** Server.reload(): rejects with the refused config's SwitchboardError. */
  reload(): Promise<ReloadReport>;
  logger: Logger;
}

type SendResult = { status: number; id: number; verdict: 'pass' | 'consumed' };

const MAX_BODY = 1024 * 1024;
/** The keys of a `message` request: the API's own (op, token, from) and a message frame's. */
const MESSAGE_KEYS = new Set(['op', 'token', 'from', 'to', 'gid', 'id', 'refid', 'type', 'flags', 'expiry', 'data', 'b64']);
const ADDRESS = /^[^\x00-\x1f]{1,255}$/u;

/**
 * The addresses that are no user. The users held here answer first; one
 * they do not know is looked up in the store, which in a cluster may have
 * it from another node's API before that node's broadcast arrives here.
 */
async function unknownUsers(ctx: ApiContext, addresses: string[]): Promise<string[]> {
  const unknown: string[] = [];
  for (const a of addresses) if (!ctx.users.has(a) && !(await ctx.store.userExists(a))) unknown.push(a);
  return unknown;
}

class ApiError extends Error {
  constructor(readonly status: number, readonly code: ErrorCode, message: string) {
    super(message);
  }
}

type Body = Record<string, unknown>;

/** A failure answer; built here so that its code is checked against the catalog. */
/**
 * What sending throws: the core's wire format errors (the request's fault),
 * or E_STORE_WRITE, a commit that failed (the server's: send again later).
 */
function sendError(e: unknown): never {
  if (!(e instanceof SwitchboardError)) throw e;
  throw new ApiError(e.code === 'E_STORE_WRITE' ? 503 : 400, e.code as ErrorCode, e.message);
}

/** Store errors a request can meet, as the API answers them: the store's state, not the request's fault, is the 503s. */
const STORE_ANSWERS: Partial<Record<ErrorCode, [number, ErrorCode]>> = {
  E_STORE_READ: [503, 'E_STORE_READ'],
  E_STORE_WRITE: [503, 'E_STORE_WRITE'],
  E_STORE_CLOSED: [503, 'E_STORE_CLOSED'],
  // Another request changed the group or the user between the check and the change.
  E_STORE_NO_GROUP: [404, 'E_NO_SUCH_GROUP'],
  E_STORE_NO_USER: [404, 'E_NO_SUCH_USER'],
};

function failure(code: ErrorCode, message: string): Body {
  return { ok: false, code, message };
}

function address(b: Body, key: string): string {
  const v = b[key];
  if (typeof v !== 'string') throw new ApiError(400, 'E_BAD_REQUEST', `"${key}" is required and must be a string`);
  if (!ADDRESS.test(v) || Buffer.byteLength(v) > 255) throw new ApiError(400, 'E_BAD_ADDRESS', `"${key}" must be 1 to 255 bytes of text without control characters`);
  return v;
}

function gid(b: Body): number {
  const v = b.gid;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 0xffffffff) throw new ApiError(400, 'E_BAD_REQUEST', '"gid" must be an integer from 1 to 4294967295');
  return v;
}

function addresses(b: Body, key: string): string[] {
  const v = b[key] ?? [];
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) throw new ApiError(400, 'E_BAD_REQUEST', `"${key}" must be an array of user addresses`);
  if (v.some((x) => !ADDRESS.test(x) || Buffer.byteLength(x) > 255)) throw new ApiError(400, 'E_BAD_ADDRESS', `every address in "${key}" must be 1 to 255 bytes of text without control characters`);
  return v as string[];
}

const ops: Record<string, (ctx: ApiContext, b: Body) => Body | Promise<Body>> = {
  async useradd(ctx, b) {
    const addr = address(b, 'address');
    const token = newToken();
    if (!(await ctx.store.addUser(addr, hashToken(token)))) throw new ApiError(409, 'E_USER_EXISTS', `user ${addr} exists; use op "usertoken" to issue it a new token`);
    ctx.users.add(addr);
    await ctx.changed({ op: 'user', address: addr, exists: true });
    return { address: addr, token };
  },
  async usertoken(ctx, b) {
    const addr = address(b, 'address');
    const token = newToken();
    if (!(await ctx.store.setTokenHash(addr, hashToken(token)))) throw new ApiError(404, 'E_NO_SUCH_USER', `no user ${addr}; add it with op "useradd"`);
    ctx.revoke(addr);
    await ctx.changed({ op: 'token', address: addr });
    return { address: addr, token };
  },
  userdel(ctx, b) {
    const addr = address(b, 'address');
    // Ordered after the batch in flight, and no batch is taken until the
    // delete has landed: a copy for the user committed after it would
    // outlive the user. Copies still buffered are dropped by the delete.
    return ctx.afterFlight(async () => {
      // Its connections close first: the live copies they had not confirmed
      // are stored as at any disconnect, and the delete drops them with the
      // rest. Out of the directory before the store is asked, so nothing
      // new is routed to it while the delete is on its way.
      ctx.revoke(addr);
      const settle = ctx.removing(addr);
      let removed = false;
      try {
        removed = await ctx.store.removeUser(addr);
      } finally {
        settle(removed);
      }
      if (!removed) throw new ApiError(404, 'E_NO_SUCH_USER', `no user ${addr}`);
      await ctx.changed({ op: 'user', address: addr, exists: false });
      return { address: addr };
    });
  },
  async users(ctx) {
    return { users: await ctx.store.listUsers() };
  },
  async groupadd(ctx, b) {
    const g = gid(b);
    if (b.name !== undefined && typeof b.name !== 'string') throw new ApiError(400, 'E_BAD_REQUEST', '"name" must be a string');
    const name = typeof b.name === 'string' ? b.name : '';
    // Everything is checked before the group exists: a refused request leaves nothing behind.
    const members = addresses(b, 'members');
    const unknown = await unknownUsers(ctx, members);
    if (unknown.length) throw new ApiError(404, 'E_NO_SUCH_USER', `no such users: ${unknown.join(', ')}`);
    if (!(await ctx.store.addGroup(g, name))) throw new ApiError(409, 'E_GROUP_EXISTS', `group ${g} exists`);
    ctx.groups.set(g, new Set());
    if (members.length) await ctx.store.editMembers(g, members, []);
    const now = await ctx.store.members(g);
    ctx.groups.set(g, new Set(now));
    await ctx.changed({ op: 'group', gid: g, members: now });
    return { gid: g, members: now };
  },
  async groupdel(ctx, b) {
    const g = gid(b);
    if (!(await ctx.store.removeGroup(g))) throw new ApiError(404, 'E_NO_SUCH_GROUP', `no group ${g}`);
    ctx.groups.delete(g);
    await ctx.changed({ op: 'group', gid: g, members: null });
    return { gid: g };
  },
  async groupeditmembers(ctx, b) {
    const g = gid(b);
    if (!(await ctx.store.groupExists(g))) throw new ApiError(404, 'E_NO_SUCH_GROUP', `no group ${g}; add it with op "groupadd"`);
    const add = addresses(b, 'add');
    const remove = addresses(b, 'remove');
    const unknown = await unknownUsers(ctx, add);
    if (unknown.length) throw new ApiError(404, 'E_NO_SUCH_USER', `no such users: ${unknown.join(', ')}`);
    await ctx.store.editMembers(g, add, remove);
    const now = await ctx.store.members(g);
    ctx.groups.set(g, new Set(now));
    await ctx.changed({ op: 'group', gid: g, members: now });
    return { gid: g, members: now };
  },
  message(ctx, b) {
    const from = address(b, 'from');
    if (!ctx.users.has(from)) throw new ApiError(404, 'E_NO_SUCH_USER', `no user ${from} to send as`);
    // A field a message frame may not carry is refused as the wire format
    // refuses it, not dropped: the caller would think it had an effect.
    for (const k of Object.keys(b)) {
      if (!MESSAGE_KEYS.has(k)) throw new ApiError(400, 'E_BAD_FIELD', `"${k}" is not a field of a message; use ${[...MESSAGE_KEYS].filter((x) => x !== 'op' && x !== 'token').join(', ')}`);
    }
    // An id that is there but wrong goes to the decoder, which refuses it.
    const frame: Body = { op: 'msg', id: b.id !== undefined ? b.id : (Math.random() * 0xfffffffe + 1) >>> 0 || 1 };
    for (const k of ['to', 'gid', 'refid', 'type', 'flags', 'expiry', 'data', 'b64']) if (b[k] !== undefined) frame[k] = b[k];
    try {
      const r = ctx.send(from, Buffer.from(JSON.stringify(frame)));
      if (r instanceof Promise) return r.then((d) => ({ id: d.id, status: d.status, verdict: d.verdict }), sendError);
      return { id: r.id, status: r.status, verdict: r.verdict };
    } catch (e) {
      return sendError(e);
    }
  },
  online(ctx) {
    return { online: ctx.online() };
  },
  reload(ctx) {
    return ctx.reload().then(
      (r) => ({ ...r }),
      (e: SwitchboardError) => {
        // The request was fine; the config it asked to load was not.
        throw new ApiError(422, e.code as ErrorCode, e.message);
      },
    );
  },
};

function reply(res: uWS.HttpResponse, status: number, body: Body): void {
  res.cork(() => {
    res.writeStatus(`${status} ${status === 200 ? 'OK' : 'Error'}`).writeHeader('Content-Type', 'application/json').end(JSON.stringify(body));
  });
}

export function handleApi(ctx: ApiContext, res: uWS.HttpResponse, req: uWS.HttpRequest): void {
  let aborted = false;
  res.onAborted(() => {
    aborted = true;
  });
  // api.call: the request's op, how it ended and who asked. The peer can
  // only be read now, before the body arrives.
  const seen: { op?: string } = {};
  const logCalls = ctx.logger.enabled('api.call');
  const peer = logCalls ? Buffer.from(res.getRemoteAddressAsText()).toString() : '';
  const answer = (status: number, body: Body) => {
    if (logCalls) ctx.logger.event('api.call', { op: seen.op, status, code: body.ok === false ? (body.code as string) : undefined, peer });
    reply(res, status, body);
  };
  if (req.getMethod() !== 'post') {
    answer(405, failure('E_METHOD', 'use POST with a JSON body'));
    return;
  }
  // Two Content-Length headers (or one with Transfer-Encoding) are how a
  // request is smuggled past a proxy that reads the other one: refused.
  let lengths = 0;
  let chunked = false;
  req.forEach((k) => {
    if (k === 'content-length') lengths++;
    else if (k === 'transfer-encoding') chunked = true;
  });
  if (lengths > 1 || (lengths && chunked)) {
    reply(res, 400, failure('E_BAD_REQUEST', 'the request has more than one Content-Length, or Content-Length with Transfer-Encoding; send exactly one'));
    return;
  }
  const auth = req.getHeader('authorization');
  const chunks: Buffer[] = [];
  let size = 0;
  res.onData((chunk, isLast) => {
    if (aborted) return;
    size += chunk.byteLength;
    if (size > MAX_BODY) {
      if (!aborted) answer(413, failure('E_BODY_TOO_LARGE', `request bodies are limited to ${MAX_BODY} bytes`));
      aborted = true;
      return;
    }
    chunks.push(Buffer.from(chunk.slice(0)));
    if (!isLast) return;
    const fail = (e: unknown): [number, Body] => {
      if (e instanceof ApiError) return [e.status, failure(e.code, e.message)];
      const store = e instanceof SwitchboardError ? STORE_ANSWERS[e.code as ErrorCode] : undefined;
      if (store) {
        ctx.logger.event('api.error', { op: seen.op, error: errorText(e) });
        return [store[0], failure(store[1], (e as SwitchboardError).message)];
      }
      ctx.logger.event('api.error', { op: seen.op, error: errorText(e) });
      return [500, failure('E_INTERNAL', 'the server failed to handle this request; see its log')];
    };
    let result: Body | Promise<Body>;
    try {
      result = run(ctx, auth, Buffer.concat(chunks), seen);
    } catch (e) {
      const [status, body] = fail(e);
      if (!aborted) answer(status, body);
      return;
    }
    if (result instanceof Promise) {
      // The store's answer, or a message a module is still deciding: answer when it comes.
      result.then(
        (b) => !aborted && answer(200, { ok: true, ...b }),
        (e) => {
          const [status, body] = fail(e);
          if (!aborted) answer(status, body);
        },
      );
      return;
    }
    if (!aborted) answer(200, { ok: true, ...result });
  });
}

/** Runs one request; `seen.op` is set once the op is known and authorized, for the log. */
function run(ctx: ApiContext, auth: string, raw: Buffer, seen: { op?: string }): Body | Promise<Body> {
  let b: unknown;
  try {
    b = JSON.parse(raw.toString('utf8'));
  } catch {
    throw new ApiError(400, 'E_BAD_JSON', 'the body is not valid JSON; send {"op": "...", ...}');
  }
  if (!b || typeof b !== 'object' || Array.isArray(b)) throw new ApiError(400, 'E_BAD_JSON', 'the body must be a JSON object with an "op"');
  const body = b as Body;
  const token = auth.startsWith('Bearer ') ? auth.slice(7) : typeof body.token === 'string' ? body.token : '';
  if (!ctx.appToken) throw new ApiError(403, 'E_API_DISABLED', 'the backend API is off: set app_token in the config to enable it');
  if (!token || !sameSecret(token, ctx.appToken)) throw new ApiError(401, 'E_UNAUTHORIZED', 'missing or wrong app token: send Authorization: Bearer <app_token>');
  const op = typeof body.op === 'string' ? ops[body.op] : undefined;
  if (!op || !Object.prototype.hasOwnProperty.call(ops, body.op as string)) throw new ApiError(400, 'E_UNKNOWN_OP', `unknown op ${JSON.stringify(body.op)}; ops: ${Object.keys(ops).join(', ')}`);
  seen.op = body.op as string;
  return op(ctx, body);
}
