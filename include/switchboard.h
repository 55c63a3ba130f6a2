/*
 * switchboard.h: Switchboard's extensions to the mesibo module ABI.
 *
 * include/module.h is the mesibo ABI and nothing more; this header adds what
 * Switchboard offers beyond it. A module that includes it links against
 * nothing new and still loads on a server without the extensions.
 *
 * ---------------------------------------------------------------------------
 * Finding extensions: the get-API (through the ABI's `invoke` slot)
 * ---------------------------------------------------------------------------
 * The server fills `mod->invoke` before init. Switchboard answers one call id
 * there, SWITCHBOARD_INVOKE_GET_API, as Redis modules' GetApi does: given a
 * function's name and a version, it hands back a pointer to that function, or
 * fails when this server does not have it (an older Switchboard, or another
 * server). A (name, version) pair names one signature forever: a changed
 * signature gets a new version, and the server keeps answering the old ones.
 * SWITCHBOARD_INVOKE_API_LEVEL answers the server's API level (1 here; 0 or
 * less: no get-API at all).
 *
 *     void *fn = switchboard_get_api(mod, "switchboard_defer", 1);
 *
 * The functions below (switchboard_defer, switchboard_resolve,
 * switchboard_state_save, switchboard_state_load, switchboard_has_extension,
 * switchboard_supports) are inline wrappers that do exactly that on every
 * call, so a module calls them by name and they return NULL / 0 /
 * MESIBO_RESULT_FAIL on a server without them. Ask first:
 *
 *     if (switchboard_supports(mod, SWITCHBOARD_EXT_DEFER)) { ... }
 *
 * (Modules built against the first version of this header reference weak
 * symbols with the same names; the server still exports them, so those
 * binaries keep working unchanged.)
 *
 * On a server whose `invoke` does not know these ids, the call must return
 * an error for an unknown id (mesibo documents no ids at all); the wrappers
 * then report "not supported". SWITCHBOARD_INVOKE_* ids are chosen far from
 * small integers so that they cannot collide with ids such a server defines.
 *
 * ---------------------------------------------------------------------------
 * Extension "defer": decide a message later
 * ---------------------------------------------------------------------------
 * The mesibo ABI makes on_message decide at once. A module that must ask a
 * service first (translation, moderation, an LLM) would have to consume the
 * message and send a new one, which gives it a new id and breaks the sender's
 * delivered/read statuses. With this extension it can instead:
 *
 *   1. call switchboard_defer(mod, p) inside on_message, which returns a
 *      handle for the message being processed, and
 *   2. return SWITCHBOARD_RESULT_DEFER from on_message.
 *
 * The message then waits at this module's position while the server goes on
 * with other messages. Later messages from the same sender to the same
 * destination (user or group) wait behind it, so per-conversation order
 * holds. When the module calls switchboard_resolve (from any thread, exactly
 * once), the message continues with the next module, keeping its id, or is
 * dropped:
 *
 *   - SWITCHBOARD_RESULT_PASS (= MESIBO_RESULT_PASS): pass it on; with a
 *     non-NULL payload, the payload is first replaced by that one (any
 *     length up to max_message_size; the server copies it at once).
 *   - SWITCHBOARD_RESULT_CONSUMED (= MESIBO_RESULT_CONSUMED): drop it.
 *
 * The sender's "sent" status comes when the whole chain has decided.
 *
 * Per module block in the config file:
 *   defer_timeout = 5     how long a message may wait for this module's
 *                         decision: seconds, or with a unit ("250ms", "2s");
 *                         default 5 s. (Script modules call it `timeout`;
 *                         native modules keep `timeout` for themselves.)
 *   on_error = pass       what a message becomes when the wait times out:
 *                         pass or consume; default pass. Timeouts are logged
 *                         and counted.
 *
 * A handle is valid until it is resolved or times out; resolving it again,
 * or after the timeout, returns MESIBO_RESULT_FAIL and changes nothing. The
 * payload and params pointers on_message received are only valid during
 * on_message: copy what the later decision needs. A module that calls
 * switchboard_defer and then returns PASS or CONSUMED gives the handle up.
 * A module that returns SWITCHBOARD_RESULT_DEFER without a handle gets a
 * warning and its message is passed on.
 */
#ifndef SWITCHBOARD_H
#define SWITCHBOARD_H

#include "module.h"

#ifdef __cplusplus
extern "C" {
#endif

/* invoke ids (see "Finding extensions" above). */
#define SWITCHBOARD_INVOKE_GET_API 0x53424741   /* 'SBGA': (const char *name, mesibo_int_t version, void **fn) */
#define SWITCHBOARD_INVOKE_API_LEVEL 0x5342414c /* 'SBAL': () -> the API level */
#define SWITCHBOARD_API_LEVEL 1

/* Extension names for switchboard_supports. */
#define SWITCHBOARD_EXT_DEFER "defer"
#define SWITCHBOARD_EXT_STATE "state"

/* Results. PASS and CONSUMED are mesibo's own. */
#define SWITCHBOARD_RESULT_PASS MESIBO_RESULT_PASS
#define SWITCHBOARD_RESULT_CONSUMED MESIBO_RESULT_CONSUMED
/* on_message: "I will decide later" (needs a handle from switchboard_defer). */
#define SWITCHBOARD_RESULT_DEFER 0x5342

/* A pending decision. Opaque; compare with NULL only. */
typedef struct switchboard_deferred_s switchboard_deferred_t;

/* The functions the get-API hands out, by name and version. */

/* "switchboard_has_extension", 1: 1 when this server implements extension
 * `name` for `mod`, else 0. */
typedef mesibo_int_t (*switchboard_has_extension_v1)(mesibo_module_t *mod, const char *name);

/* "switchboard_defer", 1: inside on_message (on the thread that called it)
 * only: a handle for the message being processed, or NULL when called
 * anywhere else. */
typedef switchboard_deferred_t *(*switchboard_defer_v1)(mesibo_module_t *mod, mesibo_message_params_t *p);

/* "switchboard_resolve", 1: any thread, once per handle: decides the message
 * (see above). Returns MESIBO_RESULT_OK, or MESIBO_RESULT_FAIL for an
 * unknown, already resolved or timed-out handle, a verdict other than
 * PASS/CONSUMED, or a payload larger than max_message_size (the message then
 * still waits for a valid call). */
typedef mesibo_int_t (*switchboard_resolve_v1)(mesibo_module_t *mod, switchboard_deferred_t *handle,
                                               mesibo_int_t verdict, const char *payload, mesibo_uint_t len);

/* ---------------------------------------------------------------------------
 * Extension "state": keep state across a reload
 * ---------------------------------------------------------------------------
 * When the server reloads a module (its library or its items changed), it
 * loads and initialises the new instance while the old one still runs, and
 * swaps them only when the new init succeeded. The old instance can hand a
 * blob of bytes (counters, sessions) to the new one:
 *
 *   1. at init, the module registers a save callback with
 *      switchboard_state_save;
 *   2. at a reload, before the new instance's init, the server calls the old
 *      instance's callback, which returns the blob;
 *   3. the new instance's init calls switchboard_state_load to read it.
 *
 * The blob's format is the module's own: put a version in it, since the new
 * library may be a different build. If the new init fails the old instance
 * keeps running, so the callback takes a snapshot and changes nothing. */

/* The save callback: on the loop thread, during a reload, while no callback
 * of this instance runs. Returns a pointer to the blob and sets *len, or
 * returns NULL to hand nothing over. The memory stays the module's: the
 * server copies [blob, blob + *len) before it calls anything else of this
 * module, so a buffer in m->ctx or a static one will do. */
typedef const void *(*switchboard_state_save_fn)(mesibo_module_t *mod, mesibo_uint_t *len);

/* "switchboard_state_save", 1: registers `fn` (NULL: none) as this
 * instance's save callback, replacing an earlier one. Loop thread (init or a
 * callback). Returns MESIBO_RESULT_OK, or MESIBO_RESULT_FAIL for a module
 * pointer the server did not hand out. */
typedef mesibo_int_t (*switchboard_state_save_v1)(mesibo_module_t *mod, switchboard_state_save_fn fn);

/* "switchboard_state_load", 1: during init only: when this instance
 * replaces one that saved a blob, sets *data and *len to it and returns
 * MESIBO_RESULT_OK. The blob is the server's and valid until init returns:
 * copy what you keep. Otherwise (a first start, no blob, outside init) sets
 * *data to NULL and *len to 0 and returns MESIBO_RESULT_FAIL. */
typedef mesibo_int_t (*switchboard_state_load_v1)(mesibo_module_t *mod, const void **data, mesibo_uint_t *len);

/* A pointer to function `name` at `version`, or NULL when this server does
 * not offer it. Any thread. */
static inline void *switchboard_get_api(mesibo_module_t *mod, const char *name, mesibo_int_t version) {
    void *fn = 0;
    if (!mod || !mod->invoke || !name) return 0;
    if (mod->invoke((mesibo_int_t)SWITCHBOARD_INVOKE_GET_API, mod, name, version, &fn) != MESIBO_RESULT_OK) return 0;
    return fn;
}

/* The server's API level: 1 for this header's functions; 0 when the server
 * has no get-API. */
static inline mesibo_int_t switchboard_api_level(mesibo_module_t *mod) {
    mesibo_int_t level;
    if (!mod || !mod->invoke) return 0;
    level = mod->invoke((mesibo_int_t)SWITCHBOARD_INVOKE_API_LEVEL, mod);
    return level > 0 && level < 0x10000 ? level : 0;
}

#ifndef SWITCHBOARD_SERVER_BUILD
/* The wrappers modules call. (The server itself defines the exported
 * functions of the same names, for modules built against the first header.) */

static inline mesibo_int_t switchboard_has_extension(mesibo_module_t *mod, const char *name) {
    switchboard_has_extension_v1 fn =
        (switchboard_has_extension_v1)switchboard_get_api(mod, "switchboard_has_extension", 1);
    return fn ? fn(mod, name) : 0;
}

static inline switchboard_deferred_t *switchboard_defer(mesibo_module_t *mod, mesibo_message_params_t *p) {
    switchboard_defer_v1 fn = (switchboard_defer_v1)switchboard_get_api(mod, "switchboard_defer", 1);
    return fn ? fn(mod, p) : 0;
}

static inline mesibo_int_t switchboard_resolve(mesibo_module_t *mod, switchboard_deferred_t *handle,
                                               mesibo_int_t verdict, const char *payload, mesibo_uint_t len) {
    switchboard_resolve_v1 fn = (switchboard_resolve_v1)switchboard_get_api(mod, "switchboard_resolve", 1);
    return fn ? fn(mod, handle, verdict, payload, len) : MESIBO_RESULT_FAIL;
}

/* switchboard_state_save / _load on any server: a server without the
 * extension answers MESIBO_RESULT_FAIL (and for load, NULL and 0), so the
 * module starts from scratch, as it would on its first start. */
static inline mesibo_int_t switchboard_state_save(mesibo_module_t *mod, switchboard_state_save_fn fn) {
    switchboard_state_save_v1 f = (switchboard_state_save_v1)switchboard_get_api(mod, "switchboard_state_save", 1);
    return f ? f(mod, fn) : MESIBO_RESULT_FAIL;
}

static inline mesibo_int_t switchboard_state_load(mesibo_module_t *mod, const void **data, mesibo_uint_t *len) {
    switchboard_state_load_v1 f = (switchboard_state_load_v1)switchboard_get_api(mod, "switchboard_state_load", 1);
    if (data) *data = 0;
    if (len) *len = 0;
    return f ? f(mod, data, len) : MESIBO_RESULT_FAIL;
}
#endif

/* The check a module makes at init: safe on any server, with or without
 * Switchboard's extensions. */
static inline int switchboard_supports(mesibo_module_t *mod, const char *name) {
    switchboard_has_extension_v1 fn =
        (switchboard_has_extension_v1)switchboard_get_api(mod, "switchboard_has_extension", 1);
    return fn && fn(mod, name) == 1;
}

#ifdef __cplusplus
}
#endif

#endif /* SWITCHBOARD_H */
