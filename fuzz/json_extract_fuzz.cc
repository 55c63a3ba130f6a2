// libFuzzer target for sb::json_extract. The input is a key (up to 16 bytes,
// ended early by a NUL) followed by the text. The text is copied into a block
// of exactly its size so ASan catches any read past len, and the search is
// repeated from `next` the way a module walks every occurrence. A prefix of
// the text must give nothing or the same first value: a value cut short by
// len is never returned as a shorter one.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "json_extract.h"

namespace {
constexpr size_t kMaxKey = 16;
constexpr int kMaxMatches = 4096;

// The first value of `key` in an exact-size copy of [text, text+len).
std::string first_value(const uint8_t *text, size_t len, const char *key, bool *found) {
  char *src = static_cast<char *>(std::malloc(len));
  if (len) std::memcpy(src, text, len);
  char *value = sb::json_extract(src, len, key, nullptr);
  std::free(src);
  *found = value != nullptr;
  std::string s = value ? value : "";
  std::free(value);
  return s;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  size_t key_len = 0;
  while (key_len < size && key_len < kMaxKey && data[key_len] != 0) ++key_len;
  std::string key(reinterpret_cast<const char *>(data), key_len);
  size_t skip = key_len < size && data[key_len] == 0 ? key_len + 1 : key_len;

  size_t len = size - skip;
  char *src = static_cast<char *>(std::malloc(len));
  if (len) std::memcpy(src, data + skip, len);

  const char *at = src;
  size_t left = len;
  for (int i = 0; i < kMaxMatches; ++i) {
    const char *next = nullptr;
    char *value = sb::json_extract(at, left, key.c_str(), &next);
    if (!value) {
      if (next != nullptr) std::abort();  // next must be untouched on a miss
      break;
    }
    std::free(value);
    // A match consumes at least one byte of value and stays inside the text.
    if (next <= at || next > src + len) std::abort();
    left -= static_cast<size_t>(next - at);
    at = next;
  }
  std::free(src);

  bool full_found = false, cut_found = false;
  std::string full = first_value(data + skip, len, key.c_str(), &full_found);
  std::string cut = first_value(data + skip, len * 3 / 4, key.c_str(), &cut_found);
  if (cut_found && (!full_found || cut != full)) std::abort();
  return 0;
}
