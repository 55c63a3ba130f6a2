// The chain: every message runs through on_message of each instance in
// configuration order; statuses, logins and calls go to the instances that
// set those hooks. Also the queues that bring module-sent messages and log
// lines from any thread to the loop thread.
#include <time.h>

#include <cstdarg>
#include <cstdio>
#include <cstring>

#include "core.h"
#include "crash_trace.h"
#include "scripts.h"
#include "vformat.h"

namespace sb {

namespace {

// A callback that holds the loop this long gets a warning: modules must not
// block, and the log is where their authors will look.
constexpr uint64_t kSlowCallbackNs = 50ull * 1000 * 1000;

// The thresholds record() compares with, in ticks, so that counting a call
// converts nothing; one static, so one initialisation guard per call.
struct TickBounds {
  uint64_t slow;
  uint64_t bucket[kHookBuckets];
  TickBounds() : slow(static_cast<uint64_t>(kSlowCallbackNs / ns_per_tick())) {
    for (size_t i = 0; i < kHookBuckets; ++i) bucket[i] = static_cast<uint64_t>(kHookBucketBounds[i] * 1e9 / ns_per_tick());
  }
};

// Records one callback that started at `started` and returns the time it
// ended, which the chain reuses as the next module's start.
uint64_t record(Core &core, Instance &inst, Hook h, uint64_t started) {
  static const TickBounds bounds;
  uint64_t now = ticks();
  uint64_t t = now - started;
  HookStats &s = inst.stats[h];
  ++s.calls;
  s.total_ticks += t;
  if (t > s.max_ticks) s.max_ticks = t;
  size_t b = 0;
  while (b < kHookBuckets && t > bounds.bucket[b]) ++b;
  ++s.buckets[b];
  if (t > bounds.slow)
    core_logf(core, 0, "warning: module \"%s\" %s took %.0f ms; callbacks run on the event loop and must not block",
              inst.name.c_str(), hook_name(h), static_cast<double>(t) * ns_per_tick() / 1e6);
  return now;
}

const char *policy_name(int verdict) { return verdict == MESIBO_RESULT_CONSUMED ? "consume" : "pass"; }

// An on_message call that took `t` ticks, more than the instance's budget:
// one strike; budget_strikes of them within budget_window trip the bypass.
// Off the per-message path: only over-budget calls get here.
void budget_strike(Core &core, Instance &inst, uint64_t t) {
  ++inst.over_budget;
  uint64_t now = now_ns();
  if (inst.strikes == 0 || now - inst.strike_window_start > inst.budget_window_ns) {
    inst.strikes = 0;
    inst.strike_window_start = now;
  }
  if (++inst.strikes < inst.budget_strikes) return;
  inst.strikes = 0;
  inst.bypassed = true;
  inst.bypass_until = now + inst.budget_cooldown_ns;
  ++inst.budget_trips;
  core_log_event(core, "module.bypassed", inst.name,
                 "warning: module \"%s\" on_message took %.3f ms, over its budget of %.3f ms, %u times within %.0f s; "
                 "bypassed for %.0f s (on_over_budget = %s: its messages are %s)",
                 inst.name.c_str(), static_cast<double>(t) * ns_per_tick() / 1e6,
                 static_cast<double>(inst.budget_ns) / 1e6, inst.budget_strikes,
                 static_cast<double>(inst.budget_window_ns) / 1e9, static_cast<double>(inst.budget_cooldown_ns) / 1e9,
                 policy_name(inst.on_over_budget),
                 inst.on_over_budget == MESIBO_RESULT_CONSUMED ? "dropped" : "passed on without it");
}

// A bypassed instance: true while its cool-down lasts (the message skips
// it); false once the cool-down is over, and the module gets calls again.
bool budget_still_bypassed(Core &core, Instance &inst) {
  if (now_ns() < inst.bypass_until) return true;
  inst.bypassed = false;
  inst.strikes = 0;
  core_log_event(core, "module.resumed", inst.name,
                 "module \"%s\" gets messages again after its %.0f s budget cool-down (%lu messages bypassed it so far)",
                 inst.name.c_str(), static_cast<double>(inst.budget_cooldown_ns) / 1e9,
                 static_cast<unsigned long>(inst.bypassed_msgs));
  return false;
}

// Tells the host when the deadline check it runs (core_expire) should run
// at another interval: a message started waiting for a deferred decision,
// or the last one stopped. A compare when nothing changed.
void tell_expire_interval(Core &core) {
  uint32_t every = core_expire_interval_ms(core);
  if (every == core.expire_every) return;
  core.expire_every = every;
  if (core.host.expire_every) core.host.expire_every(core.host.data, every);
}

void wake(Core &core, std::unique_lock<std::mutex> &lock) {
  bool need = !core.wake_pending;
  core.wake_pending = true;
  Host host = core.host;  // read under the lock: closing clears it
  lock.unlock();
  if (need && host.wake) host.wake(host.data);
}

// The form of `frame` for an out_format: JSON first when both are wanted.
WireFormat first_format(int out_format, WireFormat in) {
  if (out_format == WIRE_JSON || out_format == OUT_BOTH) return WIRE_JSON;
  if (out_format == WIRE_BINARY) return WIRE_BINARY;
  return in;
}

}  // namespace

// From 10 µs (a module that does real work) to 5 s (past the default
// deferred timeout): a native module's plain call is far below the first
// bound, and what operators look for is the tail.
const double kHookBucketBounds[kHookBuckets] = {1e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 5e-2, 0.25, 1.0};

uint64_t now_ns() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

double ns_per_tick() {
  static const double ratio = [] {
#if defined(__x86_64__)
    uint64_t n0 = now_ns(), t0 = ticks();
    uint64_t n1;
    do n1 = now_ns();
    while (n1 - n0 < 2000000);  // 2 ms: good to well under 1 %
    uint64_t t1 = ticks();
    return t1 > t0 ? static_cast<double>(n1 - n0) / static_cast<double>(t1 - t0) : 1.0;
#else
    return 1.0;
#endif
  }();
  return ratio;
}

const char *hook_name(Hook h) {
  switch (h) {
    case HOOK_MESSAGE: return "on_message";
    case HOOK_STATUS: return "on_message_status";
    case HOOK_LOGIN: return "on_login";
    case HOOK_CALL: return "on_call";
    case HOOK_CALL_STATUS: return "on_call_status";
    default: return "?";
  }
}

void chain_replace_payload(ChainMsg &m, const char *data, size_t len) {
  std::string &own = *m.own;
  own.assign(data ? data : "", data ? len : 0);
  own.push_back('\0');  // a native module later in the chain may read it as a C string
  m.payload = &own[0];
  m.len = len;
}

int chain_run(Core &core, size_t start, ChainMsg &msg, size_t *stopped) {
  // A module can only shorten a payload in place by writing a NUL at the new
  // end (the ABI passes len by value). That reading is only safe for payloads
  // that had no NUL to begin with; binary payloads keep their length.
  bool text = std::memchr(msg.payload, 0, msg.len) == nullptr;
  const size_t n = core.chain.size();
  uint64_t t0 = ticks();
  for (size_t i = start; i < n; ++i) {
    Instance &inst = *core.chain[i];
    mesibo_module_t *m = &inst.slot->mod;
    mesibo_int_t r;
    core.running_handle = 0;
    // Only an instance with a budget is ever bypassed.
    if (inst.bypassed && budget_still_bypassed(core, inst)) {
      ++inst.bypassed_msgs;
      if (inst.on_over_budget == MESIBO_RESULT_CONSUMED) return MESIBO_RESULT_CONSUMED;
      continue;
    }
    const uint64_t started = t0;
    if (inst.script) {
      if (!(inst.script_hooks & (1u << HOOK_MESSAGE)) || !core.host.script_call) continue;
      if (!inst.script_to.empty() && (msg.p->groupid || !msg.p->to || inst.script_to != msg.p->to)) continue;
      const char *before = msg.payload;
      core.running = &inst;
      r = script_message(core, inst, msg);
      core.running = nullptr;
      t0 = record(core, inst, HOOK_MESSAGE, t0);
      if (inst.budget_ticks && t0 - started > inst.budget_ticks) budget_strike(core, inst, t0 - started);
      if (msg.payload != before) text = std::memchr(msg.payload, 0, msg.len) == nullptr;
    } else {
      if (!m->on_message) continue;
      core.running = &inst;
      try {
        InModule in(inst.sites[HOOK_MESSAGE]);
        r = m->on_message(m, msg.p, msg.payload, static_cast<mesibo_uint_t>(msg.len));
      } catch (...) {
        r = MESIBO_RESULT_PASS;
        core_logf(core, 0, "module \"%s\" on_message threw a C++ exception; the message was passed on",
                  inst.name.c_str());
      }
      core.running = nullptr;
      t0 = record(core, inst, HOOK_MESSAGE, t0);
      if (inst.budget_ticks && t0 - started > inst.budget_ticks) budget_strike(core, inst, t0 - started);
      if (text) {
        if (const void *nul = std::memchr(msg.payload, 0, msg.len)) msg.len = static_cast<const char *>(nul) - msg.payload;
      }
    }
    if (r == SWITCHBOARD_RESULT_DEFER) {
      if (core.running_handle) {
        ++inst.verdicts[VERDICT_DEFER];
        *stopped = i;
        return SWITCHBOARD_RESULT_DEFER;
      }
      if (!inst.warned_defer) {
        inst.warned_defer = true;
        core_logf(core, 0,
                  "module \"%s\" on_message returned SWITCHBOARD_RESULT_DEFER without taking a handle with "
                  "switchboard_defer; treating it as PASS (logged once)",
                  inst.name.c_str());
      }
      r = MESIBO_RESULT_PASS;
    } else if (core.running_handle) {
      // It took a handle and decided at once after all: the handle is void.
      std::lock_guard<std::mutex> lock(core.mu);
      core.live_handles.erase(core.running_handle);
      core.running_handle = 0;
    }
    if (r == MESIBO_RESULT_CONSUMED) {
      ++inst.verdicts[VERDICT_CONSUMED];
      return MESIBO_RESULT_CONSUMED;
    }
    ++inst.verdicts[VERDICT_PASS];
    if (r != MESIBO_RESULT_PASS && !inst.warned_result) {
      inst.warned_result = true;
      core_logf(core, 0,
                "module \"%s\" on_message returned %ld, which is neither MESIBO_RESULT_PASS (0) nor "
                "MESIBO_RESULT_CONSUMED (1); treating it as PASS (logged once)",
                inst.name.c_str(), static_cast<long>(r));
    }
  }
  return MESIBO_RESULT_PASS;
}

namespace {

// Messages from one sender to one destination (a user, or a group) form a
// conversation: while one of them waits for a deferred decision, the later
// ones wait behind it.
void conv_key(std::string &key, const char *from, const char *to, mesibo_uint_t groupid) {
  key.clear();
  if (groupid) {
    key.push_back('g');
    key.append(std::to_string(groupid));
  } else {
    key.push_back('u');
    key.append(to ? to : "");
  }
  key.push_back('\x1f');
  key.append(from ? from : "");
}

std::unique_ptr<Pending> snapshot(const mesibo_message_params_t &p, const char *payload, size_t len) {
  auto pd = std::make_unique<Pending>();
  pd->params = p;
  pd->to = p.to ? p.to : "";
  pd->from = p.from ? p.from : "";
  pd->params.to = nullptr;
  pd->params.from = nullptr;
  pd->payload.assign(payload, len);
  return pd;
}

// Registers `pd` as waiting for the handle the instance at `stopped` took.
void park(Core &core, Pending &pd, size_t stopped) {
  pd.handle = core.running_handle;
  core.running_handle = 0;
  pd.at = core.chain[stopped].get();
  pd.next = stopped + 1;
  pd.deadline = now_ns() + pd.at->timeout_ns;
  core.waiting[pd.handle] = &pd;
}

// Encodes a finished message: the delivery (PASS) in out_format, and the
// sender's "sent" status, after running on_message_status for it.
void encode_outcome(Core &core, mesibo_message_params_t &p, const char *payload, size_t len, int in_format,
                    int out_format, int verdict, std::string &frame, size_t &frame_len, std::string &frame2,
                    size_t &frame2_len, std::string &ack, size_t &ack_len) {
  frame_len = frame2_len = 0;
  if (verdict == MESIBO_RESULT_PASS) {
    frame_len = wire_encode_message(first_format(out_format, static_cast<WireFormat>(in_format)), p, payload, len, frame);
    if (out_format == OUT_BOTH) frame2_len = wire_encode_message(WIRE_BINARY, p, payload, len, frame2);
  }
  // "Sent": the sender hears it about the destination, in its own form.
  mesibo_message_params_t sent{};
  sent.id = p.id;
  sent.groupid = p.groupid;
  sent.status = MSGSTATUS_SENT;
  sent.from = p.to;
  sent.to = p.from;
  core_dispatch_status(core, &sent);
  ack_len = wire_encode_status(static_cast<WireFormat>(in_format), sent, ack);
}

void complete(Core &core, Pending &pd, int verdict, std::vector<Outgoing> &deliveries,
              std::vector<Completion> *completions) {
  if (pd.origin == ORIGIN_MODULE) {
    if (verdict != MESIBO_RESULT_PASS) return;
    Outgoing o;
    o.module = std::move(pd.module);
    o.params = pd.params;
    o.params.to = o.params.from = nullptr;
    o.to = std::move(pd.to);
    o.from = std::move(pd.from);
    o.payload = std::move(pd.payload);
    deliveries.push_back(std::move(o));
    return;
  }
  if (!completions) return;
  Completion c;
  c.token = pd.token;
  c.verdict = verdict;
  c.format = pd.in_format;
  c.out_format = pd.out_format;
  c.to = std::move(pd.to);
  c.from = std::move(pd.from);
  c.payload = std::move(pd.payload);
  c.params = pd.params;
  c.params.to = &c.to[0];
  c.params.from = &c.from[0];
  size_t fl, f2l, al;
  encode_outcome(core, c.params, c.payload.data(), c.payload.size(), c.format, c.out_format, verdict, c.frame, fl,
                 c.frame2, f2l, c.ack, al);
  c.frame.resize(fl);
  c.frame2.resize(f2l);
  c.ack.resize(al);
  c.params.to = c.params.from = nullptr;  // the strings move with the Completion
  completions->push_back(std::move(c));
}

// Runs the conversation `key` forward: every message at its head that is
// not waiting for a decision goes on through the chain and is completed.
void advance(Core &core, const std::string &key, std::vector<Outgoing> &deliveries,
             std::vector<Completion> *completions) {
  auto it = core.conversations.find(key);
  if (it == core.conversations.end()) return;
  auto &q = it->second;
  while (!q.empty() && !core.closed) {
    Pending &h = *q.front();
    if (h.handle) return;  // still waiting
    int verdict = MESIBO_RESULT_CONSUMED;
    if (!h.consumed) {
      h.params.to = &h.to[0];
      h.params.from = &h.from[0];
      h.payload.push_back('\0');
      ChainMsg cm{&h.params, &h.payload[0], h.payload.size() - 1, &h.payload};
      size_t stopped = 0;
      verdict = chain_run(core, h.next, cm, &stopped);
      h.payload.resize(cm.len);
      h.params.to = h.params.from = nullptr;
      if (verdict == SWITCHBOARD_RESULT_DEFER) {
        park(core, h, stopped);
        return;
      }
    }
    complete(core, h, verdict, deliveries, completions);
    q.pop_front();
  }
  core.conversations.erase(it);
}

// Queues a message behind its conversation if that one is waiting; returns
// the queued entry, or nullptr when the message may run now.
Pending *queue_if_busy(Core &core, const mesibo_message_params_t &p, const char *payload, size_t len) {
  if (core.conversations.empty()) return nullptr;
  conv_key(core.conv_scratch, p.from, p.to, p.groupid);
  auto it = core.conversations.find(core.conv_scratch);
  if (it == core.conversations.end()) return nullptr;
  auto pd = snapshot(p, payload, len);
  pd->conv = core.conv_scratch;
  Pending *raw = pd.get();
  it->second.push_back(std::move(pd));
  return raw;
}

// A message that deferred at `stopped` starts waiting, at the head of its
// (new) conversation queue.
Pending *start_waiting(Core &core, const mesibo_message_params_t &p, const char *payload, size_t len, size_t stopped) {
  auto pd = snapshot(p, payload, len);
  conv_key(pd->conv, p.from, p.to, p.groupid);
  park(core, *pd, stopped);
  Pending *raw = pd.get();
  core.conversations[raw->conv].push_back(std::move(pd));
  return raw;
}

}  // namespace

int core_submit(Core &core, const char *from, size_t from_len, const uint8_t *frame, size_t len, int out_format,
                SubmitResult &res, bool status_frame) {
  WireMessage &m = core.msg;
  core.refused_detail.clear();
  int rc = wire_decode(frame, len, core.max_payload, m, core.scratch, &core.refused_detail);
  if (rc != WIRE_OK) return rc;

  core.from_buf.assign(from, from_len);  // NUL-terminated by std::string; capacity reused
  mesibo_message_params_t &p = res.params;
  p = mesibo_message_params_t{};
  p.id = m.id;
  p.to = m.to;
  p.from = &core.from_buf[0];
  res.op = m.op;
  res.format = m.format;
  res.token = 0;
  res.frame2 = nullptr;
  res.frame2_len = 0;

  if (m.op == WIRE_OP_STATUS) {
    // A receipt from `from` about message m.id that m.to sent: the status
    // frame goes to m.to and names `from` as the peer.
    p.status = m.status;
    core_dispatch_status(core, &p);
    res.verdict = MESIBO_RESULT_PASS;
    res.payload = nullptr;
    res.payload_len = 0;
    res.ack = nullptr;
    res.ack_len = 0;
    if (!status_frame) {
      res.frame = nullptr;
      res.frame_len = 0;
      return WIRE_OK;
    }
    res.frame_len = wire_encode_status(first_format(out_format, m.format), p, core.out);
    res.frame = core.out.data();
    if (out_format == OUT_BOTH) {
      res.frame2_len = wire_encode_status(WIRE_BINARY, p, core.out2);
      res.frame2 = core.out2.data();
    }
    return WIRE_OK;
  }

  p.refid = m.refid;
  p.groupid = m.groupid;
  p.flags = m.flags;
  p.type = m.type;
  p.expiry = m.expiry;
  if (m.to_len && core.dest_online) {
    if (core.dest_online(core.dest_online_data, m.to, m.to_len)) p.uflags |= MOD_MESIBO_UFLAG_DESTONLINE;
  } else if (m.to_len && !core.online.empty()) {
    core.online_key.assign(m.to, m.to_len);
    auto it = core.online.find(core.online_key);
    if (it != core.online.end() && it->second > 0) p.uflags |= MOD_MESIBO_UFLAG_DESTONLINE;
  }

  ChainMsg cm{&p, m.payload, m.payload_len, &core.payload_own};
  Pending *pd = queue_if_busy(core, p, cm.payload, cm.len);
  int verdict = MESIBO_RESULT_PASS;
  if (!pd) {
    size_t stopped = 0;
    verdict = chain_run(core, 0, cm, &stopped);
    if (verdict == SWITCHBOARD_RESULT_DEFER) pd = start_waiting(core, p, cm.payload, cm.len, stopped);
  }
  res.payload = cm.payload;
  res.payload_len = cm.len;
  if (pd) {
    // Nothing to route yet: a Completion with this token comes from core_drain.
    pd->origin = ORIGIN_CLIENT;
    pd->token = core.next_token++;
    pd->in_format = m.format;
    pd->out_format = out_format;
    res.verdict = VERDICT_DEFERRED;
    res.token = pd->token;
    res.frame = nullptr;
    res.frame_len = 0;
    res.ack = nullptr;
    res.ack_len = 0;
    tell_expire_interval(core);
    return WIRE_OK;
  }
  res.verdict = verdict;
  size_t fl, f2l, al;
  encode_outcome(core, p, cm.payload, cm.len, m.format, out_format, verdict, core.out, fl, core.out2, f2l, core.ack,
                 al);
  res.frame = verdict == MESIBO_RESULT_PASS ? core.out.data() : nullptr;
  res.frame_len = fl;
  if (f2l) {
    res.frame2 = core.out2.data();
    res.frame2_len = f2l;
  }
  res.ack = core.ack.data();
  res.ack_len = al;
  return WIRE_OK;
}

uint64_t core_take_handle(Core &core, Instance *inst) {
  // Another thread must not even read `running`: the loop thread writes it.
  if (!inst || std::this_thread::get_id() != core.loop_thread || core.running != inst) return 0;
  if (core.running_handle) return core.running_handle;
  std::lock_guard<std::mutex> lock(core.mu);
  uint64_t h = core.next_handle++;
  core.live_handles.insert(h);
  core.running_handle = h;
  return h;
}

int core_resolve(Core &core, Resolution r, bool wake_host) {
  if (r.verdict != MESIBO_RESULT_PASS && r.verdict != MESIBO_RESULT_CONSUMED) return -1;
  std::unique_lock<std::mutex> lock(core.mu);
  if (core.closed || !core.live_handles.erase(r.handle)) return -1;
  core.resolutions.push_back(std::move(r));
  if (wake_host) wake(core, lock);
  return 0;
}

size_t core_expire(Core &core, uint64_t now) {
  size_t n = 0;
  for (auto &kv : core.waiting) {
    Pending &pd = *kv.second;
    if (pd.deadline > now) continue;
    Resolution r;
    r.handle = kv.first;
    r.verdict = pd.at ? pd.at->on_error : MESIBO_RESULT_PASS;
    r.timed_out = true;
    {
      std::lock_guard<std::mutex> lock(core.mu);
      if (!core.live_handles.erase(r.handle)) continue;  // decided in time; the decision is queued
      core.resolutions.push_back(std::move(r));
    }
    ++n;
  }
  if (n) {
    std::unique_lock<std::mutex> lock(core.mu);
    wake(core, lock);
  }
  return n;
}

// A deadline is met within this much of its time: the check is a walk of
// the waiting messages, cheap at this rate.
constexpr uint32_t kExpireIntervalMs = 20;

uint32_t core_expire_interval_ms(const Core &core) { return core.waiting.empty() ? 0 : kExpireIntervalMs; }

size_t core_waiting(const Core &core) {
  size_t n = 0;
  for (const auto &kv : core.conversations) n += kv.second.size();
  return n;
}

size_t core_status(Core &core, mesibo_message_params_t *p, int format) {
  core_dispatch_status(core, p);
  return wire_encode_status(format == WIRE_BINARY ? WIRE_BINARY : WIRE_JSON, *p, core.ack);
}

void core_dispatch_status(Core &core, mesibo_message_params_t *p) {
  // Modules written against older documentation declare a third `status`
  // argument; passing it too keeps them working (extra arguments are harmless
  // in the C calling convention).
  using three_args = mesibo_int_t (*)(mesibo_module_t *, mesibo_message_params_t *, mesibo_uint_t);
  for (auto &ip : core.chain) {
    Instance &inst = *ip;
    if (inst.script) {
      if (!(inst.script_hooks & (1u << HOOK_STATUS)) || !core.host.script_call) continue;
      uint64_t t0 = ticks();
      script_status(core, inst, p);
      record(core, inst, HOOK_STATUS, t0);
      continue;
    }
    mesibo_module_t *m = &inst.slot->mod;
    if (!m->on_message_status) continue;
    uint64_t t0 = ticks();
    try {
      InModule in(inst.sites[HOOK_STATUS]);
      reinterpret_cast<three_args>(reinterpret_cast<void *>(m->on_message_status))(m, p, p->status);
    } catch (...) {
      core_logf(core, 0, "module \"%s\" on_message_status threw a C++ exception", inst.name.c_str());
    }
    record(core, inst, HOOK_STATUS, t0);
  }
}

void core_dispatch_login(Core &core, mesibo_user_t *user) {
  if (user->address) {
    if (user->online) {
      ++core.online[user->address];
    } else {
      auto it = core.online.find(user->address);
      if (it != core.online.end() && --it->second <= 0) core.online.erase(it);
    }
  }
  for (auto &ip : core.chain) {
    Instance &inst = *ip;
    if (inst.script) {
      if (!(inst.script_hooks & (1u << HOOK_LOGIN)) || !core.host.script_call) continue;
      uint64_t t0 = ticks();
      script_login(core, inst, user);
      record(core, inst, HOOK_LOGIN, t0);
      continue;
    }
    mesibo_module_t *m = &inst.slot->mod;
    if (!m->on_login) continue;
    uint64_t t0 = ticks();
    try {
      InModule in(inst.sites[HOOK_LOGIN]);
      m->on_login(m, user);
    } catch (...) {
      core_logf(core, 0, "module \"%s\" on_login threw a C++ exception", inst.name.c_str());
    }
    record(core, inst, HOOK_LOGIN, t0);
  }
}

static void dispatch_simple(Core &core, Hook h) {
  for (auto &ip : core.chain) {
    Instance &inst = *ip;
    if (inst.script) continue;
    mesibo_module_t *m = &inst.slot->mod;
    mesibo_int_t (*fn)(mesibo_module_t *) = h == HOOK_CALL ? m->on_call : m->on_call_status;
    if (!fn) continue;
    uint64_t t0 = ticks();
    try {
      InModule in(inst.sites[h]);
      fn(m);
    } catch (...) {
      core_logf(core, 0, "module \"%s\" %s threw a C++ exception", inst.name.c_str(), hook_name(h));
    }
    record(core, inst, h, t0);
  }
}

void core_dispatch_call(Core &core) { dispatch_simple(core, HOOK_CALL); }
void core_dispatch_call_status(Core &core) { dispatch_simple(core, HOOK_CALL_STATUS); }

int core_send_from_module(Instance *inst, const mesibo_message_params_t *p, const char *payload, size_t len) {
  Core &core = *inst->core;
  if (core.closed) return MESIBO_RESULT_FAIL;
  Outgoing o;
  o.start = inst->position + 1;
  o.module = inst->name;
  o.params = *p;
  o.to = p->to ? p->to : "";
  o.from = p->from ? p->from : inst->name;
  o.payload.assign(payload ? payload : "", payload ? len : 0);
  o.params.to = nullptr;
  o.params.from = nullptr;
  if (o.params.id == 0) o.params.id = core.next_id.fetch_add(1, std::memory_order_relaxed);
  std::unique_lock<std::mutex> lock(core.mu);
  core.outbox.push_back(std::move(o));
  wake(core, lock);
  return MESIBO_RESULT_OK;
}

void core_log(Core &core, const std::string &module, int level, std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  std::unique_lock<std::mutex> lock(core.mu);
  core.logs.push_back(LogLine{module, level, std::move(text), {}, {}});
  wake(core, lock);
}

namespace {
// The cores whose modules are loaded, for the crash handler. A fixed table
// of atomics: the handler may read it at any instant.
constexpr size_t kCrashCores = 16;
std::atomic<Core *> g_crash_cores[kCrashCores];

// Signal context: try_lock only (the loop thread may hold the lock, inside
// core_log), and the lines are read, not copied.
void crash_pending_logs(CrashLogWriter write) {
  for (auto &slot : g_crash_cores) {
    Core *c = slot.load(std::memory_order_relaxed);
    if (!c || !c->mu.try_lock()) continue;
    for (const LogLine &l : c->logs) write(l.module.c_str(), l.text.data(), l.text.size());
    c->mu.unlock();
  }
}
}  // namespace

void core_crash_logs_track(Core &core) {
  crash_trace_set_log_source(crash_pending_logs);
  for (auto &slot : g_crash_cores) {
    Core *expected = nullptr;
    if (slot.compare_exchange_strong(expected, &core)) return;
  }
}

void core_crash_logs_untrack(Core &core) {
  for (auto &slot : g_crash_cores) {
    Core *expected = &core;
    slot.compare_exchange_strong(expected, nullptr);
  }
}

void core_logf(Core &core, int level, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::string text = vformat(fmt, ap);
  va_end(ap);
  core_log(core, std::string(), level, std::move(text));
}

void core_log_event(Core &core, const char *event, const std::string &subject, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::string text = vformat(fmt, ap);
  va_end(ap);
  std::unique_lock<std::mutex> lock(core.mu);
  core.logs.push_back(LogLine{std::string(), 0, std::move(text), event, subject});
  wake(core, lock);
}

void core_drain(Core &core, std::vector<Outgoing> &deliveries, std::vector<LogLine> &logs,
                std::vector<Completion> *completions) {
  std::vector<Outgoing> batch;
  std::vector<Resolution> decided;
  {
    std::lock_guard<std::mutex> lock(core.mu);
    batch.swap(core.outbox);
    decided.swap(core.resolutions);
    core.wake_pending = false;
  }
  for (auto &o : batch) {
    if (core.closed) break;
    o.params.to = &o.to[0];
    o.params.from = &o.from[0];
    Pending *pd = queue_if_busy(core, o.params, o.payload.data(), o.payload.size());
    int verdict = MESIBO_RESULT_CONSUMED;
    if (!pd) {
      // The payload buffer must be writable and may be shortened in place; it
      // is this message's own copy.
      o.payload.push_back('\0');
      ChainMsg cm{&o.params, &o.payload[0], o.payload.size() - 1, &o.payload};
      size_t stopped = 0;
      verdict = chain_run(core, o.start, cm, &stopped);
      o.payload.resize(cm.len);
      if (verdict == SWITCHBOARD_RESULT_DEFER) pd = start_waiting(core, o.params, o.payload.data(), o.payload.size(), stopped);
    } else {
      pd->next = o.start;
    }
    o.params.to = nullptr;
    o.params.from = nullptr;
    if (pd) {
      pd->origin = ORIGIN_MODULE;
      pd->module = o.module;
      continue;
    }
    if (verdict == MESIBO_RESULT_PASS) deliveries.push_back(std::move(o));
  }
  for (auto &r : decided) {
    if (core.closed) break;
    auto it = core.waiting.find(r.handle);
    if (it == core.waiting.end()) continue;
    Pending &pd = *it->second;
    core.waiting.erase(it);
    pd.handle = 0;
    if (r.timed_out) {
      core_logf(core, 0, "module \"%s\" did not decide message %lu from %s within %.0f ms; it was %s (on_error)",
                pd.at ? pd.at->name.c_str() : "?", static_cast<unsigned long>(pd.params.id), pd.from.c_str(),
                pd.at ? static_cast<double>(pd.at->timeout_ns) / 1e6 : 0.0,
                r.verdict == MESIBO_RESULT_CONSUMED ? "dropped" : "passed on");
      if (pd.at) {
        ++pd.at->errors;
        ++pd.at->timeouts;
      }
    }
    if (r.replace) pd.payload = std::move(r.payload);
    if (r.fields) {
      pd.params.type = r.type;
      pd.params.flags = r.flags;
      pd.params.expiry = r.expiry;
      pd.params.refid = r.refid;
    }
    if (r.verdict == MESIBO_RESULT_CONSUMED) pd.consumed = true;
    std::string key = pd.conv;  // pd may be freed by advance
    advance(core, key, deliveries, completions);
  }
  // A replaced or removed instance whose last deferred message was just
  // decided is cleaned up now; its on_cleanup's lines join this drain.
  if (!core.retiring.empty() && !decided.empty()) core_retire_idle(core);
  tell_expire_interval(core);
  std::lock_guard<std::mutex> lock(core.mu);
  // Lines logged by the modules that just ran are included in this drain.
  for (auto &l : core.logs) logs.push_back(std::move(l));
  core.logs.clear();
}

}  // namespace sb
