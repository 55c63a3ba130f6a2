/*
 * echo: an auto-reply bot. A message sent to the bot's address is answered
 * with the same bytes behind a prefix; every other message passes on.
 *
 *   module echo {
 *       address = echo
 *       prefix = echo:
 *       log = 1
 *   }
 *
 * address defaults to "echo" and prefix to "echo: ". Config values are
 * trimmed, so a prefix set in the file cannot end with a space. log = 1
 * logs each reply and the statuses (sent, delivered, read...) that come
 * back for it.
 *
 * This is the shape of any bot: match the destination in on_message, answer
 * with mesibo_message, and consume the original so no user receives it. A
 * bot that needs time (an HTTP call, a model) must not answer from
 * on_message: copy what it needs and reply later, from a thread or a
 * completion callback; mesibo_message is safe from any thread.
 */
#include <stdlib.h>
#include <string.h>

#include "module.h"

typedef struct echo_ctx_s {
	char *address;
	const char *prefix;
	size_t prefix_len;
	uint32_t last_id;
} echo_ctx_t;

/*
 * A message id is 32 bits and only has to be unique among the bot's own
 * messages. Starting from the microsecond clock makes it unlikely that a
 * restarted server reuses the ids of its previous run; 0 is skipped because
 * it asks the server to pick the id, and the bot would not know it.
 */
static mesibo_uint_t echo_new_id(echo_ctx_t *ctx)
{
	if (++ctx->last_id == 0)
		ctx->last_id = 1;
	return ctx->last_id;
}

static mesibo_int_t echo_on_message(mesibo_module_t *mod, mesibo_message_params_t *p,
		char *message, mesibo_uint_t len)
{
	echo_ctx_t *ctx = (echo_ctx_t *)mod->ctx;
	mesibo_message_params_t reply;
	char small[512];
	char *payload;
	size_t total;

	if (p->groupid != 0 || !p->to || strcmp(p->to, ctx->address) != 0)
		return MESIBO_RESULT_PASS;

	/* mesibo_message copies the payload, so a stack buffer is enough for
	 * short replies and a heap one can be freed as soon as it returns. */
	total = ctx->prefix_len + (size_t)len;
	payload = total <= sizeof(small) ? small : (char *)malloc(total);
	if (!payload) {
		mesibo_log(mod, 0, "out of memory: no reply to %s\n", p->from);
		return MESIBO_RESULT_CONSUMED;
	}
	memcpy(payload, ctx->prefix, ctx->prefix_len);
	if (len)
		memcpy(payload + ctx->prefix_len, message, (size_t)len);

	memset(&reply, 0, sizeof(reply));
	reply.aid = p->aid;
	reply.id = echo_new_id(ctx);
	reply.refid = p->id; /* lets the sender's app thread the answer */
	reply.groupid = 0;
	reply.flags = p->flags;
	reply.expiry = p->expiry;
	reply.from = ctx->address;
	reply.to = p->from;

	if (mesibo_message(mod, &reply, payload, (mesibo_uint_t)total) != MESIBO_RESULT_OK)
		mesibo_log(mod, 0, "could not answer message %lu from %s\n",
				(unsigned long)p->id, p->from);
	else
		mesibo_log(mod, 1, "answered message %lu from %s with message %lu\n",
				(unsigned long)p->id, p->from, (unsigned long)reply.id);

	if (payload != small)
		free(payload);
	return MESIBO_RESULT_CONSUMED;
}

static const char *echo_status_name(mesibo_uint_t status)
{
	switch (status) {
	case 1: return "sent";
	case MESIBO_MODULE_MSGSTATUS_DELIVERED: return "delivered";
	case MESIBO_MODULE_MSGSTATUS_READ: return "read";
	case MESIBO_MODULE_MSGSTATUS_NOTACTIVE: return "failed: recipient not active";
	case MESIBO_MODULE_MSGSTATUS_INBOXFULL: return "failed: inbox full";
	case MESIBO_MODULE_MSGSTATUS_INVALIDDEST: return "failed: invalid destination";
	case MESIBO_MODULE_MSGSTATUS_NOINCOMING: return "failed: recipient takes no messages";
	case MESIBO_MODULE_MSGSTATUS_BLOCKED: return "failed: blocked";
	}
	return status >= MESIBO_MODULE_MSGSTATUS_FAIL ? "failed" : "unknown";
}

/* Every module with this callback sees every status; the replies are the
 * messages sent from the bot's address. */
static mesibo_int_t echo_on_message_status(mesibo_module_t *mod, mesibo_message_params_t *p)
{
	const echo_ctx_t *ctx = (const echo_ctx_t *)mod->ctx;

	if (!p->from || strcmp(p->from, ctx->address) != 0)
		return MESIBO_RESULT_OK;
	mesibo_log(mod, 1, "reply %lu to %s: %s (%lu)\n", (unsigned long)p->id,
			p->to ? p->to : "?", echo_status_name(p->status), (unsigned long)p->status);
	return MESIBO_RESULT_OK;
}

static mesibo_int_t echo_on_cleanup(mesibo_module_t *mod)
{
	free(mod->ctx);
	mod->ctx = NULL;
	return MESIBO_RESULT_OK;
}

MESIBO_EXPORT mesibo_int_t mesibo_module_echo_init(mesibo_int_t version, mesibo_module_t *m,
		mesibo_int_t len)
{
	static char default_address[] = "echo";
	echo_ctx_t *ctx;

	MESIBO_MODULE_SANITY_CHECK(m, version, len);

	ctx = (echo_ctx_t *)calloc(1, sizeof(*ctx));
	if (!ctx) {
		mesibo_log(m, 0, "out of memory\n");
		return MESIBO_RESULT_FAIL;
	}

	/* Config strings belong to the server and live until after on_cleanup,
	 * so the module can keep pointers to them instead of copies. */
	ctx->address = mesibo_util_getconfig(m, "address");
	if (!ctx->address)
		ctx->address = default_address;
	if (ctx->address[0] == '\0') {
		mesibo_log(m, 0, "address must not be empty\n");
		free(ctx);
		return MESIBO_RESULT_FAIL;
	}
	ctx->prefix = mesibo_util_getconfig(m, "prefix");
	if (!ctx->prefix)
		ctx->prefix = "echo: ";
	ctx->prefix_len = strlen(ctx->prefix);
	ctx->last_id = (uint32_t)mesibo_util_usec();

	mesibo_log(m, 1, "answering messages to %s\n", ctx->address);

	m->ctx = ctx;
	m->description = "Sample module: a bot that answers with what it was sent";
	m->on_message = echo_on_message;
	m->on_message_status = echo_on_message_status;
	m->on_cleanup = echo_on_cleanup;
	return MESIBO_RESULT_OK;
}
