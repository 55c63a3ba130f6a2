// A C++ module whose author forgot MESIBO_EXPORT: its init symbol is
// C++-mangled. UNSIGNED_LEN picks the other common init signature.
#include <cstring>

#include "module.h"

static mesibo_int_t mangled_on_message(mesibo_module_t *, mesibo_message_params_t *, char *msg, mesibo_uint_t len) {
  if (len >= 5 && std::memcmp(msg, "mangl", 5) == 0) msg[0] = 'M';
  return MESIBO_RESULT_PASS;
}

#ifdef UNSIGNED_LEN
mesibo_int_t mesibo_module_mangled_init(mesibo_int_t version, mesibo_module_t *m, mesibo_uint_t len) {
#else
mesibo_int_t mesibo_module_mangled_init(mesibo_int_t version, mesibo_module_t *m, mesibo_int_t len) {
#endif
  MESIBO_MODULE_SANITY_CHECK(m, version, len);
  m->on_message = mangled_on_message;
  return MESIBO_RESULT_OK;
}
