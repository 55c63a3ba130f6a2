// The loader: finds mesibo_mod_NAME.so, resolves its init symbol, fills the
// module struct the way the ABI promises and calls init; at shutdown runs
// on_cleanup in reverse order and closes the libraries.
#include <dlfcn.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

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
    inst.own_log_level = true;
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

// How a library is opened: from its own path (start-up), shared with a
// running instance (a reload with the same file: the same handle, as two
// declarations of one library share it), or from a private copy (a reload
// with a changed file; see copy_library).
enum OpenHow { OPEN_PATH, OPEN_SHARED, OPEN_COPY };

// Copies `src` to a new file no library was ever loaded from, so that
// dlopen really loads the changed library: glibc hands back the already
// loaded object for a path it has seen, and for a file with a known inode.
// Next to the original first (that folder allows executing code; /tmp may
// be mounted noexec), else in TMPDIR. The caller unlinks it after dlopen:
// the mapping outlives the name, so nothing is left behind on disk, and
// an operator who overwrites the .so in place later cannot corrupt the code
// this process runs.
bool copy_library(const std::string &src, std::string &out, std::string &why) {
  static std::atomic<unsigned> serial{0};
  int in = ::open(src.c_str(), O_RDONLY | O_CLOEXEC);
  if (in < 0) {
    why = std::string("cannot read it: ") + std::strerror(errno);
    return false;
  }
  const size_t slash = src.rfind('/');
  const std::string base = slash == std::string::npos ? src : src.substr(slash + 1);
  const std::string dir = slash == std::string::npos ? "." : src.substr(0, slash);
  const char *tmp = std::getenv("TMPDIR");
  bool ok = false;
  for (const std::string &d : {dir, std::string(tmp && tmp[0] ? tmp : "/tmp")}) {
    out = d + "/." + base + ".reload-" + std::to_string(::getpid()) + "-" + std::to_string(++serial);
    int fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0700);
    if (fd < 0) {
      why = "cannot write a copy to " + d + ": " + std::strerror(errno);
      continue;
    }
    ::lseek(in, 0, SEEK_SET);
    char buf[65536];
    ssize_t n;
    ok = true;
    while ((n = ::read(in, buf, sizeof buf)) > 0) {
      for (ssize_t done = 0; done < n;) {
        ssize_t w = ::write(fd, buf + done, static_cast<size_t>(n - done));
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) {
          ok = false;
          break;
        }
        done += w;
      }
      if (!ok) break;
    }
    if (n < 0) ok = false;
    if (!ok) why = "copying to " + out + " failed: " + std::strerror(errno);
    ::close(fd);
    if (ok) break;
    ::unlink(out.c_str());
  }
  ::close(in);
  return ok;
}

bool load_instance(Core &core, const ModuleDecl &decl, Instance &inst, OpenError &err, OpenHow how = OPEN_PATH,
                   const Instance *sharing = nullptr) {
  err.line = decl.line;
  inst.items.clear();
  for (const auto &it : decl.items) inst.items.emplace_back(it.key, it.value);
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

  inst.file_id = file_id_of(inst.file);
  inst.loaded_from = how == OPEN_SHARED && sharing ? sharing->loaded_from : inst.file;
  if (how == OPEN_COPY) {
    std::string why;
    if (!copy_library(inst.file, inst.loaded_from, why)) {
      fail(err, "E_MODULE_LOAD_FAILED", inst, "module \"" + inst.name + "\": cannot load the new " + inst.file + ": " + why);
      return false;
    }
  }
  // RTLD_NOW: a module that needs a symbol the server does not provide fails
  // here, at start-up, rather than in the middle of a message.
  dlerror();
  inst.dl = dlopen(inst.loaded_from.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (how == OPEN_COPY) ::unlink(inst.loaded_from.c_str());
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
  inst.sites[HOOK_COUNT + 2] = {inst.name.c_str(), "state save callback"};
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
  inst.has_handoff = false;
  inst.handoff.clear();
  inst.handoff.shrink_to_fit();
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
  int server_level = 1;
  if (const std::string *v = config.setting("log_level")) {
    if (v->size() == 1 && (*v)[0] >= '0' && (*v)[0] <= '3') server_level = (*v)[0] - '0';
  }
  core_set_log_level(core, server_level);

  const std::string *ca = config.setting("http_ca_file");
  std::string ca_why;
  if (!http_set_ca_file(ca ? config.resolve_path(*ca) : std::string(), &ca_why)) {
    err.code = "E_CONFIG_BAD_VALUE";
    err.file = config.file;
    err.message = "http_ca_file = \"" + *ca + "\": " + ca_why;
    return false;
  }

  // Every failure from here on goes through core_close, which untracks.
  core_crash_logs_track(core);

  for (const auto &decl : config.modules) {
    auto inst = std::make_unique<Instance>();
    inst->core = &core;
    inst->name = decl.name;
    inst->position = core.chain.size();
    inst->from_config = true;
    if (!core_resolve_block(config, decl, inst->file, inst->script, err)) {
      core_close(core);
      return false;
    }
    if (const std::string *legacy = decl.item("script"); legacy && !inst->script && looks_like_script_file(*legacy))
      core_logf(core, 0,
                "module \"%s\": script = %s is an item of the native module %s, not a script module; to load the "
                "script, write module_script = %s instead",
                decl.name.c_str(), legacy->c_str(), inst->file.c_str(), legacy->c_str());
    Instance &ref = *inst;
    core.chain.push_back(std::move(inst));
    if (!load_instance(core, decl, ref, err)) {
      core_close(core);
      return false;
    }
  }
  return true;
}

bool core_resolve_block(const Config &config, const ModuleDecl &decl, std::string &file, bool &script,
                        OpenError &err) {
  std::string dir = config.dir;
  if (const std::string *md = config.setting("module_dir")) dir = config.resolve_path(*md);
  const std::string *path = decl.item("path");
  const std::string native_file = path ? config.resolve_path(*path) : dir + "/mesibo_mod_" + decl.name + ".so";
  // `module_script` always makes a script module. The older `script` does
  // only in a block that is no native module (no path item, no
  // mesibo_mod_NAME.so): a native module's items are its own, and mesibo's
  // FastCGI module reads its own `script` (docs/config.md).
  const std::string *module_script = decl.item("module_script");
  const std::string *legacy = decl.item("script");
  const std::string *spec = module_script;
  if (!spec && legacy && !path && !file_exists(native_file)) spec = legacy;
  if (module_script && path) {
    err.code = "E_CONFIG_BAD_VALUE";
    err.module = decl.name;
    err.message = "module \"" + decl.name +
                  "\": a block is a native module (path = ...) or a script module (module_script = ...), not both; "
                  "remove one of the two items";
    err.file = config.file;
    err.line = decl.line;
    return false;
  }
  script = spec != nullptr;
  if (script) {
    // A path (./x.js, /abs/x.js) resolves against the config's folder; a
    // package name is left for the host to resolve.
    bool is_path = !spec->empty() && ((*spec)[0] == '.' || (*spec)[0] == '/');
    file = is_path ? config.resolve_path(*spec) : *spec;
  } else {
    file = native_file;
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
  for (auto &inst : core.staged) unload_instance(core, *inst);
  core.staged.clear();
  for (size_t i = core.chain.size(); i-- > 0;) unload_instance(core, *core.chain[i]);
  core.chain.clear();
  for (size_t i = core.retiring.size(); i-- > 0;) unload_instance(core, *core.retiring[i]);
  core.retiring.clear();
  core_crash_logs_untrack(core);
}

FileId file_id_of(const std::string &path) {
  FileId id;
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return id;
  id.dev = st.st_dev;
  id.ino = st.st_ino;
  id.size = static_cast<uint64_t>(st.st_size);
  id.mtime_ns = static_cast<uint64_t>(st.st_mtim.tv_sec) * 1000000000ull + static_cast<uint64_t>(st.st_mtim.tv_nsec);
  id.known = true;
  return id;
}

Instance *core_find_script(Core &core, uint32_t id) {
  for (auto *list : {&core.chain, &core.staged, &core.retiring})
    for (auto &ip : *list)
      if (ip->script && ip->script_id == id) return ip.get();
  return nullptr;
}

bool core_reload_plan(Core &core, const Config &config, std::vector<ReloadStep> &steps,
                      std::vector<std::string> &removed, OpenError &err) {
  std::vector<Instance *> running;
  for (auto &ip : core.chain)
    if (ip->from_config) running.push_back(ip.get());
  steps.clear();
  removed.clear();
  for (size_t i = 0; i < config.modules.size(); ++i) {
    const ModuleDecl &decl = config.modules[i];
    ReloadStep st;
    st.name = decl.name;
    st.index = i;
    if (!core_resolve_block(config, decl, st.file, st.script, err)) return false;
    Instance *old = i < running.size() ? running[i] : nullptr;
    if (!old || old->name != decl.name || old->script != st.script) {
      st.action = RELOAD_RESTART;
      steps.push_back(std::move(st));
      continue;
    }
    st.inst = old;
    st.same_items = old->items.size() == decl.items.size();
    for (size_t k = 0; st.same_items && k < decl.items.size(); ++k)
      st.same_items = old->items[k].first == decl.items[k].key && old->items[k].second == decl.items[k].value;
    // A script's file is the host's to compare (it resolves packages).
    st.same_file = old->file == st.file && (st.script || old->file_id == file_id_of(st.file));
    st.action = st.same_items && st.same_file ? RELOAD_UNCHANGED : RELOAD_CHANGED;
    steps.push_back(std::move(st));
  }
  for (size_t i = 0; i < running.size(); ++i)
    if (i >= config.modules.size() || running[i]->name != config.modules[i].name) removed.push_back(running[i]->name);
  return true;
}

namespace {

// `inst` leaves every list it is in and goes to core.retiring; it stays
// loaded while a message waits for a decision it deferred.
void retire(Core &core, std::vector<std::unique_ptr<Instance>> &from, Instance *inst) {
  for (auto it = from.begin(); it != from.end(); ++it) {
    if (it->get() != inst) continue;
    core.retiring.push_back(std::move(*it));
    from.erase(it);
    break;
  }
  core_retire_idle(core);
}

void renumber(Core &core) {
  for (size_t i = 0; i < core.chain.size(); ++i) core.chain[i]->position = i;
}

}  // namespace

Instance *core_reload_prepare(Core &core, Instance &old, const ModuleDecl &decl, const std::string &file,
                              OpenError &err) {
  auto inst = std::make_unique<Instance>();
  inst->core = &core;
  inst->name = old.name;
  inst->position = old.position;
  inst->from_config = old.from_config;
  inst->script = old.script;
  inst->file = file;
  OpenHow how = OPEN_COPY;
  if (!inst->script && old.file == file && old.dl && old.file_id == file_id_of(file)) how = OPEN_SHARED;
  // The old instance's snapshot, taken while nothing of it runs (the loop
  // thread is here), reaches the new init through switchboard_state_load.
  switchboard_state_save_fn save = nullptr;
  {
    std::lock_guard<std::mutex> lock(slot_registry_mutex());  // a module thread may register it
    save = old.state_save;
  }
  if (!inst->script && save && old.initialised) {
    mesibo_uint_t len = 0;
    const void *blob = nullptr;
    try {
      InModule in(old.sites[HOOK_COUNT + 2]);
      blob = save(&old.slot->mod, &len);
    } catch (...) {
      core_logf(core, 0, "module \"%s\": its state save callback threw a C++ exception; the new instance starts without state",
                old.name.c_str());
      blob = nullptr;
    }
    if (blob) {
      inst->has_handoff = true;
      inst->handoff.assign(static_cast<const char *>(blob), len);
    }
  }
  Instance *raw = inst.get();
  core.staged.push_back(std::move(inst));
  if (!load_instance(core, decl, *raw, err, how, &old)) {
    core_reload_abort(core, raw);
    return nullptr;
  }
  return raw;
}

void core_reload_commit(Core &core, Instance *fresh) {
  auto it = std::find_if(core.staged.begin(), core.staged.end(), [&](auto &p) { return p.get() == fresh; });
  if (it == core.staged.end()) return;
  std::unique_ptr<Instance> owned = std::move(*it);
  core.staged.erase(it);
  size_t pos = fresh->position < core.chain.size() ? fresh->position : core.chain.size();
  // The predecessor: the config-declared instance of the same name nearest
  // to the position it was prepared for (script modules added with use()
  // since may have moved it).
  size_t at = core.chain.size();
  for (size_t i = 0; i < core.chain.size(); ++i) {
    Instance &c = *core.chain[i];
    if (c.from_config == fresh->from_config && c.name == fresh->name && c.script == fresh->script &&
        (at == core.chain.size() || (i > pos ? i - pos : pos - i) < (at > pos ? at - pos : pos - at)))
      at = i;
  }
  if (at == core.chain.size()) {
    // Nothing to replace (the core was reshaped meanwhile): drop it.
    core.staged.push_back(std::move(owned));
    core_reload_abort(core, fresh);
    return;
  }
  Instance &old = *core.chain[at];
  // The counters continue: metrics are per module name and position, and a
  // reload is not a new series. The budget's strikes and bypass start
  // afresh: the new code gets its own chance.
  std::copy(std::begin(old.stats), std::end(old.stats), std::begin(fresh->stats));
  std::copy(std::begin(old.verdicts), std::end(old.verdicts), std::begin(fresh->verdicts));
  fresh->errors = old.errors;
  fresh->timeouts = old.timeouts;
  fresh->over_budget = old.over_budget;
  fresh->bypassed_msgs = old.bypassed_msgs;
  fresh->budget_trips = old.budget_trips;
  fresh->script_to = fresh->script_to.empty() ? old.script_to : fresh->script_to;
  fresh->position = at;
  core.chain[at].swap(owned);  // `owned` now holds the old instance
  core.retiring.push_back(std::move(owned));
  core_retire_idle(core);
}

void core_reload_abort(Core &core, Instance *fresh) {
  auto it = std::find_if(core.staged.begin(), core.staged.end(), [&](auto &p) { return p.get() == fresh; });
  if (it == core.staged.end()) return;
  unload_instance(core, **it);
  core.staged.erase(it);
}

void core_remove_instance(Core &core, Instance *inst) {
  size_t pos = core.chain.size();
  for (size_t i = 0; i < core.chain.size(); ++i)
    if (core.chain[i].get() == inst) pos = i;
  if (pos == core.chain.size()) return;
  // What waits to continue after `pos` finds the chain one shorter: a
  // message deferred at the removed instance goes on with the one that
  // follows it.
  for (auto &kv : core.conversations)
    for (auto &pd : kv.second)
      if (pd->next > pos) --pd->next;
  {
    std::lock_guard<std::mutex> lock(core.mu);
    for (auto &o : core.outbox)
      if (o.start > pos) --o.start;
  }
  retire(core, core.chain, inst);
  renumber(core);
}

void core_retire_idle(Core &core) {
  for (size_t i = 0; i < core.retiring.size();) {
    Instance *inst = core.retiring[i].get();
    bool waited_for = false;
    for (const auto &kv : core.waiting)
      if (kv.second->at == inst) {
        waited_for = true;
        break;
      }
    if (waited_for) {
      ++i;
      continue;
    }
    unload_instance(core, *inst);
    core.retiring.erase(core.retiring.begin() + static_cast<std::ptrdiff_t>(i));
  }
}

void core_set_log_level(Core &core, int server_level) {
  core.module_log_level = server_level > 1 ? server_level - 1 : 0;
  for (auto *list : {&core.chain, &core.staged, &core.retiring})
    for (auto &ip : *list)
      if (!ip->own_log_level) ip->log_level = core.module_log_level;
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
