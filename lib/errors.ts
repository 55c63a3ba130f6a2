/**
 * Every error a user of the library can hit carries a stable `code` (match on
 * it, not on the message) and a message that says what to do.
 */
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

  constructor(code: string, message: string, extra: Partial<Pick<SwitchboardError, 'file' | 'line' | 'module' | 'moduleLog' | 'detail'>> = {}) {
    super(message);
    this.name = 'SwitchboardError';
    this.code = code;
    Object.assign(this, extra);
  }

  /** Wraps an error thrown by the addon (which carries code/file/line). */
  static from(e: unknown): SwitchboardError {
    if (e instanceof SwitchboardError) return e;
    const err = e as { code?: string; message?: string; file?: string; line?: number; module?: string; moduleLog?: string[] };
    return new SwitchboardError(err.code ?? 'E_INTERNAL', err.message ?? String(e), {
      file: err.file,
      line: err.line,
      module: err.module,
      moduleLog: err.moduleLog,
    });
  }
}
