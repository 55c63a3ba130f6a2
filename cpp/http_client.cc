// mesibo_util_http: an HTTP/1.1 client on the loop from io.h (Node's libuv),
// with Node's OpenSSL for https:// and Node's zlib for gzip/deflate bodies.
//
// Two objects, libuv style. An HttpReq is one request: copied from the
// module's mesibo_http_t on the caller's thread, started on the loop thread,
// finished exactly once (on_close(OK), or on_close(FAIL) then on_data with a
// negative progress), freed when its timer handle has closed.
// An HttpConn is one TCP (+TLS) connection to scheme://host:port: created for
// a request, handed to the next request for the same host when the response
// allows it, parked in an idle pool otherwise, freed when its timer handle has
// closed. Freeing only in close callbacks means a pointer stays valid until
// the current callback unwinds, whatever a module callback did meanwhile.
//
// Every handle and request libuv may call back after a connection or request
// is gone carries a pointer that is cleared first (the "detach" pattern), so a
// late callback finds nullptr and only frees its own memory.
#include <dlfcn.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <uv.h>
#include <zlib.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "http_parse.h"
#include "crash_trace.h"
#include "http_client.h"
#include "io.h"
#include "module.h"

#define SB_API extern "C" __attribute__((visibility("default")))

namespace sb {


namespace {

constexpr uint64_t kDefaultPhaseMs = 10 * 1000;  // connect, head and body, each
constexpr uint64_t kDefaultTotalMs = 30 * 1000;
constexpr uint64_t kMaxTimeoutSeconds = 7 * 24 * 3600;
constexpr size_t kMaxConnsPerHost = 128;  // more requests to one host wait for a connection
constexpr size_t kMaxIdlePerHost = 32;
constexpr size_t kMaxIdleTotal = 256;
constexpr uint64_t kIdleTimeoutMs = 15 * 1000;
constexpr size_t kReadBufferBytes = 64 * 1024;
const char kDefaultUserAgent[] = "switchboard/0.1";

// ---------------------------------------------------------------------------
// Requests as the module describes them: URL and header validation, and the
// bytes of the request. Runs on the caller's thread and touches no globals.

struct Url {
  bool tls = false;
  std::string host;  // without brackets for IPv6
  bool ipv6_literal = false;
  uint16_t port = 0;
  std::string target;  // path and query
  std::string user, password;
  bool has_userinfo = false;
};

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string percent_decode(const char *s, size_t n) {
  std::string out;
  for (size_t i = 0; i < n; ++i) {
    if (s[i] == '%' && i + 2 < n && hex_value(s[i + 1]) >= 0 && hex_value(s[i + 2]) >= 0) {
      out.push_back(static_cast<char>(hex_value(s[i + 1]) * 16 + hex_value(s[i + 2])));
      i += 2;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

bool starts_with_nocase(const char *s, const char *prefix) {
  for (; *prefix; ++s, ++prefix)
    if (std::tolower(static_cast<unsigned char>(*s)) != *prefix) return false;
  return true;
}

// Fills `u` from an absolute http(s) URL, or says why it cannot.
bool parse_url(const char *s, Url &u, const char **why) {
  for (const char *p = s; *p; ++p)
    if (static_cast<unsigned char>(*p) <= 0x20 || *p == 0x7f) {
      *why = "the URL contains a space or a control character";
      return false;
    }
  size_t skip;
  if (starts_with_nocase(s, "http://")) {
    skip = 7;
  } else if (starts_with_nocase(s, "https://")) {
    u.tls = true;
    skip = 8;
  } else {
    *why = "the URL does not start with http:// or https://";
    return false;
  }
  const char *auth = s + skip;
  const char *auth_end = auth + std::strcspn(auth, "/?#");
  const char *host = auth;
  for (const char *p = auth; p < auth_end; ++p)
    if (*p == '@') host = p + 1;
  if (host != auth) {
    const char *info_end = host - 1;
    const char *colon = static_cast<const char *>(std::memchr(auth, ':', static_cast<size_t>(info_end - auth)));
    const char *user_end = colon ? colon : info_end;
    u.user = percent_decode(auth, static_cast<size_t>(user_end - auth));
    if (colon) u.password = percent_decode(colon + 1, static_cast<size_t>(info_end - colon - 1));
    u.has_userinfo = true;
  }
  const char *port = nullptr;
  if (host < auth_end && *host == '[') {
    const char *close = static_cast<const char *>(std::memchr(host, ']', static_cast<size_t>(auth_end - host)));
    if (!close || close == host + 1) {
      *why = "the URL has a bad IPv6 address";
      return false;
    }
    u.host.assign(host + 1, close);
    u.ipv6_literal = true;
    if (close + 1 < auth_end) {
      if (close[1] != ':') {
        *why = "the URL has a bad IPv6 address";
        return false;
      }
      port = close + 2;
    }
  } else {
    const char *colon = static_cast<const char *>(std::memchr(host, ':', static_cast<size_t>(auth_end - host)));
    u.host.assign(host, colon ? colon : auth_end);
    if (colon) port = colon + 1;
  }
  if (u.host.empty()) {
    *why = "the URL has no host";
    return false;
  }
  for (char c : u.host)
    if (std::strchr("\"<>\\^`{|}[]@/", c)) {
      *why = "the URL's host contains a character that is not allowed";
      return false;
    }
  u.port = u.tls ? 443 : 80;
  if (port) {
    unsigned long v = 0;
    if (port == auth_end) v = u.port;
    for (const char *p = port; p < auth_end; ++p) {
      if (*p < '0' || *p > '9' || v > 65535) {
        *why = "the URL has a bad port";
        return false;
      }
      v = v * 10 + static_cast<unsigned long>(*p - '0');
    }
    if (v == 0 || v > 65535) {
      *why = "the URL has a bad port";
      return false;
    }
    u.port = static_cast<uint16_t>(v);
  }
  const char *frag = std::strchr(auth_end, '#');
  u.target.assign(auth_end, frag ? frag : auth_end + std::strlen(auth_end));
  if (u.target.empty() || u.target[0] != '/') u.target.insert(0, "/");
  return true;
}

std::string base64(const std::string &in) {
  static const char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    uint32_t v = static_cast<uint8_t>(in[i]) << 16 | static_cast<uint8_t>(in[i + 1]) << 8 | static_cast<uint8_t>(in[i + 2]);
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  if (i < in.size()) {
    uint32_t v = static_cast<uint8_t>(in[i]) << 16;
    if (i + 1 < in.size()) v |= static_cast<uint8_t>(in[i + 1]) << 8;
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += i + 1 < in.size() ? kAlphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

// An IMF-fixdate (RFC 9110 5.6.7), independent of the locale.
std::string http_date(time_t t) {
  static const char *const kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static const char *const kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  struct tm tm;
  if (!gmtime_r(&t, &tm)) return std::string();
  char buf[64];
  std::snprintf(buf, sizeof buf, "%s, %02d %s %04d %02d:%02d:%02d GMT", kDays[tm.tm_wday % 7], tm.tm_mday,
                kMonths[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
  return buf;
}

bool has_line_break(const char *v) { return std::strpbrk(v, "\r\n") != nullptr; }

uint64_t timeout_ms(mesibo_uint_t seconds, uint64_t fallback) {
  if (seconds == 0) return fallback;
  return std::min<uint64_t>(seconds, kMaxTimeoutSeconds) * 1000;
}

// ---------------------------------------------------------------------------
// Body decoding (Content-Encoding gzip, x-gzip, deflate), streamed: a body
// never has to fit in memory, compressed or not.

class BodyDecoder {
 public:
  ~BodyDecoder() {
    if (active_) inflateEnd(&z_);
  }

  // True when `encoding` (lower case) is one this decoder undoes. Other
  // encodings reach the module as they came.
  static bool handles(const std::string &encoding) {
    return encoding == "gzip" || encoding == "x-gzip" || encoding == "deflate";
  }

  void start(const std::string &encoding) {
    gzip_ = encoding != "deflate";
    active_ = false;
    ended_ = false;
    started_ = true;
  }

  bool started() const { return started_; }

  // Decodes `n` bytes, calling out(piece, size) for each piece of output.
  // False when the data is not what the encoding says. Bytes after the end
  // of the compressed stream are ignored, as browsers do.
  template <typename Out>
  bool feed(const char *data, size_t n, Out out) {
    if (ended_ || n == 0) return true;
    if (!active_) {
      // deflate is meant to be zlib-wrapped, but some servers send raw
      // deflate; a zlib stream starts with a CMF byte of 0xN8, N <= 7.
      unsigned char b = static_cast<unsigned char>(data[0]);
      int bits = gzip_ ? 15 + 32 : ((b & 0x0f) == 8 && (b >> 4) <= 7 ? 15 : -15);
      std::memset(&z_, 0, sizeof z_);
      if (inflateInit2(&z_, bits) != Z_OK) return false;
      active_ = true;
    }
    static unsigned char buf[kReadBufferBytes];
    z_.next_in = reinterpret_cast<Bytef *>(const_cast<char *>(data));
    z_.avail_in = static_cast<uInt>(n);
    for (;;) {
      z_.next_out = buf;
      z_.avail_out = sizeof buf;
      int rc = inflate(&z_, Z_NO_FLUSH);
      size_t produced = sizeof buf - z_.avail_out;
      if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR) return false;
      if (produced) out(reinterpret_cast<const char *>(buf), produced);
      if (rc == Z_STREAM_END) {
        ended_ = true;
        return true;
      }
      if (rc == Z_BUF_ERROR || (z_.avail_in == 0 && z_.avail_out != 0)) return true;
    }
  }

  // True when the compressed stream ended properly (or the body was empty).
  bool finish() const { return ended_ || !active_; }

 private:
  z_stream z_;
  bool active_ = false, gzip_ = true, ended_ = false, started_ = false;
};

// ---------------------------------------------------------------------------
// The request and the connection.

struct HttpConn;
struct HostPool;

enum Phase { PHASE_QUEUED, PHASE_CONNECTING, PHASE_WAITING, PHASE_BODY };

struct HttpReq {
  ~HttpReq() {
    for (void *lib : pinned)
      if (lib) dlclose(lib);
  }

  // What the module asked for, copied before mesibo_util_http returned.
  std::string key;    // "https://host:port": connections are shared per key
  std::string host;   // for DNS, SNI and certificate checks
  std::string port;   // decimal, for getaddrinfo
  bool tls = false;
  bool ipv6_literal = false;
  bool idempotent = true;  // GET: may be retried once on a fresh connection
  std::string label;       // "GET https://host:port/path" for log lines: no query, no password
  std::string wire;        // the whole request: head and body
  uint64_t conn_ms = 0, header_ms = 0, body_ms = 0, total_ms = 0;
  mesibo_http_ondata_t on_data = nullptr;
  mesibo_http_onstatus_t on_status = nullptr;
  mesibo_http_onclose_t on_close = nullptr;
  void *cbdata = nullptr;
  void *pinned[3] = {nullptr, nullptr, nullptr};  // the libraries the callbacks live in
  // What a crash trace names in each callback: the first callback's file.
  CallSite data_site{"a module", "an HTTP on_data callback"};
  CallSite status_site{"a module", "an HTTP on_status callback"};
  CallSite close_site{"a module", "an HTTP on_close callback"};

  // Where it is.
  Phase phase = PHASE_QUEUED;
  uv_timer_t *timer = nullptr;  // deadlines; its close callback frees the request
  uint64_t total_deadline = 0, phase_deadline = 0;
  HostPool *pool = nullptr;
  HttpConn *conn = nullptr;
  bool retried = false;
  bool finished = false;  // on_close has been called (or is being called)
  BodyDecoder decoder;
  const char *held = nullptr;  // the last body piece, kept until the end is sure
  size_t held_len = 0;
};

enum ConnState { CONN_RESOLVING, CONN_CONNECTING, CONN_HANDSHAKE, CONN_READY };

struct Resolve {
  uv_getaddrinfo_t req;
  HttpConn *conn;  // nullptr once the connection gave up waiting
};

struct HttpConn {
  HostPool *pool = nullptr;
  std::string host, port;
  bool tls = false, ipv6_literal = false;
  ConnState state = CONN_RESOLVING;
  uv_tcp_t *tcp = nullptr;      // detached (data = nullptr) before it is closed
  uv_timer_t *timer = nullptr;  // the idle timer; its close callback frees the connection
  Resolve *resolve = nullptr;
  struct addrinfo *addrs = nullptr, *next_addr = nullptr;
  std::string last_error;  // why the previous address failed
  SSL *ssl = nullptr;
  BIO *rbio = nullptr, *wbio = nullptr;  // owned by ssl
  unsigned generation = 0;               // of the TLS settings it was made with
  bool closing = false, idle = false, reused = false, close_notify = false;
  HttpReq *req = nullptr;
  HttpResponseParser parser;
};

struct HostPool {
  size_t open = 0;  // connections, idle or busy or connecting
  std::vector<HttpConn *> idle;
  std::deque<HttpReq *> waiting;
  bool pump_posted = false;
};

// The TLS settings: written by http_set_ca_file (from core_open, any
// thread), read on the loop thread when a TLS connection starts.
struct TlsSettings {
  std::mutex mu;
  std::string ca_file;
  unsigned generation = 1;
};

TlsSettings &tls_settings() {
  static TlsSettings s;
  return s;
}

// Loop thread only.
struct Client {
  SSL_CTX *ctx = nullptr;
  unsigned ctx_generation = 0;
  std::unordered_map<std::string, HostPool> pools;  // node-based: a HostPool never moves
  size_t idle_total = 0;
};

Client &client() {
  static Client c;
  return c;
}

// OpenSSL keeps errors in a per-thread queue, and the loop thread is Node's
// main thread: leave nothing there for Node's own crypto to trip over.
struct ClearOpenSslErrors {
  ~ClearOpenSslErrors() { ERR_clear_error(); }
};

std::string openssl_error(const char *fallback) {
  unsigned long e = ERR_peek_last_error();
  if (!e) return fallback;
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  return buf;
}

void log_failure(const HttpReq *r, const std::string &why) {
  io_report("http: %s: %s", r->label.c_str(), why.c_str());
}

// Static buffers for what is read: a read is consumed entirely within its
// callback, on the loop thread, before the next one can happen.
char g_read_buf[kReadBufferBytes];
char g_plain_buf[kReadBufferBytes];

void req_fail(HttpReq *r, const std::string &why);
void conn_fail(HttpConn *c, const std::string &why);
void conn_close(HttpConn *c);
void conn_connect(HttpConn *c);
void conn_write(HttpConn *c, const char *data, size_t len);
void conn_on_plain(HttpConn *c, const char *data, size_t len);
void conn_on_eof(HttpConn *c);
void acquire(HttpReq *r, bool fresh);
void send(HttpReq *r, HttpConn *c);

uv_loop_t *loop() { return io_loop(); }

// -- TLS context ------------------------------------------------------------

bool file_exists(const char *path) {
  struct stat st;
  return path && ::stat(path, &st) == 0;
}

SSL_CTX *tls_context(unsigned *generation, std::string *why) {
  ClearOpenSslErrors clear;
  Client &cl = client();
  std::string ca_file;
  unsigned gen;
  {
    TlsSettings &s = tls_settings();
    std::lock_guard<std::mutex> lock(s.mu);
    ca_file = s.ca_file;
    gen = s.generation;
  }
  *generation = gen;
  if (cl.ctx && cl.ctx_generation == gen) return cl.ctx;
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  if (!ctx) {
    *why = "cannot create a TLS context: " + openssl_error("out of memory");
    return nullptr;
  }
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  load_system_cas(ctx);
  if (!ca_file.empty() && SSL_CTX_load_verify_locations(ctx, ca_file.c_str(), nullptr) != 1) {
    *why = "cannot load http_ca_file " + ca_file + ": " + openssl_error("no certificates");
    SSL_CTX_free(ctx);
    return nullptr;
  }
  // Connections made with the old context keep it alive (SSL objects hold a
  // reference); they are not reused once the settings changed.
  if (cl.ctx) SSL_CTX_free(cl.ctx);
  cl.ctx = ctx;
  cl.ctx_generation = gen;
  return ctx;
}

// -- Requests: deadlines, callbacks, the end ----------------------------------

void req_arm(HttpReq *r) {
  uint64_t now = uv_now(loop());
  uint64_t due = r->total_deadline;
  if (r->phase != PHASE_QUEUED && r->phase_deadline < due) due = r->phase_deadline;
  uv_timer_start(r->timer, [](uv_timer_t *t) {
    auto *r = static_cast<HttpReq *>(t->data);
    if (r->finished) return;
    uint64_t now = uv_now(loop());
    char why[160];
    if (now >= r->total_deadline) {
      std::snprintf(why, sizeof why, "no complete response within the total timeout (%llu ms)",
                    static_cast<unsigned long long>(r->total_ms));
    } else if (r->phase == PHASE_CONNECTING) {
      std::snprintf(why, sizeof why, "could not connect within the connect timeout (%llu ms)",
                    static_cast<unsigned long long>(r->conn_ms));
    } else if (r->phase == PHASE_WAITING) {
      std::snprintf(why, sizeof why, "no response head within the header timeout (%llu ms)",
                    static_cast<unsigned long long>(r->header_ms));
    } else {
      std::snprintf(why, sizeof why, "the body did not complete within the body timeout (%llu ms)",
                    static_cast<unsigned long long>(r->body_ms));
    }
    req_fail(r, why);
  }, due > now ? due - now : 0, 0);
}

void req_enter(HttpReq *r, Phase phase, uint64_t limit_ms) {
  r->phase = phase;
  r->phase_deadline = uv_now(loop()) + limit_ms;
  req_arm(r);
}

void req_free(HttpReq *r) {
  uv_timer_stop(r->timer);
  uv_close(reinterpret_cast<uv_handle_t *>(r->timer), [](uv_handle_t *h) {
    delete static_cast<HttpReq *>(h->data);
    delete reinterpret_cast<uv_timer_t *>(h);
  });
}

void deliver(HttpReq *r, mesibo_int_t progress, const char *data, size_t len) {
  if (!r->on_data) return;
  InModule in(r->data_site);
  r->on_data(r->cbdata, MODULE_HTTP_STATE_RESPBODY, progress, len ? data : "", static_cast<mesibo_int_t>(len));
}

mesibo_int_t body_progress(const HttpReq *r) {
  const HttpResponseParser &p = r->conn->parser;
  if (p.head().body != HTTP_BODY_LENGTH) return 0;
  uint64_t pct = p.body_bytes() * 100 / p.head().content_length;
  return static_cast<mesibo_int_t>(std::min<uint64_t>(pct, 99));
}

void req_fail(HttpReq *r, const std::string &why) {
  if (r->finished) return;
  r->finished = true;
  log_failure(r, why);
  if (HttpConn *c = r->conn) {
    r->conn = nullptr;
    c->req = nullptr;
    conn_close(c);
  } else if (r->phase == PHASE_QUEUED && r->pool) {
    auto &w = r->pool->waiting;
    w.erase(std::remove(w.begin(), w.end(), r), w.end());
  }
  mesibo_int_t state = r->phase == PHASE_BODY      ? MODULE_HTTP_STATE_RESPBODY
                       : r->phase == PHASE_WAITING ? MODULE_HTTP_STATE_RESPHEADER
                                                   : MODULE_HTTP_STATE_REQUEST;
  // mesibo's order: on_close(FAIL) first, then on_data(progress < 0) as the
  // very last call. Modules written for mesibo free cbdata in on_data when
  // progress < 0 and only log in on_close; the other order hands them freed
  // memory in on_close (docs/modules.md, "HTTP requests").
  if (r->on_close) {
    InModule in(r->close_site);
    r->on_close(r->cbdata, MESIBO_RESULT_FAIL);
  }
  if (r->on_data) {
    InModule in(r->data_site);
    r->on_data(r->cbdata, state, -1, "", 0);
  }
  req_free(r);
}

// Gives the connection to the next request for its host, parks it in the
// idle pool, or closes it.
void conn_release(HttpConn *c, bool keep) {
  c->req = nullptr;
  if (!keep || c->closing) {
    conn_close(c);
    return;
  }
  HostPool *pool = c->pool;
  Client &cl = client();
  if (!pool->waiting.empty()) {
    HttpReq *next = pool->waiting.front();
    pool->waiting.pop_front();
    c->reused = true;
    send(next, c);
    return;
  }
  if (pool->idle.size() >= kMaxIdlePerHost || cl.idle_total >= kMaxIdleTotal) {
    conn_close(c);
    return;
  }
  c->idle = true;
  pool->idle.push_back(c);
  ++cl.idle_total;
  // An idle connection must not keep the process alive.
  uv_unref(reinterpret_cast<uv_handle_t *>(c->tcp));
  uv_timer_start(c->timer, [](uv_timer_t *t) { conn_close(static_cast<HttpConn *>(t->data)); }, kIdleTimeoutMs, 0);
}

void req_succeed(HttpReq *r) {
  HttpConn *c = r->conn;
  if (r->decoder.started() && !r->decoder.finish()) {
    req_fail(r, "the compressed body ends before the end of its stream");
    return;
  }
  r->finished = true;
  uv_timer_stop(r->timer);
  // Reusable only when the server said so and nothing else is pending on it.
  bool keep = c->parser.head().keep_alive && c->state == CONN_READY && !c->closing &&
              (!c->ssl || (SSL_pending(c->ssl) == 0 && BIO_ctrl_pending(c->rbio) == 0 && !c->close_notify));
  deliver(r, 100, r->held, r->held_len);
  r->held = nullptr;
  if (r->on_close) {
    InModule in(r->close_site);
    r->on_close(r->cbdata, MESIBO_RESULT_OK);
  }
  r->conn = nullptr;
  conn_release(c, keep);
  req_free(r);
}

void on_head(HttpReq *r) {
  const HttpResponseHead &h = r->conn->parser.head();
  req_enter(r, PHASE_BODY, r->body_ms);
  if (h.body != HTTP_BODY_NONE && BodyDecoder::handles(h.content_encoding)) r->decoder.start(h.content_encoding);
  if (!r->on_status) return;
  InModule in(r->status_site);
  r->on_status(r->cbdata, h.status, h.has_content_type ? h.content_type.c_str() : nullptr);
}

// Feeds what the server sent to the response parser, and the events to the
// module. Stops at the end of the request.
void req_feed(HttpReq *r, const char *data, size_t len) {
  HttpConn *c = r->conn;
  size_t off = 0;
  for (;;) {
    HttpResponseParser::Event ev;
    const char *body;
    size_t body_len;
    off += c->parser.feed(data + off, len - off, &ev, &body, &body_len);
    switch (ev) {
      case HttpResponseParser::HTTP_NEED_MORE:
        return;
      case HttpResponseParser::HTTP_HEAD:
        on_head(r);
        break;
      case HttpResponseParser::HTTP_BODY:
        if (r->decoder.started()) {
          mesibo_int_t progress = body_progress(r);
          if (!r->decoder.feed(body, body_len, [&](const char *out, size_t n) { deliver(r, progress, out, n); })) {
            req_fail(r, "the body is not valid " + c->parser.head().content_encoding + " data");
            return;
          }
        } else if (c->parser.head().body == HTTP_BODY_LENGTH &&
                   c->parser.body_bytes() == c->parser.head().content_length) {
          r->held = body;  // delivered with progress 100 once nothing follows it
          r->held_len = body_len;
        } else {
          deliver(r, body_progress(r), body, body_len);
        }
        break;
      case HttpResponseParser::HTTP_DONE:
        if (off < len) {
          req_fail(r, "more bytes after the end of the response (a body longer than declared?)");
          return;
        }
        req_succeed(r);
        return;
      case HttpResponseParser::HTTP_ERROR:
        req_fail(r, std::string("a malformed response: ") + c->parser.error());
        return;
    }
  }
}

// -- Connections ----------------------------------------------------------------

void close_tcp(uv_tcp_t *t) {
  t->data = nullptr;
  uv_close(reinterpret_cast<uv_handle_t *>(t), [](uv_handle_t *h) { delete reinterpret_cast<uv_tcp_t *>(h); });
}

void pool_pump(HostPool *pool) {
  while (!pool->waiting.empty() && pool->open < kMaxConnsPerHost) {
    HttpReq *r = pool->waiting.front();
    pool->waiting.pop_front();
    acquire(r, false);
  }
}

// Starts waiting requests on the next loop turn rather than inside whatever
// closed a connection: no recursion through module callbacks.
void pool_pump_later(HostPool *pool) {
  if (pool->pump_posted || pool->waiting.empty()) return;
  pool->pump_posted = true;
  io_post([pool] {
    pool->pump_posted = false;
    pool_pump(pool);
  });
}

void conn_close(HttpConn *c) {
  if (c->closing) return;
  c->closing = true;
  Client &cl = client();
  HostPool *pool = c->pool;
  if (c->idle) {
    pool->idle.erase(std::remove(pool->idle.begin(), pool->idle.end(), c), pool->idle.end());
    --cl.idle_total;
    c->idle = false;
  }
  --pool->open;
  if (c->req) {
    HttpReq *r = c->req;
    c->req = nullptr;
    r->conn = nullptr;
    req_fail(r, "the connection was closed");
  }
  if (c->resolve) {
    c->resolve->conn = nullptr;
    uv_cancel(reinterpret_cast<uv_req_t *>(&c->resolve->req));
    c->resolve = nullptr;
  }
  if (c->addrs) uv_freeaddrinfo(c->addrs);
  c->addrs = c->next_addr = nullptr;
  if (c->ssl) SSL_free(c->ssl);
  c->ssl = nullptr;
  if (c->tcp) close_tcp(c->tcp);
  c->tcp = nullptr;
  uv_timer_stop(c->timer);
  uv_close(reinterpret_cast<uv_handle_t *>(c->timer), [](uv_handle_t *h) {
    delete static_cast<HttpConn *>(h->data);
    delete reinterpret_cast<uv_timer_t *>(h);
  });
  pool_pump_later(pool);
}

// A connection failed. Its request fails with it, unless the connection was
// a reused one that died before answering (the server closed it while it was
// idle): then a GET is tried once more on a fresh connection.
void conn_fail(HttpConn *c, const std::string &why) {
  HttpReq *r = c->req;
  if (!r) {
    conn_close(c);
    return;
  }
  if (c->reused && !r->retried && r->idempotent && r->phase == PHASE_WAITING && !c->parser.started()) {
    r->retried = true;
    c->req = nullptr;
    r->conn = nullptr;
    conn_close(c);
    acquire(r, true);
    return;
  }
  req_fail(r, why);
}

void on_written(uv_write_t *w, int status);

struct WriteReq {
  uv_write_t req;
  std::string data;
};

void raw_write(HttpConn *c, std::string data) {
  auto *w = new WriteReq;
  w->data = std::move(data);
  uv_buf_t buf = uv_buf_init(&w->data[0], static_cast<unsigned>(w->data.size()));
  int rc = uv_write(&w->req, reinterpret_cast<uv_stream_t *>(c->tcp), &buf, 1, on_written);
  if (rc < 0) {
    delete w;
    conn_fail(c, std::string("cannot send the request: ") + uv_strerror(rc));
  }
}

void on_written(uv_write_t *w, int status) {
  auto *wr = reinterpret_cast<WriteReq *>(w);
  auto *c = static_cast<HttpConn *>(w->handle->data);
  delete wr;
  if (!c || status >= 0 || c->closing) return;
  conn_fail(c, std::string("cannot send the request: ") + uv_strerror(status));
}

void tls_flush(HttpConn *c) {
  for (;;) {
    size_t pending = BIO_ctrl_pending(c->wbio);
    if (pending == 0) return;
    std::string out(pending, '\0');
    int n = BIO_read(c->wbio, &out[0], static_cast<int>(pending));
    if (n <= 0) return;
    out.resize(static_cast<size_t>(n));
    raw_write(c, std::move(out));
    if (c->closing) return;
  }
}

void conn_write(HttpConn *c, const char *data, size_t len) {
  if (!c->ssl) {
    raw_write(c, std::string(data, len));
    return;
  }
  ClearOpenSslErrors clear;
  int n = SSL_write(c->ssl, data, static_cast<int>(len));
  if (n <= 0) {
    conn_fail(c, "TLS write failed: " + openssl_error("unknown error"));
    return;
  }
  tls_flush(c);
}

void conn_ready(HttpConn *c) {
  c->state = CONN_READY;
  if (c->req) send(c->req, c);
}

void tls_handshake(HttpConn *c) {
  ClearOpenSslErrors clear;
  int rc = SSL_do_handshake(c->ssl);
  tls_flush(c);
  if (c->closing) return;
  if (rc == 1) {
    conn_ready(c);
    return;
  }
  int err = SSL_get_error(c->ssl, rc);
  if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) return;
  long verify = SSL_get_verify_result(c->ssl);
  std::string why = "TLS handshake with " + c->host + " failed: ";
  if (verify != X509_V_OK)
    why += std::string("certificate verification failed: ") + X509_verify_cert_error_string(verify);
  else
    why += openssl_error(err == SSL_ERROR_SYSCALL ? "the connection closed" : "protocol error");
  conn_fail(c, why);
}

void tls_start(HttpConn *c) {
  ClearOpenSslErrors clear;
  std::string why;
  SSL_CTX *ctx = tls_context(&c->generation, &why);
  if (!ctx) {
    conn_fail(c, why);
    return;
  }
  c->ssl = SSL_new(ctx);
  c->rbio = BIO_new(BIO_s_mem());
  c->wbio = BIO_new(BIO_s_mem());
  if (!c->ssl || !c->rbio || !c->wbio) {
    if (c->rbio) BIO_free(c->rbio);
    if (c->wbio) BIO_free(c->wbio);
    c->rbio = c->wbio = nullptr;
    conn_fail(c, "cannot start TLS: " + openssl_error("out of memory"));
    return;
  }
  SSL_set_bio(c->ssl, c->rbio, c->wbio);
  SSL_set_connect_state(c->ssl);
  X509_VERIFY_PARAM *param = SSL_get0_param(c->ssl);
  bool ip = c->ipv6_literal;
  if (!ip) {
    unsigned char addr[16];
    ip = uv_inet_pton(AF_INET, c->host.c_str(), addr) == 0;
  }
  if (ip) {
    X509_VERIFY_PARAM_set1_ip_asc(param, c->host.c_str());
  } else {
    SSL_set_tlsext_host_name(c->ssl, c->host.c_str());
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    X509_VERIFY_PARAM_set1_host(param, c->host.c_str(), 0);
  }
  c->state = CONN_HANDSHAKE;
  tls_handshake(c);
}

void tls_read(HttpConn *c) {
  ClearOpenSslErrors clear;
  while (!c->closing && c->ssl) {
    int n = SSL_read(c->ssl, g_plain_buf, sizeof g_plain_buf);
    if (n > 0) {
      conn_on_plain(c, g_plain_buf, static_cast<size_t>(n));
      continue;
    }
    int err = SSL_get_error(c->ssl, n);
    if (err == SSL_ERROR_WANT_READ) break;
    if (err == SSL_ERROR_ZERO_RETURN) {
      c->close_notify = true;
      conn_on_eof(c);
      return;
    }
    conn_fail(c, "TLS error: " + openssl_error("the connection broke"));
    return;
  }
  if (!c->closing) tls_flush(c);
}

void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *) {
  auto *c = static_cast<HttpConn *>(s->data);
  if (!c || c->closing || nread == 0) return;
  if (nread == UV_EOF) {
    conn_on_eof(c);
    return;
  }
  if (nread < 0) {
    conn_fail(c, std::string("connection error: ") + uv_strerror(static_cast<int>(nread)));
    return;
  }
  if (!c->ssl) {
    conn_on_plain(c, g_read_buf, static_cast<size_t>(nread));
    return;
  }
  if (BIO_write(c->rbio, g_read_buf, static_cast<int>(nread)) != nread) {
    conn_fail(c, "out of memory for TLS data");
    return;
  }
  if (c->state == CONN_HANDSHAKE) {
    tls_handshake(c);
    if (c->closing || c->state != CONN_READY) return;
  }
  tls_read(c);
}

void conn_on_plain(HttpConn *c, const char *data, size_t len) {
  HttpReq *r = c->req;
  if (!r || (r->phase != PHASE_WAITING && r->phase != PHASE_BODY)) {
    // Nothing was asked on this connection: whatever this is, it cannot be
    // trusted to frame the next response.
    conn_close(c);
    return;
  }
  req_feed(r, data, len);
}

void conn_on_eof(HttpConn *c) {
  HttpReq *r = c->req;
  if (!r) {
    conn_close(c);
    return;
  }
  if (r->phase == PHASE_CONNECTING) {
    conn_fail(c, "the server closed the connection during the TLS handshake");
    return;
  }
  if (c->ssl && !c->close_notify && c->parser.head().body == HTTP_BODY_UNTIL_CLOSE && !c->parser.failed()) {
    conn_fail(c, "the TLS connection closed without close_notify: the body may be truncated");
    return;
  }
  if (c->parser.finish() == HttpResponseParser::HTTP_DONE) {
    req_succeed(r);  // a body read until close: the connection is not kept
    return;
  }
  conn_fail(c, c->parser.error());
}

void on_connected(uv_connect_t *req, int status) {
  auto *t = reinterpret_cast<uv_tcp_t *>(req->handle);
  delete req;
  auto *c = static_cast<HttpConn *>(t->data);
  if (!c || c->closing) return;
  if (status < 0) {
    c->last_error = uv_strerror(status);
    close_tcp(t);
    c->tcp = nullptr;
    conn_connect(c);
    return;
  }
  uv_freeaddrinfo(c->addrs);
  c->addrs = c->next_addr = nullptr;
  uv_tcp_nodelay(t, 1);
  int rc = uv_read_start(reinterpret_cast<uv_stream_t *>(t),
                         [](uv_handle_t *, size_t, uv_buf_t *buf) { *buf = uv_buf_init(g_read_buf, sizeof g_read_buf); },
                         on_read);
  if (rc < 0) {
    conn_fail(c, std::string("cannot read from the connection: ") + uv_strerror(rc));
    return;
  }
  if (c->tls)
    tls_start(c);
  else
    conn_ready(c);
}

// Tries the next address the name resolved to.
void conn_connect(HttpConn *c) {
  while (c->next_addr) {
    struct addrinfo *ai = c->next_addr;
    c->next_addr = ai->ai_next;
    if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6) continue;
    auto *t = new uv_tcp_t;
    uv_tcp_init(loop(), t);
    t->data = c;
    auto *req = new uv_connect_t;
    int rc = uv_tcp_connect(req, t, ai->ai_addr, on_connected);
    if (rc < 0) {
      delete req;
      c->last_error = uv_strerror(rc);
      close_tcp(t);
      continue;
    }
    c->tcp = t;
    c->state = CONN_CONNECTING;
    return;
  }
  conn_fail(c, "cannot connect to " + c->host + " port " + c->port + ": " +
                   (c->last_error.empty() ? "no address" : c->last_error));
}

void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  auto *rs = reinterpret_cast<Resolve *>(req);
  HttpConn *c = rs->conn;
  delete rs;
  if (!c) {
    if (res) uv_freeaddrinfo(res);
    return;
  }
  c->resolve = nullptr;
  if (status < 0) {
    if (res) uv_freeaddrinfo(res);
    conn_fail(c, "cannot resolve " + c->host + ": " + uv_strerror(status));
    return;
  }
  c->addrs = c->next_addr = res;
  conn_connect(c);
}

// Starts a new connection for `r` (which is attached to it).
void conn_open(HttpReq *r, HostPool *pool) {
  auto *c = new HttpConn;
  c->pool = pool;
  c->host = r->host;
  c->port = r->port;
  c->tls = r->tls;
  c->ipv6_literal = r->ipv6_literal;
  c->timer = new uv_timer_t;
  uv_timer_init(loop(), c->timer);
  uv_unref(reinterpret_cast<uv_handle_t *>(c->timer));
  c->timer->data = c;
  ++pool->open;
  c->req = r;
  r->conn = c;
  req_enter(r, PHASE_CONNECTING, r->conn_ms);
  auto *rs = new Resolve;
  rs->conn = c;
  c->resolve = rs;
  struct addrinfo hints;
  std::memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_protocol = IPPROTO_TCP;
  int rc = uv_getaddrinfo(loop(), &rs->req, on_resolved, c->host.c_str(), c->port.c_str(), &hints);
  if (rc < 0) {
    delete rs;
    c->resolve = nullptr;
    conn_fail(c, "cannot resolve " + c->host + ": " + uv_strerror(rc));
  }
}

void send(HttpReq *r, HttpConn *c) {
  c->req = r;
  r->conn = c;
  c->parser.reset();
  req_enter(r, PHASE_WAITING, r->header_ms);
  conn_write(c, r->wire.data(), r->wire.size());
}

// Finds a connection for `r`: an idle one for the same scheme, host and port,
// a new one, or a place in the queue when the host has kMaxConnsPerHost.
void acquire(HttpReq *r, bool fresh) {
  Client &cl = client();
  HostPool &pool = cl.pools[r->key];
  r->pool = &pool;
  unsigned tls_generation = 0;
  if (r->tls) {
    std::lock_guard<std::mutex> lock(tls_settings().mu);
    tls_generation = tls_settings().generation;
  }
  while (!fresh && !pool.idle.empty()) {
    HttpConn *c = pool.idle.back();
    pool.idle.pop_back();
    --cl.idle_total;
    c->idle = false;
    uv_timer_stop(c->timer);
    if (c->tls && c->generation != tls_generation) {
      conn_close(c);
      continue;
    }
    uv_ref(reinterpret_cast<uv_handle_t *>(c->tcp));
    c->reused = true;
    send(r, c);
    return;
  }
  if (pool.open < kMaxConnsPerHost) {
    conn_open(r, &pool);
    return;
  }
  r->phase = PHASE_QUEUED;
  pool.waiting.push_back(r);
}

void req_start(HttpReq *r) {
  r->timer = new uv_timer_t;
  uv_timer_init(loop(), r->timer);
  r->timer->data = r;
  r->total_deadline = uv_now(loop()) + r->total_ms;
  r->phase = PHASE_QUEUED;
  req_arm(r);
  acquire(r, false);
}

// Copies and checks everything in `in`. False (with `why`) when the request
// is refused at once.
bool prepare(const mesibo_http_t &in, void *cbdata, HttpReq &r, const char **why) {
  Url u;
  if (!parse_url(in.url, u, why)) return false;
  const char *fields[] = {in.content_type, in.user_agent, in.referrer, in.origin, in.cookie,
                          in.encoding,     in.cache_control, in.accept, in.etag};
  for (const char *f : fields)
    if (f && has_line_break(f)) {
      *why = "a header value contains a line break (use extra_header for several headers)";
      return false;
    }
  const bool post = in.post != nullptr;
  std::string host_header = u.ipv6_literal ? "[" + u.host + "]" : u.host;
  if (u.port != (u.tls ? 443 : 80)) host_header += ":" + std::to_string(u.port);

  std::string &w = r.wire;
  w.reserve(512 + (post ? std::strlen(in.post) : 0));
  w += post ? "POST " : "GET ";
  w += u.target;
  w += " HTTP/1.1\r\nHost: ";
  w += host_header;
  w += "\r\n";
  auto header = [&w](const char *name, const std::string &value) {
    w += name;
    w += ": ";
    w += value;
    w += "\r\n";
  };
  if (u.has_userinfo) header("Authorization", "Basic " + base64(u.user + ":" + u.password));
  header("User-Agent", in.user_agent ? in.user_agent : kDefaultUserAgent);
  if (in.accept) header("Accept", in.accept);
  if (in.encoding) header("Accept-Encoding", in.encoding);
  if (in.referrer) header("Referer", in.referrer);
  if (in.origin) header("Origin", in.origin);
  if (in.cookie) header("Cookie", in.cookie);
  if (in.cache_control) header("Cache-Control", in.cache_control);
  if (in.etag) header("If-None-Match", in.etag);
  if (in.ims) header("If-Modified-Since", http_date(static_cast<time_t>(in.ims)));
  if (in.content_type) header("Content-Type", in.content_type);
  if (post) header("Content-Length", std::to_string(std::strlen(in.post)));
  if (in.extra_header) {
    // Several header lines, separated by CRLF or LF; empty lines are skipped.
    const char *p = in.extra_header;
    while (*p) {
      const char *end = p + std::strcspn(p, "\r\n");
      if (end > p) {
        const char *colon = static_cast<const char *>(std::memchr(p, ':', static_cast<size_t>(end - p)));
        if (!colon || colon == p) {
          *why = "a line of extra_header is not \"Name: value\"";
          return false;
        }
        w.append(p, end);
        w += "\r\n";
      }
      p = end;
      if (*p == '\r' && p[1] == '\n') ++p;
      if (*p) ++p;
    }
  }
  w += "\r\n";
  if (post) w += in.post;

  std::string host_lower = u.host;
  for (char &ch : host_lower) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  std::string origin = std::string(u.tls ? "https://" : "http://") + (u.ipv6_literal ? "[" + host_lower + "]" : host_lower) +
                       ":" + std::to_string(u.port);
  r.key = origin;
  r.host = u.host;
  r.port = std::to_string(u.port);
  r.tls = u.tls;
  r.ipv6_literal = u.ipv6_literal;
  r.idempotent = !post;
  r.label = std::string(post ? "POST " : "GET ") + origin + u.target.substr(0, u.target.find('?'));
  r.conn_ms = timeout_ms(in.conn_timeout, kDefaultPhaseMs);
  r.header_ms = timeout_ms(in.header_timeout, kDefaultPhaseMs);
  r.body_ms = timeout_ms(in.body_timeout, kDefaultPhaseMs);
  r.total_ms = timeout_ms(in.total_timeout, kDefaultTotalMs);
  r.on_data = in.on_data;
  r.on_status = in.on_status;
  r.on_close = in.on_close;
  r.cbdata = cbdata;
  return true;
}

// Keeps the libraries that hold the callbacks loaded until the request ends:
// a module unloaded (core_close) while its request is in flight would
// otherwise be called back at an address that is no longer mapped. Such a
// request still ends normally, after on_cleanup; the module's stale
// mesibo_module_t pointer is harmless (the exported functions check it).
void pin_callbacks(HttpReq &r) {
  const void *fns[] = {reinterpret_cast<const void *>(r.on_data), reinterpret_cast<const void *>(r.on_status),
                       reinterpret_cast<const void *>(r.on_close)};
  const void *bases[3] = {nullptr, nullptr, nullptr};
  for (const void *fn : fns)
    if (fn) {
      r.data_site.module = r.status_site.module = r.close_site.module = crash_trace_library_of(fn);
      break;
    }
  for (int i = 0; i < 3; ++i) {
    Dl_info info;
    if (!fns[i] || !dladdr(fns[i], &info) || !info.dli_fname || !info.dli_fname[0]) continue;
    if (std::find(bases, bases + 3, info.dli_fbase) != bases + 3) continue;
    bases[i] = info.dli_fbase;
    r.pinned[i] = dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD);
  }
}

// Owns a request on its way to the loop thread, so that one dropped from the
// queue (the loop detached) is freed rather than leaked.
struct PostedReq {
  explicit PostedReq(HttpReq *r) : req(r) {}
  ~PostedReq() { delete req; }
  HttpReq *req;
};

}  // namespace

// Sets the extra CA bundle that HTTPS requests trust (empty: none). Checked
// here, so that a bad file stops the server at start-up rather than failing
// every request later; the TLS context is rebuilt on the loop thread.
bool http_set_ca_file(const std::string &path, std::string *why) {
  if (!path.empty()) {
    ClearOpenSslErrors clear;
    SSL_CTX *probe = SSL_CTX_new(TLS_client_method());
    bool ok = probe && SSL_CTX_load_verify_locations(probe, path.c_str(), nullptr) == 1;
    if (!ok && why) *why = "cannot read CA certificates (PEM) from " + path + ": " + openssl_error("no certificates");
    if (probe) SSL_CTX_free(probe);
    if (!ok) return false;
  }
  TlsSettings &s = tls_settings();
  std::lock_guard<std::mutex> lock(s.mu);
  if (s.ca_file != path) {
    s.ca_file = path;
    ++s.generation;
  }
  return true;
}

std::string http_ca_file() {
  TlsSettings &s = tls_settings();
  std::lock_guard<std::mutex> lock(s.mu);
  return s.ca_file;
}

void load_system_cas(SSL_CTX *ctx) {
  SSL_CTX_set_default_verify_paths(ctx);
  if (std::getenv(X509_get_default_cert_file_env()) || std::getenv(X509_get_default_cert_dir_env())) return;
  if (file_exists(X509_get_default_cert_file()) || file_exists(X509_get_default_cert_dir())) return;
  static const char *const kBundles[] = {"/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt",
                                         "/etc/ssl/ca-bundle.pem", "/etc/ssl/cert.pem",
                                         "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem"};
  for (const char *b : kBundles)
    if (file_exists(b) && SSL_CTX_load_verify_locations(ctx, b, nullptr) == 1) return;
}

}  // namespace sb

SB_API mesibo_int_t mesibo_util_http(mesibo_http_t *req, void *cbdata) {
  if (!req || !req->url || !sb::io_loop()) return MESIBO_RESULT_FAIL;
  auto r = std::make_unique<sb::HttpReq>();
  const char *why = nullptr;
  if (!sb::prepare(*req, cbdata, *r, &why)) {
    sb::io_report("http: request refused: %s", why);
    return MESIBO_RESULT_FAIL;
  }
  sb::pin_callbacks(*r);
  auto posted = std::make_shared<sb::PostedReq>(r.release());
  bool ok = sb::io_post([posted] {
    sb::HttpReq *rq = posted->req;
    posted->req = nullptr;
    sb::req_start(rq);
  });
  return ok ? MESIBO_RESULT_OK : MESIBO_RESULT_FAIL;
}
