/* Modules that fail to load in each way a user can meet, chosen with -D:
 *   INIT_FAILS      init logs a reason and returns MESIBO_RESULT_FAIL
 *   SANITY_FAILS    built against a "different" header: the size check fails
 *   WRONG_NAME      exports an init symbol for another name
 *   UNDEFINED_SYM   needs a function the server does not export
 */
#include "module.h"

#ifdef UNDEFINED_SYM
extern int mesibo_function_that_does_not_exist(void);
#endif

#ifdef WRONG_NAME
MESIBO_EXPORT mesibo_int_t mesibo_module_other_init(mesibo_int_t version, mesibo_module_t *m, mesibo_int_t len) {
#else
MESIBO_EXPORT mesibo_int_t mesibo_module_broken_init(mesibo_int_t version, mesibo_module_t *m, mesibo_int_t len) {
#endif
#ifdef SANITY_FAILS
  MESIBO_MODULE_SANITY_CHECK(m, version, len - 8);
#else
  MESIBO_MODULE_SANITY_CHECK(m, version, len);
#endif
#ifdef INIT_FAILS
  mesibo_log(m, 0, "missing required item api_key");
  return MESIBO_RESULT_FAIL;
#endif
#ifdef UNDEFINED_SYM
  return mesibo_function_that_does_not_exist();
#endif
  return MESIBO_RESULT_OK;
}
