/*
 * layout.c: the binary layout of include/module.h, checked against the
 * module ABI specification on an LP64 system (x86_64, aarch64).
 *
 * A mesibo module is compiled once against mesibo's header and loaded by
 * Switchboard, so every offset below is what a compiled module will read
 * and write: a field that moves by one word breaks every module silently.
 * The expected values are written out by hand from the specification (one
 * pointer-sized word per field, in declaration order), never computed from
 * the header under test.
 *
 * Also checked: the value of every constant and enum member, the exact
 * type of every field, callback and exported function (in C11 and C++),
 * and what MESIBO_MODULE_SANITY_CHECK does for each kind of mismatch.
 *
 * Built as C (gcc layout.c) and as C++ (g++ layout.cc, which includes this
 * file). Prints one line per failed check, then "N passed, N failed", and
 * exits non-zero when anything failed. It calls no server function: the
 * one it needs, mesibo_log, is defined here to record what it was asked to
 * log.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "module.h"

#if defined(__cplusplus)
#include <type_traits>
#define SAME_TYPE(expr, type) (std::is_same<decltype(expr), type>::value)
#elif defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
#define SAME_TYPE(expr, type) _Generic((expr), type: 1, default: 0)
#else
/* C99 has no way to compare types; the size is the best it can do. */
#define SAME_TYPE(expr, type) (sizeof(expr) == sizeof(type))
#endif

static int passed, failed;

#if defined(__GNUC__)
static void check(int ok, const char *format, ...) __attribute__((format(printf, 2, 3)));
#endif

/* Counts one check; prints its description only when it failed. */
static void check(int ok, const char *format, ...) {
    va_list args;
    if (ok) {
        passed++;
        return;
    }
    failed++;
    printf("FAIL ");
    va_start(args, format);
    vprintf(format, args);
    va_end(args);
    printf("\n");
}

/* ---- the types the specification gives, written out independently ---- */

typedef mesibo_int_t (*spec_on_cleanup_t)(mesibo_module_t *mod);
typedef mesibo_int_t (*spec_on_message_t)(mesibo_module_t *mod, mesibo_message_params_t *params, char *message, mesibo_uint_t len);
typedef mesibo_int_t (*spec_on_message_status_t)(mesibo_module_t *mod, mesibo_message_params_t *params);
typedef mesibo_int_t (*spec_on_call_t)(mesibo_module_t *mod);
typedef mesibo_int_t (*spec_on_login_t)(mesibo_module_t *mod, mesibo_user_t *user);
typedef mesibo_int_t (*spec_on_config_t)(mesibo_module_t *mod, mesibo_uint_t type, void *config);
typedef mesibo_int_t (*spec_invoke_t)(mesibo_int_t id, mesibo_module_t *mod, ...);

typedef mesibo_int_t (*spec_init_t)(mesibo_int_t version, mesibo_module_t *mod, mesibo_int_t len);
typedef mesibo_int_t (*spec_http_ondata_t)(void *cbdata, mesibo_int_t state, mesibo_int_t progress, const char *buffer, mesibo_int_t size);
typedef mesibo_int_t (*spec_http_onstatus_t)(void *cbdata, mesibo_int_t status, const char *response_type);
typedef void (*spec_http_onclose_t)(void *cbdata, mesibo_int_t result);
typedef mesibo_int_t (*spec_fcgi_ondata_t)(void *cbdata, mesibo_int_t result, const char *buffer, mesibo_int_t size);
typedef mesibo_int_t (*spec_socket_ondata_t)(void *cbdata, const char *data, mesibo_int_t len);
typedef void (*spec_socket_onwrite_t)(void *cbdata);
typedef void (*spec_socket_onconnect_t)(void *cbdata, mesibo_int_t asock, mesibo_int_t fd);
typedef void (*spec_socket_onclose_t)(void *cbdata, mesibo_int_t type);

typedef mesibo_int_t (*spec_message_fn)(mesibo_module_t *mod, mesibo_message_params_t *p, const char *message, mesibo_uint_t len);
typedef mesibo_int_t (*spec_log_fn)(mesibo_module_t *mod, mesibo_uint_t level, const char *format, ...);
typedef mesibo_int_t (*spec_vlog_fn)(mesibo_module_t *mod, mesibo_uint_t level, const char *format, va_list args);
typedef mesibo_int_t (*spec_http_fn)(mesibo_http_t *req, void *cbdata);
typedef mesibo_int_t (*spec_fcgi_fn)(mesibo_fcgi_t *req, const char *host, mesibo_int_t port, mesibo_int_t keepalive, mesibo_fcgi_ondata_t cb, void *cbdata);
typedef mesibo_int_t (*spec_socket_connect_fn)(mesibo_socket_t *sock, void *cbdata);
typedef mesibo_int_t (*spec_socket_write_fn)(mesibo_int_t sock, const char *data, mesibo_int_t len);
typedef void (*spec_socket_close_fn)(mesibo_int_t sock);
typedef char *(*spec_getconfig_fn)(mesibo_module_t *mod, const char *item_name);
typedef char *(*spec_json_extract_fn)(char *src, mesibo_int_t len, const char *key, char **next);
typedef void (*spec_create_thread_fn)(void *(*fn)(void *), void *data, size_t stacksize, const char *name);
typedef mesibo_int_t (*spec_usec_fn)(void);

/* ---- scalar types ---- */

static void check_scalars(void) {
    check(sizeof(void *) == 8, "this test expects an LP64 system (pointer size %u)", (unsigned)sizeof(void *));
    check(SAME_TYPE((mesibo_int_t)0, intptr_t) && sizeof(mesibo_int_t) == 8 && (mesibo_int_t)-1 < 0,
          "mesibo_int_t is intptr_t");
    check(SAME_TYPE((mesibo_uint_t)0, uintptr_t) && sizeof(mesibo_uint_t) == 8 && (mesibo_uint_t)-1 > 0,
          "mesibo_uint_t is uintptr_t");
}

/* ---- layout: every field of every structure ---- */

/* One row of the expected layout: where a field starts, how big it is and
 * its exact type. Every field of this ABI is one 8-byte word on LP64. */
#define FIELD(T, f, offset, type)                                                          \
    check(offsetof(T, f) == (offset) && sizeof(((T *)0)->f) == 8 && SAME_TYPE(((T *)0)->f, type), \
          #T "." #f ": expected offset %u, size 8, type " #type "; got offset %u, size %u%s", \
          (unsigned)(offset), (unsigned)offsetof(T, f), (unsigned)sizeof(((T *)0)->f),       \
          SAME_TYPE(((T *)0)->f, type) ? "" : ", another type")
#define SIZE(T, size)                                                                      \
    check(sizeof(T) == (size), "sizeof(" #T ") expected %u, got %u", (unsigned)(size), (unsigned)sizeof(T))

static void check_config_layout(void) {
    FIELD(module_config_item_t, name, 0, char *);
    FIELD(module_config_item_t, value, 8, char *);
    SIZE(module_config_item_t, 16);

    FIELD(module_config_t, count, 0, mesibo_int_t);
    /* items is a zero-length array: it takes no room and follows count. */
    check(offsetof(module_config_t, items) == 8 && sizeof(((module_config_t *)0)->items[0]) == sizeof(module_config_item_t),
          "module_config_t.items: expected module_config_item_t[] at offset 8, got offset %u",
          (unsigned)offsetof(module_config_t, items));
    SIZE(module_config_t, 8);
}

static void check_message_params_layout(void) {
    FIELD(mesibo_message_params_t, aid, 0, mesibo_uint_t);
    FIELD(mesibo_message_params_t, id, 8, mesibo_uint_t);
    FIELD(mesibo_message_params_t, refid, 16, mesibo_uint_t);
    FIELD(mesibo_message_params_t, groupid, 24, mesibo_uint_t);
    FIELD(mesibo_message_params_t, flags, 32, mesibo_uint_t);
    FIELD(mesibo_message_params_t, type, 40, mesibo_uint_t);
    FIELD(mesibo_message_params_t, expiry, 48, mesibo_uint_t);
    FIELD(mesibo_message_params_t, uflags, 56, mesibo_uint_t);
    FIELD(mesibo_message_params_t, status, 64, mesibo_uint_t);
    FIELD(mesibo_message_params_t, sid, 72, mesibo_uint_t);
    FIELD(mesibo_message_params_t, device, 80, mesibo_uint_t);
    FIELD(mesibo_message_params_t, reserved_0, 88, uintptr_t);
    FIELD(mesibo_message_params_t, reserved_1, 96, uintptr_t);
    FIELD(mesibo_message_params_t, reserved_2, 104, uintptr_t);
    FIELD(mesibo_message_params_t, reserved_3, 112, uintptr_t);
    FIELD(mesibo_message_params_t, to, 120, char *);
    FIELD(mesibo_message_params_t, from, 128, char *);
    SIZE(mesibo_message_params_t, 136);
}

static void check_user_layout(void) {
    FIELD(mesibo_user_t, flags, 0, mesibo_uint_t);
    FIELD(mesibo_user_t, online, 8, mesibo_int_t);
    FIELD(mesibo_user_t, address, 16, char *);
    FIELD(mesibo_user_t, reserved_0, 24, uintptr_t);
    FIELD(mesibo_user_t, reserved_1, 32, uintptr_t);
    FIELD(mesibo_user_t, reserved_2, 40, uintptr_t);
    FIELD(mesibo_user_t, reserved_3, 48, uintptr_t);
    SIZE(mesibo_user_t, 56);
}

static void check_http_layout(void) {
    FIELD(mesibo_http_t, url, 0, const char *);
    FIELD(mesibo_http_t, post, 8, const char *);
    FIELD(mesibo_http_t, content_type, 16, const char *);
    FIELD(mesibo_http_t, extra_header, 24, const char *);
    FIELD(mesibo_http_t, user_agent, 32, const char *);
    FIELD(mesibo_http_t, referrer, 40, const char *);
    FIELD(mesibo_http_t, origin, 48, const char *);
    FIELD(mesibo_http_t, cookie, 56, const char *);
    FIELD(mesibo_http_t, encoding, 64, const char *);
    FIELD(mesibo_http_t, cache_control, 72, const char *);
    FIELD(mesibo_http_t, accept, 80, const char *);
    FIELD(mesibo_http_t, etag, 88, const char *);
    FIELD(mesibo_http_t, ims, 96, mesibo_uint_t);
    FIELD(mesibo_http_t, conn_timeout, 104, mesibo_uint_t);
    FIELD(mesibo_http_t, header_timeout, 112, mesibo_uint_t);
    FIELD(mesibo_http_t, body_timeout, 120, mesibo_uint_t);
    FIELD(mesibo_http_t, total_timeout, 128, mesibo_uint_t);
    FIELD(mesibo_http_t, on_data, 136, spec_http_ondata_t);
    FIELD(mesibo_http_t, on_status, 144, spec_http_onstatus_t);
    FIELD(mesibo_http_t, on_close, 152, spec_http_onclose_t);
    SIZE(mesibo_http_t, 160);
}

static void check_fcgi_layout(void) {
    FIELD(mesibo_fcgi_t, USER, 0, char *);
    FIELD(mesibo_fcgi_t, SCRIPT_FILENAME, 8, char *);
    FIELD(mesibo_fcgi_t, QUERY_STRING, 16, char *);
    FIELD(mesibo_fcgi_t, CONTENT_TYPE, 24, char *);
    FIELD(mesibo_fcgi_t, SCRIPT_NAME, 32, char *);
    FIELD(mesibo_fcgi_t, REQUEST_URI, 40, char *);
    FIELD(mesibo_fcgi_t, DOCUMENT_URI, 48, char *);
    FIELD(mesibo_fcgi_t, DOCUMENT_ROOT, 56, char *);
    FIELD(mesibo_fcgi_t, SERVER_PROTOCOL, 64, char *);
    FIELD(mesibo_fcgi_t, REQUEST_SCHEME, 72, char *);
    FIELD(mesibo_fcgi_t, REMOTE_ADDR, 80, char *);
    FIELD(mesibo_fcgi_t, REMOTE_PORT, 88, char *);
    FIELD(mesibo_fcgi_t, SERVER_ADDR, 96, char *);
    FIELD(mesibo_fcgi_t, SERVER_PORT, 104, char *);
    FIELD(mesibo_fcgi_t, SERVER_NAME, 112, char *);
    FIELD(mesibo_fcgi_t, HTTP_HOST, 120, char *);
    FIELD(mesibo_fcgi_t, HTTP_CONNECTION, 128, char *);
    FIELD(mesibo_fcgi_t, HTTP_CACHE_CONTROL, 136, char *);
    FIELD(mesibo_fcgi_t, HTTP_UPGRADE_INSECURE_REQUESTS, 144, char *);
    FIELD(mesibo_fcgi_t, HTTP_USER_AGENT, 152, char *);
    FIELD(mesibo_fcgi_t, HTTP_ACCEPT, 160, char *);
    FIELD(mesibo_fcgi_t, HTTP_ACCEPT_ENCODING, 168, char *);
    FIELD(mesibo_fcgi_t, HTTP_ACCEPT_LANGUAGE, 176, char *);
    FIELD(mesibo_fcgi_t, body, 184, char *);
    FIELD(mesibo_fcgi_t, bodylen, 192, uint64_t);
    SIZE(mesibo_fcgi_t, 200);
}

static void check_socket_layout(void) {
    FIELD(mesibo_socket_t, url, 0, const char *);
    FIELD(mesibo_socket_t, ws_protocol, 8, const char *);
    FIELD(mesibo_socket_t, keepalive, 16, mesibo_int_t);
    FIELD(mesibo_socket_t, verify_host, 24, mesibo_int_t);
    FIELD(mesibo_socket_t, ssl_ctx, 32, void *);
    FIELD(mesibo_socket_t, on_connect, 40, spec_socket_onconnect_t);
    FIELD(mesibo_socket_t, on_write, 48, spec_socket_onwrite_t);
    FIELD(mesibo_socket_t, on_data, 56, spec_socket_ondata_t);
    FIELD(mesibo_socket_t, on_close, 64, spec_socket_onclose_t);
    SIZE(mesibo_socket_t, 72);
}

static void check_module_layout(void) {
    FIELD(mesibo_module_t, version, 0, mesibo_uint_t);
    FIELD(mesibo_module_t, flags, 8, mesibo_uint_t);
    FIELD(mesibo_module_t, name, 16, const char *);
    FIELD(mesibo_module_t, description, 24, const char *);
    FIELD(mesibo_module_t, ctx, 32, void *);
    FIELD(mesibo_module_t, config, 40, module_config_t *);
    FIELD(mesibo_module_t, on_cleanup, 48, spec_on_cleanup_t);
    FIELD(mesibo_module_t, on_message, 56, spec_on_message_t);
    FIELD(mesibo_module_t, on_message_status, 64, spec_on_message_status_t);
    FIELD(mesibo_module_t, on_call, 72, spec_on_call_t);
    FIELD(mesibo_module_t, on_call_status, 80, spec_on_call_t);
    FIELD(mesibo_module_t, on_login, 88, spec_on_login_t);
    FIELD(mesibo_module_t, on_config, 96, spec_on_config_t);
    FIELD(mesibo_module_t, custom_fns, 104, void *);
    FIELD(mesibo_module_t, signature, 112, mesibo_uint_t);
    FIELD(mesibo_module_t, reserved_0, 120, uintptr_t);
    FIELD(mesibo_module_t, reserved_1, 128, uintptr_t);
    FIELD(mesibo_module_t, reserved_2, 136, uintptr_t);
    FIELD(mesibo_module_t, reserved_3, 144, uintptr_t);
    FIELD(mesibo_module_t, reserved_4, 152, uintptr_t);
    FIELD(mesibo_module_t, reserved_5, 160, uintptr_t);
    FIELD(mesibo_module_t, reserved_6, 168, uintptr_t);
    FIELD(mesibo_module_t, reserved_7, 176, uintptr_t);
    FIELD(mesibo_module_t, invoke, 184, spec_invoke_t);
    SIZE(mesibo_module_t, 192);
    check(SAME_TYPE((struct mesibo_module_s *)0, mesibo_module_t *), "mesibo_module_t is struct mesibo_module_s");
}

/* ---- callback typedefs and exported functions ---- */

#define TYPEDEF_IS(name, spec) check(SAME_TYPE((name)0, spec), #name " has the specified signature")
#define FUNCTION_IS(fn, spec) check(SAME_TYPE(&fn, spec), #fn " has the specified prototype")

static void check_signatures(void) {
    TYPEDEF_IS(mesibo_module_init_fn, spec_init_t);
    TYPEDEF_IS(mesibo_http_ondata_t, spec_http_ondata_t);
    TYPEDEF_IS(mesibo_http_onstatus_t, spec_http_onstatus_t);
    TYPEDEF_IS(mesibo_http_onclose_t, spec_http_onclose_t);
    TYPEDEF_IS(mesibo_fcgi_ondata_t, spec_fcgi_ondata_t);
    TYPEDEF_IS(mesibo_socket_ondata_t, spec_socket_ondata_t);
    TYPEDEF_IS(mesibo_socket_onwrite_t, spec_socket_onwrite_t);
    TYPEDEF_IS(mesibo_socket_onconnect_t, spec_socket_onconnect_t);
    TYPEDEF_IS(mesibo_socket_onclose_t, spec_socket_onclose_t);

    FUNCTION_IS(mesibo_message, spec_message_fn);
    FUNCTION_IS(mesibo_log, spec_log_fn);
    FUNCTION_IS(mesibo_vlog, spec_vlog_fn);
    FUNCTION_IS(mesibo_util_http, spec_http_fn);
    FUNCTION_IS(mesibo_util_fcgi, spec_fcgi_fn);
    FUNCTION_IS(mesibo_util_socket_connect, spec_socket_connect_fn);
    FUNCTION_IS(mesibo_util_socket_write, spec_socket_write_fn);
    FUNCTION_IS(mesibo_util_socket_close, spec_socket_close_fn);
    FUNCTION_IS(mesibo_util_getconfig, spec_getconfig_fn);
    FUNCTION_IS(mesibo_util_json_extract, spec_json_extract_fn);
    FUNCTION_IS(mesibo_util_create_thread, spec_create_thread_fn);
    FUNCTION_IS(mesibo_util_usec, spec_usec_fn);
}

/* ---- constants ---- */

#define CONSTANT(name, value)                                                                 \
    check((long long)(name) == (long long)(value), #name " expected %lld, got %lld", (long long)(value), \
          (long long)(name))

static void check_constants(void) {
    check((unsigned long long)MESIBO_MODULE_SIGNATURE == 0xAA55773388FF1100ULL &&
              (mesibo_uint_t)MESIBO_MODULE_SIGNATURE == 0xAA55773388FF1100ULL,
          "MESIBO_MODULE_SIGNATURE expected 0xAA55773388FF1100, got 0x%llx",
          (unsigned long long)MESIBO_MODULE_SIGNATURE);
    CONSTANT(MESIBO_MODULE_VERSION, 1);
    CONSTANT(MESIBO_RESULT_OK, 0);
    CONSTANT(MESIBO_RESULT_FAIL, -1);
    CONSTANT(MESIBO_RESULT_PASS, 0);
    CONSTANT(MESIBO_RESULT_CONSUMED, 1);

    CONSTANT(MESIBO_MODULE_MSGSTATUS_DELIVERED, 2);
    CONSTANT(MESIBO_MODULE_MSGSTATUS_READ, 3);
    CONSTANT(MESIBO_MODULE_MSGSTATUS_MAX, 3);
    CONSTANT(MESIBO_MODULE_MSGSTATUS_FAIL, 0x80);
    CONSTANT(MESIBO_MODULE_MSGSTATUS_NOTACTIVE, 0x81);
    CONSTANT(MESIBO_MODULE_MSGSTATUS_INBOXFULL, 0x82);
    CONSTANT(MESIBO_MODULE_MSGSTATUS_INVALIDDEST, 0x83);
    CONSTANT(MESIBO_MODULE_MSGSTATUS_NOINCOMING, 0x86);
    CONSTANT(MESIBO_MODULE_MSGSTATUS_BLOCKED, 0x88);
    CONSTANT(MESIBO_MODULE_MSGSTATUS_FAILMAX, 0x88);

    CONSTANT(MOD_MESIBO_MSGFLAG_DELIVERYRECEIPT, 0x1);
    CONSTANT(MOD_MESIBO_MSGFLAG_READRECEIPT, 0x2);
    CONSTANT(MOD_MESIBO_MSGFLAG_TRANSIENT, 0x4);
    CONSTANT(MOD_MESIBO_MSGFLAG_PRESENCE, 0x8);
    CONSTANT(MOD_MESIBO_MSGFLAG_MEDIA, 0x100);
    CONSTANT(MOD_MESIBO_MSGFLAG_SENDMESSAGE, 0x1 | 0x2 | 0x4 | 0x8);
    CONSTANT(MOD_MESIBO_MSGFLAG_OUTGOING, 0x10000);
    CONSTANT(MOD_MESIBO_UFLAG_DESTONLINE, 0x1);
    CONSTANT(MOD_MESIBO_FLAG_INCOMING, 0x1);
    CONSTANT(MOD_MESIBO_FLAG_OUTGOING, 0x2);

    CONSTANT(MODULE_HTTP_STATE_REQUEST, 0);
    CONSTANT(MODULE_HTTP_STATE_REQBODY, 1);
    CONSTANT(MODULE_HTTP_STATE_RESPHEADER, 2);
    CONSTANT(MODULE_HTTP_STATE_RESPBODY, 3);
    CONSTANT(MODULE_HTTP_STATE_DONE, 4);
    check(SAME_TYPE(MODULE_HTTP_STATE_DONE, module_http_state_t) || sizeof(MODULE_HTTP_STATE_DONE) == sizeof(module_http_state_t),
          "MODULE_HTTP_STATE_* are members of module_http_state_t");
}

/* ---- MESIBO_MODULES_PADDING ---- */

static mesibo_int_t padding_invoke(mesibo_int_t id, mesibo_module_t *mod, ...) {
    (void)mod;
    return id;
}

static void check_padding(void) {
    static const uintptr_t words[] = { MESIBO_MODULES_PADDING };
    /* Positionally, the eight reserved words sit between signature and
     * invoke: with -Wextra one word too many or too few does not compile
     * quietly. */
    static const mesibo_module_t positional = {
        MESIBO_MODULE_VERSION, 0, "name", "description", NULL, NULL,
        NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
        MESIBO_MODULE_SIGNATURE, MESIBO_MODULES_PADDING, padding_invoke
    };
    size_t i, nonzero = 0;
    for (i = 0; i < sizeof(words) / sizeof(words[0]); i++)
        nonzero += words[i] != 0;
    check(sizeof(words) / sizeof(words[0]) == 8 && nonzero == 0,
          "MESIBO_MODULES_PADDING expected 8 zeros, got %u values (%u non-zero)",
          (unsigned)(sizeof(words) / sizeof(words[0])), (unsigned)nonzero);
    check(positional.signature == MESIBO_MODULE_SIGNATURE && positional.reserved_0 == 0 &&
              positional.reserved_7 == 0 && positional.invoke == padding_invoke,
          "MESIBO_MODULES_PADDING fills reserved_0..reserved_7 of mesibo_module_t");
}

/* ---- MESIBO_MODULE_SANITY_CHECK ---- */

/* What mesibo_log was asked to log, and how many times, since the last reset. */
static struct {
    int calls;
    mesibo_module_t *mod;
    mesibo_uint_t level;
    char message[128];
} logged;

mesibo_int_t mesibo_log(mesibo_module_t *mod, mesibo_uint_t level, const char *format, ...) {
    va_list args;
    logged.calls++;
    logged.mod = mod;
    logged.level = level;
    va_start(args, format);
    vsnprintf(logged.message, sizeof(logged.message), format, args);
    va_end(args);
    return MESIBO_RESULT_OK;
}

static int init_reached_end;

/* A module's init, reduced to the check every init starts with. */
static mesibo_int_t sample_init(mesibo_int_t version, mesibo_module_t *m, mesibo_int_t len) {
    MESIBO_MODULE_SANITY_CHECK(m, version, len);
    init_reached_end = 1;
    return MESIBO_RESULT_OK;
}

/* The macro is one statement: it fits an if without braces, before an else. */
static mesibo_int_t init_with_if_else(mesibo_int_t version, mesibo_module_t *m, mesibo_int_t len, int do_check) {
    if (do_check)
        MESIBO_MODULE_SANITY_CHECK(m, version, len);
    else
        return 7;
    return MESIBO_RESULT_OK;
}

/* `s` with its newlines written as \n, so a failure stays on one line. */
static const char *escaped(const char *s, char *out, size_t size) {
    size_t n = 0;
    for (; *s && n + 3 < size; s++) {
        if (*s == '\n') {
            out[n++] = '\\';
            out[n++] = 'n';
        } else {
            out[n++] = *s;
        }
    }
    out[n] = '\0';
    return out;
}

static void expect_init(const char *what, mesibo_int_t version, mesibo_uint_t signature, mesibo_int_t len,
                        mesibo_int_t want_result, const char *want_log) {
    mesibo_module_t m;
    mesibo_int_t result;
    char want_text[64], got_text[2 * sizeof(logged.message)];
    memset(&m, 0, sizeof(m));
    m.signature = signature;
    memset(&logged, 0, sizeof(logged));
    init_reached_end = 0;

    result = sample_init(version, &m, len);

    check(result == want_result, "%s: init returned %lld, expected %lld", what, (long long)result, (long long)want_result);
    if (want_log == NULL) {
        check(logged.calls == 0 && init_reached_end, "%s: expected init to run to the end without logging, got %d log calls (\"%s\")",
              what, logged.calls, escaped(logged.message, got_text, sizeof(got_text)));
        return;
    }
    check(!init_reached_end, "%s: init went on past the failed check", what);
    check(logged.calls == 1 && logged.mod == &m && logged.level == 0 && strcmp(logged.message, want_log) == 0,
          "%s: expected one level-0 log \"%s\" for this module, got %d calls, level %llu, message \"%s\"",
          what, escaped(want_log, want_text, sizeof(want_text)), logged.calls, (unsigned long long)logged.level,
          escaped(logged.message, got_text, sizeof(got_text)));
}

static void check_sanity_macro(void) {
    const mesibo_int_t size = (mesibo_int_t)sizeof(mesibo_module_t);
    const mesibo_uint_t good = MESIBO_MODULE_SIGNATURE;
    mesibo_module_t m;

    expect_init("all good", MESIBO_MODULE_VERSION, good, size, MESIBO_RESULT_OK, NULL);
    expect_init("wrong version", MESIBO_MODULE_VERSION + 1, good, size, MESIBO_RESULT_FAIL, "module version mismatch\n");
    expect_init("version 0", 0, good, size, MESIBO_RESULT_FAIL, "module version mismatch\n");
    expect_init("wrong len", MESIBO_MODULE_VERSION, good, size - 8, MESIBO_RESULT_FAIL, "module size mismatch\n");
    expect_init("negative len", MESIBO_MODULE_VERSION, good, -1, MESIBO_RESULT_FAIL, "module size mismatch\n");
    expect_init("wrong signature", MESIBO_MODULE_VERSION, good ^ 1, size, MESIBO_RESULT_FAIL, "module signature mismatch\n");
    expect_init("zero signature", MESIBO_MODULE_VERSION, 0, size, MESIBO_RESULT_FAIL, "module signature mismatch\n");

    /* The version is checked first, then the size, then the signature. */
    expect_init("everything wrong", MESIBO_MODULE_VERSION + 1, 0, size + 8, MESIBO_RESULT_FAIL, "module version mismatch\n");
    expect_init("size and signature wrong", MESIBO_MODULE_VERSION, 0, size + 8, MESIBO_RESULT_FAIL, "module size mismatch\n");

    memset(&m, 0, sizeof(m));
    m.signature = good;
    check(init_with_if_else(MESIBO_MODULE_VERSION, &m, size, 1) == MESIBO_RESULT_OK &&
              init_with_if_else(MESIBO_MODULE_VERSION, &m, size, 0) == 7 &&
              init_with_if_else(0, &m, size, 1) == MESIBO_RESULT_FAIL,
          "MESIBO_MODULE_SANITY_CHECK behaves as one statement inside if/else");
}

int main(void) {
    check_scalars();
    check_config_layout();
    check_message_params_layout();
    check_user_layout();
    check_http_layout();
    check_fcgi_layout();
    check_socket_layout();
    check_module_layout();
    check_signatures();
    check_constants();
    check_padding();
    check_sanity_macro();
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
