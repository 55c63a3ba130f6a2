/*
 * switchboard.h: Switchboard's extensions to the mesibo module ABI.
 *
 * include/module.h is the mesibo ABI and nothing more; this header adds what
 * Switchboard offers beyond it. A module that includes it still loads on a
 * server without the extensions: every function here is declared weak, so an
 * absent one resolves to NULL instead of failing the load. Ask first:
 *
 *     if (switchboard_supports(mod, SWITCHBOARD_EXT_DEFER)) { ... }
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

#if defined(__GNUC__) || defined(__clang__)
#define SWITCHBOARD_WEAK __attribute__((weak))
#else
#define SWITCHBOARD_WEAK
#endif

/* Extension names for switchboard_supports. */
#define SWITCHBOARD_EXT_DEFER "defer"

/* Results. PASS and CONSUMED are mesibo's own. */
#define SWITCHBOARD_RESULT_PASS MESIBO_RESULT_PASS
#define SWITCHBOARD_RESULT_CONSUMED MESIBO_RESULT_CONSUMED
/* on_message: "I will decide later" (needs a handle from switchboard_defer). */
#define SWITCHBOARD_RESULT_DEFER 0x5342

/* A pending decision. Opaque; compare with NULL only. */
typedef struct switchboard_deferred_s switchboard_deferred_t;

/* 1 when this server implements extension `name` for `mod`, else 0. */
SWITCHBOARD_WEAK mesibo_int_t switchboard_has_extension(mesibo_module_t *mod, const char *name);

/* Inside on_message (on the thread that called it) only: a handle for the
 * message being processed, or NULL when called anywhere else. */
SWITCHBOARD_WEAK switchboard_deferred_t *switchboard_defer(mesibo_module_t *mod, mesibo_message_params_t *p);

/* Any thread, once per handle: decides the message (see above). Returns
 * MESIBO_RESULT_OK, or MESIBO_RESULT_FAIL for an unknown, already resolved or
 * timed-out handle, a verdict other than PASS/CONSUMED, or a payload larger
 * than max_message_size (the message then still waits for a valid call). */
SWITCHBOARD_WEAK mesibo_int_t switchboard_resolve(mesibo_module_t *mod, switchboard_deferred_t *handle,
                                                  mesibo_int_t verdict, const char *payload, mesibo_uint_t len);

/* The check a module makes at init: safe on any server, with or without
 * Switchboard's extensions. */
static inline int switchboard_supports(mesibo_module_t *mod, const char *name) {
    return switchboard_has_extension && switchboard_has_extension(mod, name) == 1;
}

#ifdef __cplusplus
}
#endif

#endif /* SWITCHBOARD_H */
