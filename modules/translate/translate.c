/*
 * translate: translates text messages on their way to the recipient, with a
 * LibreTranslate-style HTTP API. The original is consumed; the translation
 * goes to the same recipient, from the same sender, with the same refid,
 * type, flags and expiry. When the service fails, the original is delivered
 * untranslated, so a message is never lost to a translation problem.
 *
 *   module translate {
 *       endpoint = http://127.0.0.1:5000/translate
 *       source = auto
 *       target = es
 *       api_key = xxxx
 *       destinations = bob, carol
 *       timeout = 10
 *       log = 1
 *   }
 *
 * The request is POST endpoint {"q":TEXT,"source":S,"target":T,"format":"text"}
 * (plus "api_key" when set); the answer is the translatedText member.
 * destinations, when set, limits translation to messages for those
 * addresses; group messages, media and presence updates always pass on.
 *
 * The delivered message is a new message, with a new id: the classic mesibo
 * way for a module that replaces a message it cannot rewrite in place (a
 * translation is rarely the same length). Receipts for it therefore carry
 * the new id, which the sender's app never saw.
 *
 * The shape is the one of modules/chatbot/chatbot.c: copy in on_message,
 * ask asynchronously (mesibo_util_http), send from on_close.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "module.h"

#define MAX_ANSWER_BYTES (1024 * 1024)

typedef struct translate_s {
	const char *endpoint, *source, *target, *api_key, *destinations;
	mesibo_uint_t timeout; /* seconds */
	uint32_t last_id;
	int pending;           /* messages waiting for the service */
	int unloaded;          /* on_cleanup ran while some were pending */
} translate_t;

typedef struct buf_s {
	char *p;
	size_t len, cap;
} buf_t;

/* One message on its way: its envelope and text, copied in on_message. */
typedef struct job_s {
	mesibo_module_t *mod;
	translate_t *tr;
	mesibo_message_params_t params;
	char *to, *from;
	char *text;
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
		return 0; /* a failure is reported again, and handled, in on_close */
	if (j->answer.len + (size_t)size > MAX_ANSWER_BYTES || buf_add(&j->answer, buffer, (size_t)size) != 0) {
		j->too_big = 1;
		return -1;
	}
	return 0;
}

/* The last callback of every request: deliver the translation, or the
 * original, and free the job. */
static void translate_on_close(void *cbdata, mesibo_int_t result)
{
	job_t *j = (job_t *)cbdata;
	translate_t *tr = j->tr;
	char *body = j->answer.p ? j->answer.p : (char *)"";
	char *text = NULL, *error;
	char why[160];

	tr->pending--;
	if (tr->unloaded) {
		/* Shutting down: the config is gone and so is the chain. */
		job_free(j);
		if (tr->pending == 0)
			translate_free(tr);
		return;
	}
	if (result == MESIBO_RESULT_OK && j->status >= 200 && j->status <= 299 && !j->too_big)
		text = mesibo_util_json_extract(body, (mesibo_int_t)j->answer.len, "translatedText", NULL);
	if (text && text[0]) {
		mesibo_log(j->mod, 1, "translated message %lu from %s to %s\n",
				(unsigned long)j->params.id, j->from, j->to);
		deliver(j, text, strlen(text));
	} else {
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
	j->to = copy(p->to, strlen(p->to));
	j->from = copy(p->from, strlen(p->from));
	j->text = copy(message, len);
	j->text_len = len;
	if (!j->to || !j->from || !j->text ||
			buf_str(&body, "{\"q\":") || buf_json(&body, message, len) ||
			buf_str(&body, ",\"source\":") || buf_json(&body, tr->source, strlen(tr->source)) ||
			buf_str(&body, ",\"target\":") || buf_json(&body, tr->target, strlen(tr->target)) ||
			buf_str(&body, ",\"format\":\"text\"") ||
			(tr->api_key && (buf_str(&body, ",\"api_key\":") || buf_json(&body, tr->api_key, strlen(tr->api_key)))) ||
			buf_str(&body, "}")) {
		free(body.p);
		job_free(j);
		return MESIBO_RESULT_PASS;
	}

	/* mesibo_util_http copies the request and its strings before returning. */
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
	tr->pending++;
	free(body.p);
	return MESIBO_RESULT_CONSUMED;
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

MESIBO_EXPORT mesibo_int_t mesibo_module_translate_init(mesibo_int_t version, mesibo_module_t *m,
		mesibo_int_t len)
{
	translate_t *tr;

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
	tr->timeout = (mesibo_uint_t)strtoul(config_or(m, "timeout", "10"), NULL, 10);
	if (!tr->endpoint || !tr->target || tr->timeout == 0) {
		mesibo_log(m, 0, "endpoint and target are required; timeout must be a number of seconds\n");
		free(tr);
		return MESIBO_RESULT_FAIL;
	}
	/* Message ids: see modules/echo/echo.c. */
	tr->last_id = (uint32_t)mesibo_util_usec();

	mesibo_log(m, 1, "translating %s to %s with %s, for %s\n", tr->source, tr->target, tr->endpoint,
			tr->destinations ? tr->destinations : "every recipient");

	m->ctx = tr;
	m->description = "Sample module: translates messages with a LibreTranslate-style service";
	m->on_message = translate_on_message;
	m->on_cleanup = translate_on_cleanup;
	return MESIBO_RESULT_OK;
}
