// Argument conversions both N-API bindings (addon.cc, delivery_binding.cc)
// make: one copy, so a message's fields read the same way through either.
#pragma once
#include <napi.h>

#include <memory>
#include <string_view>

#include "module.h"

namespace sb {

// The bytes of a typed array argument, without a copy; empty for anything else.
inline std::string_view typed_bytes(const Napi::Value &v) {
  if (!v.IsTypedArray()) return {};
  Napi::TypedArray ta = v.As<Napi::TypedArray>();
  return {static_cast<const char *>(ta.ArrayBuffer().Data()) + ta.ByteOffset(), ta.ByteLength()};
}

// The numeric params of a {id, refid, groupid, flags, type, expiry, status,
// uflags, aid} object (absent ones are 0); `from` and `to` are the caller's.
// Not an object: `p` is left as it is.
inline void params_from_js(const Napi::Value &v, mesibo_message_params_t &p) {
  if (!v.IsObject()) return;
  Napi::Object o = v.As<Napi::Object>();
  auto num = [&](const char *k) -> mesibo_uint_t {
    Napi::Value x = o.Get(k);
    return x.IsNumber() ? static_cast<mesibo_uint_t>(x.As<Napi::Number>().Int64Value()) : 0;
  };
  p.aid = num("aid");
  p.id = num("id");
  p.refid = num("refid");
  p.groupid = num("groupid");
  p.flags = num("flags");
  p.type = num("type");
  p.expiry = num("expiry");
  p.uflags = num("uflags");
  p.status = num("status");
}

// Defines `name` on `self` as a plain N-API function (not a prototype
// method) whose data is a shared reference to `state`: the per-message
// calls skip node-addon-api's CallbackInfo and napi_unwrap. The function
// keeps `state` alive until it is collected; a call after the handle went
// away must find the state marked closed.
template <class State>
bool define_fast_function(napi_env env, napi_value self, const char *name, napi_callback cb,
                          const std::shared_ptr<State> &state) {
  auto *holder = new std::shared_ptr<State>(state);
  napi_value fn;
  if (napi_create_function(env, name, NAPI_AUTO_LENGTH, cb, holder, &fn) != napi_ok) {
    delete holder;
    return false;
  }
  napi_add_finalizer(
      env, fn, holder, [](napi_env, void *data, void *) { delete static_cast<std::shared_ptr<State> *>(data); },
      nullptr, nullptr);
  napi_property_descriptor d = {name, nullptr, nullptr, nullptr, nullptr, fn, napi_default, nullptr};
  return napi_define_properties(env, self, 1, &d) == napi_ok;
}

}  // namespace sb
