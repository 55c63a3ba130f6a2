// crash_trace: a module that crashes takes the process with it (modules run
// in the server's address space). Until they can be isolated, the crash
// leaves a trace: the loop thread keeps a note of the module and hook it is
// calling, and a handler for SIGSEGV, SIGBUS, SIGFPE, SIGILL and SIGABRT
// writes that note to stderr (async-signal-safe: write(2) only) before the
// signal takes its course (the previous handler, or the default action).
#pragma once
#include <atomic>
#include <cstddef>

namespace sb {

// What a trace names: a module and the hook (or helper callback) it is in.
// Both strings outlive every call that uses the site (an instance's name, a
// literal, an interned file name), and so does the site itself: instances
// and requests keep theirs, so that marking a call is one pointer store.
struct CallSite {
  const char *module;
  const char *hook;
};

// The site the loop thread is in; null outside module code.
extern std::atomic<const CallSite *> g_call_site;

// Marks a call into module code for its duration, on the loop thread.
// Nests (a callback inside a callback restores the outer site). Costs one
// load and two stores, plain moves on x86-64 and arm64.
class InModule {
 public:
  explicit InModule(const CallSite &site) : saved_(g_call_site.load(std::memory_order_relaxed)) {
    g_call_site.store(&site, std::memory_order_relaxed);
    // The handler runs on this thread: the compiler must not sink the
    // store past the call.
    std::atomic_signal_fence(std::memory_order_seq_cst);
  }
  ~InModule() {
    std::atomic_signal_fence(std::memory_order_seq_cst);
    g_call_site.store(saved_, std::memory_order_relaxed);
  }
  InModule(const InModule &) = delete;
  InModule &operator=(const InModule &) = delete;

 private:
  const CallSite *saved_;
};

// Installs the handlers (once per process; later calls do nothing). Call on
// the loop thread: the note is only trusted on the thread that installed
// them, so a crash in a module's own thread is not blamed on the hook the
// loop happens to be in.
void crash_trace_install();

// Where the handler finds the log lines not yet delivered when the crash
// came (the crashing module's last words, queued for the next loop turn):
// it calls `source` with a writer, which source calls once per line. The
// source must be async-signal-safe in practice: no allocation, no blocking
// lock (chain.cc's uses try_lock).
using CrashLogWriter = void (*)(const char *module, const char *text, size_t len);
using CrashLogSource = void (*)(CrashLogWriter write);
void crash_trace_set_log_source(CrashLogSource source);

// The file name of the shared library holding `fn` (for callbacks of the
// asynchronous helpers, which know the function, not the instance), as a
// string that lives as long as the process; "a module" when unknown.
const char *crash_trace_library_of(const void *fn);

}  // namespace sb
