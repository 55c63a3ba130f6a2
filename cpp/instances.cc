#include "instances.h"

#include <algorithm>
#include <iterator>

namespace sb {

namespace {

unsigned hooks_of(const Instance &inst) {
  if (inst.script) return inst.script_hooks;
  const mesibo_module_t &m = inst.slot->mod;
  const bool has[HOOK_COUNT] = {m.on_message != nullptr, m.on_message_status != nullptr, m.on_login != nullptr,
                                m.on_call != nullptr, m.on_call_status != nullptr};
  unsigned bits = 0;
  for (int h = 0; h < HOOK_COUNT; ++h)
    if (has[h]) bits |= 1u << h;
  return bits;
}

}  // namespace

void core_instances(const Core &core, std::vector<InstanceSnapshot> &out) {
  out.clear();
  out.reserve(core.chain.size());
  const double ns = ns_per_tick();
  for (const auto &ip : core.chain) {
    const Instance &inst = *ip;
    InstanceSnapshot s;
    s.name = inst.name;
    s.file = inst.file;
    s.position = inst.position;
    if (const char *d = inst.slot->mod.description) s.description = d;
    s.log_level = inst.log_level;
    s.script = inst.script;
    s.script_id = inst.script_id;
    s.errors = inst.errors;
    s.timeouts = inst.timeouts;
    std::copy(std::begin(inst.verdicts), std::end(inst.verdicts), std::begin(s.verdicts));
    s.budget_ns = inst.budget_ns;
    s.over_budget = inst.over_budget;
    s.bypassed_msgs = inst.bypassed_msgs;
    s.budget_trips = inst.budget_trips;
    s.bypassed = inst.bypassed;
    s.hooks = hooks_of(inst);
    for (int h = 0; h < HOOK_COUNT; ++h) {
      if (!(s.hooks & (1u << h))) continue;
      const HookStats &st = inst.stats[h];
      HookTimes &t = s.times[h];
      t.calls = st.calls;
      t.total_ns = static_cast<double>(st.total_ticks) * ns;
      t.max_ns = static_cast<double>(st.max_ticks) * ns;
      std::copy(std::begin(st.buckets), std::end(st.buckets), std::begin(t.buckets));
    }
    out.push_back(std::move(s));
  }
}

}  // namespace sb
