/* The get-API (include/switchboard.h) as a module sees it: at init it logs
 * what the server's `invoke` answers, one line per question, so the test can
 * compare them. (test/modules/legacy_ext.c is the same module built the way
 * the first switchboard.h built it: weak symbols instead of the get-API.) */
#include <string.h>

#include "module.h"
#include "switchboard.h"

static const char *yes(int b) { return b ? "yes" : "no"; }

static mesibo_int_t getapi_on_message(mesibo_module_t *m, mesibo_message_params_t *p, char *message, mesibo_uint_t len) {
  (void)p;
  (void)message;
  (void)len;
  /* Outside on_message a handle is NULL; inside it is not: through the
   * wrapper, the get-API reaches the real function. */
  mesibo_log(m, 0, "in on_message: wrapper handle %s", yes(switchboard_defer(m, p) != NULL));
  return MESIBO_RESULT_PASS; /* gives the handle up */
}

MESIBO_EXPORT int mesibo_module_getapi_init(mesibo_int_t version, mesibo_module_t *m, mesibo_uint_t len) {
  void *fn = NULL;
  MESIBO_MODULE_SANITY_CHECK(m, version, len);
  mesibo_log(m, 0, "api level %ld", (long)switchboard_api_level(m));
  mesibo_log(m, 0, "switchboard_defer v1 %s", yes(switchboard_get_api(m, "switchboard_defer", 1) != NULL));
  mesibo_log(m, 0, "switchboard_resolve v1 %s", yes(switchboard_get_api(m, "switchboard_resolve", 1) != NULL));
  mesibo_log(m, 0, "switchboard_has_extension v1 %s", yes(switchboard_get_api(m, "switchboard_has_extension", 1) != NULL));
  mesibo_log(m, 0, "switchboard_state_save v1 %s", yes(switchboard_get_api(m, "switchboard_state_save", 1) != NULL));
  mesibo_log(m, 0, "switchboard_state_load v1 %s", yes(switchboard_get_api(m, "switchboard_state_load", 1) != NULL));
  mesibo_log(m, 0, "switchboard_defer v2 %s", yes(switchboard_get_api(m, "switchboard_defer", 2) != NULL));
  mesibo_log(m, 0, "no_such_function v1 %s", yes(switchboard_get_api(m, "no_such_function", 1) != NULL));
  mesibo_log(m, 0, "unknown invoke id %s", m->invoke(12345, m) == MESIBO_RESULT_FAIL ? "fails" : "answers");
  fn = &fn; /* must be cleared on a miss */
  m->invoke(SWITCHBOARD_INVOKE_GET_API, m, "no_such_function", (mesibo_int_t)1, &fn);
  mesibo_log(m, 0, "miss clears pointer %s", yes(fn == NULL));
  mesibo_log(m, 0, "supports defer %s", yes(switchboard_supports(m, SWITCHBOARD_EXT_DEFER)));
  mesibo_log(m, 0, "outside on_message: handle %s", yes(switchboard_defer(m, NULL) != NULL));
  {
    const void *blob = &blob;
    mesibo_uint_t blob_len = 9;
    mesibo_log(m, 0, "supports state %s", yes(switchboard_supports(m, SWITCHBOARD_EXT_STATE)));
    mesibo_int_t rc = switchboard_state_load(m, &blob, &blob_len);
    mesibo_log(m, 0, "first start: state_load %s, NULL %s", rc == MESIBO_RESULT_OK ? "ok" : "fails", yes(blob == NULL && blob_len == 0));
  }
  m->on_message = getapi_on_message;
  return MESIBO_RESULT_OK;
}
