// The chain: every message runs through on_message of each instance in
// configuration order; statuses, logins and calls go to the instances that
// set those hooks. Also the queues that bring module-sent messages and log
// lines from any thread to the loop thread.
#include <time.h>

#include <cstdarg>
#include <cstdio>
#include <cstring>

#include "core.h"

namespace sb {

namespace {

// A callback that holds the loop this long gets a warning: modules must not
// block, and the log is where their authors will look.
constexpr uint64_t kSlowCallbackNs = 50ull * 1000 * 1000;

// Records one callback that started at `started` and returns the time it
// ended, which the chain reuses as the next module's start.
uint64_t record(Core &core, Instance &inst, Hook h, uint64_t started) {
  static const uint64_t slow_ticks = static_cast<uint64_t>(kSlowCallbackNs / ns_per_tick());
  uint64_t now = ticks();
  uint64_t t = now - started;
  HookStats &s = inst.stats[h];
  ++s.calls;
  s.total_ticks += t;
  if (t > s.max_ticks) s.max_ticks = t;
  if (t > slow_ticks)
    core_logf(core, 0, "warning: module \"%s\" %s took %.0f ms; callbacks run on the event loop and must not block",
              inst.name.c_str(), hook_name(h), static_cast<double>(t) * ns_per_tick() / 1e6);
  return now;
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

int chain_run(Core &core, size_t start, mesibo_message_params_t *p, char *payload, size_t *len) {
  // A module can only shorten a payload in place by writing a NUL at the new
  // end (the ABI passes len by value). That reading is only safe for payloads
  // that had no NUL to begin with; binary payloads keep their length.
  const bool text = std::memchr(payload, 0, *len) == nullptr;
  const size_t n = core.chain.size();
  uint64_t t0 = ticks();
  for (size_t i = start; i < n; ++i) {
    Instance &inst = *core.chain[i];
    mesibo_module_t *m = &inst.slot->mod;
    if (!m->on_message) continue;
    mesibo_int_t r;
    try {
      r = m->on_message(m, p, payload, static_cast<mesibo_uint_t>(*len));
    } catch (...) {
      r = MESIBO_RESULT_PASS;
      core_logf(core, 0, "module \"%s\" on_message threw a C++ exception; the message was passed on", inst.name.c_str());
    }
    t0 = record(core, inst, HOOK_MESSAGE, t0);
    if (text) {
      if (const void *nul = std::memchr(payload, 0, *len)) *len = static_cast<const char *>(nul) - payload;
    }
    if (r == MESIBO_RESULT_CONSUMED) return MESIBO_RESULT_CONSUMED;
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

int core_submit(Core &core, const char *from, size_t from_len, const uint8_t *frame, size_t len, int out_format,
                SubmitResult &res, std::string *detail) {
  WireMessage &m = core.msg;
  int rc = wire_decode(frame, len, core.max_payload, m, core.scratch, detail);
  if (rc != WIRE_OK) return rc;

  core.from_buf.assign(from, from_len);  // NUL-terminated by std::string; capacity reused
  mesibo_message_params_t &p = res.params;
  p = mesibo_message_params_t{};
  p.id = m.id;
  p.to = m.to;
  p.from = &core.from_buf[0];
  res.op = m.op;
  res.format = m.format;
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
    res.frame_len = wire_encode_status(first_format(out_format, m.format), p, core.out);
    res.frame = core.out.data();
    if (out_format == OUT_BOTH) {
      res.frame2_len = wire_encode_status(WIRE_BINARY, p, core.out2);
      res.frame2 = core.out2.data();
    }
    res.ack = nullptr;
    res.ack_len = 0;
    return WIRE_OK;
  }

  p.refid = m.refid;
  p.groupid = m.groupid;
  p.flags = m.flags;
  p.type = m.type;
  p.expiry = m.expiry;
  if (m.to_len && !core.online.empty()) {
    core.online_key.assign(m.to, m.to_len);
    auto it = core.online.find(core.online_key);
    if (it != core.online.end() && it->second > 0) p.uflags |= MOD_MESIBO_UFLAG_DESTONLINE;
  }

  size_t plen = m.payload_len;
  res.verdict = chain_run(core, 0, &p, m.payload, &plen);
  res.payload = m.payload;
  res.payload_len = plen;
  if (res.verdict == MESIBO_RESULT_PASS) {
    res.frame_len = wire_encode_message(first_format(out_format, m.format), p, m.payload, plen, core.out);
    res.frame = core.out.data();
    if (out_format == OUT_BOTH) {
      res.frame2_len = wire_encode_message(WIRE_BINARY, p, m.payload, plen, core.out2);
      res.frame2 = core.out2.data();
    }
  } else {
    res.frame = nullptr;
    res.frame_len = 0;
  }

  // "Sent": the sender hears it about the destination, in its own form.
  mesibo_message_params_t sent{};
  sent.id = p.id;
  sent.groupid = p.groupid;
  sent.status = MSGSTATUS_SENT;
  sent.from = p.to;
  sent.to = p.from;
  core_dispatch_status(core, &sent);
  res.ack_len = wire_encode_status(m.format, sent, core.ack);
  res.ack = core.ack.data();
  return WIRE_OK;
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
    mesibo_module_t *m = &inst.slot->mod;
    if (!m->on_message_status) continue;
    uint64_t t0 = ticks();
    try {
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
    mesibo_module_t *m = &inst.slot->mod;
    if (!m->on_login) continue;
    uint64_t t0 = ticks();
    try {
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
    mesibo_module_t *m = &inst.slot->mod;
    mesibo_int_t (*fn)(mesibo_module_t *) = h == HOOK_CALL ? m->on_call : m->on_call_status;
    if (!fn) continue;
    uint64_t t0 = ticks();
    try {
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
  core.logs.push_back(LogLine{module, level, std::move(text)});
  wake(core, lock);
}

void core_logf(Core &core, int level, const char *fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  int n = std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  std::string text(buf, static_cast<size_t>(n) < sizeof buf ? static_cast<size_t>(n) : sizeof buf - 1);
  core_log(core, std::string(), level, std::move(text));
}

void core_drain(Core &core, std::vector<Outgoing> &deliveries, std::vector<LogLine> &logs) {
  std::vector<Outgoing> batch;
  {
    std::lock_guard<std::mutex> lock(core.mu);
    batch.swap(core.outbox);
    core.wake_pending = false;
  }
  for (auto &o : batch) {
    if (core.closed) break;
    o.params.to = &o.to[0];
    o.params.from = &o.from[0];
    // The payload buffer must be writable and may be shortened in place; it
    // is this message's own copy.
    o.payload.push_back('\0');
    size_t len = o.payload.size() - 1;
    int verdict = chain_run(core, o.start, &o.params, &o.payload[0], &len);
    o.payload.resize(len);
    o.params.to = nullptr;
    o.params.from = nullptr;
    if (verdict == MESIBO_RESULT_PASS) deliveries.push_back(std::move(o));
  }
  std::lock_guard<std::mutex> lock(core.mu);
  // Lines logged by the modules that just ran are included in this drain.
  for (auto &l : core.logs) logs.push_back(std::move(l));
  core.logs.clear();
}

}  // namespace sb
