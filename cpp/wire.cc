// The wire format, protocol version 1 (docs/protocol.md). The decoder goes
// over a frame's bytes once: JSON strings are unescaped straight into the
// scratch buffer, base64 is decoded in place there, numbers are converted as
// they are scanned. Problems with a field's value do not stop the scan: the
// first one is remembered and reported once the whole frame has proved to be
// well formed, so the error reply can carry the frame's id wherever the id
// appears, and a syntax error always wins over a value error.
#include "wire.h"

#include <cstdarg>
#include <cstdio>
#include <cstring>

#if defined(__GNUC__)
#define SB_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define SB_PRINTF(fmt, args)
#endif

namespace sb {
namespace {

constexpr uint8_t kMagic = 0xB5;  // a UTF-8 continuation byte: it never starts a JSON text
constexpr uint8_t kVersion = 1;
constexpr uint8_t kBinaryOpError = 3;
constexpr size_t kMaxAddress = 255;
constexpr size_t kToArea = kMaxAddress + 1;  // the scratch buffer starts with "to", then the payload
constexpr size_t kFrameSlack = 4096;
constexpr int kMaxDepth = 32;  // the frame object is level 1

// One bit per field, shared by both forms. The low seven bits are, in this
// order, the binary form's presence mask for its 32-bit fields.
constexpr uint32_t F_ID = 1u << 0;
constexpr uint32_t F_REFID = 1u << 1;
constexpr uint32_t F_GID = 1u << 2;
constexpr uint32_t F_FLAGS = 1u << 3;
constexpr uint32_t F_TYPE = 1u << 4;
constexpr uint32_t F_EXPIRY = 1u << 5;
constexpr uint32_t F_STATUS = 1u << 6;
constexpr uint32_t F_TO = 1u << 7;
constexpr uint32_t F_FROM = 1u << 8;
constexpr uint32_t F_DATA = 1u << 9;
constexpr uint32_t F_B64 = 1u << 10;
constexpr uint32_t F_OP = 1u << 11;
constexpr uint32_t F_V = 1u << 12;
constexpr int kNumberFields = 7;
constexpr uint8_t kBinaryReservedBits = 0x80;
constexpr uint32_t kMessageFields = F_ID | F_REFID | F_GID | F_FLAGS | F_TYPE | F_EXPIRY | F_TO | F_DATA | F_B64 | F_OP | F_V;
constexpr uint32_t kStatusFields = F_ID | F_TO | F_STATUS | F_OP | F_V;

// The JSON name of each field bit, by bit index.
constexpr const char *kFieldName[] = {"id", "refid", "gid", "flags", "type", "expiry", "status",
                                      "to", "from",  "data", "b64", "op", "v"};

const char *field_name(uint32_t bit) {
  int i = 0;
  while (!(bit & 1u)) bit >>= 1, ++i;
  return kFieldName[i];
}

uint32_t *number_slot(WireMessage &m, uint32_t bit) {
  switch (bit) {
    case F_ID: return &m.id;
    case F_REFID: return &m.refid;
    case F_GID: return &m.groupid;
    case F_FLAGS: return &m.flags;
    case F_TYPE: return &m.type;
    case F_EXPIRY: return &m.expiry;
    default: return &m.status;
  }
}

uint32_t load_u32(const uint8_t *p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}

// Bytes a JSON string scan must stop at: the quote, the backslash, control
// characters (not allowed raw) and the start of a multi-byte UTF-8 sequence.
struct StringStops {
  bool stop[256];
  constexpr StringStops() : stop() {
    for (int c = 0; c < 256; ++c) stop[c] = c < 0x20 || c == '"' || c == '\\' || c >= 0x80;
  }
};
constexpr StringStops kStringStops;

// Text is mostly plain ASCII, so scans test eight bytes at a time with the
// usual word tricks. Each test is exact about whether some byte of the word
// matches, though not about which one; the byte loop after it finds that.
constexpr uint64_t kOnes = 0x0101010101010101ull;
constexpr uint64_t kHighs = 0x8080808080808080ull;

uint64_t load_u64(const uint8_t *p) {
  uint64_t w;
  std::memcpy(&w, p, 8);
  return w;
}

uint64_t any_zero_byte(uint64_t w) { return (w - kOnes) & ~w & kHighs; }

// The high bit of each byte of w that stops a string scan. A borrow only
// runs upwards from a byte that matches, so the lowest bit set is exact.
uint64_t string_stops(uint64_t w) {
  uint64_t below_space = (w - 0x20 * kOnes) & ~w & kHighs;
  return below_space | any_zero_byte(w ^ ('"' * kOnes)) | any_zero_byte(w ^ ('\\' * kOnes)) | (w & kHighs);
}

// The first byte at or after p, before end, that stops a string scan. On a
// little-endian machine the lowest bit of the word's mask says which byte it
// is, so the byte loop runs only on the last few bytes of the range.
const uint8_t *skip_plain(const uint8_t *p, const uint8_t *end) {
  while (end - p >= 8) {
    uint64_t hits = string_stops(load_u64(p));
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (hits) return p + (__builtin_ctzll(hits) >> 3);
#else
    if (hits) break;
#endif
    p += 8;
  }
  while (p < end && !kStringStops.stop[*p]) ++p;
  return p;
}

// The length of the well-formed UTF-8 sequence at p (p[0] >= 0x80), or 0.
// Rejects overlong forms, surrogates and code points above U+10FFFF.
size_t utf8_sequence(const uint8_t *p, const uint8_t *end) {
  uint8_t c = p[0];
  size_t left = static_cast<size_t>(end - p);
  auto cont = [](uint8_t b) { return (b & 0xC0) == 0x80; };
  if (c >= 0xC2 && c <= 0xDF) return left >= 2 && cont(p[1]) ? 2 : 0;
  if (c >= 0xE0 && c <= 0xEF) {
    if (left < 3 || !cont(p[1]) || !cont(p[2])) return 0;
    if (c == 0xE0 && p[1] < 0xA0) return 0;
    if (c == 0xED && p[1] > 0x9F) return 0;
    return 3;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (left < 4 || !cont(p[1]) || !cont(p[2]) || !cont(p[3])) return 0;
    if (c == 0xF0 && p[1] < 0x90) return 0;
    if (c == 0xF4 && p[1] > 0x8F) return 0;
    return 4;
  }
  return 0;
}

bool valid_utf8(const uint8_t *p, size_t n) {
  const uint8_t *end = p + n;
  while (p < end) {
    if (end - p >= 8 && !(load_u64(p) & kHighs)) {
      p += 8;
      continue;
    }
    if (*p < 0x80) {
      ++p;
      continue;
    }
    size_t l = utf8_sequence(p, end);
    if (!l) return false;
    p += l;
  }
  return true;
}

// An address is 1..255 bytes of UTF-8 with no byte below 0x20.
bool valid_address(const char *s, size_t n) {
  if (n == 0 || n > kMaxAddress) return false;
  const uint8_t *u = reinterpret_cast<const uint8_t *>(s);
  for (size_t i = 0; i < n; ++i)
    if (u[i] < 0x20) return false;
  return valid_utf8(u, n);
}

// -1 for a byte that is not a base64 digit (standard alphabet).
struct Base64Values {
  int8_t v[256];
  constexpr Base64Values() : v() {
    for (int c = 0; c < 256; ++c) v[c] = -1;
    for (int i = 0; i < 26; ++i) v['A' + i] = int8_t(i), v['a' + i] = int8_t(26 + i);
    for (int i = 0; i < 10; ++i) v['0' + i] = int8_t(52 + i);
    v[int('+')] = 62;
    v[int('/')] = 63;
  }
};
constexpr Base64Values kBase64;
constexpr char kBase64Digits[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

// Decodes the base64 text buf[0, n) into buf itself (the output never
// overtakes the input). Padding is optional; the unused bits of the last
// digit must be zero, so every payload has one spelling. Returns false when
// the text is not base64.
bool base64_decode_in_place(char *buf, size_t n, size_t *out_len) {
  const uint8_t *in = reinterpret_cast<const uint8_t *>(buf);
  size_t pad = 0;
  while (pad < 2 && n > pad && in[n - 1 - pad] == '=') ++pad;
  if (pad && n % 4) return false;
  size_t digits = n - pad;
  size_t rest = digits % 4;
  if (rest == 1) return false;
  if (pad && rest + pad != 4) return false;
  size_t o = 0, i = 0;
  for (; i + 4 <= digits; i += 4) {
    int a = kBase64.v[in[i]], b = kBase64.v[in[i + 1]], c = kBase64.v[in[i + 2]], d = kBase64.v[in[i + 3]];
    if ((a | b | c | d) < 0) return false;
    uint32_t v = uint32_t(a) << 18 | uint32_t(b) << 12 | uint32_t(c) << 6 | uint32_t(d);
    buf[o++] = char(v >> 16);
    buf[o++] = char(v >> 8);
    buf[o++] = char(v);
  }
  if (rest) {
    int a = kBase64.v[in[i]], b = kBase64.v[in[i + 1]], c = rest == 3 ? kBase64.v[in[i + 2]] : 0;
    if ((a | b | c) < 0) return false;
    uint32_t v = uint32_t(a) << 18 | uint32_t(b) << 12 | uint32_t(c) << 6;
    if (rest == 2 && (v & 0xFFFF)) return false;
    if (rest == 3 && (v & 0xFF)) return false;
    buf[o++] = char(v >> 16);
    if (rest == 3) buf[o++] = char(v >> 8);
  }
  *out_len = o;
  return true;
}

int hex_digit(uint8_t c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

size_t put_utf8(uint32_t cp, char *o) {
  if (cp < 0x80) {
    o[0] = char(cp);
    return 1;
  }
  if (cp < 0x800) {
    o[0] = char(0xC0 | cp >> 6);
    o[1] = char(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    o[0] = char(0xE0 | cp >> 12);
    o[1] = char(0x80 | (cp >> 6 & 0x3F));
    o[2] = char(0x80 | (cp & 0x3F));
    return 3;
  }
  o[0] = char(0xF0 | cp >> 18);
  o[1] = char(0x80 | (cp >> 12 & 0x3F));
  o[2] = char(0x80 | (cp >> 6 & 0x3F));
  o[3] = char(0x80 | (cp & 0x3F));
  return 4;
}

// The state of one decode. Syntax errors return false up the call chain
// with `err` set; value errors go through reject() and the scan goes on.
struct Decoder {
  const uint8_t *begin, *p, *end;
  size_t max_payload;
  WireMessage &m;
  char *to_area;       // kToArea bytes
  char *payload_area;  // room for every byte of the frame, plus a NUL
  std::string *detail;
  uint32_t seen = 0;
  int err = WIRE_OK;       // a syntax or structure error: decoding stopped
  int pending = WIRE_OK;   // the first value error: reported if the frame is otherwise sound

  size_t offset() const { return static_cast<size_t>(p - begin); }

  void explain_v(const char *fmt, va_list ap) {
    if (!detail) return;
    char buf[192];
    std::vsnprintf(buf, sizeof buf, fmt, ap);
    detail->assign(buf);
  }

  void explain(const char *fmt, ...) SB_PRINTF(2, 3) {
    va_list ap;
    va_start(ap, fmt);
    explain_v(fmt, ap);
    va_end(ap);
  }

  // A structural error: decoding stops here.
  bool fail(int code, const char *fmt, ...) SB_PRINTF(3, 4) {
    err = code;
    va_list ap;
    va_start(ap, fmt);
    explain_v(fmt, ap);
    va_end(ap);
    return false;
  }
  bool malformed(const char *what) { return fail(WIRE_E_MALFORMED, "%s at byte %zu", what, offset()); }

  // A value error: recorded unless one is recorded already; the scan goes on.
  void reject(int code, const char *fmt, ...) SB_PRINTF(3, 4) {
    if (pending != WIRE_OK) return;
    pending = code;
    va_list ap;
    va_start(ap, fmt);
    explain_v(fmt, ap);
    va_end(ap);
  }

  // --- JSON --------------------------------------------------------------

  void skip_ws() {
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) ++p;
  }

  bool expect(uint8_t c, const char *what) {
    skip_ws();
    if (p >= end || *p != c) return malformed(what);
    ++p;
    return true;
  }

  // Scans the rest of a JSON string (the opening quote consumed), writing at
  // most `cap` decoded bytes to dst and the full decoded length to *n.
  // Raw bytes that are not UTF-8 are copied and flagged in *bad_utf8; the
  // caller decides what that means. `stop` is skip_plain(p, end), which
  // the caller has already found (see plain_string()).
  bool string_from(const uint8_t *stop, char *dst, size_t cap, size_t *n, bool *bad_utf8) {
    size_t k = 0;
    auto put = [&](const void *src, size_t len) {
      if (k < cap) std::memcpy(dst + k, src, len < cap - k ? len : cap - k);
      k += len;
    };
    for (bool first = true;; first = false) {
      const uint8_t *run = p;
      p = first ? stop : skip_plain(p, end);
      if (p > run) put(run, static_cast<size_t>(p - run));
      if (p >= end) return malformed("unterminated string");
      uint8_t c = *p;
      if (c == '"') {
        ++p;
        *n = k;
        return true;
      }
      if (c >= 0x80) {
        size_t l = utf8_sequence(p, end);
        if (!l) *bad_utf8 = true, l = 1;
        put(p, l);
        p += l;
        continue;
      }
      if (c < 0x20) return malformed("control character in a string (escape it)");
      if (end - p < 2) return malformed("unterminated string");
      char one;
      switch (p[1]) {
        case '"': one = '"'; break;
        case '\\': one = '\\'; break;
        case '/': one = '/'; break;
        case 'b': one = '\b'; break;
        case 'f': one = '\f'; break;
        case 'n': one = '\n'; break;
        case 'r': one = '\r'; break;
        case 't': one = '\t'; break;
        case 'u': {
          uint32_t cp;
          if (!hex4(p + 2, &cp)) return malformed("bad \\u escape");
          p += 6;
          if (cp >= 0xDC00 && cp <= 0xDFFF) return malformed("lone low surrogate in a \\u escape");
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            uint32_t lo;
            if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || !hex4(p + 2, &lo) || lo < 0xDC00 || lo > 0xDFFF)
              return malformed("high surrogate not followed by a low surrogate");
            p += 6;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          char u[4];
          put(u, put_utf8(cp, u));
          continue;
        }
        default: return malformed("unknown escape in a string");
      }
      put(&one, 1);
      p += 2;
    }
  }

  // Most strings in a frame are plain ASCII without escapes. For one of
  // those (the opening quote consumed) this moves p past the closing quote,
  // sets [*s, *s + *n) to its text in the frame, which needs no copy, and
  // returns true. Otherwise it returns false with p unchanged and *stop at
  // the first byte that needs the general scan, for string_from().
  bool plain_string(const char **s, size_t *n, const uint8_t **stop) {
    const uint8_t *q = skip_plain(p, end);
    if (q >= end || *q != '"') {
      *stop = q;
      return false;
    }
    *s = reinterpret_cast<const char *>(p);
    *n = static_cast<size_t>(q - p);
    p = q + 1;
    return true;
  }

  bool hex4(const uint8_t *at, uint32_t *cp) {
    if (end - at < 4) return false;
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      int h = hex_digit(at[i]);
      if (h < 0) return false;
      v = v << 4 | uint32_t(h);
    }
    *cp = v;
    return true;
  }

  bool utf8_string(char *dst, size_t cap, size_t *n) { return utf8_string_from(skip_plain(p, end), dst, cap, n); }

  bool utf8_string_from(const uint8_t *stop, char *dst, size_t cap, size_t *n) {
    bool bad = false;
    if (!string_from(stop, dst, cap, n, &bad)) return false;
    if (bad) return malformed("invalid UTF-8 in a string ending");
    return true;
  }

  // A JSON number at p. *plain says whether it is a non-negative integer
  // below 2^32 (no sign, fraction or exponent), its value in *v.
  bool number(bool *plain, uint32_t *v) {
    bool ok = true;
    uint64_t acc = 0;
    if (*p == '-') ok = false, ++p;
    if (p >= end || *p < '0' || *p > '9') return malformed("bad number");
    if (*p == '0') {
      ++p;
    } else {
      while (p < end && *p >= '0' && *p <= '9') {
        if (acc <= 0xFFFFFFFFu) acc = acc * 10 + (*p - '0');
        ++p;
      }
    }
    if (p < end && *p == '.') {
      ok = false, ++p;
      if (p >= end || *p < '0' || *p > '9') return malformed("bad number");
      while (p < end && *p >= '0' && *p <= '9') ++p;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
      ok = false, ++p;
      if (p < end && (*p == '+' || *p == '-')) ++p;
      if (p >= end || *p < '0' || *p > '9') return malformed("bad number");
      while (p < end && *p >= '0' && *p <= '9') ++p;
    }
    *plain = ok && acc <= 0xFFFFFFFFu;
    *v = static_cast<uint32_t>(acc);
    return true;
  }

  bool literal(const char *word, size_t n) {
    if (static_cast<size_t>(end - p) < n || std::memcmp(p, word, n) != 0) return malformed("unexpected character");
    p += n;
    return true;
  }

  // Skips any JSON value; `depth` is the nesting level of its container.
  bool skip_value(int depth) {
    skip_ws();
    if (p >= end) return malformed("unexpected end of frame");
    switch (*p) {
      case '"': {
        ++p;
        size_t n;
        return utf8_string(nullptr, 0, &n);
      }
      case '{':
      case '[': return skip_container(depth + 1);
      case 't': return literal("true", 4);
      case 'f': return literal("false", 5);
      case 'n': return literal("null", 4);
      default: {
        if (*p != '-' && (*p < '0' || *p > '9')) return malformed("unexpected character");
        bool plain;
        uint32_t v;
        return number(&plain, &v);
      }
    }
  }

  bool skip_container(int depth) {
    if (depth > kMaxDepth) return malformed("nesting deeper than 32 levels");
    uint8_t close = *p == '{' ? '}' : ']';
    bool object = close == '}';
    ++p;
    skip_ws();
    if (p < end && *p == close) {
      ++p;
      return true;
    }
    for (;;) {
      if (object) {
        if (!expect('"', "expected a key")) return false;
        size_t n;
        if (!utf8_string(nullptr, 0, &n) || !expect(':', "expected ':'")) return false;
      }
      if (!skip_value(depth)) return false;
      skip_ws();
      if (p < end && *p == ',') {
        ++p;
        continue;
      }
      if (p < end && *p == close) {
        ++p;
        return true;
      }
      return malformed(object ? "expected ',' or '}'" : "expected ',' or ']'");
    }
  }

  uint32_t key_bit(const char *k, size_t n) {
    switch (n) {
      case 1: return k[0] == 'v' ? F_V : 0u;
      case 2:
        if (!std::memcmp(k, "op", 2)) return F_OP;
        if (!std::memcmp(k, "id", 2)) return F_ID;
        if (!std::memcmp(k, "to", 2)) return F_TO;
        return 0;
      case 3:
        if (!std::memcmp(k, "gid", 3)) return F_GID;
        if (!std::memcmp(k, "b64", 3)) return F_B64;
        return 0;
      case 4:
        if (!std::memcmp(k, "data", 4)) return F_DATA;
        if (!std::memcmp(k, "type", 4)) return F_TYPE;
        if (!std::memcmp(k, "from", 4)) return F_FROM;
        return 0;
      case 5:
        if (!std::memcmp(k, "refid", 5)) return F_REFID;
        if (!std::memcmp(k, "flags", 5)) return F_FLAGS;
        return 0;
      case 6:
        if (!std::memcmp(k, "expiry", 6)) return F_EXPIRY;
        if (!std::memcmp(k, "status", 6)) return F_STATUS;
        return 0;
      default: return 0;
    }
  }

  bool number_value(uint32_t bit) {
    if (*p != '-' && (*p < '0' || *p > '9')) {
      reject(WIRE_E_BAD_FIELD, "\"%s\" must be an unsigned integer below 2^32", field_name(bit));
      return skip_value(1);
    }
    bool plain = false;
    uint32_t v = 0;
    if (!number(&plain, &v)) return false;
    if (plain) *number_slot(m, bit) = v;
    else reject(WIRE_E_BAD_FIELD, "\"%s\" must be an unsigned integer below 2^32", field_name(bit));
    return true;
  }

  bool version_value() {
    bool plain = false;
    uint32_t v = 0;
    if (*p == '-' || (*p >= '0' && *p <= '9')) {
      if (!number(&plain, &v)) return false;
    } else if (!skip_value(1)) {
      return false;
    }
    if (!plain || v != kVersion) {
      // A version mismatch explains every other problem, so it wins.
      pending = WIRE_OK;
      reject(WIRE_E_BAD_VERSION, "\"v\" must be 1 (or absent) in protocol version 1");
    }
    return true;
  }

  bool op_value() {
    if (*p != '"') {
      reject(WIRE_E_UNKNOWN_OP, "\"op\" must be the string \"msg\" or \"status\"");
      return skip_value(1);
    }
    ++p;
    char buf[8];
    const char *k = buf;
    size_t n;
    const uint8_t *stop;
    if (!plain_string(&k, &n, &stop) && !utf8_string_from(stop, buf, sizeof buf, &n)) return false;
    if (n == 3 && !std::memcmp(k, "msg", 3)) m.op = WIRE_OP_MESSAGE;
    else if (n == 6 && !std::memcmp(k, "status", 6)) m.op = WIRE_OP_STATUS;
    else reject(WIRE_E_UNKNOWN_OP, "\"op\" must be \"msg\" or \"status\"");
    return true;
  }

  bool to_value() {
    if (*p != '"') {
      reject(WIRE_E_BAD_ADDRESS, "\"to\" must be a string");
      return skip_value(1);
    }
    ++p;
    size_t n;
    const char *s;
    const uint8_t *stop;
    if (plain_string(&s, &n, &stop)) {
      // Plain text is UTF-8 without control characters: only the length can be wrong.
      if (n && n <= kMaxAddress) {
        std::memcpy(to_area, s, n);
        to_area[n] = 0;
        m.to_len = n;
        return true;
      }
      p = reinterpret_cast<const uint8_t *>(s);
      stop = p + n;
    }
    bool bad = false;
    if (!string_from(stop, to_area, kMaxAddress, &n, &bad)) return false;
    if (bad || !valid_address(to_area, n)) {
      to_area[0] = 0;
      reject(WIRE_E_BAD_ADDRESS, "\"to\" (%zu bytes) must be 1 to 255 bytes of UTF-8 without control characters", n);
      return true;
    }
    to_area[n] = 0;
    m.to_len = n;
    return true;
  }

  bool payload_value(uint32_t bit) {
    if (seen & (bit == F_DATA ? F_B64 : F_DATA)) {
      reject(WIRE_E_BAD_FIELD, "a frame carries \"data\" or \"b64\", not both");
      return skip_value(1);
    }
    if (*p != '"') {
      reject(WIRE_E_BAD_FIELD, "\"%s\" must be a string", field_name(bit));
      return skip_value(1);
    }
    ++p;
    size_t n;
    const char *s;
    const uint8_t *stop;
    // The area holds the whole frame, and unescaping never lengthens text.
    if (plain_string(&s, &n, &stop)) std::memcpy(payload_area, s, n);
    else if (!utf8_string_from(stop, payload_area, static_cast<size_t>(end - begin), &n)) return false;
    if (bit == F_B64 && !base64_decode_in_place(payload_area, n, &n)) {
      payload_area[0] = 0;
      reject(WIRE_E_BAD_BASE64, "\"b64\" is not standard base64 (A-Z a-z 0-9 + /, optional = padding)");
      return true;
    }
    if (n > max_payload) {
      payload_area[0] = 0;
      reject(WIRE_E_PAYLOAD_TOO_LARGE, "the payload is %zu bytes, more than this server accepts", n);
      return true;
    }
    payload_area[n] = 0;
    m.payload_len = n;
    return true;
  }

  bool member(uint32_t bit) {
    if (p >= end) return malformed("unexpected end of frame");
    switch (bit) {
      case 0: return skip_value(1);
      case F_OP: return op_value();
      case F_V: return version_value();
      case F_TO: return to_value();
      case F_DATA:
      case F_B64: return payload_value(bit);
      case F_FROM:
        reject(WIRE_E_BAD_FIELD, "\"from\" is set by the server from the login; leave it out");
        return skip_value(1);
      default: return number_value(bit);
    }
  }

  bool json() {
    skip_ws();
    if (p >= end || *p != '{') return malformed("expected '{' (a frame is one JSON object)");
    ++p;
    skip_ws();
    if (p < end && *p == '}') {
      ++p;
    } else {
      for (;;) {
        if (!expect('"', "expected a key")) return false;
        const uint8_t *key_at = p;
        char buf[8];
        const char *k = buf;
        size_t n;
        const uint8_t *stop;
        if (!plain_string(&k, &n, &stop) && !utf8_string_from(stop, buf, sizeof buf, &n)) return false;
        uint32_t bit = n <= sizeof buf ? key_bit(k, n) : 0;
        if (bit & seen) {
          p = key_at;
          return fail(WIRE_E_MALFORMED, "duplicate key \"%s\" at byte %zu", field_name(bit), offset());
        }
        seen |= bit;
        if (!expect(':', "expected ':'")) return false;
        skip_ws();
        if (!member(bit)) return false;
        skip_ws();
        if (p < end && *p == ',') {
          ++p;
          continue;
        }
        if (p < end && *p == '}') {
          ++p;
          break;
        }
        return malformed("expected ',' or '}'");
      }
    }
    skip_ws();
    if (p != end) return malformed("bytes after the frame's object");
    return true;
  }

  // --- binary ------------------------------------------------------------

  bool need(size_t n, const char *what) {
    if (static_cast<size_t>(end - p) >= n) return true;
    return fail(WIRE_E_TRUNCATED, "the frame ends inside %s (byte %zu)", what, offset());
  }

  bool binary() {
    p = begin + 1;
    if (!need(1, "the version byte")) return false;
    if (*p != kVersion) {
      ++p;
      return fail(WIRE_E_BAD_VERSION, "binary frame of version %u; this server speaks version 1", unsigned(begin[1]));
    }
    ++p;
    if (!need(2, "the header")) return false;
    uint8_t op = *p++;
    seen |= F_OP;
    if (op == WIRE_OP_MESSAGE || op == WIRE_OP_STATUS) m.op = op;
    else reject(WIRE_E_UNKNOWN_OP, "binary op %u; a client sends 1 (message) or 2 (status)", unsigned(op));
    uint8_t mask = *p++;
    if (mask & kBinaryReservedBits) {
      --p;
      return malformed("reserved presence bit 0x80 set");
    }
    for (int i = 0; i < kNumberFields; ++i) {
      uint32_t bit = 1u << i;
      if (!(mask & bit)) continue;
      if (!need(4, "a 32-bit field")) return false;
      *number_slot(m, bit) = load_u32(p);
      p += 4;
      seen |= bit;
    }
    if (!need(1, "the length of \"to\"")) return false;
    size_t to_len = *p++;
    if (!need(to_len, "\"to\"")) return false;
    if (to_len) {
      seen |= F_TO;
      std::memcpy(to_area, p, to_len);
      if (valid_address(to_area, to_len)) {
        to_area[to_len] = 0;
        m.to_len = to_len;
      } else {
        to_area[0] = 0;
        reject(WIRE_E_BAD_ADDRESS, "\"to\" (%zu bytes) must be UTF-8 without control characters", to_len);
      }
      p += to_len;
    }
    if (!need(1, "the length of \"from\"")) return false;
    size_t from_len = *p++;
    if (!need(from_len, "\"from\"")) return false;
    if (from_len) {
      seen |= F_FROM;
      reject(WIRE_E_BAD_FIELD, "\"from\" is set by the server from the login; send it empty");
      p += from_len;
    }
    if (!need(4, "the payload length")) return false;
    size_t payload_len = load_u32(p);
    p += 4;
    if (!need(payload_len, "the payload")) return false;
    if (payload_len) {
      seen |= F_DATA;
      if (payload_len > max_payload) {
        reject(WIRE_E_PAYLOAD_TOO_LARGE, "the payload is %zu bytes, more than this server accepts", payload_len);
      } else {
        std::memcpy(payload_area, p, payload_len);
        payload_area[payload_len] = 0;
        m.payload_len = payload_len;
      }
      p += payload_len;
    }
    if (p != end) return malformed("bytes after the payload");
    return true;
  }

  // --- what both forms must satisfy ----------------------------------------

  int finish() {
    if (pending != WIRE_OK) return pending;
    if (!m.op) {
      explain("the frame has no \"op\"");
      return WIRE_E_UNKNOWN_OP;
    }
    uint32_t extra = seen & ~(m.op == WIRE_OP_MESSAGE ? kMessageFields : kStatusFields);
    if (extra) {
      explain(m.op == WIRE_OP_MESSAGE ? "a message does not carry \"%s\"" : "a status does not carry \"%s\"",
              field_name(extra & (~extra + 1)));
      return WIRE_E_BAD_FIELD;
    }
    if (m.id == 0) {
      explain("\"id\" is required: the sender's non-zero 32-bit id for the message");
      return WIRE_E_BAD_FIELD;
    }
    if (m.op == WIRE_OP_STATUS) {
      if (m.status != MESIBO_MODULE_MSGSTATUS_DELIVERED && m.status != MESIBO_MODULE_MSGSTATUS_READ) {
        explain("a client sends \"status\" 2 (delivered) or 3 (read)");
        return WIRE_E_BAD_FIELD;
      }
      if (!m.to_len) {
        explain("a status needs \"to\": the sender of the message it is about");
        return WIRE_E_NO_DESTINATION;
      }
    } else if (!m.to_len && !m.groupid) {
      explain("a message needs \"to\" or a non-zero \"gid\"");
      return WIRE_E_NO_DESTINATION;
    }
    return WIRE_OK;
  }
};

// --- encoding ----------------------------------------------------------------
//
// A server frame is mostly short pieces: keys, numbers, addresses. Each goes
// into a buffer on the stack with plain stores, and the buffer into `out`
// with one append, because a std::string append per piece costs more than
// the bytes it copies. A short payload goes into the same buffer; a longer
// one is appended from where it is.

// Writes v in decimal at o (room for 10 bytes); returns the end.
char *put_u32(char *o, uint32_t v) {
  char buf[10];
  size_t i = sizeof buf;
  do {
    buf[--i] = char('0' + v % 10);
    v /= 10;
  } while (v);
  std::memcpy(o, buf + i, sizeof buf - i);
  return o + (sizeof buf - i);
}

char *put_le32(char *o, uint32_t v) {
  o[0] = char(v), o[1] = char(v >> 8), o[2] = char(v >> 16), o[3] = char(v >> 24);
  return o + 4;
}

char *put_bytes(char *o, const void *s, size_t n) {
  std::memcpy(o, s, n);
  return o + n;
}

#define SB_KEY(literal) literal, sizeof(literal) - 1

// The JSON escape of c, a byte below 0x80 that stops a string scan (quote,
// backslash or control character), at o (room for 6 bytes).
char *put_escape(char *o, uint8_t c) {
  static const char kShort[] = "btn\0fr";  // \b \t \n (\v has none) \f \r, by byte - 8
  if (c == '"' || c == '\\') {
    o[0] = '\\', o[1] = char(c);
    return o + 2;
  }
  if (c >= 8 && c <= 13 && kShort[c - 8]) {
    o[0] = '\\', o[1] = kShort[c - 8];
    return o + 2;
  }
  char e[6] = {'\\', 'u', '0', '0', "0123456789abcdef"[c >> 4], "0123456789abcdef"[c & 15]};
  return put_bytes(o, e, 6);
}

// The most bytes one byte of text becomes inside a JSON string (\u00XX).
constexpr size_t kEscapeGrowth = 6;

// Writes s[0, n) at o (room for kEscapeGrowth * n bytes) as the inside of a
// JSON string: quote, backslash and control characters escaped, and (for
// text the server did not check, such as an address a module set) each byte
// that is not UTF-8 replaced by U+FFFD, so the frame is always valid JSON.
// When `strict`, a byte that is not UTF-8 is not replaced: the function
// returns nullptr there, so a payload is scanned once to check and escape it.
char *put_json_text(char *o, const char *s, size_t n, bool strict) {
  const uint8_t *u = reinterpret_cast<const uint8_t *>(s);
  const uint8_t *end = u + n;
  for (;;) {
    const uint8_t *run = u;
    u = skip_plain(u, end);
    o = put_bytes(o, run, static_cast<size_t>(u - run));
    if (u == end) return o;
    uint8_t c = *u;
    if (c < 0x80) {
      o = put_escape(o, c);
      ++u;
    } else if (size_t l = utf8_sequence(u, end)) {
      o = put_bytes(o, u, l);
      u += l;
    } else if (strict) {
      return nullptr;
    } else {
      o = put_bytes(o, "\xEF\xBF\xBD", 3);
      ++u;
    }
  }
}

// Appends s[0, n) as put_json_text() writes it, a run at a time, for text
// that may be too long for a buffer on the stack. When `strict`, returns
// false at a byte that is not UTF-8, having appended part of the text.
bool append_json_text(std::string &out, const char *s, size_t n, bool strict) {
  const uint8_t *u = reinterpret_cast<const uint8_t *>(s);
  const uint8_t *end = u + n;
  const uint8_t *run = u;
  while (u < end) {
    u = skip_plain(u, end);
    if (u == end) break;
    uint8_t c = *u;
    if (c >= 0x80) {
      size_t l = utf8_sequence(u, end);
      if (l) {
        u += l;
        continue;
      }
      if (strict) return false;
    }
    out.append(reinterpret_cast<const char *>(run), static_cast<size_t>(u - run));
    char e[kEscapeGrowth];
    out.append(e, static_cast<size_t>((c >= 0x80 ? put_bytes(e, "\xEF\xBF\xBD", 3) : put_escape(e, c)) - e));
    run = ++u;
  }
  out.append(reinterpret_cast<const char *>(run), static_cast<size_t>(end - run));
  return true;
}

// Writes s[0, n) in base64 at o (room for 4 bytes for every 3, rounded up).
char *put_base64(char *o, const char *s, size_t n) {
  const uint8_t *u = reinterpret_cast<const uint8_t *>(s);
  size_t i = 0;
  for (; i + 3 <= n; i += 3) {
    uint32_t v = uint32_t(u[i]) << 16 | uint32_t(u[i + 1]) << 8 | u[i + 2];
    *o++ = kBase64Digits[v >> 18];
    *o++ = kBase64Digits[v >> 12 & 63];
    *o++ = kBase64Digits[v >> 6 & 63];
    *o++ = kBase64Digits[v & 63];
  }
  if (i < n) {
    uint32_t v = uint32_t(u[i]) << 16 | (i + 1 < n ? uint32_t(u[i + 1]) << 8 : 0);
    *o++ = kBase64Digits[v >> 18];
    *o++ = kBase64Digits[v >> 12 & 63];
    *o++ = i + 1 < n ? kBase64Digits[v >> 6 & 63] : '=';
    *o++ = '=';
  }
  return o;
}

void append_base64(std::string &out, const char *s, size_t n) {
  size_t at = out.size();
  out.resize(at + (n + 2) / 3 * 4);
  put_base64(&out[at], s, n);
}

// `"key":` followed by a number, with the comma that separates it from
// what came before (every JSON frame starts with "op", so there always is).
char *put_number(char *o, const char *key, size_t key_len, uint32_t v) {
  return put_u32(put_bytes(o, key, key_len), v);
}

// `"key":"text"`, with its comma; room for key_len + kEscapeGrowth * n + 1.
char *put_string(char *o, const char *key, size_t key_len, const char *s, size_t n) {
  o = put_json_text(put_bytes(o, key, key_len), s, n, false);
  *o = '"';
  return o + 1;
}

void json_string(std::string &out, const char *key, size_t key_len, const char *s, size_t n) {
  out.append(key, key_len);
  append_json_text(out, s, n, false);
  out.push_back('"');
}

// Room in a JSON frame for everything but its text: every key, ten digits
// for each number, the quotes and the closing brace. A message has the most.
constexpr size_t kJsonHeadFixed = 256;
// (The keys of a message, with ' for each quote, and six 10-digit numbers.)
static_assert(sizeof "{'op':'msg','id':,'from':'','to':'','gid':,'refid':,'type':,'flags':,'expiry':,'data':''}" - 1 +
                      6 * 10 <= kJsonHeadFixed,
              "a JSON message's keys and numbers fit kJsonHeadFixed");

// The stack buffer for a JSON frame's head. Its text (addresses, and the
// payload when it fits too) of up to (2048 - 256) / 6 = 298 bytes in all
// fits whatever it holds; a head with longer addresses is written into
// `out` itself (see JsonHead).
constexpr size_t kJsonHeadStack = 2048;

// Where the head of a JSON frame is written: the stack when it fits, else
// `out`, grown to the most the head can take and cut back when it is done.
struct JsonHead {
  char stack[kJsonHeadStack];
  std::string &out;
  char *begin;

  // Whether a head with `text` bytes to escape fits the stack.
  static bool fits(size_t text) { return text <= (kJsonHeadStack - kJsonHeadFixed) / kEscapeGrowth; }

  JsonHead(std::string &o, size_t text) : out(o) {
    if (fits(text)) {
      begin = stack;
    } else {
      out.resize(kJsonHeadFixed + kEscapeGrowth * text);
      begin = &out[0];
    }
  }
  // Hands the head [begin, end) to `out`, which was empty.
  void finish(char *end) {
    size_t n = static_cast<size_t>(end - begin);
    if (begin == stack) out.append(stack, n);
    else out.resize(n);
  }
};

size_t length_of(const char *s) { return s ? std::strlen(s) : 0; }

// The longest prefix of s[0, n) that fits the binary form's one-byte
// length and does not end inside a UTF-8 sequence.
size_t binary_address_length(const char *s, size_t n) {
  if (n <= kMaxAddress) return n;
  n = kMaxAddress;
  while (n > 0 && (static_cast<uint8_t>(s[n]) & 0xC0) == 0x80) --n;
  return n;
}

// The head of a binary frame: magic, version, op, presence mask, then the
// 32-bit fields, the two addresses and the payload length. At most
// 4 + 7 * 4 + 2 * (1 + 255) + 4 bytes.
constexpr size_t kBinaryHeadMax = 4 + kNumberFields * 4 + 2 * (1 + kMaxAddress) + 4;

char *put_binary_start(char *o, uint8_t op, uint8_t mask) {
  o[0] = char(kMagic), o[1] = char(kVersion), o[2] = char(op), o[3] = char(mask);
  return o + 4;
}

char *put_binary_address(char *o, const char *s) {
  size_t n = binary_address_length(s, length_of(s));
  *o++ = char(n);
  return put_bytes(o, s ? s : "", n);
}

}  // namespace

int wire_decode(const uint8_t *data, size_t len, size_t max_payload, WireMessage &out, WireScratch &scratch,
                std::string *detail) {
  out.format = WIRE_JSON;
  out.op = 0;
  out.id = out.refid = out.groupid = out.flags = out.type = out.expiry = out.status = 0;
  out.to_len = out.payload_len = 0;
  size_t limit = max_payload > (SIZE_MAX - kFrameSlack) / 2 ? SIZE_MAX : 2 * max_payload + kFrameSlack;
  bool readable = len > 0 && len <= limit;

  // "to", then room for a payload as long as the whole frame, and its NUL.
  size_t need = kToArea + (readable ? len : 0) + 1;
  if (scratch.buf.size() < need) scratch.buf.resize(need > 2 * scratch.buf.size() ? need : 2 * scratch.buf.size());
  char *to_area = scratch.buf.data();
  char *payload_area = to_area + kToArea;
  to_area[0] = 0;
  payload_area[0] = 0;
  out.to = to_area;
  out.payload = payload_area;

  if (len == 0) {
    if (detail) detail->assign("a frame of zero bytes");
    return WIRE_E_EMPTY;
  }
  if (len > limit) {
    if (detail) {
      char buf[128];
      std::snprintf(buf, sizeof buf, "the frame is %zu bytes; the limit is %zu", len, limit);
      detail->assign(buf);
    }
    return WIRE_E_TOO_LARGE;
  }

  Decoder d{data, data, data + len, max_payload, out, to_area, payload_area, detail};
  bool sound;
  if (data[0] == kMagic) {
    out.format = WIRE_BINARY;
    sound = d.binary();
  } else {
    sound = d.json();
  }
  if (!sound) return d.err;
  return d.finish();
}

const char *wire_error_code(int err) {
  switch (err) {
    case WIRE_OK: return "OK";
    case WIRE_E_EMPTY: return "E_FRAME_EMPTY";
    case WIRE_E_TOO_LARGE: return "E_FRAME_TOO_LARGE";
    case WIRE_E_MALFORMED: return "E_FRAME_MALFORMED";
    case WIRE_E_TRUNCATED: return "E_FRAME_TRUNCATED";
    case WIRE_E_UNKNOWN_OP: return "E_UNKNOWN_OP";
    case WIRE_E_BAD_FIELD: return "E_BAD_FIELD";
    case WIRE_E_NO_DESTINATION: return "E_NO_DESTINATION";
    case WIRE_E_BAD_ADDRESS: return "E_BAD_ADDRESS";
    case WIRE_E_BAD_VERSION: return "E_BAD_VERSION";
    case WIRE_E_BAD_BASE64: return "E_BAD_BASE64";
    case WIRE_E_PAYLOAD_TOO_LARGE: return "E_PAYLOAD_TOO_LARGE";
    default: return "E_UNKNOWN_ERROR";
  }
}

const char *wire_error_message(int err) {
  switch (err) {
    case WIRE_OK: return "No error.";
    case WIRE_E_EMPTY:
      return "The frame is empty; send one JSON object or one binary frame in each WebSocket message.";
    case WIRE_E_TOO_LARGE:
      return "The frame is longer than this server reads; send a smaller payload or split it across messages.";
    case WIRE_E_MALFORMED:
      return "The frame is not well formed (JSON syntax, invalid UTF-8, a repeated key or bytes after the end); "
             "fix the code that builds frames.";
    case WIRE_E_TRUNCATED:
      return "The binary frame ends before the lengths inside it say it should; send the whole frame in one "
             "WebSocket message.";
    case WIRE_E_UNKNOWN_OP:
      return "The frame has no \"op\" or one a client may not send; use \"msg\" (1) or \"status\" (2).";
    case WIRE_E_BAD_FIELD:
      return "A field has the wrong type or value, or does not belong in this op; see the detail for which one.";
    case WIRE_E_NO_DESTINATION:
      return "The frame says nobody to deliver to; set \"to\" to an address (or, for a message, \"gid\" to a "
             "group).";
    case WIRE_E_BAD_ADDRESS:
      return "The address in \"to\" is not 1 to 255 bytes of UTF-8 without control characters; correct it.";
    case WIRE_E_BAD_VERSION:
      return "The frame is for a protocol version this server does not speak; use version 1.";
    case WIRE_E_BAD_BASE64:
      return "The \"b64\" payload is not base64; encode it with the standard alphabet (A-Z a-z 0-9 + /).";
    case WIRE_E_PAYLOAD_TOO_LARGE:
      return "The payload is longer than this server accepts; send less data in one message.";
    default: return "Unknown wire error; this is a bug in the server, please report it.";
  }
}

size_t wire_encode_message(WireFormat f, const mesibo_message_params_t &p, const char *payload, size_t len,
                           std::string &out) {
  out.clear();
  if (!payload) payload = "", len = 0;
  uint32_t id = uint32_t(p.id), gid = uint32_t(p.groupid), refid = uint32_t(p.refid), type = uint32_t(p.type),
           flags = uint32_t(p.flags), expiry = uint32_t(p.expiry);
  if (f == WIRE_BINARY) {
    if (len > 0xFFFFFFFFu) return 0;
    uint8_t mask = F_ID | (refid ? F_REFID : 0u) | (gid ? F_GID : 0u) | (flags ? F_FLAGS : 0u) | (type ? F_TYPE : 0u) |
                   (expiry ? F_EXPIRY : 0u);
    char head[kBinaryHeadMax];
    char *o = put_binary_start(head, WIRE_OP_MESSAGE, mask);
    o = put_le32(o, id);
    if (refid) o = put_le32(o, refid);
    if (gid) o = put_le32(o, gid);
    if (flags) o = put_le32(o, flags);
    if (type) o = put_le32(o, type);
    if (expiry) o = put_le32(o, expiry);
    o = put_binary_address(o, p.to);
    o = put_binary_address(o, p.from);
    o = put_le32(o, uint32_t(len));
    out.append(head, static_cast<size_t>(o - head));
    out.append(payload, len);
    return out.size();
  }
  size_t from_len = length_of(p.from), to_len = length_of(p.to);
  // A payload that fits goes into the head's buffer as well, so the whole
  // frame is one append.
  bool whole = JsonHead::fits(from_len + to_len + len);
  JsonHead head(out, whole ? from_len + to_len + len : from_len + to_len);
  char *o = put_bytes(head.begin, SB_KEY("{\"op\":\"msg\""));
  o = put_number(o, SB_KEY(",\"id\":"), id);
  if (from_len) o = put_string(o, SB_KEY(",\"from\":\""), p.from, from_len);
  if (to_len) o = put_string(o, SB_KEY(",\"to\":\""), p.to, to_len);
  if (gid) o = put_number(o, SB_KEY(",\"gid\":"), gid);
  if (refid) o = put_number(o, SB_KEY(",\"refid\":"), refid);
  if (type) o = put_number(o, SB_KEY(",\"type\":"), type);
  if (flags) o = put_number(o, SB_KEY(",\"flags\":"), flags);
  if (expiry) o = put_number(o, SB_KEY(",\"expiry\":"), expiry);
  o = put_bytes(o, SB_KEY(",\"data\":\""));
  // The payload goes as text if it is UTF-8; the one scan that escapes it
  // also finds out, and a payload that is not is written again as base64
  // (4 bytes for 3 fit in the room for escapes).
  if (whole) {
    char *text_end = put_json_text(o, payload, len, true);
    if (!text_end) {
      o -= sizeof ",\"data\":\"" - 1;
      text_end = put_base64(put_bytes(o, SB_KEY(",\"b64\":\"")), payload, len);
    }
    head.finish(put_bytes(text_end, SB_KEY("\"}")));
    return out.size();
  }
  head.finish(o);
  size_t data_at = out.size() - (sizeof ",\"data\":\"" - 1);
  if (!append_json_text(out, payload, len, true)) {
    out.resize(data_at);
    out.append(SB_KEY(",\"b64\":\""));
    append_base64(out, payload, len);
  }
  out.append(SB_KEY("\"}"));
  return out.size();
}

size_t wire_encode_status(WireFormat f, const mesibo_message_params_t &p, std::string &out) {
  out.clear();
  uint32_t id = uint32_t(p.id), gid = uint32_t(p.groupid), status = uint32_t(p.status);
  if (f == WIRE_BINARY) {
    char head[kBinaryHeadMax];
    char *o = put_binary_start(head, WIRE_OP_STATUS, uint8_t(F_ID | (gid ? F_GID : 0u) | F_STATUS));
    o = put_le32(o, id);
    if (gid) o = put_le32(o, gid);
    o = put_le32(o, status);
    *o++ = 0;  // no "to": the frame goes to p.to
    o = put_binary_address(o, p.from);
    o = put_le32(o, 0);
    out.append(head, static_cast<size_t>(o - head));
    return out.size();
  }
  size_t from_len = length_of(p.from);
  JsonHead head(out, from_len);
  char *o = put_bytes(head.begin, SB_KEY("{\"op\":\"status\""));
  o = put_number(o, SB_KEY(",\"id\":"), id);
  if (from_len) o = put_string(o, SB_KEY(",\"from\":\""), p.from, from_len);
  if (gid) o = put_number(o, SB_KEY(",\"gid\":"), gid);
  o = put_number(o, SB_KEY(",\"status\":"), status);
  *o++ = '}';
  head.finish(o);
  return out.size();
}

size_t wire_encode_error(WireFormat f, int err, uint32_t id, const char *detail, std::string &out) {
  out.clear();
  const char *code = wire_error_code(err);
  const char *message = wire_error_message(err);
  size_t detail_len = length_of(detail);
  if (f == WIRE_BINARY) {
    // The error number goes in the status field as a positive number
    // (1 = E_FRAME_EMPTY ... 11 = E_PAYLOAD_TOO_LARGE); the payload is
    // "code\nmessage\ndetail".
    size_t code_len = std::strlen(code), message_len = std::strlen(message);
    char head[kBinaryHeadMax];
    char *o = put_binary_start(head, kBinaryOpError, uint8_t(F_ID | F_STATUS));
    o = put_le32(o, id);
    o = put_le32(o, err < 0 ? uint32_t(-int64_t(err)) : uint32_t(err));
    *o++ = 0;
    *o++ = 0;
    o = put_le32(o, uint32_t(code_len + 1 + message_len + 1 + detail_len));
    out.append(head, static_cast<size_t>(o - head));
    out.append(code, code_len);
    out.push_back('\n');
    out.append(message, message_len);
    out.push_back('\n');
    out.append(detail ? detail : "", detail_len);
    return out.size();
  }
  json_string(out, SB_KEY("{\"op\":\"error\",\"code\":\""), code, std::strlen(code));
  json_string(out, SB_KEY(",\"message\":\""), message, std::strlen(message));
  char number[sizeof ",\"id\":" + 10];
  out.append(number, static_cast<size_t>(put_number(number, SB_KEY(",\"id\":"), id) - number));
  if (detail_len) json_string(out, SB_KEY(",\"detail\":\""), detail, detail_len);
  out.push_back('}');
  return out.size();
}

}  // namespace sb
