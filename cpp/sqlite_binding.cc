// N-API binding of the embedded SQLite (cpp/sqlite_db.h). It converts
// values and nothing else; the store's logic is in lib/store/sqlite.ts.
//
//   new SqliteDb(file, readonly, mustExist, busyTimeoutMs)
//     .exec(sql) .inTransaction() .openedReadonly() .close()
//   new SqliteStatement(db, sql, pluck)
//     .run(...params) -> changes   .get(...params) -> row | undefined
//     .all(...params) -> rows
//
// Parameters: number (an integer binds as INTEGER, any other as REAL),
// bigint, string, Buffer/Uint8Array, boolean, null/undefined. Columns: an
// INTEGER is a number when it is a safe integer and a bigint otherwise, so
// no value is silently rounded. A row is an object keyed by column name, or
// with `pluck` the first column's value. Failures throw an Error whose
// `code` is SQLite's result code name ("SQLITE_CONSTRAINT_UNIQUE").
#include "sqlite_binding.h"

#include <cmath>
#include <string>
#include <vector>

#include "sqlite_db.h"

namespace sb {
namespace {

using sqlite::Error;
using SqlValue = sqlite::Value;

Napi::Value throw_error(Napi::Env env, const char *code, const std::string &message) {
  Napi::Error e = Napi::Error::New(env, message);
  e.Set("code", Napi::String::New(env, code));
  e.ThrowAsJavaScriptException();
  return env.Undefined();
}

Napi::Value throw_error(Napi::Env env, const Error &err) { return throw_error(env, err.code(), err.message); }

class SqliteDb : public Napi::ObjectWrap<SqliteDb> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "SqliteDb",
                       {InstanceMethod<&SqliteDb::Exec>("exec"),
                        InstanceMethod<&SqliteDb::InTransaction>("inTransaction"),
                        InstanceMethod<&SqliteDb::OpenedReadonly>("openedReadonly"),
                        InstanceMethod<&SqliteDb::Close>("close")});
  }

  explicit SqliteDb(const Napi::CallbackInfo &info) : Napi::ObjectWrap<SqliteDb>(info) {
    Napi::Env env = info.Env();
    if (!info[0].IsString()) {
      throw_error(env, "SQLITE_MISUSE", "SqliteDb needs the database file name as a string");
      return;
    }
    sqlite::OpenOptions opts;
    opts.readonly = info[1].ToBoolean();
    opts.must_exist = info[2].ToBoolean();
    if (info[3].IsNumber()) opts.busy_timeout_ms = info[3].As<Napi::Number>().Int32Value();
    Error err;
    conn_ = sqlite::Connection::open(info[0].As<Napi::String>().Utf8Value(), opts, err);
    if (!conn_) throw_error(env, err);
  }

  const std::shared_ptr<sqlite::Connection> &conn() const { return conn_; }

 private:
  Napi::Value Exec(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!info[0].IsString()) return throw_error(env, "SQLITE_MISUSE", "exec needs the SQL as a string");
    Error err;
    if (!conn_->exec(info[0].As<Napi::String>().Utf8Value().c_str(), err)) return throw_error(env, err);
    return env.Undefined();
  }

  Napi::Value InTransaction(const Napi::CallbackInfo &info) {
    return Napi::Boolean::New(info.Env(), conn_->in_transaction());
  }

  Napi::Value OpenedReadonly(const Napi::CallbackInfo &info) {
    return Napi::Boolean::New(info.Env(), conn_->opened_readonly());
  }

  Napi::Value Close(const Napi::CallbackInfo &info) {
    conn_->close();
    return info.Env().Undefined();
  }

  // Set by the constructor: a failed open throws, so no object exists
  // without one.
  std::shared_ptr<sqlite::Connection> conn_;
};

class SqliteStatement : public Napi::ObjectWrap<SqliteStatement> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "SqliteStatement",
                       {InstanceMethod<&SqliteStatement::Run>("run"),
                        InstanceMethod<&SqliteStatement::Get>("get"),
                        InstanceMethod<&SqliteStatement::All>("all")});
  }

  explicit SqliteStatement(const Napi::CallbackInfo &info) : Napi::ObjectWrap<SqliteStatement>(info) {
    Napi::Env env = info.Env();
    SqliteDb *db = info[0].IsObject() ? Napi::ObjectWrap<SqliteDb>::Unwrap(info[0].As<Napi::Object>()) : nullptr;
    if (!db || !info[1].IsString()) {
      if (!env.IsExceptionPending()) throw_error(env, "SQLITE_MISUSE", "SqliteStatement needs a SqliteDb and the SQL as a string");
      return;
    }
    std::string sql = info[1].As<Napi::String>().Utf8Value();
    Error err;
    stmt_ = sqlite::Statement::prepare(db->conn(), sql, err);
    if (!stmt_) {
      throw_error(env, err);
      return;
    }
    pluck_ = info[2].ToBoolean();
  }

 private:
  // run(...params) -> rows changed
  Napi::Value Run(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!bind(info)) return env.Undefined();
    Error err;
    int r;
    // A statement that returns rows (INSERT ... RETURNING) runs to the end.
    while ((r = stmt_->step(err)) == 1) {
    }
    if (r < 0) return throw_error(env, err);
    int64_t n = stmt_->changes();
    stmt_->reset();
    return Napi::Number::New(env, static_cast<double>(n));
  }

  // get(...params) -> the first row, or undefined when there is none
  Napi::Value Get(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!bind(info)) return env.Undefined();
    Error err;
    int r = stmt_->step(err);
    if (r < 0) return throw_error(env, err);
    Napi::Value row = r == 1 ? make_row(env, nullptr) : env.Undefined();
    stmt_->reset();
    return row;
  }

  // all(...params) -> every row
  Napi::Value All(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!bind(info)) return env.Undefined();
    // The column names become property keys once per call, not per row.
    std::vector<napi_value> keys;
    if (!pluck_) {
      keys.resize(static_cast<size_t>(stmt_->column_count()));
      for (size_t i = 0; i < keys.size(); i++) keys[i] = Napi::String::New(env, stmt_->column_name(static_cast<int>(i)));
    }
    Napi::Array rows = Napi::Array::New(env);
    Error err;
    int r;
    uint32_t n = 0;
    while ((r = stmt_->step(err)) == 1) rows.Set(n++, make_row(env, keys.data()));
    if (r < 0) return throw_error(env, err);
    stmt_->reset();
    return rows;
  }

  // Converts and binds every argument. Strings go to one scratch buffer as
  // UTF-8, and the pointers into it are taken only once it stops growing.
  bool bind(const Napi::CallbackInfo &info) {
    napi_env env = info.Env();
    if (!stmt_ || !stmt_->is_open()) {
      throw_error(info.Env(), "SQLITE_MISUSE", "the database is closed");
      return false;
    }
    size_t n = info.Length();
    values_.resize(n);
    text_at_.clear();
    scratch_.clear();
    for (size_t i = 0; i < n; i++) {
      napi_value v = info[i];
      SqlValue &out = values_[i];
      out = SqlValue{};
      napi_valuetype t;
      napi_typeof(env, v, &t);
      switch (t) {
        case napi_number: {
          double d;
          napi_get_value_double(env, v, &d);
          // Integers bind as INTEGER so STRICT INTEGER columns take them
          // as they are; 2^63 itself does not fit an int64.
          if (std::trunc(d) == d && d >= -9223372036854775808.0 && d < 9223372036854775808.0) {
            out.kind = SqlValue::Integer;
            out.i = static_cast<int64_t>(d);
          } else {
            out.kind = SqlValue::Real;
            out.d = d;
          }
          break;
        }
        case napi_bigint: {
          bool lossless = false;
          napi_get_value_bigint_int64(env, v, &out.i, &lossless);
          if (!lossless) {
            throw_error(info.Env(), "SQLITE_RANGE", "parameter " + std::to_string(i + 1) + " is a bigint outside the 64-bit signed range SQLite stores");
            return false;
          }
          out.kind = SqlValue::Integer;
          break;
        }
        case napi_string: {
          size_t len = 0;
          napi_get_value_string_utf8(env, v, nullptr, 0, &len);
          size_t at = scratch_.size();
          scratch_.resize(at + len + 1);
          napi_get_value_string_utf8(env, v, &scratch_[at], len + 1, &len);
          out.kind = SqlValue::Text;
          out.n = len;
          text_at_.push_back({i, at});
          break;
        }
        case napi_boolean: {
          bool b;
          napi_get_value_bool(env, v, &b);
          out.kind = SqlValue::Integer;
          out.i = b ? 1 : 0;
          break;
        }
        case napi_null:
        case napi_undefined:
          break;
        default: {
          bool is_ta = false;
          napi_is_typedarray(env, v, &is_ta);
          if (is_ta) {
            napi_typedarray_type type;
            size_t length;
            void *data;
            napi_value ab;
            size_t offset;
            napi_get_typedarray_info(env, v, &type, &length, &data, &ab, &offset);
            if (type == napi_uint8_array || type == napi_int8_array || type == napi_uint8_clamped_array) {
              out.kind = SqlValue::Blob;
              out.p = static_cast<const char *>(data);
              out.n = length;
              break;
            }
          }
          throw_error(info.Env(), "SQLITE_MISMATCH",
                      "parameter " + std::to_string(i + 1) + " cannot be stored; pass a number, bigint, string, Buffer or Uint8Array, boolean, or null");
          return false;
        }
      }
    }
    for (const auto &[i, at] : text_at_) values_[i].p = scratch_.data() + at;
    Error err;
    if (!stmt_->bind(values_.data(), static_cast<int>(n), err)) {
      throw_error(info.Env(), err);
      return false;
    }
    return true;
  }

  Napi::Value column(Napi::Env env, int i) {
    SqlValue v = stmt_->column(i);
    switch (v.kind) {
      case SqlValue::Integer:
        // Beyond 2^53 a number would round: hand out a bigint instead.
        if (v.i >= -9007199254740991LL && v.i <= 9007199254740991LL) return Napi::Number::New(env, static_cast<double>(v.i));
        return Napi::BigInt::New(env, v.i);
      case SqlValue::Real: return Napi::Number::New(env, v.d);
      case SqlValue::Text: return Napi::String::New(env, v.p, v.n);
      case SqlValue::Blob: return Napi::Buffer<char>::Copy(env, v.p, v.n);
      case SqlValue::Null: break;
    }
    return env.Null();
  }

  // `keys` are the column names as JS strings; null builds them here.
  Napi::Value make_row(Napi::Env env, const napi_value *keys) {
    if (pluck_) return column(env, 0);
    int n = stmt_->column_count();
    Napi::Object row = Napi::Object::New(env);
    for (int i = 0; i < n; i++) {
      if (keys) row.Set(Napi::Value(env, keys[i]), column(env, i));
      else row.Set(stmt_->column_name(i), column(env, i));
    }
    return row;
  }

  std::unique_ptr<sqlite::Statement> stmt_;
  bool pluck_ = false;
  // Reused by every call, so binding allocates nothing once they are grown.
  std::vector<SqlValue> values_;
  std::vector<std::pair<size_t, size_t>> text_at_;
  std::string scratch_;
};

}  // namespace

void sqlite_binding_init(Napi::Env env, Napi::Object exports) {
  exports.Set("SqliteDb", SqliteDb::Define(env));
  exports.Set("SqliteStatement", SqliteStatement::Define(env));
}

}  // namespace sb
