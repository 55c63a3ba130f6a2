/* A test module that crashes on request, to check the trace a crash leaves.
 * A message to "crash" whose payload is
 *   segv        logs a line, then dereferences NULL in on_message
 *   abort       calls abort() in on_message
 *   http:PORT   starts an HTTP request to 127.0.0.1:PORT (nothing listens
 *               there) whose on_close dereferences NULL
 * Any other message passes. With `crash_in_init = 1` in its block, it
 * dereferences NULL in init instead.
 */
#include <stdlib.h>
#include <string.h>

#include "module.h"

static volatile int *nowhere; /* NULL, and the compiler cannot prove it */

static void crash_on_close(void *cbdata, mesibo_int_t result)
{
	(void)cbdata;
	(void)result;
	*nowhere = 1;
}

static mesibo_int_t crasher_on_message(mesibo_module_t *m, mesibo_message_params_t *p, char *message, mesibo_uint_t len)
{
	if (strcmp(p->to, "crash") != 0)
		return MESIBO_RESULT_PASS;
	if (len == 4 && memcmp(message, "segv", 4) == 0) {
		/* Queued for the next loop turn, which never comes. */
		mesibo_log(m, 0, "about to dereference NULL");
		*nowhere = 1;
	}
	if (len == 5 && memcmp(message, "abort", 5) == 0)
		abort();
	if (len > 5 && memcmp(message, "http:", 5) == 0) {
		char url[64] = "http://127.0.0.1:";
		mesibo_http_t req;
		size_t n = len - 5 < 10 ? len - 5 : 10;

		memcpy(url + strlen(url), message + 5, n);
		memset(&req, 0, sizeof req);
		req.url = url;
		req.on_close = crash_on_close;
		mesibo_util_http(&req, NULL);
	}
	return MESIBO_RESULT_CONSUMED;
}

MESIBO_EXPORT mesibo_int_t mesibo_module_crasher_init(mesibo_int_t version, mesibo_module_t *m, mesibo_int_t len)
{
	const char *in_init;

	MESIBO_MODULE_SANITY_CHECK(m, version, len);
	in_init = mesibo_util_getconfig(m, "crash_in_init");
	if (in_init && strcmp(in_init, "1") == 0)
		*nowhere = 1;
	m->description = "crashes on request";
	m->on_message = crasher_on_message;
	return MESIBO_RESULT_OK;
}
