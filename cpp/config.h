// The configuration file (mesibo.conf): server settings plus the module chain.
//
// The format is a contract with existing mesibo deployments (see
// docs/config.md): a file that the mesibo server accepted must parse here
// unchanged. The parser only checks the shape of the file; the meaning of each
// value (ports, paths, numbers) is checked by the server, which knows what it
// needs.
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace sb {

// One `key = value` line. `line` is 1-based, for messages that point back
// into the file.
struct ConfigItem {
  std::string key;
  std::string value;
  int line = 0;
};

// One `module NAME ...` declaration: one instance in the chain.
struct ModuleDecl {
  std::string name;
  int line = 0;
  std::vector<ConfigItem> items;  // the block's items in file order; empty without a block

  // The value of item `key`, or nullptr when the block does not set it. The
  // pointer stays valid as long as this ModuleDecl is not modified.
  const std::string *item(std::string_view key) const;
};

struct Config {
  std::string file;                  // path as given, or a label such as "<inline>"
  std::string dir;                   // folder relative settings resolve against; "." for inline text
  std::vector<ConfigItem> settings;  // top-level settings, in file order, each key at most once
  std::vector<ModuleDecl> modules;   // the chain, in declaration order; a name may repeat

  // The value of top-level setting `key`, or nullptr when the file does not
  // set it (the server then uses its default).
  const std::string *setting(std::string_view key) const;

  // `p` as the server should open it: an absolute path is returned as is, a
  // relative one is taken relative to the configuration file's folder, so a
  // server started from any working directory finds the same files. An empty
  // `p` is returned empty (no setting, no path).
  std::string resolve_path(const std::string &p) const;
};

// Why a configuration was rejected. `code` is stable (tests and tools match
// on it); `message` is for people: it says what was found, what was expected
// and what to change.
struct ConfigError {
  std::string code;  // e.g. "E_CONFIG_UNCLOSED_BLOCK"
  std::string file;
  int line = 0;      // 1-based; 0 when the error is not about one line (E_CONFIG_READ)
  std::string message;

  // "FILE:LINE: MESSAGE", or "FILE: MESSAGE" when line is 0: the form editors
  // and terminals turn into a link to the line.
  std::string to_string() const;
};

// Parses configuration text. `file` labels messages and `dir` is the folder
// relative paths resolve against (see Config::resolve_path). A UTF-8 BOM and
// CRLF line endings are accepted. Returns true and replaces `out` on success;
// returns false and fills `err` on the first error, leaving `out` untouched.
// Never reads outside `text`, whatever it holds.
bool config_parse(std::string_view text, const std::string &file, const std::string &dir, Config &out,
                  ConfigError &err);

// Reads the file at `path` and parses it with the file's folder as `dir`.
// A file that cannot be read fails with code E_CONFIG_READ and the system's
// reason (strerror). Same success and failure contract as config_parse.
bool config_load(const std::string &path, Config &out, ConfigError &err);

// The top-level settings the server knows, nullptr-terminated. Any other
// top-level key is an error, so a misspelt setting is never silently ignored.
extern const char *const kConfigSettings[];

}  // namespace sb
