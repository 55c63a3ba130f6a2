/* The cheapest module there is: looks at nothing and passes every message.
 * The chain benchmark stacks 0, 1 or 3 of these. */
#include "module.h"

static mesibo_int_t pass_on_message(mesibo_module_t *m, mesibo_message_params_t *p, char *msg, mesibo_uint_t len) {
  (void)m;
  (void)p;
  (void)msg;
  (void)len;
  return MESIBO_RESULT_PASS;
}

MESIBO_EXPORT mesibo_int_t mesibo_module_pass_init(mesibo_int_t version, mesibo_module_t *m, mesibo_int_t len) {
  MESIBO_MODULE_SANITY_CHECK(m, version, len);
  m->on_message = pass_on_message;
  return MESIBO_RESULT_OK;
}
