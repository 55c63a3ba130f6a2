import { SwitchboardError } from '../errors';

/**
 * An error the client reports: through `sent` rejections, `connect()`
 * rejections and the `error` event. `code` is stable (match on it); `id` is
 * the message (or request) the error is about, when there is one; `status` is
 * the failure status the server sent, for the status codes below.
 */
export class SwitchboardClientError extends SwitchboardError {
  readonly id?: number;
  readonly status?: number;

  constructor(code: string, message: string, extra: { id?: number; status?: number; detail?: string } = {}) {
    super(code, message, extra.detail === undefined ? {} : { detail: extra.detail });
    this.name = 'SwitchboardClientError';
    if (extra.id !== undefined) this.id = extra.id;
    if (extra.status !== undefined) this.status = extra.status;
  }
}

/** The code a failure status (0x80 and up) rejects `sent` with. */
const FAILURE_CODES: Record<number, [string, string]> = {
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
