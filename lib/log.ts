/**
 * The server's log: one event per line, with a stable event name and
 * key=value fields, at a verbosity `log_level` selects (docs/config.md#logs).
 *
 * Two formats: `text` for people (the default) and `json` (pino) for log
 * collectors. Both carry the same event names and fields, so a line found
 * in one is found in the other; the names below are a contract that log
 * queries and alerts rely on. Metrics should use the same names for the
 * same things (login.ok/login.failed: logins by result, conn.slow_closed:
 * slow consumers closed) but count where the thing happens, not through
 * tap(): the log leaves out what log_level does not ask for, and writes a
 * rate-limited frame at most once a second per connection.
 */
import pino from 'pino';

/** Severity of an event, as log collectors know it (pino's level labels). */
export type Severity = 'error' | 'warn' | 'info' | 'debug' | 'trace';

/**
 * Every event the server logs, with the `log_level` from which it appears.
 * Level 0 holds only what needs someone's attention, so a quiet server
 * (log_level = 0) prints nothing while all is well.
 */
export const EVENTS = {
  // 0: problems, always written.
  'store.error': { level: 0, severity: 'error' },
  /** A commit or read failed: the store is down (/health answers E_STORE_DOWN) until a commit or a probe read succeeds. */
  'store.down': { level: 0, severity: 'error' },
  /** The store works again after store.down. */
  'store.up': { level: 0, severity: 'info' },
  'api.error': { level: 0, severity: 'error' },
  'transport.error': { level: 0, severity: 'error' },
  'middleware.error': { level: 0, severity: 'error' },
  'bot.error': { level: 0, severity: 'error' },
  /** Something the cluster room or bus could not do or read (docs/cluster.md). */
  'cluster.error': { level: 0, severity: 'error' },
  /** This node lost NATS: what it publishes waits in the bus (up to its limit). */
  'cluster.disconnected': { level: 0, severity: 'warn' },
  /** Another node of the cluster stopped beating: its users are taken as gone from it. */
  'cluster.node_down': { level: 0, severity: 'warn' },
  /** A node that knew this one said hello again (it took this node for gone, or lost NATS): this node told it its users again. */
  'cluster.node_rejoined': { level: 0, severity: 'warn' },
  /** The command line's stop after SIGTERM/SIGINT failed (it then exits 1). */
  'server.stop_failed': { level: 0, severity: 'error' },
  /** A config reload (SIGHUP, API op reload) refused the config: the server runs on as before. */
  'server.reload_failed': { level: 0, severity: 'error' },
  /** The native core's own warnings: a slow or crashing module, a timed-out decision, a module's failed HTTP/socket/FastCGI request. */
  'core.warning': { level: 0, severity: 'warn' },
  /** A setting asks for more than the machine allows; the server uses less. */
  'server.setting_lowered': { level: 0, severity: 'warn' },
  /** A module sent to an address or group nobody has. */
  'module.unknown_destination': { level: 0, severity: 'warn' },
  /** A module went over its time budget budget_strikes times and is bypassed for budget_cooldown. */
  'module.bypassed': { level: 0, severity: 'warn' },
  /** A line from a module (mesibo_log, ctx.log): its block's `log` item decides which get here. */
  'module.log': { level: 0, severity: 'info' },
  // 1 (the default): what an operator needs to know the server is up.
  'server.start': { level: 1, severity: 'info' },
  'module.loaded': { level: 1, severity: 'info' },
  /** A bypassed module's cool-down ended; it gets messages again. */
  'module.resumed': { level: 1, severity: 'info' },
  'server.listening': { level: 1, severity: 'info' },
  'server.stopping': { level: 1, severity: 'info' },
  /** The command line got a signal: SIGTERM/SIGINT stop the server, SIGHUP reloads the config. */
  'server.signal': { level: 1, severity: 'info' },
  /** A config reload applied what changed; it names what needs a restart instead (warn then, or when a module's new instance failed). */
  'server.reloaded': { level: 1, severity: 'info' },
  'server.stopped': { level: 1, severity: 'info' },
  /** This node reached NATS (at start, and again after an outage). */
  'cluster.connected': { level: 1, severity: 'info' },
  /** Another node of the cluster appeared. */
  'cluster.node_up': { level: 1, severity: 'info' },
  // 2: who comes and goes, and what the backend asks.
  'conn.open': { level: 2, severity: 'debug' },
  'conn.close': { level: 2, severity: 'debug' },
  'login.ok': { level: 2, severity: 'debug' },
  'login.failed': { level: 2, severity: 'debug' },
  /** A device that stopped reading was cut off (its undelivered messages stay in the store). */
  'conn.slow_closed': { level: 2, severity: 'debug' },
  'api.call': { level: 2, severity: 'debug' },
  // 3: per frame; for finding out why one message went where it went.
  'message.in': { level: 3, severity: 'trace' },
  'frame.refused': { level: 3, severity: 'trace' },
  'frame.rate_limited': { level: 3, severity: 'trace' },
} as const satisfies Record<string, { level: 0 | 1 | 2 | 3; severity: Severity }>;

export type LogEvent = keyof typeof EVENTS;

export type LogFormat = 'text' | 'json';

export type LogFields = Record<string, string | number | boolean | null | undefined>;

export interface LoggerOptions {
  /** 0 (problems only) to 3 (every frame); default 1. */
  level?: number;
  format?: LogFormat;
  /** Receives each line without its newline. Default: stderr. */
  sink?: (line: string) => void;
}

/** What a listener added with tap() receives for each line written. */
export interface LogRecord {
  event: LogEvent;
  severity: Severity;
  fields: LogFields;
}

/** A value as it reads in a text line: bare when it has no space, quote or `=`, else a JSON string. */
function textValue(v: string | number | boolean | null): string {
  if (typeof v !== 'string') return String(v);
  return v !== '' && /^[^\s"=\\]+$/.test(v) ? v : JSON.stringify(v);
}

export class Logger {
  private current: number;
  private format: LogFormat;
  /** The caller's sink, for the json writer; `write` is where text lines go. */
  private readonly sink: ((line: string) => void) | undefined;
  private readonly write: (line: string) => void;
  private json: pino.Logger | null;
  private readonly taps = new Set<(r: LogRecord) => void>();

  constructor(opts: LoggerOptions = {}) {
    this.current = opts.level ?? 1;
    this.format = opts.format ?? 'text';
    this.sink = opts.sink;
    this.write = opts.sink ?? ((line) => process.stderr.write(line + '\n'));
    this.json = this.format === 'json' ? jsonLogger(this.sink) : null;
  }

  /** Switches between text and json while running (config reload); the next line is in the new format. */
  setFormat(format: LogFormat): void {
    if (format === this.format) return;
    this.format = format;
    this.json = format === 'json' ? jsonLogger(this.sink) : null;
  }

  /** The verbosity in force (log_level). */
  get level(): number {
    return this.current;
  }

  /** Changes the verbosity while running (config reload). */
  setLevel(level: number): void {
    this.current = level;
  }

  /**
   * True when `event` would be written. Check it before building fields
   * that cost something on a busy path (per frame, per connection).
   */
  enabled(event: LogEvent): boolean {
    return EVENTS[event].level <= this.current;
  }

  /** Writes `event` with `fields` when the level allows it. Undefined fields are left out. */
  event(event: LogEvent, fields: LogFields = {}, severity: Severity = EVENTS[event].severity): void {
    if (EVENTS[event].level > this.current) return;
    const clean: LogFields = {};
    for (const k in fields) if (fields[k] !== undefined) clean[k] = fields[k];
    if (this.json) {
      this.json[severity]({ event, ...clean });
    } else {
      let line = `${new Date().toISOString()} ${severity.padEnd(5)} ${event}`;
      for (const k in clean) line += ` ${k}=${textValue(clean[k] as string | number | boolean | null)}`;
      this.write(line);
    }
    for (const t of this.taps) {
      try {
        t({ event, severity, fields: clean });
      } catch {
        // a listener's failure must not cost the log line or the caller
      }
    }
  }

  /**
   * A line a module logged (mesibo_log, ctx.log) at its own `level`, which
   * its block's `log` item let through: always written, with a severity
   * after the module's level (0 is how mesibo modules report errors).
   */
  moduleLine(module: string, level: number, text: string): void {
    this.event('module.log', { module, module_level: level, text }, level === 0 ? 'warn' : level === 1 ? 'info' : 'debug');
  }

  /**
   * Calls `fn` with every line written (the status page's last warnings).
   * Returns a function that removes it.
   */
  tap(fn: (r: LogRecord) => void): () => void {
    this.taps.add(fn);
    return () => this.taps.delete(fn);
  }
}

/** The json format's writer: pino, to `sink` or (synchronously) to stderr. */
function jsonLogger(sink: ((line: string) => void) | undefined): pino.Logger {
  return pino(
    {
      // The level check is ours (event()); pino writes what it is given.
      level: 'trace',
      base: undefined, // no pid/hostname: the collector adds where a line came from
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    // pino's own stderr writer is synchronous, so the last lines before an
    // exit are not lost; a sink gets each line as a string.
    sink ? { write: (s: string) => sink(s.endsWith('\n') ? s.slice(0, -1) : s) } : pino.destination({ fd: 2, sync: true }),
  );
}

/** The text of an error for a log field: its stack when it has one. */
export function errorText(e: unknown): string {
  return e instanceof Error ? (e.stack ?? e.message) : String(e);
}
