// The wire format, protocol version 1: turning the bytes of one WebSocket
// frame from a client into a WireMessage, and a message, a status or an
// error into the bytes of one frame for a client. docs/protocol.md is the
// description a client author reads; this header is the contract for the
// core. Every frame comes in two forms that carry the same fields: JSON text
// and a compact little-endian binary form that starts with the byte 0xB5.
//
// Both directions are on the per-message path, so neither allocates once its
// buffers are warm: decode writes into a WireScratch the caller keeps, the
// encoders into a std::string whose capacity they keep. No exceptions.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "module.h"

namespace sb {

enum WireFormat : int { WIRE_JSON = 0, WIRE_BINARY = 1 };

// The operations a client may send. Server frames also use op 3 (error) in
// the binary form; a client that sends it gets WIRE_E_UNKNOWN_OP.
enum WireOp : int { WIRE_OP_MESSAGE = 1, WIRE_OP_STATUS = 2 };

// Why a frame was refused. wire_error_code() gives each a stable string for
// clients to match on, wire_error_message() a sentence saying what to do.
enum WireError : int {
  WIRE_OK = 0,
  WIRE_E_EMPTY = -1,              // a frame of zero bytes
  WIRE_E_TOO_LARGE = -2,          // longer than 2 * max_payload + 4096 bytes; refused unread
  WIRE_E_MALFORMED = -3,          // JSON syntax, invalid UTF-8, duplicate key, bytes after the frame
  WIRE_E_TRUNCATED = -4,          // binary: a length runs past the end of the frame
  WIRE_E_UNKNOWN_OP = -5,         // no op, or one a client may not send
  WIRE_E_BAD_FIELD = -6,          // a field of the wrong type or value, or one the op does not carry
  WIRE_E_NO_DESTINATION = -7,     // a message with neither "to" nor a group; a status without "to"
  WIRE_E_BAD_ADDRESS = -8,        // "to" is not 1..255 bytes of UTF-8 without control characters
  WIRE_E_BAD_VERSION = -9,        // binary version byte, or JSON "v", is not 1
  WIRE_E_BAD_BASE64 = -10,        // "b64" is not base64
  WIRE_E_PAYLOAD_TOO_LARGE = -11  // the decoded payload is longer than max_payload
};

// A decoded client frame. The strings point into the WireScratch passed to
// wire_decode and stay valid until the next decode with that scratch.
struct WireMessage {
  WireFormat format;
  int op;  // WIRE_OP_MESSAGE or WIRE_OP_STATUS
  uint32_t id, refid, groupid, flags, type, expiry, status;  // 0 when absent
  char *to;                 // NUL-terminated; "" when absent
  size_t to_len;
  char *payload;            // writable (modules may rewrite it in place), followed by one NUL byte
  size_t payload_len;       // 0 when absent
};

// The decoder's working memory, kept by the caller across calls. It grows
// only when a frame is longer than every frame it has decoded before.
struct WireScratch {
  std::vector<char> buf;
};

// Decodes the client frame [data, data+len) into `out`.
//
// The first byte picks the form: 0xB5 is the binary form, anything else is
// parsed as JSON (leading whitespace allowed). Payloads longer than
// max_payload bytes (after base64 decoding) are refused with
// WIRE_E_PAYLOAD_TOO_LARGE, and a frame longer than 2 * max_payload + 4096
// bytes with WIRE_E_TOO_LARGE before any byte of it is read.
//
// Returns WIRE_OK or a WireError. On an error, `out.id` holds the frame's id
// if the decoder read a valid one before it stopped, and 0 otherwise, so the
// error frame sent back can name the frame; a JSON frame whose only problems
// are wrong values is read to the end, so its id is found wherever it stands.
// The other fields of `out` are then unspecified, but `out.to` and
// `out.payload` always point at NUL-terminated memory. When `detail` is given and
// the frame is refused, it receives a short explanation (which field, which
// byte offset); it is left untouched on success. Never reads outside
// [data, data+len); allocates only to grow `scratch` or to write `detail`.
int wire_decode(const uint8_t *data, size_t len, size_t max_payload, WireMessage &out, WireScratch &scratch,
                std::string *detail = nullptr);

// The stable code of a WireError ("E_FRAME_MALFORMED", ...), "OK" for
// WIRE_OK and "E_UNKNOWN_ERROR" for anything else. A static string.
const char *wire_error_code(int err);

// One sentence for a human: what is wrong and what to do. A static string.
const char *wire_error_message(int err);

// The encoders each clear `out` (keeping its capacity), write one server
// frame into it and return its size. They never fail: fields are written as
// their low 32 bits, and an address longer than 255 bytes (possible only if
// a module put one in) is cut at 255 bytes in the binary form, on a UTF-8
// character boundary. The one exception is a binary payload of 4 GiB or more,
// which the format cannot carry: `out` is left empty and 0 returned.

// A delivery of a message to its recipient: id, from, to, groupid, refid,
// type, flags, expiry and the payload [payload, payload+len). In JSON the
// payload goes out as "data" when it is valid UTF-8 and as "b64" otherwise;
// zero numeric fields other than id are omitted, as are empty addresses.
size_t wire_encode_message(WireFormat f, const mesibo_message_params_t &p, const char *payload, size_t len,
                           std::string &out);

// A status for the user p.to about message p.id: p.status (1 sent,
// 2 delivered, 3 read, 0x80 and up failures), p.from being the peer the
// status is about and p.groupid the group, when not 0. p.to is who receives
// the frame, so it is not written into it.
size_t wire_encode_status(WireFormat f, const mesibo_message_params_t &p, std::string &out);

// An error reply: the code and message of `err`, the id of the frame it is
// about (0 when unknown) and `detail` (may be null or empty).
size_t wire_encode_error(WireFormat f, int err, uint32_t id, const char *detail, std::string &out);

}  // namespace sb
