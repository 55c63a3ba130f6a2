/** The shapes the client hands to its user. See docs/protocol.md, "Sessions". */

/** What the server says once the connection is authenticated. */
export interface Hello {
  /** The address the token belongs to: the `from` of everything this client sends. */
  address: string;
  /** The device label of this connection ('' when none was given). */
  device: string;
  /** The protocol version the server speaks. */
  v: number;
  /** The largest payload, in bytes, the server accepts. */
  max: number;
}

/** Options of one message; every number is an unsigned 32-bit integer. */
export interface SendOptions {
  /** The group the message is for (0: none). */
  groupid?: number;
  /** `Flag` bits: receipts wanted, transient, presence, media. */
  flags?: number;
  /** Seconds the message may wait for its recipient (0: the server's default). */
  expiry?: number;
  /** Application-defined; passed on untouched. */
  type?: number;
  /** The id of an earlier message this one refers to. */
  refid?: number;
}

/** What `send` and `sendToGroup` return. */
export interface Sending {
  /** The message id: statuses for the message carry it. */
  id: number;
  /**
   * Resolves with 1 once the server has the message (it is then durable,
   * and the client will not send it again). Rejects with a
   * SwitchboardClientError when the message will not go out: a failure
   * status (its `status` holds the value), an error frame about the message,
   * a payload over the server's limit, or the client closing first.
   */
  sent: Promise<number>;
}

/** A message delivered to this client. */
export interface IncomingMessage {
  id: number;
  from: string;
  /** '' for a message sent only to a group. */
  to: string;
  groupid: number;
  refid: number;
  type: number;
  flags: number;
  expiry: number;
  payload: Uint8Array;
  /** The payload as text when it is valid UTF-8, else null. */
  text: string | null;
}

/** A status of a message this client sent. */
export interface StatusEvent {
  id: number;
  /** The user the status is about (the recipient). */
  from: string;
  groupid: number;
  /** A `Status` value: 1 sent, 2 delivered, 3 read, 0x80 and up failed. */
  status: number;
}

export interface PresenceEvent {
  address: string;
  online: boolean;
}

export interface DisconnectedEvent {
  /** The WebSocket close code (1006 when the connection was lost without one). */
  code: number;
  reason: string;
  /** False after close(), after an authentication failure, and with `reconnect: false`. */
  willReconnect: boolean;
  /** When the next attempt starts, if there is one. */
  delayMs: number | null;
}

/** The message flags of the wire format (the module ABI's MOD_MESIBO_MSGFLAG_*). */
export const Flag = {
  DELIVERY_RECEIPT: 0x1,
  READ_RECEIPT: 0x2,
  TRANSIENT: 0x4,
  PRESENCE: 0x8,
  MEDIA: 0x100,
} as const;

/** Message status values of the wire format. */
export const Status = {
  SENT: 1,
  DELIVERED: 2,
  READ: 3,
  FAILED: 0x80,
  NOT_ACTIVE: 0x81,
  INBOX_FULL: 0x82,
  INVALID_DESTINATION: 0x83,
  NO_INCOMING: 0x86,
  BLOCKED: 0x88,
} as const;

/**
 * The part of a WebSocket the client uses; both the browser's WebSocket and
 * the `ws` package's fit. Event parameters are loose so either
 * implementation's event classes are accepted.
 */
export interface WebSocketLike {
  readonly readyState: number;
  binaryType: string;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: any) => void) | null;
  onmessage: ((event: any) => void) | null;
  onclose: ((event: any) => void) | null;
  onerror: ((event: any) => void) | null;
}

export type WebSocketConstructor = new (url: string) => WebSocketLike;
