// http_parse.h: a byte-at-a-time state machine for the head and the chunk
// framing, a straight copy-free slice for body bytes.
#include "http_parse.h"

#include <cstring>

namespace sb {
namespace {

bool is_tchar(unsigned char c) {
  if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return true;
  return c != 0 && std::strchr("!#$%&'*+-.^_`|~", c) != nullptr;
}

bool is_ows(char c) { return c == ' ' || c == '\t'; }

// Visible characters, SP, HTAB and obs-text (0x80-0xFF): what a field value
// or a reason phrase may hold.
bool is_field_char(unsigned char c) { return c == '\t' || (c >= 0x20 && c != 0x7f); }

char lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

bool iequals(const char *a, size_t n, const char *lit) {
  size_t m = std::strlen(lit);
  if (n != m) return false;
  for (size_t i = 0; i < n; ++i)
    if (lower(a[i]) != lit[i]) return false;
  return true;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Calls fn(token, len) for each comma-separated element of a list value,
// trimmed of OWS; empty elements are skipped, as RFC 9110 5.6.1 asks.
template <typename Fn>
void for_each_token(const char *v, size_t n, Fn fn) {
  size_t i = 0;
  while (i < n) {
    size_t start = i;
    while (i < n && v[i] != ',') ++i;
    size_t end = i;
    while (start < end && is_ows(v[start])) ++start;
    while (end > start && is_ows(v[end - 1])) --end;
    if (end > start) fn(v + start, end - start);
    ++i;
  }
}

}  // namespace

void HttpResponseParser::reset() {
  state_ = S_STATUS;
  head_ = HttpResponseHead();
  line_.clear();
  error_ = nullptr;
  head_bytes_ = 0;
  headers_ = 0;
  interim_ = 0;
  started_ = false;
  saw_content_length_ = saw_transfer_encoding_ = chunked_ = false;
  connection_close_ = connection_keep_alive_ = false;
  remaining_ = 0;
  body_bytes_ = 0;
}

HttpResponseParser::Event HttpResponseParser::fail(const char *why) {
  if (state_ != S_ERROR) error_ = why;
  state_ = S_ERROR;
  return HTTP_ERROR;
}

size_t HttpResponseParser::take_line(const char *data, size_t len, bool *complete) {
  *complete = false;
  size_t i = 0;
  for (; i < len; ++i) {
    char c = data[i];
    if (!line_.empty() && line_.back() == '\r' && c != '\n') {
      fail("a CR that does not end a line");
      return i;
    }
    if (c == '\n') {
      if (!line_.empty() && line_.back() == '\r') line_.pop_back();
      *complete = true;
      return i + 1;
    }
    if (c == '\0') {
      fail("a NUL byte in the response head or chunk framing");
      return i;
    }
    if (line_.size() >= kHttpMaxLineBytes) {
      fail("a line longer than 16 KiB in the response head or chunk framing");
      return i;
    }
    line_.push_back(c);
  }
  return i;
}

bool HttpResponseParser::parse_status_line() {
  const std::string &l = line_;
  // HTTP/1.x SP 3DIGIT [SP reason-phrase]; a missing SP before an empty
  // reason is tolerated.
  if (l.size() < 12 || std::memcmp(l.data(), "HTTP/1.", 7) != 0 || l[7] < '0' || l[7] > '9' || l[8] != ' ') {
    fail("a bad status line (expected \"HTTP/1.x NNN reason\")");
    return false;
  }
  int status = 0;
  for (int i = 9; i < 12; ++i) {
    if (l[i] < '0' || l[i] > '9') {
      fail("a bad status code in the status line");
      return false;
    }
    status = status * 10 + (l[i] - '0');
  }
  if (status < 100 || status > 599) {
    fail("a status code outside 100-599");
    return false;
  }
  if (l.size() > 12) {
    if (l[12] != ' ') {
      fail("a bad status line (expected \"HTTP/1.x NNN reason\")");
      return false;
    }
    for (size_t i = 13; i < l.size(); ++i)
      if (!is_field_char(static_cast<unsigned char>(l[i]))) {
        fail("a control character in the reason phrase");
        return false;
      }
  }
  head_.status = status;
  head_.version_minor = l[7] - '0';
  return true;
}

bool HttpResponseParser::parse_header_line() {
  const char *l = line_.data();
  size_t n = line_.size();
  if (is_ows(l[0])) {
    fail("a folded header line (obs-fold)");
    return false;
  }
  const char *colon = static_cast<const char *>(std::memchr(l, ':', n));
  if (!colon) {
    fail("a header line without a colon");
    return false;
  }
  size_t name_len = static_cast<size_t>(colon - l);
  if (name_len == 0) {
    fail("a header line with an empty name");
    return false;
  }
  for (size_t i = 0; i < name_len; ++i)
    if (!is_tchar(static_cast<unsigned char>(l[i]))) {
      fail("a header name with a character that is not allowed (a space before the colon?)");
      return false;
    }
  if (++headers_ > kHttpMaxHeaders) {
    fail("more than 200 header lines");
    return false;
  }
  const char *v = colon + 1, *end = l + n;
  while (v < end && is_ows(*v)) ++v;
  while (end > v && is_ows(end[-1])) --end;
  for (const char *p = v; p < end; ++p)
    if (!is_field_char(static_cast<unsigned char>(*p))) {
      fail("a control character in a header value");
      return false;
    }
  size_t vn = static_cast<size_t>(end - v);

  if (iequals(l, name_len, "content-length")) {
    uint64_t cl = 0;
    bool too_large = false;
    for (size_t i = 0; i < vn; ++i) {
      if (v[i] < '0' || v[i] > '9') {
        fail("a Content-Length that is not a decimal number");
        return false;
      }
      if (!too_large) cl = cl * 10 + static_cast<uint64_t>(v[i] - '0');
      too_large = too_large || cl > kHttpMaxContentLength;
    }
    if (vn == 0) {
      fail("a Content-Length that is not a decimal number");
      return false;
    }
    if (too_large) {
      fail("a Content-Length larger than 2^53-1");
      return false;
    }
    if (saw_content_length_ && cl != head_.content_length) {
      fail("two different Content-Lengths");
      return false;
    }
    saw_content_length_ = true;
    head_.content_length = cl;
  } else if (iequals(l, name_len, "transfer-encoding")) {
    bool ok = !saw_transfer_encoding_;
    int codings = 0;
    for_each_token(v, vn, [&](const char *t, size_t tn) {
      ++codings;
      if (!iequals(t, tn, "chunked")) ok = false;
    });
    if (!ok || codings != 1) {
      fail("a Transfer-Encoding other than \"chunked\"");
      return false;
    }
    saw_transfer_encoding_ = chunked_ = true;
  } else if (iequals(l, name_len, "connection")) {
    for_each_token(v, vn, [&](const char *t, size_t tn) {
      if (iequals(t, tn, "close")) connection_close_ = true;
      if (iequals(t, tn, "keep-alive")) connection_keep_alive_ = true;
    });
  } else if (iequals(l, name_len, "content-type")) {
    if (!head_.has_content_type) {
      head_.has_content_type = true;
      head_.content_type.assign(v, vn);
    }
  } else if (iequals(l, name_len, "content-encoding")) {
    head_.content_encoding.assign(v, vn);
    for (char &c : head_.content_encoding) c = lower(c);
  }
  return true;
}

bool HttpResponseParser::finish_head() {
  int s = head_.status;
  if (s == 101) {
    fail("101 Switching Protocols, which was never asked for");
    return false;
  }
  if (s < 200) {
    // An interim response: forget its head and read the next one.
    if (++interim_ > kHttpMaxInterim) {
      fail("more than 16 interim (1xx) responses");
      return false;
    }
    head_ = HttpResponseHead();
    headers_ = 0;
    head_bytes_ = 0;
    saw_content_length_ = saw_transfer_encoding_ = chunked_ = false;
    connection_close_ = connection_keep_alive_ = false;
    state_ = S_STATUS;
    return true;
  }
  if (saw_transfer_encoding_ && saw_content_length_) {
    fail("both Transfer-Encoding and Content-Length");
    return false;
  }
  head_.keep_alive = head_.version_minor >= 1 ? !connection_close_ : connection_keep_alive_ && !connection_close_;
  if (s == 204 || s == 304) {
    head_.body = HTTP_BODY_NONE;
    head_.content_length = 0;
  } else if (chunked_) {
    head_.body = HTTP_BODY_CHUNKED;
  } else if (saw_content_length_) {
    head_.body = head_.content_length ? HTTP_BODY_LENGTH : HTTP_BODY_NONE;
  } else {
    head_.body = HTTP_BODY_UNTIL_CLOSE;
    head_.keep_alive = false;
  }
  state_ = S_HEAD_DONE;
  return true;
}

bool HttpResponseParser::parse_chunk_size() {
  const char *l = line_.data();
  size_t n = line_.size(), i = 0;
  uint64_t size = 0;
  for (; i < n; ++i) {
    int d = hex_value(l[i]);
    if (d < 0) break;
    size = size * 16 + static_cast<uint64_t>(d);
    if (size > kHttpMaxContentLength) {
      fail("a chunk size larger than 2^53-1");
      return false;
    }
  }
  if (i == 0) {
    fail("a broken chunk size (not a hexadecimal number)");
    return false;
  }
  while (i < n && is_ows(l[i])) ++i;
  if (i < n && l[i] != ';') {
    fail("a broken chunk size (not a hexadecimal number)");
    return false;
  }
  remaining_ = size;
  return true;
}

size_t HttpResponseParser::feed(const char *data, size_t len, Event *ev, const char **body, size_t *body_len) {
  *body = nullptr;
  *body_len = 0;
  size_t off = 0;
  for (;;) {
    switch (state_) {
      case S_ERROR:
        *ev = HTTP_ERROR;
        return off;

      case S_DONE:
        *ev = off < len ? fail("more bytes after the end of the response (a body longer than declared?)") : HTTP_DONE;
        return off;

      case S_DONE_PENDING:
        state_ = S_DONE;
        *ev = HTTP_DONE;
        return off;

      case S_STATUS:
      case S_HEADERS:
      case S_TRAILERS: {
        if (off == len) {
          *ev = HTTP_NEED_MORE;
          return off;
        }
        started_ = true;
        bool complete = false;
        size_t n = take_line(data + off, len - off, &complete);
        off += n;
        head_bytes_ += n;
        if (state_ == S_ERROR) continue;
        if (head_bytes_ > kHttpMaxHeadBytes) {
          fail(state_ == S_TRAILERS ? "trailers longer than 64 KiB" : "a response head longer than 64 KiB");
          continue;
        }
        if (!complete) continue;
        if (state_ == S_STATUS) {
          if (parse_status_line()) state_ = S_HEADERS;
        } else if (line_.empty()) {
          if (state_ == S_TRAILERS) {
            state_ = S_DONE_PENDING;
          } else if (finish_head() && state_ == S_HEAD_DONE) {
            line_.clear();
            *ev = HTTP_HEAD;
            return off;
          }
        } else if (state_ == S_HEADERS) {
          parse_header_line();
        } else if (!std::memchr(line_.data(), ':', line_.size())) {
          fail("a trailer line without a colon");
        }
        line_.clear();
        continue;
      }

      case S_HEAD_DONE:
        switch (head_.body) {
          case HTTP_BODY_NONE: state_ = S_DONE_PENDING; break;
          case HTTP_BODY_LENGTH: remaining_ = head_.content_length; state_ = S_BODY_LENGTH; break;
          case HTTP_BODY_CHUNKED: state_ = S_CHUNK_SIZE; break;
          case HTTP_BODY_UNTIL_CLOSE: state_ = S_BODY_UNTIL_CLOSE; break;
        }
        continue;

      case S_CHUNK_SIZE: {
        if (off == len) {
          *ev = HTTP_NEED_MORE;
          return off;
        }
        bool complete = false;
        off += take_line(data + off, len - off, &complete);
        if (state_ == S_ERROR || !complete) continue;
        if (parse_chunk_size()) {
          if (remaining_ == 0) {
            state_ = S_TRAILERS;
            head_bytes_ = 0;
          } else {
            state_ = S_CHUNK_DATA;
          }
        }
        line_.clear();
        continue;
      }

      case S_CHUNK_DATA_END: {
        if (off == len) {
          *ev = HTTP_NEED_MORE;
          return off;
        }
        char c = data[off];
        if (line_.empty() && c == '\r') {
          line_.push_back(c);
          ++off;
        } else if (c == '\n') {
          line_.clear();
          ++off;
          state_ = S_CHUNK_SIZE;
        } else {
          fail("a chunk longer than its size (no CRLF after the chunk data)");
        }
        continue;
      }

      case S_BODY_LENGTH:
      case S_CHUNK_DATA:
      case S_BODY_UNTIL_CLOSE: {
        if (off == len) {
          *ev = HTTP_NEED_MORE;
          return off;
        }
        size_t n = len - off;
        if (state_ != S_BODY_UNTIL_CLOSE && n > remaining_) n = static_cast<size_t>(remaining_);
        *body = data + off;
        *body_len = n;
        off += n;
        body_bytes_ += n;
        if (state_ != S_BODY_UNTIL_CLOSE) {
          remaining_ -= n;
          if (remaining_ == 0) state_ = state_ == S_BODY_LENGTH ? S_DONE_PENDING : S_CHUNK_DATA_END;
        }
        *ev = HTTP_BODY;
        return off;
      }
    }
  }
}

HttpResponseParser::Event HttpResponseParser::finish() {
  switch (state_) {
    case S_ERROR:
      return HTTP_ERROR;
    case S_DONE:
    case S_DONE_PENDING:
    case S_BODY_UNTIL_CLOSE:
      state_ = S_DONE;
      return HTTP_DONE;
    case S_HEAD_DONE:
      if (head_.body == HTTP_BODY_NONE || head_.body == HTTP_BODY_UNTIL_CLOSE) {
        state_ = S_DONE;
        return HTTP_DONE;
      }
      break;
    default:
      break;
  }
  return fail(started_ ? "the connection closed before the response was complete"
                       : "the connection closed without a response");
}

}  // namespace sb
