// The commit handshake (router.h): deliveries held until the store has
// them, "sent"s that mean "stored", and receipts that must not overtake a
// "sent", released when the commit that covers them completes.
//
// Each waiting entry carries the epoch that was open when it was queued;
// router_commit_begin() closes the open epoch and router_committed(e)
// releases the entries of epochs up to e, in queue order: held deliveries
// first, then "sent"s, then receipts (lib/server/server.ts flushNow()'s
// order). With SQLite the embedder calls both around store.flush(); with an
// asynchronous store, what is queued while a commit runs belongs to the
// next one and stays.
#include <algorithm>
#include <cstring>

#include "router.h"

namespace sb {

void router_queue_waiting(Router &r, Waiting w, Batch &b) {
  w.epoch = r.epoch;
  if (w.kind == WAIT_ACK) ++r.acks_waiting;
  if (w.kind == WAIT_RECEIPT) ++r.receipts_waiting;
  r.waiting.push_back(w);
  b.commit = std::max(b.commit, int(COMMIT_SOON));
}

void router_queue_ack(Router &r, ConnId c, const char *frame, size_t len, bool binary, Batch &b) {
  if (c >= r.dir.conns.size() || !r.dir.conns[c].open) return;
  router_queue_ack_to(r, c, r.dir.conns[c].gen, frame, len, binary, b);
}

void router_queue_ack_to(Router &r, ConnId c, uint32_t gen, const char *frame, size_t len, bool binary, Batch &b) {
  Waiting w{};
  w.kind = WAIT_ACK;
  w.binary = binary;
  w.conn = c;
  w.gen = gen;
  w.off = static_cast<uint32_t>(r.waiting_bytes.size());
  w.len = static_cast<uint32_t>(len);
  r.waiting_bytes.append(frame, len);
  router_queue_waiting(r, w, b);
}

uint64_t router_commit_begin(Router &r) { return r.epoch++; }

namespace {

// Copies an entry's bytes into the batch; consecutive entries that share
// bytes (a group message's held copies) share one copy.
struct Copier {
  uint32_t src = kNone, dst = 0;
  uint32_t operator()(Router &r, Batch &b, uint32_t off, uint32_t len) {
    if (!len) return 0;
    if (off == src) return dst;
    src = off;
    dst = static_cast<uint32_t>(b.bytes.size());
    b.bytes.append(r.waiting_bytes, off, len);
    return dst;
  }
};

}  // namespace

void router_committed(Router &r, uint64_t epoch, Batch &b) {
  batch_clear(b);
  size_t begin = 0, end = 0;
  while (end < r.waiting.size() && r.waiting[end].epoch <= epoch) ++end;
  if (begin == end) return;
  Copier json, bin;
  size_t forwards = 0;
  for (size_t i = begin; i < end; ++i) {
    const Waiting &w = r.waiting[i];
    if (w.kind == WAIT_FORWARD) {
      // Stored now: handed out by the cluster room, after the held
      // deliveries and "sent"s of the same commit.
      --r.dir.users[w.user].forwards_waiting;
      StoreOp op = r.held_forwards[w.off];
      op.payload_off = static_cast<uint32_t>(b.bytes.size());
      b.bytes.append(r.waiting_bytes, r.held_forwards[w.off].payload_off, op.payload_len);
      b.ops.push_back(op);
      ++forwards;
    }
    if (w.kind != WAIT_HELD) continue;
    --r.dir.users[w.user].held;
    uint32_t jo = json(r, b, w.off, w.len), bo = bin(r, b, w.off2, w.len2);
    router_publish(r, w.user, jo, w.len, bo, w.len2, true, b);
  }
  for (size_t i = begin; i < end; ++i) {
    const Waiting &w = r.waiting[i];
    if (w.kind != WAIT_ACK) continue;
    --r.acks_waiting;
    if (!directory_is(r.dir, w.conn, w.gen)) continue;
    uint32_t off = static_cast<uint32_t>(b.bytes.size());
    b.bytes.append(r.waiting_bytes, w.off, w.len);
    b.writes.push_back(Write{w.conn, off, w.len, w.binary, 0});
  }
  for (size_t i = begin; i < end; ++i) {
    const Waiting &w = r.waiting[i];
    if (w.kind != WAIT_RECEIPT) continue;
    --r.receipts_waiting;
    Copier one, two;
    uint32_t off = one(r, b, w.off, w.len), off2 = two(r, b, w.off2, w.len2);
    router_publish(r, w.user, off, w.len, off2, w.len2, false, b);
  }
  if (end == r.waiting.size()) {
    r.waiting.clear();
    r.waiting_bytes.clear();
    r.held_forwards.clear();
    return;
  }
  // An asynchronous commit released a prefix: what stays keeps its bytes,
  // which were appended after those of everything released.
  // Held forwards were queued in the same order, so those released are a
  // prefix of held_forwards too.
  size_t keep = r.waiting_bytes.size();
  for (size_t i = end; i < r.waiting.size(); ++i) {
    const Waiting &w = r.waiting[i];
    if (w.kind == WAIT_FORWARD) {
      const StoreOp &op = r.held_forwards[w.off];
      if (op.payload_len) keep = std::min<size_t>(keep, op.payload_off);
      continue;
    }
    if (w.len) keep = std::min<size_t>(keep, w.off);
    if (w.len2) keep = std::min<size_t>(keep, w.off2);
  }
  r.waiting.erase(r.waiting.begin(), r.waiting.begin() + static_cast<std::ptrdiff_t>(end));
  r.waiting_bytes.erase(0, keep);
  r.held_forwards.erase(r.held_forwards.begin(), r.held_forwards.begin() + static_cast<std::ptrdiff_t>(forwards));
  for (StoreOp &op : r.held_forwards) op.payload_off = op.payload_len ? static_cast<uint32_t>(op.payload_off - keep) : 0;
  for (Waiting &w : r.waiting) {
    if (w.kind == WAIT_FORWARD) {
      w.off = static_cast<uint32_t>(w.off - forwards);
      continue;
    }
    w.off = w.len ? static_cast<uint32_t>(w.off - keep) : 0;
    w.off2 = w.len2 ? static_cast<uint32_t>(w.off2 - keep) : 0;
  }
}

void router_commit_failed(Router &r, Batch &b) {
  batch_clear(b);
  for (const Waiting &w : r.waiting) {
    if (w.kind == WAIT_HELD) {
      --r.dir.users[w.user].held;
    } else if (w.kind == WAIT_FORWARD) {
      --r.dir.users[w.user].forwards_waiting;
    } else if (w.kind == WAIT_ACK) {
      --r.acks_waiting;
      if (!directory_is(r.dir, w.conn, w.gen)) continue;
      bool dup = false;  // one close per connection
      for (const Write &x : b.writes) dup = dup || (x.close && x.conn == w.conn);
      if (!dup) b.writes.push_back(Write{w.conn, 0, 0, 0, 0, 1});
    }
  }
  for (const Waiting &w : r.waiting) {
    if (w.kind != WAIT_RECEIPT) continue;
    --r.receipts_waiting;
    Copier one, two;
    uint32_t off = one(r, b, w.off, w.len), off2 = two(r, b, w.off2, w.len2);
    router_publish(r, w.user, off, w.len, off2, w.len2, false, b);
  }
  r.waiting.clear();
  r.waiting_bytes.clear();
  // Not stored: not handed out either (their senders resend).
  r.held_forwards.clear();
}

}  // namespace sb
