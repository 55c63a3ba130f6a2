// Helpers of the store tests (store.test.ts, store-contract.test.ts,
// postgres-store.test.ts): a copy to enqueue, a recipient's inbox as text,
// the error code of a call, for synchronous and asynchronous engines alike.
import type { NewMessage, StoredMessage } from '../lib/store/types';

/** A copy whose payload is "sender#id". */
export function msg(recipient: string, sender: string, id: number, more: Partial<NewMessage> = {}): NewMessage {
  return { recipient, sender, id, refid: 0, groupid: 0, flags: 0, type: 0, expiry: 0, expiresAt: 0, payload: Buffer.from(`${sender}#${id}`), ...more };
}

/** The payload ("sender#id") of each committed copy for the recipient, in delivery order. */
export async function inbox(s: { pending(recipient: string): StoredMessage[] | Promise<StoredMessage[]> }, recipient: string): Promise<string[]> {
  return (await s.pending(recipient)).map((m) => m.payload.toString());
}

/** The `code` of what the call throws or rejects with, or "no error". */
export async function codeOf(p: Promise<unknown> | (() => unknown)): Promise<string> {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (e) {
    return String((e as { code?: unknown }).code);
  }
  return 'no error';
}
