// Receipt flags by integer key (receipts.h).
#include "receipts.h"

#include "module.h"

namespace sb {

namespace {

constexpr uint32_t kReceiptFlags = MOD_MESIBO_MSGFLAG_DELIVERYRECEIPT | MOD_MESIBO_MSGFLAG_READRECEIPT;

void evict_oldest(Receipts &r) {
  while (r.head < r.order.size()) {
    auto [k, seq] = r.order[r.head++];
    Receipts::Entry *e = r.flags.find(k);
    if (e && e->seq == seq) {
      r.flags.erase(k);
      return;
    }
  }
}

// Drops order entries whose key has gone, so that the order stays in
// proportion to the table while receipts come back (the common case).
void compact(Receipts &r) {
  size_t w = 0;
  for (size_t i = r.head; i < r.order.size(); ++i) {
    Receipts::Entry *e = r.flags.find(r.order[i].first);
    if (e && e->seq == r.order[i].second) r.order[w++] = r.order[i];
  }
  r.order.resize(w);
  r.head = 0;
}

}  // namespace

void receipts_track(Receipts &r, UserId sender, UserId recipient, uint32_t id, uint32_t flags, uint32_t gid) {
  if (r.flags.size() >= r.max) evict_oldest(r);
  Key3 k{sender, recipient, id};
  uint64_t packed = uint64_t(gid) * 4 + (flags & kReceiptFlags);
  if (Receipts::Entry *e = r.flags.find(k)) {
    e->packed = packed;
    return;
  }
  if (r.order.size() - r.head > 2 * r.flags.size() + 1024) compact(r);
  uint32_t seq = r.next_seq++;
  r.flags.put(k, Receipts::Entry{packed, seq});
  r.order.emplace_back(k, seq);
}

int64_t receipts_take(Receipts &r, UserId sender, UserId recipient, uint32_t id, uint32_t status) {
  if (r.flags.size() == 0) return -1;
  Key3 k{sender, recipient, id};
  Receipts::Entry *e = r.flags.find(k);
  if (!e || e->packed == 0) return -1;
  uint64_t packed = e->packed;
  uint32_t flags = packed & 3;
  if (status == MESIBO_MODULE_MSGSTATUS_READ || !(flags & MOD_MESIBO_MSGFLAG_READRECEIPT)) r.flags.erase(k);
  bool wanted = status == MESIBO_MODULE_MSGSTATUS_READ ? (flags & MOD_MESIBO_MSGFLAG_READRECEIPT) != 0
                                                 : (flags & MOD_MESIBO_MSGFLAG_DELIVERYRECEIPT) != 0;
  return wanted ? int64_t(packed / 4) : -1;
}

}  // namespace sb
