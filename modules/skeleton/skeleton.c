/*
 * skeleton: the starting point for a new Switchboard module.
 *
 * It does nothing useful on purpose: it sets every callback, logs what it
 * sees and passes every message on. To start your own module, copy this
 * folder to modules/NAME/, rename skeleton_* to NAME_*, and rename the init
 * function to mesibo_module_NAME_init: the server looks it up by that name.
 *
 *   module skeleton {
 *       greeting = hello
 *       log = 1
 *   }
 */
#include <stdlib.h>

#include "module.h"

/* The module's own state, reached through mod->ctx in every callback. */
typedef struct skeleton_ctx_s {
	mesibo_uint_t messages;
} skeleton_ctx_t;

/*
 * Called for every message a user sends, in chain order. `message` is `len`
 * bytes, not NUL-terminated, and writable: a module may rewrite it in place.
 * Return MESIBO_RESULT_PASS to hand the message to the next module (and, at
 * the end of the chain, to the recipient) or MESIBO_RESULT_CONSUMED to stop
 * it here. Runs on the server's event loop: never block in it.
 */
static mesibo_int_t skeleton_on_message(mesibo_module_t *mod, mesibo_message_params_t *p,
		char *message, mesibo_uint_t len)
{
	skeleton_ctx_t *ctx = (skeleton_ctx_t *)mod->ctx;

	(void)message;
	ctx->messages++;
	mesibo_log(mod, 1, "message %lu from %s to %s, %lu bytes\n",
			(unsigned long)p->id, p->from, p->to ? p->to : "(group)",
			(unsigned long)len);
	return MESIBO_RESULT_PASS;
}

/*
 * Called with message statuses (sent, delivered, read, failed...): the code
 * is in p->status and p->id names the message. Every module that sets this
 * callback sees them, so check p->from when you only care about the
 * messages you sent. The return value is ignored; return MESIBO_RESULT_OK.
 */
static mesibo_int_t skeleton_on_message_status(mesibo_module_t *mod, mesibo_message_params_t *p)
{
	mesibo_log(mod, 1, "message %lu to %s: status %lu\n",
			(unsigned long)p->id, p->to ? p->to : "(group)", (unsigned long)p->status);
	return MESIBO_RESULT_OK;
}

/*
 * Called when a user logs in (user->online is non-zero) or logs out. The
 * return value is ignored; return MESIBO_RESULT_OK.
 */
static mesibo_int_t skeleton_on_login(mesibo_module_t *mod, mesibo_user_t *user)
{
	mesibo_log(mod, 1, "%s logged %s\n", user->address, user->online ? "in" : "out");
	return MESIBO_RESULT_OK;
}

/*
 * Called when a call starts and when its state changes. This ABI passes no
 * details about the call, so there is little to do here yet. The return
 * value is ignored; return MESIBO_RESULT_OK.
 */
static mesibo_int_t skeleton_on_call(mesibo_module_t *mod)
{
	mesibo_log(mod, 1, "call\n");
	return MESIBO_RESULT_OK;
}

static mesibo_int_t skeleton_on_call_status(mesibo_module_t *mod)
{
	mesibo_log(mod, 1, "call status\n");
	return MESIBO_RESULT_OK;
}

/*
 * Called once at shutdown, after the last callback and before the library
 * is unloaded. Free what the module allocated; never free mod itself or its
 * config, the server owns both. Return MESIBO_RESULT_OK.
 */
static mesibo_int_t skeleton_on_cleanup(mesibo_module_t *mod)
{
	skeleton_ctx_t *ctx = (skeleton_ctx_t *)mod->ctx;

	mesibo_log(mod, 1, "cleanup after %lu messages\n", (unsigned long)ctx->messages);
	free(ctx);
	mod->ctx = NULL;
	return MESIBO_RESULT_OK;
}

/*
 * Called once, right after the library is loaded. name, config, signature
 * and invoke are already filled in; set ctx and the callbacks, then return
 * MESIBO_RESULT_OK, or log why and return MESIBO_RESULT_FAIL to stop the
 * server from starting. MESIBO_EXPORT keeps the name unmangled in C++.
 */
MESIBO_EXPORT mesibo_int_t mesibo_module_skeleton_init(mesibo_int_t version, mesibo_module_t *m,
		mesibo_int_t len)
{
	skeleton_ctx_t *ctx;
	mesibo_int_t i;

	/* Refuses a server built for another ABI; must come first. */
	MESIBO_MODULE_SANITY_CHECK(m, version, len);

	/* config is NULL when the module block has no items. */
	if (m->config) {
		for (i = 0; i < m->config->count; i++)
			mesibo_log(m, 1, "config %s = %s\n",
					m->config->items[i].name, m->config->items[i].value);
	}

	ctx = (skeleton_ctx_t *)calloc(1, sizeof(*ctx));
	if (!ctx) {
		mesibo_log(m, 0, "out of memory\n");
		return MESIBO_RESULT_FAIL;
	}

	m->ctx = ctx;
	m->description = "Sample module: logs every callback and passes everything on";
	m->on_message = skeleton_on_message;
	m->on_message_status = skeleton_on_message_status;
	m->on_login = skeleton_on_login;
	m->on_call = skeleton_on_call;
	m->on_call_status = skeleton_on_call_status;
	m->on_cleanup = skeleton_on_cleanup;
	return MESIBO_RESULT_OK;
}
