// io.h: one uv_async_t drains a queue of closures on the loop thread.
#include "io.h"
#include "vformat.h"

#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <mutex>
#include <thread>
#include <vector>

namespace sb {

namespace {

struct IoState {
  uv_loop_t *loop = nullptr;
  uv_async_t wake{};
  std::thread::id loop_thread;
  std::mutex mu;
  std::vector<std::function<void()>> queue;
  bool attached = false;
};

IoState &io() {
  static IoState s;
  return s;
}

void drain(uv_async_t *) {
  IoState &s = io();
  std::vector<std::function<void()>> batch;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    batch.swap(s.queue);
  }
  for (auto &fn : batch) fn();
}

}  // namespace

void io_attach(uv_loop_t *loop) {
  IoState &s = io();
  std::lock_guard<std::mutex> lock(s.mu);
  if (s.attached) return;
  s.loop = loop;
  s.loop_thread = std::this_thread::get_id();
  uv_async_init(loop, &s.wake, drain);
  // The wake-up alone must not keep a process alive; requests in flight
  // hold their own handles.
  uv_unref(reinterpret_cast<uv_handle_t *>(&s.wake));
  s.attached = true;
}

void io_detach() {
  IoState &s = io();
  std::lock_guard<std::mutex> lock(s.mu);
  if (!s.attached) return;
  s.attached = false;
  s.queue.clear();
  uv_close(reinterpret_cast<uv_handle_t *>(&s.wake), nullptr);
}

uv_loop_t *io_loop() { return io().attached ? io().loop : nullptr; }

bool io_on_loop_thread() { return io().attached && std::this_thread::get_id() == io().loop_thread; }

bool io_post(std::function<void()> fn) {
  IoState &s = io();
  {
    std::lock_guard<std::mutex> lock(s.mu);
    if (!s.attached) return false;
    s.queue.push_back(std::move(fn));
  }
  uv_async_send(&s.wake);
  return true;
}

namespace {
std::atomic<void (*)(std::string)> g_reporter{nullptr};
}  // namespace

void io_set_reporter(void (*report)(std::string text)) { g_reporter.store(report); }

void io_report(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::string text = vformat(fmt, ap);
  va_end(ap);
  if (auto report = g_reporter.load()) {
    report(std::move(text));
    return;
  }
  std::fprintf(stderr, "switchboard: %s\n", text.c_str());
}

}  // namespace sb
