// The WebSocket wire format (RFC 6455) as a client sees it: a parser for the
// frames a server sends, an encoder for the masked frames a client sends, and
// a check of the server's answer to the upgrade request. Pure functions over
// bytes, no I/O and no OpenSSL, so fuzz/ws_frame_fuzz.cc can feed them
// anything; socket_client.cc puts them on a socket.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace sb {

enum WsOpcode : uint8_t {
  WS_OP_CONTINUATION = 0x0,
  WS_OP_TEXT = 0x1,
  WS_OP_BINARY = 0x2,
  WS_OP_CLOSE = 0x8,
  WS_OP_PING = 0x9,
  WS_OP_PONG = 0xA,
};

// Why a server's frames were refused. The connection cannot go on after any
// of them: ws_error_close_code gives the close code to send before closing.
enum WsError {
  WS_OK = 0,
  WS_E_RESERVED_BITS = -1,       // RSV1-3 set, but no extension was negotiated
  WS_E_OPCODE = -2,              // an opcode RFC 6455 does not define
  WS_E_MASKED = -3,              // a server frame with the mask bit set
  WS_E_CONTROL_LENGTH = -4,      // a close, ping or pong with more than 125 bytes
  WS_E_CONTROL_FRAGMENTED = -5,  // a close, ping or pong without FIN
  WS_E_LENGTH = -6,              // a length not in its shortest form, or over 2^63
  WS_E_TOO_BIG = -7,             // a message larger than the parser's limit
  WS_E_CONTINUATION = -8,        // a continuation frame with no message begun
  WS_E_INTERLEAVED = -9,         // a new text or binary frame inside a fragmented message
  WS_E_UTF8 = -10,               // a text message or close reason that is not UTF-8
  WS_E_CLOSE_PAYLOAD = -11,      // a close frame of 1 byte, or with a code no endpoint may send
};

// A short English name for a WsError ("masked server frame", ...).
const char *ws_error_name(int err);

// The close code to send for a WsError: 1007 for bad UTF-8, 1009 for a
// message over the limit, 1002 (protocol error) for the rest.
uint16_t ws_error_close_code(int err);

// One thing the server said. `data` holds `len` bytes and is valid during the
// callback only.
struct WsEvent {
  uint8_t opcode;       // WS_OP_TEXT or WS_OP_BINARY (a whole message, fragments joined), CLOSE, PING or PONG
  const uint8_t *data;  // the message, the ping/pong payload, or the close reason (UTF-8)
  size_t len;
  uint16_t close_code;  // CLOSE: the code, or 0 when the frame carried none
};

// Called once per event, in order. Return 0 to go on, anything else to stop:
// the parser then ignores every later byte (the connection is closing).
typedef int (*ws_event_cb)(void *data, const WsEvent &ev);

// The parser state of one connection. Zero-initialised by ws_parser_init;
// feed it the received bytes in any chunks.
struct WsParser {
  size_t max_message = 0;  // the largest message (after joining fragments) accepted
  int error = WS_OK;       // the first error; once set, nothing more is parsed
  bool stopped = false;    // a callback asked to stop, or a close frame arrived

  // The frame being read.
  uint8_t header[14] = {};  // 2 bytes, then 0, 2 or 8 bytes of length (servers never mask)
  size_t header_have = 0;
  size_t header_need = 2;
  bool in_payload = false;
  bool fin = false;
  uint8_t opcode = 0;
  uint64_t remaining = 0;  // payload bytes of this frame still to come

  // A data message being assembled, and the payload of a control frame
  // (which may arrive between the fragments of a data message).
  bool in_message = false;
  uint8_t message_opcode = 0;
  std::string message;
  std::string control;
};

void ws_parser_init(WsParser &p, size_t max_message);

// Parses `len` more bytes and calls `cb` for every complete event. Returns
// WS_OK, or the first WsError (also kept in p.error; later calls return it
// again without parsing). After a close frame the parser stops: later bytes
// are ignored, as RFC 6455 says nothing may follow it.
int ws_parser_feed(WsParser &p, const uint8_t *data, size_t len, ws_event_cb cb, void *cbdata);

// Appends one client frame to `out`: FIN set, `opcode`, the payload masked
// with `mask` (4 bytes, which the caller draws from a strong random source).
void ws_frame_encode(std::string &out, uint8_t opcode, const uint8_t *payload, size_t len, const uint8_t mask[4]);

// True when the `len` bytes at `s` are well-formed UTF-8 (no overlong forms,
// no surrogates, nothing above U+10FFFF).
bool ws_utf8_valid(const uint8_t *s, size_t len);

// Why the server's answer to the upgrade request was refused.
enum WsHandshakeError {
  WS_HS_E_TOO_LONG = -1,    // no end of header within ws_handshake_max bytes
  WS_HS_E_MALFORMED = -2,   // not an HTTP response header
  WS_HS_E_STATUS = -3,      // a status other than 101 Switching Protocols
  WS_HS_E_UPGRADE = -4,     // Upgrade: websocket or Connection: Upgrade missing
  WS_HS_E_ACCEPT = -5,      // Sec-WebSocket-Accept missing or not the expected value
  WS_HS_E_PROTOCOL = -6,    // a subprotocol that was not offered, or none when one was
  WS_HS_E_EXTENSION = -7,   // an extension, though the client offered none
};

// A short English name for a WsHandshakeError.
const char *ws_handshake_error_name(int err);

constexpr size_t ws_handshake_max = 16384;

// Checks the server's answer to an upgrade request, given the first `len`
// bytes received. `accept` is the Sec-WebSocket-Accept value expected for the
// key that was sent; `protocols` the comma-separated subprotocols offered
// (NULL or empty for none). Returns 0 while the header is incomplete, the
// header's length when it accepts the upgrade (later bytes are frames), or a
// WsHandshakeError.
long ws_handshake_parse(const char *data, size_t len, const std::string &accept, const char *protocols);

}  // namespace sb
