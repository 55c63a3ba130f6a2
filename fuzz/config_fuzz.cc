// libFuzzer target for the mesibo.conf parser. The configuration is user
// input: whatever bytes it holds, the parser must either accept a file that
// honours the grammar's guarantees or reject it with a located error.
//
//   clang++ -g -O1 -fsanitize=fuzzer,address -std=c++17 -Iinclude -Icpp \
//     cpp/config.cc fuzz/config_fuzz.cc -o /tmp/config_fuzz
//   /tmp/config_fuzz -max_total_time=60
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "config.h"

namespace {

bool is_key(const std::string &k) {
  if (k.empty()) return false;
  char c0 = k[0];
  if (!((c0 >= 'A' && c0 <= 'Z') || (c0 >= 'a' && c0 <= 'z') || c0 == '_')) return false;
  for (char c : k)
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
          c == '-'))
      return false;
  return true;
}

bool is_module_name(const std::string &n) {
  if (n.empty()) return false;
  for (char c : n)
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) return false;
  return true;
}

// A value is trimmed and holds no NUL and no newline: it came from one line.
bool is_value(const std::string &v) {
  if (v.find('\0') != std::string::npos || v.find('\n') != std::string::npos) return false;
  if (v.empty()) return true;
  auto blank = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'; };
  return !blank(v.front()) && !blank(v.back());
}

bool is_known_setting(const std::string &k) {
  for (const char *const *s = sb::kConfigSettings; *s; ++s)
    if (k == *s) return true;
  return false;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::string_view text(reinterpret_cast<const char *>(data), size);
  int lines = 1;
  for (char c : text) lines += c == '\n';

  sb::Config cfg;
  sb::ConfigError err;
  if (!sb::config_parse(text, "fuzz.conf", ".", cfg, err)) {
    if (err.code.empty() || err.message.empty() || err.file != "fuzz.conf") std::abort();
    if (err.line < 1 || err.line > lines) std::abort();
    return 0;
  }

  int prev = 0;
  for (size_t i = 0; i < cfg.settings.size(); ++i) {
    const sb::ConfigItem &s = cfg.settings[i];
    if (!is_key(s.key) || !is_known_setting(s.key) || !is_value(s.value)) std::abort();
    if (s.line <= prev || s.line > lines) std::abort();  // file order, one per line
    prev = s.line;
    if (cfg.setting(s.key) != &s.value) std::abort();    // each setting at most once
  }

  prev = 0;
  for (const sb::ModuleDecl &m : cfg.modules) {
    if (!is_module_name(m.name)) std::abort();
    if (m.line <= prev || m.line > lines) std::abort();
    int item_prev = m.line;
    for (const sb::ConfigItem &i : m.items) {
      if (!is_key(i.key) || !is_value(i.value)) std::abort();
      if (i.line <= item_prev || i.line > lines) std::abort();  // items follow their module line
      item_prev = i.line;
      if (m.item(i.key) != &i.value) std::abort();              // each key once per block
    }
    prev = item_prev;
  }
  return 0;
}
