/**
 * The most recent `capacity` keys, for de-duplicating deliveries: the server
 * redelivers a message it has no delivered status for, so the same message
 * can arrive twice.
 */
export class RecentKeys {
  private readonly keys = new Set<string>();

  constructor(private readonly capacity: number) {}

  /** Records `key`; returns false when it was already among the recent keys. */
  add(key: string): boolean {
    if (this.keys.has(key)) return false;
    this.keys.add(key);
    if (this.keys.size > this.capacity) this.keys.delete(this.keys.values().next().value as string);
    return true;
  }
}
