// See sqlite_db.h. Every SQLite call of the store goes through here, so the
// rules (reset after use, finalize before close, codes as names) live in one
// place.
#include "sqlite_db.h"

#include <sqlite3.h>

#include <algorithm>
#include <cstring>

namespace sb::sqlite {

// Every result code sqlite3.h defines, named by its own macro so the names
// cannot drift from the values.
#define SB_SQLITE_CODES \
  X(SQLITE_OK) X(SQLITE_ERROR) X(SQLITE_INTERNAL) \
  X(SQLITE_PERM) X(SQLITE_ABORT) X(SQLITE_BUSY) \
  X(SQLITE_LOCKED) X(SQLITE_NOMEM) X(SQLITE_READONLY) \
  X(SQLITE_INTERRUPT) X(SQLITE_IOERR) X(SQLITE_CORRUPT) \
  X(SQLITE_NOTFOUND) X(SQLITE_FULL) X(SQLITE_CANTOPEN) \
  X(SQLITE_PROTOCOL) X(SQLITE_EMPTY) X(SQLITE_SCHEMA) \
  X(SQLITE_TOOBIG) X(SQLITE_CONSTRAINT) X(SQLITE_MISMATCH) \
  X(SQLITE_MISUSE) X(SQLITE_NOLFS) X(SQLITE_AUTH) \
  X(SQLITE_FORMAT) X(SQLITE_RANGE) X(SQLITE_NOTADB) \
  X(SQLITE_NOTICE) X(SQLITE_WARNING) X(SQLITE_ROW) \
  X(SQLITE_DONE) X(SQLITE_ERROR_MISSING_COLLSEQ) X(SQLITE_ERROR_RETRY) \
  X(SQLITE_ERROR_SNAPSHOT) X(SQLITE_ERROR_RESERVESIZE) X(SQLITE_ERROR_KEY) \
  X(SQLITE_ERROR_UNABLE) X(SQLITE_IOERR_READ) X(SQLITE_IOERR_SHORT_READ) \
  X(SQLITE_IOERR_WRITE) X(SQLITE_IOERR_FSYNC) X(SQLITE_IOERR_DIR_FSYNC) \
  X(SQLITE_IOERR_TRUNCATE) X(SQLITE_IOERR_FSTAT) X(SQLITE_IOERR_UNLOCK) \
  X(SQLITE_IOERR_RDLOCK) X(SQLITE_IOERR_DELETE) X(SQLITE_IOERR_BLOCKED) \
  X(SQLITE_IOERR_NOMEM) X(SQLITE_IOERR_ACCESS) X(SQLITE_IOERR_CHECKRESERVEDLOCK) \
  X(SQLITE_IOERR_LOCK) X(SQLITE_IOERR_CLOSE) X(SQLITE_IOERR_DIR_CLOSE) \
  X(SQLITE_IOERR_SHMOPEN) X(SQLITE_IOERR_SHMSIZE) X(SQLITE_IOERR_SHMLOCK) \
  X(SQLITE_IOERR_SHMMAP) X(SQLITE_IOERR_SEEK) X(SQLITE_IOERR_DELETE_NOENT) \
  X(SQLITE_IOERR_MMAP) X(SQLITE_IOERR_GETTEMPPATH) X(SQLITE_IOERR_CONVPATH) \
  X(SQLITE_IOERR_VNODE) X(SQLITE_IOERR_AUTH) X(SQLITE_IOERR_BEGIN_ATOMIC) \
  X(SQLITE_IOERR_COMMIT_ATOMIC) X(SQLITE_IOERR_ROLLBACK_ATOMIC) X(SQLITE_IOERR_DATA) \
  X(SQLITE_IOERR_CORRUPTFS) X(SQLITE_IOERR_IN_PAGE) X(SQLITE_IOERR_BADKEY) \
  X(SQLITE_IOERR_CODEC) X(SQLITE_LOCKED_SHAREDCACHE) X(SQLITE_LOCKED_VTAB) \
  X(SQLITE_BUSY_RECOVERY) X(SQLITE_BUSY_SNAPSHOT) X(SQLITE_BUSY_TIMEOUT) \
  X(SQLITE_CANTOPEN_NOTEMPDIR) X(SQLITE_CANTOPEN_ISDIR) X(SQLITE_CANTOPEN_FULLPATH) \
  X(SQLITE_CANTOPEN_CONVPATH) X(SQLITE_CANTOPEN_DIRTYWAL) X(SQLITE_CANTOPEN_SYMLINK) \
  X(SQLITE_CORRUPT_VTAB) X(SQLITE_CORRUPT_SEQUENCE) X(SQLITE_CORRUPT_INDEX) \
  X(SQLITE_READONLY_RECOVERY) X(SQLITE_READONLY_CANTLOCK) X(SQLITE_READONLY_ROLLBACK) \
  X(SQLITE_READONLY_DBMOVED) X(SQLITE_READONLY_CANTINIT) X(SQLITE_READONLY_DIRECTORY) \
  X(SQLITE_ABORT_ROLLBACK) X(SQLITE_CONSTRAINT_CHECK) X(SQLITE_CONSTRAINT_COMMITHOOK) \
  X(SQLITE_CONSTRAINT_FOREIGNKEY) X(SQLITE_CONSTRAINT_FUNCTION) X(SQLITE_CONSTRAINT_NOTNULL) \
  X(SQLITE_CONSTRAINT_PRIMARYKEY) X(SQLITE_CONSTRAINT_TRIGGER) X(SQLITE_CONSTRAINT_UNIQUE) \
  X(SQLITE_CONSTRAINT_VTAB) X(SQLITE_CONSTRAINT_ROWID) X(SQLITE_CONSTRAINT_PINNED) \
  X(SQLITE_CONSTRAINT_DATATYPE) X(SQLITE_NOTICE_RECOVER_WAL) X(SQLITE_NOTICE_RECOVER_ROLLBACK) \
  X(SQLITE_NOTICE_RBU) X(SQLITE_WARNING_AUTOINDEX) X(SQLITE_AUTH_USER) \
  X(SQLITE_OK_LOAD_PERMANENTLY) X(SQLITE_OK_SYMLINK)

const char *code_name(int rc) {
  switch (rc) {
#define X(c) \
  case c:    \
    return #c;
    SB_SQLITE_CODES
#undef X
    default:
      return "SQLITE_UNKNOWN";
  }
}

const char *Error::code() const { return code_name(rc); }

// SQLite's message for the last failure on `db`, which names the table,
// column or constraint; the generic text of `rc` when there is none.
static void fill_from(sqlite3 *db, Error &err, int rc) {
  err.rc = rc;
  const char *m = db ? sqlite3_errmsg(db) : nullptr;
  // After some failures errmsg still holds the generic "not an error".
  if (!m || sqlite3_errcode(db) == SQLITE_OK) m = sqlite3_errstr(rc);
  err.message = m;
}

void Connection::fill(Error &err, int rc) const { fill_from(db_, err, rc); }

std::shared_ptr<Connection> Connection::open(const std::string &file, const OpenOptions &opts, Error &err) {
  int flags = opts.readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE;
  if (!opts.readonly && !opts.must_exist) flags |= SQLITE_OPEN_CREATE;
  // The store is used from the JavaScript thread only: one connection per
  // thread (SQLITE_THREADSAFE=2) needs no connection mutex.
  flags |= SQLITE_OPEN_NOMUTEX;
  sqlite3 *db = nullptr;
  int rc = sqlite3_open_v2(file.c_str(), &db, flags, nullptr);
  if (rc != SQLITE_OK) {
    fill_from(db, err, rc);
    // SQLite allocates a handle even for a failed open, to carry the error.
    sqlite3_close(db);
    return nullptr;
  }
  sqlite3_extended_result_codes(db, 1);
  sqlite3_busy_timeout(db, opts.busy_timeout_ms);
  std::shared_ptr<Connection> c(new Connection());
  c->db_ = db;
  return c;
}

Connection::~Connection() { close(); }

bool Connection::exec(const char *sql, Error &err) {
  if (!db_) {
    err.rc = SQLITE_MISUSE;
    err.message = "the database is closed";
    return false;
  }
  char *msg = nullptr;
  int rc = sqlite3_exec(db_, sql, nullptr, nullptr, &msg);
  if (rc == SQLITE_OK) return true;
  err.rc = sqlite3_extended_errcode(db_);
  if (err.rc == SQLITE_OK) err.rc = rc;
  err.message = msg ? msg : sqlite3_errstr(rc);
  sqlite3_free(msg);
  return false;
}

bool Connection::in_transaction() const { return db_ && !sqlite3_get_autocommit(db_); }

bool Connection::opened_readonly() const { return db_ && sqlite3_db_readonly(db_, "main") == 1; }

void Connection::close() {
  if (!db_) return;
  for (Statement *s : statements_) s->finalize();
  statements_.clear();
  // Every statement is finalized, so the plain close cannot be refused.
  sqlite3_close(db_);
  db_ = nullptr;
}

std::unique_ptr<Statement> Statement::prepare(const std::shared_ptr<Connection> &conn, std::string_view sql, Error &err) {
  if (!conn || !conn->db_) {
    err.rc = SQLITE_MISUSE;
    err.message = "the database is closed";
    return nullptr;
  }
  sqlite3_stmt *stmt = nullptr;
  const char *tail = nullptr;
  // PERSISTENT: the store prepares each statement once and keeps it.
  int rc = sqlite3_prepare_v3(conn->db_, sql.data(), static_cast<int>(sql.size()), SQLITE_PREPARE_PERSISTENT, &stmt, &tail);
  if (rc != SQLITE_OK) {
    conn->fill(err, sqlite3_extended_errcode(conn->db_));
    return nullptr;
  }
  if (!stmt) {
    err.rc = SQLITE_MISUSE;
    err.message = "the SQL holds no statement";
    return nullptr;
  }
  const char *end = sql.data() + sql.size();
  while (tail && tail < end && (std::strchr(" \t\r\n;", *tail) != nullptr)) tail++;
  if (tail && tail < end) {
    sqlite3_finalize(stmt);
    err.rc = SQLITE_MISUSE;
    err.message = "the SQL holds more than one statement; prepare them one at a time (or use exec)";
    return nullptr;
  }
  std::unique_ptr<Statement> s(new Statement());
  s->conn_ = conn;
  s->stmt_ = stmt;
  s->params_ = sqlite3_bind_parameter_count(stmt);
  s->columns_ = sqlite3_column_count(stmt);
  conn->statements_.push_back(s.get());
  return s;
}

Statement::~Statement() {
  if (stmt_ && conn_) {
    auto &v = conn_->statements_;
    v.erase(std::remove(v.begin(), v.end(), this), v.end());
  }
  finalize();
}

void Statement::finalize() {
  if (!stmt_) return;
  sqlite3_finalize(stmt_);
  stmt_ = nullptr;
}

const char *Statement::column_name(int i) const { return stmt_ ? sqlite3_column_name(stmt_, i) : ""; }

bool Statement::bind(const Value *values, int n, Error &err) {
  if (!stmt_) {
    err.rc = SQLITE_MISUSE;
    err.message = "the database is closed";
    return false;
  }
  if (n != params_) {
    err.rc = SQLITE_RANGE;
    err.message = "the statement takes " + std::to_string(params_) + " parameters, not " + std::to_string(n);
    return false;
  }
  for (int i = 0; i < n; i++) {
    const Value &v = values[i];
    int rc = SQLITE_OK;
    // SQLITE_STATIC: the caller keeps the bytes alive for the step, and
    // every use binds every parameter again, so none is read later.
    switch (v.kind) {
      case Value::Null: rc = sqlite3_bind_null(stmt_, i + 1); break;
      case Value::Integer: rc = sqlite3_bind_int64(stmt_, i + 1, v.i); break;
      case Value::Real: rc = sqlite3_bind_double(stmt_, i + 1, v.d); break;
      case Value::Text: rc = sqlite3_bind_text64(stmt_, i + 1, v.p, v.n, SQLITE_STATIC, SQLITE_UTF8); break;
      // A zero-length blob must stay a blob, not become NULL.
      case Value::Blob:
        rc = v.n == 0 ? sqlite3_bind_zeroblob(stmt_, i + 1, 0) : sqlite3_bind_blob64(stmt_, i + 1, v.p, v.n, SQLITE_STATIC);
        break;
    }
    if (rc != SQLITE_OK) {
      conn_->fill(err, rc);
      return false;
    }
  }
  return true;
}

int Statement::step(Error &err) {
  if (!stmt_) {
    err.rc = SQLITE_MISUSE;
    err.message = "the database is closed";
    return -1;
  }
  int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return 1;
  if (rc == SQLITE_DONE) return 0;
  conn_->fill(err, sqlite3_extended_errcode(conn_->db_));
  sqlite3_reset(stmt_);
  return -1;
}

Value Statement::column(int i) const {
  Value v;
  switch (sqlite3_column_type(stmt_, i)) {
    case SQLITE_INTEGER:
      v.kind = Value::Integer;
      v.i = sqlite3_column_int64(stmt_, i);
      break;
    case SQLITE_FLOAT:
      v.kind = Value::Real;
      v.d = sqlite3_column_double(stmt_, i);
      break;
    case SQLITE_TEXT:
      v.kind = Value::Text;
      v.p = reinterpret_cast<const char *>(sqlite3_column_text(stmt_, i));
      v.n = static_cast<size_t>(sqlite3_column_bytes(stmt_, i));
      break;
    case SQLITE_BLOB:
      v.kind = Value::Blob;
      v.p = static_cast<const char *>(sqlite3_column_blob(stmt_, i));
      v.n = static_cast<size_t>(sqlite3_column_bytes(stmt_, i));
      break;
    default:
      break;
  }
  return v;
}

void Statement::reset() {
  if (stmt_) sqlite3_reset(stmt_);
}

int64_t Statement::changes() const { return conn_ && conn_->db_ ? sqlite3_changes64(conn_->db_) : 0; }

int64_t Statement::last_insert_rowid() const { return conn_ && conn_->db_ ? sqlite3_last_insert_rowid(conn_->db_) : 0; }

}  // namespace sb::sqlite
