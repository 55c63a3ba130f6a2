// Script modules (TypeScript/JavaScript, run by lib/modules.ts) in the core:
// how the host names, adds, configures and removes them, and the bridge one
// hook call crosses. The core packs the call into slots and a buffer the
// host shares with the script runtime (cpp/slots.h HookSlot), the host makes
// one call (Host::script_call), and the core reads the verdict back. A
// script names itself by the id the host gave it; every function here
// answers "unknown" for an id it does not know and on a closed core.
// Loop thread only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "core.h"

namespace sb {

// The hooks a script module may implement, as bits 1 << Hook.
constexpr unsigned kScriptHooks = (1u << HOOK_MESSAGE) | (1u << HOOK_STATUS) | (1u << HOOK_LOGIN);

// What the functions below answer.
enum ScriptStatus {
  SCRIPT_OK = 0,
  // No such script, no message hook running, a handle that is not waiting,
  // or a closed core.
  SCRIPT_UNKNOWN = -1,
  // Inside a module's hook: the chain changes only between messages.
  SCRIPT_BUSY = -2,
  // A payload longer than max_message_size.
  SCRIPT_TOO_LARGE = -3,
  // A message without a destination (no `to` and no group).
  SCRIPT_NO_DESTINATION = -4,
};

// --- The bridge.

// The host's shared memory for hook calls: `slots` holds HK_COUNT doubles,
// `buf` `cap` bytes (at least hook_buffer_size(core)). Both must stay valid
// while the core is open. Until this is called, script hooks pass.
void script_bridge_attach(Core &core, double *slots, char *buf, size_t cap);

// The chain's calls into a script module for the hooks it implements
// (chain.cc checks the bit and host.script_call first). script_message
// returns the verdict: PASS, CONSUMED or SWITCHBOARD_RESULT_DEFER; while it
// runs, script_set changes `m`.
mesibo_int_t script_message(Core &core, Instance &inst, ChainMsg &m);
void script_status(Core &core, Instance &inst, mesibo_message_params_t *p);
void script_login(Core &core, Instance &inst, mesibo_user_t *user);

// A call into `inst` that failed in the host's glue rather than in the
// module (the runtime catches what a module throws): counts an error, logs
// it, and returns the block's on_error verdict, which the message gets.
mesibo_int_t script_failed(Core &core, Instance &inst, Hook hook);

// --- Life cycle.

// The script block at chain `position` (declared in the config) is loaded
// and the host calls it `id`; it implements `hooks` (bits 1 << Hook, others
// ignored). False when no script block is at that position.
bool script_attach(Core &core, size_t position, uint32_t id, unsigned hooks);

// The hooks script `id` implements, known after its init.
ScriptStatus script_set_hooks(Core &core, uint32_t id, unsigned hooks);

// How a script added with script_add behaves; what is not given keeps the
// block defaults (core.h Instance).
struct ScriptOptions {
  uint32_t id = 0;
  unsigned hooks = 0;
  double timeout_ms = 0;  // > 0: how long a deferred decision may take
  int on_error = MESIBO_RESULT_PASS;  // CONSUMED drops on error; anything else passes
  bool own_log_level = false;  // log_level is its own: it does not follow the server's
  int log_level = 0;
  std::string only_to;  // non-empty: only messages to this user reach it (bots)
};

// Adds a script instance named `name` at chain `position` (clamped to the
// end). SCRIPT_OK and its position in *at, or SCRIPT_BUSY (inside a hook)
// or SCRIPT_UNKNOWN (closed).
ScriptStatus script_add(Core &core, const std::string &name, size_t position, const ScriptOptions &opts,
                        size_t *at);

// Takes script `id` out of the chain (it retires as a replaced instance
// does). SCRIPT_OK, SCRIPT_UNKNOWN (not in the chain) or SCRIPT_BUSY.
ScriptStatus script_remove(Core &core, uint32_t id);

// A reload staged script `id` (core_reload_block) and its init succeeded:
// it takes its predecessor's place. SCRIPT_OK when it did; SCRIPT_UNKNOWN
// when nothing is staged under `id` or nothing was left to replace (it is
// dropped then); SCRIPT_BUSY inside a hook.
ScriptStatus script_commit_reload(Core &core, uint32_t id);
// The staged script's init failed: it is dropped, its predecessor stays.
void script_abort_reload(Core &core, uint32_t id);

// --- What a script does from its hooks.

// Inside a script's message hook: a handle to decide later
// (script_resolve), or 0 outside one.
uint64_t script_defer(Core &core);

// What a script may change in a message's params.
struct ScriptFields {
  uint64_t type = 0, flags = 0, expiry = 0, refid = 0;
};

// Inside a script's message hook: the message gets `payload` (when not
// nullptr) and `fields` (when not nullptr). SCRIPT_OK, SCRIPT_UNKNOWN (no
// message hook running) or SCRIPT_TOO_LARGE (nothing changed).
ScriptStatus script_set(Core &core, const char *payload, size_t len, const ScriptFields *fields);

// A decision on a deferred message: `verdict` (PASS or CONSUMED), and the
// payload and fields as script_set takes them. SCRIPT_OK, SCRIPT_UNKNOWN
// (not waiting: decided, timed out, or the core closed; or another
// verdict) or SCRIPT_TOO_LARGE. On SCRIPT_OK, *drain_now says whether the caller may
// run core_drain now: not from inside a hook, where the chain is mid-way
// and the wake-up that follows drains.
ScriptStatus script_resolve(Core &core, uint64_t handle, int verdict, const char *payload, size_t len,
                            const ScriptFields *fields, bool *drain_now);

// Sends a message from script `id` as mesibo_message does (it enters the
// chain after the script). `p.to`/`p.from` may be nullptr. SCRIPT_OK,
// SCRIPT_UNKNOWN, SCRIPT_NO_DESTINATION or SCRIPT_TOO_LARGE.
ScriptStatus script_send(Core &core, uint32_t id, const mesibo_message_params_t &p, const char *payload,
                         size_t len);

// A line script `id` logs: kept when `level` is 0 or at most its log level.
void script_log(Core &core, uint32_t id, int level, std::string text);

// The host counted an error of script `id` (a throw, a rejection).
void script_count_error(Core &core, uint32_t id);

// Script `id`'s log level now (it follows core_set_log_level unless it
// has its own). False for an unknown id.
bool script_log_level(Core &core, uint32_t id, int *level);

}  // namespace sb
