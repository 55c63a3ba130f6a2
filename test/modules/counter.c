/* A test module for module reload and the "state" extension
 * (include/switchboard.h): it counts the messages it sees, and hands the
 * count to the instance that replaces it.
 *
 *   "count?"       consumed; the module sends the sender
 *                  "LABEL vVARIANT count=N" (N counts this message too)
 *   anything else  passed on; VARIANT 2 upper-cases the payload first
 *
 * Items:
 *   label = NAME   put in replies and log lines (default: "c")
 *
 * Build variants (-D):
 *   VARIANT=2      the "rebuilt" library: upper-cases, says v2
 *   FAIL_INIT      init logs "LABEL refuses to start" and fails
 *   NO_STATE       registers no save callback (starts from 0 on a reload)
 *
 * Logs at init "LABEL vVARIANT start count=N (state: loaded|none)", and in
 * on_cleanup "LABEL vVARIANT cleanup count=N".
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "module.h"
#include "switchboard.h"

#ifndef VARIANT
#define VARIANT 1
#endif

typedef struct {
  char label[64];
  unsigned long count;
  char blob[32]; /* what the save callback hands over */
} counter_t;

static const void *counter_save(mesibo_module_t *mod, mesibo_uint_t *len) {
  counter_t *c = (counter_t *)mod->ctx;
  /* "count=N": text, so a later build can read what an earlier one saved. */
  int n = snprintf(c->blob, sizeof c->blob, "count=%lu", c->count);
  *len = (mesibo_uint_t)n;
  return c->blob;
}

static mesibo_int_t counter_on_message(mesibo_module_t *mod, mesibo_message_params_t *p, char *message,
                                       mesibo_uint_t len) {
  counter_t *c = (counter_t *)mod->ctx;
  mesibo_uint_t i;
  c->count++;
  if (len == 6 && memcmp(message, "count?", 6) == 0) {
    char reply[128];
    mesibo_message_params_t r;
    int n = snprintf(reply, sizeof reply, "%s v%d count=%lu", c->label, VARIANT, c->count);
    memset(&r, 0, sizeof r);
    r.to = p->from;
    r.from = (char *)"counter";
    mesibo_message(mod, &r, reply, (mesibo_uint_t)n);
    return MESIBO_RESULT_CONSUMED;
  }
  if (VARIANT == 2)
    for (i = 0; i < len; i++) message[i] = (char)toupper((unsigned char)message[i]);
  return MESIBO_RESULT_PASS;
}

static mesibo_int_t counter_on_cleanup(mesibo_module_t *mod) {
  counter_t *c = (counter_t *)mod->ctx;
  mesibo_log(mod, 0, "%s v%d cleanup count=%lu", c->label, VARIANT, c->count);
  free(c);
  return MESIBO_RESULT_OK;
}

MESIBO_EXPORT int mesibo_module_counter_init(mesibo_int_t version, mesibo_module_t *m, mesibo_uint_t len) {
  counter_t *c;
  const char *label;
  const void *blob = NULL;
  mesibo_uint_t blob_len = 0;
  int loaded;
  MESIBO_MODULE_SANITY_CHECK(m, version, len);
  label = mesibo_util_getconfig(m, "label");
#ifdef FAIL_INIT
  mesibo_log(m, 0, "%s refuses to start", label ? label : "c");
  return MESIBO_RESULT_FAIL;
#endif
  c = (counter_t *)calloc(1, sizeof *c);
  if (!c) return MESIBO_RESULT_FAIL;
  snprintf(c->label, sizeof c->label, "%s", label ? label : "c");
  loaded = switchboard_state_load(m, &blob, &blob_len) == MESIBO_RESULT_OK;
  if (loaded) {
    char text[32];
    size_t n = blob_len < sizeof text - 1 ? blob_len : sizeof text - 1;
    memcpy(text, blob, n);
    text[n] = 0;
    if (sscanf(text, "count=%lu", &c->count) != 1) c->count = 0;
  }
#ifndef NO_STATE
  switchboard_state_save(m, counter_save);
#endif
  m->ctx = c;
  m->on_message = counter_on_message;
  m->on_cleanup = counter_on_cleanup;
  mesibo_log(m, 0, "%s v%d start count=%lu (state: %s)", c->label, VARIANT, c->count, loaded ? "loaded" : "none");
  return MESIBO_RESULT_OK;
}
