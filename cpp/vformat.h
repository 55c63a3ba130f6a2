// printf-style formatting into a std::string, for the log lines the core,
// the I/O clients and modules (mesibo_vlog) write.
#pragma once

#include <cstdarg>
#include <cstdio>
#include <string>

namespace sb {

// The whole text of fmt with ap (no length limit). ap is left unconsumed
// (the caller still va_ends it). An encoding error gives "".
inline std::string vformat(const char *fmt, va_list ap) {
  char buf[1024];
  va_list copy;
  va_copy(copy, ap);
  int n = std::vsnprintf(buf, sizeof buf, fmt, copy);
  va_end(copy);
  if (n < 0) return std::string();
  if (static_cast<size_t>(n) < sizeof buf) return std::string(buf, static_cast<size_t>(n));
  std::string text(static_cast<size_t>(n) + 1, '\0');
  va_copy(copy, ap);
  std::vsnprintf(&text[0], text.size(), fmt, copy);
  va_end(copy);
  text.resize(static_cast<size_t>(n));
  return text;
}

}  // namespace sb
