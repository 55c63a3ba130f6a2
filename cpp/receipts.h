// Receipt flags of messages in flight, so that a recipient's "delivered" or
// "read" goes back to the sender only when the message asked for it
// (MOD_MESIBO_MSGFLAG_DELIVERYRECEIPT / _READRECEIPT), naming its group.
// Keyed by (sender, recipient, message id) as user ids. At most `max`
// entries; past that the oldest is forgotten, as lib/server/server.ts
// trackReceipt() did (a receipt for it then no longer goes back).
//
// Loop thread only; allocates only while the table grows to its working size.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "directory.h"
#include "flat_map.h"

namespace sb {

struct Receipts {
  struct Entry {
    uint64_t packed = 0;  // gid * 4 + receipt flags
    uint32_t seq = 0;     // when it was first tracked: the eviction order
  };
  FlatMap<Key3, Entry> flags;
  // Insertion order for eviction; entries whose key has gone or was
  // tracked again since are skipped (their seq differs).
  std::vector<std::pair<Key3, uint32_t>> order;
  size_t head = 0;
  uint32_t next_seq = 1;
  size_t max = 1000000;
};

// Remembers the receipt flags (the low two bits of `flags`) and the group
// of `sender`'s message `id` to `recipient`. Tracking a key again keeps its
// place in the eviction order, as a JavaScript Map's set() does.
void receipts_track(Receipts &r, UserId sender, UserId recipient, uint32_t id, uint32_t flags, uint32_t gid);

// Whether `recipient`'s receipt `status` (2 delivered, 3 read) for
// `sender`'s message `id` goes back to the sender: the message's gid (0 for
// a 1:1 message) when it does, -1 when not. The entry is forgotten with the
// read receipt, or with the delivered one when no read receipt was asked for.
int64_t receipts_take(Receipts &r, UserId sender, UserId recipient, uint32_t id, uint32_t status);

}  // namespace sb
