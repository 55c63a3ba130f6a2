// libFuzzer target for the wire format (cpp/wire.cc). The input is one client
// frame, copied into a block of exactly its size so ASan catches any read
// past its end, and decoded with a small max_payload. Then:
//
// - a refused frame: its code and message exist, and the error frame the
//   server would send back is well formed in both forms;
// - an accepted frame: what the decoder returned obeys its contract; the
//   server frame for it (a delivery or a status from "fuzz") is well formed in
//   both forms; and the message, written again as a client frame, decodes to
//   the same fields and payload bytes. Two writers do that: the server's
//   delivery encoder with no "from" (whose output is then a client frame), and
//   an independent writer below that escapes every character, puts the keys
//   in another order and sets every presence bit, so the decoder is checked
//   against something other than its own mirror image.
//
// "Well formed" is judged by the decoder itself: it reports a wrong value
// only after the whole frame has passed the syntax and structure checks, so a
// server frame that decodes to E_BAD_FIELD ("from" is not for clients) or
// E_UNKNOWN_OP (op "error") has valid syntax throughout.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "wire.h"

namespace {

constexpr size_t kMaxPayload = 1024;
// Escaping can make a frame six times its payload; the re-decoded frames must
// not hit the frame size limit, while every payload stays below this one.
constexpr size_t kRedecodeMax = 8 * kMaxPayload;

#define REQUIRE(cond)                                                         \
  do {                                                                        \
    if (!(cond)) {                                                            \
      std::fprintf(stderr, "%s:%d: REQUIRE failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                           \
    }                                                                         \
  } while (0)

int decode(const std::string &frame, sb::WireMessage &m, sb::WireScratch &s) {
  return sb::wire_decode(reinterpret_cast<const uint8_t *>(frame.data()), frame.size(), kRedecodeMax, m, s);
}

// --- an independent client-frame writer -----------------------------------

// The next code point of the UTF-8 text s[*i, n), or -1 (and *i unchanged)
// when it is not well formed there.
long next_code_point(const uint8_t *s, size_t n, size_t *i) {
  uint8_t c = s[*i];
  if (c < 0x80) return s[(*i)++];
  int extra = c >= 0xF8 ? -1 : c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC0 ? 1 : -1;
  if (extra < 0 || n - *i <= static_cast<size_t>(extra)) return -1;
  long cp = c & (0x3F >> extra);
  for (int k = 1; k <= extra; ++k) {
    if ((s[*i + k] & 0xC0) != 0x80) return -1;
    cp = cp << 6 | (s[*i + k] & 0x3F);
  }
  static const long kMin[] = {0, 0x80, 0x800, 0x10000};
  if (cp < kMin[extra] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return -1;
  *i += 1 + extra;
  return cp;
}

bool is_utf8(const char *s, size_t n) {
  const uint8_t *u = reinterpret_cast<const uint8_t *>(s);
  for (size_t i = 0; i < n;)
    if (next_code_point(u, n, &i) < 0) return false;
  return true;
}

// Every character as a \u escape, surrogate pairs above U+FFFF.
void escaped(std::string &out, const char *s, size_t n) {
  const uint8_t *u = reinterpret_cast<const uint8_t *>(s);
  char buf[16];
  out += '"';
  for (size_t i = 0; i < n;) {
    long cp = next_code_point(u, n, &i);
    REQUIRE(cp >= 0);
    if (cp >= 0x10000) {
      cp -= 0x10000;
      std::snprintf(buf, sizeof buf, "\\u%04lX\\u%04lx", 0xD800 + (cp >> 10), 0xDC00 + (cp & 0x3FF));
    } else {
      std::snprintf(buf, sizeof buf, "\\u%04lx", cp);
    }
    out += buf;
  }
  out += '"';
}

// Base64 without padding, one bit at a time.
void base64(std::string &out, const char *s, size_t n) {
  static const char digits[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  out += '"';
  unsigned acc = 0, bits = 0;
  for (size_t i = 0; i < n; ++i) {
    acc = (acc << 8 | static_cast<uint8_t>(s[i])) & 0xFFFF;
    bits += 8;
    while (bits >= 6) out += digits[(acc >> (bits -= 6)) & 63];
  }
  if (bits) out += digits[(acc << (6 - bits)) & 63];
  out += '"';
}

void member(std::string &out, const char *key, uint32_t v) {
  out += ",\"";
  out += key;
  out += "\":";
  out += std::to_string(v);
}

std::string client_json(const sb::WireMessage &m) {
  std::string out = R"({"unknown":[{"a":[]},-0.5e-3,"\ud83d\ude00",null],"v":1)";
  if (m.op == sb::WIRE_OP_STATUS) {
    member(out, "status", m.status);
  } else {
    // An empty payload goes as "b64":"", a path the server's encoder never takes.
    if (m.payload_len && is_utf8(m.payload, m.payload_len)) {
      out += ",\"data\":";
      escaped(out, m.payload, m.payload_len);
    } else {
      out += ",\"b64\":";
      base64(out, m.payload, m.payload_len);
    }
    member(out, "expiry", m.expiry);
    member(out, "flags", m.flags);
    member(out, "type", m.type);
    member(out, "refid", m.refid);
    member(out, "gid", m.groupid);
  }
  if (m.to_len) {
    out += ",\"to\":";
    escaped(out, m.to, m.to_len);
  }
  member(out, "id", m.id);
  out += m.op == sb::WIRE_OP_STATUS ? R"(,"op":"status"})" : R"(,"op":"msg"})";
  return out;
}

void le32(std::string &out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out += static_cast<char>(v >> (8 * i));
}

std::string client_binary(const sb::WireMessage &m) {
  bool status = m.op == sb::WIRE_OP_STATUS;
  std::string out = {static_cast<char>(0xB5), 1, static_cast<char>(m.op), static_cast<char>(status ? 0x41 : 0x3F)};
  le32(out, m.id);
  if (status) {
    le32(out, m.status);
  } else {
    for (uint32_t v : {m.refid, m.groupid, m.flags, m.type, m.expiry}) le32(out, v);
  }
  out += static_cast<char>(m.to_len);
  out.append(m.to, m.to_len);
  out += '\0';
  le32(out, static_cast<uint32_t>(m.payload_len));
  out.append(m.payload, m.payload_len);
  return out;
}

// --- checks -------------------------------------------------------------------

void require_same(const sb::WireMessage &a, const sb::WireMessage &b) {
  REQUIRE(a.op == b.op);
  REQUIRE(a.id == b.id);
  REQUIRE(a.refid == b.refid);
  REQUIRE(a.groupid == b.groupid);
  REQUIRE(a.flags == b.flags);
  REQUIRE(a.type == b.type);
  REQUIRE(a.expiry == b.expiry);
  REQUIRE(a.status == b.status);
  REQUIRE(a.to_len == b.to_len && std::memcmp(a.to, b.to, a.to_len) == 0);
  REQUIRE(a.payload_len == b.payload_len && std::memcmp(a.payload, b.payload, a.payload_len) == 0);
}

void require_round_trip(const std::string &frame, sb::WireFormat format, const sb::WireMessage &m) {
  sb::WireMessage again{};
  sb::WireScratch scratch;
  int rc = decode(frame, again, scratch);
  if (rc != sb::WIRE_OK) {
    std::fprintf(stderr, "re-encoded frame refused: %s\n%s\n", sb::wire_error_code(rc), frame.c_str());
    std::abort();
  }
  REQUIRE(again.format == format);
  require_same(m, again);
}

// The decoder's contract for an accepted frame.
void require_sound(const sb::WireMessage &m) {
  REQUIRE(m.op == sb::WIRE_OP_MESSAGE || m.op == sb::WIRE_OP_STATUS);
  REQUIRE(m.id != 0);
  REQUIRE(m.to != nullptr && m.to[m.to_len] == '\0' && m.to_len <= 255);
  REQUIRE(std::strlen(m.to) == m.to_len);
  for (size_t i = 0; i < m.to_len; ++i) REQUIRE(static_cast<uint8_t>(m.to[i]) >= 0x20);
  REQUIRE(is_utf8(m.to, m.to_len));
  REQUIRE(m.payload != nullptr && m.payload[m.payload_len] == '\0' && m.payload_len <= kMaxPayload);
  if (m.op == sb::WIRE_OP_STATUS) REQUIRE(m.to_len > 0 && (m.status == 2 || m.status == 3) && m.payload_len == 0);
  else REQUIRE(m.to_len > 0 || m.groupid != 0);
}

// A server frame must be well formed: it decodes to `expect` (a refusal the
// decoder gives only after checking all syntax and structure), naming `id`.
void require_well_formed(const std::string &frame, int expect, uint32_t id) {
  sb::WireMessage m{};
  sb::WireScratch scratch;
  int rc = decode(frame, m, scratch);
  if (rc != expect) {
    std::fprintf(stderr, "server frame decodes to %s, expected %s\n%s\n", sb::wire_error_code(rc),
                 sb::wire_error_code(expect), frame.c_str());
    std::abort();
  }
  REQUIRE(m.id == id);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  uint8_t *frame = static_cast<uint8_t *>(std::malloc(size ? size : 1));
  if (size) std::memcpy(frame, data, size);
  sb::WireMessage m{};
  sb::WireScratch scratch;
  std::string detail;
  int rc = sb::wire_decode(frame, size, kMaxPayload, m, scratch, &detail);
  std::free(frame);

  std::string out;
  if (rc != sb::WIRE_OK) {
    REQUIRE(rc < 0 && rc >= sb::WIRE_E_PAYLOAD_TOO_LARGE);
    REQUIRE(std::strcmp(sb::wire_error_code(rc), "E_UNKNOWN_ERROR") != 0);
    REQUIRE(!detail.empty());
    for (sb::WireFormat f : {sb::WIRE_JSON, sb::WIRE_BINARY}) {
      REQUIRE(sb::wire_encode_error(f, rc, m.id, detail.c_str(), out) == out.size());
      require_well_formed(out, sb::WIRE_E_UNKNOWN_OP, m.id);
    }
    return 0;
  }

  require_sound(m);
  mesibo_message_params_t p{};
  p.id = m.id;
  p.refid = m.refid;
  p.groupid = m.groupid;
  p.flags = m.flags;
  p.type = m.type;
  p.expiry = m.expiry;
  p.status = m.status;
  p.to = m.to;
  char from[] = "fuzz";
  for (sb::WireFormat f : {sb::WIRE_JSON, sb::WIRE_BINARY}) {
    p.from = from;
    if (m.op == sb::WIRE_OP_MESSAGE) {
      REQUIRE(sb::wire_encode_message(f, p, m.payload, m.payload_len, out) == out.size());
      require_well_formed(out, sb::WIRE_E_BAD_FIELD, m.id);
      p.from = nullptr;
      sb::wire_encode_message(f, p, m.payload, m.payload_len, out);
      require_round_trip(out, f, m);
    } else {
      REQUIRE(sb::wire_encode_status(f, p, out) == out.size());
      require_well_formed(out, sb::WIRE_E_BAD_FIELD, m.id);
    }
  }
  require_round_trip(client_json(m), sb::WIRE_JSON, m);
  require_round_trip(client_binary(m), sb::WIRE_BINARY, m);
  return 0;
}
