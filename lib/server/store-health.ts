/**
 * Whether the store works, for /health, the status page and the log. A
 * failed commit or read marks it down (`store.down`, once); while down, a
 * small read every second looks for its return, and the next commit that
 * lands, or that read, marks it up (`store.up`). Being down changes nothing
 * in how messages are handled: every batch is still a fresh attempt, and a
 * failed one is still never acknowledged (commit.ts).
 */
import { SwitchboardError } from '../errors';
import { errorText, type Logger } from '../log';
import type { AsyncStore } from '../store/types';

const PROBE_MS = 1000;

export interface StoreDown {
  /** The code of the call that failed (E_STORE_WRITE, E_STORE_READ, ...). */
  code: string;
  error: string;
  /** ms since the epoch. */
  since: number;
}

export class StoreHealth {
  private current: StoreDown | null = null;
  private probe: NodeJS.Timeout | null = null;
  private stopped = false;

  constructor(
    private readonly store: AsyncStore,
    private readonly logger: Logger,
    /** Called when the store is back (the inbox counts are read again). */
    private readonly onUp: () => void,
  ) {}

  /** Null while the store works. */
  get down(): StoreDown | null {
    return this.current;
  }

  failed(e: unknown): void {
    // A read that fails because the server is closing its store is no outage.
    if (this.current || this.stopped) return;
    const code = e instanceof SwitchboardError ? e.code : 'E_STORE_WRITE';
    this.current = { code, error: e instanceof Error ? e.message : String(e), since: Date.now() };
    this.logger.event('store.down', { code, error: errorText(e) });
    this.probe = setInterval(() => {
      this.store.countPending('').then(
        () => this.ok(),
        () => undefined,
      );
    }, PROBE_MS).unref();
  }

  /** A commit landed or the probe read: the store works (a no-op while it was up: one test per commit). */
  ok(): void {
    if (!this.current) return;
    const downMs = Date.now() - this.current.since;
    this.current = null;
    this.stopProbe();
    this.logger.event('store.up', { down_ms: downMs });
    this.onUp();
  }

  stop(): void {
    this.stopped = true;
    this.stopProbe();
  }

  private stopProbe(): void {
    if (this.probe) clearInterval(this.probe);
    this.probe = null;
  }
}
