// mesibo.conf as Switchboard reads it. Each TEST states one rule of the
// format (docs/config.md); together they are the grammar, by example.
#include "check.h"
#include "config.h"

#include <climits>
#include <cstdlib>
#include <fstream>
#include <unistd.h>

using sb::Config;
using sb::ConfigError;

namespace {

struct Parsed {
  bool ok;
  Config cfg;
  ConfigError err;
};

Parsed parse(std::string_view text) {
  Parsed p{};
  p.ok = sb::config_parse(text, "mesibo.conf", ".", p.cfg, p.err);
  return p;
}

bool has(const std::string &s, std::string_view part) { return s.find(part) != std::string::npos; }

// Names of the items of one module, in order, joined: short to compare.
std::string item_keys(const sb::ModuleDecl &m) {
  std::string s;
  for (const auto &i : m.items) s += (s.empty() ? "" : ",") + i.key;
  return s;
}

std::string module_names(const Config &c) {
  std::string s;
  for (const auto &m : c.modules) s += (s.empty() ? "" : ",") + m.name;
  return s;
}

std::string temp_dir() {
  char tmpl[] = "/tmp/sb_config_test_XXXXXX";
  const char *d = mkdtemp(tmpl);
  return d ? d : "/tmp";
}

}  // namespace

// ---------------------------------------------------------------------------
// The forms a valid file can take

TEST("the example from the specification parses into settings and a chain") {
  auto r = parse(
      "# server\n"
      "listen = 127.0.0.1:5222\n"
      "module_dir = ./modules\n"
      "app_token = change-me\n"
      "\n"
      "module filter {\n"
      "\tblocked_words = alpha,beta,gamma\n"
      "\tlog = 0\n"
      "}\n"
      "\n"
      "module skeleton\n");
  CHECK(r.ok);
  CHECK_EQ(r.cfg.file, "mesibo.conf");
  CHECK_EQ(r.cfg.dir, ".");
  CHECK_EQ(r.cfg.settings.size(), 3u);
  CHECK_EQ(r.cfg.settings[0].key, "listen");
  CHECK_EQ(r.cfg.settings[0].value, "127.0.0.1:5222");
  CHECK_EQ(r.cfg.settings[0].line, 2);
  CHECK_EQ(*r.cfg.setting("module_dir"), "./modules");
  CHECK_EQ(*r.cfg.setting("app_token"), "change-me");
  CHECK_EQ(module_names(r.cfg), "filter,skeleton");
  CHECK_EQ(r.cfg.modules[0].line, 6);
  CHECK_EQ(item_keys(r.cfg.modules[0]), "blocked_words,log");
  CHECK_EQ(*r.cfg.modules[0].item("blocked_words"), "alpha,beta,gamma");
  CHECK_EQ(r.cfg.modules[0].items[1].line, 8);
  CHECK_EQ(r.cfg.modules[1].line, 11);
  CHECK(r.cfg.modules[1].items.empty());
}

TEST("an empty file, or one of only comments and blank lines, is a valid empty configuration") {
  for (const char *text : {"", "\n\n", "# nothing here\n   \n\t# indented comment\n"}) {
    auto r = parse(text);
    CHECK(r.ok);
    CHECK(r.cfg.settings.empty());
    CHECK(r.cfg.modules.empty());
  }
}

TEST("'module NAME' alone declares a module without configuration") {
  auto r = parse("module skeleton\n");
  CHECK(r.ok);
  CHECK_EQ(module_names(r.cfg), "skeleton");
  CHECK(r.cfg.modules[0].items.empty());
  CHECK_EQ(r.cfg.modules[0].line, 1);
}

TEST("'module=NAME' and 'module = NAME' are the same as 'module NAME'") {
  auto r = parse("module=one\nmodule = two\n  module\t=\tthree  \nmodule =four\n");
  CHECK(r.ok);
  CHECK_EQ(module_names(r.cfg), "one,two,three,four");
  for (const auto &m : r.cfg.modules) CHECK(m.items.empty());
  CHECK(r.cfg.settings.empty());
}

TEST("'module NAME {' opens a block of key = value items closed by '}' on its own line") {
  auto r = parse("module skeleton {\n  file_name = xyz\n  auth_key = abc\n}\n");
  CHECK(r.ok);
  CHECK_EQ(item_keys(r.cfg.modules[0]), "file_name,auth_key");
  CHECK_EQ(*r.cfg.modules[0].item("file_name"), "xyz");
  CHECK_EQ(*r.cfg.modules[0].item("auth_key"), "abc");
}

TEST("the opening brace may touch the name") {
  auto r = parse("module translate{\n  lang = en\n}\n");
  CHECK(r.ok);
  CHECK_EQ(module_names(r.cfg), "translate");
  CHECK_EQ(*r.cfg.modules[0].item("lang"), "en");
}

TEST("'{}' or '{ }' on the module line is an empty block") {
  auto r = parse("module a {}\nmodule b { }\nmodule c{}\nmodule d\t{\t}\t\n");
  CHECK(r.ok);
  CHECK_EQ(module_names(r.cfg), "a,b,c,d");
  for (const auto &m : r.cfg.modules) CHECK(m.items.empty());
}

TEST("a block with no items gives an empty item list") {
  auto r = parse("module a {\n}\nmodule b {\n\n# only a comment\n\n}\n");
  CHECK(r.ok);
  CHECK_EQ(r.cfg.modules.size(), 2u);
  CHECK(r.cfg.modules[0].items.empty());
  CHECK(r.cfg.modules[1].items.empty());
}

TEST("the closing brace may have blanks around it") {
  auto r = parse("module a {\n  x = 1\n   \t}  \t\nlisten = :1\n");
  CHECK(r.ok);
  CHECK_EQ(*r.cfg.modules[0].item("x"), "1");
  CHECK_EQ(*r.cfg.setting("listen"), ":1");
}

TEST("mesibo's chatbot sample, with its uneven indentation, is accepted as it is") {
  auto r = parse(
      "module chatbot{\n"
      "    project = mesibo-chatbot\n"
      "\t    endpoint = https://dialogflow.googleapis.com/v2\n"
      "\t    access_token = xxxxxx.Kl6iBzVH7dvV2XywzpnehLJwczdClfMoAHHOeTVNFkmTjqVX7VagKHH1-xxxxxxx\n"
      "\t    language = en\n"
      "\t    address = my_chatbot\n"
      "\t    log = 1\n"
      "}\n");
  CHECK(r.ok);
  CHECK_EQ(item_keys(r.cfg.modules[0]), "project,endpoint,access_token,language,address,log");
  CHECK_EQ(*r.cfg.modules[0].item("endpoint"), "https://dialogflow.googleapis.com/v2");
  CHECK_EQ(*r.cfg.modules[0].item("log"), "1");
}

TEST("values keep inner spaces, further '=' signs and '#', and lose surrounding blanks") {
  auto r = parse(
      "app_token =   abc#def==  \n"
      "module m {\n"
      "  greeting =  hello,   big world \n"
      "  url = https://example.com/hook?a=b&c=d#frag\n"
      "  query=x = y\n"
      "  hash = # not a comment\n"
      "}\n");
  CHECK(r.ok);
  CHECK_EQ(*r.cfg.setting("app_token"), "abc#def==");
  const auto &m = r.cfg.modules[0];
  CHECK_EQ(*m.item("greeting"), "hello,   big world");
  CHECK_EQ(*m.item("url"), "https://example.com/hook?a=b&c=d#frag");
  CHECK_EQ(*m.item("query"), "x = y");
  CHECK_EQ(*m.item("hash"), "# not a comment");
}

TEST("an empty value is allowed and is distinct from an absent key") {
  auto r = parse("app_token =\nlog_level =   \nmodule m {\n  x =\n}\n");
  CHECK(r.ok);
  CHECK(r.cfg.setting("app_token") != nullptr);
  CHECK_EQ(*r.cfg.setting("app_token"), "");
  CHECK_EQ(*r.cfg.setting("log_level"), "");
  CHECK_EQ(*r.cfg.modules[0].item("x"), "");
  CHECK(r.cfg.setting("listen") == nullptr);
  CHECK(r.cfg.modules[0].item("y") == nullptr);
}

TEST("keys may use letters, digits, '_', '.' and '-' after a letter or '_'") {
  auto r = parse("module m {\n  a.b-c_d9 = 1\n  _private = 2\n  X = 3\n}\n");
  CHECK(r.ok);
  CHECK_EQ(item_keys(r.cfg.modules[0]), "a.b-c_d9,_private,X");
}

TEST("module names may use letters, digits and '_'") {
  auto r = parse("module Mod_2\nmodule 3d\nmodule _x {}\n");
  CHECK(r.ok);
  CHECK_EQ(module_names(r.cfg), "Mod_2,3d,_x");
}

TEST("the same module declared twice is two instances, each with its own items, in file order") {
  auto r = parse(
      "module filter {\n  blocked_words = alpha\n}\n"
      "module skeleton\n"
      "module filter {\n  blocked_words = beta\n  log = 2\n}\n"
      "module=filter\n");
  CHECK(r.ok);
  CHECK_EQ(module_names(r.cfg), "filter,skeleton,filter,filter");
  CHECK_EQ(*r.cfg.modules[0].item("blocked_words"), "alpha");
  CHECK(r.cfg.modules[0].item("log") == nullptr);
  CHECK_EQ(*r.cfg.modules[2].item("blocked_words"), "beta");
  CHECK_EQ(*r.cfg.modules[2].item("log"), "2");
  CHECK(r.cfg.modules[3].items.empty());
  CHECK_EQ(r.cfg.modules[2].line, 5);
}

TEST("'path' and 'log' are ordinary items: the server reads them, the parser only keeps them") {
  auto r = parse("module native {\n  path = /opt/mods/native.so\n  log = 3\n}\n");
  CHECK(r.ok);
  CHECK_EQ(*r.cfg.modules[0].item("path"), "/opt/mods/native.so");
  CHECK_EQ(*r.cfg.modules[0].item("log"), "3");
}

TEST("'#' starts a comment only as the first non-blank character, at any level") {
  auto r = parse(
      "# top comment\n"
      "   # indented comment\n"
      "listen = 0.0.0.0:5222 # kept: not a comment\n"
      "module m {\n"
      "  # comment inside a block\n"
      "  # }  (not a closing brace: it is commented out)\n"
      "  # module other   (not a declaration either)\n"
      "  k = v\n"
      "}\n");
  CHECK(r.ok);
  CHECK_EQ(*r.cfg.setting("listen"), "0.0.0.0:5222 # kept: not a comment");
  CHECK_EQ(module_names(r.cfg), "m");
  CHECK_EQ(item_keys(r.cfg.modules[0]), "k");
}

TEST("words that merely start with 'module' are settings, not declarations") {
  auto r = parse("module_dir = ./mods\nmodule m {\n  module_opt = 1\n}\n");
  CHECK(r.ok);
  CHECK_EQ(*r.cfg.setting("module_dir"), "./mods");
  CHECK_EQ(*r.cfg.modules[0].item("module_opt"), "1");
}

TEST("CRLF line endings read like LF, and leave no CR in values") {
  auto r = parse("# crlf\r\nlisten = :5222\r\n\r\nmodule m {\r\n  k = v\r\n}\r\nmodule n\r\nmodule=o\r\n");
  CHECK(r.ok);
  CHECK_EQ(*r.cfg.setting("listen"), ":5222");
  CHECK_EQ(module_names(r.cfg), "m,n,o");
  CHECK_EQ(*r.cfg.modules[0].item("k"), "v");
}

TEST("a leading UTF-8 byte order mark is skipped, and line numbers are unaffected") {
  auto r = parse("\xEF\xBB\xBFlisten = :1\nmodule m\n");
  CHECK(r.ok);
  CHECK_EQ(r.cfg.settings[0].key, "listen");
  CHECK_EQ(r.cfg.settings[0].line, 1);
  CHECK_EQ(r.cfg.modules[0].line, 2);
  auto bom_only = parse("\xEF\xBB\xBF");
  CHECK(bom_only.ok);
}

TEST("tabs are blanks, and the last line needs no newline") {
  auto r = parse("\tlisten\t=\t:1\t\nmodule\tm\t{\n\tk\t=\tv w\t\n\t}\nmodule last");
  CHECK(r.ok);
  CHECK_EQ(*r.cfg.setting("listen"), ":1");
  CHECK_EQ(*r.cfg.modules[0].item("k"), "v w");
  CHECK_EQ(module_names(r.cfg), "m,last");
}

TEST("every known setting is accepted, and the list is nullptr-terminated") {
  std::string text;
  int n = 0;
  for (const char *const *k = sb::kConfigSettings; *k; ++k, ++n) text += std::string(*k) + " = x\n";
  CHECK_EQ(n, 30);
  auto r = parse(text);
  CHECK(r.ok);
  CHECK_EQ(r.cfg.settings.size(), 30u);
  CHECK(r.cfg.setting("cluster") != nullptr);
  CHECK(r.cfg.setting("node") != nullptr);
  CHECK(r.cfg.setting("metrics_listen") != nullptr);
  CHECK(r.cfg.setting("metrics_token") != nullptr);
  CHECK(r.cfg.setting("max_inbox_bytes") != nullptr);
  CHECK(r.cfg.setting("log_format") != nullptr);
  CHECK(r.cfg.setting("durable") != nullptr);
  CHECK(r.cfg.setting("durable_grace") != nullptr);
  CHECK(r.cfg.setting("http_ca_file") != nullptr);
}

TEST("the same item key may appear in different blocks") {
  auto r = parse("module a {\n  log = 1\n}\nmodule b {\n  log = 2\n}\n");
  CHECK(r.ok);
  CHECK_EQ(*r.cfg.modules[0].item("log"), "1");
  CHECK_EQ(*r.cfg.modules[1].item("log"), "2");
}

// ---------------------------------------------------------------------------
// Paths

TEST("resolve_path keeps absolute paths and puts relative ones under the config folder") {
  Config c;
  c.dir = "/etc/mesibo";
  CHECK_EQ(c.resolve_path("/usr/lib/mesibo"), "/usr/lib/mesibo");
  CHECK_EQ(c.resolve_path("modules"), "/etc/mesibo/modules");
  CHECK_EQ(c.resolve_path("./modules"), "/etc/mesibo/modules");  // "." segments are dropped
  CHECK_EQ(c.resolve_path("/opt//x/./y.so"), "/opt/x/y.so");
  CHECK_EQ(c.resolve_path("../data"), "/etc/mesibo/../data");
  CHECK_EQ(c.resolve_path(""), "");
  c.dir = ".";
  CHECK_EQ(c.resolve_path("data"), "data");
  c.dir = "/";
  CHECK_EQ(c.resolve_path("data"), "/data");
  c.dir = "conf/";
  CHECK_EQ(c.resolve_path("data"), "conf/data");
}

TEST("config_load reads a real file and takes its folder as dir") {
  std::string dir = temp_dir();
  std::string path = dir + "/mesibo.conf";
  {
    std::ofstream f(path, std::ios::binary);
    f << "module_dir = modules\r\nmodule filter {\r\n  log = 1\r\n}\r\n";
  }
  Config c;
  ConfigError e;
  CHECK(sb::config_load(path, c, e));
  CHECK_EQ(c.file, path);
  CHECK_EQ(c.dir, dir);
  CHECK_EQ(c.resolve_path(*c.setting("module_dir")), dir + "/modules");
  CHECK_EQ(*c.modules[0].item("log"), "1");

  // A bare file name lives in the current folder.
  char cwd[PATH_MAX];
  CHECK(getcwd(cwd, sizeof cwd) != nullptr);
  CHECK_EQ(chdir(dir.c_str()), 0);
  Config here;
  CHECK(sb::config_load("mesibo.conf", here, e));
  CHECK_EQ(here.dir, ".");
  CHECK_EQ(chdir(cwd), 0);

  std::remove(path.c_str());
  rmdir(dir.c_str());
}

TEST("config_load reports a parse error with the file's path") {
  std::string dir = temp_dir();
  std::string path = dir + "/bad.conf";
  {
    std::ofstream f(path);
    f << "listen = :1\nlisen = :2\n";
  }
  Config c;
  ConfigError e;
  CHECK(!sb::config_load(path, c, e));
  CHECK_EQ(e.code, "E_CONFIG_UNKNOWN_SETTING");
  CHECK_EQ(e.file, path);
  CHECK_EQ(e.line, 2);
  CHECK(has(e.to_string(), path + ":2: unknown setting \"lisen\""));
  std::remove(path.c_str());
  rmdir(dir.c_str());
}

TEST("E_CONFIG_READ: a missing file names the path and the system's reason, with no line") {
  Config c;
  ConfigError e;
  CHECK(!sb::config_load("/nonexistent/dir/mesibo.conf", c, e));
  CHECK_EQ(e.code, "E_CONFIG_READ");
  CHECK_EQ(e.file, "/nonexistent/dir/mesibo.conf");
  CHECK_EQ(e.line, 0);
  CHECK(has(e.message, "No such file or directory"));
  CHECK(has(e.message, "expected a readable text file"));
  CHECK_EQ(e.to_string(), "/nonexistent/dir/mesibo.conf: " + e.message);
}

TEST("E_CONFIG_READ: a folder given as the config file is a read error, not an empty config") {
  std::string dir = temp_dir();
  Config c;
  ConfigError e;
  CHECK(!sb::config_load(dir, c, e));
  CHECK_EQ(e.code, "E_CONFIG_READ");
  CHECK(has(e.message, "Is a directory"));
  rmdir(dir.c_str());
}

// ---------------------------------------------------------------------------
// Errors: each has a stable code, the 1-based line, and says what was expected

TEST("to_string is FILE:LINE: MESSAGE") {
  ConfigError e{"E_X", "mesibo.conf", 7, "something"};
  CHECK_EQ(e.to_string(), "mesibo.conf:7: something");
  e.line = 0;
  CHECK_EQ(e.to_string(), "mesibo.conf: something");
}

TEST("E_CONFIG_EXPECTED_EQUALS inside a block reads as in the documentation") {
  auto r = parse(
      "# server\n"
      "listen = :5222\n"
      "\n"
      "module skeleton\n"
      "\n"
      "module filter {\n"
      "  blocked words\n"
      "}\n");
  CHECK(!r.ok);
  CHECK_EQ(r.err.code, "E_CONFIG_EXPECTED_EQUALS");
  CHECK_EQ(r.err.line, 7);
  CHECK_EQ(r.err.file, "mesibo.conf");
  CHECK_EQ(r.err.to_string(),
           "mesibo.conf:7: expected \"key = value\" inside module \"filter\" block, found \"blocked words\"");
}

TEST("E_CONFIG_EXPECTED_EQUALS at the top level names both accepted shapes") {
  auto r = parse("listen = :1\nhello world\n");
  CHECK(!r.ok);
  CHECK_EQ(r.err.code, "E_CONFIG_EXPECTED_EQUALS");
  CHECK_EQ(r.err.line, 2);
  CHECK(has(r.err.message, "expected \"key = value\" or a module declaration"));
  CHECK(has(r.err.message, "found \"hello world\""));
}

TEST("E_CONFIG_EXPECTED_EQUALS: a capitalised 'Module' is pointed out") {
  auto r = parse("Module filter\n");
  CHECK(!r.ok);
  CHECK_EQ(r.err.code, "E_CONFIG_EXPECTED_EQUALS");
  CHECK_EQ(r.err.line, 1);
  CHECK(has(r.err.message, "lowercase"));
  auto eq = parse("MODULE = filter\n");
  CHECK_EQ(eq.err.code, "E_CONFIG_UNKNOWN_SETTING");
  CHECK(has(eq.err.message, "lowercase"));
}

TEST("E_CONFIG_UNCLOSED_BLOCK at the end of the file points at the line that opened it") {
  auto r = parse("listen = :1\n\nmodule filter {\n  log = 1\n\n");
  CHECK(!r.ok);
  CHECK_EQ(r.err.code, "E_CONFIG_UNCLOSED_BLOCK");
  CHECK_EQ(r.err.line, 3);
  CHECK(has(r.err.message, "module \"filter\" block opened on line 3 is not closed"));
  CHECK(has(r.err.message, "expected \"}\""));
  CHECK(has(r.err.message, "end of the file"));
}

TEST("E_CONFIG_UNCLOSED_BLOCK when a module line appears inside an open block") {
  auto r = parse("module a {\n  x = 1\nmodule b {\n  y = 2\n}\n");
  CHECK(!r.ok);
  CHECK_EQ(r.err.code, "E_CONFIG_UNCLOSED_BLOCK");
  CHECK_EQ(r.err.line, 3);
  CHECK(has(r.err.message, "module \"a\" block opened on line 1"));
  CHECK(has(r.err.message, "expected \"}\" on a line of its own before \"module b {\""));
  for (const char *inner : {"module b\n", "module=b\n", "module = b\n", "module\n", "module{\n"}) {
    auto s = parse(std::string("module a {\n") + inner + "}\n");
    CHECK_EQ(s.err.code, "E_CONFIG_UNCLOSED_BLOCK");
    CHECK_EQ(s.err.line, 2);
  }
}

TEST("E_CONFIG_DUPLICATE_KEY for a setting names both lines") {
  auto r = parse("listen = :1\nmodule m\nlisten = :2\n");
  CHECK(!r.ok);
  CHECK_EQ(r.err.code, "E_CONFIG_DUPLICATE_KEY");
  CHECK_EQ(r.err.line, 3);
  CHECK(has(r.err.message, "\"listen\" is set twice, on line 1 and line 3"));
  CHECK(has(r.err.message, "expected each setting once"));
}

TEST("E_CONFIG_DUPLICATE_KEY for an item names the module and both lines") {
  auto r = parse("module filter {\n  log = 1\n  words = a\n  log = 2\n}\n");
  CHECK(!r.ok);
  CHECK_EQ(r.err.code, "E_CONFIG_DUPLICATE_KEY");
  CHECK_EQ(r.err.line, 4);
  CHECK(has(r.err.message, "\"log\" is set twice in module \"filter\" block, on line 2 and line 4"));
  CHECK(has(r.err.message, "expected each item once per block"));
}

TEST("E_CONFIG_UNKNOWN_SETTING names the key and lists every known setting") {
  auto r = parse("listen = :1\nlisen = :2\n");
  CHECK(!r.ok);
  CHECK_EQ(r.err.code, "E_CONFIG_UNKNOWN_SETTING");
  CHECK_EQ(r.err.line, 2);
  CHECK(has(r.err.message, "unknown setting \"lisen\"; expected one of: listen, module_dir"));
  for (const char *const *k = sb::kConfigSettings; *k; ++k) CHECK(has(r.err.message, *k));
  auto mod = parse("modules = a\n");
  CHECK_EQ(mod.err.code, "E_CONFIG_UNKNOWN_SETTING");
}

TEST("E_CONFIG_BAD_KEY for a key outside the allowed characters, at either level") {
  auto top = parse("\n\nbad key = 1\n");
  CHECK(!top.ok);
  CHECK_EQ(top.err.code, "E_CONFIG_BAD_KEY");
  CHECK_EQ(top.err.line, 3);
  CHECK(has(top.err.message, "expected a setting name before \"=\""));
  CHECK(has(top.err.message, "found \"bad key\""));

  auto empty = parse("= value\n");
  CHECK_EQ(empty.err.code, "E_CONFIG_BAD_KEY");
  CHECK(has(empty.err.message, "found nothing"));

  auto item = parse("module m {\n  ok = 1\n  9lives = 2\n}\n");
  CHECK_EQ(item.err.code, "E_CONFIG_BAD_KEY");
  CHECK_EQ(item.err.line, 3);
  CHECK(has(item.err.message, "expected an item name before \"=\" inside module \"m\" block"));
  CHECK(has(item.err.message, "found \"9lives\""));

  for (const char *bad : {"a/b = 1", "\"quoted\" = 1", "-x = 1", ".x = 1", "k\xC3\xA9 = 1", "{ = 1"}) {
    auto b = parse(std::string("module m {\n") + bad + "\n}\n");
    CHECK_EQ(b.err.code, "E_CONFIG_BAD_KEY");
    CHECK_EQ(b.err.line, 2);
  }
}

TEST("E_CONFIG_UNEXPECTED_BRACE for a '}' with no open block") {
  auto r = parse("listen = :1\n}\n");
  CHECK(!r.ok);
  CHECK_EQ(r.err.code, "E_CONFIG_UNEXPECTED_BRACE");
  CHECK_EQ(r.err.line, 2);
  CHECK(has(r.err.message, "no module block is open"));
  CHECK(has(r.err.message, "expected \"}\" only to close a \"module NAME {\" block"));
  auto twice = parse("module a {\n}\n}\n");
  CHECK_EQ(twice.err.code, "E_CONFIG_UNEXPECTED_BRACE");
  CHECK_EQ(twice.err.line, 3);
  auto after_one_line_block = parse("module a { }\n}\n");
  CHECK_EQ(after_one_line_block.err.code, "E_CONFIG_UNEXPECTED_BRACE");
  CHECK_EQ(after_one_line_block.err.line, 2);
}

TEST("E_CONFIG_BRACE_ON_NEXT_LINE tells the user to put '{' on the module line") {
  auto r = parse("listen = :1\nmodule filter\n{\n  log = 1\n}\n");
  CHECK(!r.ok);
  CHECK_EQ(r.err.code, "E_CONFIG_BRACE_ON_NEXT_LINE");
  CHECK_EQ(r.err.line, 3);
  CHECK(has(r.err.message, "after \"module filter\" (line 2)"));
  CHECK(has(r.err.message, "expected the opening brace on the module line: write \"module filter {\""));
  // Comments and blank lines in between do not change the diagnosis.
  auto gap = parse("module filter\n\n# options\n  {  \n");
  CHECK_EQ(gap.err.code, "E_CONFIG_BRACE_ON_NEXT_LINE");
  CHECK_EQ(gap.err.line, 4);
  auto eq = parse("module = filter\n{\n");
  CHECK_EQ(eq.err.code, "E_CONFIG_BRACE_ON_NEXT_LINE");
  // A '{' that follows anything else is just a malformed line.
  auto stray = parse("listen = :1\n{\n");
  CHECK_EQ(stray.err.code, "E_CONFIG_EXPECTED_EQUALS");
}

TEST("E_CONFIG_EXPECTED_NEWLINE for text after '{' on the module line") {
  auto r = parse("\nmodule a { x = 1\n}\n");
  CHECK(!r.ok);
  CHECK_EQ(r.err.code, "E_CONFIG_EXPECTED_NEWLINE");
  CHECK_EQ(r.err.line, 2);
  CHECK(has(r.err.message, "expected the end of the line after \"module a {\", found \"x = 1\""));
  CHECK(has(r.err.message, "own line"));
  for (const char *line : {"module a { x = 1 }", "module a {}}", "module a { } # note", "module a{# note"}) {
    auto s = parse(std::string(line) + "\n");
    CHECK_EQ(s.err.code, "E_CONFIG_EXPECTED_NEWLINE");
    CHECK_EQ(s.err.line, 1);
  }
}

TEST("E_CONFIG_EXPECTED_NEWLINE for text after a closing '}'") {
  auto r = parse("module a {\n  x = 1\n} module b\n");
  CHECK(!r.ok);
  CHECK_EQ(r.err.code, "E_CONFIG_EXPECTED_NEWLINE");
  CHECK_EQ(r.err.line, 3);
  CHECK(has(r.err.message, "expected \"}\" alone on its line to close module \"a\" block"));
}

TEST("E_CONFIG_BAD_MODULE_NAME for a missing name") {
  for (const char *text : {"module\n", "module   \n", "module {\n", "module{}\n", "module=\n", "module =  \n"}) {
    auto r = parse(std::string("listen = :1\n") + text);
    CHECK(!r.ok);
    CHECK_EQ(r.err.code, "E_CONFIG_BAD_MODULE_NAME");
    CHECK_EQ(r.err.line, 2);
    CHECK(has(r.err.message, "expected a module name after \"module"));
  }
}

TEST("E_CONFIG_BAD_MODULE_NAME for a name outside letters, digits and '_'") {
  auto r = parse("module my-filter {\n}\n");
  CHECK(!r.ok);
  CHECK_EQ(r.err.code, "E_CONFIG_BAD_MODULE_NAME");
  CHECK_EQ(r.err.line, 1);
  CHECK(has(r.err.message, "expected a module name made of letters, digits and \"_\""));
  CHECK(has(r.err.message, "found \"my-filter\""));
  for (const char *text : {"module a b\n", "module a.b\n", "module \"a\"\n", "module a}\n", "module=a-b\n",
                           "module caf\xC3\xA9\n", "module a b {\n}\n"}) {
    auto s = parse(text);
    CHECK_EQ(s.err.code, "E_CONFIG_BAD_MODULE_NAME");
    CHECK_EQ(s.err.line, 1);
  }
}

TEST("E_CONFIG_BAD_MODULE_NAME: 'module = NAME {' is told to use 'module NAME {'") {
  auto r = parse("module = filter {\n  log = 1\n}\n");
  CHECK(!r.ok);
  CHECK_EQ(r.err.code, "E_CONFIG_BAD_MODULE_NAME");
  CHECK(has(r.err.message, "write \"module NAME {\""));
}

TEST("E_CONFIG_BAD_CHARACTER for a NUL byte anywhere on a line, with its column") {
  using namespace std::string_literals;
  auto value = parse("listen = :1\napp_token = ab\0cd\n"s);
  CHECK(!value.ok);
  CHECK_EQ(value.err.code, "E_CONFIG_BAD_CHARACTER");
  CHECK_EQ(value.err.line, 2);
  CHECK(has(value.err.message, "NUL byte at column 15"));
  CHECK(has(value.err.message, "expected plain text"));
  for (std::string text : {"li\0sten = 1\n"s, "# comment \0\n"s, "module m {\n  k\0 = v\n}\n"s, "module m\0\n"s,
                           "\0"s}) {
    auto r = parse(text);
    CHECK_EQ(r.err.code, "E_CONFIG_BAD_CHARACTER");
  }
  // A UTF-16 file is full of NULs; the message says how to fix that.
  auto utf16 = parse("\xFF\xFEl\0i\0s\0t\0e\0n\0"s);
  CHECK_EQ(utf16.err.code, "E_CONFIG_BAD_CHARACTER");
  CHECK_EQ(utf16.err.line, 1);
  CHECK(has(utf16.err.message, "UTF-8"));
}

// ---------------------------------------------------------------------------
// Robustness

TEST("a failed parse leaves the previous configuration untouched") {
  Config c;
  ConfigError e;
  CHECK(sb::config_parse("listen = :1\nmodule a\n", "<inline>", ".", c, e));
  CHECK(!sb::config_parse("listen = :2\nmodule a {\n", "<inline>", ".", c, e));
  CHECK_EQ(*c.setting("listen"), ":1");
  CHECK_EQ(c.modules.size(), 1u);
  CHECK_EQ(e.file, "<inline>");
}

TEST("the first error in the file is the one reported") {
  auto r = parse("listen = :1\nbogus = 1\n}\nmodule\n");
  CHECK_EQ(r.err.code, "E_CONFIG_UNKNOWN_SETTING");
  CHECK_EQ(r.err.line, 2);
}

TEST("messages escape control characters and shorten very long lines") {
  auto ctl = parse("module m {\n  bell\x07 here\n}\n");
  CHECK_EQ(ctl.err.code, "E_CONFIG_EXPECTED_EQUALS");
  CHECK(has(ctl.err.message, "found \"bell\\x07 here\""));
  auto long_line = parse("module m {\n" + std::string(5000, 'x') + "\n}\n");
  CHECK_EQ(long_line.err.code, "E_CONFIG_EXPECTED_EQUALS");
  CHECK(long_line.err.message.size() < 300);
  CHECK(has(long_line.err.message, "...\""));
}

TEST("every prefix of a valid file either parses or fails on a line inside the prefix") {
  const std::string text =
      "\xEF\xBB\xBF# server\r\nlisten = 127.0.0.1:5222\r\nmodule_dir = ./modules\n"
      "module filter {\n\tblocked_words = a,b\n\tlog = 0\n}\nmodule=x\nmodule y{}\nmodule skeleton\n";
  for (size_t n = 0; n <= text.size(); ++n) {
    Config c;
    ConfigError e;
    std::string_view prefix(text.data(), n);
    int lines = 1;
    for (char ch : prefix) lines += ch == '\n';
    if (!sb::config_parse(prefix, "p", ".", c, e)) {
      CHECK(!e.code.empty());
      CHECK(e.line >= 1 && e.line <= lines);
    }
  }
}
