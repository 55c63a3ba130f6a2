/* A test module for a help desk: a message to the desk's address is not
 * delivered there (nobody logs in as the desk) but passed on with
 * mesibo_message to the agent on duty, as from its sender and with its id,
 * so the agent can answer the sender and the sender's receipts still match.
 * Messages to anyone else pass untouched.
 *   watch  = ADDR  (the desk's address; default "desk")
 *   notify = ADDR  (the agent on duty; required)
 */
#include <stdlib.h>
#include <string.h>

#include "module.h"

typedef struct {
  const char *watch, *notify;
} notifier_t;

static mesibo_int_t notifier_on_message(mesibo_module_t *m, mesibo_message_params_t *p, char *msg, mesibo_uint_t len) {
  notifier_t *n = (notifier_t *)m->ctx;
  if (p->groupid || strcmp(p->to, n->watch) != 0) return MESIBO_RESULT_PASS;
  mesibo_message_params_t q;
  memset(&q, 0, sizeof q);
  q.id = p->id;
  q.flags = p->flags;
  q.type = p->type;
  q.expiry = p->expiry;
  q.from = p->from;
  q.to = (char *)n->notify;
  /* The server copies the message before this returns. */
  if (mesibo_message(m, &q, msg, len) != MESIBO_RESULT_OK) mesibo_log(m, 0, "notifier: could not pass on %lu", (unsigned long)p->id);
  return MESIBO_RESULT_CONSUMED;
}

static mesibo_int_t notifier_on_cleanup(mesibo_module_t *m) {
  free(m->ctx);
  return 0;
}

MESIBO_EXPORT mesibo_int_t mesibo_module_notifier_init(mesibo_int_t version, mesibo_module_t *m, mesibo_int_t len) {
  MESIBO_MODULE_SANITY_CHECK(m, version, len);
  const char *watch = mesibo_util_getconfig(m, "watch");
  const char *notify = mesibo_util_getconfig(m, "notify");
  if (!notify) {
    mesibo_log(m, 0, "notifier: set notify = ADDR");
    return MESIBO_RESULT_FAIL;
  }
  notifier_t *n = (notifier_t *)calloc(1, sizeof *n);
  if (!n) return MESIBO_RESULT_FAIL;
  n->watch = watch ? watch : "desk";
  n->notify = notify;
  m->ctx = n;
  m->description = "passes messages for the desk on to the agent on duty";
  m->on_message = notifier_on_message;
  m->on_cleanup = notifier_on_cleanup;
  return MESIBO_RESULT_OK;
}
