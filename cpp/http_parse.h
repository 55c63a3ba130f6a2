// The HTTP/1.x response parser behind mesibo_util_http (http_client.cc). It
// is pure: bytes in, events out, no I/O, no clock, no allocation beyond one
// line buffer, so fuzz/http_fuzz.cc can feed it any bytes in any chunking.
//
// Everything a server sends is untrusted. The parser accepts what RFC 9112
// allows a client to accept and refuses the rest with a sentence saying why
// (error()): a bad status line, a header line without a colon or with a bad
// name, obs-fold, a control character, a Content-Length that is not a plain
// decimal number or is larger than kHttpMaxContentLength, two different
// Content-Lengths, Transfer-Encoding together with Content-Length, a
// transfer coding other than chunked, a broken chunk size or chunk end,
// heads or lines longer than the limits below, and any byte after the end of
// the response (a body longer than declared). Bare LF line ends are accepted
// in the head and in chunk framing, as most clients do; a CR anywhere but
// right before an LF is not.
//
// Interim (1xx) responses are skipped; 101 is refused (this client never asks
// to switch protocols). 204 and 304 have no body whatever they declare.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace sb {

constexpr size_t kHttpMaxHeadBytes = 64 * 1024;        // one response head, status line included
constexpr size_t kHttpMaxLineBytes = 16 * 1024;        // one line of the head or of a chunk's framing
constexpr int kHttpMaxHeaders = 200;                   // header fields in one head
constexpr int kHttpMaxInterim = 16;                    // 1xx responses before the final one
constexpr uint64_t kHttpMaxContentLength = (1ull << 53) - 1;  // larger Content-Lengths are refused

// How the end of the body is found, decided when the head is complete.
enum HttpBodyKind {
  HTTP_BODY_NONE,        // 204, 304, Content-Length: 0
  HTTP_BODY_LENGTH,      // Content-Length: N
  HTTP_BODY_CHUNKED,     // Transfer-Encoding: chunked
  HTTP_BODY_UNTIL_CLOSE  // neither: the body ends when the server closes
};

// The final response's head. Only the fields the client acts on are kept.
struct HttpResponseHead {
  int status = 0;
  int version_minor = 1;           // HTTP/1.<minor>
  bool has_content_type = false;
  std::string content_type;        // the value, trimmed
  std::string content_encoding;    // the value, trimmed, lower case; empty when absent
  HttpBodyKind body = HTTP_BODY_NONE;
  uint64_t content_length = 0;     // HTTP_BODY_LENGTH only
  bool keep_alive = false;         // the connection may carry another request after this response
};

class HttpResponseParser {
 public:
  enum Event {
    HTTP_NEED_MORE,  // every byte given was consumed; feed more (or call finish() at EOF)
    HTTP_HEAD,       // the final head is complete: see head()
    HTTP_BODY,       // *body / *body_len is a piece of the body (pointing into the input)
    HTTP_DONE,       // the response is complete
    HTTP_ERROR       // the response is malformed: see error(); every later call says so again
  };

  HttpResponseParser() { reset(); }

  // Starts over for a new response on the same connection.
  void reset();

  // Consumes bytes from [data, data + len) up to the next event and returns
  // how many; feed the rest in the next call. It returns at most one event per
  // call, and may return one without consuming anything (HTTP_DONE right
  // after HTTP_HEAD when there is no body), so call it again with len 0 when
  // every byte was consumed but the last event was not HTTP_NEED_MORE.
  // After HTTP_DONE, any further byte is an error (nothing was asked for).
  // data may be nullptr when len is 0.
  size_t feed(const char *data, size_t len, Event *ev, const char **body, size_t *body_len);

  // The server closed the connection (EOF): HTTP_DONE when that ends a body
  // read until close (or the response was already done), HTTP_ERROR otherwise.
  Event finish();

  const HttpResponseHead &head() const { return head_; }
  bool done() const { return state_ == S_DONE; }
  bool failed() const { return state_ == S_ERROR; }
  bool started() const { return started_; }  // at least one byte of a response arrived
  const char *error() const { return error_; }
  uint64_t body_bytes() const { return body_bytes_; }  // body bytes so far (before any decoding)

 private:
  enum State {
    S_STATUS,        // reading the status line
    S_HEADERS,       // reading header lines
    S_HEAD_DONE,     // HTTP_HEAD returned; the body (or done) comes next
    S_BODY_LENGTH,
    S_BODY_UNTIL_CLOSE,
    S_CHUNK_SIZE,
    S_CHUNK_DATA,
    S_CHUNK_DATA_END,  // the CRLF after a chunk's data
    S_TRAILERS,
    S_DONE_PENDING,  // the last byte was consumed; HTTP_DONE comes next
    S_DONE,
    S_ERROR
  };

  Event fail(const char *why);
  // Appends to line_ up to and including an LF. Returns the bytes consumed;
  // sets *complete when the line ended (line_ then holds it without the
  // line end). Fails on a line longer than kHttpMaxLineBytes, a lone CR or a
  // NUL.
  size_t take_line(const char *data, size_t len, bool *complete);
  bool parse_status_line();
  bool parse_header_line();
  bool finish_head();  // decides the body kind; false on a contradiction
  bool parse_chunk_size();

  State state_ = S_STATUS;
  HttpResponseHead head_;
  std::string line_;
  const char *error_ = nullptr;
  size_t head_bytes_ = 0;
  int headers_ = 0;
  int interim_ = 0;
  bool started_ = false;
  bool saw_content_length_ = false;
  bool saw_transfer_encoding_ = false;
  bool chunked_ = false;
  bool connection_close_ = false;
  bool connection_keep_alive_ = false;
  uint64_t remaining_ = 0;  // body or chunk bytes still to come
  uint64_t body_bytes_ = 0;
};

}  // namespace sb
