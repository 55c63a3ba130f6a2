// The loader, the chain and the exported functions driven without Node, so
// that AddressSanitizer's leak checker sees every allocation the core makes
// (under node, V8's own allocations would drown it). Modules are compiled
// from test/modules with the system C compiler, as a module author would.
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "check.h"
#include "core.h"
#include "instances.h"

namespace {

// One folder for the modules this run builds, under $TMPDIR (or /tmp), and
// removed when the program exits, so a run leaves nothing behind.
std::string make_tmpdir() {
  const char *base = std::getenv("TMPDIR");
  std::string tmpl = std::string(base && *base ? base : "/tmp") + "/sb-core-test-XXXXXX";
  return std::string(mkdtemp(&tmpl[0]));
}

std::string tmpdir();

void remove_tmpdir() {
  std::string cmd = "rm -rf '" + tmpdir() + "'";
  if (std::system(cmd.c_str()) != 0) std::fprintf(stderr, "core_test: could not remove %s\n", tmpdir().c_str());
}

std::string tmpdir() {
  static std::string dir = make_tmpdir();
  // Registered after dir is built, so it runs before dir is destroyed.
  static const bool removed_at_exit = std::atexit(remove_tmpdir) == 0;
  (void)removed_at_exit;
  return dir;
}

// Builds test/modules/SOURCE into DIR/mesibo_mod_NAME.so; returns DIR.
std::string build_module(const std::string &name, const std::string &source, const std::string &defines = "") {
  std::string dir = tmpdir() + "/" + name + (defines.empty() ? "" : "-" + std::to_string(std::hash<std::string>()(defines)));
  std::string cmd = "mkdir -p " + dir + " && cc -shared -fPIC -O1 -I " SB_SOURCE_DIR "/include " + defines + " " +
                    SB_SOURCE_DIR "/test/modules/" + source + " -o " + dir + "/mesibo_mod_" + name + ".so";
  if (std::system(cmd.c_str()) != 0) std::fprintf(stderr, "  could not build %s\n", source.c_str());
  return dir;
}

struct Opened {
  sb::Core core;
  sb::OpenError err;
  std::atomic<int> wakes{0};
  std::vector<sb::Outgoing> sent;
  std::vector<sb::LogLine> logs;
  bool ok = false;

  Opened(const std::string &dir, const std::string &body) {
    sb::Config cfg;
    sb::ConfigError cerr;
    if (!sb::config_parse("module_dir = " + dir + "\n" + body, "<test>", ".", cfg, cerr)) {
      std::fprintf(stderr, "  config: %s\n", cerr.to_string().c_str());
      return;
    }
    sb::Host host;
    host.data = this;
    host.wake = [](void *d) { static_cast<Opened *>(d)->wakes++; };
    ok = sb::core_open(core, cfg, host, err);
  }
  ~Opened() { sb::core_close(core); }

  void drain() { sb::core_drain(core, sent, logs); }
  int submit(const char *from, const std::string &frame, sb::SubmitResult &r) {
    return sb::core_submit(core, from, std::strlen(from), reinterpret_cast<const uint8_t *>(frame.data()), frame.size(),
                           -1, r);
  }
  bool logged(const std::string &text) {
    drain();
    for (auto &l : logs)
      if (l.text == text) return true;
    return false;
  }
};

std::string frame(const std::string &to, const std::string &data, int id = 1) {
  return "{\"op\":\"msg\",\"id\":" + std::to_string(id) + ",\"to\":\"" + to + "\",\"data\":\"" + data + "\"}";
}

}  // namespace

TEST("a chain of two instances passes, rewrites and consumes") {
  std::string dir = build_module("recorder", "recorder.c");
  Opened o(dir, "module recorder {\n tag = up\n rewrite = upper\n}\nmodule recorder {\n tag = gate\n only_to = wall\n verdict = consume\n}\n");
  CHECK(o.ok);
  sb::SubmitResult r;
  CHECK_EQ(o.submit("alice", frame("bob", "hello"), r), 0);
  CHECK_EQ(r.verdict, MESIBO_RESULT_PASS);
  CHECK_EQ(std::string(r.payload, r.payload_len), std::string("HELLO"));
  CHECK(std::string(r.frame, r.frame_len).find("\"data\":\"HELLO\"") != std::string::npos);
  CHECK_EQ(o.submit("alice", frame("wall", "x"), r), 0);
  CHECK_EQ(r.verdict, MESIBO_RESULT_CONSUMED);
  CHECK(o.logged("gate saw from=alice to=wall id=1 len=1 text=X"));
  CHECK(o.wakes.load() > 0);
}

TEST("a reply from a module enters the chain after it") {
  std::string dir = build_module("recorder", "recorder.c");
  Opened o(dir, "module recorder {\n tag = bot\n only_to = bot\n reply = pong\n verdict = consume\n}\nmodule recorder {\n tag = after\n}\n");
  CHECK(o.ok);
  sb::SubmitResult r;
  o.submit("alice", frame("bot", "ping", 9), r);
  o.drain();
  CHECK_EQ(o.sent.size(), size_t(1));
  if (!o.sent.empty()) {
    CHECK_EQ(o.sent[0].to, std::string("alice"));
    CHECK_EQ(o.sent[0].payload, std::string("pong"));
    CHECK_EQ(o.sent[0].params.refid, mesibo_uint_t(9));
  }
  CHECK(o.logged("after saw from=bot to=alice id=1009 len=4 text=pong"));
}

TEST("8 threads x 10,000 mesibo_message calls arrive complete and in order") {
  std::string dir = build_module("threads", "threads.c");
  Opened o(dir, "module threads {\n threads = 8\n count = 10000\n}\n");
  CHECK(o.ok);
  sb::SubmitResult r;
  o.submit("driver", frame("go", "start"), r);
  for (int i = 0; i < 20000 && o.sent.size() < 80000; ++i) {
    o.drain();
    usleep(1000);
  }
  CHECK_EQ(o.sent.size(), size_t(80000));
  std::vector<int> next(8, 0);
  int wrong = 0;
  for (auto &m : o.sent) {
    int t = std::atoi(m.from.c_str() + 1);
    if (m.payload != "T" + std::to_string(t) + ":" + std::to_string(next[t])) ++wrong;
    ++next[t];
  }
  CHECK_EQ(wrong, 0);
}

TEST("load failures clean up what was loaded and keep the module's log") {
  std::string good = build_module("recorder", "recorder.c");
  {
    Opened o(good, "module recorder {\n tag = first\n}\nmodule absent\n");
    CHECK(!o.ok);
    CHECK_EQ(o.err.code, std::string("E_MODULE_NOT_FOUND"));
    CHECK(o.logged("first cleanup"));
  }
  std::string bad = build_module("broken", "broken.c", "-DINIT_FAILS");
  Opened o(bad, "module broken\n");
  CHECK(!o.ok);
  CHECK_EQ(o.err.code, std::string("E_MODULE_INIT_FAILED"));
  CHECK_EQ(o.err.module_log.size(), size_t(1));
}

TEST("exported helpers: getconfig, json_extract, usec, and calls with a foreign module pointer") {
  std::string dir = build_module("recorder", "recorder.c");
  Opened o(dir, "module recorder {\n tag = t\n}\n");
  CHECK(o.ok);
  mesibo_module_t *m = &o.core.chain[0]->slot->mod;
  CHECK_EQ(std::string(mesibo_util_getconfig(m, "tag")), std::string("t"));
  CHECK(mesibo_util_getconfig(m, "missing") == nullptr);
  char json[] = "{\"a\":{\"b\":\"c\"}}";
  char *v = mesibo_util_json_extract(json, sizeof json - 1, "b", nullptr);
  CHECK_EQ(std::string(v ? v : ""), std::string("c"));
  std::free(v);
  mesibo_int_t t0 = mesibo_util_usec();
  usleep(2000);
  CHECK(mesibo_util_usec() - t0 >= 1000);
  mesibo_module_t stranger{};
  mesibo_message_params_t p{};
  p.to = const_cast<char *>("x");
  CHECK_EQ(mesibo_message(&stranger, &p, "hi", 2), mesibo_int_t(-1));
  CHECK_EQ(mesibo_message(m, nullptr, "hi", 2), mesibo_int_t(-1));
  mesibo_message_params_t nodest{};
  CHECK_EQ(mesibo_message(m, &nodest, "hi", 2), mesibo_int_t(-1));
  CHECK_EQ(mesibo_util_http(nullptr, nullptr), mesibo_int_t(-1));
}

TEST("deferred decisions: a conversation waits, completes in order, times out, and close frees what waits") {
  std::string dir = build_module("deferrer", "deferrer.c");
  Opened o(dir, "module deferrer {\n defer_timeout = 100ms\n}\n");
  CHECK(o.ok);
  sb::SubmitResult r;
  CHECK_EQ(o.submit("alice", frame("bob", "later:20:first", 1), r), 0);
  CHECK_EQ(r.verdict, sb::VERDICT_DEFERRED);
  uint64_t t1 = r.token;
  CHECK_EQ(o.submit("alice", frame("bob", "plain", 2), r), 0);  // queued behind the first
  CHECK_EQ(r.verdict, sb::VERDICT_DEFERRED);
  CHECK_EQ(o.submit("carol", frame("bob", "never", 3), r), 0);  // its own conversation
  uint64_t t3 = r.token;
  CHECK_EQ(sb::core_waiting(o.core), size_t(3));
  std::vector<sb::Completion> done;
  for (int i = 0; i < 2000 && done.size() < 3; ++i) {
    sb::core_expire(o.core, sb::now_ns());
    sb::core_drain(o.core, o.sent, o.logs, &done);
    usleep(1000);
  }
  CHECK_EQ(done.size(), size_t(3));
  if (done.size() == 3) {
    // alice's two in order, then carol's undecided one at its deadline.
    std::vector<uint64_t> order;
    for (auto &c : done) order.push_back(c.token);
    CHECK_EQ(order[0], t1);
    CHECK_EQ(order[1], t1 + 1);
    CHECK_EQ(order[2], t3);
    CHECK_EQ(done[0].payload, std::string("FIRST [deferrer after 20 ms]"));
    CHECK(done[0].frame.find("\"id\":1") != std::string::npos);
    CHECK(done[0].ack.find("\"status\":1") != std::string::npos);
    CHECK_EQ(done[1].payload, std::string("plain"));
    CHECK_EQ(done[2].verdict, MESIBO_RESULT_PASS);
  }
  CHECK_EQ(o.core.chain[0]->errors, uint64_t(1));
  // Messages still waiting when the core closes are freed with it.
  CHECK_EQ(o.submit("dave", frame("bob", "never", 4), r), 0);
  CHECK_EQ(o.submit("dave", frame("bob", "queued", 5), r), 0);
  CHECK_EQ(sb::core_waiting(o.core), size_t(2));
}

namespace {

// Reloads config block `index` of `body` (module_dir = dir) in place, as the
// addon's reloadInstance does; false and `err` when the old one stays.
bool reload(Opened &o, const std::string &dir, const std::string &body, size_t index, sb::OpenError &err) {
  sb::Config cfg;
  sb::ConfigError cerr;
  if (!sb::config_parse("module_dir = " + dir + "\n" + body, "<test>", ".", cfg, cerr)) return false;
  sb::ReloadedBlock out;
  return sb::core_reload_block(o.core, cfg, index, 0, out, err) == sb::RELOAD_BLOCK_SWAPPED;
}

}  // namespace

TEST("reload: a new instance takes over with the old one's state; a failing init leaves the old one; remove") {
  std::string dir = build_module("counter", "counter.c");
  std::string failing = build_module("counter", "counter.c", "-DFAIL_INIT");
  std::string cmd = "cp " + build_module("recorder", "recorder.c") + "/mesibo_mod_recorder.so " + dir + "/";
  CHECK_EQ(std::system(cmd.c_str()), 0);
  Opened p(dir, "module counter {\n label = a\n}\nmodule recorder {\n tag = after\n}\n");
  CHECK(p.ok);
  sb::SubmitResult r;
  p.submit("alice", frame("bob", "one"), r);
  p.submit("alice", frame("bob", "two"), r);
  sb::OpenError err;
  CHECK(reload(p, dir, "module counter {\n label = b\n}\nmodule recorder {\n tag = after\n}\n", 0, err));
  CHECK(p.logged("b v1 start count=2 (state: loaded)"));
  CHECK(p.logged("a v1 cleanup count=2"));
  CHECK_EQ(p.core.chain[0]->stats[sb::HOOK_MESSAGE].calls, uint64_t(2));
  CHECK(p.core.retiring.empty());
  // A failing build renamed over the library: the old instance stays.
  cmd = "cp " + failing + "/mesibo_mod_counter.so " + dir + "/.n && mv " + dir + "/.n " + dir + "/mesibo_mod_counter.so";
  CHECK_EQ(std::system(cmd.c_str()), 0);
  sb::Instance *before = p.core.chain[0].get();
  CHECK(!reload(p, dir, "module counter {\n label = b\n}\nmodule recorder {\n tag = after\n}\n", 0, err));
  CHECK_EQ(err.code, std::string("E_MODULE_INIT_FAILED"));
  CHECK(p.core.chain[0].get() == before);
  CHECK(p.core.staged.empty());
  p.submit("alice", frame("bob", "three"), r);
  CHECK_EQ(r.verdict, MESIBO_RESULT_PASS);
  // Removed between messages: the next message skips it.
  sb::core_remove_instance(p.core, before);
  CHECK(p.logged("b v1 cleanup count=3"));
  CHECK_EQ(p.core.chain.size(), size_t(1));
  CHECK_EQ(p.core.chain[0]->position, size_t(0));
  p.submit("alice", frame("bob", "four"), r);
  CHECK(p.logged("after saw from=alice to=bob id=1 len=4 text=four"));
}

TEST("reload: a message deferred at the old instance keeps it loaded until it is decided") {
  std::string dir = build_module("deferrer", "deferrer.c");
  Opened o(dir, "module deferrer {\n tag = old\n}\n");
  CHECK(o.ok);
  sb::SubmitResult r;
  CHECK_EQ(o.submit("alice", frame("bob", "later:30:slow", 1), r), 0);
  CHECK_EQ(r.verdict, sb::VERDICT_DEFERRED);
  sb::OpenError err;
  CHECK(reload(o, dir, "module deferrer {\n tag = new\n}\n", 0, err));
  CHECK_EQ(o.core.retiring.size(), size_t(1));
  std::vector<sb::Completion> done;
  for (int i = 0; i < 2000 && done.empty(); ++i) {
    sb::core_drain(o.core, o.sent, o.logs, &done);
    usleep(1000);
  }
  CHECK_EQ(done.size(), size_t(1));
  if (!done.empty()) CHECK_EQ(done[0].payload, std::string("SLOW [old after 30 ms]"));
  CHECK(o.core.retiring.empty());
  // One that is still waiting when the core closes is freed with it.
  CHECK_EQ(o.submit("carol", frame("bob", "never", 2), r), 0);
  CHECK(reload(o, dir, "module deferrer {\n tag = newer\n}\n", 0, err));
  CHECK_EQ(o.core.retiring.size(), size_t(1));
}

TEST("a refused frame: the id the decoder read and why, until the next frame is accepted") {
  std::string dir = build_module("recorder", "recorder.c");
  Opened o(dir, "module recorder {\n tag = r\n}\n");
  CHECK(o.ok);
  sb::SubmitResult r;
  std::string cut = "{\"op\":\"msg\",\"id\":5,\"to\":";
  CHECK_EQ(o.submit("alice", cut, r), int(sb::WIRE_E_MALFORMED));
  CHECK_EQ(sb::core_refused_id(o.core), uint32_t(5));
  CHECK(sb::core_refused_detail(o.core).find("at byte") != std::string::npos);
  CHECK_EQ(o.submit("alice", frame("bob", "fine", 6), r), 0);
  CHECK_EQ(sb::core_refused_detail(o.core), std::string());
}

TEST("core_instances: each instance's name, position, description, hooks and counters, as the host reports them") {
  std::string dir = build_module("recorder", "recorder.c");
  std::string counter = build_module("counter", "counter.c");
  std::string cmd = "cp " + counter + "/mesibo_mod_counter.so " + dir + "/";
  CHECK_EQ(std::system(cmd.c_str()), 0);
  Opened o(dir, "module recorder {\n tag = r\n only_to = wall\n verdict = consume\n}\nmodule counter {\n label = c\n}\n");
  CHECK(o.ok);
  sb::SubmitResult r;
  o.submit("alice", frame("bob", "one"), r);
  o.submit("alice", frame("wall", "two"), r);
  std::vector<sb::InstanceSnapshot> all;
  sb::core_instances(o.core, all);
  CHECK_EQ(all.size(), size_t(2));
  if (all.size() != 2) return;
  CHECK_EQ(all[0].name, std::string("recorder"));
  CHECK_EQ(all[1].position, size_t(1));
  CHECK(all[0].description && *all[0].description == "records what it sees");
  CHECK(!all[1].description);
  CHECK(!all[0].script);
  CHECK_EQ(all[0].hooks, (1u << sb::HOOK_COUNT) - 1);  // all five
  CHECK_EQ(all[1].hooks, 1u << sb::HOOK_MESSAGE);
  CHECK_EQ(all[0].times[sb::HOOK_MESSAGE].calls, uint64_t(2));
  CHECK_EQ(all[1].times[sb::HOOK_MESSAGE].calls, uint64_t(1));  // the wall message was consumed before it
  CHECK_EQ(all[1].times[sb::HOOK_STATUS].calls, uint64_t(0));
  CHECK_EQ(all[0].verdicts[sb::VERDICT_CONSUMED], uint64_t(1));
  uint64_t bucketed = 0;
  for (uint64_t b : all[0].times[sb::HOOK_MESSAGE].buckets) bucketed += b;
  CHECK_EQ(bucketed, uint64_t(2));
  CHECK(all[0].times[sb::HOOK_MESSAGE].max_ns <= all[0].times[sb::HOOK_MESSAGE].total_ns);
}

TEST("reload plan: an unchanged block names its running instance's position; a renamed one restarts") {
  std::string dir = build_module("recorder", "recorder.c");
  Opened o(dir, "module recorder {\n tag = r\n}\n");
  CHECK(o.ok);
  sb::Config cfg;
  sb::ConfigError cerr;
  CHECK(sb::config_parse("module_dir = " + dir + "\nmodule recorder {\n tag = r\n}\nmodule other {\n path = " + dir +
                             "/mesibo_mod_recorder.so\n}\n",
                         "<test>", ".", cfg, cerr));
  std::vector<sb::ReloadStep> steps;
  std::vector<std::string> removed;
  sb::OpenError err;
  CHECK(sb::core_reload_plan(o.core, cfg, steps, removed, err));
  CHECK_EQ(steps.size(), size_t(2));
  if (steps.size() != 2) return;
  CHECK_EQ(int(steps[0].action), int(sb::RELOAD_UNCHANGED));
  CHECK(steps[0].inst != nullptr);
  CHECK_EQ(steps[0].position, size_t(0));
  CHECK_EQ(int(steps[1].action), int(sb::RELOAD_RESTART));
  CHECK(steps[1].inst == nullptr);
  CHECK(removed.empty());
}
