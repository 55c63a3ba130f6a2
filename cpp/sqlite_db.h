// The embedded SQLite behind the default store: one connection, its prepared
// statements, and SQLite's result codes as stable names. Plain C++17 with no
// Node; cpp/sqlite_binding.cc binds it to JavaScript.
//
// SQLite itself is compiled into the addon from deps/sqlite/ with hidden
// symbols, so a module that links its own SQLite never binds to this copy.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

struct sqlite3;
struct sqlite3_stmt;

namespace sb::sqlite {

// What failed: SQLite's extended result code, its stable name
// ("SQLITE_CONSTRAINT_UNIQUE"), and SQLite's message for it.
struct Error {
  int rc = 0;
  std::string message;
  const char *code() const;
};

// The stable name of an (extended) SQLite result code, "SQLITE_UNKNOWN" for
// one this build does not know.
const char *code_name(int rc);

struct OpenOptions {
  bool readonly = false;
  // Fail with SQLITE_CANTOPEN instead of creating a missing file.
  bool must_exist = false;
  // How long a statement waits for another connection's lock before it
  // fails with SQLITE_BUSY.
  int busy_timeout_ms = 5000;
};

class Statement;

// One open connection. Statements keep it alive (shared_ptr) but close()
// finalizes them all, so a closed connection never leaves a statement that
// still points into it.
class Connection {
 public:
  ~Connection();
  // Opens `file`; on failure returns null and fills `err`.
  static std::shared_ptr<Connection> open(const std::string &file, const OpenOptions &opts, Error &err);

  bool is_open() const { return db_ != nullptr; }
  // Runs one or more ;-separated statements without results.
  bool exec(const char *sql, Error &err);
  // True inside BEGIN ... COMMIT.
  bool in_transaction() const;
  // True when SQLite opened the file read-only although writing was asked
  // for: the file (or its folder) is not writable by this process.
  bool opened_readonly() const;
  void close();

 private:
  friend class Statement;
  Connection() = default;
  void fill(Error &err, int rc) const;
  sqlite3 *db_ = nullptr;
  std::vector<Statement *> statements_;
};

// A value bound to a parameter or read from a column. Text and blobs point
// at memory that must outlive the step that uses them (bind) or the next
// step/reset (column).
struct Value {
  enum Kind { Null, Integer, Real, Text, Blob } kind = Null;
  int64_t i = 0;
  double d = 0;
  const char *p = nullptr;
  size_t n = 0;
};

// One prepared statement, reset after every use so it holds no lock between
// calls.
class Statement {
 public:
  ~Statement();
  // Prepares the first statement of `sql`; on failure returns null and
  // fills `err`. Trailing SQL after the first statement is an error (it
  // would silently not run).
  static std::unique_ptr<Statement> prepare(const std::shared_ptr<Connection> &conn, std::string_view sql, Error &err);

  bool is_open() const { return stmt_ != nullptr; }
  int parameter_count() const { return params_; }
  int column_count() const { return columns_; }
  const char *column_name(int i) const;
  // True for a statement that returns rows (SELECT, RETURNING, some PRAGMAs).
  bool returns_rows() const { return columns_ > 0; }

  // Binds values[0..n) to ?1..?n. The memory of text and blob values is not
  // copied: it must stay valid until step() is done with it.
  bool bind(const Value *values, int n, Error &err);
  // Runs to the next row: 1 a row is ready (read it with column()), 0 done,
  // -1 failed (err is filled and the statement is reset).
  int step(Error &err);
  Value column(int i) const;
  // Ends the current run so the statement holds no lock.
  void reset();
  // Rows changed by the last completed INSERT/UPDATE/DELETE.
  int64_t changes() const;
  int64_t last_insert_rowid() const;

 private:
  friend class Connection;
  Statement() = default;
  void finalize();
  std::shared_ptr<Connection> conn_;
  sqlite3_stmt *stmt_ = nullptr;
  int params_ = 0;
  int columns_ = 0;
};

}  // namespace sb::sqlite
