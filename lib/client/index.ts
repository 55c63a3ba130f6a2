/**
 * The Switchboard client SDK: runs in browsers and in Node (pass the `ws`
 * package's WebSocket there). It uses no Node API, so it bundles for the web
 * as it is. The protocol it speaks is docs/protocol.md.
 */
export { SwitchboardClient, type ClientEvents, type ClientState, type SwitchboardClientOptions } from './client';
export { CLIENT_ERRORS, SwitchboardClientError, type ClientErrorCode } from './errors';
export {
  Flag,
  Status,
  type DisconnectedEvent,
  type Hello,
  type IncomingMessage,
  type PresenceEvent,
  type Sending,
  type SendOptions,
  type StatusEvent,
  type WebSocketConstructor,
  type WebSocketLike,
} from './types';
