/**
 * Every error a user of the library can hit carries a stable `code` (match on
 * it, not on the message) and a message that says what to do.
 *
 * The codes come from one catalog, ERRORS, so a code that is misspelt at a
 * throw site is a compile error rather than a code no document explains. The
 * native core throws codes too; test/errors.test.ts checks that every code in
 * cpp/*.cc is here, and that every code here is explained in docs/. The
 * client SDK's own codes are in lib/client/errors.ts (CLIENT_ERRORS).
 */
interface ErrorEntry {
  /** When the error happens, in one line. */
  readonly summary: string;
  /** What to do about it, where that is not in the message itself. */
  readonly hint?: string;
}

export const ERRORS = {
  // Configuration (cpp/config.cc, lib/config.ts, lib/cli.ts); docs/config.md.
  E_CONFIG_READ: { summary: 'the configuration file cannot be read', hint: 'check the path and that the server user may read it' },
  E_CONFIG_BAD_CHARACTER: { summary: 'the configuration file has a NUL or control byte', hint: 'save it as plain UTF-8 text' },
  E_CONFIG_EXPECTED_EQUALS: { summary: 'a configuration line is not "key = value"' },
  E_CONFIG_BAD_KEY: { summary: 'a configuration line has no valid setting name before "="' },
  E_CONFIG_UNKNOWN_SETTING: { summary: 'a top-level setting name is not one the server knows' },
  E_CONFIG_DUPLICATE_KEY: { summary: 'a setting is given twice in one block' },
  E_CONFIG_BAD_MODULE_NAME: { summary: 'a module block name is not letters, digits and "_"' },
  E_CONFIG_BRACE_ON_NEXT_LINE: { summary: 'a module block\'s "{" is on the line after "module NAME"' },
  E_CONFIG_EXPECTED_NEWLINE: { summary: 'something follows "{" or "}" on the same line' },
  E_CONFIG_UNCLOSED_BLOCK: { summary: 'a module block is not closed with "}"' },
  E_CONFIG_UNEXPECTED_BRACE: { summary: 'a "}" closes no open module block' },
  E_CONFIG_BAD_VALUE: { summary: 'a setting has a value the server cannot read' },

  // Start-up (lib/cli.ts, lib/server/server.ts, server.js); docs/operations.md, docs/config.md.
  E_INIT_EXISTS: { summary: '`switchboard init` would overwrite an existing configuration' },
  E_NODE_UNSUPPORTED: { summary: 'uWebSockets.js has no binary for this Node.js', hint: 'run on Node.js 20' },
  E_NOT_BUILT: { summary: 'dist/ is missing in a checkout', hint: 'run `npm run build:ts`' },
  E_LISTEN: { summary: 'the server cannot listen on the configured address' },
  E_DATA_DIR: { summary: 'data_dir cannot be created or written' },
  E_TLS: { summary: 'tls_cert or tls_key cannot be read or used' },

  // Modules (cpp/loader.cc, cpp/addon.cc); docs/modules.md.
  E_MODULE_NOT_FOUND: { summary: 'there is no module library at the path tried' },
  E_MODULE_NOT_SHARED_OBJECT: { summary: 'the module file is not a shared library' },
  E_MODULE_LOAD_FAILED: { summary: 'dlopen refused the module library' },
  E_MODULE_NO_INIT: { summary: 'the module library has no mesibo_module_NAME_init' },
  E_MODULE_SANITY_CHECK: { summary: 'the module was compiled against another module.h' },
  E_MODULE_INIT_FAILED: { summary: 'the module\'s init failed' },

  // Script modules (lib/modules.ts); docs/scripts.md.
  E_SCRIPT_NOT_FOUND: { summary: 'the module_script file or package does not exist' },
  E_SCRIPT_LOAD_FAILED: { summary: 'loading the module script threw' },
  E_SCRIPT_BAD_EXPORT: { summary: 'the module script exports neither a module object nor a factory' },
  E_SCRIPT_TS_UNAVAILABLE: { summary: 'a .ts module script, and the typescript package is not installed' },
  E_SCRIPT_INIT_FAILED: { summary: 'the module script\'s init (or factory) threw or rejected' },

  // The Core handle (cpp/addon.cc, lib/core.ts); docs/api.md.
  E_CORE_CLOSED: { summary: 'a call on a core that was closed', hint: 'open a new one with Core.open()' },
  E_CORE_BUSY: { summary: 'a module is added, removed or reloaded from inside a module\'s hook', hint: 'do it after the hook returns' },
  E_BAD_ARGUMENT: { summary: 'a native binding was called with arguments of the wrong shape (a bug in lib/)' },
  E_INTERNAL: { summary: 'a bug: the server logs the details' },

  // Wire format (cpp/wire.cc); the numbered table in docs/protocol.md.
  E_FRAME_EMPTY: { summary: 'an empty WebSocket message' },
  E_FRAME_TOO_LARGE: { summary: 'a frame over the frame limit' },
  E_FRAME_MALFORMED: { summary: 'a frame that cannot be parsed' },
  E_FRAME_TRUNCATED: { summary: 'a binary frame whose lengths run past its end' },
  E_UNKNOWN_OP: { summary: 'no op, or one a client may not send' },
  E_BAD_FIELD: { summary: 'a field with a wrong value, or one the op does not carry' },
  E_NO_DESTINATION: { summary: 'a message or status that names nobody' },
  E_BAD_ADDRESS: { summary: 'an address that is not 1 to 255 bytes of text without control characters' },
  E_BAD_VERSION: { summary: 'a frame of a protocol version other than 1' },
  E_BAD_BASE64: { summary: 'b64 is not standard base64' },
  E_PAYLOAD_TOO_LARGE: { summary: 'a payload over the payload limit' },
  E_UNKNOWN_ERROR: { summary: 'an error number the wire format does not know (a bug)' },

  // Sessions on the WebSocket (lib/server/sessions.ts, intake.ts); docs/protocol.md.
  E_NOT_LOGGED_IN: { summary: 'a frame other than login before logging in' },
  E_AUTH: { summary: 'the token is unknown or was revoked' },
  E_ALREADY_LOGGED_IN: { summary: 'a second login on a connection that is logged in' },
  E_BAD_DEVICE: { summary: 'the login\'s device label is not up to 64 bytes of text' },
  E_LOGIN_TIMEOUT: { summary: 'no login within login_timeout, or the server dropped an idle unauthenticated connection' },
  E_SERVER_FULL: { summary: 'the server is at max_connections' },
  E_TOO_MANY_CONNECTIONS: { summary: 'an IP or user is at its connection limit' },
  E_RATE_LIMITED: { summary: 'the connection sends faster than the rate limit' },
  E_MESSAGE_EXPIRED: { summary: 'a stored message expired before it could be delivered' },
  E_PRESENCE_LIMIT: { summary: 'the connection follows max_presence users already' },
  E_PRESENCE_DENIED: { summary: 'the presence setting does not let this user follow that one' },

  // The backend API and metrics (lib/server/api.ts, lib/server/server.ts); docs/api.md, docs/operations.md.
  E_METHOD: { summary: 'a backend API request that is not a POST' },
  E_BAD_REQUEST: { summary: 'a backend API request with a missing or wrong value' },
  E_BODY_TOO_LARGE: { summary: 'a backend API request body over the limit' },
  E_BAD_JSON: { summary: 'a backend API request body that is not a JSON object' },
  E_API_DISABLED: { summary: 'the backend API is off (no app_token)' },
  E_UNAUTHORIZED: { summary: 'a missing or wrong app token' },
  E_USER_EXISTS: { summary: 'useradd for a user that exists' },
  E_NO_SUCH_USER: { summary: 'an operation names a user that does not exist' },
  E_GROUP_EXISTS: { summary: 'groupadd for a group that exists' },
  E_NO_SUCH_GROUP: { summary: 'an operation names a group that does not exist' },
  E_NOT_FOUND: { summary: 'a path the HTTP listener does not serve' },
  E_METRICS_TOKEN: { summary: 'GET /metrics without the right metrics_token' },

  // The SQLite store (lib/store/sqlite.ts); docs/config.md.
  E_STORE_CORRUPT: { summary: 'switchboard.db is not a SQLite database, or is damaged' },
  E_STORE_LOCKED: { summary: 'another process holds a lock on the store' },
  E_STORE_OPEN: { summary: 'the store cannot be opened or written' },
  E_STORE_VERSION: { summary: 'a newer Switchboard wrote the store' },
  E_STORE_WRITE: { summary: 'a batch of writes to the store failed' },
  E_STORE_DOWN: { summary: 'the store cannot be reached or written (GET /health answers 503)', hint: 'no message is acknowledged until it is back; check the database (store.down and store.up in the log)' },
  E_STORE_READ: { summary: 'a read from a networked store (PostgreSQL) failed', hint: 'check that the database is up and reachable; nothing was changed' },
  E_STORE_CLOSED: { summary: 'a call on a store that was closed' },
  E_STORE_READONLY: { summary: 'a write on a store opened read-only' },
  E_STORE_ARGUMENT: { summary: 'a store call with an argument of the wrong type or range' },
  E_STORE_NO_GROUP: { summary: 'a member change for a group that does not exist' },
  E_STORE_NO_USER: { summary: 'adding a member that is not a user' },
  E_STORE_TOKEN_IN_USE: { summary: 'a token hash another user already has' },
  // The cluster bus on NATS (lib/cluster/); docs/cluster.md.
  E_CLUSTER_CONNECT: { summary: 'no NATS server in `cluster` could be reached when the bus started', hint: 'check the URLs and that nats-server runs and listens there' },
  E_CLUSTER_ADDRESS: { summary: 'a user address, node name, channel or subject prefix the bus cannot put in a NATS subject' },
  E_CLUSTER_BUFFER_FULL: { summary: 'NATS is unreachable and the bus holds its limit of bytes already: the item was not sent', hint: 'the caller keeps the item (stores it); the bus sends again once NATS is back' },
  E_CLUSTER_TOO_LARGE: { summary: 'an item larger than one NATS message can carry (the server\'s max_payload)' },
  E_CLUSTER_DISCONNECTED: { summary: 'a request or flush while NATS is unreachable' },
  E_CLUSTER_TIMEOUT: { summary: 'a request to another node got no answer in time' },
  E_CLUSTER_NO_NODE: { summary: 'a request to a node that is not connected to NATS' },
  E_CLUSTER_REMOTE: { summary: 'the other node failed to handle a request; the message is its error' },
  E_CLUSTER_FRAME: { summary: 'a message on the cluster\'s subjects that is not a bus frame of this version: it is dropped', hint: 'another program publishes on the cluster\'s subjects, or nodes of different versions share them' },
  E_CLUSTER_DUPLICATE_NODE: { summary: 'another node uses this node\'s name', hint: 'give every node its own `node` name' },
  E_CLUSTER_SERVER: { summary: 'the NATS server reported an error to the bus (permissions, limits)' },
  E_CLUSTER_CLOSED: { summary: 'a call on a cluster bus that was closed' },
} as const satisfies Record<string, ErrorEntry>;

/** Every code the server and library throw or send. */
export type ErrorCode = keyof typeof ERRORS;

export class SwitchboardError extends Error {
  readonly code: string;
  /** Config file or module file involved, when there is one. */
  readonly file?: string;
  /** 1-based config line, when there is one. */
  readonly line?: number;
  /** The module instance involved, when there is one. */
  readonly module?: string;
  /** What the module logged while its init ran (load failures). */
  readonly moduleLog?: string[];
  /** Extra detail, e.g. which frame field was wrong. */
  readonly detail?: string;

  constructor(code: ErrorCode, message: string, extra: Partial<Pick<SwitchboardError, 'file' | 'line' | 'module' | 'moduleLog' | 'detail'>> = {}) {
    super(message);
    this.name = 'SwitchboardError';
    this.code = code;
    Object.assign(this, extra);
  }

  /** Wraps an error thrown by the addon (which carries code/file/line). */
  static from(e: unknown): SwitchboardError {
    if (e instanceof SwitchboardError) return e;
    const err = e as { code?: string; message?: string; file?: string; line?: number; module?: string; moduleLog?: string[] };
    // The addon's codes are catalog codes (test/errors.test.ts greps cpp/);
    // anything else (a Node.js error's ERR_* code) is kept as it came, as before.
    return new SwitchboardError((err.code ?? 'E_INTERNAL') as ErrorCode, err.message ?? String(e), {
      file: err.file,
      line: err.line,
      module: err.module,
      moduleLog: err.moduleLog,
    });
  }
}
