// A minimal test harness for the native tests: no framework, one header.
// Each *_test.cc defines TESTs; the harness runs them all and prints
// "N passed, N failed" so CI reads the result like any other runner's.
#pragma once
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace check {
struct Case { const char *name; std::function<void()> fn; };
inline std::vector<Case> &cases() { static std::vector<Case> c; return c; }
inline int &failures() { static int f = 0; return f; }
struct Register { Register(const char *n, std::function<void()> f) { cases().push_back({n, std::move(f)}); } };
}  // namespace check

#define SB_CAT2(a, b) a##b
#define SB_CAT(a, b) SB_CAT2(a, b)
#define TEST(name) \
  static void SB_CAT(test_fn_, __LINE__)(); \
  static check::Register SB_CAT(test_reg_, __LINE__)(name, SB_CAT(test_fn_, __LINE__)); \
  static void SB_CAT(test_fn_, __LINE__)()

#define CHECK(cond) do { if (!(cond)) { \
  std::fprintf(stderr, "  %s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); ++check::failures(); } } while (0)
#define CHECK_EQ(a, b) do { auto _a = (a); auto _b = (b); if (!(_a == _b)) { \
  std::fprintf(stderr, "  %s:%d: CHECK_EQ failed: %s == %s\n    left:  %s\n    right: %s\n", __FILE__, __LINE__, #a, #b, \
    check::show(_a).c_str(), check::show(_b).c_str()); ++check::failures(); } } while (0)

namespace check {
inline std::string show(const std::string &s) { return "\"" + s + "\""; }
inline std::string show(std::string_view s) { return "\"" + std::string(s) + "\""; }
inline std::string show(bool b) { return b ? "true" : "false"; }
inline std::string show(const char *s) { return s ? "\"" + std::string(s) + "\"" : "NULL"; }
inline std::string show(char *s) { return show(static_cast<const char *>(s)); }
template <class T> std::string show(const T &v) { return std::to_string(v); }
}  // namespace check

int main() {
  int passed = 0, failed = 0;
  for (auto &c : check::cases()) {
    int before = check::failures();
    c.fn();
    if (check::failures() == before) { ++passed; std::printf("ok   %s\n", c.name); }
    else { ++failed; std::printf("FAIL %s\n", c.name); }
  }
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
