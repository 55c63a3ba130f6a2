/* switchboard.h's wrappers on a server without Switchboard's get-API: an
 * `invoke` that fails every id (as mesibo documents none), and no `invoke`
 * at all. Every wrapper must report "not supported" instead of crashing, so
 * a module can keep its classic path. Exits 0 when all hold; prints each. */
#include <stdio.h>
#include <string.h>

#include "module.h"
#include "switchboard.h"

static int calls;

static mesibo_int_t failing_invoke(mesibo_int_t id, mesibo_module_t *mod, ...) {
  (void)id;
  (void)mod;
  ++calls;
  return MESIBO_RESULT_FAIL;
}

static int check(const char *what, int ok) {
  printf("%s %s\n", ok ? "ok" : "FAIL", what);
  return ok ? 0 : 1;
}

static const void *save_nothing(mesibo_module_t *mod, mesibo_uint_t *len) {
  (void)mod;
  *len = 0;
  return NULL;
}

int main(void) {
  mesibo_module_t m;
  int bad = 0;
  int round;
  const void *blob;
  mesibo_uint_t blob_len;
  for (round = 0; round < 2; ++round) {
    memset(&m, 0, sizeof m);
    m.name = "absent";
    if (round == 0) m.invoke = failing_invoke;
    bad += check(round ? "no invoke: api level 0" : "failing invoke: api level 0", switchboard_api_level(&m) == 0);
    bad += check("get_api NULL", switchboard_get_api(&m, "switchboard_defer", 1) == NULL);
    bad += check("supports 0", switchboard_supports(&m, SWITCHBOARD_EXT_DEFER) == 0);
    bad += check("has_extension 0", switchboard_has_extension(&m, SWITCHBOARD_EXT_DEFER) == 0);
    bad += check("defer NULL", switchboard_defer(&m, NULL) == NULL);
    bad += check("resolve FAIL", switchboard_resolve(&m, NULL, SWITCHBOARD_RESULT_PASS, NULL, 0) == MESIBO_RESULT_FAIL);
    bad += check("state_save FAIL", switchboard_state_save(&m, save_nothing) == MESIBO_RESULT_FAIL);
    blob = &blob;
    blob_len = 7;
    bad += check("state_load FAIL, NULL, 0",
                 switchboard_state_load(&m, &blob, &blob_len) == MESIBO_RESULT_FAIL && blob == NULL && blob_len == 0);
  }
  bad += check("the failing invoke was asked", calls > 0);
  bad += check("NULL module", switchboard_get_api(NULL, "switchboard_defer", 1) == NULL);
  return bad ? 1 : 0;
}
