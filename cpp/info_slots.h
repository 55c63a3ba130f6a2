// Slots of the shared Float64Array a submit fills, so the per-message call
// returns a number and creates no JavaScript object. cpp/addon.cc fills it,
// cpp/delivery_binding.cc reads it; lib/native.ts mirrors it (Info).
#pragma once

namespace sb::info {

enum InfoSlot {
  INFO_VERDICT, INFO_OP, INFO_FORMAT,
  INFO_ID, INFO_REFID, INFO_GROUPID, INFO_FLAGS, INFO_TYPE, INFO_EXPIRY, INFO_STATUS, INFO_UFLAGS,
  // Lengths of what out() holds, in this order from byte 0:
  INFO_FRAME_LEN,    // the delivery (message) or the status frame (receipt)
  INFO_FRAME2_LEN,   // the binary delivery too, when asked for both forms
  INFO_PAYLOAD_LEN,  // the payload after the chain
  INFO_TO_LEN,       // the destination after the chain
  INFO_ACK_LEN,      // the "sent" status for the sender
  INFO_OUT_GROWN,    // 1 when `out` was replaced by a larger buffer
  INFO_TOKEN,        // verdict 2 (deferred): the token its completion will carry
  INFO_COUNT
};

}  // namespace sb::info
