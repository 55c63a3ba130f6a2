// Client sockets for modules: mesibo_util_socket_connect, _write and _close.
//
// One Sock per connection, living on the loop from io.h. Its life cycle is
// the same as every client in cpp/: start (resolve, connect, TLS handshake,
// WebSocket upgrade) -> callbacks (on_connect, on_data, on_write) -> close
// (a close frame, close_notify, FIN) -> free (on_close, exactly once, last).
//
// Modules call the three functions from any thread. A handle is a number
// from an ever-increasing counter, never a pointer, and the table that maps
// it to its Sock is guarded by a mutex: a write or close for a handle that
// is gone finds nothing instead of freed memory. All other Sock state is
// touched on the loop thread only; calls from other threads are posted there
// with io_post.
//
// TLS is Node's OpenSSL over memory BIOs, so the loop does every read and
// write itself; the WebSocket framing is ws_frame.h.
#include <dlfcn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <uv.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "crash_trace.h"
#include "http_client.h"
#include "io.h"
#include "module.h"
#include "ws_frame.h"

#define SB_API extern "C" __attribute__((visibility("default")))

namespace sb {

namespace {

// on_close types. 0 is a normal close; a positive type is the code of a
// WebSocket close frame from the server other than 1000; negative types are
// errors. docs/modules.md lists them for module authors.
constexpr mesibo_int_t SOCK_CLOSED = 0;
constexpr mesibo_int_t SOCK_E_RESOLVE = -1;       // the host name did not resolve
constexpr mesibo_int_t SOCK_E_CONNECT = -2;       // no address accepted the TCP connection
constexpr mesibo_int_t SOCK_E_IO = -3;            // reading or writing failed (reset, broken pipe)
constexpr mesibo_int_t SOCK_E_TLS = -4;           // the TLS handshake or a TLS record failed
constexpr mesibo_int_t SOCK_E_VERIFY = -5;        // the certificate or host name did not verify
constexpr mesibo_int_t SOCK_E_WS_HANDSHAKE = -6;  // the server refused or botched the upgrade
constexpr mesibo_int_t SOCK_E_WS_PROTOCOL = -7;   // a malformed WebSocket frame from the server
constexpr mesibo_int_t SOCK_E_WS_ABNORMAL = -8;   // the connection ended without a close frame
constexpr mesibo_int_t SOCK_E_TIMEOUT = -9;       // not connected within kConnectTimeoutMs

constexpr uint64_t kConnectTimeoutMs = 30000;  // resolve + connect + TLS + upgrade
constexpr uint64_t kCloseTimeoutMs = 5000;     // waiting for a close reply or for writes to drain
constexpr unsigned kKeepAliveDelaySec = 60;
constexpr size_t kMaxWsMessage = 16 * 1024 * 1024;
const char kWsGuid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

enum State {
  S_NEW,            // created; sock_start not run yet
  S_RESOLVING,
  S_CONNECTING,
  S_TLS_HANDSHAKE,
  S_WS_HANDSHAKE,   // upgrade request sent, waiting for 101
  S_OPEN,
  S_WS_CLOSING,     // the module closed: our close frame is out, waiting for the server's
  S_ENDING,         // closing the handles; on_close when the last one is closed
};

struct Url {
  bool tls = false, ws = false;
  std::string host;  // without brackets
  std::string port;
  std::string path;  // WebSocket request target, "/" by default
  bool host_is_ip = false;
  bool default_port = false;
};

struct Sock {
  mesibo_int_t id = 0;
  std::string url_text;  // as the module gave it, for messages
  Url url;
  std::string protocols;  // Sec-WebSocket-Protocol offered; empty for none
  bool keepalive = false;
  bool verify = false;
  std::string ca_file;
  SSL_CTX *user_ctx = nullptr;  // the module's own context (a reference is held)
  mesibo_socket_onconnect_t on_connect = nullptr;
  mesibo_socket_onwrite_t on_write = nullptr;
  mesibo_socket_ondata_t on_data = nullptr;
  mesibo_socket_onclose_t on_close = nullptr;
  void *cbdata = nullptr;
  void *module_dl = nullptr;  // pins the module's library until on_close has run
  // What a crash trace names in each callback: that library's file.
  CallSite connect_site{"a module", "a socket on_connect callback"};
  CallSite write_site{"a module", "a socket on_write callback"};
  CallSite data_site{"a module", "a socket on_data callback"};
  CallSite close_site{"a module", "a socket on_close callback"};

  State state = S_NEW;
  mesibo_int_t close_type = SOCK_CLOSED;
  bool close_requested = false;  // by the module
  bool handles_closing = false;  // sock_close_handles ran

  uv_timer_t timer{};
  bool timer_open = false;
  uv_getaddrinfo_t gai{};
  bool resolving = false;
  std::vector<sockaddr_storage> addrs;
  size_t next_addr = 0;
  uv_tcp_t tcp{};
  bool tcp_open = false;
  uv_connect_t connect_req{};
  bool connecting = false;
  uv_shutdown_t shutdown_req{};
  bool shutting_down = false;
  int writes_in_flight = 0;
  bool user_unflushed = false;     // module bytes handed to the transport, on_write not yet called
  std::vector<std::string> pending;  // module bytes (WebSocket: whole frames) written before S_OPEN

  SSL *ssl = nullptr;
  BIO *wbio = nullptr;  // owned by ssl
  BIO *rbio = nullptr;  // owned by ssl

  std::string ws_accept;  // the Sec-WebSocket-Accept we expect
  std::string ws_response;
  WsParser parser;
};

struct WriteReq {
  uv_write_t req;
  Sock *s;
  std::string bytes;
};

// ---------------------------------------------------------------------------
// The handle table
// ---------------------------------------------------------------------------

struct Entry {
  Sock *s;
  bool writable;  // false once the module closed it or it began to end
};

struct Table {
  std::mutex mu;
  std::unordered_map<mesibo_int_t, Entry> map;
  mesibo_int_t next = 1;
};

Table &table() {
  static Table t;
  return t;
}

Sock *sock_find(mesibo_int_t id) {
  Table &t = table();
  std::lock_guard<std::mutex> lock(t.mu);
  auto it = t.map.find(id);
  return it == t.map.end() ? nullptr : it->second.s;
}

void sock_set_unwritable(Sock *s) {
  Table &t = table();
  std::lock_guard<std::mutex> lock(t.mu);
  auto it = t.map.find(s->id);
  if (it != t.map.end()) it->second.writable = false;
}

// ---------------------------------------------------------------------------
// URLs, TLS contexts, module pinning
// ---------------------------------------------------------------------------

bool parse_url(const char *text, Url &u) {
  std::string s(text);
  size_t sep = s.find("://");
  if (sep == std::string::npos) return false;
  std::string scheme = s.substr(0, sep);
  for (char &c : scheme) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  if (scheme == "tcp") {
  } else if (scheme == "ssl" || scheme == "tls") {
    u.tls = true;
  } else if (scheme == "ws") {
    u.ws = true;
  } else if (scheme == "wss") {
    u.ws = u.tls = true;
  } else {
    return false;
  }
  std::string rest = s.substr(sep + 3);
  size_t slash = rest.find_first_of("/?#");
  std::string authority = rest.substr(0, slash);
  std::string target = slash == std::string::npos ? "" : rest.substr(slash);
  if (authority.empty() || authority.find('@') != std::string::npos) return false;
  std::string port;
  if (authority[0] == '[') {
    size_t close = authority.find(']');
    if (close == std::string::npos) return false;
    u.host = authority.substr(1, close - 1);
    std::string after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after[0] != ':') return false;
      port = after.substr(1);
    }
  } else {
    size_t colon = authority.rfind(':');
    if (colon != std::string::npos && authority.find(':') != colon) return false;  // unbracketed IPv6
    u.host = authority.substr(0, colon);
    if (colon != std::string::npos) port = authority.substr(colon + 1);
  }
  if (u.host.empty()) return false;
  for (char c : u.host)
    if (static_cast<unsigned char>(c) <= ' ' || c == '/' || c == '\\') return false;
  if (port.empty()) {
    if (!u.ws) return false;  // tcp:// and ssl:// have no default port
    port = u.tls ? "443" : "80";
    u.default_port = true;
  }
  if (port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos) return false;
  long n = std::strtol(port.c_str(), nullptr, 10);
  if (n < 1 || n > 65535) return false;
  u.port = std::to_string(n);
  if (u.ws) {
    size_t hash = target.find('#');
    if (hash != std::string::npos) target.resize(hash);
    if (target.empty() || target[0] == '?') target.insert(0, "/");
    for (char c : target)
      if (static_cast<unsigned char>(c) <= ' ' || c == 0x7f) return false;
    u.path = target;
  } else if (!target.empty() && target != "/") {
    return false;
  }
  unsigned char buf[sizeof(in6_addr)];
  u.host_is_ip = uv_inet_pton(AF_INET, u.host.c_str(), buf) == 0 || uv_inet_pton(AF_INET6, u.host.c_str(), buf) == 0;
  return true;
}

// One client context per CA file (normally one per process), made on first
// use: the system's trust store plus the extra CA file.
SSL_CTX *shared_ctx(const std::string &ca_file) {
  // Loop thread only. Never destroyed: contexts live as long as the process,
  // and a map torn down at exit would orphan them.
  static auto &contexts = *new std::map<std::string, SSL_CTX *>;
  auto it = contexts.find(ca_file);
  if (it != contexts.end()) return it->second;
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  if (!ctx) return nullptr;
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  load_system_cas(ctx);
  // A CA file that does not load trusts nothing more: verification then
  // fails with SOCK_E_VERIFY, which is the safe outcome.
  if (!ca_file.empty() && SSL_CTX_load_verify_locations(ctx, ca_file.c_str(), nullptr) != 1)
    io_report("socket: cannot read CA certificates (PEM) from %s (http_ca_file or SWITCHBOARD_CA_FILE)", ca_file.c_str());
  ERR_clear_error();
  contexts.emplace(ca_file, ctx);
  return ctx;
}

// The extra CA file trusted besides the system's: the server's http_ca_file
// setting, else SWITCHBOARD_CA_FILE; read at each connect.
std::string extra_ca_file() {
  std::string f = http_ca_file();
  if (!f.empty()) return f;
  const char *v = std::getenv("SWITCHBOARD_CA_FILE");
  return v ? v : "";
}

// A module closing its sockets in on_cleanup gets on_close after the server
// has unloaded it. Holding a reference to the library that holds the
// callbacks keeps their code mapped until then.
const void *callback_of(const mesibo_socket_t *req) {
  if (req->on_close) return reinterpret_cast<const void *>(req->on_close);
  if (req->on_data) return reinterpret_cast<const void *>(req->on_data);
  if (req->on_connect) return reinterpret_cast<const void *>(req->on_connect);
  if (req->on_write) return reinterpret_cast<const void *>(req->on_write);
  return nullptr;
}

void *pin_module(const mesibo_socket_t *req) {
  const void *fn = callback_of(req);
  Dl_info di;
  if (!fn || !dladdr(fn, &di) || !di.dli_fname) return nullptr;
  return dlopen(di.dli_fname, RTLD_NOW | RTLD_NOLOAD);
}

// The newest OpenSSL error on this thread as text, or `fallback`.
std::string tls_error(const char *fallback) {
  char buf[256];
  unsigned long e = ERR_peek_last_error();
  if (!e) return fallback;
  ERR_error_string_n(e, buf, sizeof buf);
  return buf;
}

std::string base64(const unsigned char *data, size_t len) {
  std::string out(4 * ((len + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char *>(&out[0]), data, static_cast<int>(len));
  out.resize(n > 0 ? static_cast<size_t>(n) : 0);
  return out;
}

// ---------------------------------------------------------------------------
// Life cycle: end and free
// ---------------------------------------------------------------------------

uv_stream_t *stream(Sock *s) { return reinterpret_cast<uv_stream_t *>(&s->tcp); }

void sock_free(Sock *s) {
  {
    Table &t = table();
    std::lock_guard<std::mutex> lock(t.mu);
    t.map.erase(s->id);
  }
  if (s->on_close) {
    InModule in(s->close_site);
    s->on_close(s->cbdata, s->close_type);
  }
  if (s->ssl) SSL_free(s->ssl);
  if (s->user_ctx) SSL_CTX_free(s->user_ctx);
  ERR_clear_error();
  if (s->module_dl) dlclose(s->module_dl);
  delete s;
}

// Frees the Sock once nothing of it is left on the loop.
void sock_maybe_free(Sock *s) {
  if (s->state != S_ENDING || !s->handles_closing) return;
  if (s->timer_open || s->tcp_open || s->resolving || s->connecting || s->shutting_down || s->writes_in_flight) return;
  sock_free(s);
}

void on_handle_closed(uv_handle_t *h) {
  Sock *s = static_cast<Sock *>(h->data);
  if (h == reinterpret_cast<uv_handle_t *>(&s->timer)) s->timer_open = false;
  else s->tcp_open = false;
  sock_maybe_free(s);
}

void sock_close_handles(Sock *s) {
  s->handles_closing = true;
  if (s->timer_open && !uv_is_closing(reinterpret_cast<uv_handle_t *>(&s->timer)))
    uv_close(reinterpret_cast<uv_handle_t *>(&s->timer), on_handle_closed);
  if (s->tcp_open && !uv_is_closing(reinterpret_cast<uv_handle_t *>(&s->tcp)))
    uv_close(reinterpret_cast<uv_handle_t *>(&s->tcp), on_handle_closed);
  if (s->resolving) uv_cancel(reinterpret_cast<uv_req_t *>(&s->gai));
  if (s->timer_open || s->tcp_open || s->resolving || s->connecting || s->shutting_down || s->writes_in_flight) return;
  // Nothing of it was ever on the loop (closed before it started): free it
  // on the next turn, so on_close never runs inside the call that closed it.
  mesibo_int_t id = s->id;
  if (!io_post([id] {
        if (Sock *found = sock_find(id)) sock_free(found);
      }))
    sock_free(s);
}

void on_end_timeout(uv_timer_t *t) { sock_close_handles(static_cast<Sock *>(t->data)); }

void on_shutdown(uv_shutdown_t *req, int) {
  Sock *s = static_cast<Sock *>(req->data);
  s->shutting_down = false;
  sock_close_handles(s);
}

void flush_tls(Sock *s);

// Ends the connection with on_close(type) to come. Graceful: what is queued
// (a close frame, close_notify, module bytes) is written and a FIN sent
// first, within kCloseTimeoutMs. The first reason given is the one reported.
// `why`, for failures whose type alone does not say what to fix (a refused
// certificate, a broken server), goes to the server's stderr.
void sock_end(Sock *s, mesibo_int_t type, bool graceful, const char *why = nullptr) {
  if (s->state == S_ENDING) return;
  if (why) io_report("socket %ld (%s): %s", static_cast<long>(s->id), s->url_text.c_str(), why);
  const bool connected = s->state >= S_TLS_HANDSHAKE;
  s->state = S_ENDING;
  s->close_type = type;
  sock_set_unwritable(s);
  if (!graceful || !connected || !s->tcp_open) {
    sock_close_handles(s);
    return;
  }
  uv_read_stop(stream(s));
  if (s->ssl && SSL_is_init_finished(s->ssl)) {
    SSL_shutdown(s->ssl);
    flush_tls(s);
  }
  s->shutdown_req.data = s;
  if (uv_shutdown(&s->shutdown_req, stream(s), on_shutdown) != 0) {
    sock_close_handles(s);
    return;
  }
  s->shutting_down = true;
  uv_timer_stop(&s->timer);
  uv_timer_start(&s->timer, on_end_timeout, kCloseTimeoutMs, 0);
}

// ---------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------

void on_written(uv_write_t *req, int status) {
  WriteReq *w = static_cast<WriteReq *>(req->data);
  Sock *s = w->s;
  delete w;
  --s->writes_in_flight;
  if (s->state == S_ENDING) {
    sock_maybe_free(s);
    return;
  }
  if (status < 0) {
    sock_end(s, SOCK_E_IO, false);
    return;
  }
  if (s->writes_in_flight == 0 && s->user_unflushed && !s->close_requested) {
    s->user_unflushed = false;
    if (s->on_write) {
      InModule in(s->write_site);
      s->on_write(s->cbdata);
    }
  }
}

// Bytes onto the TCP connection, as they are.
void raw_write(Sock *s, std::string bytes) {
  if (!s->tcp_open || bytes.empty()) return;
  WriteReq *w = new WriteReq;
  w->s = s;
  w->bytes = std::move(bytes);
  w->req.data = w;
  uv_buf_t buf = uv_buf_init(&w->bytes[0], static_cast<unsigned>(w->bytes.size()));
  if (uv_write(&w->req, stream(s), &buf, 1, on_written) != 0) {
    delete w;
    if (s->state != S_ENDING) sock_end(s, SOCK_E_IO, false);
    return;
  }
  ++s->writes_in_flight;
}

// Moves what OpenSSL produced (records, alerts) onto the connection.
void flush_tls(Sock *s) {
  size_t n;
  while ((n = BIO_ctrl_pending(s->wbio)) > 0) {
    std::string chunk(n, '\0');
    int got = BIO_read(s->wbio, &chunk[0], static_cast<int>(n));
    if (got <= 0) break;
    chunk.resize(static_cast<size_t>(got));
    raw_write(s, std::move(chunk));
  }
}

// Bytes through TLS when there is TLS.
void transport_write(Sock *s, const std::string &bytes) {
  if (!s->ssl) {
    raw_write(s, bytes);
    return;
  }
  if (bytes.empty()) return;
  ERR_clear_error();
  if (SSL_write(s->ssl, bytes.data(), static_cast<int>(bytes.size())) <= 0) {
    std::string why = "TLS write failed: " + tls_error("unknown error");
    ERR_clear_error();
    sock_end(s, SOCK_E_TLS, false, why.c_str());
    return;
  }
  flush_tls(s);
}

void ws_send_frame(Sock *s, uint8_t opcode, const uint8_t *data, size_t len) {
  uint8_t mask[4];
  RAND_bytes(mask, sizeof mask);
  std::string frame;
  ws_frame_encode(frame, opcode, data, len, mask);
  transport_write(s, frame);
}

void ws_send_close(Sock *s, uint16_t code) {
  uint8_t payload[2] = {static_cast<uint8_t>(code >> 8), static_cast<uint8_t>(code & 0xff)};
  ws_send_frame(s, WS_OP_CLOSE, payload, code ? 2 : 0);
}

// A module write, on the loop thread.
void sock_write(Sock *s, const char *data, size_t len) {
  if (s->close_requested || s->state >= S_WS_CLOSING) return;
  std::string bytes;
  if (s->url.ws) {
    // A WebSocket message is text when it is valid UTF-8 (JSON, plain
    // text) and binary otherwise: a server must reject invalid UTF-8 in a
    // text message.
    const auto *p = reinterpret_cast<const uint8_t *>(data);
    uint8_t mask[4];
    RAND_bytes(mask, sizeof mask);
    ws_frame_encode(bytes, ws_utf8_valid(p, len) ? WS_OP_TEXT : WS_OP_BINARY, p, len, mask);
  } else {
    if (len == 0) return;
    bytes.assign(data, len);
  }
  if (s->state != S_OPEN) {
    s->pending.push_back(std::move(bytes));
    return;
  }
  s->user_unflushed = true;
  transport_write(s, bytes);
}

// ---------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------

void sock_open(Sock *s) {
  s->state = S_OPEN;
  uv_timer_stop(&s->timer);
  // Earlier writes go first, before anything the module writes in on_connect.
  std::vector<std::string> pending;
  pending.swap(s->pending);
  for (const std::string &bytes : pending) {
    if (s->state != S_OPEN) return;
    s->user_unflushed = true;
    transport_write(s, bytes);
  }
  if (s->state != S_OPEN) return;
  uv_os_fd_t fd = -1;
  uv_fileno(reinterpret_cast<uv_handle_t *>(&s->tcp), &fd);
  if (s->on_connect) {
    InModule in(s->connect_site);
    s->on_connect(s->cbdata, s->id, static_cast<mesibo_int_t>(fd));
  }
}

int on_ws_event(void *data, const WsEvent &ev) {
  Sock *s = static_cast<Sock *>(data);
  switch (ev.opcode) {
    case WS_OP_TEXT:
    case WS_OP_BINARY:
      if (s->state == S_OPEN && !s->close_requested && s->on_data) {
        InModule in(s->data_site);
        s->on_data(s->cbdata, reinterpret_cast<const char *>(ev.data), static_cast<mesibo_int_t>(ev.len));
      }
      break;
    case WS_OP_PING:
      if (s->state == S_OPEN) ws_send_frame(s, WS_OP_PONG, ev.data, ev.len);
      break;
    case WS_OP_CLOSE:
      if (s->state == S_OPEN) {
        // The server closes: answer with its code, then end.
        ws_send_close(s, ev.close_code);
        sock_end(s, ev.close_code == 0 || ev.close_code == 1000 ? SOCK_CLOSED : ev.close_code, true);
      } else if (s->state == S_WS_CLOSING) {
        sock_end(s, SOCK_CLOSED, true);
      }
      break;
    default:
      break;  // a pong: nothing to do
  }
  return s->state == S_OPEN || s->state == S_WS_CLOSING ? 0 : 1;
}

void ws_feed(Sock *s, const char *data, size_t len) {
  int r = ws_parser_feed(s->parser, reinterpret_cast<const uint8_t *>(data), len, on_ws_event, s);
  if (r == WS_OK || s->state >= S_ENDING) return;
  ws_send_close(s, ws_error_close_code(r));
  std::string why = std::string("malformed WebSocket frame from the server: ") + ws_error_name(r);
  sock_end(s, SOCK_E_WS_PROTOCOL, true, why.c_str());
}

// Plain bytes from the server (after TLS, if any).
void deliver(Sock *s, const char *data, size_t len) {
  if (s->state == S_WS_HANDSHAKE) {
    s->ws_response.append(data, len);
    long r = ws_handshake_parse(s->ws_response.data(), s->ws_response.size(), s->ws_accept, s->protocols.c_str());
    if (r == 0) return;
    if (r < 0) {
      std::string why = std::string("WebSocket upgrade refused: ") + ws_handshake_error_name(static_cast<int>(r));
      sock_end(s, SOCK_E_WS_HANDSHAKE, false, why.c_str());
      return;
    }
    std::string rest = s->ws_response.substr(static_cast<size_t>(r));
    std::string().swap(s->ws_response);
    sock_open(s);
    if (s->state == S_OPEN && !rest.empty()) ws_feed(s, rest.data(), rest.size());
    return;
  }
  if (s->state != S_OPEN && s->state != S_WS_CLOSING) return;
  if (s->url.ws) {
    ws_feed(s, data, len);
  } else if (!s->close_requested && s->on_data) {
    InModule in(s->data_site);
    s->on_data(s->cbdata, data, static_cast<mesibo_int_t>(len));
  }
}

// The server ended its side (TCP FIN, or TLS close_notify).
void on_eof(Sock *s) {
  switch (s->state) {
    case S_TLS_HANDSHAKE: sock_end(s, SOCK_E_TLS, false, "the server closed the connection during the TLS handshake"); break;
    case S_WS_HANDSHAKE: sock_end(s, SOCK_E_WS_HANDSHAKE, false, "the server closed the connection before answering the upgrade"); break;
    case S_WS_CLOSING: sock_end(s, SOCK_CLOSED, true); break;
    case S_OPEN: sock_end(s, s->url.ws ? SOCK_E_WS_ABNORMAL : SOCK_CLOSED, true); break;
    default: break;
  }
}

void transport_ready(Sock *s);

void tls_pump(Sock *s) {
  ERR_clear_error();
  if (s->state == S_TLS_HANDSHAKE) {
    int r = SSL_do_handshake(s->ssl);
    int err = r == 1 ? SSL_ERROR_NONE : SSL_get_error(s->ssl, r);
    flush_tls(s);
    if (r == 1) {
      transport_ready(s);
    } else if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE) {
      long v = SSL_get_verify_result(s->ssl);
      std::string why;
      if (s->verify && v != X509_V_OK) {
        why = std::string("certificate refused: ") + X509_verify_cert_error_string(v);
      } else {
        why = "TLS handshake failed: " + tls_error("the connection closed during the handshake");
      }
      ERR_clear_error();
      sock_end(s, s->verify && v != X509_V_OK ? SOCK_E_VERIFY : SOCK_E_TLS, false, why.c_str());
      return;
    }
  }
  static char plain[16384];  // loop thread only; consumed before the next read
  while (s->state == S_WS_HANDSHAKE || s->state == S_OPEN || s->state == S_WS_CLOSING) {
    int n = SSL_read(s->ssl, plain, sizeof plain);
    if (n > 0) {
      deliver(s, plain, static_cast<size_t>(n));
      continue;
    }
    int err = SSL_get_error(s->ssl, n);
    if (err == SSL_ERROR_ZERO_RETURN) {
      on_eof(s);
    } else if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE) {
      std::string why = "TLS error: " + tls_error("the connection ended without close_notify");
      sock_end(s, SOCK_E_TLS, false, why.c_str());
    }
    break;
  }
  if (s->ssl && s->state != S_ENDING) flush_tls(s);  // tickets, key updates, alerts
  ERR_clear_error();
}

void on_alloc(uv_handle_t *, size_t, uv_buf_t *buf) {
  static char block[65536];  // loop thread only; each read is consumed before the next alloc
  *buf = uv_buf_init(block, sizeof block);
}

void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf) {
  Sock *s = static_cast<Sock *>(st->data);
  if (nread == 0 || s->state == S_ENDING) return;
  if (nread < 0) {
    if (nread == UV_EOF) on_eof(s);
    else sock_end(s, s->state == S_TLS_HANDSHAKE ? SOCK_E_TLS : SOCK_E_IO, false);
    return;
  }
  if (!s->ssl) {
    deliver(s, buf->base, static_cast<size_t>(nread));
    return;
  }
  BIO_write(s->rbio, buf->base, static_cast<int>(nread));
  tls_pump(s);
}

// ---------------------------------------------------------------------------
// Starting: resolve, connect, TLS, upgrade
// ---------------------------------------------------------------------------

void ws_send_upgrade(Sock *s) {
  unsigned char nonce[16];
  RAND_bytes(nonce, sizeof nonce);
  std::string key = base64(nonce, sizeof nonce);
  std::string material = key + kWsGuid;
  unsigned char digest[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char *>(material.data()), material.size(), digest);
  s->ws_accept = base64(digest, sizeof digest);
  ws_parser_init(s->parser, kMaxWsMessage);

  std::string host = s->url.host.find(':') != std::string::npos ? "[" + s->url.host + "]" : s->url.host;
  if (!s->url.default_port) host += ":" + s->url.port;
  std::string req = "GET " + s->url.path + " HTTP/1.1\r\nHost: " + host +
                    "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + key +
                    "\r\nSec-WebSocket-Version: 13\r\n";
  if (!s->protocols.empty()) req += "Sec-WebSocket-Protocol: " + s->protocols + "\r\n";
  req += "User-Agent: switchboard\r\n\r\n";
  s->state = S_WS_HANDSHAKE;
  transport_write(s, req);
}

// TCP (and TLS, if any) is up.
void transport_ready(Sock *s) {
  if (s->url.ws) ws_send_upgrade(s);
  else sock_open(s);
}

bool tls_start(Sock *s) {
  SSL_CTX *ctx = s->user_ctx ? s->user_ctx : shared_ctx(s->ca_file);
  if (!ctx || !(s->ssl = SSL_new(ctx))) return false;
  s->rbio = BIO_new(BIO_s_mem());
  s->wbio = BIO_new(BIO_s_mem());
  if (!s->rbio || !s->wbio) {
    BIO_free(s->rbio);
    BIO_free(s->wbio);
    s->rbio = s->wbio = nullptr;
    return false;
  }
  SSL_set_bio(s->ssl, s->rbio, s->wbio);
  SSL_set_connect_state(s->ssl);
  if (!s->url.host_is_ip) SSL_set_tlsext_host_name(s->ssl, s->url.host.c_str());
  if (s->verify) {
    SSL_set_verify(s->ssl, SSL_VERIFY_PEER, nullptr);
    X509_VERIFY_PARAM *param = SSL_get0_param(s->ssl);
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    int ok = s->url.host_is_ip ? X509_VERIFY_PARAM_set1_ip_asc(param, s->url.host.c_str())
                               : X509_VERIFY_PARAM_set1_host(param, s->url.host.c_str(), 0);
    if (!ok) return false;
  } else {
    SSL_set_verify(s->ssl, SSL_VERIFY_NONE, nullptr);
  }
  s->state = S_TLS_HANDSHAKE;
  tls_pump(s);
  return true;
}

void try_next_address(Sock *s);

void on_connected(uv_connect_t *req, int status) {
  Sock *s = static_cast<Sock *>(req->data);
  s->connecting = false;
  if (s->state == S_ENDING) {
    sock_maybe_free(s);
    return;
  }
  if (status < 0) {
    // Closing the failed handle; its close callback tries the next address.
    uv_close(reinterpret_cast<uv_handle_t *>(&s->tcp), [](uv_handle_t *h) {
      Sock *s = static_cast<Sock *>(h->data);
      s->tcp_open = false;
      if (s->state == S_ENDING) sock_maybe_free(s);
      else try_next_address(s);
    });
    return;
  }
  if (s->keepalive) uv_tcp_keepalive(&s->tcp, 1, kKeepAliveDelaySec);
  uv_tcp_nodelay(&s->tcp, 1);
  if (uv_read_start(stream(s), on_alloc, on_read) != 0) {
    sock_end(s, SOCK_E_IO, false);
    return;
  }
  if (!s->url.tls) {
    transport_ready(s);
  } else if (!tls_start(s)) {
    std::string why = "cannot set up TLS: " + tls_error("out of memory");
    ERR_clear_error();
    sock_end(s, SOCK_E_TLS, false, why.c_str());
  }
}

void try_next_address(Sock *s) {
  uv_loop_t *loop = io_loop();
  while (s->next_addr < s->addrs.size()) {
    const sockaddr *addr = reinterpret_cast<const sockaddr *>(&s->addrs[s->next_addr++]);
    if (!loop || uv_tcp_init(loop, &s->tcp) != 0) break;
    s->tcp.data = s;
    s->tcp_open = true;
    s->connect_req.data = s;
    if (uv_tcp_connect(&s->connect_req, &s->tcp, addr, on_connected) == 0) {
      s->connecting = true;
      s->state = S_CONNECTING;
      return;
    }
    // Refused before it started (an address family the host lacks): this
    // address is done; its close callback comes back here.
    uv_close(reinterpret_cast<uv_handle_t *>(&s->tcp), [](uv_handle_t *h) {
      Sock *s = static_cast<Sock *>(h->data);
      s->tcp_open = false;
      if (s->state == S_ENDING) sock_maybe_free(s);
      else try_next_address(s);
    });
    return;
  }
  sock_end(s, SOCK_E_CONNECT, false);
}

void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  Sock *s = static_cast<Sock *>(req->data);
  s->resolving = false;
  if (s->state == S_ENDING) {
    if (res) uv_freeaddrinfo(res);
    sock_maybe_free(s);
    return;
  }
  if (status < 0 || !res) {
    if (res) uv_freeaddrinfo(res);
    sock_end(s, SOCK_E_RESOLVE, false);
    return;
  }
  for (addrinfo *a = res; a; a = a->ai_next) {
    if (a->ai_addrlen > sizeof(sockaddr_storage)) continue;
    sockaddr_storage ss{};
    std::memcpy(&ss, a->ai_addr, a->ai_addrlen);
    s->addrs.push_back(ss);
  }
  uv_freeaddrinfo(res);
  try_next_address(s);
}

void on_connect_timeout(uv_timer_t *t) { sock_end(static_cast<Sock *>(t->data), SOCK_E_TIMEOUT, false); }

void sock_start(Sock *s) {
  if (s->state != S_NEW) return;
  uv_loop_t *loop = io_loop();
  s->state = S_RESOLVING;
  if (!loop || uv_timer_init(loop, &s->timer) != 0) {
    sock_end(s, SOCK_E_CONNECT, false);
    return;
  }
  s->timer.data = s;
  s->timer_open = true;
  uv_timer_start(&s->timer, on_connect_timeout, kConnectTimeoutMs, 0);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_ADDRCONFIG;
  s->gai.data = s;
  if (uv_getaddrinfo(loop, &s->gai, on_resolved, s->url.host.c_str(), s->url.port.c_str(), &hints) != 0) {
    sock_end(s, SOCK_E_RESOLVE, false);
    return;
  }
  s->resolving = true;
}

// The module asked to close, on the loop thread.
void sock_close(Sock *s) {
  if (s->close_requested || s->state >= S_WS_CLOSING) return;
  s->close_requested = true;
  if (s->state != S_OPEN) {
    sock_end(s, SOCK_CLOSED, false);
  } else if (s->url.ws) {
    ws_send_close(s, 1000);
    if (s->state != S_OPEN) return;
    s->state = S_WS_CLOSING;
    uv_timer_stop(&s->timer);
    uv_timer_start(&s->timer, [](uv_timer_t *t) { sock_end(static_cast<Sock *>(t->data), SOCK_CLOSED, true); },
                   kCloseTimeoutMs, 0);
  } else {
    sock_end(s, SOCK_CLOSED, true);
  }
}

}  // namespace

}  // namespace sb

using sb::Sock;

/* Starts a client connection to sock->url: tcp://host:port, ssl://host:port
 * (or tls://), ws://host[:port][/path] or wss://... . Returns a handle (> 0,
 * never reused) at once, or -1 when the URL is invalid or no event loop runs.
 * on_connect follows when the connection (and the TLS and WebSocket
 * handshakes) is up, on_close (exactly once, last) when it ends or fails.
 * Callable from any thread; callbacks run on the loop thread. */
SB_API mesibo_int_t mesibo_util_socket_connect(mesibo_socket_t *req, void *cbdata) {
  if (!req || !req->url || !sb::io_loop()) return MESIBO_RESULT_FAIL;
  sb::Url url;
  if (!sb::parse_url(req->url, url)) return MESIBO_RESULT_FAIL;
  Sock *s = new Sock;
  s->url_text = req->url;
  s->url = std::move(url);
  if (s->url.ws && req->ws_protocol) s->protocols = req->ws_protocol;
  s->keepalive = req->keepalive != 0;
  s->verify = req->verify_host != 0;
  if (s->url.tls) s->ca_file = sb::extra_ca_file();
  if (s->url.tls && req->ssl_ctx) {
    s->user_ctx = static_cast<SSL_CTX *>(req->ssl_ctx);
    SSL_CTX_up_ref(s->user_ctx);
  }
  s->on_connect = req->on_connect;
  s->on_write = req->on_write;
  s->on_data = req->on_data;
  s->on_close = req->on_close;
  s->cbdata = cbdata;
  s->module_dl = sb::pin_module(req);
  if (const void *fn = sb::callback_of(req))
    s->connect_site.module = s->write_site.module = s->data_site.module = s->close_site.module = sb::crash_trace_library_of(fn);
  mesibo_int_t id;
  {
    sb::Table &t = sb::table();
    std::lock_guard<std::mutex> lock(t.mu);
    id = t.next++;
    s->id = id;
    t.map.emplace(id, sb::Entry{s, true});
  }
  if (sb::io_on_loop_thread()) {
    sb::sock_start(s);
    return id;
  }
  if (!sb::io_post([id] {
        if (Sock *found = sb::sock_find(id)) sb::sock_start(found);
      })) {
    {
      sb::Table &t = sb::table();
      std::lock_guard<std::mutex> lock(t.mu);
      t.map.erase(id);
    }
    if (s->user_ctx) SSL_CTX_free(s->user_ctx);
    if (s->module_dl) dlclose(s->module_dl);
    delete s;
    return MESIBO_RESULT_FAIL;
  }
  return id;
}

/* Copies `len` bytes and queues them (on a WebSocket: as one message, text
 * when the bytes are UTF-8, binary otherwise). Never blocks. Bytes written
 * before on_connect are sent after the handshakes. Returns 0, or -1 for an
 * unknown handle, one the module closed, or one that has ended. */
SB_API mesibo_int_t mesibo_util_socket_write(mesibo_int_t sock, const char *data, mesibo_int_t len) {
  if (len < 0 || (!data && len > 0)) return MESIBO_RESULT_FAIL;
  Sock *s = nullptr;
  {
    sb::Table &t = sb::table();
    std::lock_guard<std::mutex> lock(t.mu);
    auto it = t.map.find(sock);
    if (it == t.map.end() || !it->second.writable) return MESIBO_RESULT_FAIL;
    s = it->second.s;
  }
  if (sb::io_on_loop_thread()) {
    sb::sock_write(s, data, static_cast<size_t>(len));
    return MESIBO_RESULT_OK;
  }
  std::string copy(data ? data : "", static_cast<size_t>(len));
  bool posted = sb::io_post([sock, copy = std::move(copy)] {
    if (Sock *found = sb::sock_find(sock)) sb::sock_write(found, copy.data(), copy.size());
  });
  return posted ? MESIBO_RESULT_OK : MESIBO_RESULT_FAIL;
}

/* Closes the socket: a WebSocket sends a close frame and waits (briefly) for
 * the server's; queued bytes are written first. on_close(0) follows once.
 * Unknown or already closed handles are ignored. */
SB_API void mesibo_util_socket_close(mesibo_int_t sock) {
  {
    sb::Table &t = sb::table();
    std::lock_guard<std::mutex> lock(t.mu);
    auto it = t.map.find(sock);
    if (it == t.map.end() || !it->second.writable) return;
    it->second.writable = false;
  }
  if (sb::io_on_loop_thread()) {
    if (Sock *s = sb::sock_find(sock)) sb::sock_close(s);
    return;
  }
  sb::io_post([sock] {
    if (Sock *s = sb::sock_find(sock)) sb::sock_close(s);
  });
}
