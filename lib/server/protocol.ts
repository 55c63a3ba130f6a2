/**
 * The numbers the server shares with the native core and with clients. The
 * core's are copies of C constants (include/module.h, cpp/wire.h,
 * cpp/core.h); the close codes are the protocol's (docs/protocol.md).
 * test/protocol.test.ts reads those files and fails when a copy here differs,
 * so this file is the only place the server spells them.
 */

/** mesibo status codes the server sends (MESIBO_MODULE_MSGSTATUS_* in include/module.h; SENT is cpp/core.h's MSGSTATUS_SENT). */
export const Status = {
  SENT: 1,
  DELIVERED: 2,
  READ: 3,
  NOTACTIVE: 0x81,
  INVALIDDEST: 0x83,
  INBOXFULL: 0x82,
  BLOCKED: 0x88,
} as const;

/** Message flags (MOD_MESIBO_MSGFLAG_* in include/module.h). */
export const FLAG_DELIVERY_RECEIPT = 0x1;
export const FLAG_READ_RECEIPT = 0x2;
/** The flags that ask for a receipt. */
export const FLAG_RECEIPTS = FLAG_DELIVERY_RECEIPT | FLAG_READ_RECEIPT;

/** Refusals submit returns (WireError in cpp/wire.h) that the server treats on their own. */
export const WIRE_E_TOO_LARGE = -2;
export const WIRE_E_UNKNOWN_OP = -5;

/** WebSocket close codes (docs/protocol.md, "Logging in"). */
/** No login, or a token that does not authenticate: do not reconnect with this token. */
export const CLOSE_AUTH = 4001;
/** A login frame the server cannot accept (bad device label): fix the client, not the token. */
export const CLOSE_BAD_LOGIN = 4002;
/** No login within login_timeout, or evicted to make room (max_unauthenticated). */
export const CLOSE_LOGIN_TIMEOUT = 4008;
/** The user is at max_connections_per_user. */
export const CLOSE_TOO_MANY = 4029;
/** A commit of the store failed: what this connection sent and did not hear "sent" for was not kept; reconnect and resend. */
export const CLOSE_STORE_FAILED = 1011;
