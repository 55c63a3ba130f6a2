// The asynchronous HTTP, socket and FastCGI helpers are not built yet. Until
// they are, each call fails cleanly and says so once, instead of a module
// failing to load because a symbol is missing.
#include <atomic>
#include <cstdio>

#include "core.h"

#define SB_API extern "C" __attribute__((visibility("default")))

namespace {
void say_unavailable(std::atomic<bool> &said, const char *fn) {
  if (said.exchange(true)) return;
  std::fprintf(stderr,
               "switchboard: %s is not available in this release; it returns MESIBO_RESULT_FAIL (logged once)\n", fn);
}
std::atomic<bool> said_http{false}, said_fcgi{false}, said_socket{false};
}  // namespace

SB_API mesibo_int_t mesibo_util_http(mesibo_http_t *, void *) {
  say_unavailable(said_http, "mesibo_util_http");
  return MESIBO_RESULT_FAIL;
}

SB_API mesibo_int_t mesibo_util_fcgi(mesibo_fcgi_t *, const char *, mesibo_int_t, mesibo_int_t, mesibo_fcgi_ondata_t,
                                     void *) {
  say_unavailable(said_fcgi, "mesibo_util_fcgi");
  return MESIBO_RESULT_FAIL;
}

SB_API mesibo_int_t mesibo_util_socket_connect(mesibo_socket_t *, void *) {
  say_unavailable(said_socket, "mesibo_util_socket_connect");
  return MESIBO_RESULT_FAIL;
}

SB_API mesibo_int_t mesibo_util_socket_write(mesibo_int_t, const char *, mesibo_int_t) { return MESIBO_RESULT_FAIL; }

SB_API void mesibo_util_socket_close(mesibo_int_t) {}
