// ws_frame.h: the frame parser is a byte-at-a-time-safe state machine. A
// frame's header is gathered in a 14-byte array whatever the chunking, and
// its payload goes straight into the message (or control) buffer, so nothing
// is copied twice and no chunk boundary can split a check.
#include "ws_frame.h"

#include <algorithm>
#include <cstring>

namespace sb {

namespace {

bool is_control(uint8_t opcode) { return (opcode & 0x8) != 0; }

bool known_opcode(uint8_t op) {
  return op == WS_OP_CONTINUATION || op == WS_OP_TEXT || op == WS_OP_BINARY || op == WS_OP_CLOSE || op == WS_OP_PING ||
         op == WS_OP_PONG;
}

// The codes an endpoint may put in a close frame: RFC 6455 section 7.4 plus
// the IANA registrations 1012-1014, and the ranges for libraries (3000-3999)
// and applications (4000-4999). 1004-1006 and 1015 are never sent on the wire.
bool sendable_close_code(uint16_t c) {
  return (c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1014) || (c >= 3000 && c <= 4999);
}

int fail(WsParser &p, int err) {
  p.error = err;
  return err;
}

// The first two header bytes are in: everything that can be judged from them.
int check_start(WsParser &p) {
  const uint8_t b0 = p.header[0], b1 = p.header[1];
  p.fin = (b0 & 0x80) != 0;
  p.opcode = b0 & 0x0f;
  const uint8_t len7 = b1 & 0x7f;
  if (b0 & 0x70) return WS_E_RESERVED_BITS;
  if (!known_opcode(p.opcode)) return WS_E_OPCODE;
  if (b1 & 0x80) return WS_E_MASKED;
  if (is_control(p.opcode)) {
    if (!p.fin) return WS_E_CONTROL_FRAGMENTED;
    if (len7 > 125) return WS_E_CONTROL_LENGTH;
  } else if (p.opcode == WS_OP_CONTINUATION) {
    if (!p.in_message) return WS_E_CONTINUATION;
  } else if (p.in_message) {
    return WS_E_INTERLEAVED;
  }
  if (len7 == 126) {
    p.header_need = 4;
  } else if (len7 == 127) {
    p.header_need = 10;
  } else {
    p.remaining = len7;
  }
  return WS_OK;
}

// The extended length is in: it must be in its shortest form (RFC 6455 5.2).
int read_length(WsParser &p) {
  const uint8_t *h = p.header;
  if (p.header_need == 4) {
    p.remaining = (uint64_t{h[2]} << 8) | h[3];
    return p.remaining < 126 ? WS_E_LENGTH : WS_OK;
  }
  if (h[2] & 0x80) return WS_E_LENGTH;
  uint64_t n = 0;
  for (int i = 2; i < 10; ++i) n = (n << 8) | h[i];
  p.remaining = n;
  return n < 65536 ? WS_E_LENGTH : WS_OK;
}

int begin_payload(WsParser &p) {
  if (is_control(p.opcode)) {
    p.control.clear();
    return WS_OK;
  }
  if (p.opcode != WS_OP_CONTINUATION) {
    p.in_message = true;
    p.message_opcode = p.opcode;
    p.message.clear();
  }
  // message.size() <= max_message and remaining < 2^63: the sum cannot wrap.
  if (p.message.size() + p.remaining > p.max_message) return WS_E_TOO_BIG;
  return WS_OK;
}

int deliver(WsParser &p, ws_event_cb cb, void *cbdata, const WsEvent &ev) {
  if (cb(cbdata, ev) != 0) p.stopped = true;
  return WS_OK;
}

int end_frame(WsParser &p, ws_event_cb cb, void *cbdata) {
  p.in_payload = false;
  p.header_have = 0;
  p.header_need = 2;
  const auto *ctl = reinterpret_cast<const uint8_t *>(p.control.data());
  if (p.opcode == WS_OP_CLOSE) {
    WsEvent ev{WS_OP_CLOSE, nullptr, 0, 0};
    if (p.control.size() == 1) return WS_E_CLOSE_PAYLOAD;
    if (p.control.size() >= 2) {
      ev.close_code = static_cast<uint16_t>((ctl[0] << 8) | ctl[1]);
      if (!sendable_close_code(ev.close_code)) return WS_E_CLOSE_PAYLOAD;
      ev.data = ctl + 2;
      ev.len = p.control.size() - 2;
      if (!ws_utf8_valid(ev.data, ev.len)) return WS_E_UTF8;
    }
    p.stopped = true;
    return deliver(p, cb, cbdata, ev);
  }
  if (is_control(p.opcode)) return deliver(p, cb, cbdata, WsEvent{p.opcode, ctl, p.control.size(), 0});
  if (!p.fin) return WS_OK;
  const auto *msg = reinterpret_cast<const uint8_t *>(p.message.data());
  if (p.message_opcode == WS_OP_TEXT && !ws_utf8_valid(msg, p.message.size())) return WS_E_UTF8;
  p.in_message = false;
  int r = deliver(p, cb, cbdata, WsEvent{p.message_opcode, msg, p.message.size(), 0});
  // One large message should not pin its buffer for the life of the connection.
  if (p.message.capacity() > 65536) std::string().swap(p.message);
  p.message.clear();
  return r;
}

}  // namespace

const char *ws_error_name(int err) {
  switch (err) {
    case WS_OK: return "ok";
    case WS_E_RESERVED_BITS: return "reserved bits set";
    case WS_E_OPCODE: return "unknown opcode";
    case WS_E_MASKED: return "masked server frame";
    case WS_E_CONTROL_LENGTH: return "control frame over 125 bytes";
    case WS_E_CONTROL_FRAGMENTED: return "fragmented control frame";
    case WS_E_LENGTH: return "invalid payload length";
    case WS_E_TOO_BIG: return "message too big";
    case WS_E_CONTINUATION: return "continuation without a message";
    case WS_E_INTERLEAVED: return "new message inside a fragmented one";
    case WS_E_UTF8: return "invalid UTF-8";
    case WS_E_CLOSE_PAYLOAD: return "invalid close frame";
    default: return "unknown error";
  }
}

uint16_t ws_error_close_code(int err) {
  if (err == WS_E_UTF8) return 1007;
  if (err == WS_E_TOO_BIG) return 1009;
  return 1002;
}

void ws_parser_init(WsParser &p, size_t max_message) {
  p = WsParser{};
  p.max_message = max_message;
}

int ws_parser_feed(WsParser &p, const uint8_t *data, size_t len, ws_event_cb cb, void *cbdata) {
  if (p.error) return p.error;
  size_t i = 0;
  while (i < len && !p.stopped) {
    if (!p.in_payload) {
      size_t take = std::min(p.header_need - p.header_have, len - i);
      std::memcpy(p.header + p.header_have, data + i, take);
      p.header_have += take;
      i += take;
      if (p.header_have < p.header_need) break;
      int r = p.header_need == 2 ? check_start(p) : read_length(p);
      if (r != WS_OK) return fail(p, r);
      if (p.header_have < p.header_need) continue;  // an extended length follows
      if ((r = begin_payload(p)) != WS_OK) return fail(p, r);
      p.in_payload = true;
    } else {
      size_t take = static_cast<size_t>(std::min<uint64_t>(p.remaining, len - i));
      std::string &dst = is_control(p.opcode) ? p.control : p.message;
      dst.append(reinterpret_cast<const char *>(data + i), take);
      i += take;
      p.remaining -= take;
    }
    if (p.in_payload && p.remaining == 0) {
      int r = end_frame(p, cb, cbdata);
      if (r != WS_OK) return fail(p, r);
    }
  }
  return WS_OK;
}

void ws_frame_encode(std::string &out, uint8_t opcode, const uint8_t *payload, size_t len, const uint8_t mask[4]) {
  out.push_back(static_cast<char>(0x80 | (opcode & 0x0f)));
  if (len < 126) {
    out.push_back(static_cast<char>(0x80 | len));
  } else if (len <= 0xffff) {
    out.push_back(static_cast<char>(0x80 | 126));
    out.push_back(static_cast<char>(len >> 8));
    out.push_back(static_cast<char>(len & 0xff));
  } else {
    out.push_back(static_cast<char>(0x80 | 127));
    for (int shift = 56; shift >= 0; shift -= 8) out.push_back(static_cast<char>((static_cast<uint64_t>(len) >> shift) & 0xff));
  }
  out.append(reinterpret_cast<const char *>(mask), 4);
  size_t at = out.size();
  out.resize(at + len);
  for (size_t k = 0; k < len; ++k) out[at + k] = static_cast<char>(payload[k] ^ mask[k & 3]);
}

bool ws_utf8_valid(const uint8_t *s, size_t len) {
  size_t i = 0;
  while (i < len) {
    uint8_t c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t n;
    uint8_t lo = 0x80, hi = 0xbf;  // the allowed range of the second byte
    if (c >= 0xc2 && c <= 0xdf) {
      n = 1;
    } else if (c >= 0xe0 && c <= 0xef) {
      n = 2;
      if (c == 0xe0) lo = 0xa0;  // overlong
      if (c == 0xed) hi = 0x9f;  // surrogates
    } else if (c >= 0xf0 && c <= 0xf4) {
      n = 3;
      if (c == 0xf0) lo = 0x90;  // overlong
      if (c == 0xf4) hi = 0x8f;  // above U+10FFFF
    } else {
      return false;
    }
    if (len - i <= n) return false;
    if (s[i + 1] < lo || s[i + 1] > hi) return false;
    for (size_t k = 2; k <= n; ++k)
      if ((s[i + k] & 0xc0) != 0x80) return false;
    i += n + 1;
  }
  return true;
}

const char *ws_handshake_error_name(int err) {
  switch (err) {
    case WS_HS_E_TOO_LONG: return "response header too long";
    case WS_HS_E_MALFORMED: return "not an HTTP response";
    case WS_HS_E_STATUS: return "status is not 101 Switching Protocols";
    case WS_HS_E_UPGRADE: return "no Upgrade: websocket / Connection: Upgrade";
    case WS_HS_E_ACCEPT: return "missing or wrong Sec-WebSocket-Accept";
    case WS_HS_E_PROTOCOL: return "subprotocol not among those offered (or none chosen)";
    case WS_HS_E_EXTENSION: return "an extension that was not offered";
    default: return "unknown error";
  }
}

namespace {

bool ieq(const char *a, size_t alen, const char *b) {
  size_t blen = std::strlen(b);
  if (alen != blen) return false;
  for (size_t i = 0; i < alen; ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

void trim(const char *&b, const char *&e) {
  while (b < e && (*b == ' ' || *b == '\t')) ++b;
  while (e > b && (e[-1] == ' ' || e[-1] == '\t')) --e;
}

// Calls fn(token_begin, token_end) for each comma-separated, trimmed,
// non-empty token of [b, e); stops early when fn returns true.
template <typename Fn>
bool any_token(const char *b, const char *e, Fn fn) {
  while (b < e) {
    const char *comma = static_cast<const char *>(std::memchr(b, ',', static_cast<size_t>(e - b)));
    const char *te = comma ? comma : e;
    const char *tb = b;
    trim(tb, te);
    if (tb < te && fn(tb, te)) return true;
    b = comma ? comma + 1 : e;
  }
  return false;
}

}  // namespace

long ws_handshake_parse(const char *data, size_t len, const std::string &accept, const char *protocols) {
  // Find the blank line that ends the header (CRLF, or a bare LF from a
  // lenient server).
  size_t header_end = 0;
  for (size_t pos = 0; pos < len;) {
    const char *nl = static_cast<const char *>(std::memchr(data + pos, '\n', len - pos));
    if (!nl) break;
    size_t line_len = static_cast<size_t>(nl - (data + pos));
    if (line_len && data[pos + line_len - 1] == '\r') --line_len;
    if (line_len == 0) {
      if (pos == 0) return WS_HS_E_MALFORMED;
      header_end = static_cast<size_t>(nl - data) + 1;
      break;
    }
    pos = static_cast<size_t>(nl - data) + 1;
  }
  if (!header_end) return len > ws_handshake_max ? WS_HS_E_TOO_LONG : 0;
  if (header_end > ws_handshake_max) return WS_HS_E_TOO_LONG;

  const char *p = data, *end = data + header_end;
  auto next_line = [&](const char *&b, const char *&e) {
    const char *nl = static_cast<const char *>(std::memchr(p, '\n', static_cast<size_t>(end - p)));
    b = p;
    e = nl;
    if (e > b && e[-1] == '\r') --e;
    p = nl + 1;
  };

  const char *b, *e;
  next_line(b, e);
  // "HTTP/1.x NNN reason"
  if (e - b < 12 || std::memcmp(b, "HTTP/1.", 7) != 0 || b[7] < '0' || b[7] > '9' || b[8] != ' ') return WS_HS_E_MALFORMED;
  for (int k = 9; k < 12; ++k)
    if (b[k] < '0' || b[k] > '9') return WS_HS_E_MALFORMED;
  if (e - b > 12 && b[12] != ' ') return WS_HS_E_MALFORMED;
  const bool switching = std::memcmp(b + 9, "101", 3) == 0;

  bool upgrade = false, connection = false, extension = false;
  int accepts = 0, chosen_count = 0;
  bool accept_ok = false;
  const char *chosen_b = nullptr, *chosen_e = nullptr;
  for (;;) {
    next_line(b, e);
    if (b == e) break;  // the blank line
    if (*b == ' ' || *b == '\t') return WS_HS_E_MALFORMED;  // obsolete line folding
    const char *colon = static_cast<const char *>(std::memchr(b, ':', static_cast<size_t>(e - b)));
    if (!colon || colon == b) return WS_HS_E_MALFORMED;
    const char *nb = b, *ne = colon;
    for (const char *c = nb; c < ne; ++c)
      if (*c == ' ' || *c == '\t') return WS_HS_E_MALFORMED;
    const char *vb = colon + 1, *ve = e;
    trim(vb, ve);
    size_t nlen = static_cast<size_t>(ne - nb);
    if (ieq(nb, nlen, "upgrade")) {
      upgrade = upgrade || ieq(vb, static_cast<size_t>(ve - vb), "websocket");
    } else if (ieq(nb, nlen, "connection")) {
      connection = connection || any_token(vb, ve, [](const char *tb, const char *te) {
                     return ieq(tb, static_cast<size_t>(te - tb), "upgrade");
                   });
    } else if (ieq(nb, nlen, "sec-websocket-accept")) {
      ++accepts;
      accept_ok = static_cast<size_t>(ve - vb) == accept.size() && std::memcmp(vb, accept.data(), accept.size()) == 0;
    } else if (ieq(nb, nlen, "sec-websocket-protocol")) {
      ++chosen_count;
      chosen_b = vb;
      chosen_e = ve;
    } else if (ieq(nb, nlen, "sec-websocket-extensions")) {
      extension = extension || vb < ve;
    }
  }

  if (!switching) return WS_HS_E_STATUS;
  if (!upgrade || !connection) return WS_HS_E_UPGRADE;
  if (accepts != 1 || !accept_ok) return WS_HS_E_ACCEPT;
  if (extension) return WS_HS_E_EXTENSION;
  const char *offered = protocols ? protocols : "";
  const char *offered_end = offered + std::strlen(offered);
  const bool any_offered = any_token(offered, offered_end, [](const char *, const char *) { return true; });
  if (chosen_count == 0) return any_offered ? long{WS_HS_E_PROTOCOL} : static_cast<long>(header_end);
  if (chosen_count > 1 || chosen_b == chosen_e) return WS_HS_E_PROTOCOL;
  const size_t clen = static_cast<size_t>(chosen_e - chosen_b);
  const bool offered_it = any_token(offered, offered_end, [&](const char *tb, const char *te) {
    return static_cast<size_t>(te - tb) == clen && std::memcmp(tb, chosen_b, clen) == 0;
  });
  return offered_it ? static_cast<long>(header_end) : long{WS_HS_E_PROTOCOL};
}

}  // namespace sb
