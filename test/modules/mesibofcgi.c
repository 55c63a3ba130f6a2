/* A test module that uses mesibo_util_fcgi the way mesibo's FastCGI sample
 * does: its block names the application server and the PHP script to run,
 * with mesibo's item names,
 *
 *   module mesibofcgi {
 *       host = 127.0.0.1
 *       port = 9000
 *       keepalive = 0
 *       root = /usr/share/nginx/html/
 *       script = test.php
 *       log = 0
 *   }
 *
 * and each message becomes one request that sets only USER, DOCUMENT_ROOT,
 * SCRIPT_NAME and the body. The callback checks result against
 * MESIBO_RESULT_FAIL and otherwise sends whatever the call brings back to the
 * sender, as a message: so every call it gets with data is a message the
 * user sees. It logs:
 *   configured root R script S     at init
 *   reply N                        a call with N bytes, sent as a message
 *   bad response to fcgi request   a call with MESIBO_RESULT_FAIL
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "module.h"

typedef struct fcgi_config_s {
	const char *host;
	mesibo_int_t port;
	mesibo_int_t keepalive;
	const char *root;
	const char *script;
	mesibo_uint_t log;
} fcgi_config_t;

typedef struct fcgi_context_s {
	mesibo_module_t *mod;
	mesibo_message_params_t params;
} fcgi_context_t;

static void destroy_context(fcgi_context_t *b)
{
	free(b->params.from);
	free(b->params.to);
	free(b);
}

static mesibo_int_t fcgi_data_callback(void *cbdata, mesibo_int_t result, const char *buffer, mesibo_int_t size)
{
	fcgi_context_t *b = (fcgi_context_t *)cbdata;
	mesibo_module_t *mod = b->mod;
	mesibo_message_params_t np;

	if (MESIBO_RESULT_FAIL == result) {
		mesibo_log(mod, 0, "bad response to fcgi request");
		destroy_context(b);
		return MESIBO_RESULT_FAIL;
	}

	mesibo_log(mod, 0, "reply %ld", (long)size);
	memset(&np, 0, sizeof np);
	np.to = b->params.from;
	np.from = b->params.to;
	np.refid = b->params.id;
	mesibo_message(mod, &np, buffer, (mesibo_uint_t)size);
	/* Switchboard makes one call per request: this one is the last. */
	destroy_context(b);
	return MESIBO_RESULT_OK;
}

static mesibo_int_t fcgi_on_message(mesibo_module_t *mod, mesibo_message_params_t *p, char *message, mesibo_uint_t len)
{
	fcgi_config_t *fc = (fcgi_config_t *)mod->ctx;
	fcgi_context_t *cbdata;
	mesibo_fcgi_t req;

	if (strcmp(p->to, "php") != 0)
		return MESIBO_RESULT_PASS;

	memset(&req, 0, sizeof req);
	req.USER = p->from;
	req.DOCUMENT_ROOT = (char *)fc->root;
	req.SCRIPT_NAME = (char *)fc->script;
	req.body = message;
	req.bodylen = (uint64_t)len;

	cbdata = (fcgi_context_t *)calloc(1, sizeof(fcgi_context_t));
	cbdata->mod = mod;
	cbdata->params = *p;
	cbdata->params.from = strdup(p->from);
	cbdata->params.to = strdup(p->to);

	if (mesibo_util_fcgi(&req, fc->host, fc->port, fc->keepalive, fcgi_data_callback, cbdata) != MESIBO_RESULT_OK)
		destroy_context(cbdata);
	return MESIBO_RESULT_CONSUMED;
}

static mesibo_int_t fcgi_on_cleanup(mesibo_module_t *mod)
{
	free(mod->ctx);
	return MESIBO_RESULT_OK;
}

MESIBO_EXPORT mesibo_int_t mesibo_module_mesibofcgi_init(mesibo_int_t version, mesibo_module_t *m, mesibo_int_t len)
{
	fcgi_config_t *fc;

	MESIBO_MODULE_SANITY_CHECK(m, version, len);
	if (!m->config) {
		mesibo_log(m, 0, "%s: missing configuration", m->name);
		return MESIBO_RESULT_FAIL;
	}
	fc = (fcgi_config_t *)calloc(1, sizeof(fcgi_config_t));
	fc->host = mesibo_util_getconfig(m, "host");
	fc->port = atoi(mesibo_util_getconfig(m, "port"));
	fc->keepalive = atoi(mesibo_util_getconfig(m, "keepalive"));
	fc->root = mesibo_util_getconfig(m, "root");
	fc->script = mesibo_util_getconfig(m, "script");
	fc->log = (mesibo_uint_t)atoi(mesibo_util_getconfig(m, "log"));
	mesibo_log(m, 0, "configured root %s script %s", fc->root, fc->script);
	m->ctx = fc;
	m->description = "FastCGI requests in the style of mesibo's sample";
	m->on_message = fcgi_on_message;
	m->on_cleanup = fcgi_on_cleanup;
	return MESIBO_RESULT_OK;
}
