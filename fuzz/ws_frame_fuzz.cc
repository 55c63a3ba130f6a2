// libFuzzer target for cpp/ws_frame.cc: what a WebSocket server sends is
// untrusted input. The first byte picks what is fuzzed:
//   even: the frame parser. The second byte seeds how the rest is cut into
//         chunks; the parser must give the same events and the same error
//         whether the bytes come at once or in pieces, and every event must
//         obey RFC 6455 (control payloads <= 125 bytes, text is UTF-8,
//         nothing after a close).
//   odd:  the upgrade response check (second byte, bit 0: a subprotocol
//         was offered; the response follows). A header accepted at length H must be
//         accepted at exactly H from any longer prefix, and incomplete (0)
//         one byte earlier.
// Both are run on exact-size copies so ASan catches any read past the end.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "ws_frame.h"

namespace {

struct Transcript {
  std::string log;
  bool closed = false;
  int stop_after = -1;  // stop (return 1) after this many events; -1: never
  int events = 0;
};

int record(void *data, const sb::WsEvent &ev) {
  Transcript *t = static_cast<Transcript *>(data);
  if (t->closed) __builtin_trap();  // nothing may follow a close frame
  if (ev.opcode & 0x8) {
    if (ev.len > 125) __builtin_trap();
  } else if (ev.opcode == sb::WS_OP_TEXT && !sb::ws_utf8_valid(ev.data, ev.len)) {
    __builtin_trap();
  }
  if (ev.opcode == sb::WS_OP_CLOSE) t->closed = true;
  t->log.push_back(static_cast<char>(ev.opcode));
  t->log.append(std::to_string(ev.len)).push_back(':');
  t->log.append(std::to_string(ev.close_code)).push_back(':');
  if (ev.len) t->log.append(reinterpret_cast<const char *>(ev.data), ev.len);
  ++t->events;
  return t->stop_after >= 0 && t->events >= t->stop_after ? 1 : 0;
}

// Feeds [data, data+len) in chunks whose sizes come from `seed` (0: at once).
int feed(const uint8_t *data, size_t len, uint8_t seed, size_t max_message, Transcript &t) {
  sb::WsParser p;
  sb::ws_parser_init(p, max_message);
  uint32_t state = seed;
  size_t at = 0;
  int r = sb::WS_OK;
  while (at < len) {
    size_t n = len - at;
    if (seed) {
      state = state * 1103515245u + 12345u;
      n = std::min<size_t>(n, 1 + (state >> 16) % (seed % 32 + 1));
    }
    uint8_t *chunk = static_cast<uint8_t *>(std::malloc(n));
    std::memcpy(chunk, data + at, n);
    r = sb::ws_parser_feed(p, chunk, n, record, &t);
    std::free(chunk);
    if (r != sb::WS_OK) break;
    at += n;
  }
  // An error is sticky.
  if (r != sb::WS_OK && sb::ws_parser_feed(p, data, len, record, &t) != r) __builtin_trap();
  return r;
}

void fuzz_frames(const uint8_t *data, size_t size) {
  if (size < 2) return;
  const uint8_t seed = data[1];
  const size_t max_message = seed & 0x80 ? 300 : 1 << 20;
  Transcript whole, pieces;
  int a = feed(data + 2, size - 2, 0, max_message, whole);
  int b = feed(data + 2, size - 2, seed | 1, max_message, pieces);
  if (a != b || whole.log != pieces.log) __builtin_trap();
  if (a != sb::WS_OK && sb::ws_error_close_code(a) < 1000) __builtin_trap();

  // Stopping after the first event leaves exactly the first event.
  Transcript stopped;
  stopped.stop_after = 1;
  feed(data + 2, size - 2, seed, max_message, stopped);
  if (whole.events > 0 && stopped.events != 1) __builtin_trap();
}

void fuzz_handshake(const uint8_t *data, size_t size) {
  const std::string accept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
  if (size < 2) return;
  const char *protocols = data[1] & 1 ? "chat, superchat" : nullptr;
  data += 2;
  size -= 2;
  char *copy = static_cast<char *>(std::malloc(size ? size : 1));
  if (size) std::memcpy(copy, data, size);
  long r = sb::ws_handshake_parse(copy, size, accept, protocols);
  std::free(copy);
  if (r > static_cast<long>(size)) __builtin_trap();
  if (r > 0) {
    size_t h = static_cast<size_t>(r);
    char *head = static_cast<char *>(std::malloc(h));
    std::memcpy(head, data, h);
    if (sb::ws_handshake_parse(head, h, accept, protocols) != r) __builtin_trap();
    if (sb::ws_handshake_parse(head, h - 1, accept, protocols) != 0) __builtin_trap();
    std::free(head);
  }
}

// Client frames: the encoder's output unmasks back to the payload.
void check_encoder(const uint8_t *data, size_t size) {
  if (size < 6) return;
  const uint8_t opcode = data[1] & 0x0f;
  const uint8_t *mask = data + 2;
  const uint8_t *payload = data + 6;
  const size_t len = size - 6;
  std::string out;
  sb::ws_frame_encode(out, opcode, payload, len, mask);
  const auto *o = reinterpret_cast<const uint8_t *>(out.data());
  if (o[0] != (0x80 | opcode) || !(o[1] & 0x80)) __builtin_trap();
  size_t hdr = len < 126 ? 2 : len <= 0xffff ? 4 : 10;
  if (out.size() != hdr + 4 + len) __builtin_trap();
  for (size_t i = 0; i < len; ++i)
    if ((o[hdr + 4 + i] ^ mask[i & 3]) != payload[i]) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0) return 0;
  if (data[0] & 1) {
    fuzz_handshake(data, size);
  } else {
    fuzz_frames(data, size);
    if (data[0] & 2) check_encoder(data, size);
  }
  return 0;
}
