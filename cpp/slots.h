// The layout the core shares with its embedder without creating objects per
// message: numeric fields in slots of a double array, strings and frames
// packed one after another in a byte buffer. The N-API binding (addon.cc)
// only hands these arrays to JavaScript; lib/native.ts mirrors the slot
// numbers and test/protocol.test.ts checks that it does.
#pragma once

#include <cstddef>
#include <cstring>
#include <string>

#include "core.h"

namespace sb {

// Slots of the array a submit (or a deferred message's completion) fills.
enum InfoSlot {
  INFO_VERDICT, INFO_OP, INFO_FORMAT,
  INFO_ID, INFO_REFID, INFO_GROUPID, INFO_FLAGS, INFO_TYPE, INFO_EXPIRY, INFO_STATUS, INFO_UFLAGS,
  // Lengths of what the out buffer holds, in this order from byte 0:
  INFO_FRAME_LEN,    // the delivery (message) or the status frame (receipt)
  INFO_FRAME2_LEN,   // the binary delivery too, when asked for both forms
  INFO_PAYLOAD_LEN,  // the payload after the chain
  INFO_TO_LEN,       // the destination after the chain
  INFO_ACK_LEN,      // the "sent" status for the sender
  INFO_OUT_GROWN,    // 1 when the embedder replaced the out buffer by a larger one
  INFO_TOKEN,        // verdict 2 (deferred): the token its completion will carry
  INFO_COUNT
};

// Slots of the array a script hook call fills; the strings and the payload
// are in the hook buffer: [from][to][payload].
enum HookSlot {
  HK_ID, HK_REFID, HK_GROUPID, HK_FLAGS, HK_TYPE, HK_EXPIRY, HK_UFLAGS, HK_STATUS, HK_ONLINE,
  HK_FROM_LEN, HK_TO_LEN, HK_PAYLOAD_LEN,
  HK_COUNT
};

// Bytes the embedder's out buffer starts with: room for the largest result
// (a delivery in both forms, the payload, the destination and the "sent"
// frame) without growing it; a larger one still gets a new buffer
// (INFO_OUT_GROWN).
size_t result_buffer_size(const Core &core);

// Bytes the hook buffer needs: two addresses and the largest payload.
size_t hook_buffer_size(const Core &core);

// The destination's length, measured once per result: pack_result takes it.
inline size_t result_to_len(const SubmitResult &res) { return res.params.to ? std::strlen(res.params.to) : 0; }

// Bytes pack_result writes to `out`.
inline size_t result_size(const SubmitResult &res, size_t to_len) {
  return res.frame_len + res.frame2_len + res.payload_len + to_len + res.ack_len;
}

// Fills info[0, INFO_COUNT) but INFO_OUT_GROWN, and writes the delivery
// frame(s), the payload, the destination and the "sent" frame to `out`
// (result_size(res, to_len) bytes, which the caller provides).
void pack_result(const SubmitResult &res, size_t to_len, double *info, char *out);

// The reverse of pack_result: the result `info` and the `out_len` bytes of
// `out` describe, its pointers into `out` and its destination copied into
// `to` (which must outlive the result, as `out` must). False when the
// lengths in `info` run past `out_len`.
bool unpack_result(const double *info, const char *out, size_t out_len, std::string &to, SubmitResult &res);

// What core_submit would have returned for a client message completed after
// a deferral. Its pointers point into `c`, which must outlive the result.
SubmitResult completion_result(Completion &c);

// Fills the hook slots and [from][to][payload] in `buf` (`cap` bytes) for a
// script module's hook: a message (`p`, `cm` for its payload), a status
// (`p`) or a login (`user`). A payload that would not fit is left out; it
// cannot happen while cap is at least max_payload plus two addresses.
void pack_hook(const mesibo_message_params_t *p, const ChainMsg *cm, const mesibo_user_t *user, double *slots,
               char *buf, size_t cap);

}  // namespace sb
