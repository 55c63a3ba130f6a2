// use_all.cc: the C++ twin of use_all.c. A module written in C++ the way
// mesibo module authors write theirs, using every type (by typedef and by
// struct tag), constant, macro and enum value in include/module.h and
// calling every function the server exports. test/abi.test.ts compiles it
// with
//
//   g++ -shared -fPIC -Wall -Wextra -I include test/abi/use_all.cc
//
// under -std=c++11 and -std=c++17 and requires the compiler to say nothing.
// C++ is stricter than C about function pointer types, so this file is the
// one that catches a callback typedef or member whose signature drifted.
//
// The module ("abi") is a small bot: messages to its address are answered
// by an HTTP or FastCGI backend, other messages pass through with their
// first byte upper-cased in place, and logins are reported over a socket.
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>

#include "module.h"

namespace {

// The state of one instance, kept in m->ctx: the same module configured
// twice is loaded as two instances.
struct State {
    const char *address;        // the bot's address: messages to it are answered
    mesibo_int_t socket;        // handle from mesibo_util_socket_connect, or -1
    mesibo_uint_t replies_sent; // replies that reached the sent status
    uintptr_t reserved[8];
};

const State kInitialState = { nullptr, -1, 0, { MESIBO_MODULES_PADDING } };

// What an asynchronous HTTP or FastCGI call needs when its answer arrives.
// The server's params and strings die with on_message, so they are copied.
struct Request {
    struct mesibo_module_s *mod;
    mesibo_message_params_t params;
    std::string to, from;
    mesibo_int_t status;
    std::string body;
};

State *state_of(mesibo_module_t *m) { return static_cast<State *>(m->ctx); }

void log_v(mesibo_module_t *m, mesibo_uint_t level, const char *format, ...) {
    va_list args;
    va_start(args, format);
    mesibo_vlog(m, level, format, args);
    va_end(args);
}

void log_config(mesibo_module_t *m, const struct module_config_s *config) {
    const module_config_item_t *items = config ? config->items : nullptr;
    for (mesibo_int_t i = 0; config && i < config->count; i++) {
        const struct module_config_item_s &item = items[i];
        log_v(m, 2, "%s = %s\n", item.name, item.value);
    }
}

// ---- replies ---------------------------------------------------------------

void send_reply(Request *r, const char *text, mesibo_uint_t len) {
    struct mesibo_message_params_s p;
    std::memset(&p, 0, sizeof(p));
    p.aid = r->params.aid;
    p.id = static_cast<mesibo_uint_t>(std::rand());
    p.refid = r->params.id;
    p.groupid = r->params.groupid;
    // Keep what the sender set (a reply is never presence) and ask for
    // receipts, so on_message_status can follow the reply.
    p.flags = (r->params.flags & MOD_MESIBO_MSGFLAG_SENDMESSAGE & ~static_cast<mesibo_uint_t>(MOD_MESIBO_MSGFLAG_PRESENCE)) |
              MOD_MESIBO_MSGFLAG_DELIVERYRECEIPT | MOD_MESIBO_MSGFLAG_READRECEIPT;
    p.type = r->params.type;
    p.expiry = 3600;
    p.to = &r->from[0]; // answer the sender, from the bot
    p.from = &r->to[0];
    if (mesibo_message(r->mod, &p, text, len) != MESIBO_RESULT_OK)
        mesibo_log(r->mod, 0, "reply to %s failed\n", p.to);
}

// ---- HTTP ------------------------------------------------------------------

mesibo_int_t http_on_data(void *cbdata, mesibo_int_t state, mesibo_int_t progress, const char *buffer, mesibo_int_t size) {
    Request *r = static_cast<Request *>(cbdata);
    if (progress < 0)
        return MESIBO_RESULT_FAIL;
    switch (static_cast<module_http_state_t>(state)) {
    case MODULE_HTTP_STATE_REQUEST:
    case MODULE_HTTP_STATE_REQBODY:
    case MODULE_HTTP_STATE_RESPHEADER:
        break;
    case MODULE_HTTP_STATE_RESPBODY:
        if (buffer && size > 0)
            r->body.append(buffer, static_cast<size_t>(size));
        break;
    case MODULE_HTTP_STATE_DONE:
        log_v(r->mod, 1, "http done at %" PRIdPTR "%%\n", progress);
        break;
    }
    return MESIBO_RESULT_OK;
}

mesibo_int_t http_on_status(void *cbdata, mesibo_int_t status, const char *response_type) {
    Request *r = static_cast<Request *>(cbdata);
    r->status = status;
    log_v(r->mod, 1, "http status %" PRIdPTR " (%s)\n", status, response_type ? response_type : "-");
    return MESIBO_RESULT_OK;
}

void http_on_close(void *cbdata, mesibo_int_t result) {
    Request *r = static_cast<Request *>(cbdata);
    char *next = nullptr;
    char *answer = nullptr;
    if (result == MESIBO_RESULT_OK && r->status == 200)
        answer = mesibo_util_json_extract(&r->body[0], static_cast<mesibo_int_t>(r->body.size()), "text", &next);
    if (answer) {
        send_reply(r, answer, static_cast<mesibo_uint_t>(std::strlen(answer)));
        std::free(answer); // json_extract hands over a malloc'd copy
    }
    delete r;
}

// ---- FastCGI ---------------------------------------------------------------

mesibo_int_t fcgi_on_data(void *cbdata, mesibo_int_t result, const char *buffer, mesibo_int_t size) {
    Request *r = static_cast<Request *>(cbdata);
    if (result >= 0 && buffer != nullptr)
        send_reply(r, buffer, static_cast<mesibo_uint_t>(size));
    delete r;
    return result >= 0 ? MESIBO_RESULT_OK : MESIBO_RESULT_FAIL;
}

void fcgi_request(mesibo_module_t *m, Request *r, const char *host, std::string &body) {
    struct mesibo_fcgi_s req;
    mesibo_fcgi_t &f = req;
    std::memset(&f, 0, sizeof(f));
    f.USER = const_cast<char *>("abi");
    f.SCRIPT_FILENAME = const_cast<char *>("/srv/bot/index.php");
    f.QUERY_STRING = const_cast<char *>("");
    f.CONTENT_TYPE = const_cast<char *>("application/json");
    f.SCRIPT_NAME = const_cast<char *>("/index.php");
    f.REQUEST_URI = const_cast<char *>("/index.php");
    f.DOCUMENT_URI = const_cast<char *>("/index.php");
    f.DOCUMENT_ROOT = const_cast<char *>("/srv/bot");
    f.SERVER_PROTOCOL = const_cast<char *>("HTTP/1.1");
    f.REQUEST_SCHEME = const_cast<char *>("http");
    f.REMOTE_ADDR = const_cast<char *>("127.0.0.1");
    f.REMOTE_PORT = const_cast<char *>("0");
    f.SERVER_ADDR = const_cast<char *>("127.0.0.1");
    f.SERVER_PORT = const_cast<char *>("80");
    f.SERVER_NAME = const_cast<char *>("localhost");
    f.HTTP_HOST = const_cast<char *>("localhost");
    f.HTTP_CONNECTION = const_cast<char *>("keep-alive");
    f.HTTP_CACHE_CONTROL = const_cast<char *>("no-cache");
    f.HTTP_UPGRADE_INSECURE_REQUESTS = const_cast<char *>("0");
    f.HTTP_USER_AGENT = const_cast<char *>("abi-module");
    f.HTTP_ACCEPT = const_cast<char *>("*/*");
    f.HTTP_ACCEPT_ENCODING = const_cast<char *>("identity");
    f.HTTP_ACCEPT_LANGUAGE = const_cast<char *>("en");
    f.body = &body[0];
    f.bodylen = static_cast<uint64_t>(body.size());
    mesibo_fcgi_ondata_t on_data = fcgi_on_data;
    if (mesibo_util_fcgi(&f, host, 9000, 1, on_data, r) != MESIBO_RESULT_OK) {
        mesibo_log(m, 0, "fcgi request to %s failed\n", host);
        delete r;
    }
}

// ---- socket ----------------------------------------------------------------

void socket_on_connect(void *cbdata, mesibo_int_t asock, mesibo_int_t fd) {
    mesibo_module_t *m = static_cast<mesibo_module_t *>(cbdata);
    log_v(m, 1, "socket %" PRIdPTR " connected on fd %" PRIdPTR "\n", asock, fd);
    mesibo_util_socket_write(asock, "hello\n", 6);
}

void socket_on_write(void *cbdata) {
    log_v(static_cast<mesibo_module_t *>(cbdata), 2, "socket drained\n");
}

mesibo_int_t socket_on_data(void *cbdata, const char *data, mesibo_int_t len) {
    log_v(static_cast<mesibo_module_t *>(cbdata), 1, "socket said %.*s\n", static_cast<int>(len), data);
    return MESIBO_RESULT_OK;
}

void socket_on_close(void *cbdata, mesibo_int_t type) {
    mesibo_module_t *m = static_cast<mesibo_module_t *>(cbdata);
    log_v(m, 1, "socket closed (%" PRIdPTR ")\n", type);
    state_of(m)->socket = -1;
}

void socket_open(mesibo_module_t *m, const char *url) {
    struct mesibo_socket_s sock;
    std::memset(&sock, 0, sizeof(sock));
    mesibo_socket_t &s = sock;
    s.url = url;
    s.ws_protocol = nullptr;
    s.keepalive = 1;
    s.verify_host = 1;
    s.ssl_ctx = nullptr;
    mesibo_socket_onconnect_t on_connect = socket_on_connect;
    mesibo_socket_onwrite_t on_write = socket_on_write;
    mesibo_socket_ondata_t on_data = socket_on_data;
    mesibo_socket_onclose_t on_close = socket_on_close;
    s.on_connect = on_connect;
    s.on_write = on_write;
    s.on_data = on_data;
    s.on_close = on_close;
    state_of(m)->socket = mesibo_util_socket_connect(&s, m);
}

// ---- a worker thread -------------------------------------------------------

void *worker(void *data) {
    mesibo_module_t *m = static_cast<mesibo_module_t *>(data);
    mesibo_int_t started = mesibo_util_usec();
    log_v(m, 1, "worker up after %" PRIdPTR " us\n", mesibo_util_usec() - started);
    return nullptr;
}

// ---- module callbacks ------------------------------------------------------

mesibo_int_t on_message(mesibo_module_t *m, mesibo_message_params_t *p, char *message, mesibo_uint_t len) {
    State *s = state_of(m);
    if (p->flags & (MOD_MESIBO_MSGFLAG_PRESENCE | MOD_MESIBO_MSGFLAG_MEDIA | MOD_MESIBO_MSGFLAG_OUTGOING))
        return MESIBO_RESULT_PASS;
    if (s->address == nullptr || p->to == nullptr || std::strcmp(p->to, s->address) != 0) {
        // Rewrite in place, same length: later modules and the recipient see it.
        if (len > 0)
            message[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(message[0])));
        return MESIBO_RESULT_PASS;
    }
    if ((p->flags & MOD_MESIBO_MSGFLAG_TRANSIENT) && !(p->uflags & MOD_MESIBO_UFLAG_DESTONLINE))
        return MESIBO_RESULT_CONSUMED;

    Request *r = new Request();
    r->mod = m;
    r->params = *p;
    r->to = p->to;
    r->from = p->from ? p->from : "";
    r->status = 0;

    if (const char *host = mesibo_util_getconfig(m, "fcgi_host")) {
        std::string body(message, len);
        fcgi_request(m, r, host, body);
        return MESIBO_RESULT_CONSUMED;
    }

    struct _mesibo_http_t req;
    std::memset(&req, 0, sizeof(req));
    mesibo_http_t &h = req;
    h.url = mesibo_util_getconfig(m, "endpoint");
    h.post = "{\"q\":1}";
    h.content_type = "application/json";
    h.extra_header = "Authorization: Bearer x";
    h.user_agent = "abi-module";
    h.referrer = nullptr;
    h.origin = nullptr;
    h.cookie = nullptr;
    h.encoding = "identity";
    h.cache_control = "no-cache";
    h.accept = "application/json";
    h.etag = nullptr;
    h.ims = 0;
    h.conn_timeout = 5;
    h.header_timeout = 5;
    h.body_timeout = 10;
    h.total_timeout = 20;
    mesibo_http_ondata_t on_data = http_on_data;
    mesibo_http_onstatus_t on_status = http_on_status;
    mesibo_http_onclose_t on_close = http_on_close;
    h.on_data = on_data;
    h.on_status = on_status;
    h.on_close = on_close;
    if (h.url == nullptr || mesibo_util_http(&h, r) != MESIBO_RESULT_OK) {
        delete r;
        return MESIBO_RESULT_PASS;
    }
    return MESIBO_RESULT_CONSUMED;
}

mesibo_int_t on_message_status(mesibo_module_t *m, mesibo_message_params_t *p) {
    const mesibo_uint_t status = p->status;
    if (status == 1) { // sent: the server accepted it (no named constant)
        state_of(m)->replies_sent++;
        return MESIBO_RESULT_OK;
    }
    if (status == MESIBO_MODULE_MSGSTATUS_DELIVERED || status == MESIBO_MODULE_MSGSTATUS_READ) {
        log_v(m, 2, "reply %" PRIuPTR " %s\n", p->id, status == MESIBO_MODULE_MSGSTATUS_READ ? "read" : "delivered");
        return MESIBO_RESULT_OK;
    }
    if (status <= MESIBO_MODULE_MSGSTATUS_MAX) // progress this module does not track
        return MESIBO_RESULT_OK;
    if (status < MESIBO_MODULE_MSGSTATUS_FAIL || status > MESIBO_MODULE_MSGSTATUS_FAILMAX)
        return MESIBO_RESULT_OK; // not a failure code of this ABI
    const char *why = "failed";
    if (status == MESIBO_MODULE_MSGSTATUS_NOTACTIVE) why = "recipient not active";
    else if (status == MESIBO_MODULE_MSGSTATUS_INBOXFULL) why = "inbox full";
    else if (status == MESIBO_MODULE_MSGSTATUS_INVALIDDEST) why = "no such destination";
    else if (status == MESIBO_MODULE_MSGSTATUS_NOINCOMING) why = "recipient takes no messages";
    else if (status == MESIBO_MODULE_MSGSTATUS_BLOCKED) why = "blocked";
    mesibo_log(m, 0, "reply %" PRIuPTR " to %s: %s\n", p->id, p->to ? p->to : "?", why);
    return MESIBO_RESULT_OK;
}

mesibo_int_t on_call(mesibo_module_t *m) {
    log_v(m, 1, "call\n");
    return MESIBO_RESULT_OK;
}

mesibo_int_t on_call_status(mesibo_module_t *m) {
    log_v(m, 1, "call status\n");
    return MESIBO_RESULT_OK;
}

mesibo_int_t on_login(mesibo_module_t *m, mesibo_user_t *user) {
    const struct mesibo_user_s &u = *user;
    State *s = state_of(m);
    char line[128];
    int n = std::snprintf(line, sizeof(line), "%s %s (flags %" PRIuPTR ")\n", u.address, u.online ? "in" : "out", u.flags);
    if (s->socket > 0 && n > 0)
        mesibo_util_socket_write(s->socket, line, n);
    return MESIBO_RESULT_OK;
}

mesibo_int_t on_config(mesibo_module_t *m, mesibo_uint_t type, void *config) {
    log_v(m, 1, "config %" PRIuPTR " at %p\n", type, config);
    return MESIBO_RESULT_OK;
}

mesibo_int_t on_cleanup(mesibo_module_t *m) {
    State *s = state_of(m);
    if (s->socket > 0)
        mesibo_util_socket_close(s->socket);
    log_v(m, 1, "%" PRIuPTR " replies sent\n", s->replies_sent);
    delete s;
    m->ctx = nullptr; // m itself and its config belong to the server: never freed here
    return MESIBO_RESULT_OK;
}

} // namespace

// ---- init ------------------------------------------------------------------

MESIBO_EXPORT mesibo_int_t mesibo_module_abi_init(mesibo_int_t version, mesibo_module_t *m, mesibo_int_t len) {
    MESIBO_MODULE_SANITY_CHECK(m, version, len);

    State *s = new State(kInitialState);
    m->version = MESIBO_MODULE_VERSION;
    m->flags = MOD_MESIBO_FLAG_INCOMING | MOD_MESIBO_FLAG_OUTGOING;
    m->description = "every name in module.h";
    m->ctx = s;
    m->custom_fns = nullptr;
    m->on_cleanup = on_cleanup;
    m->on_message = on_message;
    m->on_message_status = on_message_status;
    m->on_call = on_call;
    m->on_call_status = on_call_status;
    m->on_login = on_login;
    m->on_config = on_config;

    const module_config_t *config = m->config;
    log_config(m, config);
    s->address = mesibo_util_getconfig(m, "address");
    if (const char *url = mesibo_util_getconfig(m, "socket_url"))
        socket_open(m, url);

    mesibo_util_create_thread(worker, m, 256 * 1024, "abi-worker");
    mesibo_log(m, 0, "%s loaded (signature %" PRIxPTR " %s)\n", m->name, m->signature,
               m->signature == MESIBO_MODULE_SIGNATURE ? "matches" : "differs");
    return MESIBO_RESULT_OK;
}

// The loader's view of the function above.
static_assert(std::is_same<decltype(&mesibo_module_abi_init), mesibo_module_init_fn>::value,
              "mesibo_module_abi_init must have the mesibo_module_init_fn signature");
