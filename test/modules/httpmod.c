/* A test module for mesibo_util_http. A message to "fetch" is a JSON request
 * description; the module starts the request and logs every callback, so a
 * test can check what arrived and in which order:
 *
 *   TAG call R                      mesibo_util_http returned R
 *   TAG status S TYPE               on_status (TYPE is "-" when NULL)
 *   TAG data N progress P state X   on_data (not logged with "quiet")
 *   TAG close R bytes N calls C hash H body BODY
 *                                   on_close: the body as the module assembled
 *                                   it (first 2000 bytes), its FNV-1a hash,
 *                                   and the number of on_data calls
 *   TAG fail progress P state X     on_data with a negative progress: after
 *                                   close -1, the last call of a failure
 *   TAG error WHAT                  a broken promise (progress going back,
 *                                   a callback after on_close, ...)
 *
 * Fields of the description: tag, url, post, and every string field of
 * mesibo_http_t by its name (content_type, extra_header, user_agent,
 * referrer, origin, cookie, encoding, cache_control, accept, etag), ims and
 * the four timeouts as numbers, and:
 *   count       start this many identical requests, tagged TAG.0, TAG.1, ...
 *   quiet       1: log no data lines
 *   from_thread 1: call mesibo_util_http from a thread of the module's own
 *   scribble    1: the request and its strings live on the heap and are
 *               overwritten and freed right after the call returns
 *   no_status, no_data, no_close  1: leave that callback NULL
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "module.h"

#define BODY_LOGGED 2000

typedef struct {
	mesibo_module_t *m;
	char tag[64];
	int quiet, no_data, no_close;
	int closed, statuses;
	long calls;
	mesibo_int_t last_progress;
	size_t bytes;
	uint32_t hash;
	char body[BODY_LOGGED + 1];
} fetch_t;

typedef struct {
	mesibo_module_t *m;
	char *tag, *url, *post, *content_type, *extra_header, *user_agent, *referrer, *origin, *cookie, *encoding,
		*cache_control, *accept, *etag;
	mesibo_uint_t ims, conn_timeout, header_timeout, body_timeout, total_timeout;
	int count, quiet, scribble, no_status, no_data, no_close;
} job_t;

static mesibo_int_t on_status(void *cbdata, mesibo_int_t status, const char *type)
{
	fetch_t *f = (fetch_t *)cbdata;
	if (f->closed) mesibo_log(f->m, 0, "%s error status after close", f->tag);
	if (f->statuses++) mesibo_log(f->m, 0, "%s error second status", f->tag);
	if (f->calls) mesibo_log(f->m, 0, "%s error status after data", f->tag);
	mesibo_log(f->m, 0, "%s status %ld %s", f->tag, (long)status, type ? type : "-");
	return MESIBO_RESULT_OK;
}

static mesibo_int_t on_data(void *cbdata, mesibo_int_t state, mesibo_int_t progress, const char *buffer, mesibo_int_t size)
{
	fetch_t *f = (fetch_t *)cbdata;
	mesibo_int_t i;
	if (f->last_progress == 100 || f->last_progress < 0)
		mesibo_log(f->m, 0, "%s error data after progress %ld", f->tag, (long)f->last_progress);
	f->calls++;
	if (progress < 0) {
		/* A failure ends here: on_close(FAIL) came just before. */
		if (!f->no_close && f->closed != 1) mesibo_log(f->m, 0, "%s error fail without close -1 before it", f->tag);
		mesibo_log(f->m, 0, "%s fail progress %ld state %ld", f->tag, (long)progress, (long)state);
		free(f);
		return MESIBO_RESULT_OK;
	}
	if (f->closed) mesibo_log(f->m, 0, "%s error data after close", f->tag);
	if (progress < f->last_progress || progress > 100)
		mesibo_log(f->m, 0, "%s error progress %ld after %ld", f->tag, (long)progress, (long)f->last_progress);
	if (size < 0 || (size > 0 && !buffer)) mesibo_log(f->m, 0, "%s error bad buffer", f->tag);
	f->last_progress = progress;
	for (i = 0; i < size; i++) {
		if (f->bytes < BODY_LOGGED) f->body[f->bytes] = buffer[i];
		f->bytes++;
		f->hash = (f->hash ^ (unsigned char)buffer[i]) * 16777619u;
	}
	if (!f->quiet)
		mesibo_log(f->m, 0, "%s data %ld progress %ld state %ld", f->tag, (long)size, (long)progress, (long)state);
	return MESIBO_RESULT_OK;
}

static void on_close(void *cbdata, mesibo_int_t result)
{
	fetch_t *f = (fetch_t *)cbdata;
	size_t shown = f->bytes < BODY_LOGGED ? f->bytes : BODY_LOGGED;
	if (f->closed++) mesibo_log(f->m, 0, "%s error second close", f->tag);
	if (result == MESIBO_RESULT_OK && !f->no_data && f->last_progress != 100)
		mesibo_log(f->m, 0, "%s error ok without progress 100", f->tag);
	mesibo_log(f->m, 0, "%s close %ld bytes %lu calls %ld hash %08x body %.*s", f->tag, (long)result,
		   (unsigned long)f->bytes, f->calls, (unsigned)f->hash, (int)shown, f->body);
	/* After a failure on_data (negative progress) is the last call. */
	if (result == MESIBO_RESULT_OK || f->no_data) free(f);
}

static char *dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

static void scribble_free(char *s)
{
	if (!s) return;
	memset(s, 'X', strlen(s));
	free(s);
}

/* Starts the job's requests; runs on the loop thread or on a module thread. */
static void run(job_t *j)
{
	int i;
	for (i = 0; i < j->count; i++) {
		fetch_t *f = (fetch_t *)calloc(1, sizeof *f);
		mesibo_http_t stack_req, *req = &stack_req;
		mesibo_int_t r;
		char tag[64];
		f->m = j->m;
		f->quiet = j->quiet;
		f->no_data = j->no_data;
		f->no_close = j->no_close;
		f->hash = 2166136261u;
		if (j->count > 1)
			snprintf(f->tag, sizeof f->tag, "%s.%d", j->tag, i);
		else
			snprintf(f->tag, sizeof f->tag, "%s", j->tag);
		if (j->scribble) req = (mesibo_http_t *)malloc(sizeof *req);
		memset(req, 0, sizeof *req);
		if (j->scribble) {
			req->url = dup_or_null(j->url);
			req->post = dup_or_null(j->post);
			req->content_type = dup_or_null(j->content_type);
			req->extra_header = dup_or_null(j->extra_header);
			req->user_agent = dup_or_null(j->user_agent);
			req->referrer = dup_or_null(j->referrer);
			req->origin = dup_or_null(j->origin);
			req->cookie = dup_or_null(j->cookie);
			req->encoding = dup_or_null(j->encoding);
			req->cache_control = dup_or_null(j->cache_control);
			req->accept = dup_or_null(j->accept);
			req->etag = dup_or_null(j->etag);
		} else {
			req->url = j->url;
			req->post = j->post;
			req->content_type = j->content_type;
			req->extra_header = j->extra_header;
			req->user_agent = j->user_agent;
			req->referrer = j->referrer;
			req->origin = j->origin;
			req->cookie = j->cookie;
			req->encoding = j->encoding;
			req->cache_control = j->cache_control;
			req->accept = j->accept;
			req->etag = j->etag;
		}
		req->ims = j->ims;
		req->conn_timeout = j->conn_timeout;
		req->header_timeout = j->header_timeout;
		req->body_timeout = j->body_timeout;
		req->total_timeout = j->total_timeout;
		req->on_status = j->no_status ? NULL : on_status;
		req->on_data = j->no_data ? NULL : on_data;
		req->on_close = j->no_close ? NULL : on_close;
		/* f may be freed by on_close on the loop thread before the call
		 * returns here (calls from a thread): keep what we log after it. */
		snprintf(tag, sizeof tag, "%s", f->tag);
		r = mesibo_util_http(req, f);
		mesibo_log(j->m, 0, "%s call %ld", tag, (long)r);
		if (j->scribble) {
			/* The server promised to copy everything: take it all back now. */
			scribble_free((char *)req->url);
			scribble_free((char *)req->post);
			scribble_free((char *)req->content_type);
			scribble_free((char *)req->extra_header);
			scribble_free((char *)req->user_agent);
			scribble_free((char *)req->referrer);
			scribble_free((char *)req->origin);
			scribble_free((char *)req->cookie);
			scribble_free((char *)req->encoding);
			scribble_free((char *)req->cache_control);
			scribble_free((char *)req->accept);
			scribble_free((char *)req->etag);
			memset(req, 0xA5, sizeof *req);
			free(req);
		} else {
			memset(req, 0xA5, sizeof *req);
		}
		/* A refused request never calls back. (Without on_close, f is
		 * never freed: a test module may leak that much.) */
		if (r != MESIBO_RESULT_OK) free(f);
	}
}

static void job_free(job_t *j)
{
	free(j->tag); free(j->url); free(j->post); free(j->content_type); free(j->extra_header);
	free(j->user_agent); free(j->referrer); free(j->origin); free(j->cookie); free(j->encoding);
	free(j->cache_control); free(j->accept); free(j->etag);
	free(j);
}

static void *thread_main(void *arg)
{
	job_t *j = (job_t *)arg;
	run(j);
	job_free(j);
	return NULL;
}

static mesibo_uint_t number(char *msg, mesibo_uint_t len, const char *key, mesibo_uint_t def)
{
	char *v = mesibo_util_json_extract(msg, (mesibo_int_t)len, key, NULL);
	mesibo_uint_t n = v ? (mesibo_uint_t)strtoull(v, NULL, 10) : def;
	free(v);
	return n;
}

static mesibo_int_t http_on_message(mesibo_module_t *m, mesibo_message_params_t *p, char *msg, mesibo_uint_t len)
{
	job_t *j;
	if (strcmp(p->to, "fetch") != 0) return MESIBO_RESULT_PASS;
	j = (job_t *)calloc(1, sizeof *j);
	j->m = m;
#define STR(field) j->field = mesibo_util_json_extract(msg, (mesibo_int_t)len, #field, NULL)
	STR(tag); STR(url); STR(post); STR(content_type); STR(extra_header); STR(user_agent); STR(referrer);
	STR(origin); STR(cookie); STR(encoding); STR(cache_control); STR(accept); STR(etag);
#undef STR
	if (!j->tag) j->tag = strdup("req");
	j->ims = number(msg, len, "ims", 0);
	j->conn_timeout = number(msg, len, "conn_timeout", 0);
	j->header_timeout = number(msg, len, "header_timeout", 0);
	j->body_timeout = number(msg, len, "body_timeout", 0);
	j->total_timeout = number(msg, len, "total_timeout", 0);
	j->count = (int)number(msg, len, "count", 1);
	j->quiet = (int)number(msg, len, "quiet", 0);
	j->scribble = (int)number(msg, len, "scribble", 0);
	j->no_status = (int)number(msg, len, "no_status", 0);
	j->no_data = (int)number(msg, len, "no_data", 0);
	j->no_close = (int)number(msg, len, "no_close", 0);
	if (number(msg, len, "from_thread", 0)) {
		mesibo_util_create_thread(thread_main, j, 0, "httpmod");
	} else {
		run(j);
		job_free(j);
	}
	return MESIBO_RESULT_CONSUMED;
}

MESIBO_EXPORT mesibo_int_t mesibo_module_httpmod_init(mesibo_int_t version, mesibo_module_t *m, mesibo_int_t len)
{
	MESIBO_MODULE_SANITY_CHECK(m, version, len);
	m->description = "starts HTTP requests and logs every callback";
	m->on_message = http_on_message;
	return MESIBO_RESULT_OK;
}
