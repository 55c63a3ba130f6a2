// libFuzzer target for sb::HttpResponseParser, the parser every byte an HTTP
// server sends to mesibo_util_http goes through. The first byte picks how the
// rest is cut into pieces (as TCP might deliver it); each piece is copied
// into a block of exactly its size so ASan catches any read past it. The
// same bytes are parsed twice, in one piece and in the chosen pieces, and the
// two transcripts (head, body bytes, outcome) must be identical: the
// chunking of a response never changes what it means. The invariants the
// client relies on are checked on the way.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "http_parse.h"

namespace {

struct Transcript {
  bool head = false;
  int status = 0;
  int body_kind = -1;
  uint64_t content_length = 0;
  bool keep_alive = false;
  std::string content_type;
  std::string body;
  int outcome = 0;  // 1 done, -1 error
  std::string error;
  size_t consumed = 0;  // input bytes handed to the parser before the outcome
};

void check(bool ok) {
  if (!ok) std::abort();
}

// Feeds one piece the way http_client.cc does: until every byte is consumed
// or the response ends. Returns false when it ended (done or error).
bool feed_piece(sb::HttpResponseParser &p, const uint8_t *bytes, size_t len, Transcript &t) {
  char *piece = static_cast<char *>(std::malloc(len ? len : 1));
  if (len) std::memcpy(piece, bytes, len);
  size_t off = 0;
  bool more = true;
  for (size_t guard = 0;; ++guard) {
    check(guard < 4 * len + 16);  // every call consumes a byte or moves to the next event
    sb::HttpResponseParser::Event ev;
    const char *body = nullptr;
    size_t body_len = 0;
    size_t n = p.feed(piece + off, len - off, &ev, &body, &body_len);
    check(n <= len - off);
    if (ev == sb::HttpResponseParser::HTTP_BODY) {
      check(t.head && body_len > 0 && body >= piece + off && body + body_len <= piece + off + n);
      t.body.append(body, body_len);
      check(p.body_bytes() == t.body.size());
      if (p.head().body == sb::HTTP_BODY_LENGTH) check(t.body.size() <= p.head().content_length);
    } else {
      check(body == nullptr && body_len == 0);
    }
    off += n;
    if (ev == sb::HttpResponseParser::HTTP_HEAD) {
      check(!t.head);
      const sb::HttpResponseHead &h = p.head();
      check(h.status >= 200 && h.status <= 599);
      t.head = true;
      t.status = h.status;
      t.body_kind = h.body;
      t.content_length = h.content_length;
      t.keep_alive = h.keep_alive;
      t.content_type = h.content_type;
    } else if (ev == sb::HttpResponseParser::HTTP_DONE) {
      check(t.head);
      if (t.body_kind == sb::HTTP_BODY_LENGTH) check(t.body.size() == t.content_length);
      if (t.body_kind == sb::HTTP_BODY_NONE) check(t.body.empty());
      if (off < len) continue;  // the client treats the rest as an error: let the parser say so
      t.outcome = 1;
      more = false;
      break;
    } else if (ev == sb::HttpResponseParser::HTTP_ERROR) {
      check(p.failed() && p.error() != nullptr);
      t.outcome = -1;
      t.error = p.error();
      more = false;
      break;
    } else if (ev == sb::HttpResponseParser::HTTP_NEED_MORE) {
      check(off == len);
      break;
    }
  }
  std::free(piece);
  return more;
}

Transcript parse(const uint8_t *data, size_t size, const std::vector<size_t> &cuts) {
  sb::HttpResponseParser p;
  Transcript t;
  size_t at = 0;
  bool more = true;
  for (size_t i = 0; more && at < size; ++i) {
    size_t n = i < cuts.size() ? cuts[i] : size - at;
    if (n > size - at) n = size - at;
    more = feed_piece(p, data + at, n, t);
    at += n;
  }
  t.consumed = at;
  if (more) {
    if (size == 0) more = feed_piece(p, data, 0, t);
    if (more) {
      // The server closed the connection.
      sb::HttpResponseParser::Event ev = p.finish();
      check(ev == sb::HttpResponseParser::HTTP_DONE || ev == sb::HttpResponseParser::HTTP_ERROR);
      if (ev == sb::HttpResponseParser::HTTP_DONE) {
        check(t.head && (t.body_kind == sb::HTTP_BODY_UNTIL_CLOSE || t.body_kind == sb::HTTP_BODY_NONE));
        t.outcome = 1;
      } else {
        t.outcome = -1;
        t.error = p.error();
      }
    }
  }
  return t;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0) return 0;
  uint8_t seed = data[0];
  ++data;
  --size;

  Transcript whole = parse(data, size, {});

  std::vector<size_t> cuts;
  uint32_t x = seed * 2654435761u + 1;
  for (size_t at = 0; at < size;) {
    x = x * 1103515245u + 12345u;
    size_t n = seed & 1 ? 1 + (x >> 16) % 7 : 1 + (x >> 16) % 97;
    if (seed == 0) n = 1;
    cuts.push_back(n);
    at += n;
  }
  Transcript pieces = parse(data, size, cuts);

  // A response that ends exactly where a piece ends is complete for the
  // client, which cannot know about bytes still to come; in one piece the
  // same bytes are a response followed by junk. Everything else must match.
  if (pieces.outcome == 1 && pieces.consumed < size) {
    check(whole.outcome == -1 && whole.head && whole.body == pieces.body);
    return 0;
  }
  check(whole.head == pieces.head && whole.status == pieces.status && whole.body_kind == pieces.body_kind);
  check(whole.content_length == pieces.content_length && whole.keep_alive == pieces.keep_alive);
  check(whole.content_type == pieces.content_type && whole.body == pieces.body);
  check(whole.outcome == pieces.outcome && whole.error == pieces.error);
  return 0;
}
