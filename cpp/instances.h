// What each instance in the chain reports (the host's instances() and the
// server's metrics): who it is, what it implements, its counters, its time
// budget and how long its hooks take. A copy, taken between messages, so
// the host converts it without reading the core's own structures.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core.h"

namespace sb {

// One hook's call times.
struct HookTimes {
  uint64_t calls = 0;
  double total_ns = 0;
  double max_ns = 0;
  // Calls per bucket of kHookBucketBounds (not cumulative); the last one
  // counts the calls longer than every bound.
  uint64_t buckets[kHookBuckets + 1] = {};
};

struct InstanceSnapshot {
  std::string name;
  std::string file;
  size_t position = 0;
  std::optional<std::string> description;  // what the module set, if it did
  int log_level = 0;
  bool script = false;
  uint32_t script_id = 0;  // a script's id in its host
  uint64_t errors = 0;     // timeouts, and errors the host counted
  uint64_t timeouts = 0;   // deferred decisions that ended in a timeout
  uint64_t verdicts[VERDICT_COUNT] = {};
  // The on_message time budget (0: none), calls over it, messages that
  // bypassed the instance, trips, and whether it is bypassed now.
  uint64_t budget_ns = 0;
  uint64_t over_budget = 0;
  uint64_t bypassed_msgs = 0;
  uint64_t budget_trips = 0;
  bool bypassed = false;
  // The hooks it implements (bits 1 << Hook): a script's as its host said,
  // a native module's as it filled them in. times[h] counts for those only.
  unsigned hooks = 0;
  HookTimes times[HOOK_COUNT];
};

// The chain's instances in order. Loop thread.
void core_instances(const Core &core, std::vector<InstanceSnapshot> &out);

}  // namespace sb
