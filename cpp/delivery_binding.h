// N-API binding of the delivery engine (cpp/router.h): the Delivery class
// lib/delivery.ts wraps. cpp/addon.cc calls delivery_binding_init from its
// Init and defines core_of.
#pragma once

#include <napi.h>

#include "core.h"

namespace sb {

// Adds Delivery to `exports`.
void delivery_binding_init(Napi::Env env, Napi::Object exports);

// The core behind a CoreHandle object (cpp/addon.cc); nullptr for anything
// else or a closed core. The engine encodes failure statuses and group
// receipts with it (core_status), so modules' on_message_status runs as it
// did when the server asked the core for those frames.
Core *core_of(const Napi::Value &handle);

// What CoreHandle's submit does (cpp/addon.cc): core_submit, then the info
// slots and out() filled for JavaScript, or the refused frame's id. Returns
// core_submit's result, or kSubmitNoCore (with E_CORE_CLOSED thrown) when
// `handle` is not an open core.
constexpr int kSubmitNoCore = -1000;
int core_submit_filled(const Napi::Value &handle, const char *from, size_t from_len, const uint8_t *frame, size_t len,
                       int out_format, SubmitResult &res);

}  // namespace sb
