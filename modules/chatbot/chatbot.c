/*
 * chatbot: a bot backed by an HTTP chat service. A message sent to the bot's
 * address is consumed and POSTed to the service; the service's answer goes
 * back to the sender as a reply (refid = the question's id). Every other
 * message passes on.
 *
 *   module chatbot {
 *       address = assistant
 *       endpoint = http://127.0.0.1:8000/v1/chat/completions
 *       access_token = sk-xxxx
 *       format = openai
 *       model = llama3
 *       log = 1
 *   }
 *
 * format says what the request looks like and where the answer is:
 *   openai      POST endpoint {"model":M,"messages":[{"role":"user","content":T}]},
 *               answer at choices.0.message.content (any OpenAI-compatible
 *               chat completions server: OpenAI, llama.cpp, vLLM, Ollama...)
 *   dialogflow  POST endpoint/projects/PROJECT/agent/sessions/S:detectIntent
 *               {"queryInput":{"text":{"text":T,"languageCode":L}}}, answer at
 *               queryResult.fulfillmentText; S is derived from the sender
 *   simple      POST endpoint {"text":T,"language":L}, answer at text
 * response_field replaces the answer's path: a member name, or a dotted path
 * whose numbers index arrays (choices.0.message.content).
 *
 * This is the shape of a bot that needs the network: on_message copies what
 * the answer needs into a job and starts an asynchronous request
 * (mesibo_util_http); the callbacks collect the body and the last one
 * (on_close) answers and frees the job. Nothing blocks the server meanwhile.
 * A question the service cannot answer (unreachable, timeout, an HTTP error,
 * an answer without the field) gets a short apology, never silence.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "module.h"

#define MAX_ANSWER_BYTES (1024 * 1024) /* a longer body is an error, not a reply */

enum chatbot_format { FORMAT_OPENAI, FORMAT_DIALOGFLOW, FORMAT_SIMPLE };

typedef struct chatbot_s {
	const char *address;
	const char *endpoint;
	const char *model;     /* openai: the model name; dialogflow: the project */
	const char *language;
	const char *response_field;
	const char *apology;
	char *auth_header;     /* "Authorization: Bearer ...", or NULL */
	enum chatbot_format format;
	mesibo_uint_t timeout; /* seconds */
	uint32_t last_id;
	int pending;           /* questions waiting for the service */
	int unloaded;          /* on_cleanup ran while some were pending */
} chatbot_t;

/* A growing byte buffer: request bodies and the collected answer. */
typedef struct buf_s {
	char *p;
	size_t len, cap;
} buf_t;

/* One question on its way: everything the answer needs, copied from
 * on_message's arguments, which are gone by the time the service answers. */
typedef struct question_s {
	mesibo_module_t *mod;
	chatbot_t *bot;
	mesibo_message_params_t params; /* aid, id, flags, expiry of the question */
	char *from;
	mesibo_int_t status;            /* the HTTP status, 0 until known */
	int too_big;
	buf_t answer;
} question_t;

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

/* `n` bytes as a JSON string, quotes included. Quotes, backslashes and every
 * control character are escaped; a NUL in the message becomes \u0000. Other
 * bytes are copied: the text is expected to be UTF-8. */
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

/* ---------------------------------------------------------------------- */
/* Reading the answer: a dotted path, one step at a time                  */
/* ---------------------------------------------------------------------- */

static const char *skip_ws(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	return p;
}

/* The end of the JSON value at p (a string, container or scalar), or NULL.
 * Only strings and nesting are tracked: checking the value is left to
 * mesibo_util_json_extract. */
static const char *skip_value(const char *p, const char *end)
{
	const char *start = p;
	int depth = 0, in_string = 0;

	for (; p < end; p++) {
		if (in_string) {
			if (*p == '\\' && p + 1 < end) {
				p++;
			} else if (*p == '"') {
				in_string = 0;
				if (depth == 0)
					return p + 1;
			}
		} else if (*p == '"') {
			in_string = 1;
		} else if (*p == '{' || *p == '[') {
			depth++;
		} else if (*p == '}' || *p == ']') {
			if (depth == 0) /* the end of the array after a scalar */
				return p > start ? p : NULL;
			if (--depth == 0)
				return p + 1;
		} else if (depth == 0 && *p && strchr(", \t\r\n", *p)) {
			return p > start ? p : NULL;
		}
	}
	return NULL;
}

/* Element `index` of the JSON array in [s, s+n), decoded like
 * mesibo_util_json_extract decodes a member (a string unquoted and
 * unescaped, anything else as its JSON text): the element is wrapped as
 * {"v":...} and extracted. */
static char *array_item(const char *s, size_t n, long index)
{
	const char *end = s + n, *p = skip_ws(s, end), *item;
	buf_t wrap = {NULL, 0, 0};
	char *v = NULL;
	long i;

	if (p == end || *p != '[')
		return NULL;
	p++;
	for (i = 0;; i++) {
		item = skip_ws(p, end);
		p = skip_value(item, end);
		if (!p)
			return NULL;
		if (i == index)
			break;
		p = skip_ws(p, end);
		if (p == end || *p != ',')
			return NULL;
		p++;
	}
	if (buf_str(&wrap, "{\"v\":") == 0 && buf_add(&wrap, item, (size_t)(p - item)) == 0 && buf_str(&wrap, "}") == 0)
		v = mesibo_util_json_extract(wrap.p, (mesibo_int_t)wrap.len, "v", NULL);
	free(wrap.p);
	return v;
}

/* The value at `path` in the JSON text [json, json+n), as a malloc'd string,
 * or NULL. A name step finds the first member of that name in the value the
 * previous step returned, at any depth (mesibo_util_json_extract); a number
 * step picks an array element. */
static char *json_path(const char *json, size_t n, const char *path)
{
	char *cur = NULL, *next, *stop;
	char step[128];
	size_t len;
	long index;

	while (*path) {
		len = strcspn(path, ".");
		if (len == 0 || len >= sizeof step) {
			free(cur);
			return NULL;
		}
		memcpy(step, path, len);
		step[len] = '\0';
		index = strtol(step, &stop, 10);
		if (*stop == '\0' && index >= 0)
			next = array_item(json, n, index);
		else
			next = mesibo_util_json_extract((char *)json, (mesibo_int_t)n, step, NULL);
		free(cur);
		if (!next)
			return NULL;
		cur = next;
		json = cur;
		n = strlen(cur);
		path += len + (path[len] == '.');
	}
	return cur;
}

/* ---------------------------------------------------------------------- */
/* Answering                                                              */
/* ---------------------------------------------------------------------- */

static void question_free(question_t *q)
{
	free(q->from);
	free(q->answer.p);
	free(q);
}

/* Sends `text` to the asker as a reply to its question. */
static void reply(question_t *q, const char *text, size_t len)
{
	chatbot_t *bot = q->bot;
	mesibo_message_params_t p;

	memset(&p, 0, sizeof p);
	p.aid = q->params.aid;
	if (++bot->last_id == 0) /* 0 would ask the server to pick the id */
		bot->last_id = 1;
	p.id = bot->last_id;
	p.refid = q->params.id;
	p.flags = q->params.flags;
	p.expiry = q->params.expiry;
	p.from = (char *)bot->address;
	p.to = q->from;
	if (mesibo_message(q->mod, &p, text, (mesibo_uint_t)len) != MESIBO_RESULT_OK)
		mesibo_log(q->mod, 0, "could not send the answer to message %lu from %s\n",
				(unsigned long)q->params.id, q->from);
}

static void apologize(question_t *q, const char *why)
{
	mesibo_log(q->mod, 0, "no answer to message %lu from %s: %s\n",
			(unsigned long)q->params.id, q->from, why);
	reply(q, q->bot->apology, strlen(q->bot->apology));
}

static mesibo_int_t chatbot_on_status(void *cbdata, mesibo_int_t status, const char *type)
{
	(void)type;
	((question_t *)cbdata)->status = status;
	return 0;
}

static mesibo_int_t chatbot_on_data(void *cbdata, mesibo_int_t state, mesibo_int_t progress,
		const char *buffer, mesibo_int_t size)
{
	question_t *q = (question_t *)cbdata;

	if (progress < 0 || state != MODULE_HTTP_STATE_RESPBODY || size <= 0)
		return 0; /* on a failure (progress < 0) on_close came first and freed q: touch nothing */
	if (q->answer.len + (size_t)size > MAX_ANSWER_BYTES || buf_add(&q->answer, buffer, (size_t)size) != 0) {
		q->too_big = 1;
		return -1;
	}
	return 0;
}

static void chatbot_free(chatbot_t *bot)
{
	free(bot->auth_header);
	free(bot);
}

/* on_close ends every request (a failure still calls on_data once more,
 * which touches nothing): answer (or apologize) and free. */
static void chatbot_on_close(void *cbdata, mesibo_int_t result)
{
	question_t *q = (question_t *)cbdata;
	chatbot_t *bot = q->bot;
	char why[96];
	char *text;

	bot->pending--;
	if (bot->unloaded) {
		/* The server is shutting down and the config strings are gone:
		 * nobody to answer. The last question frees the bot. */
		question_free(q);
		if (bot->pending == 0)
			chatbot_free(bot);
		return;
	}
	if (q->too_big) {
		apologize(q, "the answer is larger than 1 MiB");
	} else if (result != MESIBO_RESULT_OK) {
		apologize(q, "the request failed (unreachable or timed out; the server log says which)");
	} else if (q->status < 200 || q->status > 299) {
		snprintf(why, sizeof why, "the service answered with HTTP status %ld", (long)q->status);
		apologize(q, why);
	} else if (!(text = json_path(q->answer.p ? q->answer.p : "", q->answer.len, q->bot->response_field)) || !text[0]) {
		free(text);
		snprintf(why, sizeof why, "no \"%.60s\" in the answer", q->bot->response_field);
		apologize(q, why);
	} else {
		mesibo_log(q->mod, 1, "answered message %lu from %s\n", (unsigned long)q->params.id, q->from);
		reply(q, text, strlen(text));
		free(text);
	}
	question_free(q);
}

/* The request body for the configured format, and the URL to post it to.
 * Returns non-zero when memory ran out. */
static int build_request(const chatbot_t *bot, const mesibo_message_params_t *p, const char *message,
		mesibo_uint_t len, buf_t *url, buf_t *body)
{
	char session[24];
	unsigned long hash = 5381;
	const char *s;

	switch (bot->format) {
	case FORMAT_OPENAI:
		return buf_str(url, bot->endpoint) || buf_str(body, "{") ||
			(bot->model && (buf_str(body, "\"model\":") || buf_json(body, bot->model, strlen(bot->model)) ||
					buf_str(body, ","))) ||
			buf_str(body, "\"messages\":[{\"role\":\"user\",\"content\":") || buf_json(body, message, len) ||
			buf_str(body, "}]}");
	case FORMAT_DIALOGFLOW:
		/* One conversation per sender: the session id is a hash of the
		 * address, so addresses never leave the server. */
		for (s = p->from; *s; s++)
			hash = hash * 33 + (unsigned char)*s;
		snprintf(session, sizeof session, "sb-%lx", hash);
		return buf_str(url, bot->endpoint) || buf_str(url, "/projects/") || buf_str(url, bot->model) ||
			buf_str(url, "/agent/sessions/") || buf_str(url, session) || buf_str(url, ":detectIntent") ||
			buf_str(body, "{\"queryInput\":{\"text\":{\"text\":") || buf_json(body, message, len) ||
			buf_str(body, ",\"languageCode\":") || buf_json(body, bot->language, strlen(bot->language)) ||
			buf_str(body, "}}}");
	case FORMAT_SIMPLE:
		break;
	}
	return buf_str(url, bot->endpoint) || buf_str(body, "{\"text\":") || buf_json(body, message, len) ||
		buf_str(body, ",\"language\":") || buf_json(body, bot->language, strlen(bot->language)) ||
		buf_str(body, "}");
}

static mesibo_int_t chatbot_on_message(mesibo_module_t *mod, mesibo_message_params_t *p,
		char *message, mesibo_uint_t len)
{
	chatbot_t *bot = (chatbot_t *)mod->ctx;
	buf_t url = {NULL, 0, 0}, body = {NULL, 0, 0};
	mesibo_http_t req;
	question_t *q;

	if (p->groupid != 0 || !p->to || strcmp(p->to, bot->address) != 0)
		return MESIBO_RESULT_PASS;

	q = (question_t *)calloc(1, sizeof *q);
	if (q)
		q->from = (char *)malloc(strlen(p->from) + 1);
	if (!q || !q->from) {
		free(q);
		mesibo_log(mod, 0, "out of memory: message %lu from %s dropped\n", (unsigned long)p->id, p->from);
		return MESIBO_RESULT_CONSUMED;
	}
	strcpy(q->from, p->from);
	q->mod = mod;
	q->bot = bot;
	q->params = *p;
	if (build_request(bot, p, message, len, &url, &body) != 0) {
		apologize(q, "out of memory");
		question_free(q);
		free(url.p);
		free(body.p);
		return MESIBO_RESULT_CONSUMED;
	}

	/* mesibo_util_http copies the request and its strings before returning. */
	memset(&req, 0, sizeof req);
	req.url = url.p;
	req.post = body.p;
	req.content_type = "application/json";
	req.accept = "application/json";
	req.extra_header = bot->auth_header;
	req.conn_timeout = req.header_timeout = req.body_timeout = req.total_timeout = bot->timeout;
	req.on_status = chatbot_on_status;
	req.on_data = chatbot_on_data;
	req.on_close = chatbot_on_close;
	if (mesibo_util_http(&req, q) != MESIBO_RESULT_OK) {
		/* Refused at once: no callback will run. */
		apologize(q, "the HTTP request could not be started");
		question_free(q);
	} else {
		bot->pending++;
		mesibo_log(mod, 1, "asking %s about message %lu from %s\n", url.p, (unsigned long)p->id, p->from);
	}
	free(url.p);
	free(body.p);
	return MESIBO_RESULT_CONSUMED;
}

/* Requests still in flight will call back after this: they own the bot now. */
static mesibo_int_t chatbot_on_cleanup(mesibo_module_t *mod)
{
	chatbot_t *bot = (chatbot_t *)mod->ctx;

	mod->ctx = NULL;
	bot->unloaded = 1;
	if (bot->pending == 0)
		chatbot_free(bot);
	return MESIBO_RESULT_OK;
}

static const char *config_or(mesibo_module_t *m, const char *name, const char *fallback)
{
	const char *v = mesibo_util_getconfig(m, name);
	return v && v[0] ? v : fallback;
}

MESIBO_EXPORT mesibo_int_t mesibo_module_chatbot_init(mesibo_int_t version, mesibo_module_t *m,
		mesibo_int_t len)
{
	const char *format, *token, *timeout;
	chatbot_t *bot;
	buf_t auth = {NULL, 0, 0};

	MESIBO_MODULE_SANITY_CHECK(m, version, len);

	bot = (chatbot_t *)calloc(1, sizeof *bot);
	if (!bot) {
		mesibo_log(m, 0, "out of memory\n");
		return MESIBO_RESULT_FAIL;
	}
	/* Config strings belong to the server and live until after on_cleanup. */
	bot->address = config_or(m, "address", "chatbot");
	bot->endpoint = config_or(m, "endpoint", NULL);
	bot->model = config_or(m, "model", config_or(m, "project", NULL));
	bot->language = config_or(m, "language", "en");
	bot->apology = config_or(m, "apology", "Sorry, I cannot answer right now. Please try again later.");
	format = config_or(m, "format", "openai");
	timeout = config_or(m, "timeout", "30");
	bot->timeout = (mesibo_uint_t)strtoul(timeout, NULL, 10);
	if (strcmp(format, "openai") == 0) {
		bot->format = FORMAT_OPENAI;
		bot->response_field = "choices.0.message.content";
	} else if (strcmp(format, "dialogflow") == 0) {
		bot->format = FORMAT_DIALOGFLOW;
		bot->response_field = "queryResult.fulfillmentText";
	} else if (strcmp(format, "simple") == 0) {
		bot->format = FORMAT_SIMPLE;
		bot->response_field = "text";
	} else {
		mesibo_log(m, 0, "format must be openai, dialogflow or simple, not \"%s\"\n", format);
		free(bot);
		return MESIBO_RESULT_FAIL;
	}
	bot->response_field = config_or(m, "response_field", bot->response_field);
	if (!bot->endpoint || (bot->format == FORMAT_DIALOGFLOW && !bot->model) || bot->timeout == 0) {
		mesibo_log(m, 0, "endpoint is required (and project, for format = dialogflow); timeout must be a number of seconds\n");
		free(bot);
		return MESIBO_RESULT_FAIL;
	}
	token = config_or(m, "access_token", NULL);
	if (token && (buf_str(&auth, "Authorization: Bearer ") != 0 || buf_str(&auth, token) != 0)) {
		mesibo_log(m, 0, "out of memory\n");
		free(auth.p);
		free(bot);
		return MESIBO_RESULT_FAIL;
	}
	bot->auth_header = auth.p;
	/* Reply ids: see modules/echo/echo.c. */
	bot->last_id = (uint32_t)mesibo_util_usec();

	mesibo_log(m, 1, "answering messages to %s with %s (%s)\n", bot->address, bot->endpoint, format);

	m->ctx = bot;
	m->description = "Sample module: a chatbot backed by an HTTP chat service";
	m->on_message = chatbot_on_message;
	m->on_cleanup = chatbot_on_cleanup;
	return MESIBO_RESULT_OK;
}
