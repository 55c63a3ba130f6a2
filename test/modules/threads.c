/* A test module that floods the server from threads: a message to "go"
 * starts `threads` threads (mesibo_util_create_thread), each sending `count`
 * messages to "sink" as "T<thread>:<seq>" from "t<thread>". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "module.h"

typedef struct {
  mesibo_module_t *m;
  int thread, count;
} job_t;

static void *worker(void *arg) {
  job_t *j = (job_t *)arg;
  char from[16], text[64];
  snprintf(from, sizeof from, "t%d", j->thread);
  for (int i = 0; i < j->count; i++) {
    mesibo_message_params_t p;
    memset(&p, 0, sizeof p);
    p.id = (mesibo_uint_t)(j->thread * 1000000 + i + 1);
    p.from = from;
    p.to = (char *)"sink";
    int n = snprintf(text, sizeof text, "T%d:%d", j->thread, i);
    if (mesibo_message(j->m, &p, text, (mesibo_uint_t)n) != 0) mesibo_log(j->m, 0, "send failed %d %d", j->thread, i);
    /* The caller may reuse its buffers at once: scribble over them. */
    memset(text, 'X', sizeof text);
  }
  free(j);
  return NULL;
}

static mesibo_int_t th_on_message(mesibo_module_t *m, mesibo_message_params_t *p, char *msg, mesibo_uint_t len) {
  (void)msg;
  (void)len;
  if (strcmp(p->to, "go") != 0) return MESIBO_RESULT_PASS;
  const char *t = mesibo_util_getconfig(m, "threads");
  const char *c = mesibo_util_getconfig(m, "count");
  int threads = t ? atoi(t) : 8, count = c ? atoi(c) : 10000;
  for (int i = 0; i < threads; i++) {
    job_t *j = (job_t *)malloc(sizeof *j);
    j->m = m;
    j->thread = i;
    j->count = count;
    mesibo_util_create_thread(worker, j, 0, "sb-test-sender");
  }
  return MESIBO_RESULT_CONSUMED;
}

MESIBO_EXPORT mesibo_int_t mesibo_module_threads_init(mesibo_int_t version, mesibo_module_t *m, mesibo_int_t len) {
  MESIBO_MODULE_SANITY_CHECK(m, version, len);
  m->on_message = th_on_message;
  return MESIBO_RESULT_OK;
}
