// The event loop that every callback into a module runs on, and the one way
// to get work onto it from any thread. The HTTP, socket and FastCGI clients
// (http_client.cc, socket_client.cc, fcgi_client.cc) are built on it: a
// module may call them from any thread, the work is posted here, and their
// callbacks always run on the loop thread.
#pragma once
#include <uv.h>

#include <functional>
#include <string>

namespace sb {

// Sets the loop (the addon: Node's main loop; native tests: their own). Call
// once, on that loop's thread, before any module is loaded.
void io_attach(uv_loop_t *loop);

// Closes the wake-up handle. Work posted afterwards is dropped.
void io_detach();

// The attached loop, or nullptr.
uv_loop_t *io_loop();

// True on the thread that attached the loop.
bool io_on_loop_thread();

// Runs `fn` on the loop thread: queued in order and the loop woken, from any
// thread (the loop thread included, where it runs on the next loop turn).
// Returns false when no loop is attached.
bool io_post(std::function<void()> fn);

// Reports a line that belongs to no core: an I/O client's failure that a
// module's author needs to see (a refused request, a malformed response, a
// TLS problem), or a line from a module whose instance is gone. Formatted
// like printf, it goes to the reporter set with io_set_reporter, or to
// stderr while none is set. Any thread.
void io_report(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

// Sets where io_report sends its lines (nullptr: stderr). The core sets it
// while a core is open, so the lines reach the server's log.
void io_set_reporter(void (*report)(std::string text));

}  // namespace sb
