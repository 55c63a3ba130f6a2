/*
 * use_all.c: a module, written in C the way mesibo module authors write
 * theirs, that uses every name include/module.h declares: every type (by
 * typedef and by struct tag), constant, macro and enum value, and calls
 * every function the server exports. (layout.c checks every field by name
 * and offset.) test/abi.test.ts compiles it with
 *
 *   gcc -shared -fPIC -Wall -Wextra -I include test/abi/use_all.c
 *
 * under several -std levels and requires the compiler to say nothing. A
 * name missing from the header, a field renamed or retyped, a prototype
 * that no longer matches how modules call it, or a macro that warns inside
 * a module, all show up here as an error or a warning.
 *
 * The module itself ("abi") is a small bot: messages to its address are
 * answered by an HTTP or FastCGI backend, other messages pass through with
 * their first byte upper-cased in place, and logins are reported over a
 * socket. The endpoints come from its configuration block.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "module.h"

#define ABI_REPLY_MAX 256

/* The state of one instance, kept in m->ctx: the same module configured
 * twice is loaded as two instances. */
typedef struct abi_state_s {
    const char *address;        /* the bot's address: messages to it are answered */
    mesibo_int_t socket;        /* handle from mesibo_util_socket_connect, or -1 */
    mesibo_uint_t replies_sent; /* replies that reached the sent status */
    uintptr_t reserved[8];
} abi_state_t;

static const abi_state_t abi_state_initial = { NULL, -1, 0, { MESIBO_MODULES_PADDING } };

/* What an asynchronous HTTP or FastCGI call needs when its answer arrives. */
typedef struct abi_request_s {
    struct mesibo_module_s *mod;
    struct mesibo_message_params_s params; /* the message being answered */
    char to[64], from[64];
    mesibo_int_t status;
    char body[ABI_REPLY_MAX];
    mesibo_int_t body_len;
} abi_request_t;

static void abi_log(mesibo_module_t *m, mesibo_uint_t level, const char *format, ...) {
    va_list args;
    va_start(args, format);
    mesibo_vlog(m, level, format, args);
    va_end(args);
}

static void abi_log_config(mesibo_module_t *m, const module_config_t *config) {
    const module_config_item_t *items = config ? config->items : NULL;
    mesibo_int_t i;
    for (i = 0; config && i < config->count; i++) {
        const struct module_config_item_s *item = &items[i];
        abi_log(m, 2, "%s = %s\n", item->name, item->value);
    }
}

static void abi_copy(char *dst, size_t size, const char *src) {
    snprintf(dst, size, "%s", src ? src : "");
}

/* ---- replies -------------------------------------------------------------- */

static void abi_send_reply(abi_request_t *r, const char *text, mesibo_uint_t len) {
    mesibo_message_params_t p;
    memset(&p, 0, sizeof(p));
    p.aid = r->params.aid;
    p.id = (mesibo_uint_t)rand();
    p.refid = r->params.id;
    p.groupid = r->params.groupid;
    /* Keep what the sender set (a reply is never presence) and ask for
     * receipts, so on_message_status can follow the reply. */
    p.flags = (r->params.flags & MOD_MESIBO_MSGFLAG_SENDMESSAGE & ~(mesibo_uint_t)MOD_MESIBO_MSGFLAG_PRESENCE) |
              MOD_MESIBO_MSGFLAG_DELIVERYRECEIPT | MOD_MESIBO_MSGFLAG_READRECEIPT;
    p.type = r->params.type;
    p.expiry = 3600;
    p.to = r->from; /* answer the sender, from the bot */
    p.from = r->to;
    if (mesibo_message(r->mod, &p, text, len) != MESIBO_RESULT_OK)
        mesibo_log(r->mod, 0, "reply to %s failed\n", p.to);
}

/* ---- HTTP ----------------------------------------------------------------- */

static mesibo_int_t abi_http_on_data(void *cbdata, mesibo_int_t state, mesibo_int_t progress, const char *buffer, mesibo_int_t size) {
    abi_request_t *r = (abi_request_t *)cbdata;
    module_http_state_t s = (module_http_state_t)state;
    if (progress < 0)
        return MESIBO_RESULT_FAIL;
    switch (s) {
    case MODULE_HTTP_STATE_REQUEST:
    case MODULE_HTTP_STATE_REQBODY:
    case MODULE_HTTP_STATE_RESPHEADER:
        break;
    case MODULE_HTTP_STATE_RESPBODY:
        if (buffer && size > 0 && r->body_len + size < ABI_REPLY_MAX) {
            memcpy(r->body + r->body_len, buffer, (size_t)size);
            r->body_len += size;
            r->body[r->body_len] = '\0';
        }
        break;
    case MODULE_HTTP_STATE_DONE:
        abi_log(r->mod, 1, "http done at %" PRIdPTR "%%\n", progress);
        break;
    }
    return MESIBO_RESULT_OK;
}

static mesibo_int_t abi_http_on_status(void *cbdata, mesibo_int_t status, const char *response_type) {
    abi_request_t *r = (abi_request_t *)cbdata;
    r->status = status;
    abi_log(r->mod, 1, "http status %" PRIdPTR " (%s)\n", status, response_type ? response_type : "-");
    return MESIBO_RESULT_OK;
}

static void abi_http_on_close(void *cbdata, mesibo_int_t result) {
    abi_request_t *r = (abi_request_t *)cbdata;
    char *answer = NULL;
    char *next = NULL;
    if (result == MESIBO_RESULT_OK && r->status == 200)
        answer = mesibo_util_json_extract(r->body, r->body_len, "text", &next);
    if (answer) {
        abi_send_reply(r, answer, (mesibo_uint_t)strlen(answer));
        free(answer); /* json_extract hands over a malloc'd copy */
    }
    free(r);
}

/* ---- FastCGI -------------------------------------------------------------- */

static mesibo_int_t abi_fcgi_on_data(void *cbdata, mesibo_int_t result, const char *buffer, mesibo_int_t size) {
    abi_request_t *r = (abi_request_t *)cbdata;
    if (result < 0 || buffer == NULL) {
        free(r);
        return MESIBO_RESULT_FAIL;
    }
    abi_send_reply(r, buffer, (mesibo_uint_t)size);
    free(r);
    return MESIBO_RESULT_OK;
}

static void abi_fcgi_request(mesibo_module_t *m, abi_request_t *r, const char *host, char *body) {
    struct mesibo_fcgi_s req;
    mesibo_fcgi_t *f = &req;
    mesibo_fcgi_ondata_t on_data = abi_fcgi_on_data;
    memset(f, 0, sizeof(*f));
    f->USER = (char *)"abi";
    f->SCRIPT_FILENAME = (char *)"/srv/bot/index.php";
    f->QUERY_STRING = (char *)"";
    f->CONTENT_TYPE = (char *)"application/json";
    f->SCRIPT_NAME = (char *)"/index.php";
    f->REQUEST_URI = (char *)"/index.php";
    f->DOCUMENT_URI = (char *)"/index.php";
    f->DOCUMENT_ROOT = (char *)"/srv/bot";
    f->SERVER_PROTOCOL = (char *)"HTTP/1.1";
    f->REQUEST_SCHEME = (char *)"http";
    f->REMOTE_ADDR = (char *)"127.0.0.1";
    f->REMOTE_PORT = (char *)"0";
    f->SERVER_ADDR = (char *)"127.0.0.1";
    f->SERVER_PORT = (char *)"80";
    f->SERVER_NAME = (char *)"localhost";
    f->HTTP_HOST = (char *)"localhost";
    f->HTTP_CONNECTION = (char *)"keep-alive";
    f->HTTP_CACHE_CONTROL = (char *)"no-cache";
    f->HTTP_UPGRADE_INSECURE_REQUESTS = (char *)"0";
    f->HTTP_USER_AGENT = (char *)"abi-module";
    f->HTTP_ACCEPT = (char *)"*/*";
    f->HTTP_ACCEPT_ENCODING = (char *)"identity";
    f->HTTP_ACCEPT_LANGUAGE = (char *)"en";
    f->body = body;
    f->bodylen = (uint64_t)strlen(body);
    if (mesibo_util_fcgi(f, host, 9000, 1, on_data, r) != MESIBO_RESULT_OK) {
        mesibo_log(m, 0, "fcgi request to %s failed\n", host);
        free(r);
    }
}

/* ---- socket --------------------------------------------------------------- */

static void abi_socket_on_connect(void *cbdata, mesibo_int_t asock, mesibo_int_t fd) {
    mesibo_module_t *m = (mesibo_module_t *)cbdata;
    abi_log(m, 1, "socket %" PRIdPTR " connected on fd %" PRIdPTR "\n", asock, fd);
    mesibo_util_socket_write(asock, "hello\n", 6);
}

static void abi_socket_on_write(void *cbdata) {
    abi_log((mesibo_module_t *)cbdata, 2, "socket drained\n");
}

static mesibo_int_t abi_socket_on_data(void *cbdata, const char *data, mesibo_int_t len) {
    abi_log((mesibo_module_t *)cbdata, 1, "socket said %.*s\n", (int)len, data);
    return MESIBO_RESULT_OK;
}

static void abi_socket_on_close(void *cbdata, mesibo_int_t type) {
    mesibo_module_t *m = (mesibo_module_t *)cbdata;
    abi_state_t *s = (abi_state_t *)m->ctx;
    abi_log(m, 1, "socket closed (%" PRIdPTR ")\n", type);
    s->socket = -1;
}

static void abi_socket_open(mesibo_module_t *m, const char *url) {
    abi_state_t *s = (abi_state_t *)m->ctx;
    struct mesibo_socket_s sock;
    mesibo_socket_t *k = &sock;
    mesibo_socket_onconnect_t on_connect = abi_socket_on_connect;
    mesibo_socket_onwrite_t on_write = abi_socket_on_write;
    mesibo_socket_ondata_t on_data = abi_socket_on_data;
    mesibo_socket_onclose_t on_close = abi_socket_on_close;
    memset(k, 0, sizeof(*k));
    k->url = url;
    k->ws_protocol = NULL;
    k->keepalive = 1;
    k->verify_host = 1;
    k->ssl_ctx = NULL;
    k->on_connect = on_connect;
    k->on_write = on_write;
    k->on_data = on_data;
    k->on_close = on_close;
    s->socket = mesibo_util_socket_connect(k, m);
}

/* ---- a worker thread ------------------------------------------------------ */

static void *abi_worker(void *data) {
    mesibo_module_t *m = (mesibo_module_t *)data;
    mesibo_int_t started = mesibo_util_usec();
    abi_log(m, 1, "worker up after %" PRIdPTR " us\n", mesibo_util_usec() - started);
    return NULL;
}

/* ---- module callbacks ----------------------------------------------------- */

static mesibo_int_t abi_on_message(mesibo_module_t *m, mesibo_message_params_t *p, char *message, mesibo_uint_t len) {
    abi_state_t *s = (abi_state_t *)m->ctx;
    mesibo_http_ondata_t on_data = abi_http_on_data;
    mesibo_http_onstatus_t on_status = abi_http_on_status;
    mesibo_http_onclose_t on_close = abi_http_on_close;
    struct _mesibo_http_t req;
    mesibo_http_t *h = &req;
    abi_request_t *r;
    char *endpoint;

    if (p->flags & (MOD_MESIBO_MSGFLAG_PRESENCE | MOD_MESIBO_MSGFLAG_MEDIA | MOD_MESIBO_MSGFLAG_OUTGOING))
        return MESIBO_RESULT_PASS;
    if (s->address == NULL || p->to == NULL || strcmp(p->to, s->address) != 0) {
        /* Rewrite in place, same length: later modules and the recipient see it. */
        if (len > 0)
            message[0] = (char)toupper((unsigned char)message[0]);
        return MESIBO_RESULT_PASS;
    }
    if ((p->flags & MOD_MESIBO_MSGFLAG_TRANSIENT) && !(p->uflags & MOD_MESIBO_UFLAG_DESTONLINE))
        return MESIBO_RESULT_CONSUMED;

    /* Copy what the answer needs: params and their strings die with this call. */
    r = (abi_request_t *)calloc(1, sizeof(*r));
    if (r == NULL)
        return MESIBO_RESULT_PASS;
    r->mod = m;
    r->params = *p;
    abi_copy(r->to, sizeof(r->to), p->to);
    abi_copy(r->from, sizeof(r->from), p->from);

    if ((endpoint = mesibo_util_getconfig(m, "fcgi_host")) != NULL) {
        char body[ABI_REPLY_MAX];
        snprintf(body, sizeof(body), "%.*s", (int)len, message);
        abi_fcgi_request(m, r, endpoint, body);
        return MESIBO_RESULT_CONSUMED;
    }

    memset(h, 0, sizeof(*h));
    h->url = mesibo_util_getconfig(m, "endpoint");
    h->post = "{\"q\":1}";
    h->content_type = "application/json";
    h->extra_header = "Authorization: Bearer x";
    h->user_agent = "abi-module";
    h->referrer = NULL;
    h->origin = NULL;
    h->cookie = NULL;
    h->encoding = "identity";
    h->cache_control = "no-cache";
    h->accept = "application/json";
    h->etag = NULL;
    h->ims = 0;
    h->conn_timeout = 5;
    h->header_timeout = 5;
    h->body_timeout = 10;
    h->total_timeout = 20;
    h->on_data = on_data;
    h->on_status = on_status;
    h->on_close = on_close;
    if (h->url == NULL || mesibo_util_http(h, r) != MESIBO_RESULT_OK) {
        free(r);
        return MESIBO_RESULT_PASS;
    }
    return MESIBO_RESULT_CONSUMED;
}

static mesibo_int_t abi_on_message_status(mesibo_module_t *m, mesibo_message_params_t *p) {
    abi_state_t *s = (abi_state_t *)m->ctx;
    mesibo_uint_t status = p->status;
    const char *why = "failed";

    if (status == 1) { /* sent: the server accepted it (no named constant) */
        s->replies_sent++;
        return MESIBO_RESULT_OK;
    }
    if (status == MESIBO_MODULE_MSGSTATUS_DELIVERED || status == MESIBO_MODULE_MSGSTATUS_READ) {
        abi_log(m, 2, "reply %" PRIuPTR " %s\n", p->id, status == MESIBO_MODULE_MSGSTATUS_READ ? "read" : "delivered");
        return MESIBO_RESULT_OK;
    }
    if (status <= MESIBO_MODULE_MSGSTATUS_MAX) /* progress this module does not track */
        return MESIBO_RESULT_OK;
    if (status < MESIBO_MODULE_MSGSTATUS_FAIL || status > MESIBO_MODULE_MSGSTATUS_FAILMAX)
        return MESIBO_RESULT_OK; /* not a failure code of this ABI */
    if (status == MESIBO_MODULE_MSGSTATUS_NOTACTIVE) why = "recipient not active";
    else if (status == MESIBO_MODULE_MSGSTATUS_INBOXFULL) why = "inbox full";
    else if (status == MESIBO_MODULE_MSGSTATUS_INVALIDDEST) why = "no such destination";
    else if (status == MESIBO_MODULE_MSGSTATUS_NOINCOMING) why = "recipient takes no messages";
    else if (status == MESIBO_MODULE_MSGSTATUS_BLOCKED) why = "blocked";
    mesibo_log(m, 0, "reply %" PRIuPTR " to %s: %s\n", p->id, p->to ? p->to : "?", why);
    return MESIBO_RESULT_OK;
}

static mesibo_int_t abi_on_call(mesibo_module_t *m) {
    abi_log(m, 1, "call\n");
    return MESIBO_RESULT_OK;
}

static mesibo_int_t abi_on_call_status(mesibo_module_t *m) {
    abi_log(m, 1, "call status\n");
    return MESIBO_RESULT_OK;
}

static mesibo_int_t abi_on_login(mesibo_module_t *m, mesibo_user_t *user) {
    struct mesibo_user_s *u = user;
    abi_state_t *s = (abi_state_t *)m->ctx;
    char line[128];
    int n = snprintf(line, sizeof(line), "%s %s (flags %" PRIuPTR ")\n", u->address,
                     u->online ? "in" : "out", u->flags);
    if (s->socket > 0 && n > 0)
        mesibo_util_socket_write(s->socket, line, n);
    return MESIBO_RESULT_OK;
}

static mesibo_int_t abi_on_config(mesibo_module_t *m, mesibo_uint_t type, void *config) {
    abi_log(m, 1, "config %" PRIuPTR " at %p\n", type, config);
    return MESIBO_RESULT_OK;
}

static mesibo_int_t abi_on_cleanup(mesibo_module_t *m) {
    abi_state_t *s = (abi_state_t *)m->ctx;
    if (s->socket > 0)
        mesibo_util_socket_close(s->socket);
    abi_log(m, 1, "%" PRIuPTR " replies sent\n", s->replies_sent);
    free(s);
    m->ctx = NULL; /* m itself and its config belong to the server: never freed here */
    return MESIBO_RESULT_OK;
}

/* ---- init ------------------------------------------------------------------ */

MESIBO_EXPORT mesibo_int_t mesibo_module_abi_init(mesibo_int_t version, mesibo_module_t *m, mesibo_int_t len) {
    abi_state_t *s;
    const struct module_config_s *config;
    char *value;

    MESIBO_MODULE_SANITY_CHECK(m, version, len);

    s = (abi_state_t *)malloc(sizeof(*s));
    if (s == NULL) {
        mesibo_log(m, 0, "out of memory\n");
        return MESIBO_RESULT_FAIL;
    }
    *s = abi_state_initial;

    m->version = MESIBO_MODULE_VERSION;
    m->flags = MOD_MESIBO_FLAG_INCOMING | MOD_MESIBO_FLAG_OUTGOING;
    m->description = "every name in module.h";
    m->ctx = s;
    m->custom_fns = NULL;
    m->on_cleanup = abi_on_cleanup;
    m->on_message = abi_on_message;
    m->on_message_status = abi_on_message_status;
    m->on_call = abi_on_call;
    m->on_call_status = abi_on_call_status;
    m->on_login = abi_on_login;
    m->on_config = abi_on_config;

    config = m->config;
    abi_log_config(m, config);
    s->address = mesibo_util_getconfig(m, "address");
    if ((value = mesibo_util_getconfig(m, "socket_url")) != NULL)
        abi_socket_open(m, value);

    mesibo_util_create_thread(abi_worker, m, 256 * 1024, "abi-worker");
    mesibo_log(m, 0, "%s loaded (signature %" PRIxPTR " %s)\n", m->name, m->signature,
               m->signature == MESIBO_MODULE_SIGNATURE ? "matches" : "differs");
    return MESIBO_RESULT_OK;
}

/* The loader's view of the function above: if the two signatures drift
 * apart, the compiler complains here. */
const mesibo_module_init_fn mesibo_module_abi_init_check = mesibo_module_abi_init;
