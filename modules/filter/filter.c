/*
 * filter: drops every message whose payload contains a blocked word.
 *
 *   module filter {
 *       blocked_words = alpha, beta, gamma
 *       log = 1
 *   }
 *
 * blocked_words is a comma-separated list; spaces around each word and
 * empty entries are ignored. Words match anywhere in the payload, ignoring
 * ASCII case, so a blocked "cat" also drops "Concatenate". log (default 0)
 * set to 1 logs each dropped message.
 *
 * The word list is prepared once at init, so on_message only compares
 * bytes: it allocates nothing and never reads past the payload's length.
 */
#include <stdlib.h>
#include <string.h>

#include "module.h"

typedef struct filter_word_s {
	const char *text; /* lower case, NUL-terminated, inside filter_ctx_t.text */
	size_t len;
} filter_word_t;

typedef struct filter_ctx_s {
	filter_word_t *words;
	size_t count;
	char *text;
	long log;
} filter_ctx_t;

static unsigned char ascii_lower(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') ? (unsigned char)(c - 'A' + 'a') : c;
}

static int is_blank(char c)
{
	return c == ' ' || c == '\t';
}

/* Whether `w` occurs in the `len` bytes at `data`, ignoring ASCII case. */
static int payload_contains(const char *data, size_t len, const filter_word_t *w)
{
	size_t i, j;

	if (w->len > len)
		return 0;
	for (i = 0; i <= len - w->len; i++) {
		for (j = 0; j < w->len; j++) {
			if (ascii_lower((unsigned char)data[i + j]) != (unsigned char)w->text[j])
				break;
		}
		if (j == w->len)
			return 1;
	}
	return 0;
}

/*
 * Splits `list` at commas into trimmed, lower-cased words, all copied into
 * one buffer. The module keeps its own copy because it lower-cases the
 * words; the config value itself belongs to the server.
 */
static int parse_words(filter_ctx_t *ctx, const char *list)
{
	size_t entries = 1;
	const char *s;
	char *out;

	for (s = list; *s; s++)
		if (*s == ',')
			entries++;

	ctx->words = (filter_word_t *)malloc(entries * sizeof(*ctx->words));
	ctx->text = (char *)malloc(strlen(list) + 1);
	if (!ctx->words || !ctx->text)
		return -1;

	out = ctx->text;
	for (s = list;; s++) {
		const char *start = s, *end;

		while (*s && *s != ',')
			s++;
		end = s;
		while (start < end && is_blank(*start))
			start++;
		while (end > start && is_blank(end[-1]))
			end--;

		if (end > start) {
			ctx->words[ctx->count].text = out;
			ctx->words[ctx->count].len = (size_t)(end - start);
			ctx->count++;
			while (start < end)
				*out++ = (char)ascii_lower((unsigned char)*start++);
			*out++ = '\0';
		}
		if (*s == '\0')
			return 0;
	}
}

static void free_ctx(filter_ctx_t *ctx)
{
	free(ctx->words);
	free(ctx->text);
	free(ctx);
}

/* Consumes the message on the first blocked word; otherwise passes it on. */
static mesibo_int_t filter_on_message(mesibo_module_t *mod, mesibo_message_params_t *p,
		char *message, mesibo_uint_t len)
{
	const filter_ctx_t *ctx = (const filter_ctx_t *)mod->ctx;
	size_t i;

	for (i = 0; i < ctx->count; i++) {
		if (payload_contains(message, (size_t)len, &ctx->words[i])) {
			/* Checked here too so that a quiet filter skips the formatting. */
			if (ctx->log >= 1)
				mesibo_log(mod, 1, "dropped message %lu from %s: contains \"%s\"\n",
						(unsigned long)p->id, p->from, ctx->words[i].text);
			return MESIBO_RESULT_CONSUMED;
		}
	}
	return MESIBO_RESULT_PASS;
}

static mesibo_int_t filter_on_cleanup(mesibo_module_t *mod)
{
	free_ctx((filter_ctx_t *)mod->ctx);
	mod->ctx = NULL;
	return MESIBO_RESULT_OK;
}

MESIBO_EXPORT mesibo_int_t mesibo_module_filter_init(mesibo_int_t version, mesibo_module_t *m,
		mesibo_int_t len)
{
	const char *list, *level;
	filter_ctx_t *ctx;

	MESIBO_MODULE_SANITY_CHECK(m, version, len);

	list = mesibo_util_getconfig(m, "blocked_words");
	if (!list) {
		mesibo_log(m, 0, "missing config item blocked_words "
				"(a comma-separated list of words to block)\n");
		return MESIBO_RESULT_FAIL;
	}

	ctx = (filter_ctx_t *)calloc(1, sizeof(*ctx));
	if (!ctx || parse_words(ctx, list) != 0) {
		mesibo_log(m, 0, "out of memory\n");
		if (ctx)
			free_ctx(ctx);
		return MESIBO_RESULT_FAIL;
	}
	if (ctx->count == 0) {
		mesibo_log(m, 0, "blocked_words has no words: \"%s\"\n", list);
		free_ctx(ctx);
		return MESIBO_RESULT_FAIL;
	}

	/* The server refuses to start when log is not a whole number. */
	level = mesibo_util_getconfig(m, "log");
	ctx->log = level ? atol(level) : 0;

	mesibo_log(m, 1, "blocking %lu word(s)\n", (unsigned long)ctx->count);

	m->ctx = ctx;
	m->description = "Sample module: drops messages that contain a blocked word";
	m->on_message = filter_on_message;
	m->on_cleanup = filter_on_cleanup;
	return MESIBO_RESULT_OK;
}
