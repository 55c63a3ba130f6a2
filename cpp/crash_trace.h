// crash_trace: a module that crashes takes the process with it (modules run
// in the server's address space). Until they can be isolated, the crash
// leaves a trace: the loop thread keeps a note of the module and hook it is
// calling, and a handler for SIGSEGV, SIGBUS, SIGFPE, SIGILL and SIGABRT
// writes that note to stderr (async-signal-safe: write(2) only) before the
// signal takes its course (the previous handler, or the default action).
#pragma once
#include <atomic>

namespace sb {

// The module and hook the loop thread is in; both null outside modules.
// Pointers to strings that outlive the call (an instance's name, a literal).
struct CallSite {
  std::atomic<const char *> module{nullptr};
  std::atomic<const char *> hook{nullptr};
};
extern CallSite g_call_site;

// Marks a call into module code for its duration, on the loop thread.
// Nests (a callback inside a callback restores the outer note). Costs four
// relaxed stores, which on x86-64 and arm64 are plain stores.
class InModule {
 public:
  InModule(const char *module, const char *hook)
      : module_(g_call_site.module.load(std::memory_order_relaxed)), hook_(g_call_site.hook.load(std::memory_order_relaxed)) {
    g_call_site.module.store(module, std::memory_order_relaxed);
    g_call_site.hook.store(hook, std::memory_order_relaxed);
    // The handler runs on this thread: the compiler must not sink the
    // stores past the call.
    std::atomic_signal_fence(std::memory_order_seq_cst);
  }
  ~InModule() {
    std::atomic_signal_fence(std::memory_order_seq_cst);
    g_call_site.module.store(module_, std::memory_order_relaxed);
    g_call_site.hook.store(hook_, std::memory_order_relaxed);
  }
  InModule(const InModule &) = delete;
  InModule &operator=(const InModule &) = delete;

 private:
  const char *module_;
  const char *hook_;
};

// Installs the handlers (once per process; later calls do nothing). Call on
// the loop thread: the note is only trusted on the thread that installed
// them, so a crash in a module's own thread is not blamed on the hook the
// loop happens to be in.
void crash_trace_install();

// The file name of the shared library holding `fn` (for callbacks of the
// asynchronous helpers, which know the function, not the instance), as a
// string that lives as long as the process; "a module" when unknown.
const char *crash_trace_library_of(const void *fn);

}  // namespace sb
