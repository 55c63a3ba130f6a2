// crash_trace: see crash_trace.h.
#include "crash_trace.h"

#include <dlfcn.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>
#include <mutex>
#include <set>
#include <string>

namespace sb {

std::atomic<const CallSite *> g_call_site{nullptr};

namespace {

constexpr int kSignals[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};
constexpr int kSignalCount = sizeof kSignals / sizeof kSignals[0];
struct sigaction g_previous[kSignalCount];
long g_loop_tid = 0;
// A stack for the handler: a module that overflows its stack faults on the
// guard page, where the handler could not run.
alignas(16) char g_alt_stack[64 * 1024];
std::atomic<CrashLogSource> g_log_source{nullptr};

const char *signal_name(int sig) {
  switch (sig) {
    case SIGSEGV: return "SIGSEGV";
    case SIGBUS: return "SIGBUS";
    case SIGFPE: return "SIGFPE";
    case SIGILL: return "SIGILL";
    case SIGABRT: return "SIGABRT";
    default: return "a signal";
  }
}

// A line built in a fixed buffer with no allocation and no stdio, both
// unsafe in a signal handler.
struct Line {
  char buf[1024];
  size_t n = 0;
  void add(const char *s) {
    while (s && *s && n < sizeof buf - 1) buf[n++] = *s++;
  }
  void add_hex(uintptr_t v) {
    char tmp[2 + 2 * sizeof v];
    size_t k = 0;
    do {
      tmp[k++] = "0123456789abcdef"[v & 0xF];
      v >>= 4;
    } while (v && k < sizeof tmp);
    add("0x");
    while (k && n < sizeof buf - 1) buf[n++] = tmp[--k];
  }
  void write_out() {
    buf[n++] = '\n';
    size_t off = 0;
    while (off < n) {
      ssize_t w = ::write(2, buf + off, n - off);
      if (w <= 0) break;
      off += static_cast<size_t>(w);
    }
  }
};

// A pending log line, as the default log would have printed it.
void write_log_line(const char *module, const char *text, size_t len) {
  Line l;
  l.add(module && *module ? "[" : "[switchboard");
  l.add(module);
  l.add("] ");
  for (size_t i = 0; i < len && l.n < sizeof l.buf - 1; ++i) l.buf[l.n++] = text[i];
  l.write_out();
}

void on_crash(int sig, siginfo_t *info, void *uctx) {
  int idx = 0;
  while (idx < kSignalCount && kSignals[idx] != sig) ++idx;
  const CallSite *site = g_call_site.load(std::memory_order_relaxed);
  if (site && syscall(SYS_gettid) == g_loop_tid) {
    if (CrashLogSource source = g_log_source.load(std::memory_order_relaxed)) source(write_log_line);
    Line l;
    l.add("switchboard: crash: ");
    l.add(signal_name(sig));
    if ((sig == SIGSEGV || sig == SIGBUS) && info && info->si_code > 0) {
      l.add(" (address ");
      l.add_hex(reinterpret_cast<uintptr_t>(info->si_addr));
      l.add(")");
    }
    l.add(" in module \"");
    l.add(site->module);
    l.add("\", in ");
    l.add(site->hook);
    l.add("; the server is going down with it. Fix the module, or remove it from the configuration.");
    l.write_out();
  }
  // Then what would have happened without us: the handler that was there
  // before (Node's WebAssembly trap handler, AddressSanitizer's report), or
  // the default action, which ends the process with this signal.
  if (idx < kSignalCount) {
    const struct sigaction &prev = g_previous[idx];
    if ((prev.sa_flags & SA_SIGINFO) && prev.sa_sigaction) {
      prev.sa_sigaction(sig, info, uctx);
      return;
    }
    if (!(prev.sa_flags & SA_SIGINFO) && prev.sa_handler != SIG_DFL && prev.sa_handler != SIG_IGN) {
      prev.sa_handler(sig);
      return;
    }
    // Ignored before us: a signal someone sent stays ignored (a fault cannot
    // be ignored; the kernel ends the process when it repeats).
    if (!(prev.sa_flags & SA_SIGINFO) && prev.sa_handler == SIG_IGN && info && info->si_code <= 0) return;
  }
  signal(sig, SIG_DFL);
  // A fault repeats when the instruction runs again on return; a signal
  // that was sent (kill, raise, abort) has to be sent again.
  if (!info || info->si_code <= 0 || sig == SIGABRT) raise(sig);
}

}  // namespace

void crash_trace_install() {
  static std::once_flag once;
  std::call_once(once, [] {
    g_loop_tid = syscall(SYS_gettid);
    stack_t current{};
    if (sigaltstack(nullptr, &current) == 0 && (current.ss_flags & SS_DISABLE)) {
      stack_t ss{};
      ss.ss_sp = g_alt_stack;
      ss.ss_size = sizeof g_alt_stack;
      sigaltstack(&ss, nullptr);
    }
    for (int i = 0; i < kSignalCount; ++i) {
      struct sigaction sa{};
      sa.sa_sigaction = on_crash;
      sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
      sigemptyset(&sa.sa_mask);
      sigaction(kSignals[i], &sa, &g_previous[i]);
    }
  });
}

void crash_trace_set_log_source(CrashLogSource source) { g_log_source.store(source, std::memory_order_relaxed); }

const char *crash_trace_library_of(const void *fn) {
  static std::mutex mu;
  static std::set<std::string> names;  // never shrinks: the pointers handed out stay valid
  Dl_info di;
  if (!fn || !dladdr(fn, &di) || !di.dli_fname) return "a module";
  std::lock_guard<std::mutex> lock(mu);
  return names.insert(di.dli_fname).first->c_str();
}

}  // namespace sb
