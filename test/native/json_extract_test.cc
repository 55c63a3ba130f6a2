// sb::json_extract: what a module gets back from mesibo_util_json_extract.
// Every text is copied into a heap block of exactly its length, so the
// address sanitizer reports any read at or past len.
#include "json_extract.h"

#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "check.h"

using Result = std::optional<std::string>;  // nullopt: json_extract returned nullptr

namespace check {
inline std::string show(const Result &r) { return r ? show(*r) : "nullptr"; }
inline std::string show(std::nullopt_t) { return "nullptr"; }
}  // namespace check

namespace {

// A JSON text in a malloc'd block of exactly its size, with no NUL after it.
struct Exact {
  char *p;
  size_t n;
  explicit Exact(std::string_view s) : p(static_cast<char *>(std::malloc(s.size()))), n(s.size()) {
    if (n) std::memcpy(p, s.data(), n);
  }
  ~Exact() { std::free(p); }
  Exact(const Exact &) = delete;
  Exact &operator=(const Exact &) = delete;
};

Result take(char *v) {
  if (!v) return std::nullopt;
  std::string s(v);
  std::free(v);
  return s;
}

Result extract(std::string_view json, const char *key) {
  Exact text(json);
  return take(sb::json_extract(text.p, text.n, key, nullptr));
}

// Every value of `key`, following `next` the way a module would.
std::vector<std::string> extract_all(std::string_view json, const char *key) {
  Exact text(json);
  std::vector<std::string> found;
  const char *at = text.p;
  size_t left = text.n;
  const char *next = nullptr;
  while (char *v = sb::json_extract(at, left, key, &next)) {
    found.emplace_back(v);
    std::free(v);
    left -= static_cast<size_t>(next - at);
    at = next;
  }
  return found;
}

std::string joined(const std::vector<std::string> &v) {
  std::string s;
  for (auto &x : v) s += (s.empty() ? "" : ",") + x;
  return s;
}

const char *const kDialogflow =
    R"({"responseId":"x","queryResult":{"queryText":"hi","fulfillmentText":"Hello \"there\"\n","intent":{"name":"a"}}})";

}  // namespace

TEST("a string value comes back unescaped") {
  CHECK_EQ(extract(R"({ "name":"apple", "game" : "ball" })", "name"), "apple");
  CHECK_EQ(extract(R"({ "name":"apple", "game" : "ball" })", "game"), "ball");
  CHECK_EQ(extract(R"({"a":""})", "a"), "");
}

TEST("the Dialogflow reply: fulfillmentText from inside queryResult") {
  CHECK_EQ(extract(kDialogflow, "fulfillmentText"), "Hello \"there\"\n");
  CHECK_EQ(extract(kDialogflow, "responseId"), "x");
  CHECK_EQ(extract(kDialogflow, "name"), "a");
  CHECK_EQ(extract(kDialogflow, "intent"), R"({"name":"a"})");
}

TEST("every JSON escape is decoded") {
  CHECK_EQ(extract(R"({"a":"\"\\\/\b\f\n\r\t"})", "a"), "\"\\/\b\f\n\r\t");
  CHECK_EQ(extract(R"({"a":"caf\u00e9"})", "a"), "caf\xc3\xa9");
  CHECK_EQ(extract(R"({"a":"\u20AC \u20ac"})", "a"), "\xe2\x82\xac \xe2\x82\xac");
  CHECK_EQ(extract(R"({"a":"\u0041"})", "a"), "A");
}

TEST("a surrogate pair becomes one 4-byte UTF-8 character") {
  CHECK_EQ(extract(R"({"a":"hi \ud83d\ude00!"})", "a"), "hi \xf0\x9f\x98\x80!");
  CHECK_EQ(extract(R"({"a":"\uD83D\uDE00"})", "a"), "\xf0\x9f\x98\x80");
}

TEST("a lone surrogate becomes U+FFFD, as Node would encode it") {
  CHECK_EQ(extract(R"({"a":"x\ud83dy"})", "a"), "x\xef\xbf\xbdy");
  CHECK_EQ(extract(R"({"a":"\ude00"})", "a"), "\xef\xbf\xbd");
  CHECK_EQ(extract(R"({"a":"\ud83d\u0041"})", "a"), "\xef\xbf\xbd" "A");
}

TEST("raw UTF-8 in strings passes through untouched") {
  CHECK_EQ(extract("{\"a\":\"h\xc3\xa9llo \xf0\x9f\x98\x80\"}", "a"), "h\xc3\xa9llo \xf0\x9f\x98\x80");
}

TEST("\\u0000 is decoded in place, so strlen stops there") {
  CHECK_EQ(extract(R"({"a":"ab\u0000cd"})", "a"), "ab");
}

TEST("numbers come back as their literal text") {
  CHECK_EQ(extract(R"({"a":0})", "a"), "0");
  CHECK_EQ(extract(R"({"a":-12})", "a"), "-12");
  CHECK_EQ(extract(R"({"a":3.25})", "a"), "3.25");
  CHECK_EQ(extract(R"({"a":-1.5e-7})", "a"), "-1.5e-7");
  CHECK_EQ(extract(R"({"a":1E+20 , "b":2})", "a"), "1E+20");
  CHECK_EQ(extract(R"({"a":-0.0e0})", "a"), "-0.0e0");
}

TEST("true, false and null come back as their literal text") {
  CHECK_EQ(extract(R"({"t":true,"f":false,"n":null})", "t"), "true");
  CHECK_EQ(extract(R"({"t":true,"f":false,"n":null})", "f"), "false");
  CHECK_EQ(extract(R"({"t":true,"f":false,"n":null})", "n"), "null");
}

TEST("an object or array value comes back as its raw JSON text") {
  CHECK_EQ(extract(R"({"a": {"b": [1, 2], "c":"}"} , "d":1})", "a"), R"({"b": [1, 2], "c":"}"})");
  CHECK_EQ(extract(R"({"a":[1, "x]", {"y":null}, [], {}]})", "a"), R"([1, "x]", {"y":null}, [], {}])");
  CHECK_EQ(extract(R"({"a":[]})", "a"), "[]");
  CHECK_EQ(extract(R"({"a":{ }})", "a"), "{ }");
}

TEST("the first occurrence in document order wins, at any depth") {
  CHECK_EQ(extract(R"({"outer":{"a":1},"a":2})", "a"), "1");
  CHECK_EQ(extract(R"([{"x":[{"y":{"a":"deep"}}]}])", "a"), "deep");
}

TEST("whitespace around names, colons and values is allowed") {
  CHECK_EQ(extract("{ \"a\" \t:\n \"x\" \r\n}", "a"), "x");
  CHECK_EQ(extract("{\"a\":\n[ 1 ,\t2 ]\n}", "a"), "[ 1 ,\t2 ]");
}

TEST("a key name inside a string value never matches") {
  CHECK_EQ(extract(R"({"text":"\"name\":\"evil\"","name":"real"})", "name"), "real");
  CHECK_EQ(extract(R"({"text":"{\"name\":1}"})", "name"), std::nullopt);
  CHECK_EQ(extract(R"({"list":["name",":","bad"],"name":"good"})", "name"), "good");
  CHECK_EQ(extract(R"({"a":"name","b":2})", "name"), std::nullopt);
}

TEST("the whole member name must equal the key") {
  CHECK_EQ(extract(R"({"names":1,"name":2})", "name"), "2");
  CHECK_EQ(extract(R"({"name":1})", "nam"), std::nullopt);
  CHECK_EQ(extract(R"({"name":1})", "names"), std::nullopt);
  CHECK_EQ(extract(R"({"Name":1})", "name"), std::nullopt);
}

TEST("the key is compared with the unescaped member name") {
  CHECK_EQ(extract(R"({"na\u006de":"x"})", "name"), "x");
  CHECK_EQ(extract(R"({"a\"b":1})", "a\"b"), "1");
  CHECK_EQ(extract(R"({"caf\u00e9":1})", "caf\xc3\xa9"), "1");
}

TEST("the empty key matches only a member named \"\"") {
  CHECK_EQ(extract(R"({"":"empty"})", ""), "empty");
  CHECK_EQ(extract(R"({"a":1})", ""), std::nullopt);
}

TEST("an absent key gives nullptr") {
  CHECK_EQ(extract(kDialogflow, "missing"), std::nullopt);
  CHECK_EQ(extract("{}", "a"), std::nullopt);
  CHECK_EQ(extract("", "a"), std::nullopt);
}

TEST("next walks every occurrence in an array of objects") {
  auto names = extract_all(R"({"items":[{"name":"a","n":1},{"name":"b"},{"x":{"name":"c"}}],"name":"d"})", "name");
  CHECK_EQ(names.size(), size_t{4});
  CHECK_EQ(joined(names), "a,b,c,d");
  CHECK_EQ(joined(extract_all(R"([{"id":1},{"id":-2.5},{"id":[3]},{"id":{"id":4}}])", "id")), "1,-2.5,[3],{\"id\":4}");
  CHECK_EQ(extract_all(R"({"a":1})", "b").size(), size_t{0});
}

TEST("next points just after the value") {
  Exact text(R"({"a":"xy" , "b":[1]})");
  const char *next = nullptr;
  CHECK_EQ(take(sb::json_extract(text.p, text.n, "a", &next)), "xy");
  CHECK_EQ(next - text.p, 9);
  CHECK_EQ(take(sb::json_extract(text.p, text.n, "b", &next)), "[1]");
  CHECK_EQ(next - text.p, 19);
}

TEST("next is left untouched when nothing matched") {
  Exact text(R"({"a":1})");
  const char *sentinel = "untouched";
  const char *next = sentinel;
  CHECK_EQ(take(sb::json_extract(text.p, text.n, "b", &next)), std::nullopt);
  CHECK(next == sentinel);
  CHECK_EQ(take(sb::json_extract(text.p, text.n, "a", nullptr)), "1");
}

TEST("a search may start in the middle of a document") {
  CHECK_EQ(extract(R"(, "name":"b"}, {"name":"c"}]})", "name"), "b");
  CHECK_EQ(extract(R"("name":"b"})", "name"), "b");
  CHECK_EQ(extract(R"(]]}}, "a": 1})", "a"), "1");
}

TEST("a len that cuts the text short gives nullptr or the same full value") {
  const std::string doc = R"({"x":[1,{"y":"z"}],"name":"Caf\u00e9 \"ok\"","n":-12.5e3,"o":{"k":[true,null]}})";
  const char *keys[] = {"x", "name", "n", "o", "k"};
  for (const char *key : keys) {
    Result full = extract(doc, key);
    CHECK(full.has_value());
    for (size_t len = 0; len < doc.size(); ++len) {
      Result cut = extract(std::string_view(doc).substr(0, len), key);
      if (cut && cut != full) std::fprintf(stderr, "  key %s, len %zu: %s\n", key, len, cut->c_str());
      CHECK(!cut || cut == full);
    }
  }
  CHECK_EQ(extract(R"({"a":12345})", "a"), "12345");
  CHECK_EQ(extract(std::string_view(R"({"a":12345})", 7), "a"), std::nullopt);
  CHECK_EQ(extract(std::string_view(R"({"a":"abc"})", 9), "a"), std::nullopt);
  CHECK_EQ(extract(std::string_view(R"({"a":"abc"})", 10), "a"), std::nullopt);
  CHECK_EQ(extract(std::string_view(R"({"a":true})", 8), "a"), std::nullopt);
}

TEST("a value must be followed by ',' or '}'") {
  CHECK_EQ(extract(R"({"a":1 2})", "a"), std::nullopt);
  CHECK_EQ(extract(R"({"a":1x})", "a"), std::nullopt);
  CHECK_EQ(extract(R"({"a":truex})", "a"), std::nullopt);
  CHECK_EQ(extract(R"({"a":"x" "y"})", "a"), std::nullopt);
  CHECK_EQ(extract(R"({"a":"x")", "a"), std::nullopt);
}

TEST("malformed text gives nullptr") {
  CHECK_EQ(extract(R"({"a":"abc)", "a"), std::nullopt);        // unterminated string
  CHECK_EQ(extract(R"({"a":"a\xb"})", "a"), std::nullopt);     // bad escape
  CHECK_EQ(extract(R"({"a":"\u12G4"})", "a"), std::nullopt);   // bad \u escape
  CHECK_EQ(extract(R"({"a":"\u12"})", "a"), std::nullopt);     // short \u escape
  CHECK_EQ(extract(R"({"a":"abc\)", "a"), std::nullopt);       // lone backslash at the end
  CHECK_EQ(extract("{\"a\":\"line\nbreak\"}", "a"), std::nullopt);  // raw control character
  CHECK_EQ(extract(R"({"a":})", "a"), std::nullopt);
  CHECK_EQ(extract(R"({"a":)", "a"), std::nullopt);
  CHECK_EQ(extract(R"({"a")", "a"), std::nullopt);
  CHECK_EQ(extract(R"({"a"})", "a"), std::nullopt);
  CHECK_EQ(extract(R"({"a":,"b":1})", "a"), std::nullopt);
  CHECK_EQ(extract(R"({"a":tru})", "a"), std::nullopt);
  CHECK_EQ(extract(R"({"a":nul})", "a"), std::nullopt);
  CHECK_EQ(extract(R"({"a":01})", "a"), std::nullopt);
  CHECK_EQ(extract(R"({"a":1.})", "a"), std::nullopt);
  CHECK_EQ(extract(R"({"a":.5})", "a"), std::nullopt);
  CHECK_EQ(extract(R"({"a":1e})", "a"), std::nullopt);
  CHECK_EQ(extract(R"({"a":-})", "a"), std::nullopt);
  CHECK_EQ(extract(R"({"a":+1})", "a"), std::nullopt);
  CHECK_EQ(extract(R"({"a":[1,]})", "a"), std::nullopt);
  CHECK_EQ(extract(R"({"a":[1 2]})", "a"), std::nullopt);
  CHECK_EQ(extract(R"({"a":{"b"}})", "a"), std::nullopt);
  CHECK_EQ(extract(R"({"a":{"b":1,}})", "a"), std::nullopt);
  CHECK_EQ(extract(R"({"a":{1:2}})", "a"), std::nullopt);
  CHECK_EQ(extract(R"({"a":[})", "a"), std::nullopt);
  CHECK_EQ(extract(R"({"a":'x'})", "a"), std::nullopt);
}

TEST("a malformed string before the key ends the search") {
  CHECK_EQ(extract(R"({"z":"abc, "a":1})", "a"), std::nullopt);
  CHECK_EQ(extract(R"({"z":"\q","a":1})", "a"), std::nullopt);
}

TEST("a value nested up to 64 deep is accepted, deeper is refused") {
  std::string ok = "{\"a\":" + std::string(64, '[') + std::string(64, ']') + "}";
  std::string deep = "{\"a\":" + std::string(65, '[') + std::string(65, ']') + "}";
  CHECK_EQ(extract(ok, "a"), std::string(64, '[') + std::string(64, ']'));
  CHECK_EQ(extract(deep, "a"), std::nullopt);
}

TEST("null arguments and len 0 give nullptr") {
  const char *next = nullptr;
  CHECK(sb::json_extract(nullptr, 7, "a", &next) == nullptr);
  CHECK(sb::json_extract(R"({"a":1})", 7, nullptr, &next) == nullptr);
  CHECK(next == nullptr);
  char *empty = static_cast<char *>(std::malloc(0));
  CHECK(sb::json_extract(empty, 0, "a", &next) == nullptr);
  CHECK(sb::json_extract(empty, 0, "", &next) == nullptr);
  std::free(empty);
}
