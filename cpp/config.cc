// The mesibo.conf parser. One pass over the lines, first error wins: a server
// must not start on a half-understood configuration, and the first problem is
// the one the user fixes first. The grammar is in docs/config.md.
#include "config.h"

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>

namespace sb {

// Documented one by one in docs/config.md; the server validates the values.
const char *const kConfigSettings[] = {
    "listen",           "module_dir", "app_token",    "data_dir",  "store",
    "tls_cert",         "tls_key",    "max_message_size", "rate_limit", "idle_timeout",
    "log_level",        "log_format", "http_ca_file", "durable",   "durable_grace",
    // Limits (docs/config.md, "Limits").
    "login_timeout", "max_connections", "max_unauthenticated", "max_unauthenticated_per_ip",
    "max_connections_per_ip", "max_connections_per_user", "user_rate_limit", "max_presence", "presence",
    "max_inbox_messages", "max_inbox_bytes",
    // A cluster (docs/cluster.md).
    "cluster", "node",
    // Metrics (docs/operations.md, "Metrics").
    "metrics_listen", "metrics_token", nullptr,
};

const std::string *ModuleDecl::item(std::string_view key) const {
  for (const ConfigItem &i : items)
    if (i.key == key) return &i.value;
  return nullptr;
}

const std::string *Config::setting(std::string_view key) const {
  for (const ConfigItem &s : settings)
    if (s.key == key) return &s.value;
  return nullptr;
}

namespace {
// "./mods/x.so" and "a/./b" read badly in error messages; drop the "."
// segments and doubled slashes. ".." is kept: resolving it lexically is wrong
// across symlinks.
std::string tidy_path(const std::string &p) {
  std::string out;
  size_t i = 0;
  const bool absolute = !p.empty() && p[0] == '/';
  while (i <= p.size()) {
    size_t j = p.find('/', i);
    if (j == std::string::npos) j = p.size();
    std::string seg = p.substr(i, j - i);
    if (!seg.empty() && seg != ".") {
      if (!out.empty() || absolute) out += '/';
      out += seg;
    }
    i = j + 1;
  }
  if (out.empty()) return absolute ? "/" : ".";
  return out;
}
}  // namespace

std::string Config::resolve_path(const std::string &p) const {
  if (p.empty()) return p;
  if (p[0] == '/' || dir.empty()) return tidy_path(p);
  return tidy_path(dir + "/" + p);
}

std::string ConfigError::to_string() const {
  if (line > 0) return file + ":" + std::to_string(line) + ": " + message;
  return file + ": " + message;
}

namespace {

// CR counts as blank so that CRLF files, and a stray CR before the newline,
// read like LF files.
bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'; }

std::string_view trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && is_blank(s[b])) ++b;
  while (e > b && is_blank(s[e - 1])) --e;
  return s.substr(b, e - b);
}

bool is_alpha(char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'); }
bool is_digit(char c) { return c >= '0' && c <= '9'; }

// [A-Za-z_][A-Za-z0-9_.-]*
bool is_key(std::string_view s) {
  if (s.empty() || !(is_alpha(s[0]) || s[0] == '_')) return false;
  for (char c : s)
    if (!(is_alpha(c) || is_digit(c) || c == '_' || c == '.' || c == '-')) return false;
  return true;
}

// [A-Za-z0-9_]+ : the name becomes part of a file name (mesibo_mod_NAME.so)
// and of a C symbol (mesibo_module_NAME_init), so nothing else can work.
bool is_module_name(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s)
    if (!(is_alpha(c) || is_digit(c) || c == '_')) return false;
  return true;
}

bool is_known_setting(std::string_view key) {
  for (const char *const *k = kConfigSettings; *k; ++k)
    if (key == *k) return true;
  return false;
}

std::string known_settings_list() {
  std::string s;
  for (const char *const *k = kConfigSettings; *k; ++k) {
    if (!s.empty()) s += ", ";
    s += *k;
  }
  return s;
}

// A line's text quoted for a message: control bytes escaped so they cannot
// garble a terminal, and long lines shortened (on a UTF-8 boundary).
std::string quote(std::string_view s) {
  constexpr size_t kMax = 80;
  bool cut = false;
  if (s.size() > kMax) {
    size_t n = kMax;
    while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
    s = s.substr(0, n);
    cut = true;
  }
  std::string q = "\"";
  for (char ch : s) {
    unsigned char c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c == 0x7F) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02X", c);
      q += buf;
    } else {
      q += ch;
    }
  }
  return q + (cut ? "...\"" : "\"");
}

// `module` is a declaration only as a whole word: `module_dir = ...` is a
// setting, `module = NAME` and `module{` are declarations.
bool is_module_line(std::string_view s) {
  if (s.substr(0, 6) != "module") return false;
  if (s.size() == 6) return true;
  char c = s[6];
  return is_blank(c) || c == '=' || c == '{';
}

// `Module x`, `MODULE=x`: the keyword is case-sensitive, and a user who wrote
// it capitalised deserves to be told rather than puzzled by a generic error.
bool is_miscased_module_line(std::string_view s) {
  if (s.size() < 6 || s.substr(0, 6) == "module") return false;
  for (size_t i = 0; i < 6; ++i) {
    char c = s[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c != "module"[i]) return false;
  }
  return s.size() == 6 || is_blank(s[6]) || s[6] == '=' || s[6] == '{';
}

const char *const kLowercaseHint = " (the keyword \"module\" is written in lowercase)";

// Files hold far fewer than INT_MAX lines; clamping keeps a pathological
// input from overflowing the counter.
int line_no(size_t n) { return n > static_cast<size_t>(INT_MAX) ? INT_MAX : static_cast<int>(n); }

struct Parser {
  Config cfg;
  ConfigError &err;
  // The module whose `{` is still open: index into cfg.modules, or -1.
  long open = -1;
  // The previous significant line was a module declaration without a block:
  // a `{` on the next line is then a misplaced brace, not a stray one.
  long bare = -1;

  bool fail(const char *code, int line, std::string message) {
    err.code = code;
    err.file = cfg.file;
    err.line = line;
    err.message = std::move(message);
    return false;
  }

  bool line(std::string_view raw, int n);
  bool top_level_line(std::string_view s, int n);
  bool block_line(std::string_view s, int n);
  bool module_line(std::string_view s, int n);
  bool setting_line(std::string_view s, int n);
};

bool Parser::line(std::string_view raw, int n) {
  size_t nul = raw.find('\0');
  if (nul != std::string_view::npos)
    return fail("E_CONFIG_BAD_CHARACTER", n,
                "found a NUL byte at column " + std::to_string(nul + 1) +
                    "; expected plain text: remove the byte (a file saved as UTF-16 or a binary file shows "
                    "this; save the configuration as UTF-8)");
  std::string_view s = trim(raw);
  if (s.empty() || s[0] == '#') return true;
  return open >= 0 ? block_line(s, n) : top_level_line(s, n);
}

bool Parser::top_level_line(std::string_view s, int n) {
  long after_bare = bare;
  bare = -1;
  if (s[0] == '{' && after_bare >= 0) {
    const ModuleDecl &m = cfg.modules[after_bare];
    return fail("E_CONFIG_BRACE_ON_NEXT_LINE", n,
                "found \"{\" on the line after \"module " + m.name + "\" (line " + std::to_string(m.line) +
                    "); expected the opening brace on the module line: write \"module " + m.name +
                    " {\" and delete this line");
  }
  if (s[0] == '}')
    return fail("E_CONFIG_UNEXPECTED_BRACE", n,
                "found \"}\" but no module block is open; expected \"}\" only to close a \"module NAME {\" "
                "block: remove it, or add the missing \"module NAME {\" line above");
  if (is_module_line(s)) return module_line(s, n);
  return setting_line(s, n);
}

bool Parser::module_line(std::string_view s, int n) {
  std::string_view rest = trim(s.substr(6));
  if (!rest.empty() && rest[0] == '=') {
    std::string_view name = trim(rest.substr(1));
    if (name.empty())
      return fail("E_CONFIG_BAD_MODULE_NAME", n,
                  "expected a module name after \"module =\", found nothing: write \"module = NAME\"");
    if (!is_module_name(name)) {
      std::string msg = "expected a module name made of letters, digits and \"_\" after \"module =\", found " +
                        quote(name);
      if (name.find('{') != std::string_view::npos)
        msg += " (the \"module = NAME\" form has no block: write \"module NAME {\" to configure the module)";
      return fail("E_CONFIG_BAD_MODULE_NAME", n, msg);
    }
    cfg.modules.push_back(ModuleDecl{std::string(name), n, {}});
    bare = static_cast<long>(cfg.modules.size()) - 1;
    return true;
  }

  size_t brace = rest.find('{');
  std::string_view name = trim(rest.substr(0, brace));
  if (name.empty())
    return fail("E_CONFIG_BAD_MODULE_NAME", n,
                "expected a module name after \"module\", found " +
                    (rest.empty() ? std::string("nothing") : quote(rest)) +
                    ": write \"module NAME\" or \"module NAME {\"");
  if (!is_module_name(name))
    return fail("E_CONFIG_BAD_MODULE_NAME", n,
                "expected a module name made of letters, digits and \"_\" after \"module\", found " + quote(name) +
                    " (the name picks mesibo_mod_NAME.so and mesibo_module_NAME_init, so nothing else can work)");
  cfg.modules.push_back(ModuleDecl{std::string(name), n, {}});
  long index = static_cast<long>(cfg.modules.size()) - 1;
  if (brace == std::string_view::npos) {
    bare = index;
    return true;
  }
  std::string_view after = trim(rest.substr(brace + 1));
  if (after.empty()) {
    open = index;
    return true;
  }
  if (after == "}") return true;  // `module NAME {}`: an empty block on one line
  return fail("E_CONFIG_EXPECTED_NEWLINE", n,
              "expected the end of the line after \"module " + std::string(name) + " {\", found " + quote(after) +
                  ": put each \"key = value\" item on its own line and \"}\" alone on the last line");
}

bool Parser::setting_line(std::string_view s, int n) {
  size_t eq = s.find('=');
  if (eq == std::string_view::npos) {
    std::string msg = "expected \"key = value\" or a module declaration (\"module NAME\" or \"module NAME {\"), found " +
                      quote(s);
    if (is_miscased_module_line(s)) msg += kLowercaseHint;
    return fail("E_CONFIG_EXPECTED_EQUALS", n, msg);
  }
  std::string_view key = trim(s.substr(0, eq));
  if (!is_key(key))
    return fail("E_CONFIG_BAD_KEY", n,
                "expected a setting name before \"=\" (a letter or \"_\", then letters, digits, \"_\", \".\" or "
                "\"-\"), found " +
                    (key.empty() ? std::string("nothing") : quote(key)));
  if (!is_known_setting(key))
    return fail("E_CONFIG_UNKNOWN_SETTING", n,
                "unknown setting " + quote(key) + "; expected one of: " + known_settings_list() +
                    " (a module's own options go inside its \"module NAME {\" block)" +
                    (is_miscased_module_line(s) ? kLowercaseHint : ""));
  for (const ConfigItem &prev : cfg.settings)
    if (prev.key == key)
      return fail("E_CONFIG_DUPLICATE_KEY", n,
                  "setting " + quote(key) + " is set twice, on line " + std::to_string(prev.line) + " and line " +
                      std::to_string(n) + "; expected each setting once: delete one of them");
  cfg.settings.push_back(ConfigItem{std::string(key), std::string(trim(s.substr(eq + 1))), n});
  return true;
}

bool Parser::block_line(std::string_view s, int n) {
  ModuleDecl &m = cfg.modules[open];
  if (s[0] == '}') {
    if (trim(s.substr(1)).empty()) {
      open = -1;
      return true;
    }
    return fail("E_CONFIG_EXPECTED_NEWLINE", n,
                "expected \"}\" alone on its line to close module \"" + m.name + "\" block, found " + quote(s) +
                    ": move the text after \"}\" to a line of its own");
  }
  if (is_module_line(s)) {
    return fail("E_CONFIG_UNCLOSED_BLOCK", n,
                "module \"" + m.name + "\" block opened on line " + std::to_string(m.line) +
                    " is not closed; expected \"}\" on a line of its own before " + quote(s));
  }
  size_t eq = s.find('=');
  if (eq == std::string_view::npos)
    return fail("E_CONFIG_EXPECTED_EQUALS", n,
                "expected \"key = value\" inside module \"" + m.name + "\" block, found " + quote(s));
  std::string_view key = trim(s.substr(0, eq));
  if (!is_key(key))
    return fail("E_CONFIG_BAD_KEY", n,
                "expected an item name before \"=\" inside module \"" + m.name +
                    "\" block (a letter or \"_\", then letters, digits, \"_\", \".\" or \"-\"), found " +
                    (key.empty() ? std::string("nothing") : quote(key)));
  for (const ConfigItem &prev : m.items)
    if (prev.key == key)
      return fail("E_CONFIG_DUPLICATE_KEY", n,
                  "item " + quote(key) + " is set twice in module \"" + m.name + "\" block, on line " +
                      std::to_string(prev.line) + " and line " + std::to_string(n) +
                      "; expected each item once per block: delete one of them");
  m.items.push_back(ConfigItem{std::string(key), std::string(trim(s.substr(eq + 1))), n});
  return true;
}

}  // namespace

bool config_parse(std::string_view text, const std::string &file, const std::string &dir, Config &out,
                  ConfigError &err) {
  Parser p{Config{file, dir, {}, {}}, err};
  if (text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);

  size_t pos = 0, n = 0;
  for (;;) {
    size_t nl = text.find('\n', pos);
    std::string_view raw = text.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos);
    if (!p.line(raw, line_no(++n))) return false;
    if (nl == std::string_view::npos) break;
    pos = nl + 1;
  }
  if (p.open >= 0) {
    const ModuleDecl &m = p.cfg.modules[p.open];
    return p.fail("E_CONFIG_UNCLOSED_BLOCK", m.line,
                  "module \"" + m.name + "\" block opened on line " + std::to_string(m.line) +
                      " is not closed; expected \"}\" on a line of its own before the end of the file");
  }
  out = std::move(p.cfg);
  return true;
}

bool config_load(const std::string &path, Config &out, ConfigError &err) {
  size_t slash = path.rfind('/');
  std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);

  auto read_error = [&](int e) {
    err.code = "E_CONFIG_READ";
    err.file = path;
    err.line = 0;
    err.message = std::string("cannot read the configuration file: ") + std::strerror(e) +
                  "; expected a readable text file at this path (check the path and its permissions)";
    return false;
  };

  std::FILE *f = std::fopen(path.c_str(), "rb");
  if (!f) return read_error(errno);
  errno = 0;
  std::string text;
  char buf[16384];
  size_t got;
  while ((got = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, got);
  // fread reports a failure (a directory, an I/O error) only through ferror.
  int e = std::ferror(f) ? (errno ? errno : EIO) : 0;
  std::fclose(f);
  if (e) return read_error(e);
  return config_parse(text, path, dir, out, err);
}

}  // namespace sb
