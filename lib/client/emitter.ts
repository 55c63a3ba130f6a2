/**
 * A small typed event emitter that runs in browsers and Node alike. A listener
 * that throws does not stop the other listeners nor the client's own work
 * (acknowledging a message, for one): its exception is reported the way the
 * platform reports uncaught errors, as a DOM EventTarget does.
 */
export class Emitter<Events extends object> {
  private readonly listeners: { [K in keyof Events]?: Array<(event: Events[K]) => void> } = {};

  /** Calls `listener` on every `event`; returns a function that removes it. */
  on<K extends keyof Events>(event: K, listener: (event: Events[K]) => void): () => void {
    (this.listeners[event] ??= []).push(listener);
    return () => this.off(event, listener);
  }

  off<K extends keyof Events>(event: K, listener: (event: Events[K]) => void): void {
    const list = this.listeners[event];
    if (!list) return;
    const i = list.indexOf(listener);
    if (i >= 0) list.splice(i, 1);
  }

  protected emit<K extends keyof Events>(event: K, value: Events[K]): void {
    const list = this.listeners[event];
    if (!list) return;
    for (const listener of list.slice()) {
      try {
        listener(value);
      } catch (e) {
        reportListenerError(e);
      }
    }
  }
}

function reportListenerError(e: unknown): void {
  const report = (globalThis as { reportError?: (e: unknown) => void }).reportError;
  if (typeof report === 'function') report(e);
  else
    setTimeout(() => {
      throw e;
    });
}
