/* A module built against the first switchboard.h, which declared its
 * functions as weak symbols the server exports (no get-API). The
 * declarations are copied from that header so this file keeps compiling the
 * way those binaries were compiled: they must keep loading and working. */
#include <stddef.h>

#include "module.h"

typedef struct switchboard_deferred_s switchboard_deferred_t;
__attribute__((weak)) mesibo_int_t switchboard_has_extension(mesibo_module_t *mod, const char *name);
__attribute__((weak)) switchboard_deferred_t *switchboard_defer(mesibo_module_t *mod, mesibo_message_params_t *p);

static const char *yes(int b) { return b ? "yes" : "no"; }

static mesibo_int_t legacy_on_message(mesibo_module_t *m, mesibo_message_params_t *p, char *message, mesibo_uint_t len) {
  (void)message;
  (void)len;
  mesibo_log(m, 0, "in on_message: handle %s", yes(switchboard_defer && switchboard_defer(m, p) != NULL));
  return MESIBO_RESULT_PASS;
}

MESIBO_EXPORT int mesibo_module_legacy_ext_init(mesibo_int_t version, mesibo_module_t *m, mesibo_uint_t len) {
  MESIBO_MODULE_SANITY_CHECK(m, version, len);
  mesibo_log(m, 0, "symbols %s", yes(switchboard_has_extension && switchboard_defer));
  mesibo_log(m, 0, "supports defer %s", yes(switchboard_has_extension && switchboard_has_extension(m, "defer") == 1));
  m->on_message = legacy_on_message;
  return MESIBO_RESULT_OK;
}
