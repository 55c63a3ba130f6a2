import { SwitchboardError, type ErrorCode } from '../errors';

/**
 * The codes only the client SDK reports: about the connection, the client's
 * own options and the failure statuses a server sends for a message. Kept
 * apart from the server's catalog (lib/errors.ts) because no server sends
 * them; docs/protocol.md ("The client") explains each, and
 * test/errors.test.ts checks that it does.
 */
export const CLIENT_ERRORS = {
  E_BAD_OPTION: { summary: 'an option passed to new SwitchboardClient() is not valid' },
  E_BAD_PAYLOAD: { summary: 'a payload that is neither a string nor a Uint8Array, or a string with a lone surrogate' },
  E_WEBSOCKET: { summary: 'the WebSocket constructor threw' },
  E_CONNECT_FAILED: { summary: 'a connection attempt failed, with reconnect: false' },
  E_CLOSED: { summary: 'close() was called; what was waiting is rejected' },
  E_PROTOCOL: { summary: 'the server sent a frame this client cannot read' },
  E_UNKNOWN: { summary: 'the server sent an error frame without a code' },
  E_NOT_ACTIVE: { summary: 'failure status 0x81: the recipient is offline and the message was transient' },
  E_INBOX_FULL: { summary: "failure status 0x82: the recipient's inbox is full" },
  E_INVALID_DESTINATION: { summary: 'failure status 0x83: no such user or group' },
  E_NO_INCOMING: { summary: 'failure status 0x86: the recipient takes no incoming messages' },
  E_BLOCKED: { summary: 'failure status 0x88: the recipient blocked the sender, or the sender is not a group member' },
  E_DELIVERY_FAILED: { summary: 'any other failure status from 0x80' },
} as const satisfies Record<string, { readonly summary: string; readonly hint?: string }>;

/** A code a client error carries: the client's own, or one a server sent. */
export type ClientErrorCode = keyof typeof CLIENT_ERRORS | ErrorCode;

/**
 * An error the client reports: through `sent` rejections, `connect()`
 * rejections and the `error` event. `code` is stable (match on it); `id` is
 * the message (or request) the error is about, when there is one; `status` is
 * the failure status the server sent, for the status codes below.
 */
export class SwitchboardClientError extends SwitchboardError {
  declare readonly code: ClientErrorCode;
  readonly id?: number;
  readonly status?: number;

  constructor(code: ClientErrorCode, message: string, extra: { id?: number; status?: number; detail?: string } = {}) {
    // The base constructor takes server codes only. A client code is checked
    // here, against ClientErrorCode; the cast only hands it on to the base.
    super(code as ErrorCode, message, extra.detail === undefined ? {} : { detail: extra.detail });
    this.name = 'SwitchboardClientError';
    if (extra.id !== undefined) this.id = extra.id;
    if (extra.status !== undefined) this.status = extra.status;
  }
}

/** The code a failure status (0x80 and up) rejects `sent` with. */
const FAILURE_CODES: Record<number, [ClientErrorCode, string]> = {
  0x81: ['E_NOT_ACTIVE', 'The recipient is not online and the message was transient, so it was dropped; send it without the transient flag to have it stored.'],
  0x82: ['E_INBOX_FULL', "The recipient's inbox is full; try again later."],
  0x83: ['E_INVALID_DESTINATION', 'There is no such user or group; check the address or group id.'],
  0x86: ['E_NO_INCOMING', 'The recipient takes no incoming messages.'],
  0x88: ['E_BLOCKED', 'The recipient blocked you, or you are not a member of the group.'],
};

export function statusError(id: number, status: number): SwitchboardClientError {
  const [code, message] = FAILURE_CODES[status] ?? ['E_DELIVERY_FAILED', `The server could not deliver the message (status 0x${status.toString(16)}).`];
  return new SwitchboardClientError(code, message, { id, status });
}
