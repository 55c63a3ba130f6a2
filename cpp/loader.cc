// The loader: finds mesibo_mod_NAME.so, resolves its init symbol, fills the
// module struct the way the ABI promises and calls init; at shutdown runs
// on_cleanup in reverse order and closes the libraries.
#include <dlfcn.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <initializer_list>
#include <unordered_set>
#include <utility>
#include <vector>

#include "core.h"
#include "crash_trace.h"
#include "http_client.h"
#include "io.h"

namespace sb {

namespace {

std::unordered_set<const mesibo_module_t *> &live_slots() {
  static std::unordered_set<const mesibo_module_t *> s;
  return s;
}

void slot_register(ModuleSlot *slot) {
  std::lock_guard<std::mutex> lock(slot_registry_mutex());
  live_slots().insert(&slot->mod);
}

void slot_unregister(ModuleSlot *slot) {
  std::lock_guard<std::mutex> lock(slot_registry_mutex());
  live_slots().erase(&slot->mod);
}

// The module's config block as the ABI lays it out: the count, the items and
// every string in one allocation, so a module may strtok a value in place and
// one free() releases it all after on_cleanup.
module_config_t *make_module_config(const ModuleDecl &decl) {
  if (decl.items.empty()) return nullptr;
  size_t header = sizeof(module_config_t) + decl.items.size() * sizeof(module_config_item_t);
  size_t strings = 0;
  for (const auto &it : decl.items) strings += it.key.size() + 1 + it.value.size() + 1;
  char *block = static_cast<char *>(std::calloc(1, header + strings));
  if (!block) return nullptr;
  auto *cfg = reinterpret_cast<module_config_t *>(block);
  cfg->count = static_cast<mesibo_int_t>(decl.items.size());
  char *p = block + header;
  for (size_t i = 0; i < decl.items.size(); ++i) {
    const auto &it = decl.items[i];
    cfg->items[i].name = p;
    std::memcpy(p, it.key.c_str(), it.key.size() + 1);
    p += it.key.size() + 1;
    cfg->items[i].value = p;
    std::memcpy(p, it.value.c_str(), it.value.size() + 1);
    p += it.value.size() + 1;
  }
  return cfg;
}

bool file_exists(const std::string &path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

// A value that names a JavaScript or TypeScript file, as a `script` item
// meant for a script module would.
bool looks_like_script_file(const std::string &v) {
  static const char *const kExts[] = {".js", ".mjs", ".cjs", ".ts", ".mts", ".cts"};
  for (const char *ext : kExts) {
    const size_t n = std::strlen(ext);
    if (v.size() > n && v.compare(v.size() - n, n, ext) == 0) return true;
  }
  return false;
}

bool looks_like_not_shared_object(const char *dlerr) {
  static const char *const kSigns[] = {"invalid ELF header", "file too short", "only ET_DYN and ET_EXEC",
                                       "not an ELF", "wrong ELF class", "ELF file"};
  for (const char *s : kSigns)
    if (std::strstr(dlerr, s)) return true;
  return false;
}

// The init symbol a C++ module exports when its author forgot MESIBO_EXPORT,
// for the two init signatures found in the wild: (int, module*, int) and
// (int, module*, unsigned). mesibo_module_t is a typedef of
// struct mesibo_module_s, which is the name that mangles.
std::string mangled_init(const std::string &symbol, bool unsigned_len) {
  const char *i = sizeof(mesibo_int_t) == sizeof(long) ? "l" : "i";
  const char *u = sizeof(mesibo_uint_t) == sizeof(unsigned long) ? "m" : "j";
  return "_Z" + std::to_string(symbol.size()) + symbol + i + "P15mesibo_module_s" + (unsigned_len ? u : i);
}

void fail(OpenError &err, const char *code, const Instance &inst, std::string message) {
  err.code = code;
  err.module = inst.name;
  err.file = inst.file;
  err.message = std::move(message);
}

bool init_log_says(const Instance &inst, const char *what) {
  for (const auto &l : inst.init_log)
    if (l.find(what) != std::string::npos) return true;
  return false;
}

// "5", "2.5", "5s", "250ms", "500us" -> nanoseconds; false for anything else.
bool parse_duration(const std::string &v, uint64_t &ns) {
  if (v.empty()) return false;
  char *end = nullptr;
  double x = std::strtod(v.c_str(), &end);
  std::string unit(end);
  while (!unit.empty() && unit.front() == ' ') unit.erase(unit.begin());
  double scale;
  if (unit.empty() || unit == "s") scale = 1e9;
  else if (unit == "ms") scale = 1e6;
  else if (unit == "us" || unit == "\u00b5s") scale = 1e3;
  else return false;
  if (end == v.c_str() || !(x > 0) || x * scale > 3600e9) return false;
  ns = static_cast<uint64_t>(x * scale);
  return true;
}

// Items every block may carry, whatever its module: log, and for deferred
// decisions defer_timeout (script blocks: timeout) and on_error.
bool read_common_items(Core &core, const ModuleDecl &decl, Instance &inst, OpenError &err) {
  auto bad = [&](const std::string &msg) {
    fail(err, "E_CONFIG_BAD_VALUE", inst, "module \"" + inst.name + "\": " + msg);
    err.file = core.config.file;
    return false;
  };
  inst.log_level = core.module_log_level;
  if (const std::string *lvl = decl.item("log")) {
    char *end = nullptr;
    long v = std::strtol(lvl->c_str(), &end, 10);
    if (lvl->empty() || *end != '\0' || v < 0)
      return bad("log = \"" + *lvl + "\" is not a log level; use a whole number such as 0, 1 or 2");
    inst.log_level = static_cast<int>(v);
  }
  const char *tkey = "defer_timeout";
  const std::string *t = decl.item(tkey);
  if (!t && inst.script) t = decl.item(tkey = "timeout");
  if (t && !parse_duration(*t, inst.timeout_ns))
    return bad(std::string(tkey) + " = \"" + *t +
               "\" is not a duration; use seconds (5, 0.5) or a unit (250ms, 2s), at most one hour");
  // on_error and on_over_budget: what a message becomes when the module
  // does not decide it (a timeout, a bypass).
  for (auto [key, verdict] : {std::pair<const char *, int *>{"on_error", &inst.on_error},
                              std::pair<const char *, int *>{"on_over_budget", &inst.on_over_budget}}) {
    const std::string *v = decl.item(key);
    if (!v) continue;
    if (*v == "pass") *verdict = MESIBO_RESULT_PASS;
    else if (*v == "consume" || *v == "consumed") *verdict = MESIBO_RESULT_CONSUMED;
    else return bad(std::string(key) + " = \"" + *v + "\" must be pass or consume");
  }
  const char *dur_hint = "\" is not a duration; use a unit (500us, 2ms, 1s), at most one hour";
  if (const std::string *b = decl.item("budget")) {
    if (!parse_duration(*b, inst.budget_ns)) return bad("budget = \"" + *b + dur_hint);
    inst.budget_ticks = static_cast<uint64_t>(static_cast<double>(inst.budget_ns) / ns_per_tick());
    if (inst.budget_ticks == 0) inst.budget_ticks = 1;
  }
  if (const std::string *st = decl.item("budget_strikes")) {
    char *end = nullptr;
    long v = std::strtol(st->c_str(), &end, 10);
    if (st->empty() || *end != '\0' || v < 1 || v > 1000000)
      return bad("budget_strikes = \"" + *st + "\" is not a count; use a whole number of at least 1, such as 5");
    inst.budget_strikes = static_cast<uint32_t>(v);
  }
  if (const std::string *w = decl.item("budget_window"); w && !parse_duration(*w, inst.budget_window_ns))
    return bad("budget_window = \"" + *w + dur_hint);
  if (const std::string *c = decl.item("budget_cooldown"); c && !parse_duration(*c, inst.budget_cooldown_ns))
    return bad("budget_cooldown = \"" + *c + dur_hint);
  if (!inst.budget_ns && (decl.item("on_over_budget") || decl.item("budget_strikes") || decl.item("budget_window") ||
                          decl.item("budget_cooldown")))
    return bad("on_over_budget, budget_strikes, budget_window and budget_cooldown need a budget = item (such as budget = 2ms)");
  return true;
}

// A script module's block: nothing to load here; the host (lib/modules.ts)
// loads the script and tells the core which hooks it implements.
void prepare_script(Instance &inst) {
  inst.slot = new ModuleSlot{};
  inst.slot->owner = &inst;
  inst.slot->mod.name = inst.name.c_str();
  inst.slot->mod.signature = MESIBO_MODULE_SIGNATURE;
  inst.initialised = true;
}

bool load_instance(Core &core, const ModuleDecl &decl, Instance &inst, OpenError &err) {
  err.line = decl.line;
  if (!read_common_items(core, decl, inst, err)) return false;
  if (inst.script) {
    prepare_script(inst);
    return true;
  }

  if (!file_exists(inst.file)) {
    fail(err, "E_MODULE_NOT_FOUND", inst,
         "module \"" + inst.name + "\": " + inst.file + " does not exist (" + std::strerror(errno) +
             "); build the module there, set module_dir, or give the block a path = item");
    return false;
  }

  // RTLD_NOW: a module that needs a symbol the server does not provide fails
  // here, at start-up, rather than in the middle of a message.
  dlerror();
  inst.dl = dlopen(inst.file.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!inst.dl) {
    const char *why = dlerror();
    std::string reason = why ? why : "unknown dlopen error";
    if (looks_like_not_shared_object(reason.c_str()))
      fail(err, "E_MODULE_NOT_SHARED_OBJECT", inst,
           "module \"" + inst.name + "\": " + inst.file + " is not a shared object (" + reason +
               "); compile it with g++ -shared -fPIC -I include");
    else
      fail(err, "E_MODULE_LOAD_FAILED", inst, "module \"" + inst.name + "\": cannot load " + inst.file + ": " + reason);
    return false;
  }

  std::string symbol = "mesibo_module_" + inst.name + "_init";
  auto init = reinterpret_cast<mesibo_module_init_fn>(dlsym(inst.dl, symbol.c_str()));
  if (!init) {
    for (bool unsigned_len : {false, true}) {
      std::string mangled = mangled_init(symbol, unsigned_len);
      init = reinterpret_cast<mesibo_module_init_fn>(dlsym(inst.dl, mangled.c_str()));
      if (init) {
        core_logf(core, 0,
                  "warning: module \"%s\": %s exports its init function with a C++ name (%s); add MESIBO_EXPORT "
                  "before it so the symbol is %s",
                  inst.name.c_str(), inst.file.c_str(), mangled.c_str(), symbol.c_str());
        break;
      }
    }
  }
  if (!init) {
    fail(err, "E_MODULE_NO_INIT", inst,
         "module \"" + inst.name + "\": " + inst.file + " does not export " + symbol +
             "; define it with MESIBO_EXPORT, and check that the module name in the config matches the one in the "
             "source");
    return false;
  }

  inst.config = make_module_config(decl);
  inst.slot = new ModuleSlot{};
  inst.slot->owner = &inst;
  mesibo_module_t *m = &inst.slot->mod;
  m->name = inst.name.c_str();
  m->config = inst.config;
  m->signature = MESIBO_MODULE_SIGNATURE;
  m->invoke = module_invoke;
  slot_register(inst.slot);

  for (int h = 0; h < HOOK_COUNT; ++h) inst.sites[h] = {inst.name.c_str(), hook_name(static_cast<Hook>(h))};
  inst.sites[HOOK_COUNT] = {inst.name.c_str(), "init"};
  inst.sites[HOOK_COUNT + 1] = {inst.name.c_str(), "on_cleanup"};
  inst.capturing_init_log = true;
  mesibo_int_t rc;
  try {
    InModule in(inst.sites[HOOK_COUNT]);
    rc = init(MESIBO_MODULE_VERSION, m, static_cast<mesibo_int_t>(sizeof(mesibo_module_t)));
  } catch (...) {
    rc = MESIBO_RESULT_FAIL;
    inst.init_log.push_back("init threw a C++ exception");
  }
  inst.capturing_init_log = false;
  if (rc != MESIBO_RESULT_OK) {
    const bool sanity = init_log_says(inst, "module version mismatch") || init_log_says(inst, "module size mismatch") ||
                        init_log_says(inst, "module signature mismatch");
    std::string said;
    for (const auto &l : inst.init_log) said += "\n  " + inst.name + ": " + l;
    if (sanity)
      fail(err, "E_MODULE_SANITY_CHECK", inst,
           "module \"" + inst.name + "\": " + inst.file +
               " failed its sanity check: it was compiled against a different module.h; rebuild it against "
               "Switchboard's include/module.h" + said);
    else
      fail(err, "E_MODULE_INIT_FAILED", inst,
           "module \"" + inst.name + "\": " + symbol + " in " + inst.file + " returned " + std::to_string(rc) +
               (said.empty() ? " and logged nothing" : "; it logged:" + said));
    err.module_log = inst.init_log;
    return false;
  }
  inst.initialised = true;
  return true;
}

void unload_instance(Core &core, Instance &inst) {
  if (inst.initialised && inst.slot->mod.on_cleanup) {
    try {
      InModule in(inst.sites[HOOK_COUNT + 1]);
      inst.slot->mod.on_cleanup(&inst.slot->mod);
    } catch (...) {
      core_logf(core, 0, "module \"%s\": on_cleanup threw a C++ exception", inst.name.c_str());
    }
  }
  inst.initialised = false;
  if (inst.slot) {
    slot_unregister(inst.slot);
    delete inst.slot;
    inst.slot = nullptr;
  }
  std::free(inst.config);
  inst.config = nullptr;
  if (inst.dl) dlclose(inst.dl);
  inst.dl = nullptr;
}

}  // namespace

std::mutex &slot_registry_mutex() {
  static std::mutex m;
  return m;
}

Instance *slot_lookup_locked(const mesibo_module_t *mod) {
  if (!mod || live_slots().count(mod) == 0) return nullptr;
  return reinterpret_cast<const ModuleSlot *>(mod)->owner;
}

// http_client.cc: the extra CA bundle mesibo_util_http trusts (empty: none).

namespace {

// Open cores, oldest first. The HTTP, socket and FastCGI clients serve the
// whole process, not one core; their reports (io_report) go to the newest
// open core's log, which in a server process is the only one.
std::mutex g_open_mu;
std::vector<Core *> g_open;

void report_to_open_core(std::string text) {
  std::lock_guard<std::mutex> lock(g_open_mu);
  if (g_open.empty()) {
    std::fprintf(stderr, "switchboard: %s\n", text.c_str());
    return;
  }
  core_log(*g_open.back(), std::string(), 0, std::move(text));
}

void track_open(Core &core, bool open) {
  std::lock_guard<std::mutex> lock(g_open_mu);
  g_open.erase(std::remove(g_open.begin(), g_open.end(), &core), g_open.end());
  if (open) g_open.push_back(&core);
  io_set_reporter(g_open.empty() ? nullptr : report_to_open_core);
}

}  // namespace

bool core_open(Core &core, const Config &config, Host host, OpenError &err) {
  core.config = config;
  core.host = host;
  core.closed = false;
  track_open(core, true);
  core.loop_thread = std::this_thread::get_id();
  ns_per_tick();  // calibrate now rather than on the first message
  crash_trace_install();  // on the loop thread, before any module code runs

  if (const std::string *v = config.setting("max_message_size")) {
    char *end = nullptr;
    unsigned long long n = std::strtoull(v->c_str(), &end, 10);
    if (v->empty() || *end != '\0' || n == 0 || n > (64ull << 20)) {
      err.code = "E_CONFIG_BAD_VALUE";
      err.file = config.file;
      err.message = "max_message_size = \"" + *v + "\" must be a byte count between 1 and 67108864";
      return false;
    }
    core.max_payload = static_cast<size_t>(n);
  }

  // The server checks log_level's value (0 to 3); a value it would refuse
  // leaves modules at mesibo's default here.
  core.module_log_level = 0;
  if (const std::string *v = config.setting("log_level")) {
    if (v->size() == 1 && (*v)[0] >= '1' && (*v)[0] <= '3') core.module_log_level = (*v)[0] - '1';
  }

  const std::string *ca = config.setting("http_ca_file");
  std::string ca_why;
  if (!http_set_ca_file(ca ? config.resolve_path(*ca) : std::string(), &ca_why)) {
    err.code = "E_CONFIG_BAD_VALUE";
    err.file = config.file;
    err.message = "http_ca_file = \"" + *ca + "\": " + ca_why;
    return false;
  }

  std::string dir = config.dir;
  if (const std::string *md = config.setting("module_dir")) dir = config.resolve_path(*md);

  // Every failure from here on goes through core_close, which untracks.
  core_crash_logs_track(core);

  for (const auto &decl : config.modules) {
    auto inst = std::make_unique<Instance>();
    inst->core = &core;
    inst->name = decl.name;
    inst->position = core.chain.size();
    const std::string *path = decl.item("path");
    const std::string native_file = path ? config.resolve_path(*path) : dir + "/mesibo_mod_" + decl.name + ".so";
    // `module_script` always makes a script module. The older `script` does
    // only in a block that is no native module (no path item, no
    // mesibo_mod_NAME.so): a native module's items are its own, and mesibo's
    // FastCGI module reads its own `script` (docs/config.md).
    const std::string *module_script = decl.item("module_script");
    const std::string *legacy = decl.item("script");
    const std::string *script = module_script;
    if (!script && legacy && !path && !file_exists(native_file)) script = legacy;
    if (!script && legacy && looks_like_script_file(*legacy))
      core_logf(core, 0,
                "module \"%s\": script = %s is an item of the native module %s, not a script module; to load the "
                "script, write module_script = %s instead",
                decl.name.c_str(), legacy->c_str(), native_file.c_str(), legacy->c_str());
    if (script) {
      // A path (./x.js, /abs/x.js) resolves against the config's folder; a
      // package name is left for the host to resolve.
      inst->script = true;
      bool is_path = !script->empty() && ((*script)[0] == '.' || (*script)[0] == '/');
      inst->file = is_path ? config.resolve_path(*script) : *script;
    } else {
      inst->file = native_file;
    }
    if (module_script && path) {
      fail(err, "E_CONFIG_BAD_VALUE", *inst,
           "module \"" + inst->name + "\": a block is a native module (path = ...) or a script module (module_script = ...), "
           "not both; remove one of the two items");
      err.file = config.file;
      err.line = decl.line;
      core_close(core);
      return false;
    }
    Instance &ref = *inst;
    core.chain.push_back(std::move(inst));
    if (!load_instance(core, decl, ref, err)) {
      core_close(core);
      return false;
    }
  }
  return true;
}

void core_close(Core &core) {
  track_open(core, false);
  if (core.closed) return;
  {
    std::lock_guard<std::mutex> lock(core.mu);
    core.closed = true;
    core.live_handles.clear();
    core.resolutions.clear();
  }
  // Messages still waiting for a decision were never acknowledged as sent:
  // their senders resend them to the next server.
  core.waiting.clear();
  core.conversations.clear();
  for (size_t i = core.chain.size(); i-- > 0;) unload_instance(core, *core.chain[i]);
  core.chain.clear();
  core_crash_logs_untrack(core);
}

Instance *core_add_script(Core &core, const std::string &name, size_t position) {
  if (position > core.chain.size()) position = core.chain.size();
  auto inst = std::make_unique<Instance>();
  inst->core = &core;
  inst->name = name;
  inst->script = true;
  inst->file = name;
  inst->log_level = core.module_log_level;
  prepare_script(*inst);
  Instance *raw = inst.get();
  core.chain.insert(core.chain.begin() + static_cast<std::ptrdiff_t>(position), std::move(inst));
  for (size_t i = 0; i < core.chain.size(); ++i) core.chain[i]->position = i;
  // Messages waiting to continue after `position` now find the new instance
  // before their resume point: move it along.
  for (auto &kv : core.conversations)
    for (auto &pd : kv.second)
      if (pd->next > position) ++pd->next;
  std::lock_guard<std::mutex> lock(core.mu);
  for (auto &o : core.outbox)
    if (o.start > position) ++o.start;
  return raw;
}

}  // namespace sb
