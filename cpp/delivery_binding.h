// N-API binding of the delivery engine (cpp/router.h): the Delivery class
// lib/delivery.ts wraps. cpp/addon.cc calls delivery_binding_init from its
// Init and defines core_of.
#pragma once

#include <napi.h>

#include "core.h"

namespace sb {

// Adds Delivery to `exports`.
void delivery_binding_init(Napi::Env env, Napi::Object exports);

// A CoreHandle (cpp/addon.cc), as the delivery engine holds it: looked up
// once, when the engine is made, since a lookup by object (napi_unwrap)
// costs as much as the rest of a route. The engine keeps the JavaScript
// object alive with a reference, so the pointer stays valid.
struct CoreRef;
// nullptr for anything but a CoreHandle.
CoreRef *core_ref_of(const Napi::Value &handle);

// Its core; nullptr once closed. The engine encodes failure statuses with
// it (core_status), so modules' on_message_status runs as it did when the
// server asked the core for those frames. Group receipts are only encoded:
// the core ran the hooks for their status when it took it.
Core *core_of(CoreRef *ref);

// What CoreHandle's submit does: core_submit, then the info slots and out()
// filled for JavaScript, or the refused frame's id; a status frame is not
// encoded (router_route encodes a receipt when one is due). Returns core_submit's
// result, or kSubmitNoCore (with E_CORE_CLOSED thrown) for a closed core.
constexpr int kSubmitNoCore = -1000;
int core_submit_filled(CoreRef *ref, napi_env env, const char *from, size_t from_len, const uint8_t *frame, size_t len,
                       int out_format, SubmitResult &res);

}  // namespace sb
