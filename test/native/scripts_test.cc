// Script modules in the core without Node (cpp/scripts.h): the host here is
// a C++ function that reads the hook slots and buffer the core packed, as
// lib/modules.ts does, and answers as a script would. What the vitest suite
// checks through the addon, this checks under AddressSanitizer with leak
// detection: the bridge, deferring and resolving, and the life cycle.
#include "scripts.h"

#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <iterator>
#include <string>
#include <vector>

#include "check.h"
#include "instances.h"
#include "slots.h"

namespace {

// What one hook call found in the bridge.
struct Seen {
  sb::Hook hook;
  uint32_t id;
  std::string from, to, payload;
  double slots[sb::HK_COUNT];
};

// A core whose modules are script blocks, with a host that records each
// call and answers with `answer` (no verdict when unset).
struct Scripted {
  sb::Core core;
  sb::OpenError err;
  bool ok = false;
  double slots[sb::HK_COUNT] = {};
  std::vector<char> buf;
  std::vector<Seen> seen;
  std::function<sb::ScriptCall(const Seen &, int32_t *)> answer;
  std::vector<sb::Outgoing> sent;
  std::vector<sb::LogLine> logs;
  std::vector<sb::Completion> done;
  std::vector<uint32_t> expire_every;  // what the core asked of the host's deadline timer

  explicit Scripted(const std::string &body) {
    sb::Config cfg;
    sb::ConfigError cerr;
    if (!sb::config_parse(body, "<test>", ".", cfg, cerr)) {
      std::fprintf(stderr, "  config: %s\n", cerr.to_string().c_str());
      return;
    }
    sb::Host host;
    host.data = this;
    host.script_call = [](void *d, sb::Hook hook, uint32_t id, int32_t *ret) {
      auto &s = *static_cast<Scripted *>(d);
      Seen c{hook, id, {}, {}, {}, {}};
      std::copy(std::begin(s.slots), std::end(s.slots), std::begin(c.slots));
      size_t fl = static_cast<size_t>(s.slots[sb::HK_FROM_LEN]), tl = static_cast<size_t>(s.slots[sb::HK_TO_LEN]);
      c.from.assign(s.buf.data(), fl);
      c.to.assign(s.buf.data() + fl, tl);
      c.payload.assign(s.buf.data() + fl + tl, static_cast<size_t>(s.slots[sb::HK_PAYLOAD_LEN]));
      s.seen.push_back(c);
      return s.answer ? s.answer(s.seen.back(), ret) : sb::SCRIPT_CALL_NO_VERDICT;
    };
    host.expire_every = [](void *d, uint32_t ms) { static_cast<Scripted *>(d)->expire_every.push_back(ms); };
    ok = sb::core_open(core, cfg, host, err);
    buf.resize(sb::hook_buffer_size(core));
    sb::script_bridge_attach(core, slots, buf.data(), buf.size());
  }
  ~Scripted() { sb::core_close(core); }

  int submit(const char *from, const std::string &frame, sb::SubmitResult &r) {
    return sb::core_submit(core, from, std::strlen(from), reinterpret_cast<const uint8_t *>(frame.data()), frame.size(),
                           -1, r);
  }
  void drain() { sb::core_drain(core, sent, logs, &done); }
  bool logged(const std::string &part) {
    drain();
    for (auto &l : logs)
      if (l.text.find(part) != std::string::npos) return true;
    return false;
  }
  sb::InstanceSnapshot instance(size_t position) {
    std::vector<sb::InstanceSnapshot> all;
    sb::core_instances(core, all);
    return position < all.size() ? all[position] : sb::InstanceSnapshot{};
  }
};

std::string frame(const std::string &to, const std::string &data, int id = 1) {
  return "{\"op\":\"msg\",\"id\":" + std::to_string(id) + ",\"to\":\"" + to + "\",\"data\":\"" + data + "\"}";
}

const char *kTwoScripts = "module first {\n module_script = ./first.js\n}\nmodule second {\n module_script = ./second.js\n}\n";
constexpr unsigned kMessage = 1u << sb::HOOK_MESSAGE;

sb::ScriptCall verdict(int32_t *ret, int32_t v) {
  *ret = v;
  return sb::SCRIPT_CALL_VERDICT;
}

}  // namespace

TEST("a script's message hook finds the message in the hook slots and buffer; its verdict decides") {
  Scripted s(kTwoScripts);
  CHECK(s.ok);
  CHECK(sb::script_attach(s.core, 0, 11, kMessage | (1u << sb::HOOK_CALL)));  // scripts get no call hooks
  CHECK(sb::script_attach(s.core, 1, 12, kMessage));
  CHECK(!sb::script_attach(s.core, 2, 13, kMessage));
  CHECK_EQ(s.instance(0).hooks, kMessage);
  CHECK_EQ(s.instance(0).script_id, uint32_t(11));
  s.answer = [](const Seen &c, int32_t *ret) {
    return verdict(ret, c.id == 12 && c.payload == "drop" ? MESIBO_RESULT_CONSUMED : MESIBO_RESULT_PASS);
  };
  sb::SubmitResult r;
  CHECK_EQ(s.submit("alice", frame("bob", "hello", 7), r), 0);
  CHECK_EQ(r.verdict, MESIBO_RESULT_PASS);
  CHECK_EQ(s.seen.size(), size_t(2));
  CHECK_EQ(int(s.seen[0].hook), int(sb::HOOK_MESSAGE));
  CHECK_EQ(s.seen[0].id, uint32_t(11));
  CHECK_EQ(s.seen[1].id, uint32_t(12));
  CHECK_EQ(s.seen[0].from, std::string("alice"));
  CHECK_EQ(s.seen[0].to, std::string("bob"));
  CHECK_EQ(s.seen[0].payload, std::string("hello"));
  CHECK_EQ(s.seen[0].slots[sb::HK_ID], 7.0);
  CHECK_EQ(s.submit("alice", frame("bob", "drop", 8), r), 0);
  CHECK_EQ(r.verdict, MESIBO_RESULT_CONSUMED);
  CHECK_EQ(s.instance(1).verdicts[sb::VERDICT_CONSUMED], uint64_t(1));
  CHECK_EQ(s.instance(1).times[sb::HOOK_MESSAGE].calls, uint64_t(2));
}

TEST("script_set inside a message hook changes the message the rest of the chain and the delivery see") {
  Scripted s(kTwoScripts);
  CHECK(s.ok);
  sb::script_attach(s.core, 0, 11, kMessage);
  sb::script_attach(s.core, 1, 12, kMessage);
  std::string too_big(s.core.max_payload + 1, 'x');
  int too_large = 0, changed = -1;
  s.answer = [&](const Seen &c, int32_t *ret) {
    if (c.id == 11) {
      too_large = sb::script_set(s.core, too_big.data(), too_big.size(), nullptr);
      sb::ScriptFields f;
      f.type = 3;
      f.flags = 0;
      f.expiry = 60;
      f.refid = 5;
      changed = sb::script_set(s.core, "HELLO!", 6, &f);
    }
    return verdict(ret, MESIBO_RESULT_PASS);
  };
  sb::SubmitResult r;
  CHECK_EQ(s.submit("alice", frame("bob", "hello"), r), 0);
  CHECK_EQ(too_large, int(sb::SCRIPT_TOO_LARGE));
  CHECK_EQ(changed, int(sb::SCRIPT_OK));
  CHECK_EQ(s.seen.size(), size_t(2));
  if (s.seen.size() == 2) {
    CHECK_EQ(s.seen[1].payload, std::string("HELLO!"));
    CHECK_EQ(s.seen[1].slots[sb::HK_REFID], 5.0);
  }
  CHECK_EQ(std::string(r.payload, r.payload_len), std::string("HELLO!"));
  CHECK_EQ(r.params.type, mesibo_uint_t(3));
  CHECK_EQ(r.params.expiry, mesibo_uint_t(60));
  CHECK(std::string(r.frame, r.frame_len).find("HELLO!") != std::string::npos);
  // Outside a hook there is no message to change.
  CHECK_EQ(int(sb::script_set(s.core, "x", 1, nullptr)), int(sb::SCRIPT_UNKNOWN));
}

TEST("a failure of the host's glue is the block's on_error verdict, counted and logged; no number reads as pass") {
  Scripted s("");
  CHECK(s.ok);
  sb::ScriptOptions opts;
  opts.id = 21;
  opts.hooks = kMessage;
  opts.on_error = MESIBO_RESULT_CONSUMED;
  size_t at = 99;
  CHECK_EQ(int(sb::script_add(s.core, "bot", SIZE_MAX, opts, &at)), int(sb::SCRIPT_OK));
  CHECK_EQ(at, size_t(0));
  s.answer = [](const Seen &, int32_t *) { return sb::SCRIPT_CALL_FAILED; };
  sb::SubmitResult r;
  CHECK_EQ(s.submit("alice", frame("bob", "hi"), r), 0);
  CHECK_EQ(r.verdict, MESIBO_RESULT_CONSUMED);
  CHECK_EQ(s.instance(0).errors, uint64_t(1));
  CHECK(s.logged("script module \"bot\" on_message failed in the host; treated as its on_error verdict"));
  s.answer = [](const Seen &, int32_t *ret) {
    *ret = MESIBO_RESULT_CONSUMED;  // not to be read: the call says there is no verdict
    return sb::SCRIPT_CALL_NO_VERDICT;
  };
  CHECK_EQ(s.submit("alice", frame("bob", "hi"), r), 0);
  CHECK_EQ(r.verdict, MESIBO_RESULT_PASS);
  CHECK_EQ(s.instance(0).errors, uint64_t(1));
}

TEST("status and login hooks: the receipt's params, and the user's address, flags and online state, in the slots") {
  Scripted s("module watcher {\n module_script = ./watcher.js\n}\n");
  CHECK(s.ok);
  sb::script_attach(s.core, 0, 5, (1u << sb::HOOK_STATUS) | (1u << sb::HOOK_LOGIN));
  int set_in_status = 0;
  s.answer = [&](const Seen &c, int32_t *) {
    if (c.hook == sb::HOOK_STATUS) set_in_status = sb::script_set(s.core, "x", 1, nullptr);
    return sb::SCRIPT_CALL_NO_VERDICT;
  };
  char alice[] = "alice", bob[] = "bob";
  mesibo_user_t u{};
  u.address = alice;
  u.online = 1;
  u.flags = 4;
  sb::core_dispatch_login(s.core, &u);
  mesibo_message_params_t p{};
  p.id = 9;
  p.status = 2;
  p.from = bob;
  p.to = alice;
  sb::core_dispatch_status(s.core, &p);
  CHECK_EQ(s.seen.size(), size_t(2));
  if (s.seen.size() == 2) {
    CHECK_EQ(int(s.seen[0].hook), int(sb::HOOK_LOGIN));
    CHECK_EQ(s.seen[0].from, std::string("alice"));
    CHECK_EQ(s.seen[0].slots[sb::HK_ONLINE], 1.0);
    CHECK_EQ(s.seen[0].slots[sb::HK_FLAGS], 4.0);
    CHECK_EQ(int(s.seen[1].hook), int(sb::HOOK_STATUS));
    CHECK_EQ(s.seen[1].from, std::string("bob"));
    CHECK_EQ(s.seen[1].to, std::string("alice"));
    CHECK_EQ(s.seen[1].slots[sb::HK_ID], 9.0);
    CHECK_EQ(s.seen[1].slots[sb::HK_STATUS], 2.0);
  }
  CHECK_EQ(set_in_status, int(sb::SCRIPT_UNKNOWN));  // a status hook has no message to change
}

TEST("a script decides later: script_defer in its hook, script_resolve after; a stale handle or a large payload is refused") {
  Scripted s("module later {\n module_script = ./later.js\n}\n");
  CHECK(s.ok);
  sb::script_attach(s.core, 0, 1, kMessage);
  uint64_t handle = 0;
  int in_hook_rc = -9;
  bool in_hook_drain = true;
  s.answer = [&](const Seen &c, int32_t *ret) {
    if (c.to == "carol") {  // another conversation: decides the waiting one from inside its own hook
      in_hook_rc = sb::script_resolve(s.core, handle, MESIBO_RESULT_PASS, nullptr, 0, nullptr, &in_hook_drain);
      return verdict(ret, MESIBO_RESULT_PASS);
    }
    handle = sb::script_defer(s.core);
    return verdict(ret, SWITCHBOARD_RESULT_DEFER);
  };
  sb::SubmitResult r;
  CHECK_EQ(s.submit("alice", frame("bob", "first", 1), r), 0);
  CHECK_EQ(r.verdict, sb::VERDICT_DEFERRED);
  const uint64_t token = r.token;
  CHECK(handle != 0);
  CHECK_EQ(sb::script_defer(s.core), uint64_t(0));  // outside a hook
  bool drain_now = false;
  std::string too_big(s.core.max_payload + 1, 'x');
  CHECK_EQ(int(sb::script_resolve(s.core, handle, MESIBO_RESULT_PASS, too_big.data(), too_big.size(), nullptr, &drain_now)),
           int(sb::SCRIPT_TOO_LARGE));
  CHECK_EQ(int(sb::script_resolve(s.core, handle + 100, MESIBO_RESULT_PASS, nullptr, 0, nullptr, &drain_now)),
           int(sb::SCRIPT_UNKNOWN));
  CHECK_EQ(int(sb::script_resolve(s.core, handle, 7, nullptr, 0, nullptr, &drain_now)), int(sb::SCRIPT_UNKNOWN));
  sb::ScriptFields f;
  f.type = 2;
  CHECK_EQ(int(sb::script_resolve(s.core, handle, MESIBO_RESULT_PASS, "later", 5, &f, &drain_now)), int(sb::SCRIPT_OK));
  CHECK(drain_now);
  CHECK_EQ(int(sb::script_resolve(s.core, handle, MESIBO_RESULT_PASS, nullptr, 0, nullptr, &drain_now)),
           int(sb::SCRIPT_UNKNOWN));  // decided already
  s.drain();
  CHECK_EQ(s.done.size(), size_t(1));
  if (!s.done.empty()) {
    CHECK_EQ(s.done[0].token, token);
    CHECK_EQ(s.done[0].payload, std::string("later"));
    CHECK_EQ(s.done[0].params.type, mesibo_uint_t(2));
  }
  // Decided from inside a hook: the chain is mid-way, so the wake-up drains, not the caller.
  s.done.clear();
  CHECK_EQ(s.submit("alice", frame("bob", "second", 2), r), 0);
  CHECK_EQ(r.verdict, sb::VERDICT_DEFERRED);
  CHECK_EQ(s.submit("alice", frame("carol", "meanwhile", 3), r), 0);
  CHECK_EQ(r.verdict, MESIBO_RESULT_PASS);
  CHECK_EQ(in_hook_rc, int(sb::SCRIPT_OK));
  CHECK(!in_hook_drain);
  s.drain();
  CHECK_EQ(s.done.size(), size_t(1));
  CHECK_EQ(s.instance(0).verdicts[sb::VERDICT_DEFER], uint64_t(2));
}

TEST("the chain changes only between messages: adding, removing and reloading from inside a hook are refused") {
  Scripted s(kTwoScripts);
  CHECK(s.ok);
  sb::script_attach(s.core, 0, 11, kMessage);
  sb::script_attach(s.core, 1, 12, 0);
  int added = 0, removed = 0, committed = 0;
  sb::ReloadBlock reloaded = sb::RELOAD_BLOCK_SWAPPED;
  s.answer = [&](const Seen &, int32_t *ret) {
    size_t at = 0;
    added = sb::script_add(s.core, "late", 0, sb::ScriptOptions{}, &at);
    removed = sb::script_remove(s.core, 12);
    committed = sb::script_commit_reload(s.core, 12);
    sb::Config cfg;
    sb::ConfigError cerr;
    sb::config_parse(kTwoScripts, "<test>", ".", cfg, cerr);
    sb::ReloadedBlock out;
    sb::OpenError err;
    reloaded = sb::core_reload_block(s.core, cfg, 1, 13, out, err);
    return verdict(ret, MESIBO_RESULT_PASS);
  };
  sb::SubmitResult r;
  CHECK_EQ(s.submit("alice", frame("bob", "hi"), r), 0);
  CHECK_EQ(added, int(sb::SCRIPT_BUSY));
  CHECK_EQ(removed, int(sb::SCRIPT_BUSY));
  CHECK_EQ(committed, int(sb::SCRIPT_UNKNOWN));  // nothing staged under 12
  CHECK_EQ(int(reloaded), int(sb::RELOAD_BLOCK_BUSY));
  CHECK_EQ(s.core.chain.size(), size_t(2));
  // Between messages: a script added at the front moves the others along; removing it restores them.
  sb::ScriptOptions opts;
  opts.id = 30;
  size_t at = 9;
  CHECK_EQ(int(sb::script_add(s.core, "front", 0, opts, &at)), int(sb::SCRIPT_OK));
  CHECK_EQ(at, size_t(0));
  CHECK_EQ(s.instance(1).script_id, uint32_t(11));
  CHECK_EQ(s.instance(1).position, size_t(1));
  CHECK_EQ(int(sb::script_remove(s.core, 30)), int(sb::SCRIPT_OK));
  CHECK_EQ(int(sb::script_remove(s.core, 30)), int(sb::SCRIPT_UNKNOWN));
  CHECK_EQ(s.instance(0).script_id, uint32_t(11));
}

TEST("a staged script reload commits in its predecessor's place, keeps its counters, or aborts and leaves it") {
  Scripted s(kTwoScripts);
  CHECK(s.ok);
  sb::script_attach(s.core, 0, 11, kMessage);
  sb::script_attach(s.core, 1, 12, kMessage);
  s.answer = [](const Seen &, int32_t *ret) { return verdict(ret, MESIBO_RESULT_PASS); };
  sb::SubmitResult r;
  s.submit("alice", frame("bob", "hi"), r);
  sb::Config cfg;
  sb::ConfigError cerr;
  CHECK(sb::config_parse(kTwoScripts, "<test>", ".", cfg, cerr));
  sb::ReloadedBlock out;
  sb::OpenError err;
  CHECK_EQ(int(sb::core_reload_block(s.core, cfg, 5, 13, out, err)), int(sb::RELOAD_BLOCK_MISMATCH));
  CHECK_EQ(int(sb::core_reload_block(s.core, cfg, 1, 13, out, err)), int(sb::RELOAD_BLOCK_STAGED));
  sb::script_abort_reload(s.core, 13);
  CHECK_EQ(int(sb::script_commit_reload(s.core, 13)), int(sb::SCRIPT_UNKNOWN));  // aborted: nothing staged
  CHECK_EQ(s.instance(1).script_id, uint32_t(12));
  CHECK_EQ(int(sb::core_reload_block(s.core, cfg, 1, 14, out, err)), int(sb::RELOAD_BLOCK_STAGED));
  CHECK_EQ(int(sb::script_set_hooks(s.core, 14, kMessage)), int(sb::SCRIPT_OK));  // its init said so
  CHECK_EQ(int(sb::script_commit_reload(s.core, 14)), int(sb::SCRIPT_OK));
  CHECK_EQ(s.instance(1).script_id, uint32_t(14));
  CHECK_EQ(s.instance(1).times[sb::HOOK_MESSAGE].calls, uint64_t(1));  // the counters carry over
  s.seen.clear();
  s.submit("alice", frame("bob", "again"), r);
  CHECK_EQ(s.seen.size(), size_t(2));
  if (s.seen.size() == 2) CHECK_EQ(s.seen[1].id, uint32_t(14));
}

TEST("script_send needs a destination and a payload within max_message_size, and enters the chain after the sender") {
  Scripted s(kTwoScripts);
  CHECK(s.ok);
  sb::script_attach(s.core, 0, 11, kMessage);
  sb::script_attach(s.core, 1, 12, kMessage);
  char bob[] = "bob";
  mesibo_message_params_t p{};
  CHECK_EQ(int(sb::script_send(s.core, 11, p, "x", 1)), int(sb::SCRIPT_NO_DESTINATION));
  p.to = bob;
  std::string too_big(s.core.max_payload + 1, 'x');
  CHECK_EQ(int(sb::script_send(s.core, 11, p, too_big.data(), too_big.size())), int(sb::SCRIPT_TOO_LARGE));
  CHECK_EQ(int(sb::script_send(s.core, 99, p, "x", 1)), int(sb::SCRIPT_UNKNOWN));
  CHECK_EQ(int(sb::script_send(s.core, 11, p, "news", 4)), int(sb::SCRIPT_OK));
  s.drain();
  CHECK_EQ(s.sent.size(), size_t(1));
  CHECK_EQ(s.seen.size(), size_t(1));
  if (s.seen.size() == 1) {
    CHECK_EQ(s.seen[0].id, uint32_t(12));  // not the sender itself
    CHECK_EQ(s.seen[0].from, std::string("first"));
    CHECK_EQ(s.seen[0].payload, std::string("news"));
  }
}

TEST("script_log keeps lines at or under the script's level; the level follows the server unless it is the script's own") {
  Scripted s("");
  CHECK(s.ok);
  sb::ScriptOptions own;
  own.id = 31;
  own.own_log_level = true;
  own.log_level = 1;
  sb::ScriptOptions follows;
  follows.id = 32;
  size_t at = 0;
  sb::script_add(s.core, "own", SIZE_MAX, own, &at);
  sb::script_add(s.core, "follows", SIZE_MAX, follows, &at);
  sb::core_set_log_level(s.core, 3);
  int level = -1;
  CHECK(sb::script_log_level(s.core, 32, &level));
  CHECK_EQ(level, 2);
  CHECK(sb::script_log_level(s.core, 31, &level));
  CHECK_EQ(level, 1);
  CHECK(!sb::script_log_level(s.core, 99, &level));
  sb::script_log(s.core, 31, 2, "too chatty");
  sb::script_log(s.core, 31, 1, "kept at 1");
  sb::script_log(s.core, 31, 0, "kept at 0");
  CHECK(!s.logged("too chatty"));
  CHECK(s.logged("kept at 1"));
  CHECK(s.logged("kept at 0"));
  sb::script_count_error(s.core, 31);
  sb::script_count_error(s.core, 99);
  CHECK_EQ(s.instance(0).errors, uint64_t(1));
}

TEST("a closed core knows no script") {
  Scripted s(kTwoScripts);
  CHECK(s.ok);
  sb::script_attach(s.core, 0, 11, kMessage);
  sb::core_close(s.core);
  char bob[] = "bob";
  mesibo_message_params_t p{};
  p.to = bob;
  size_t at = 0;
  bool drain_now = false;
  int level = 0;
  CHECK(!sb::script_attach(s.core, 0, 11, kMessage));
  CHECK_EQ(int(sb::script_set_hooks(s.core, 11, kMessage)), int(sb::SCRIPT_UNKNOWN));
  CHECK_EQ(int(sb::script_add(s.core, "late", 0, sb::ScriptOptions{}, &at)), int(sb::SCRIPT_UNKNOWN));
  CHECK_EQ(int(sb::script_send(s.core, 11, p, "x", 1)), int(sb::SCRIPT_UNKNOWN));
  CHECK_EQ(int(sb::script_resolve(s.core, 1, MESIBO_RESULT_PASS, nullptr, 0, nullptr, &drain_now)), int(sb::SCRIPT_UNKNOWN));
  CHECK_EQ(sb::script_defer(s.core), uint64_t(0));
  CHECK(!sb::script_log_level(s.core, 11, &level));
}

TEST("the host's deadline timer runs while a message waits for a decision, and stops when none does") {
  Scripted s("module later {\n module_script = ./later.js\n timeout = 1ms\n}\n");
  CHECK(s.ok);
  sb::script_attach(s.core, 0, 1, kMessage);
  s.answer = [&](const Seen &c, int32_t *ret) {
    if (c.payload != "wait") return verdict(ret, MESIBO_RESULT_PASS);
    sb::script_defer(s.core);
    return verdict(ret, SWITCHBOARD_RESULT_DEFER);
  };
  sb::SubmitResult r;
  CHECK_EQ(s.submit("alice", frame("bob", "now"), r), 0);
  CHECK(s.expire_every.empty());  // nothing waits: no timer
  CHECK_EQ(s.submit("alice", frame("bob", "wait", 2), r), 0);
  CHECK_EQ(s.submit("alice", frame("bob", "behind it", 3), r), 0);
  CHECK_EQ(s.expire_every.size(), size_t(1));
  CHECK(!s.expire_every.empty() && s.expire_every[0] > 0);
  s.drain();
  CHECK_EQ(s.expire_every.size(), size_t(1));  // still waiting: no change to tell
  // What the timer does: past the deadline, the wait ends in the block's on_error verdict.
  usleep(5000);
  CHECK_EQ(sb::core_expire(s.core, sb::now_ns()), size_t(1));
  s.drain();
  CHECK_EQ(s.done.size(), size_t(2));
  CHECK_EQ(s.expire_every.size(), size_t(2));
  if (s.expire_every.size() == 2) CHECK_EQ(s.expire_every[1], uint32_t(0));
}
