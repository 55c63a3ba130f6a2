// The functions modules call, exported with C linkage and default visibility
// so that a module compiled with no -l flags resolves them at load time (see
// addon.cc for how the addon makes its symbols global).
#include <pthread.h>

#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <thread>

#include "core.h"
#include "io.h"
#include "json_extract.h"
#include "vformat.h"

#define SB_API extern "C" __attribute__((visibility("default")))

using sb::Instance;

SB_API mesibo_int_t mesibo_vlog(mesibo_module_t *mod, mesibo_uint_t level, const char *format, va_list args) {
  if (!format) return MESIBO_RESULT_FAIL;
  std::lock_guard<std::mutex> lock(sb::slot_registry_mutex());
  Instance *inst = sb::slot_lookup_locked(mod);
  if (inst && static_cast<long>(level) > inst->log_level && level != 0) return MESIBO_RESULT_OK;
  std::string text = sb::vformat(format, args);
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  if (!inst) {
    // A module that passes a pointer the server did not give it (or one
    // whose instance was already cleaned up) still gets its line out.
    sb::io_report("[module ?] %s", text.c_str());
    return MESIBO_RESULT_OK;
  }
  if (inst->capturing_init_log) inst->init_log.push_back(text);
  sb::core_log(*inst->core, inst->name, static_cast<int>(level), std::move(text));
  return MESIBO_RESULT_OK;
}

SB_API mesibo_int_t mesibo_log(mesibo_module_t *mod, mesibo_uint_t level, const char *format, ...) {
  va_list ap;
  va_start(ap, format);
  mesibo_int_t r = mesibo_vlog(mod, level, format, ap);
  va_end(ap);
  return r;
}

SB_API mesibo_int_t mesibo_message(mesibo_module_t *mod, mesibo_message_params_t *p, const char *message,
                                   mesibo_uint_t len) {
  if (!p || (!message && len)) return MESIBO_RESULT_FAIL;
  std::lock_guard<std::mutex> lock(sb::slot_registry_mutex());
  Instance *inst = sb::slot_lookup_locked(mod);
  if (!inst) return MESIBO_RESULT_FAIL;
  const bool has_dest = (p->to && p->to[0]) || p->groupid;
  if (!has_dest) {
    sb::core_logf(*inst->core, 0, "module \"%s\": mesibo_message without a destination (set params.to or params.groupid)",
                  inst->name.c_str());
    return MESIBO_RESULT_FAIL;
  }
  if (len > inst->core->max_payload) {
    sb::core_logf(*inst->core, 0, "module \"%s\": mesibo_message of %lu bytes is larger than max_message_size (%zu)",
                  inst->name.c_str(), static_cast<unsigned long>(len), inst->core->max_payload);
    return MESIBO_RESULT_FAIL;
  }
  return sb::core_send_from_module(inst, p, message, len);
}

SB_API char *mesibo_util_getconfig(mesibo_module_t *mod, const char *item_name) {
  if (!mod || !mod->config || !item_name) return nullptr;
  for (mesibo_int_t i = 0; i < mod->config->count; ++i) {
    module_config_item_t &it = mod->config->items[i];
    if (it.name && std::strcmp(it.name, item_name) == 0) return it.value;
  }
  return nullptr;
}

SB_API char *mesibo_util_json_extract(char *src, mesibo_int_t len, const char *key, char **next) {
  if (!src || len < 0) return nullptr;
  const char *n = nullptr;
  char *v = sb::json_extract(src, static_cast<size_t>(len), key, next ? &n : nullptr);
  if (v && next) *next = const_cast<char *>(n);
  return v;
}

namespace {
struct ThreadStart {
  void *(*fn)(void *);
  void *data;
};
}  // namespace

SB_API void mesibo_util_create_thread(void *(*fn)(void *), void *data, size_t stacksize, const char *name) {
  if (!fn) return;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  if (stacksize >= static_cast<size_t>(PTHREAD_STACK_MIN)) pthread_attr_setstacksize(&attr, stacksize);
  pthread_t t;
  if (pthread_create(&t, &attr, fn, data) == 0 && name && name[0]) {
    char short_name[16];  // the kernel keeps 15 characters
    std::snprintf(short_name, sizeof short_name, "%s", name);
    pthread_setname_np(t, short_name);
  }
  pthread_attr_destroy(&attr);
}

SB_API mesibo_int_t mesibo_util_usec() { return static_cast<mesibo_int_t>(sb::now_ns() / 1000); }

// --- switchboard.h: extensions beyond the mesibo ABI -------------------------

SB_API mesibo_int_t switchboard_has_extension(mesibo_module_t *mod, const char *name) {
  if (!name) return 0;
  {
    std::lock_guard<std::mutex> lock(sb::slot_registry_mutex());
    if (!sb::slot_lookup_locked(mod)) return 0;
  }
  return std::strcmp(name, SWITCHBOARD_EXT_DEFER) == 0 || std::strcmp(name, SWITCHBOARD_EXT_STATE) == 0 ? 1 : 0;
}

SB_API switchboard_deferred_t *switchboard_defer(mesibo_module_t *mod, mesibo_message_params_t *) {
  Instance *inst;
  {
    std::lock_guard<std::mutex> lock(sb::slot_registry_mutex());
    inst = sb::slot_lookup_locked(mod);
  }
  if (!inst) return nullptr;
  // core_take_handle answers 0 unless this instance's on_message is running
  // right now, which only happens on the loop thread.
  uint64_t h = sb::core_take_handle(*inst->core, inst);
  return reinterpret_cast<switchboard_deferred_t *>(static_cast<uintptr_t>(h));
}

SB_API mesibo_int_t switchboard_resolve(mesibo_module_t *mod, switchboard_deferred_t *handle, mesibo_int_t verdict,
                                        const char *payload, mesibo_uint_t len) {
  if (!handle || (verdict != MESIBO_RESULT_PASS && verdict != MESIBO_RESULT_CONSUMED)) return MESIBO_RESULT_FAIL;
  if (!payload && len) return MESIBO_RESULT_FAIL;
  std::lock_guard<std::mutex> lock(sb::slot_registry_mutex());
  Instance *inst = sb::slot_lookup_locked(mod);
  if (!inst) return MESIBO_RESULT_FAIL;
  sb::Core &core = *inst->core;
  if (payload && len > core.max_payload) {
    sb::core_logf(core, 0, "module \"%s\": switchboard_resolve with a %lu-byte payload, larger than max_message_size (%zu)",
                  inst->name.c_str(), static_cast<unsigned long>(len), core.max_payload);
    return MESIBO_RESULT_FAIL;
  }
  sb::Resolution r;
  r.handle = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(handle));
  r.verdict = static_cast<int>(verdict);
  if (payload) {
    r.replace = true;
    r.payload.assign(payload, len);
  }
  return sb::core_resolve(core, std::move(r)) == 0 ? MESIBO_RESULT_OK : MESIBO_RESULT_FAIL;
}

// The state hand-off (switchboard.h, "state"). Only through the get-API:
// no module was ever built against weak symbols of these names.
namespace {

mesibo_int_t state_save(mesibo_module_t *mod, switchboard_state_save_fn fn) {
  std::lock_guard<std::mutex> lock(sb::slot_registry_mutex());
  Instance *inst = sb::slot_lookup_locked(mod);
  if (!inst || inst->script) return MESIBO_RESULT_FAIL;
  inst->state_save = fn;
  return MESIBO_RESULT_OK;
}

mesibo_int_t state_load(mesibo_module_t *mod, const void **data, mesibo_uint_t *len) {
  if (data) *data = nullptr;
  if (len) *len = 0;
  if (!data || !len) return MESIBO_RESULT_FAIL;
  std::lock_guard<std::mutex> lock(sb::slot_registry_mutex());
  Instance *inst = sb::slot_lookup_locked(mod);
  // capturing_init_log is set exactly while init runs (on the loop thread).
  if (!inst || std::this_thread::get_id() != inst->core->loop_thread || !inst->capturing_init_log ||
      !inst->has_handoff)
    return MESIBO_RESULT_FAIL;
  *data = inst->handoff.data();
  *len = static_cast<mesibo_uint_t>(inst->handoff.size());
  return MESIBO_RESULT_OK;
}

}  // namespace

// --- the get-API: mod->invoke(SWITCHBOARD_INVOKE_GET_API, ...) ----------------

namespace {

struct ApiEntry {
  const char *name;
  mesibo_int_t version;
  void *fn;
};

// Every (name, version) this server answers. A signature never changes
// under a version: a new signature is a new row, and old rows stay.
const ApiEntry kApi[] = {
    {"switchboard_has_extension", 1, reinterpret_cast<void *>(&switchboard_has_extension)},
    {"switchboard_defer", 1, reinterpret_cast<void *>(&switchboard_defer)},
    {"switchboard_resolve", 1, reinterpret_cast<void *>(&switchboard_resolve)},
    {"switchboard_state_save", 1, reinterpret_cast<void *>(&state_save)},
    {"switchboard_state_load", 1, reinterpret_cast<void *>(&state_load)},
};

}  // namespace

namespace sb {

mesibo_int_t module_invoke(mesibo_int_t id, mesibo_module_t *mod, ...) {
  // mod is not looked up: the answers do not depend on the instance, and
  // the functions handed out check their own `mod` argument when called.
  (void)mod;
  if (id == SWITCHBOARD_INVOKE_API_LEVEL) return SWITCHBOARD_API_LEVEL;
  if (id != SWITCHBOARD_INVOKE_GET_API) return MESIBO_RESULT_FAIL;
  va_list ap;
  va_start(ap, mod);
  const char *name = va_arg(ap, const char *);
  const mesibo_int_t version = va_arg(ap, mesibo_int_t);
  void **out = va_arg(ap, void **);
  va_end(ap);
  if (!out) return MESIBO_RESULT_FAIL;
  *out = nullptr;
  if (!name) return MESIBO_RESULT_FAIL;
  for (const ApiEntry &e : kApi) {
    if (e.version == version && std::strcmp(e.name, name) == 0) {
      *out = e.fn;
      return MESIBO_RESULT_OK;
    }
  }
  return MESIBO_RESULT_FAIL;
}

}  // namespace sb
