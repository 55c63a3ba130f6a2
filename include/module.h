/*
 * module.h: the mesibo module ABI, as served by Switchboard.
 *
 * This one header is the whole contract between the server and a native
 * module. Module sources written for the mesibo on-premise server compile
 * against it unchanged (C or C++, `cc -shared -fPIC -I include`, no link
 * flags) and the resulting .so runs unchanged: every type, field order,
 * constant value and prototype below is a fact of that ABI, not a choice.
 * Where the mesibo user documentation shows an older signature (for example
 * a three-argument on_message_status, or mesibo_util_json_extract without a
 * length), this header has the signature real module sources compile
 * against.
 *
 * Switchboard-specific extensions will live in a separate header,
 * include/switchboard.h, so that this file stays exactly the mesibo ABI.
 *
 * How a module is loaded
 *   A module called NAME is the file mesibo_mod_NAME.so. It exports
 *   `mesibo_module_NAME_init` (see mesibo_module_init_fn). The server
 *   zero-fills a mesibo_module_t, sets `name`, `config`, `signature` and
 *   `invoke`, and calls init(MESIBO_MODULE_VERSION, m, sizeof(mesibo_module_t)).
 *   Init checks that it was built for this ABI (MESIBO_MODULE_SANITY_CHECK),
 *   fills in the callbacks it wants and returns MESIBO_RESULT_OK; anything
 *   else fails the load. Callbacks left NULL are never called.
 *
 * Threads
 *   Callbacks (on_* members, and the HTTP, FastCGI and socket callbacks)
 *   always run on the server's event-loop thread, one at a time. They must
 *   not block: every message in the server waits while one runs. Slow work
 *   belongs in a thread (mesibo_util_create_thread) or in the asynchronous
 *   helpers. The exported mesibo_* functions may be called from any thread,
 *   including threads the module started.
 *
 * Memory
 *   The server owns the mesibo_module_t and the configuration (the
 *   module_config_t and every name and value string in it); both live until
 *   after on_cleanup returns. A module never frees them. It may modify a
 *   configuration value in place (strtok, for example) but never grows it.
 *   Pointers the server passes into a callback are valid for the duration of
 *   that call only, unless stated otherwise below.
 */
#pragma once

#include <inttypes.h>
#include <time.h>
#include <stdarg.h>

/* Marks a function with C linkage so the server finds it by its plain name,
 * whether the module is compiled as C or as C++. Put it on your init
 * function in C++ sources. */
#ifdef __cplusplus
#define MESIBO_EXPORT extern "C"
#else
#define MESIBO_EXPORT
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Scalar types                                                              */
/* ------------------------------------------------------------------------ */

/* A signed integer as wide as a pointer (64 bits on LP64 systems). */
typedef intptr_t mesibo_int_t;

/* An unsigned integer as wide as a pointer (64 bits on LP64 systems). */
typedef uintptr_t mesibo_uint_t;

/* ------------------------------------------------------------------------ */
/* Constants                                                                 */
/* ------------------------------------------------------------------------ */

/* The value the server stores in mesibo_module_t.signature. A module that
 * finds anything else was handed a structure it does not understand. */
#define MESIBO_MODULE_SIGNATURE 0xAA55773388FF1100

/* The ABI version the server passes to init; this header describes version 1. */
#define MESIBO_MODULE_VERSION 1

/* Generic results of helpers and of init. */
#define MESIBO_RESULT_OK 0
#define MESIBO_RESULT_FAIL (-1)

/* What on_message returns: PASS hands the message (as the module left it) to
 * the next module and then to the recipient; CONSUMED stops it here, so no
 * later module and no recipient sees it. */
#define MESIBO_RESULT_PASS 0
#define MESIBO_RESULT_CONSUMED 1

/* Message status codes, found in mesibo_message_params_t.status in
 * on_message_status. "Sent" (the server accepted the message) is 1; it is
 * part of the wire protocol but has no name in this ABI. Codes from
 * MESIBO_MODULE_MSGSTATUS_FAIL up to MESIBO_MODULE_MSGSTATUS_FAILMAX are
 * failures: the message will not be delivered. */
#define MESIBO_MODULE_MSGSTATUS_DELIVERED 2      /* reached the recipient */
#define MESIBO_MODULE_MSGSTATUS_READ 3           /* the recipient read it */
#define MESIBO_MODULE_MSGSTATUS_MAX 3            /* highest non-failure status */
#define MESIBO_MODULE_MSGSTATUS_FAIL 0x80        /* failed; lowest failure code */
#define MESIBO_MODULE_MSGSTATUS_NOTACTIVE 0x81   /* the recipient is not active */
#define MESIBO_MODULE_MSGSTATUS_INBOXFULL 0x82   /* the recipient's inbox is full */
#define MESIBO_MODULE_MSGSTATUS_INVALIDDEST 0x83 /* no such destination */
#define MESIBO_MODULE_MSGSTATUS_NOINCOMING 0x86  /* the recipient takes no incoming messages */
#define MESIBO_MODULE_MSGSTATUS_BLOCKED 0x88     /* the sender is blocked */
#define MESIBO_MODULE_MSGSTATUS_FAILMAX 0x88     /* highest failure code */

/* Bits of mesibo_message_params_t.flags. */
#define MOD_MESIBO_MSGFLAG_DELIVERYRECEIPT 0x1 /* the sender wants a delivered status */
#define MOD_MESIBO_MSGFLAG_READRECEIPT 0x2     /* the sender wants a read status */
#define MOD_MESIBO_MSGFLAG_TRANSIENT 0x4       /* deliver only to recipients online now */
#define MOD_MESIBO_MSGFLAG_PRESENCE 0x8        /* a presence update, not content */
#define MOD_MESIBO_MSGFLAG_MEDIA 0x100         /* the message carries media */
/* The four flags above (0x1 to 0x8) OR'ed together. */
#define MOD_MESIBO_MSGFLAG_SENDMESSAGE                                          \
    (MOD_MESIBO_MSGFLAG_DELIVERYRECEIPT | MOD_MESIBO_MSGFLAG_READRECEIPT |      \
     MOD_MESIBO_MSGFLAG_TRANSIENT | MOD_MESIBO_MSGFLAG_PRESENCE)
#define MOD_MESIBO_MSGFLAG_OUTGOING 0x10000    /* the outgoing direction of a message */

/* Bits of mesibo_message_params_t.uflags. */
#define MOD_MESIBO_UFLAG_DESTONLINE 0x1 /* the recipient is online now */

/* Direction bits for mesibo_module_t.flags. */
#define MOD_MESIBO_FLAG_INCOMING 0x1
#define MOD_MESIBO_FLAG_OUTGOING 0x2

/* Eight zeros, for initialising the eight reserved words of a structure
 * (for example `uintptr_t r[8] = { MESIBO_MODULES_PADDING };`). */
#define MESIBO_MODULES_PADDING 0, 0, 0, 0, 0, 0, 0, 0

/* The first statement of every init function. When the server's ABI differs
 * from the one this module was compiled against, it logs why at level 0 and
 * returns MESIBO_RESULT_FAIL from the enclosing function, so the load fails
 * with a reason instead of the module misreading the structure. It checks,
 * in this order: the version ("module version mismatch"), the size of
 * mesibo_module_t ("module size mismatch") and m->signature ("module
 * signature mismatch"). `m`, `version` and `len` are the init arguments. */
#define MESIBO_MODULE_SANITY_CHECK(m, version, len)                             \
    do {                                                                        \
        if ((version) != MESIBO_MODULE_VERSION) {                               \
            mesibo_log((m), 0, "module version mismatch\n");                    \
            return MESIBO_RESULT_FAIL;                                          \
        }                                                                       \
        if ((size_t)(len) != sizeof(mesibo_module_t)) {                         \
            mesibo_log((m), 0, "module size mismatch\n");                       \
            return MESIBO_RESULT_FAIL;                                          \
        }                                                                       \
        if ((m)->signature != MESIBO_MODULE_SIGNATURE) {                        \
            mesibo_log((m), 0, "module signature mismatch\n");                  \
            return MESIBO_RESULT_FAIL;                                          \
        }                                                                       \
    } while (0)

/* ------------------------------------------------------------------------ */
/* Configuration                                                             */
/* ------------------------------------------------------------------------ */

/* The module structure, defined below; declared first so that callback
 * types can refer to it. */
typedef struct mesibo_module_s mesibo_module_t;

/* One `name = value` line of the module's block in the configuration file.
 * Both strings are NUL-terminated and owned by the server; `value` may be
 * modified in place but never freed or grown. */
typedef struct module_config_item_s {
    char *name;  /* the key, as written in the file */
    char *value; /* the value, trimmed of surrounding white space */
} module_config_item_t;

/* All items of the module's block, in file order. `count` items follow it in
 * the same allocation. Owned by the server; mesibo_module_t.config is NULL
 * when the block is absent. Use mesibo_util_getconfig() to look one up. */
typedef struct module_config_s {
    mesibo_int_t count; /* number of entries in items */
#if defined(__GNUC__)
    __extension__ /* the zero-length array is a GNU extension; keeps -pedantic quiet */
#endif
    module_config_item_t items[0]; /* `count` items, in the same allocation */
} module_config_t;

/* ------------------------------------------------------------------------ */
/* Callback types                                                            */
/* ------------------------------------------------------------------------ */

/* The signature of `mesibo_module_NAME_init`. The server calls it once,
 * right after loading, with MESIBO_MODULE_VERSION, the zero-filled module
 * structure and sizeof(mesibo_module_t). Return MESIBO_RESULT_OK to accept
 * the load, anything else to refuse it (log why with mesibo_log first). */
typedef mesibo_int_t (*mesibo_module_init_fn)(mesibo_int_t version, mesibo_module_t *mod, mesibo_int_t len);

/* Asynchronous helpers (mesibo_util_http, mesibo_util_fcgi and the socket
 * functions) return at once; their callbacks run later on the loop thread,
 * each with the `cbdata` pointer the module passed in. The module owns
 * cbdata; the server only hands it back. Buffers passed to a callback are
 * valid during that call only: copy what you keep. */

/* HTTP response data. `state` is a module_http_state_t saying which part of
 * the exchange `buffer` belongs to; `progress` runs from 0 to 100 (100 when
 * the response is complete) and is negative on error; `buffer` holds `size`
 * bytes (not NUL-terminated). Return MESIBO_RESULT_OK.
 *
 * The sequence of one request:
 *   success  on_status, on_data (progress rising, the last one 100),
 *            on_close(MESIBO_RESULT_OK): the last call.
 *   failure  (on_status and on_data calls that came before it), then
 *            on_close(MESIBO_RESULT_FAIL), then on_data with progress < 0 and
 *            size 0: the last call.
 * So free cbdata in on_close when result is MESIBO_RESULT_OK and in on_data
 * when progress < 0, as mesibo's own modules do (a request without on_data
 * ends with on_close either way). */
typedef mesibo_int_t (*mesibo_http_ondata_t)(void *cbdata, mesibo_int_t state, mesibo_int_t progress, const char *buffer, mesibo_int_t size);

/* HTTP response status line: `status` is the HTTP status code (200, 404, ...)
 * and `response_type` the Content-Type of the response, or NULL.
 * Return MESIBO_RESULT_OK. */
typedef mesibo_int_t (*mesibo_http_onstatus_t)(void *cbdata, mesibo_int_t status, const char *response_type);

/* The HTTP request is finished: `result` is MESIBO_RESULT_OK or
 * MESIBO_RESULT_FAIL (connection, protocol or timeout error). After OK this
 * is the last call. After FAIL, on_data follows with a negative progress
 * (when on_data is set): log here, and free cbdata there. */
typedef void (*mesibo_http_onclose_t)(void *cbdata, mesibo_int_t result);

/* The FastCGI response, in exactly one call per request (free cbdata here):
 * `result` MESIBO_RESULT_OK with `buffer` holding the `size` bytes the
 * application wrote on its standard output (headers, blank line, body; not
 * NUL-terminated), or MESIBO_RESULT_FAIL with `buffer` a NUL-terminated
 * description of the failure. There is no call per record and no empty call
 * at the end. The return value is ignored. */
typedef mesibo_int_t (*mesibo_fcgi_ondata_t)(void *cbdata, mesibo_int_t result, const char *buffer, mesibo_int_t size);

/* Bytes received on a socket: `data` holds `len` bytes (not NUL-terminated).
 * Return MESIBO_RESULT_OK. */
typedef mesibo_int_t (*mesibo_socket_ondata_t)(void *cbdata, const char *data, mesibo_int_t len);

/* Everything queued with mesibo_util_socket_write has been written. */
typedef void (*mesibo_socket_onwrite_t)(void *cbdata);

/* The socket is connected: `asock` is the socket handle to write to and
 * close, `fd` the underlying file descriptor, for information only. */
typedef void (*mesibo_socket_onconnect_t)(void *cbdata, mesibo_int_t asock, mesibo_int_t fd);

/* The socket is closed (by the peer, by an error or by the module);
 * `type` says why. This is the last call for the socket, so it is the place
 * to free cbdata. */
typedef void (*mesibo_socket_onclose_t)(void *cbdata, mesibo_int_t type);

/* Which part of an HTTP exchange a mesibo_http_ondata_t call is about. */
typedef enum {
    MODULE_HTTP_STATE_REQUEST,    /* 0: the request is being sent */
    MODULE_HTTP_STATE_REQBODY,    /* 1: the request body is being sent */
    MODULE_HTTP_STATE_RESPHEADER, /* 2: response headers are arriving */
    MODULE_HTTP_STATE_RESPBODY,   /* 3: response body bytes are in the buffer */
    MODULE_HTTP_STATE_DONE        /* 4: the exchange is complete */
} module_http_state_t;

/* ------------------------------------------------------------------------ */
/* Request structures for the asynchronous helpers                           */
/* ------------------------------------------------------------------------ */

/* An HTTP(S) request for mesibo_util_http(). Zero-fill it, then set what you
 * need: a NULL string is a header not sent, a zero timeout the server's
 * default. The server copies the structure and its strings before
 * mesibo_util_http returns, so they may live on the caller's stack. */
typedef struct _mesibo_http_t {
    const char *url;           /* http:// or https://; may carry user:password@ */
    const char *post;          /* request body; when set the request is a POST */
    const char *content_type;  /* Content-Type of the body */
    const char *extra_header;  /* further header lines, e.g. "Authorization: Bearer x" */
    const char *user_agent;    /* User-Agent */
    const char *referrer;      /* Referer */
    const char *origin;        /* Origin */
    const char *cookie;        /* Cookie */
    const char *encoding;      /* accepted Content-Encoding: gzip, deflate, br, identity */
    const char *cache_control; /* Cache-Control */
    const char *accept;        /* Accept */
    const char *etag;          /* If-None-Match */
    mesibo_uint_t ims;         /* If-Modified-Since, as a Unix time (0: not sent) */

    mesibo_uint_t conn_timeout;   /* limit for connecting */
    mesibo_uint_t header_timeout; /* limit for receiving the response headers */
    mesibo_uint_t body_timeout;   /* limit for receiving the response body */
    mesibo_uint_t total_timeout;  /* limit for the whole exchange */

    mesibo_http_ondata_t on_data;     /* response data (may be NULL) */
    mesibo_http_onstatus_t on_status; /* response status (may be NULL) */
    mesibo_http_onclose_t on_close;   /* end of the request (may be NULL) */
} mesibo_http_t;

/* A FastCGI request for mesibo_util_fcgi(): the standard CGI parameters sent
 * to the application server, then the request body. NULL parameters are not
 * sent. Copied by the server before mesibo_util_fcgi returns. */
typedef struct mesibo_fcgi_s {
    char *USER;
    char *SCRIPT_FILENAME;
    char *QUERY_STRING;
    char *CONTENT_TYPE;
    char *SCRIPT_NAME;
    char *REQUEST_URI;
    char *DOCUMENT_URI;
    char *DOCUMENT_ROOT;
    char *SERVER_PROTOCOL;
    char *REQUEST_SCHEME;
    char *REMOTE_ADDR;
    char *REMOTE_PORT;
    char *SERVER_ADDR;
    char *SERVER_PORT;
    char *SERVER_NAME;
    char *HTTP_HOST;
    char *HTTP_CONNECTION;
    char *HTTP_CACHE_CONTROL;
    char *HTTP_UPGRADE_INSECURE_REQUESTS;
    char *HTTP_USER_AGENT;
    char *HTTP_ACCEPT;
    char *HTTP_ACCEPT_ENCODING;
    char *HTTP_ACCEPT_LANGUAGE;

    char *body;       /* request body (stdin of the script), may be NULL */
    uint64_t bodylen; /* bytes in body */
} mesibo_fcgi_t;

/* A client connection for mesibo_util_socket_connect(): plain or TLS, raw or
 * WebSocket. Zero-fill it, then set what you need. Copied by the server
 * before mesibo_util_socket_connect returns. */
typedef struct mesibo_socket_s {
    const char *url;         /* where to connect */
    const char *ws_protocol; /* WebSocket subprotocol; NULL for a plain socket */
    mesibo_int_t keepalive;  /* non-zero: enable TCP keep-alive */
    mesibo_int_t verify_host; /* non-zero: verify the TLS certificate and host name */
    void *ssl_ctx;           /* an existing TLS context to use, or NULL for the server's */

    mesibo_socket_onconnect_t on_connect; /* connected (may be NULL) */
    mesibo_socket_onwrite_t on_write;     /* write queue drained (may be NULL) */
    mesibo_socket_ondata_t on_data;       /* bytes received (may be NULL) */
    mesibo_socket_onclose_t on_close;     /* closed; last call (may be NULL) */
} mesibo_socket_t;

/* ------------------------------------------------------------------------ */
/* Messages and users                                                        */
/* ------------------------------------------------------------------------ */

/* The envelope of one message. In on_message and on_message_status it is
 * owned by the server and valid during the call; a module that needs it
 * later copies it (and the strings it points to). For mesibo_message() the
 * module fills one in (zero-fill first) and keeps ownership. */
typedef struct mesibo_message_params_s {
    mesibo_uint_t aid;     /* application id */
    mesibo_uint_t id;      /* the 32-bit message id chosen by the sender */
    mesibo_uint_t refid;   /* id of the message this one refers to (a reply), or 0 */
    mesibo_uint_t groupid; /* group the message is for, or 0 for one-to-one */
    mesibo_uint_t flags;   /* MOD_MESIBO_MSGFLAG_* bits */
    mesibo_uint_t type;    /* application-defined message type */
    mesibo_uint_t expiry;  /* time to live, in seconds */
    mesibo_uint_t uflags;  /* MOD_MESIBO_UFLAG_* bits (DESTONLINE: recipient online) */
    mesibo_uint_t status;  /* in on_message_status: 1 (sent) or MESIBO_MODULE_MSGSTATUS_* */
    mesibo_uint_t sid;     /* server-assigned id; leave 0 when sending */
    mesibo_uint_t device;  /* the sender's device; leave 0 when sending */

    uintptr_t reserved_0; /* reserved: leave zero */
    uintptr_t reserved_1;
    uintptr_t reserved_2;
    uintptr_t reserved_3;

    char *to;   /* recipient address (NUL-terminated) */
    char *from; /* sender address (NUL-terminated); in on_message, the authenticated sender */
} mesibo_message_params_t;

/* A user logging in or out, passed to on_login. Owned by the server and
 * valid during the call. */
typedef struct mesibo_user_s {
    mesibo_uint_t flags;  /* user flags */
    mesibo_int_t online;  /* non-zero: the user logged in; 0: logged out */
    char *address;        /* the user's address (NUL-terminated) */

    uintptr_t reserved_0; /* reserved: leave zero */
    uintptr_t reserved_1;
    uintptr_t reserved_2;
    uintptr_t reserved_3;
} mesibo_user_t;

/* ------------------------------------------------------------------------ */
/* The module                                                                */
/* ------------------------------------------------------------------------ */

/* One loaded module instance. The server allocates and zero-fills it, owns
 * it (never free it) and keeps it until after on_cleanup. The same .so
 * configured twice gets two of these, each with its own config and ctx.
 * Init fills in the rest; callbacks it leaves NULL are not called. */
struct mesibo_module_s {
    mesibo_uint_t version; /* module API version: init sets MESIBO_MODULE_VERSION */
    mesibo_uint_t flags;   /* MOD_MESIBO_FLAG_* bits (set by init) */

    const char *name;        /* instance name, set by the server; do not change or free */
    const char *description; /* one line about the module, set by init; must stay
                                valid while the module is loaded */
    void *ctx;               /* the module's own state; the server never touches it */
    module_config_t *config; /* configuration block, set by the server; NULL when empty */

    /* The server is unloading the module (shutdown). Release everything the
     * module allocated; the structure and config are still valid during
     * the call. Return MESIBO_RESULT_OK. */
    mesibo_int_t (*on_cleanup)(mesibo_module_t *mod);

    /* A message is passing through the chain. `message` is a writable buffer
     * of `len` bytes (Switchboard keeps a NUL after it, but do not rely on
     * one): the module may rewrite it in place to the same or a shorter
     * length, and later modules and the recipient see the change. To
     * shorten a text payload, write a NUL at the new end: when the payload
     * held no NUL byte before, the server takes the first NUL as its new
     * length. Return MESIBO_RESULT_PASS or
     * MESIBO_RESULT_CONSUMED. Must not block: copy and hand slow work off. */
    mesibo_int_t (*on_message)(mesibo_module_t *mod, mesibo_message_params_t *params, char *message, mesibo_uint_t len);

    /* A status update for a message: params->id is the message's id and
     * params->status the status (1 for sent, or MESIBO_MODULE_MSGSTATUS_*);
     * params is valid during the call. The server also passes the status
     * as a third mesibo_uint_t argument, so a C module written with the
     * three-argument form shown in some documentation still works.
     * Switchboard calls it on every instance that set it, for every
     * status, not only for messages this module sent (audit and receipt
     * modules want them all): compare params->from or params->id with your
     * own to pick out yours. Return MESIBO_RESULT_OK. */
    mesibo_int_t (*on_message_status)(mesibo_module_t *mod, mesibo_message_params_t *params);

    /* Call events. This ABI generation passes no call details. */
    mesibo_int_t (*on_call)(mesibo_module_t *mod);
    mesibo_int_t (*on_call_status)(mesibo_module_t *mod);

    /* A user logged in (user->online non-zero) or out (0). Return MESIBO_RESULT_OK. */
    mesibo_int_t (*on_login)(mesibo_module_t *mod, mesibo_user_t *user);

    /* A configuration notification; `type` says what `config` points to.
     * `config` is owned by the server and valid during the call. */
    mesibo_int_t (*on_config)(mesibo_module_t *mod, mesibo_uint_t type, void *config);

    void *custom_fns; /* for the module's own use; the ABI gives it no meaning */

    mesibo_uint_t signature; /* MESIBO_MODULE_SIGNATURE, set by the server */

    uintptr_t reserved_0; /* reserved: leave as the server set them */
    uintptr_t reserved_1;
    uintptr_t reserved_2;
    uintptr_t reserved_3;
    uintptr_t reserved_4;
    uintptr_t reserved_5;
    uintptr_t reserved_6;
    uintptr_t reserved_7;

    /* Set by the server for its own use; modules call the exported functions
     * below instead and never change this. */
    mesibo_int_t (*invoke)(mesibo_int_t id, mesibo_module_t *mod, ...);
};

/* ------------------------------------------------------------------------ */
/* Functions the server exports                                              */
/* ------------------------------------------------------------------------ */
/* A module calls these without linking against anything: the symbols are
 * resolved from the server when the module is loaded. All of them may be
 * called from any thread. */

/* Send a message from the module, from `p->from` to `p->to` (or to
 * `p->groupid`). The message enters the chain after the calling module, so
 * the module never sees its own output; its statuses come back through
 * on_message_status with the same p->id. The server copies `p`, the strings
 * it points to and the `len` bytes of `message` before returning; the
 * caller keeps ownership of all of them.
 * Returns MESIBO_RESULT_OK when queued, MESIBO_RESULT_FAIL otherwise. */
MESIBO_EXPORT mesibo_int_t mesibo_message(mesibo_module_t *mod, mesibo_message_params_t *p, const char *message, mesibo_uint_t len);

/* Log a printf-style line. Level 0 is always printed; a higher level only
 * when the module's `log` configuration item is at least that level.
 * Returns MESIBO_RESULT_OK or MESIBO_RESULT_FAIL. */
MESIBO_EXPORT mesibo_int_t mesibo_log(mesibo_module_t *mod, mesibo_uint_t level, const char *format, ...);

/* mesibo_log with a va_list, for modules that wrap logging in their own
 * variadic function. Does not va_end `args`. */
MESIBO_EXPORT mesibo_int_t mesibo_vlog(mesibo_module_t *mod, mesibo_uint_t level, const char *format, va_list args);

/* Start an HTTP(S) request. Returns MESIBO_RESULT_OK when the request was
 * started, MESIBO_RESULT_FAIL when it could not be (no callback then runs).
 * Asynchronous: req->on_status, req->on_data and req->on_close run later on
 * the loop thread with `cbdata`, in the order described at
 * mesibo_http_ondata_t. */
MESIBO_EXPORT mesibo_int_t mesibo_util_http(mesibo_http_t *req, void *cbdata);

/* Send a FastCGI request to the application server at host:port (keepalive
 * non-zero: reuse the connection). CGI variables the module leaves NULL are
 * derived (SCRIPT_FILENAME from DOCUMENT_ROOT and SCRIPT_NAME, REQUEST_URI,
 * ...), and REQUEST_METHOD and CONTENT_LENGTH follow from the body.
 * Returns MESIBO_RESULT_OK or MESIBO_RESULT_FAIL (no callback then).
 * Asynchronous: `cb` runs once, later, on the loop thread with `cbdata`,
 * when the response is complete or the request failed. */
MESIBO_EXPORT mesibo_int_t mesibo_util_fcgi(mesibo_fcgi_t *req, const char *host, mesibo_int_t port, mesibo_int_t keepalive, mesibo_fcgi_ondata_t cb, void *cbdata);

/* Open a client connection. Returns a socket handle (> 0) for
 * mesibo_util_socket_write and mesibo_util_socket_close, or -1.
 * Asynchronous: sock->on_connect, on_data, on_write and on_close run later
 * on the loop thread with `cbdata`. */
MESIBO_EXPORT mesibo_int_t mesibo_util_socket_connect(mesibo_socket_t *sock, void *cbdata);

/* Queue `len` bytes of `data` on socket `sock`; the bytes are copied before
 * returning. Returns MESIBO_RESULT_OK or MESIBO_RESULT_FAIL (unknown or
 * closed socket). */
MESIBO_EXPORT mesibo_int_t mesibo_util_socket_write(mesibo_int_t sock, const char *data, mesibo_int_t len);

/* Close socket `sock`. */
MESIBO_EXPORT void mesibo_util_socket_close(mesibo_int_t sock);

/* The value of configuration item `item_name` in this module's block, or
 * NULL when there is none. The string is the server-owned value itself (not
 * a copy): valid until after on_cleanup, modifiable in place, never freed. */
MESIBO_EXPORT char *mesibo_util_getconfig(mesibo_module_t *mod, const char *item_name);

/* Find `key` in the JSON text `src` of `len` bytes and return its value (a
 * string without its quotes, or a scalar as written) as a new
 * NUL-terminated string allocated with malloc(): the caller frees it with
 * free(). Returns NULL when the key is not found. When `next` is not NULL
 * it receives the position in `src` just after the match, for finding the
 * next occurrence. */
MESIBO_EXPORT char *mesibo_util_json_extract(char *src, mesibo_int_t len, const char *key, char **next);

/* Start a detached thread running fn(data), with a stack of `stacksize`
 * bytes and `name` as its name in debuggers and process listings. The
 * thread may call every exported function; it must not touch a callback's
 * arguments after that callback has returned. */
MESIBO_EXPORT void mesibo_util_create_thread(void *(*fn)(void *), void *data, size_t stacksize, const char *name);

/* The time in microseconds; the difference of two calls times something. */
MESIBO_EXPORT mesibo_int_t mesibo_util_usec(void);

#ifdef __cplusplus
}
#endif
