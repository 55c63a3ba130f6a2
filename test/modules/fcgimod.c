/* A test module for mesibo_util_fcgi. A message to `address` (default
 * "fcgi") becomes one FastCGI request to host:port: the payload is the body
 * (none when empty), and every mesibo_fcgi_t field named as a config item
 * (SCRIPT_FILENAME = /x.php, QUERY_STRING = a=1, ...) is sent as that param.
 * The one callback is logged, and the stdout bytes go back to the sender as
 * one message (refid = the question's id), or "error <code>: <text>".
 *
 *   module fcgimod {
 *       host = 127.0.0.1
 *       port = 9000
 *       keepalive = 1     # reuse the connection
 *       thread = 1        # call mesibo_util_fcgi from a thread of the module
 *   }
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "module.h"

typedef struct {
	mesibo_module_t *m;
	mesibo_fcgi_t req;
	mesibo_uint_t id;
	char address[64], from[64];
} job_t;

static const char *cfg(mesibo_module_t *m, const char *name, const char *dflt)
{
	const char *v = mesibo_util_getconfig(m, name);
	return v ? v : dflt;
}

static void reply(job_t *j, const char *text, size_t len)
{
	mesibo_message_params_t p;

	memset(&p, 0, sizeof p);
	p.refid = j->id;
	p.from = j->address;
	p.to = j->from;
	if (mesibo_message(j->m, &p, text, (mesibo_uint_t)len) != MESIBO_RESULT_OK)
		mesibo_log(j->m, 0, "request %lu: could not reply", (unsigned long)j->id);
}

/* The one call of a request: the whole stdout, or a failure. */
static mesibo_int_t on_fcgi(void *cbdata, mesibo_int_t result, const char *buffer, mesibo_int_t size)
{
	job_t *j = (job_t *)cbdata;
	char text[512];
	int n;

	if (result == MESIBO_RESULT_OK) {
		mesibo_log(j->m, 0, "request %lu: done, %ld bytes", (unsigned long)j->id, (long)size);
		reply(j, buffer, (size_t)size);
	} else {
		mesibo_log(j->m, 0, "request %lu: failed %ld: %.*s", (unsigned long)j->id, (long)result,
				(int)size, buffer);
		n = snprintf(text, sizeof text, "error %ld: %.*s", (long)result, (int)size, buffer);
		reply(j, text, (size_t)n < sizeof text ? (size_t)n : sizeof text - 1);
	}
	free(j);
	return 0;
}

static void start(job_t *j)
{
	mesibo_module_t *m = j->m;
	char *body = j->req.body;
	mesibo_int_t r;

	r = mesibo_util_fcgi(&j->req, cfg(m, "host", "127.0.0.1"), atoi(cfg(m, "port", "9000")),
			atoi(cfg(m, "keepalive", "0")), on_fcgi, j);
	/* Everything was copied: the body can go now, whatever the outcome. From
	 * a thread, j itself may already be freed by the callback. */
	free(body);
	if (r != MESIBO_RESULT_OK) {
		mesibo_log(m, 0, "request %lu: refused", (unsigned long)j->id);
		reply(j, "refused", 7);
		free(j);
	}
}

static void *start_thread(void *arg)
{
	start((job_t *)arg);
	return NULL;
}

static mesibo_int_t fcgimod_on_message(mesibo_module_t *m, mesibo_message_params_t *p, char *message,
		mesibo_uint_t len)
{
	job_t *j;

	if (!p->to || strcmp(p->to, cfg(m, "address", "fcgi")) != 0)
		return MESIBO_RESULT_PASS;
	j = (job_t *)calloc(1, sizeof *j);
	if (!j)
		return MESIBO_RESULT_CONSUMED;
	/* The callbacks use only the job: the module may be unloaded (its config
	 * gone) while a request is in flight. mesibo_log and mesibo_message
	 * accept a stale module pointer and do nothing harmful with it. */
	j->m = m;
	j->id = p->id;
	snprintf(j->address, sizeof j->address, "%s", p->to);
	snprintf(j->from, sizeof j->from, "%s", p->from);
#define PARAM(name) j->req.name = mesibo_util_getconfig(m, #name)
	PARAM(USER); PARAM(SCRIPT_FILENAME); PARAM(QUERY_STRING); PARAM(CONTENT_TYPE);
	PARAM(SCRIPT_NAME); PARAM(REQUEST_URI); PARAM(DOCUMENT_URI); PARAM(DOCUMENT_ROOT);
	PARAM(SERVER_PROTOCOL); PARAM(REQUEST_SCHEME); PARAM(REMOTE_ADDR); PARAM(REMOTE_PORT);
	PARAM(SERVER_ADDR); PARAM(SERVER_PORT); PARAM(SERVER_NAME); PARAM(HTTP_HOST);
	PARAM(HTTP_CONNECTION); PARAM(HTTP_CACHE_CONTROL); PARAM(HTTP_UPGRADE_INSECURE_REQUESTS);
	PARAM(HTTP_USER_AGENT); PARAM(HTTP_ACCEPT); PARAM(HTTP_ACCEPT_ENCODING); PARAM(HTTP_ACCEPT_LANGUAGE);
#undef PARAM
	if (len > 0) {
		j->req.body = (char *)malloc(len);
		if (!j->req.body) {
			free(j);
			return MESIBO_RESULT_CONSUMED;
		}
		memcpy(j->req.body, message, len);
		j->req.bodylen = len;
	}
	if (atoi(cfg(m, "thread", "0")))
		mesibo_util_create_thread(start_thread, j, 0, "sb-test-fcgi");
	else
		start(j);
	return MESIBO_RESULT_CONSUMED;
}

MESIBO_EXPORT mesibo_int_t mesibo_module_fcgimod_init(mesibo_int_t version, mesibo_module_t *m, mesibo_int_t len)
{
	MESIBO_MODULE_SANITY_CHECK(m, version, len);
	m->on_message = fcgimod_on_message;
	return MESIBO_RESULT_OK;
}
