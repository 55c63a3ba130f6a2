// The routing core: the module chain, the loader and the queues that connect
// module threads to the loop thread. Plain C++17: the N-API binding
// (addon.cc) and the native tests both drive it through these functions.
#pragma once
#include <cstddef>
#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "config.h"
#include "crash_trace.h"
#include "module.h"
// The server defines the functions switchboard.h wraps for modules.
#ifndef SWITCHBOARD_SERVER_BUILD
#define SWITCHBOARD_SERVER_BUILD 1
#endif
#include "switchboard.h"
#include "wire.h"

namespace sb {

struct Core;
struct Instance;

// What a module sees is `mod`; `owner` lets the exported functions find the
// instance again from the pointer a module hands back. Slots live on the heap
// so their address never moves.
struct ModuleSlot {
  mesibo_module_t mod;
  Instance *owner;
};

enum Hook { HOOK_MESSAGE, HOOK_STATUS, HOOK_LOGIN, HOOK_CALL, HOOK_CALL_STATUS, HOOK_COUNT };
const char *hook_name(Hook h);

// Upper bounds (inclusive, in seconds) of the fixed buckets every hook's
// call times are counted in, for the switchboard_module_hook_seconds
// histogram: fixed, so that counting a call is a few compares and one
// increment (most calls land in the first bucket, and the scan stops there).
constexpr size_t kHookBuckets = 12;
extern const double kHookBucketBounds[kHookBuckets];

// Time spent in one hook of one instance, in ticks() units (ns_per_tick()
// converts): reading the clock twice per module call must cost next to
// nothing, and clock_gettime costs ~40 ns on some virtual machines.
struct HookStats {
  uint64_t calls = 0;
  uint64_t total_ticks = 0;
  uint64_t max_ticks = 0;
  // Calls per bucket, not cumulative: [i] took at most kHookBucketBounds[i]
  // and more than the bound before; [kHookBuckets] took longer than all.
  uint64_t buckets[kHookBuckets + 1] = {};
};

// What on_message returned, counted per instance (a DEFER without a handle
// counts as the PASS it is treated as).
enum Verdict { VERDICT_PASS, VERDICT_CONSUMED, VERDICT_DEFER, VERDICT_COUNT };

// Which file a path named when it was read: a file replaced on disk (a
// rebuilt module, a new script) gets a new inode or mtime even at the same size.
struct FileId {
  uint64_t dev = 0, ino = 0, size = 0, mtime_ns = 0;
  bool known = false;
  bool operator==(const FileId &o) const {
    return known && o.known && dev == o.dev && ino == o.ino && size == o.size && mtime_ns == o.mtime_ns;
  }
};
FileId file_id_of(const std::string &path);

// One declaration of a module in the configuration: its own config, context
// and position, even when the same library is declared twice.
struct Instance {
  Core *core = nullptr;
  ModuleSlot *slot = nullptr;
  std::string name;
  std::string file;
  size_t position = 0;
  int log_level = 0;
  void *dl = nullptr;
  module_config_t *config = nullptr;  // one allocation: header, items, strings
  bool initialised = false;
  bool warned_result = false;
  bool warned_defer = false;
  // A script (TypeScript/JavaScript) module: no library; the host calls it
  // for the hooks in `script_hooks` (bits 1 << Hook) through cpp/scripts.h.
  bool script = false;
  unsigned script_hooks = 0;
  uint32_t script_id = 0;  // the host's name for it
  std::string script_to;   // when set: only messages to this user reach the script (bots)
  // Deferred verdicts: how long a message may wait for this instance, and
  // what it becomes when the wait ends in a timeout or an error.
  uint64_t timeout_ns = 5000ull * 1000 * 1000;
  int on_error = MESIBO_RESULT_PASS;
  uint64_t errors = 0;  // timeouts, and errors the host counted (throws, rejections)
  uint64_t timeouts = 0;  // deferred decisions that ended in a timeout (also in errors)
  uint64_t verdicts[VERDICT_COUNT] = {};
  // Time budget for on_message (budget = ...): 0 = off, so an instance
  // without one costs the chain a single compare. budget_ticks is budget_ns
  // in ticks(), converted once at load so the check converts nothing.
  uint64_t budget_ticks = 0;
  uint64_t budget_ns = 0;
  int on_over_budget = MESIBO_RESULT_PASS;
  uint32_t budget_strikes = 5;
  uint64_t budget_window_ns = 10ull * 1000 * 1000 * 1000;
  uint64_t budget_cooldown_ns = 30ull * 1000 * 1000 * 1000;
  uint32_t strikes = 0;           // over-budget calls in the current window
  uint64_t strike_window_start = 0;  // now_ns() of the window's first strike
  bool bypassed = false;          // tripped: on_message is skipped until bypass_until
  uint64_t bypass_until = 0;
  uint64_t over_budget = 0;       // calls that took longer than the budget
  uint64_t bypassed_msgs = 0;     // messages that skipped the module while bypassed
  uint64_t budget_trips = 0;
  // The block set its own level (a `log` item, or use()'s log option): it
  // keeps it when the server's log_level changes (core_set_log_level).
  bool own_log_level = false;
  bool capturing_init_log = false;
  std::vector<std::string> init_log;  // lines logged during init, for load errors
  // Reload (core_reload_*): what the block said and which library file it
  // came from, to tell a changed block or library from an unchanged one.
  bool from_config = false;  // declared in the config (not added with use())
  std::vector<std::pair<std::string, std::string>> items;  // the block's items, in order
  FileId file_id;            // inst.file when it was loaded
  std::string loaded_from;   // the path dlopen was given (a private copy after a reload)
  // The state hand-off (switchboard_state_save/_load): the old instance's
  // save callback, and for a new instance in init, what its predecessor saved.
  switchboard_state_save_fn state_save = nullptr;
  bool has_handoff = false;
  std::string handoff;
  HookStats stats[HOOK_COUNT];
  // What a crash trace names while this instance's code runs: its hooks
  // (by Hook), then init, on_cleanup and the state save callback. Filled before init. Last, so that
  // the fields the chain reads per message keep their cache lines (only
  // the address of a site is taken per call, never its contents).
  CallSite sites[HOOK_COUNT + 3] = {};
};

struct LogLine {
  std::string module;  // empty for the core's own lines
  int level = 0;
  std::string text;
  // A core line with its own log event (lib/log.ts EVENTS), e.g.
  // "module.bypassed", about the instance named in `subject`; empty for the
  // plain core.warning lines.
  std::string event;
  std::string subject;
};

// A message a module sent with mesibo_message, copied so the caller may reuse
// its buffers at once. After the chain it becomes a delivery.
struct Outgoing {
  size_t start = 0;    // the chain position it enters at: after the sender
  std::string module;  // the sending instance's name
  mesibo_message_params_t params{};
  std::string to, from, payload;
};

// A message in the chain: the params, and a payload a module may rewrite in
// place (native) or replace with one of any length (chain_replace_payload).
struct ChainMsg {
  mesibo_message_params_t *p = nullptr;
  char *payload = nullptr;
  size_t len = 0;
  std::string *own = nullptr;  // storage for a replacement; payload may point into it
};

// Replaces the payload with a copy of data[0, len).
void chain_replace_payload(ChainMsg &m, const char *data, size_t len);

// What a host's script_call reports back (cpp/scripts.h reads it).
enum ScriptCall {
  SCRIPT_CALL_VERDICT,     // the script's hook returned a number: *ret
  SCRIPT_CALL_NO_VERDICT,  // it returned something else, or no hook runner is set up
  SCRIPT_CALL_FAILED,      // the call itself failed (the host's glue, not the module, threw)
};

// How the core reaches its embedder. `wake` may be called from any thread and
// must arrange for core_drain() to run soon on the loop thread.
struct Host {
  void (*wake)(void *data) = nullptr;
  void *data = nullptr;
  // Runs script module `script_id`'s `hook` (loop thread), with the
  // arguments the core packed into the bridge's slots and buffer
  // (script_bridge_attach). For a message hook, a verdict is
  // MESIBO_RESULT_PASS, MESIBO_RESULT_CONSUMED or SWITCHBOARD_RESULT_DEFER
  // (after taking a handle with script_defer).
  ScriptCall (*script_call)(void *data, Hook hook, uint32_t script_id, int32_t *ret) = nullptr;
  // From now on, call core_expire(core, now_ns()) every `ms` milliseconds;
  // 0: stop. Loop thread, from core_submit and core_drain, when a message
  // starts waiting for a deferred decision or the last one stops.
  void (*expire_every)(void *data, uint32_t ms) = nullptr;
};

// Where the core packs a script hook call (cpp/scripts.h): memory the host
// shares with the script runtime, and the message the running message hook
// looks at (what the script changes goes there).
struct ScriptBridge {
  double *slots = nullptr;  // HK_COUNT slots (cpp/slots.h HookSlot)
  char *buf = nullptr;      // [from][to][payload]
  size_t cap = 0;
  ChainMsg *msg = nullptr;
};

// Where a message waiting for a decision came from.
enum Origin { ORIGIN_CLIENT, ORIGIN_MODULE };

// A message waiting at a chain position for a deferred decision, or queued
// behind one in the same conversation (same sender, same destination).
struct Pending {
  uint64_t handle = 0;  // the decision it waits for; 0 while only queued
  size_t next = 0;      // chain position it continues at
  Instance *at = nullptr;  // the instance that deferred it
  uint64_t deadline = 0;   // now_ns() by which `at` must decide
  bool consumed = false;   // decided: dropped
  Origin origin = ORIGIN_CLIENT;
  uint64_t token = 0;      // ORIGIN_CLIENT: what submit returned for it
  int in_format = WIRE_JSON;
  int out_format = -1;
  std::string module;      // ORIGIN_MODULE: the sending instance
  mesibo_message_params_t params{};
  std::string to, from, payload;
  std::string conv;
};

// A decision from any thread, applied on the loop thread.
struct Resolution {
  uint64_t handle = 0;
  int verdict = MESIBO_RESULT_PASS;
  bool replace = false;
  bool timed_out = false;
  bool fields = false;  // type/flags/expiry/refid below replace the params'
  uint64_t type = 0, flags = 0, expiry = 0, refid = 0;
  std::string payload;
};

// A client message whose chain finished after a deferral: what core_submit
// would have returned for it, for the transport to route.
struct Completion {
  uint64_t token = 0;
  int verdict = MESIBO_RESULT_PASS;
  int format = WIRE_JSON;
  int out_format = -1;
  mesibo_message_params_t params{};  // to/from point into the strings below
  std::string to, from, payload;
  std::string frame, frame2, ack;
};

struct OpenError {
  std::string code;     // stable code: E_CONFIG_*, E_MODULE_*
  std::string message;  // what went wrong and what to do
  std::string module;   // the instance involved, if any
  std::string file;     // the file involved, if any
  int line = 0;         // the config line, if any
  std::vector<std::string> module_log;  // what the module logged during init
};

struct Core {
  Config config;
  Host host;
  std::vector<std::unique_ptr<Instance>> chain;
  // Out of the chain: new instances of a reload whose init has not finished
  // (a script's may be async), and replaced or removed ones that messages
  // deferred at them still wait for (unloaded once none does).
  std::vector<std::unique_ptr<Instance>> staged;
  std::vector<std::unique_ptr<Instance>> retiring;
  size_t max_payload = 65536;
  // The log level of a block without a `log` item: one below the server's
  // log_level (default 1, so modules keep mesibo's default of 0), so that
  // turning the server up to debug a problem turns its modules up too.
  int module_log_level = 0;
  bool closed = false;

  // Per-message scratch, reused so the steady state allocates nothing.
  WireMessage msg{};
  WireScratch scratch;
  std::string from_buf;
  std::string out, out2, ack;

  // Connections per address, kept by core_dispatch_login: it sets
  // MOD_MESIBO_UFLAG_DESTONLINE in params.uflags before the chain runs.
  std::unordered_map<std::string, int> online;
  std::string online_key;  // lookup scratch: no string built per message
  // Set by the delivery engine that routes this core's messages: whether
  // `to` has a connection here, from the engine's own directory, which
  // also keeps the id it found for its routing (one name lookup per
  // message instead of two: `online` was 1.3 % of the CPU at 1,000
  // connections). Null: `online`.
  bool (*dest_online)(void *data, const char *to, size_t len) = nullptr;
  void *dest_online_data = nullptr;

  // Filled from any thread, emptied by core_drain on the loop thread.
  std::mutex mu;
  std::vector<Outgoing> outbox;
  std::vector<LogLine> logs;
  bool wake_pending = false;

  // Ids for module messages sent with id 0.
  std::atomic<uint32_t> next_id{1};

  // Deferred decisions. Loop thread: the instance whose on_message is
  // running and the handle it took; the conversations with a message waiting
  // (key: conv_key) and the waiting messages by handle. Under `mu`: handles
  // that may still be resolved, and decisions to apply.
  Instance *running = nullptr;
  uint64_t running_handle = 0;
  std::thread::id loop_thread;  // the thread core_open ran on
  std::unordered_map<std::string, std::deque<std::unique_ptr<Pending>>> conversations;
  std::unordered_map<uint64_t, Pending *> waiting;
  std::string conv_scratch;
  std::string payload_own;  // a replacement payload for the message in core_submit
  uint64_t next_token = 1;
  uint64_t next_handle = 1;               // under mu
  std::unordered_set<uint64_t> live_handles;  // under mu
  std::vector<Resolution> resolutions;        // under mu
  uint32_t expire_every = 0;  // the interval the host was last asked for (Host::expire_every)

  // Why the last core_submit refused its frame (core_refused_detail).
  std::string refused_detail;
  ScriptBridge scripts;
};

constexpr uint32_t MSGSTATUS_SENT = 1;  // "sent": accepted by the server (no named constant in module.h)

// Parses nothing: `config` is already parsed. Loads and initialises every
// module in order. On failure, the instances loaded so far are cleaned up and
// unloaded, `err` says why, and false is returned.
bool core_open(Core &core, const Config &config, Host host, OpenError &err);

// Runs on_cleanup once per instance in reverse order, then closes the
// libraries. Safe to call twice.
void core_close(Core &core);

// Forgets the host: after it, nothing (a module thread's message or log
// line included) calls the host's functions or passes its data. For a host
// about to free that data; the core must be closed first. Any thread.
void core_forget_host(Core &core);

// What the delivery frame is encoded as: one format, or both (for a user
// whose devices speak different forms).
constexpr int OUT_SAME = -1;  // the form the frame came in
constexpr int OUT_BOTH = 2;   // frame in JSON, frame2 in binary

// Result of one client frame through the core. All pointers stay valid until
// the next submit.
// core_submit's verdict for a message that waits for a deferred decision
// (its own, or one ahead of it in its conversation): nothing to route now;
// a Completion with `token` follows from core_drain.
constexpr int VERDICT_DEFERRED = 2;

struct SubmitResult {
  int op = WIRE_OP_MESSAGE;          // WIRE_OP_MESSAGE or WIRE_OP_STATUS (a receipt)
  int format = WIRE_JSON;            // the form the frame came in
  int verdict = MESIBO_RESULT_PASS;  // PASS: deliver `frame`; CONSUMED: a module dropped it; VERDICT_DEFERRED
  uint64_t token = 0;                // VERDICT_DEFERRED: names the Completion to come
  mesibo_message_params_t params{};  // after the chain (modules may have changed fields)
  const char *payload = nullptr;     // after the chain
  size_t payload_len = 0;
  // Message: the delivery for params.to / the group (PASS only). Status: the
  // status frame for params.to, the user the receipt is for.
  const char *frame = nullptr;
  size_t frame_len = 0;
  const char *frame2 = nullptr;  // the binary form too, with OUT_BOTH
  size_t frame2_len = 0;
  // Message: the "sent" status (1) for the sender, in the sender's form.
  const char *ack = nullptr;
  size_t ack_len = 0;
};

// Decodes `frame` from the authenticated `from` and:
// - a message: runs the chain, encodes the delivery in `out_format`
//   (WIRE_JSON, WIRE_BINARY, OUT_SAME or OUT_BOTH) and the sender's "sent"
//   status, and runs on_message_status for that status;
// - a receipt (status 2 or 3): runs on_message_status and, unless
//   `status_frame` is false, encodes the status frame for the user it is
//   addressed to (the delivery engine encodes it itself, only when that
//   user asked for a receipt: router.cc).
// Returns WIRE_OK or a negative WireError (core_refused_id and
// core_refused_detail say more). Loop thread only.
int core_submit(Core &core, const char *from, size_t from_len, const uint8_t *frame, size_t len,
                int out_format, SubmitResult &res, bool status_frame = true);

// After core_submit refused a frame: the id the decoder read before it
// stopped (0 when it read none), which the error frame names the refused
// frame by (docs/protocol.md), and what was wrong, in words. The detail is
// empty after a frame that was accepted.
inline uint32_t core_refused_id(const Core &core) { return core.msg.id; }
inline const std::string &core_refused_detail(const Core &core) { return core.refused_detail; }

// Whether the core is closed (core_close ran): a closed core refuses
// everything and cannot be reopened.
inline bool core_closed(const Core &core) { return core.closed; }

// Whether a module's hook is running now (the host was called from inside
// it): the chain is mid-way, so it may not change, and draining waits for
// the wake-up that follows.
inline bool core_in_hook(const Core &core) { return core.running != nullptr; }

// Encodes a status frame (e.g. a failure the transport decided) for p.to and
// runs on_message_status. Returns the frame's length; it is in core.ack.
size_t core_status(Core &core, mesibo_message_params_t *p, int format);
// The frame core_status encoded last; valid until the next core call.
inline const char *core_status_frame(const Core &core) { return core.ack.data(); }

// Runs on_message from chain position `start`. `m.len` is updated when a
// module shortens a text payload in place. Returns PASS, CONSUMED, or
// SWITCHBOARD_RESULT_DEFER with *stopped set to the deferring position and
// core.running_handle to its handle.
int chain_run(Core &core, size_t start, ChainMsg &m, size_t *stopped);

// Deferred decisions. core_take_handle: inside on_message (or a script's
// message hook) only; a handle for the message being processed, 0 outside.
// core_resolve: any thread; 0, or -1 for a handle that is not waiting.
uint64_t core_take_handle(Core &core, Instance *inst);
// `wake` false: the caller (on the loop thread) drains right after.
int core_resolve(Core &core, Resolution r, bool wake = true);
// Loop thread: turns waits past their deadline into their on_error verdict.
// Returns how many timed out.
size_t core_expire(Core &core, uint64_t now);
// How often the embedder's timer should call core_expire: every this many
// ms while a message waits for a deferred decision, 0 (no timer) when none
// does; Host::expire_every tells the host when it changes. Loop thread.
uint32_t core_expire_interval_ms(const Core &core);
// Number of messages waiting or queued behind a deferred decision.
size_t core_waiting(const Core &core);
// Adds a script instance at `position` (clamped to the chain's end). Loop
// thread, between messages.
Instance *core_add_script(Core &core, const std::string &name, size_t position);

// The script instance the host calls `id`, in the chain, staged or
// retiring; nullptr when there is none.
Instance *core_find_script(Core &core, uint32_t id);

// --- Reload, one instance at a time (docs/modules.md, "Reloading modules").
// Loop thread, between messages (never while a module's hook runs).

// What `decl`, a block of `config`, resolves to, as core_open reads it: the
// file, and whether it is a script module. False and `err` for a block
// core_open would refuse.
bool core_resolve_block(const Config &config, const ModuleDecl &decl, std::string &file, bool &script,
                        OpenError &err);

// How a block of a new configuration compares with the running instance
// declared at the same index.
enum ReloadAction { RELOAD_UNCHANGED, RELOAD_CHANGED, RELOAD_RESTART };
struct ReloadStep {
  std::string name;
  size_t index = 0;        // in config.modules
  Instance *inst = nullptr;  // the running instance, for UNCHANGED and CHANGED
  size_t position = 0;       // with `inst`: its chain position
  uint32_t script_id = 0;    // with `inst`, a script: its id in the host
  ReloadAction action = RELOAD_UNCHANGED;
  bool script = false;
  bool same_file = false;   // same path, and for a native library the same file on disk
  bool same_items = false;
  std::string file;         // resolved as core_open would
};
// Compares every block of `config` with the config-declared instances, in
// declaration order. A block whose name differs from the running one at its
// index (added, removed, renamed, moved) or that changes kind is RESTART,
// as is a running instance with no block at its index (`removed` names
// those). Changes nothing.
bool core_reload_plan(Core &core, const Config &config, std::vector<ReloadStep> &steps,
                      std::vector<std::string> &removed, OpenError &err);

// A new instance to replace `old`, from `decl`, outside the chain. Native:
// its library is loaded anew (a private copy when the file changed) and
// initialised; `old`'s save callback, if it set one, runs first and its
// blob reaches the new init (switchboard_state_load). Script: prepared for
// the host, which runs its init and then commits or aborts. nullptr and
// `err` (the module's init log in err.module_log) on failure; `old` is
// untouched either way.
Instance *core_reload_prepare(Core &core, Instance &old, const ModuleDecl &decl, const std::string &file,
                              OpenError &err);
// Puts `fresh` (from core_reload_prepare) at its predecessor's position;
// the predecessor retires: its counters carry over to `fresh`, and its
// on_cleanup runs once no message waits for a decision it deferred (at
// most its defer_timeout later).
void core_reload_commit(Core &core, Instance *fresh);
// Drops a prepared instance that will not be committed (its script init failed).
void core_reload_abort(Core &core, Instance *fresh);

// What core_reload_block did.
enum ReloadBlock {
  RELOAD_BLOCK_BUSY,      // called from inside a module's hook: the chain changes only between messages
  RELOAD_BLOCK_MISMATCH,  // the running chain has no instance declared at that index under that name
  RELOAD_BLOCK_FAILED,    // the new instance did not load (err); the old one stays
  RELOAD_BLOCK_SWAPPED,   // native: loaded, initialised and in its predecessor's place
  RELOAD_BLOCK_STAGED,    // script: prepared under the script id; the host runs its init, then commits or aborts
};
struct ReloadedBlock {
  size_t position = 0;  // SWAPPED: where the new instance is
  int log_level = 0;    // STAGED: the level its init runs with
};
// Replaces the running instance declared at `index` of the config with one
// made from that block of `config` (core_resolve_block, then
// core_reload_prepare; a native one is committed at once). A script is
// staged under `script_id` for script_commit_reload/_abort_reload
// (cpp/scripts.h).
ReloadBlock core_reload_block(Core &core, const Config &config, size_t index, uint32_t script_id, ReloadedBlock &out,
                              OpenError &err);
// Takes `inst` out of the chain; it retires as a replaced one does.
void core_remove_instance(Core &core, Instance *inst);
// Unloads retiring instances that no message waits for any more.
void core_retire_idle(Core &core);

// The server's log_level (0-3) changed (start, or a reload): instances
// without a level of their own take one below it, as core_open gives them.
// Loop thread.
void core_set_log_level(Core &core, int server_level);

void core_dispatch_status(Core &core, mesibo_message_params_t *p);
// Runs on_login and keeps core.online up to date (user->online 1: a
// connection opened, 0: one closed).
void core_dispatch_login(Core &core, mesibo_user_t *user);
void core_dispatch_call(Core &core);
void core_dispatch_call_status(Core &core);

// Loop thread: takes what modules sent (running each through the rest of the
// chain) and what was logged since the last drain.
// Also applies decisions (running the rest of the chain) and returns the
// client messages that finished.
void core_drain(Core &core, std::vector<Outgoing> &deliveries, std::vector<LogLine> &logs,
                std::vector<Completion> *completions = nullptr);

// Queues a module-originated message; any thread. 0 or -1.
int core_send_from_module(Instance *inst, const mesibo_message_params_t *p, const char *payload, size_t len);

// Queues a log line from the core itself or a module; any thread.
void core_log(Core &core, const std::string &module, int level, std::string text);
// While a core's modules are loaded (from core_open's loading to core_close),
// a crash inside a module also prints the log lines it has not delivered yet
// (crash_trace.h).
void core_crash_logs_track(Core &core);
void core_crash_logs_untrack(Core &core);
void core_logf(Core &core, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
// A core line logged as its own event about instance `subject`.
void core_log_event(Core &core, const char *event, const std::string &subject, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

// The live-slot registry: exported functions called with a stale or foreign
// module pointer must not touch freed memory.
Instance *slot_lookup_locked(const mesibo_module_t *mod);
std::mutex &slot_registry_mutex();

uint64_t now_ns();

// What the server puts in every mesibo_module_t's `invoke` slot: the
// get-API of switchboard.h (SWITCHBOARD_INVOKE_GET_API, _API_LEVEL);
// MESIBO_RESULT_FAIL for any other id. Any thread.
mesibo_int_t module_invoke(mesibo_int_t id, mesibo_module_t *mod, ...);

// A cheap monotonic tick counter for timing callbacks: the TSC on x86-64,
// the monotonic clock in nanoseconds elsewhere.
inline uint64_t ticks() {
#if defined(__x86_64__)
  return __builtin_ia32_rdtsc();
#else
  return now_ns();
#endif
}
// Nanoseconds per tick, calibrated once against the monotonic clock.
double ns_per_tick();

}  // namespace sb
