// N-API binding of cpp/sqlite_db.h: the SqliteDb and SqliteStatement classes
// lib/store/ uses. cpp/addon.cc calls this from its Init.
#pragma once

#include <napi.h>

namespace sb {

// Adds SqliteDb to `exports`.
void sqlite_binding_init(Napi::Env env, Napi::Object exports);

}  // namespace sb
