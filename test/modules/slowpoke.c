/* A test module for time budgets: on_message upper-cases the payload in
 * place (so a test can see whether it ran) and, when the payload starts with
 * "slow", first busy-waits 5 ms on the loop, well over a 1 ms budget. */
#include <ctype.h>
#include <string.h>
#include <time.h>

#include "module.h"

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static mesibo_int_t slow_on_message(mesibo_module_t *m, mesibo_message_params_t *p, char *msg, mesibo_uint_t len) {
  mesibo_uint_t i;
  (void)m;
  (void)p;
  if (len >= 4 && strncmp(msg, "slow", 4) == 0) {
    double until = now_ms() + 5.0;
    while (now_ms() < until) {
    }
  }
  for (i = 0; i < len; i++) msg[i] = (char)toupper((unsigned char)msg[i]);
  return MESIBO_RESULT_PASS;
}

MESIBO_EXPORT mesibo_int_t mesibo_module_slowpoke_init(mesibo_int_t version, mesibo_module_t *m, mesibo_int_t len) {
  MESIBO_MODULE_SANITY_CHECK(m, version, len);
  m->description = "upper-cases; slow on purpose";
  m->on_message = slow_on_message;
  return MESIBO_RESULT_OK;
}
