/* A test module that uses mesibo_util_http the way mesibo's own modules do
 * (its chatbot and translate samples): the context is freed in on_data when
 * progress < 0, on_close only logs on failure, and both callbacks read the
 * context before they look at their arguments. It is correct only if, after
 * a failure, nothing is called after on_data(progress < 0).
 *
 * A message to "ask" carries {"tag", "url", and the four timeouts}. The
 * module logs:
 *   TAG status S                   on_status
 *   TAG invalid http response      on_close(FAIL): mesibo's modules log and return
 *   TAG error in http callback P S on_data with a negative progress P in state S:
 *                                  the context is freed here
 *   TAG answer N BODY              on_close(OK): the body (N bytes), also sent
 *                                  back to the sender; the context is freed
 *   use after free in CALLBACK     a callback came with a context already freed
 *
 * The last line is the module's own check: a table of the contexts alive,
 * compared by address before any callback reads its context, so that the
 * test sees the fault with or without AddressSanitizer.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "module.h"

#define HTTP_BUFFER_LEN (64 * 1024)
#define MAX_LIVE 1024

typedef struct http_context_s {
	mesibo_module_t *mod;
	char tag[64];
	char *from;
	char *to;
	mesibo_int_t status;
	char buffer[HTTP_BUFFER_LEN];
	int datalen;
} http_context_t;

static http_context_t *live[MAX_LIVE];

static void live_add(http_context_t *b)
{
	int i;
	for (i = 0; i < MAX_LIVE; i++)
		if (!live[i]) {
			live[i] = b;
			return;
		}
}

static int live_remove(http_context_t *b)
{
	int i;
	for (i = 0; i < MAX_LIVE; i++)
		if (live[i] == b) {
			live[i] = NULL;
			return 1;
		}
	return 0;
}

static int is_live(void *cbdata)
{
	int i;
	for (i = 0; i < MAX_LIVE; i++)
		if (live[i] == cbdata) return 1;
	return 0;
}

/* The module whose callbacks these are: the contexts cannot be asked once
 * freed, so it is kept here for the check's own log line. */
static mesibo_module_t *self;

static void destroy_http_context(http_context_t *b)
{
	live_remove(b);
	free(b->from);
	free(b->to);
	free(b);
}

static mesibo_int_t ask_on_data(void *cbdata, mesibo_int_t state, mesibo_int_t progress, const char *buffer,
		mesibo_int_t size)
{
	http_context_t *b;
	mesibo_module_t *mod;

	if (!is_live(cbdata)) {
		mesibo_log(self, 0, "use after free in on_data");
		return MESIBO_RESULT_FAIL;
	}
	b = (http_context_t *)cbdata;
	mod = b->mod;

	if (progress < 0) {
		mesibo_log(mod, 0, "%s error in http callback %ld %ld", b->tag, (long)progress, (long)state);
		destroy_http_context(b);
		return MESIBO_RESULT_FAIL;
	}
	if (state != MODULE_HTTP_STATE_RESPBODY)
		return MESIBO_RESULT_OK;
	if (buffer && size > 0) {
		if (b->datalen + size > HTTP_BUFFER_LEN) {
			mesibo_log(mod, 0, "%s buffer overflow", b->tag);
			return MESIBO_RESULT_FAIL;
		}
		memcpy(b->buffer + b->datalen, buffer, (size_t)size);
		b->datalen += (int)size;
	}
	return MESIBO_RESULT_OK;
}

static mesibo_int_t ask_on_status(void *cbdata, mesibo_int_t status, const char *response_type)
{
	http_context_t *b;

	(void)response_type;
	if (!is_live(cbdata)) {
		mesibo_log(self, 0, "use after free in on_status");
		return MESIBO_RESULT_FAIL;
	}
	b = (http_context_t *)cbdata;
	b->status = status;
	mesibo_log(b->mod, 0, "%s status %ld", b->tag, (long)status);
	return MESIBO_RESULT_OK;
}

static void ask_on_close(void *cbdata, mesibo_int_t result)
{
	http_context_t *b;
	mesibo_module_t *mod;
	mesibo_message_params_t p;

	if (!is_live(cbdata)) {
		mesibo_log(self, 0, "use after free in on_close");
		return;
	}
	b = (http_context_t *)cbdata;
	mod = b->mod;

	if (result == MESIBO_RESULT_FAIL) {
		mesibo_log(mod, 0, "%s invalid http response", b->tag);
		return;
	}

	mesibo_log(mod, 0, "%s answer %d %.*s", b->tag, b->datalen, b->datalen, b->buffer);
	memset(&p, 0, sizeof p);
	p.id = 0;
	p.from = b->to;
	p.to = b->from;
	mesibo_message(mod, &p, b->buffer, (mesibo_uint_t)b->datalen);
	destroy_http_context(b);
}

static mesibo_uint_t number(char *msg, mesibo_uint_t len, const char *key)
{
	char *v = mesibo_util_json_extract(msg, (mesibo_int_t)len, key, NULL);
	mesibo_uint_t n = v ? (mesibo_uint_t)strtoull(v, NULL, 10) : 0;
	free(v);
	return n;
}

static mesibo_int_t ask_on_message(mesibo_module_t *mod, mesibo_message_params_t *p, char *message, mesibo_uint_t len)
{
	http_context_t *b;
	mesibo_http_t req;
	char *url, *tag;

	if (strcmp(p->to, "ask") != 0)
		return MESIBO_RESULT_PASS;

	b = (http_context_t *)calloc(1, sizeof(http_context_t));
	b->mod = mod;
	b->from = strdup(p->from);
	b->to = strdup(p->to);
	tag = mesibo_util_json_extract(message, (mesibo_int_t)len, "tag", NULL);
	snprintf(b->tag, sizeof b->tag, "%s", tag ? tag : "ask");
	free(tag);
	url = mesibo_util_json_extract(message, (mesibo_int_t)len, "url", NULL);

	memset(&req, 0, sizeof req);
	req.url = url;
	req.conn_timeout = number(message, len, "conn_timeout");
	req.header_timeout = number(message, len, "header_timeout");
	req.body_timeout = number(message, len, "body_timeout");
	req.total_timeout = number(message, len, "total_timeout");
	req.on_data = ask_on_data;
	req.on_status = ask_on_status;
	req.on_close = ask_on_close;

	live_add(b);
	if (mesibo_util_http(&req, b) != MESIBO_RESULT_OK) {
		mesibo_log(mod, 0, "%s refused", b->tag);
		destroy_http_context(b);
	}
	free(url);
	return MESIBO_RESULT_CONSUMED;
}

MESIBO_EXPORT mesibo_int_t mesibo_module_mesibohttp_init(mesibo_int_t version, mesibo_module_t *m, mesibo_int_t len)
{
	MESIBO_MODULE_SANITY_CHECK(m, version, len);
	self = m;
	m->description = "HTTP requests in the style of mesibo's samples";
	m->on_message = ask_on_message;
	return MESIBO_RESULT_OK;
}
