// fcgi_client: mesibo_util_fcgi, a FastCGI client (role RESPONDER) on the
// loop from io.h.
//
// Life cycle of one request, libuv style:
//   start    mesibo_util_fcgi encodes the whole request (BEGIN_REQUEST,
//            PARAMS, STDIN) in the caller's thread, so nothing of the
//            caller's is read afterwards, and io_posts fcgi_start.
//   connect  an idle kept-alive connection to host:port, or uv_getaddrinfo
//            then uv_tcp_connect to each address in turn.
//   callbacks  STDOUT bytes are gathered (STDERR lines go to the log), and
//            the module gets exactly one call: cb(cbdata, MESIBO_RESULT_OK,
//            stdout, n) after FCGI_END_REQUEST, or cb(cbdata,
//            MESIBO_RESULT_FAIL, text, strlen(text)) on a failure (the errno
//            goes to the log). mesibo's modules send what each call brings
//            as a message, so one response must be one call, and never an
//            empty one after the data.
//   close    the connection goes back to the pool (keepalive) or is closed.
//   free     when the request's timer is closed and no DNS lookup is in
//            flight.
// Requests and connections are separate objects: a request that times out
// hands its connection to uv_close and is freed on its own schedule, and a
// connection outlives requests when kept alive.
#include <dlfcn.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "crash_trace.h"
#include "io.h"
#include "module.h"

#define SB_API extern "C" __attribute__((visibility("default")))

// The largest body accepted: the request is copied whole, and written with
// one uv_write whose length is an unsigned int.
constexpr uint64_t kMaxBody = 1ull << 30;
// The largest response (stdout) accepted: it reaches the module in one call,
// so it is held in memory until FCGI_END_REQUEST.
constexpr size_t kMaxOutput = 16u << 20;
// What SERVER_SOFTWARE says, as the HTTP client's User-Agent does.
constexpr const char *kServerSoftware = "switchboard/0.1";

namespace sb {
namespace {

// Record types and constants of the FastCGI 1.0 specification.
constexpr unsigned char FCGI_VERSION_1 = 1;
constexpr unsigned char FCGI_BEGIN_REQUEST = 1;
constexpr unsigned char FCGI_END_REQUEST = 3;
constexpr unsigned char FCGI_PARAMS = 4;
constexpr unsigned char FCGI_STDIN = 5;
constexpr unsigned char FCGI_STDOUT = 6;
constexpr unsigned char FCGI_STDERR = 7;
constexpr unsigned char FCGI_RESPONDER = 1;
constexpr unsigned char FCGI_KEEP_CONN = 1;
constexpr unsigned char FCGI_REQUEST_COMPLETE = 0;
constexpr unsigned char FCGI_OVERLOADED = 2;
constexpr size_t kHeaderLen = 8;
constexpr size_t kMaxContent = 65535;
// One request at a time per connection, so every request is id 1.
constexpr unsigned kRequestId = 1;

constexpr uint64_t kDefaultTimeoutMs = 30000;
// An idle kept-alive connection pins a worker of the application server
// (php-fpm serves one connection per worker), so idle ones are few and short.
constexpr uint64_t kIdleMs = 10000;
constexpr size_t kMaxIdlePerHost = 8;
// A stderr line longer than this is logged in pieces.
constexpr size_t kMaxStderrLine = 4096;

// ---------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------

void put_record(std::string &out, unsigned char type, const char *content, size_t len) {
  const unsigned char padding = static_cast<unsigned char>((8 - len % 8) % 8);
  const unsigned char h[kHeaderLen] = {FCGI_VERSION_1, type, 0, kRequestId, static_cast<unsigned char>(len >> 8),
                                       static_cast<unsigned char>(len & 0xFF), padding, 0};
  out.append(reinterpret_cast<const char *>(h), kHeaderLen);
  out.append(content, len);
  out.append(padding, '\0');
}

// A stream (PARAMS, STDIN) as records of at most kMaxContent bytes, then the
// empty record that ends it.
void put_stream(std::string &out, unsigned char type, const char *data, size_t len) {
  for (size_t off = 0; off < len; off += kMaxContent) put_record(out, type, data + off, std::min(kMaxContent, len - off));
  put_record(out, type, nullptr, 0);
}

void put_length(std::string &out, size_t n) {
  if (n < 128) {
    out.push_back(static_cast<char>(n));
    return;
  }
  const unsigned char b[4] = {static_cast<unsigned char>(0x80 | (n >> 24 & 0x7F)), static_cast<unsigned char>(n >> 16),
                              static_cast<unsigned char>(n >> 8), static_cast<unsigned char>(n)};
  out.append(reinterpret_cast<const char *>(b), 4);
}

void put_pair(std::string &out, const char *name, const char *value) {
  const size_t nl = std::strlen(name), vl = std::strlen(value);
  put_length(out, nl);
  put_length(out, vl);
  out.append(name, nl);
  out.append(value, vl);
}

// The params in the order of mesibo_fcgi_t's fields.
struct Param {
  const char *name;
  char *mesibo_fcgi_t::*field;
};
const Param kParams[] = {
    {"USER", &mesibo_fcgi_t::USER},
    {"SCRIPT_FILENAME", &mesibo_fcgi_t::SCRIPT_FILENAME},
    {"QUERY_STRING", &mesibo_fcgi_t::QUERY_STRING},
    {"CONTENT_TYPE", &mesibo_fcgi_t::CONTENT_TYPE},
    {"SCRIPT_NAME", &mesibo_fcgi_t::SCRIPT_NAME},
    {"REQUEST_URI", &mesibo_fcgi_t::REQUEST_URI},
    {"DOCUMENT_URI", &mesibo_fcgi_t::DOCUMENT_URI},
    {"DOCUMENT_ROOT", &mesibo_fcgi_t::DOCUMENT_ROOT},
    {"SERVER_PROTOCOL", &mesibo_fcgi_t::SERVER_PROTOCOL},
    {"REQUEST_SCHEME", &mesibo_fcgi_t::REQUEST_SCHEME},
    {"REMOTE_ADDR", &mesibo_fcgi_t::REMOTE_ADDR},
    {"REMOTE_PORT", &mesibo_fcgi_t::REMOTE_PORT},
    {"SERVER_ADDR", &mesibo_fcgi_t::SERVER_ADDR},
    {"SERVER_PORT", &mesibo_fcgi_t::SERVER_PORT},
    {"SERVER_NAME", &mesibo_fcgi_t::SERVER_NAME},
    {"HTTP_HOST", &mesibo_fcgi_t::HTTP_HOST},
    {"HTTP_CONNECTION", &mesibo_fcgi_t::HTTP_CONNECTION},
    {"HTTP_CACHE_CONTROL", &mesibo_fcgi_t::HTTP_CACHE_CONTROL},
    {"HTTP_UPGRADE_INSECURE_REQUESTS", &mesibo_fcgi_t::HTTP_UPGRADE_INSECURE_REQUESTS},
    {"HTTP_USER_AGENT", &mesibo_fcgi_t::HTTP_USER_AGENT},
    {"HTTP_ACCEPT", &mesibo_fcgi_t::HTTP_ACCEPT},
    {"HTTP_ACCEPT_ENCODING", &mesibo_fcgi_t::HTTP_ACCEPT_ENCODING},
    {"HTTP_ACCEPT_LANGUAGE", &mesibo_fcgi_t::HTTP_ACCEPT_LANGUAGE},
};

bool ends_with(const std::string &s, const std::string &tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// The CGI variables responders rely on that the module left NULL, derived
// from the ones it set, as a web server would send them. php-fpm finds the
// script only by SCRIPT_FILENAME ("Primary script unknown" without it) and
// answers nothing without REQUEST_METHOD; mesibo's FastCGI module sets only
// DOCUMENT_ROOT and SCRIPT_NAME. A field the module set is sent as it is.
std::vector<std::pair<const char *, std::string>> derived_params(const mesibo_fcgi_t &req) {
  std::vector<std::pair<const char *, std::string>> out;
  std::string root = req.DOCUMENT_ROOT ? req.DOCUMENT_ROOT : "";  // without trailing slashes
  while (!root.empty() && root.back() == '/') root.pop_back();
  std::string name = req.SCRIPT_NAME ? req.SCRIPT_NAME : "";
  std::string filename = req.SCRIPT_FILENAME ? req.SCRIPT_FILENAME : "";
  if (!req.SCRIPT_FILENAME && req.SCRIPT_NAME && req.DOCUMENT_ROOT) {
    // One slash between them, whichever side has it (root = /srv/www/, script = test.php).
    filename = root + (name.empty() || name[0] != '/' ? "/" : "") + name;
    out.emplace_back("SCRIPT_FILENAME", filename);
  }
  if (!req.SCRIPT_NAME && !filename.empty()) {
    // The part of the file under DOCUMENT_ROOT, or its base name.
    if (!root.empty() && filename.compare(0, root.size() + 1, root + "/") == 0) name = filename.substr(root.size());
    else name = filename.substr(filename.rfind('/') == std::string::npos ? 0 : filename.rfind('/'));
    if (name.empty() || name[0] != '/') name = "/" + name;
    out.emplace_back("SCRIPT_NAME", name);
  }
  if (!req.DOCUMENT_ROOT && !name.empty() && name[0] == '/' && ends_with(filename, name) && filename.size() > name.size())
    out.emplace_back("DOCUMENT_ROOT", filename.substr(0, filename.size() - name.size()));
  const std::string uri_path = name.empty() || name[0] == '/' ? name : "/" + name;
  const std::string query = req.QUERY_STRING ? req.QUERY_STRING : "";
  if (!req.QUERY_STRING) out.emplace_back("QUERY_STRING", "");
  if (!req.REQUEST_URI && !uri_path.empty()) out.emplace_back("REQUEST_URI", query.empty() ? uri_path : uri_path + "?" + query);
  if (!req.DOCUMENT_URI && !uri_path.empty()) out.emplace_back("DOCUMENT_URI", uri_path);
  if (!req.CONTENT_TYPE && req.body) out.emplace_back("CONTENT_TYPE", "application/octet-stream");
  if (!req.SERVER_PROTOCOL) out.emplace_back("SERVER_PROTOCOL", "HTTP/1.1");
  if (!req.REQUEST_SCHEME) out.emplace_back("REQUEST_SCHEME", "http");
  // The request comes from the server itself, on this machine.
  if (!req.REMOTE_ADDR) out.emplace_back("REMOTE_ADDR", "127.0.0.1");
  if (!req.SERVER_NAME) out.emplace_back("SERVER_NAME", "localhost");
  out.emplace_back("SERVER_SOFTWARE", kServerSoftware);
  out.emplace_back("GATEWAY_INTERFACE", "CGI/1.1");
  // mesibo_fcgi_t has no field for these two: they follow from the body.
  out.emplace_back("REQUEST_METHOD", req.body ? "POST" : "GET");
  if (req.body) out.emplace_back("CONTENT_LENGTH", std::to_string(req.bodylen));
  // PHP built with --enable-force-cgi-redirect refuses to run without it.
  out.emplace_back("REDIRECT_STATUS", "200");
  return out;
}

// The whole request as bytes on the wire: the module's fields, then the
// ones derived from them.
std::string encode_request(const mesibo_fcgi_t &req, bool keepalive) {
  std::string out;
  const char begin[8] = {0, static_cast<char>(FCGI_RESPONDER), static_cast<char>(keepalive ? FCGI_KEEP_CONN : 0), 0, 0, 0, 0, 0};
  put_record(out, FCGI_BEGIN_REQUEST, begin, sizeof begin);

  std::string params;
  for (const Param &p : kParams)
    if (req.*p.field) put_pair(params, p.name, req.*p.field);
  for (const auto &d : derived_params(req)) put_pair(params, d.first, d.second.c_str());
  put_stream(out, FCGI_PARAMS, params.data(), params.size());

  put_stream(out, FCGI_STDIN, req.body, req.body ? static_cast<size_t>(req.bodylen) : 0);
  return out;
}

// ---------------------------------------------------------------------------
// Requests and connections
// ---------------------------------------------------------------------------

struct FcgiConn;

struct FcgiRequest {
  std::shared_ptr<const std::string> wire;
  std::string host, port, key;  // key: "host:port", the pool's index
  bool keepalive = false;
  uint64_t timeout_ms = 0;
  mesibo_fcgi_ondata_t cb = nullptr;
  void *cbdata = nullptr;
  void *module_dl = nullptr;  // keeps cb's library mapped (see pin_module)
  CallSite site{"a module", "a FastCGI callback"};  // cb's library file, for crash traces

  uv_timer_t timer{};
  bool timer_open = false;
  uv_getaddrinfo_t gai{};
  bool gai_pending = false;
  addrinfo *addrs = nullptr;
  addrinfo *next_addr = nullptr;
  int last_connect_error = 0;

  FcgiConn *conn = nullptr;
  bool done = false;     // the callback ran, or is about to
  bool retried = false;  // already retried once after a stale kept-alive connection
  std::string stderr_line;
  std::string out;  // stdout so far, handed over whole at FCGI_END_REQUEST

  ~FcgiRequest() {
    if (addrs) uv_freeaddrinfo(addrs);
    if (module_dl) dlclose(module_dl);
  }
};

struct FcgiConn {
  uv_tcp_t tcp{};
  uv_timer_t idle{};
  uv_connect_t connect{};
  std::string key;
  FcgiRequest *req = nullptr;  // the request it serves; null when idle or closing
  std::string in;              // received bytes not yet parsed into records
  size_t received = 0;         // bytes received for the current request
  bool reused = false;         // served an earlier request
  bool pooled = false;
  bool closing = false;
  int open_handles = 0;
};

struct WriteOp {
  uv_write_t w{};
  std::shared_ptr<const std::string> data;
  FcgiConn *conn = nullptr;
};

std::unordered_map<std::string, std::vector<FcgiConn *>> &idle_pool() {
  static std::unordered_map<std::string, std::vector<FcgiConn *>> pool;
  return pool;
}

void conn_send(FcgiConn *conn, FcgiRequest *req);
void resolve(FcgiRequest *req);

uint64_t timeout_ms() {
  // Read on the loop thread, where Node's process.env writes happen too.
  const char *env = std::getenv("SWITCHBOARD_FCGI_TIMEOUT_MS");
  if (!env || !*env) return kDefaultTimeoutMs;
  char *end = nullptr;
  unsigned long long v = std::strtoull(env, &end, 10);
  return *end == '\0' && v > 0 ? v : kDefaultTimeoutMs;
}

void log_line(const std::string &key, const char *what, const char *text, size_t len) {
  io_report("fcgi: %s: %s%.*s", key.c_str(), what, static_cast<int>(len), text);
}

// A module unloaded at shutdown (on_cleanup, then dlclose) may still have a
// request in flight. A reference to the library that holds cb keeps its code
// mapped until the request is freed, as socket_client.cc does.
void *pin_module(mesibo_fcgi_ondata_t cb) {
  Dl_info di;
  if (!cb || !dladdr(reinterpret_cast<void *>(cb), &di) || !di.dli_fname) return nullptr;
  return dlopen(di.dli_fname, RTLD_NOW | RTLD_NOLOAD);
}

void request_maybe_free(FcgiRequest *req) {
  if (req->timer_open || req->gai_pending) return;
  delete req;
}

void on_timer_closed(uv_handle_t *h) {
  FcgiRequest *req = static_cast<FcgiRequest *>(h->data);
  req->timer_open = false;
  request_maybe_free(req);
}

void on_conn_handle_closed(uv_handle_t *h) {
  FcgiConn *conn = static_cast<FcgiConn *>(h->data);
  if (--conn->open_handles == 0) delete conn;
}

void conn_close(FcgiConn *conn) {
  if (conn->closing) return;
  conn->closing = true;
  conn->req = nullptr;
  if (conn->pooled) {
    auto &list = idle_pool()[conn->key];
    for (size_t i = 0; i < list.size(); ++i)
      if (list[i] == conn) {
        list.erase(list.begin() + static_cast<long>(i));
        break;
      }
    if (list.empty()) idle_pool().erase(conn->key);
    conn->pooled = false;
  }
  uv_close(reinterpret_cast<uv_handle_t *>(&conn->tcp), on_conn_handle_closed);
  uv_close(reinterpret_cast<uv_handle_t *>(&conn->idle), on_conn_handle_closed);
}

void on_idle_timeout(uv_timer_t *t) { conn_close(static_cast<FcgiConn *>(t->data)); }

void pool_put(FcgiConn *conn) {
  auto &list = idle_pool()[conn->key];
  if (list.size() >= kMaxIdlePerHost) {
    conn_close(conn);
    return;
  }
  conn->req = nullptr;
  conn->pooled = true;
  conn->reused = true;
  conn->in.clear();
  list.push_back(conn);
  // An idle connection must not keep the process alive.
  uv_unref(reinterpret_cast<uv_handle_t *>(&conn->tcp));
  uv_timer_start(&conn->idle, on_idle_timeout, kIdleMs, 0);
}

FcgiConn *pool_take(const std::string &key) {
  auto it = idle_pool().find(key);
  if (it == idle_pool().end()) return nullptr;
  FcgiConn *conn = it->second.back();
  it->second.pop_back();
  if (it->second.empty()) idle_pool().erase(it);
  conn->pooled = false;
  uv_timer_stop(&conn->idle);
  uv_ref(reinterpret_cast<uv_handle_t *>(&conn->tcp));
  return conn;
}

void flush_stderr(FcgiRequest *req) {
  if (req->stderr_line.empty()) return;
  log_line(req->key, "stderr: ", req->stderr_line.data(), req->stderr_line.size());
  req->stderr_line.clear();
}

// The end of a request: the timer goes, the connection is released. The
// final callback (if any) is the caller's to make, after this.
void request_end(FcgiRequest *req, bool reuse_conn) {
  req->done = true;
  flush_stderr(req);
  if (FcgiConn *conn = req->conn) {
    req->conn = nullptr;
    if (reuse_conn) pool_put(conn);
    else conn_close(conn);
  }
  uv_timer_stop(&req->timer);
  uv_close(reinterpret_cast<uv_handle_t *>(&req->timer), on_timer_closed);
}

// `code` is a negative errno: it goes to the log and the description, and
// the module gets MESIBO_RESULT_FAIL, the one failure result modules check
// for (mesibo's FastCGI module tests result == MESIBO_RESULT_FAIL).
void request_fail(FcgiRequest *req, int code, const std::string &why) {
  if (req->done) return;
  const std::string logged = why + " (" + uv_err_name(code) + ")";
  const std::string text = req->key + ": " + logged;
  log_line(req->key, "", logged.data(), logged.size());
  request_end(req, false);
  std::string().swap(req->out);
  if (!req->cb) return;
  InModule in(req->site);
  req->cb(req->cbdata, MESIBO_RESULT_FAIL, text.c_str(), static_cast<mesibo_int_t>(text.size()));
}

void request_succeed(FcgiRequest *req, bool reuse_conn) {
  request_end(req, reuse_conn);
  if (req->cb) {
    InModule in(req->site);
    req->cb(req->cbdata, MESIBO_RESULT_OK, req->out.c_str(), static_cast<mesibo_int_t>(req->out.size()));
  }
  std::string().swap(req->out);
}

// A libuv status as the -errno the log and the description name: system
// errors already are -errno on Unix; the end of the stream reads as a reset.
int as_errno(int status) {
  if (status == UV_EOF) return -ECONNRESET;
  return status;
}

void on_timeout(uv_timer_t *t) {
  FcgiRequest *req = static_cast<FcgiRequest *>(t->data);
  request_fail(req, -ETIMEDOUT, "no complete response within " + std::to_string(req->timeout_ms) + " ms");
}

// A connection broke while serving `req`. A kept-alive connection the
// application closed while it was idle shows this way before any byte of the
// answer arrived; then the request is sent once more on a new connection.
void conn_failed(FcgiConn *conn, int status, const char *what) {
  FcgiRequest *req = conn->req;
  const bool stale = conn->reused && conn->received == 0;
  req->conn = nullptr;
  conn_close(conn);
  if (stale && !req->retried) {
    req->retried = true;
    resolve(req);
    return;
  }
  std::string why = std::string(what) + uv_strerror(status);
  if (status == UV_EOF) why = std::string(what) + "the application closed the connection before FCGI_END_REQUEST";
  request_fail(req, as_errno(status), why);
}

void protocol_error(FcgiConn *conn, const std::string &why) {
  FcgiRequest *req = conn->req;
  request_fail(req, -EPROTO, "malformed response: " + why);
}

void on_stderr(FcgiRequest *req, const char *p, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    if (p[i] == '\n' || req->stderr_line.size() >= kMaxStderrLine) {
      if (!req->stderr_line.empty() && req->stderr_line.back() == '\r') req->stderr_line.pop_back();
      flush_stderr(req);
      if (p[i] == '\n') continue;
    }
    req->stderr_line.push_back(p[i]);
  }
}

// Parses the complete records in conn->in, and stops as soon as the request
// has ended: conn is closed or pooled then, and its buffer no longer ours.
void parse_records(FcgiConn *conn) {
  size_t off = 0;
  while (conn->in.size() - off >= kHeaderLen) {
    const unsigned char *h = reinterpret_cast<const unsigned char *>(conn->in.data() + off);
    if (h[0] != FCGI_VERSION_1) {
      protocol_error(conn, "record version " + std::to_string(h[0]) + ", expected 1");
      return;
    }
    const unsigned type = h[1], id = h[2] << 8 | h[3];
    const size_t len = static_cast<size_t>(h[4] << 8 | h[5]), total = kHeaderLen + len + h[6];
    if (conn->in.size() - off < total) break;
    const char *content = conn->in.data() + off + kHeaderLen;
    off += total;
    FcgiRequest *req = conn->req;
    if (id == 0) continue;  // a management record (GET_VALUES_RESULT, UNKNOWN_TYPE): not ours
    if (id != kRequestId) {
      protocol_error(conn, "record for request " + std::to_string(id) + ", expected " + std::to_string(kRequestId));
      return;
    }
    switch (type) {
      case FCGI_STDOUT:
        if (req->out.size() + len > kMaxOutput) {
          request_fail(req, -EMSGSIZE, "the response is larger than " + std::to_string(kMaxOutput >> 20) + " MiB");
          return;
        }
        req->out.append(content, len);
        break;
      case FCGI_STDERR: on_stderr(req, content, len); break;
      case FCGI_END_REQUEST: {
        if (len < 8) {
          protocol_error(conn, "FCGI_END_REQUEST with " + std::to_string(len) + " bytes, expected 8");
          return;
        }
        const unsigned char *b = reinterpret_cast<const unsigned char *>(content);
        const uint32_t app_status = static_cast<uint32_t>(b[0]) << 24 | b[1] << 16 | b[2] << 8 | b[3];
        const unsigned protocol_status = b[4];
        if (protocol_status == FCGI_OVERLOADED) {
          request_fail(req, -EBUSY, "the application is overloaded (FCGI_OVERLOADED)");
          return;
        }
        if (protocol_status != FCGI_REQUEST_COMPLETE) {
          request_fail(req, -EPROTO, "the application refused the request (protocol status " + std::to_string(protocol_status) + ")");
          return;
        }
        flush_stderr(req);
        if (app_status != 0) {
          const std::string what = "the application ended with status " + std::to_string(app_status);
          log_line(req->key, "", what.data(), what.size());
        }
        // Bytes after the end would belong to no request: such a
        // connection is not reused.
        request_succeed(req, req->keepalive && off == conn->in.size());
        return;
      }
      default:
        protocol_error(conn, "unexpected record type " + std::to_string(type));
        return;
    }
  }
  conn->in.erase(0, off);
}

// libuv hands each buffer to on_read before asking for the next one, and all
// of this runs on the loop thread, so one buffer serves every connection.
void on_alloc(uv_handle_t *, size_t, uv_buf_t *buf) {
  static char read_buf[64 * 1024];
  *buf = uv_buf_init(read_buf, sizeof read_buf);
}

void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  FcgiConn *conn = static_cast<FcgiConn *>(s->data);
  if (conn->closing) return;
  if (!conn->req) {
    // Idle: the application closed it, or sent what no request asked for.
    if (nread != 0) conn_close(conn);
  } else if (nread < 0) {
    conn_failed(conn, static_cast<int>(nread), "");
  } else if (nread > 0) {
    conn->received += static_cast<size_t>(nread);
    conn->in.append(buf->base, static_cast<size_t>(nread));
    parse_records(conn);
  }
}

void on_written(uv_write_t *w, int status) {
  WriteOp *op = static_cast<WriteOp *>(w->data);
  FcgiConn *conn = op->conn;
  delete op;
  if (status < 0 && !conn->closing && conn->req) conn_failed(conn, status, "sending the request: ");
}

void conn_send(FcgiConn *conn, FcgiRequest *req) {
  conn->req = req;
  conn->received = 0;
  conn->in.clear();
  req->conn = conn;
  WriteOp *op = new WriteOp;
  op->data = req->wire;
  op->conn = conn;
  op->w.data = op;
  uv_buf_t b = uv_buf_init(const_cast<char *>(op->data->data()), static_cast<unsigned>(op->data->size()));
  int r = uv_write(&op->w, reinterpret_cast<uv_stream_t *>(&conn->tcp), &b, 1, on_written);
  if (r < 0) {
    delete op;
    conn_failed(conn, r, "sending the request: ");
  }
}

void connect_next(FcgiRequest *req);

void on_connected(uv_connect_t *c, int status) {
  FcgiConn *conn = static_cast<FcgiConn *>(c->data);
  FcgiRequest *req = conn->req;
  if (conn->closing || !req) return;  // the request ended meanwhile
  if (status < 0) {
    req->conn = nullptr;
    req->last_connect_error = status;
    conn_close(conn);
    connect_next(req);
    return;
  }
  uv_tcp_nodelay(&conn->tcp, 1);
  int r = uv_read_start(reinterpret_cast<uv_stream_t *>(&conn->tcp), on_alloc, on_read);
  if (r < 0) {
    conn_failed(conn, r, "");
    return;
  }
  conn_send(conn, req);
}

// Tries the next resolved address; fails with the last error when none is left.
void connect_next(FcgiRequest *req) {
  uv_loop_t *loop = io_loop();
  while (req->next_addr) {
    const addrinfo *a = req->next_addr;
    req->next_addr = a->ai_next;
    FcgiConn *conn = new FcgiConn;
    conn->key = req->key;
    conn->tcp.data = conn->idle.data = conn->connect.data = conn;
    uv_tcp_init(loop, &conn->tcp);
    uv_timer_init(loop, &conn->idle);
    uv_unref(reinterpret_cast<uv_handle_t *>(&conn->idle));
    conn->open_handles = 2;
    conn->req = req;
    req->conn = conn;
    int r = uv_tcp_connect(&conn->connect, &conn->tcp, a->ai_addr, on_connected);
    if (r == 0) return;
    req->conn = nullptr;
    req->last_connect_error = r;
    conn_close(conn);
  }
  const int err = req->last_connect_error ? req->last_connect_error : UV_EHOSTUNREACH;
  request_fail(req, as_errno(err), std::string("cannot connect: ") + uv_strerror(err));
}

void on_resolved(uv_getaddrinfo_t *g, int status, addrinfo *res) {
  FcgiRequest *req = static_cast<FcgiRequest *>(g->data);
  req->gai_pending = false;
  if (req->done) {
    if (res) uv_freeaddrinfo(res);
    request_maybe_free(req);
    return;
  }
  if (status < 0) {
    // Name-resolution codes (UV_EAI_*) are no errno; the text says which.
    request_fail(req, -EHOSTUNREACH, "cannot resolve " + req->host + ": " + uv_strerror(status));
    return;
  }
  if (req->addrs) uv_freeaddrinfo(req->addrs);
  req->addrs = res;
  req->next_addr = res;
  req->last_connect_error = 0;
  connect_next(req);
}

void resolve(FcgiRequest *req) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  req->gai.data = req;
  int r = uv_getaddrinfo(io_loop(), &req->gai, on_resolved, req->host.c_str(), req->port.c_str(), &hints);
  if (r < 0) {
    request_fail(req, -EHOSTUNREACH, "cannot resolve " + req->host + ": " + uv_strerror(r));
    return;
  }
  req->gai_pending = true;
}

// Loop thread: the request, copied, starts here.
void fcgi_start(FcgiRequest *req) {
  uv_loop_t *loop = io_loop();
  uv_timer_init(loop, &req->timer);
  req->timer.data = req;
  req->timer_open = true;
  req->timeout_ms = timeout_ms();
  uv_timer_start(&req->timer, on_timeout, req->timeout_ms, 0);
  if (req->keepalive)
    if (FcgiConn *conn = pool_take(req->key)) {
      conn_send(conn, req);
      return;
    }
  resolve(req);
}

}  // namespace
}  // namespace sb

// Contract (also in docs/modules.md, "FastCGI"):
// - Returns MESIBO_RESULT_OK when the request was copied and queued, and
//   MESIBO_RESULT_FAIL, with no callback, when req or host is NULL or empty,
//   port is outside 1..65535, body is NULL with a non-zero bodylen, bodylen
//   is above 1 GiB, or no event loop runs.
// - After MESIBO_RESULT_OK, exactly one call, after which cb never sees cbdata:
//   cb(cbdata, MESIBO_RESULT_OK, stdout, n) after FCGI_END_REQUEST, stdout
//   being everything the application wrote (its headers, a blank line, its
//   body; n may be 0 only when it wrote nothing; an application status other
//   than 0 is logged but still a success), or cb(cbdata, MESIBO_RESULT_FAIL,
//   text, n) on a failure, text being a NUL-terminated description that ends
//   with the errno's name: ECONNREFUSED, ETIMEDOUT (no complete response
//   within the timeout), ECONNRESET (the connection closed before
//   FCGI_END_REQUEST), EPROTO (a malformed response, or the application
//   refused the role), EBUSY (FCGI_OVERLOADED), EHOSTUNREACH (the host name
//   did not resolve), EMSGSIZE (stdout over 16 MiB), or another from the
//   socket. The same line goes to the log (io_report).
// - The value cb returns is ignored.
// - cb may be NULL: the request is sent and the response discarded.
SB_API mesibo_int_t mesibo_util_fcgi(mesibo_fcgi_t *req, const char *host, mesibo_int_t port, mesibo_int_t keepalive,
                                     mesibo_fcgi_ondata_t cb, void *cbdata) {
  if (!req || !host || !*host || port < 1 || port > 65535 || (!req->body && req->bodylen) || req->bodylen > kMaxBody)
    return MESIBO_RESULT_FAIL;
  if (!sb::io_loop()) return MESIBO_RESULT_FAIL;
  try {
    std::unique_ptr<sb::FcgiRequest> r(new sb::FcgiRequest);
    r->wire = std::make_shared<const std::string>(sb::encode_request(*req, keepalive != 0));
    r->host = host;
    r->port = std::to_string(port);
    r->key = r->host + ":" + r->port;
    r->keepalive = keepalive != 0;
    r->cb = cb;
    r->cbdata = cbdata;
    r->module_dl = sb::pin_module(cb);
    if (cb) r->site.module = sb::crash_trace_library_of(reinterpret_cast<const void *>(cb));
    // A request dropped unstarted (the loop detached at shutdown) is freed
    // with the closure.
    auto owned = std::make_shared<std::unique_ptr<sb::FcgiRequest>>(std::move(r));
    if (!sb::io_post([owned]() { sb::fcgi_start(owned->release()); })) return MESIBO_RESULT_FAIL;
    return MESIBO_RESULT_OK;
  } catch (...) {
    return MESIBO_RESULT_FAIL;
  }
}
