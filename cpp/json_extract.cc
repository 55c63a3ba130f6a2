// json_extract: a tolerant scan for member names, then a strict parse of the
// one value that matched. Callers continue from `next`, so the text may begin
// in the middle of a document; only strings have to be tracked exactly (a key
// name inside a string value must never match), and everything else before
// the match is skipped. Nothing is allocated except the result.
#include "json_extract.h"

#include <cstdlib>
#include <cstring>

namespace sb {
namespace {

// Bounds the recursion of the value parser: a hostile body cannot exhaust the
// stack of whichever thread a module calls from.
constexpr int kMaxDepth = 64;

bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
bool is_digit(char c) { return c >= '0' && c <= '9'; }

const char *skip_ws(const char *p, const char *end) {
  while (p < end && is_ws(*p)) ++p;
  return p;
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// The four hex digits at p, or -1 when fewer than four are there.
long read_hex4(const char *p, const char *end) {
  if (end - p < 4) return -1;
  long v = 0;
  for (int i = 0; i < 4; ++i) {
    int d = hex_digit(p[i]);
    if (d < 0) return -1;
    v = v << 4 | d;
  }
  return v;
}

// A string is scanned once per purpose; the sink decides what happens to its
// decoded bytes, so skipping, comparing and copying share one decoder.
struct Discard {
  void put(unsigned char) {}
};

struct CompareTo {
  const char *rest;  // the part of the key not matched yet
  bool differs = false;
  void put(unsigned char b) {
    if (differs || *rest == '\0' || static_cast<unsigned char>(*rest) != b) differs = true;
    else ++rest;
  }
  bool matched() const { return !differs && *rest == '\0'; }
};

struct CopyTo {
  char *out;
  void put(unsigned char b) { *out++ = static_cast<char>(b); }
};

template <class Sink>
void put_utf8(Sink &sink, long cp) {
  if (cp < 0x80) {
    sink.put(static_cast<unsigned char>(cp));
  } else if (cp < 0x800) {
    sink.put(static_cast<unsigned char>(0xC0 | cp >> 6));
    sink.put(static_cast<unsigned char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    sink.put(static_cast<unsigned char>(0xE0 | cp >> 12));
    sink.put(static_cast<unsigned char>(0x80 | (cp >> 6 & 0x3F)));
    sink.put(static_cast<unsigned char>(0x80 | (cp & 0x3F)));
  } else {
    sink.put(static_cast<unsigned char>(0xF0 | cp >> 18));
    sink.put(static_cast<unsigned char>(0x80 | (cp >> 12 & 0x3F)));
    sink.put(static_cast<unsigned char>(0x80 | (cp >> 6 & 0x3F)));
    sink.put(static_cast<unsigned char>(0x80 | (cp & 0x3F)));
  }
}

// p is at an opening quote. Decodes the string into `sink` and returns the
// position after the closing quote, or nullptr when the string is malformed.
// No escape decodes to more bytes than it occupies, so the decoded length
// never exceeds the raw one.
template <class Sink>
const char *scan_string(const char *p, const char *end, Sink &sink) {
  ++p;
  while (p < end) {
    unsigned char c = static_cast<unsigned char>(*p++);
    if (c == '"') return p;
    if (c < 0x20) return nullptr;
    if (c != '\\') {
      sink.put(c);
      continue;
    }
    if (p == end) return nullptr;
    switch (*p++) {
      case '"': sink.put('"'); break;
      case '\\': sink.put('\\'); break;
      case '/': sink.put('/'); break;
      case 'b': sink.put('\b'); break;
      case 'f': sink.put('\f'); break;
      case 'n': sink.put('\n'); break;
      case 'r': sink.put('\r'); break;
      case 't': sink.put('\t'); break;
      case 'u': {
        long cp = read_hex4(p, end);
        if (cp < 0) return nullptr;
        p += 4;
        if (cp >= 0xD800 && cp <= 0xDBFF) {
          long low = end - p >= 6 && p[0] == '\\' && p[1] == 'u' ? read_hex4(p + 2, end) : -1;
          if (low >= 0xDC00 && low <= 0xDFFF) {
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
            p += 6;
          } else {
            cp = 0xFFFD;  // a lone high surrogate has no UTF-8 form
          }
        } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
          cp = 0xFFFD;
        }
        put_utf8(sink, cp);
        break;
      }
      default: return nullptr;
    }
  }
  return nullptr;
}

const char *scan_number(const char *p, const char *end) {
  if (p < end && *p == '-') ++p;
  if (p == end || !is_digit(*p)) return nullptr;
  if (*p == '0') ++p;
  else while (p < end && is_digit(*p)) ++p;
  if (p < end && *p == '.') {
    const char *digits = ++p;
    while (p < end && is_digit(*p)) ++p;
    if (p == digits) return nullptr;
  }
  if (p < end && (*p == 'e' || *p == 'E')) {
    ++p;
    if (p < end && (*p == '+' || *p == '-')) ++p;
    const char *digits = p;
    while (p < end && is_digit(*p)) ++p;
    if (p == digits) return nullptr;
  }
  return p;
}

const char *scan_literal(const char *p, const char *end, const char *word) {
  size_t n = std::strlen(word);
  if (static_cast<size_t>(end - p) < n || std::memcmp(p, word, n) != 0) return nullptr;
  return p + n;
}

const char *scan_value(const char *p, const char *end, int depth);

const char *scan_object(const char *p, const char *end, int depth) {
  if (depth == kMaxDepth) return nullptr;
  p = skip_ws(p + 1, end);
  if (p < end && *p == '}') return p + 1;
  for (;;) {
    if (p == end || *p != '"') return nullptr;
    Discard discard;
    if (!(p = scan_string(p, end, discard))) return nullptr;
    p = skip_ws(p, end);
    if (p == end || *p != ':') return nullptr;
    if (!(p = scan_value(skip_ws(p + 1, end), end, depth + 1))) return nullptr;
    p = skip_ws(p, end);
    if (p == end) return nullptr;
    if (*p == '}') return p + 1;
    if (*p != ',') return nullptr;
    p = skip_ws(p + 1, end);
  }
}

const char *scan_array(const char *p, const char *end, int depth) {
  if (depth == kMaxDepth) return nullptr;
  p = skip_ws(p + 1, end);
  if (p < end && *p == ']') return p + 1;
  for (;;) {
    if (!(p = scan_value(p, end, depth + 1))) return nullptr;
    p = skip_ws(p, end);
    if (p == end) return nullptr;
    if (*p == ']') return p + 1;
    if (*p != ',') return nullptr;
    p = skip_ws(p + 1, end);
  }
}

// One complete, valid JSON value starting exactly at p; returns its end.
// `depth` counts the containers around p inside the extracted value.
const char *scan_value(const char *p, const char *end, int depth) {
  if (p == end) return nullptr;
  switch (*p) {
    case '"': {
      Discard discard;
      return scan_string(p, end, discard);
    }
    case '{': return scan_object(p, end, depth);
    case '[': return scan_array(p, end, depth);
    case 't': return scan_literal(p, end, "true");
    case 'f': return scan_literal(p, end, "false");
    case 'n': return scan_literal(p, end, "null");
    default: return scan_number(p, end);
  }
}

// In valid JSON a member name comes right after '{' or ','. Looking back is
// safe: the bytes between the previous closing quote and this opening one
// are outside any string.
bool in_name_position(const char *src, const char *quote) {
  while (quote > src && is_ws(quote[-1])) --quote;
  return quote == src || quote[-1] == '{' || quote[-1] == ',';
}

// The value after a matching member name's colon, as the caller receives it.
char *extract_value(const char *value, const char *end, const char **next) {
  const char *value_end = scan_value(value, end, 0);
  if (!value_end) return nullptr;
  // A member's value is always followed by ',' or '}'; requiring it is what
  // tells "12" from "12345" cut short by len.
  const char *after = skip_ws(value_end, end);
  if (after == end || (*after != ',' && *after != '}')) return nullptr;

  char *out;
  if (*value == '"') {
    out = static_cast<char *>(std::malloc(static_cast<size_t>(value_end - value - 2) + 1));
    if (!out) return nullptr;
    CopyTo copy{out};
    scan_string(value, end, copy);
    *copy.out = '\0';
  } else {
    size_t n = static_cast<size_t>(value_end - value);
    out = static_cast<char *>(std::malloc(n + 1));
    if (!out) return nullptr;
    std::memcpy(out, value, n);
    out[n] = '\0';
  }
  if (next) *next = value_end;
  return out;
}

}  // namespace

char *json_extract(const char *src, size_t len, const char *key, const char **next) {
  if (!src || !key) return nullptr;
  const char *end = src + len;
  const char *p = src;
  while (p < end) {
    const char *quote = static_cast<const char *>(std::memchr(p, '"', static_cast<size_t>(end - p)));
    if (!quote) return nullptr;
    if (!in_name_position(src, quote)) {
      Discard discard;
      if (!(p = scan_string(quote, end, discard))) return nullptr;
      continue;
    }
    CompareTo name{key};
    const char *after = scan_string(quote, end, name);
    if (!after) return nullptr;
    const char *colon = skip_ws(after, end);
    if (colon == end || *colon != ':') {
      p = after;
      continue;
    }
    if (name.matched()) return extract_value(skip_ws(colon + 1, end), end, next);
    p = colon + 1;
  }
  return nullptr;
}

}  // namespace sb
