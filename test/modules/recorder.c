/* A test module that does what its config says and logs everything it sees,
 * so tests can check order, rewrites and dispatch.
 *   tag     = name used in its log lines (default: the instance name)
 *   verdict = pass | consume | odd  (odd returns 7, which is neither)
 *   rewrite = none | upper | shorten:N | to:ADDR
 *   reply   = TEXT   (answers the sender with TEXT via mesibo_message)
 *   only_to = ADDR   (act only on messages to ADDR; PASS the rest untouched)
 *   extract = KEY    (logs every value of KEY in a JSON payload, using next)
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "module.h"

typedef struct {
  const char *tag, *verdict, *rewrite, *reply, *only_to, *extract;
  char to_buf[64];
} rec_t;

static const char *cfg(mesibo_module_t *m, const char *k, const char *def) {
  const char *v = mesibo_util_getconfig(m, k);
  return v ? v : def;
}

static mesibo_int_t rec_on_message(mesibo_module_t *m, mesibo_message_params_t *p, char *msg, mesibo_uint_t len) {
  rec_t *r = (rec_t *)m->ctx;
  if (r->only_to && strcmp(p->to, r->only_to) != 0) return MESIBO_RESULT_PASS;
  mesibo_log(m, 0, "%s saw from=%s to=%s id=%lu len=%lu text=%.*s", r->tag, p->from, p->to, (unsigned long)p->id,
             (unsigned long)len, (int)len, msg);
  if (r->extract) {
    char *at = msg, *next = NULL, *v;
    while ((v = mesibo_util_json_extract(at, (mesibo_int_t)(len - (mesibo_uint_t)(at - msg)), r->extract, &next)) != NULL) {
      mesibo_log(m, 0, "%s extracted %s", r->tag, v);
      free(v);
      at = next;
    }
  }
  if (strcmp(r->rewrite, "upper") == 0) {
    mesibo_uint_t i;
    for (i = 0; i < len; i++) msg[i] = (char)toupper((unsigned char)msg[i]);
  } else if (strncmp(r->rewrite, "shorten:", 8) == 0) {
    mesibo_uint_t n = (mesibo_uint_t)atoi(r->rewrite + 8);
    if (n < len) msg[n] = '\0';
  } else if (strncmp(r->rewrite, "to:", 3) == 0) {
    snprintf(r->to_buf, sizeof r->to_buf, "%s", r->rewrite + 3);
    p->to = r->to_buf;
  }
  if (r->reply) {
    mesibo_message_params_t q;
    memset(&q, 0, sizeof q);
    q.id = p->id + 1000;
    q.refid = p->id;
    q.from = p->to;
    q.to = p->from;
    q.flags = p->flags;
    mesibo_message(m, &q, r->reply, strlen(r->reply));
  }
  if (strcmp(r->verdict, "consume") == 0) return MESIBO_RESULT_CONSUMED;
  if (strcmp(r->verdict, "odd") == 0) return 7;
  return MESIBO_RESULT_PASS;
}

static mesibo_int_t rec_on_status(mesibo_module_t *m, mesibo_message_params_t *p) {
  rec_t *r = (rec_t *)m->ctx;
  mesibo_log(m, 0, "%s status id=%lu status=%lu from=%s to=%s", r->tag, (unsigned long)p->id,
             (unsigned long)p->status, p->from, p->to);
  return 0;
}

static mesibo_int_t rec_on_login(mesibo_module_t *m, mesibo_user_t *u) {
  rec_t *r = (rec_t *)m->ctx;
  mesibo_log(m, 0, "%s login %s online=%ld", r->tag, u->address, (long)u->online);
  return 0;
}

static mesibo_int_t rec_on_call(mesibo_module_t *m) {
  mesibo_log(m, 0, "%s call", ((rec_t *)m->ctx)->tag);
  return 0;
}

static mesibo_int_t rec_on_call_status(mesibo_module_t *m) {
  mesibo_log(m, 0, "%s call_status", ((rec_t *)m->ctx)->tag);
  return 0;
}

static mesibo_int_t rec_on_cleanup(mesibo_module_t *m) {
  rec_t *r = (rec_t *)m->ctx;
  mesibo_log(m, 0, "%s cleanup", r->tag);
  free(r);
  return 0;
}

MESIBO_EXPORT mesibo_int_t mesibo_module_recorder_init(mesibo_int_t version, mesibo_module_t *m, mesibo_int_t len) {
  MESIBO_MODULE_SANITY_CHECK(m, version, len);
  rec_t *r = (rec_t *)calloc(1, sizeof *r);
  r->tag = cfg(m, "tag", m->name);
  r->verdict = cfg(m, "verdict", "pass");
  r->rewrite = cfg(m, "rewrite", "none");
  r->reply = mesibo_util_getconfig(m, "reply");
  r->only_to = mesibo_util_getconfig(m, "only_to");
  r->extract = mesibo_util_getconfig(m, "extract");
  m->ctx = r;
  m->description = "records what it sees";
  m->on_message = rec_on_message;
  m->on_message_status = rec_on_status;
  m->on_login = rec_on_login;
  m->on_call = rec_on_call;
  m->on_call_status = rec_on_call_status;
  m->on_cleanup = rec_on_cleanup;
  mesibo_log(m, 1, "%s debug line at level 1", r->tag);
  mesibo_log(m, 2, "%s debug line at level 2", r->tag);
  return MESIBO_RESULT_OK;
}
