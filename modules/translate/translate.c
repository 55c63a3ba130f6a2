/*
 * translate: translates text messages on their way to the recipient, with a
 * LibreTranslate-style HTTP API. When the service fails, the original is
 * delivered untranslated, so a message is never lost to a translation
 * problem.
 *
 *   module translate {
 *       endpoint = http://127.0.0.1:5000/translate
 *       source = auto
 *       target = es
 *       api_key = xxxx
 *       destinations = bob, carol
 *       timeout = 4
 *       defer_timeout = 5
 *       log = 1
 *   }
 *
 * The request is POST endpoint {"q":TEXT,"source":S,"target":T,"format":"text"}
 * (plus "api_key" when set); the answer is the translatedText member.
 * destinations, when set, limits translation to messages for those
 * addresses; group messages, media and presence updates always pass on.
 *
 * Two ways to replace a message, picked at init:
 *
 * - Deferred (a server with Switchboard's "defer" extension, see
 *   include/switchboard.h): on_message takes a handle and returns
 *   SWITCHBOARD_RESULT_DEFER; the request's on_close resolves the
 *   handle with PASS and the translation as the new payload, or PASS alone
 *   (the original) on failure. The message keeps its id, so the sender's
 *   delivered and read statuses work. The server bounds the wait with the
 *   block's defer_timeout; timeout (the HTTP limit) defaults to the largest
 *   whole number of seconds below it, so the module normally decides first.
 *
 * - Classic (any other server, such as mesibo's): the original is consumed
 *   and the translation goes out as a new message, with a new id, from the
 *   same sender, with the same refid, type, flags and expiry.
 *
 * The shape is the one of modules/chatbot/chatbot.c: copy in on_message,
 * ask asynchronously (mesibo_util_http), decide or send from on_close.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "module.h"
#include "switchboard.h"

#define MAX_ANSWER_BYTES (1024 * 1024)
#define CLASSIC_TIMEOUT 10          /* seconds: timeout's default without deferring */
#define DEFAULT_DEFER_TIMEOUT_MS 5000 /* the server's default defer_timeout */

typedef struct translate_s {
	const char *endpoint, *source, *target, *api_key, *destinations;
	mesibo_uint_t timeout; /* seconds */
	int defer;             /* the server has the "defer" extension */
	uint32_t last_id;
	int pending;           /* messages waiting for the service */
	int unloaded;          /* on_cleanup ran while some were pending */
} translate_t;

typedef struct buf_s {
	char *p;
	size_t len, cap;
} buf_t;

/* One message on its way: its envelope (and, classic only, its text), copied
 * in on_message; params.to and params.from are NULL, to and from are ours. */
typedef struct job_s {
	mesibo_module_t *mod;
	translate_t *tr;
	switchboard_deferred_t *handle; /* deferred: the pending decision */
	mesibo_message_params_t params;
	char *to, *from;
	char *text; /* classic only: the original, to send when the service fails */
	size_t text_len;
	mesibo_int_t status; /* the HTTP status, 0 until known */
	int too_big;
	buf_t answer;
} job_t;

static int buf_add(buf_t *b, const char *s, size_t n)
{
	char *p;
	size_t cap;

	if (b->len + n + 1 > b->cap) {
		cap = b->cap ? b->cap : 256;
		while (cap < b->len + n + 1)
			cap *= 2;
		p = (char *)realloc(b->p, cap);
		if (!p)
			return -1;
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
	return 0;
}

static int buf_str(buf_t *b, const char *s)
{
	return buf_add(b, s, strlen(s));
}

/* `n` bytes as a JSON string (see modules/chatbot/chatbot.c). */
static int buf_json(buf_t *b, const char *s, size_t n)
{
	char esc[8];
	size_t i, start = 0;
	int r = buf_add(b, "\"", 1);

	for (i = 0; i < n && r == 0; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c >= 0x20 && c != '"' && c != '\\')
			continue;
		r = buf_add(b, s + start, i - start);
		start = i + 1;
		if (c == '"' || c == '\\')
			snprintf(esc, sizeof esc, "\\%c", c);
		else if (c == '\n')
			snprintf(esc, sizeof esc, "\\n");
		else if (c == '\r')
			snprintf(esc, sizeof esc, "\\r");
		else if (c == '\t')
			snprintf(esc, sizeof esc, "\\t");
		else
			snprintf(esc, sizeof esc, "\\u%04x", c);
		if (r == 0)
			r = buf_str(b, esc);
	}
	if (r == 0)
		r = buf_add(b, s + start, n - start);
	return r == 0 ? buf_add(b, "\"", 1) : r;
}

static char *copy(const char *s, size_t n)
{
	char *p = (char *)malloc(n + 1);

	if (p) {
		memcpy(p, s, n);
		p[n] = '\0';
	}
	return p;
}

/* Whether `addr` is one of the comma-separated addresses in `list`. */
static int in_list(const char *list, const char *addr)
{
	size_t n = strlen(addr), len;

	while (*list) {
		while (*list == ' ' || *list == ',')
			list++;
		len = strcspn(list, ",");
		while (len > 0 && list[len - 1] == ' ')
			len--;
		if (len == n && len > 0 && strncmp(list, addr, n) == 0)
			return 1;
		list += strcspn(list, ",");
	}
	return 0;
}

static void job_free(job_t *j)
{
	free(j->to);
	free(j->from);
	free(j->text);
	free(j->answer.p);
	free(j);
}

/* Sends `text` in place of the original message. */
static void deliver(job_t *j, const char *text, size_t len)
{
	mesibo_message_params_t p;

	memset(&p, 0, sizeof p);
	p.aid = j->params.aid;
	if (++j->tr->last_id == 0) /* 0 would ask the server to pick the id */
		j->tr->last_id = 1;
	p.id = j->tr->last_id;
	p.refid = j->params.refid;
	p.type = j->params.type;
	p.flags = j->params.flags;
	p.expiry = j->params.expiry;
	p.from = j->from;
	p.to = j->to;
	if (mesibo_message(j->mod, &p, text, (mesibo_uint_t)len) != MESIBO_RESULT_OK)
		mesibo_log(j->mod, 0, "could not deliver message %lu from %s to %s\n",
				(unsigned long)j->params.id, j->from, j->to);
}

static void translate_free(translate_t *tr)
{
	free(tr);
}

static mesibo_int_t translate_on_status(void *cbdata, mesibo_int_t status, const char *type)
{
	(void)type;
	((job_t *)cbdata)->status = status;
	return 0;
}

static mesibo_int_t translate_on_data(void *cbdata, mesibo_int_t state, mesibo_int_t progress,
		const char *buffer, mesibo_int_t size)
{
	job_t *j = (job_t *)cbdata;

	if (progress < 0 || state != MODULE_HTTP_STATE_RESPBODY || size <= 0)
		return 0; /* on a failure (progress < 0) on_close came first and freed j: touch nothing */
	if (j->answer.len + (size_t)size > MAX_ANSWER_BYTES || buf_add(&j->answer, buffer, (size_t)size) != 0) {
		j->too_big = 1;
		return -1;
	}
	return 0;
}

/* Deferred: decides the message. With a translation, PASS with it as the
 * new payload (or, should the server refuse that payload, PASS alone);
 * without one, PASS alone: the original goes on, with its id. */
static void decide(job_t *j, const char *text, const char *why)
{
	mesibo_int_t r = MESIBO_RESULT_FAIL;

	if (text)
		r = switchboard_resolve(j->mod, j->handle, SWITCHBOARD_RESULT_PASS, text, (mesibo_uint_t)strlen(text));
	if (r == MESIBO_RESULT_OK) {
		mesibo_log(j->mod, 1, "translated message %lu from %s to %s\n",
				(unsigned long)j->params.id, j->from, j->to);
	} else if (switchboard_resolve(j->mod, j->handle, SWITCHBOARD_RESULT_PASS, NULL, 0) == MESIBO_RESULT_OK) {
		/* Only a payload over max_message_size makes the first call fail
		 * and this one succeed (the server logs that too). */
		mesibo_log(j->mod, 0, "message %lu from %s to %s delivered untranslated: %s\n",
				(unsigned long)j->params.id, j->from, j->to,
				text ? "the translation is larger than max_message_size" : why);
	} else {
		/* The handle is void: the wait ended (defer_timeout) first, and the
		 * server decided the message by on_error and logged it. */
		mesibo_log(j->mod, 0, "message %lu from %s to %s: decided by the server at defer_timeout (on_error) before %s%s\n",
				(unsigned long)j->params.id, j->from, j->to,
				text ? "the translation came" : "the request ended: ", text ? "" : why);
	}
}

/* on_close ends every request (a failure still calls on_data once more,
 * which touches nothing): decide the message (deferred), or
 * deliver the translation or the original (classic); free the job. */
static void translate_on_close(void *cbdata, mesibo_int_t result)
{
	job_t *j = (job_t *)cbdata;
	translate_t *tr = j->tr;
	char *body = j->answer.p ? j->answer.p : (char *)"";
	char *text = NULL, *error;
	char why[160];

	tr->pending--;
	if (tr->unloaded) {
		/* Shutting down: the config is gone and so is the chain (a deferred
		 * message was dropped unacknowledged; its sender sends it again). */
		job_free(j);
		if (tr->pending == 0)
			translate_free(tr);
		return;
	}
	if (result == MESIBO_RESULT_OK && j->status >= 200 && j->status <= 299 && !j->too_big)
		text = mesibo_util_json_extract(body, (mesibo_int_t)j->answer.len, "translatedText", NULL);
	if (text && !text[0]) {
		free(text);
		text = NULL;
	}
	why[0] = '\0';
	if (!text) {
		if (result != MESIBO_RESULT_OK) {
			snprintf(why, sizeof why, "the request failed (unreachable or timed out; the server log says which)");
		} else if (j->too_big) {
			snprintf(why, sizeof why, "the answer is larger than 1 MiB");
		} else if (j->status < 200 || j->status > 299) {
			/* LibreTranslate explains a refusal in an "error" member. */
			error = mesibo_util_json_extract(body, (mesibo_int_t)j->answer.len, "error", NULL);
			snprintf(why, sizeof why, "HTTP status %ld%s%.100s", (long)j->status, error ? ": " : "", error ? error : "");
			free(error);
		} else {
			snprintf(why, sizeof why, "no translatedText in the answer");
		}
	}
	if (j->handle) {
		decide(j, text, why);
	} else if (text) {
		mesibo_log(j->mod, 1, "translated message %lu from %s to %s\n",
				(unsigned long)j->params.id, j->from, j->to);
		deliver(j, text, strlen(text));
	} else {
		mesibo_log(j->mod, 0, "message %lu from %s to %s delivered untranslated: %s\n",
				(unsigned long)j->params.id, j->from, j->to, why);
		deliver(j, j->text, j->text_len);
	}
	free(text);
	job_free(j);
}

static mesibo_int_t translate_on_message(mesibo_module_t *mod, mesibo_message_params_t *p,
		char *message, mesibo_uint_t len)
{
	translate_t *tr = (translate_t *)mod->ctx;
	buf_t body = {NULL, 0, 0};
	mesibo_http_t req;
	job_t *j;
	int deferred;

	if (p->groupid != 0 || !p->to || len == 0 ||
			(p->flags & (MOD_MESIBO_MSGFLAG_PRESENCE | MOD_MESIBO_MSGFLAG_MEDIA)) ||
			(tr->destinations && !in_list(tr->destinations, p->to)))
		return MESIBO_RESULT_PASS;

	/* Without memory for the copy, the original goes through untranslated. */
	j = (job_t *)calloc(1, sizeof *j);
	if (!j)
		return MESIBO_RESULT_PASS;
	j->mod = mod;
	j->tr = tr;
	j->params = *p;
	j->params.to = j->params.from = NULL; /* the server's, valid during this call only */
	j->to = copy(p->to, strlen(p->to));
	j->from = copy(p->from, strlen(p->from));
	/* Deferred, the server keeps the original: only a classic job needs it.
	 * (Should the server give no handle, the classic way still works.) */
	if (tr->defer)
		j->handle = switchboard_defer(mod, p);
	deferred = j->handle != NULL;
	if (!deferred) {
		j->text = copy(message, len);
		j->text_len = len;
	}
	if (!j->to || !j->from || (!deferred && !j->text) ||
			buf_str(&body, "{\"q\":") || buf_json(&body, message, len) ||
			buf_str(&body, ",\"source\":") || buf_json(&body, tr->source, strlen(tr->source)) ||
			buf_str(&body, ",\"target\":") || buf_json(&body, tr->target, strlen(tr->target)) ||
			buf_str(&body, ",\"format\":\"text\"") ||
			(tr->api_key && (buf_str(&body, ",\"api_key\":") || buf_json(&body, tr->api_key, strlen(tr->api_key)))) ||
			buf_str(&body, "}")) {
		free(body.p);
		job_free(j);
		return MESIBO_RESULT_PASS; /* gives a handle we took up */
	}

	/* mesibo_util_http copies the request and its strings before returning;
	 * its callbacks run later, on this (the loop) thread, so not before
	 * on_message has returned. */
	memset(&req, 0, sizeof req);
	req.url = tr->endpoint;
	req.post = body.p;
	req.content_type = "application/json";
	req.accept = "application/json";
	req.conn_timeout = req.header_timeout = req.body_timeout = req.total_timeout = tr->timeout;
	req.on_status = translate_on_status;
	req.on_data = translate_on_data;
	req.on_close = translate_on_close;
	if (mesibo_util_http(&req, j) != MESIBO_RESULT_OK) {
		/* Refused at once, no callback will run: let the original through. */
		mesibo_log(mod, 0, "message %lu from %s to %s passed untranslated: the HTTP request could not be started\n",
				(unsigned long)p->id, p->from, p->to);
		free(body.p);
		job_free(j);
		return MESIBO_RESULT_PASS;
	}
	/* From here on j belongs to the request: on_close decides and frees it. */
	tr->pending++;
	free(body.p);
	return deferred ? SWITCHBOARD_RESULT_DEFER : MESIBO_RESULT_CONSUMED;
}

/* Requests still in flight will call back after this: they own tr now. */
static mesibo_int_t translate_on_cleanup(mesibo_module_t *mod)
{
	translate_t *tr = (translate_t *)mod->ctx;

	mod->ctx = NULL;
	tr->unloaded = 1;
	if (tr->pending == 0)
		translate_free(tr);
	return MESIBO_RESULT_OK;
}

static const char *config_or(mesibo_module_t *m, const char *name, const char *fallback)
{
	const char *v = mesibo_util_getconfig(m, name);
	return v && v[0] ? v : fallback;
}

/* The block's defer_timeout in milliseconds, read as the server reads it
 * (seconds, or a number with "ms" or "s"); the server refuses a bad one. */
static unsigned long defer_timeout_ms(mesibo_module_t *m)
{
	const char *v = config_or(m, "defer_timeout", NULL);
	char *end;
	double x;

	if (!v)
		return DEFAULT_DEFER_TIMEOUT_MS;
	x = strtod(v, &end);
	while (*end == ' ')
		end++;
	if (strcmp(end, "ms") == 0)
		x /= 1000;
	else if (*end && strcmp(end, "s") != 0)
		return DEFAULT_DEFER_TIMEOUT_MS;
	if (end == v || !(x > 0) || x > 3600)
		return DEFAULT_DEFER_TIMEOUT_MS;
	return (unsigned long)(x * 1000 + 0.5);
}

MESIBO_EXPORT mesibo_int_t mesibo_module_translate_init(mesibo_int_t version, mesibo_module_t *m,
		mesibo_int_t len)
{
	translate_t *tr;
	const char *timeout;
	unsigned long defer_ms = 0;

	MESIBO_MODULE_SANITY_CHECK(m, version, len);

	tr = (translate_t *)calloc(1, sizeof *tr);
	if (!tr) {
		mesibo_log(m, 0, "out of memory\n");
		return MESIBO_RESULT_FAIL;
	}
	/* Config strings belong to the server and live until after on_cleanup. */
	tr->endpoint = config_or(m, "endpoint", NULL);
	tr->target = config_or(m, "target", NULL);
	tr->source = config_or(m, "source", "auto");
	tr->api_key = config_or(m, "api_key", NULL);
	tr->destinations = config_or(m, "destinations", NULL);
	/* Deferring, two clocks run: the server's defer_timeout bounds the wait,
	 * timeout bounds the request. By default the request ends first (the
	 * largest whole number of seconds below defer_timeout, at most 10), so
	 * the module decides, and logs why, before the server's on_error does. */
	tr->defer = switchboard_supports(m, SWITCHBOARD_EXT_DEFER);
	if (tr->defer)
		defer_ms = defer_timeout_ms(m);
	timeout = config_or(m, "timeout", NULL);
	if (timeout)
		tr->timeout = (mesibo_uint_t)strtoul(timeout, NULL, 10);
	else if (!tr->defer)
		tr->timeout = CLASSIC_TIMEOUT;
	else if (defer_ms <= 1000)
		tr->timeout = 1;
	else if ((defer_ms - 1) / 1000 < CLASSIC_TIMEOUT)
		tr->timeout = (mesibo_uint_t)((defer_ms - 1) / 1000);
	else
		tr->timeout = CLASSIC_TIMEOUT;
	if (!tr->endpoint || !tr->target || tr->timeout == 0) {
		mesibo_log(m, 0, "endpoint and target are required; timeout must be a number of seconds\n");
		free(tr);
		return MESIBO_RESULT_FAIL;
	}
	if (tr->defer && tr->timeout * 1000 >= defer_ms)
		mesibo_log(m, 0, "warning: timeout (%lu s) is not below defer_timeout (%lu ms): a message whose translation "
				"takes longer is decided by the server's on_error, not translated\n",
				(unsigned long)tr->timeout, defer_ms);
	/* Message ids (classic): see modules/echo/echo.c. */
	tr->last_id = (uint32_t)mesibo_util_usec();

	mesibo_log(m, 1, "translating %s to %s with %s, for %s; %s\n", tr->source, tr->target, tr->endpoint,
			tr->destinations ? tr->destinations : "every recipient",
			tr->defer ? "deferring (messages keep their ids)" : "as new messages (no defer extension)");

	m->ctx = tr;
	m->description = "Sample module: translates messages with a LibreTranslate-style service";
	m->on_message = translate_on_message;
	m->on_cleanup = translate_on_cleanup;
	return MESIBO_RESULT_OK;
}
