// Live copies (durable on, durable_grace > 0). A copy for an online
// recipient is written at once and kept here instead of being written to
// the store. The sender hears "sent" when the recipient confirms delivery,
// or, if it has not within the grace (or disconnects first), when the copy
// has been written to the store. Either way "sent" means the message can no
// longer be lost with the process; most copies never touch the disk.
//
// Records live in pools indexed by integers and are reused, their strings
// keeping their capacity, so a steady stream of live copies allocates
// nothing. One timer (the embedder's, armed through Batch::live_wait_ms)
// serves all copies.
#include <algorithm>

#include "router.h"

namespace sb {

namespace {

template <class T>
uint32_t take(std::vector<T> &pool, std::vector<uint32_t> &free) {
  if (!free.empty()) {
    uint32_t i = free.back();
    free.pop_back();
    return i;
  }
  pool.emplace_back();
  return static_cast<uint32_t>(pool.size() - 1);
}

// Frees a copy's record once it is confirmed or stored; its refs in the
// queue and the late list become stale.
void free_copy(Router &r, uint32_t i) {
  LiveCopy &lc = r.live.copies[i];
  lc.more.clear();
  lc.ack = kNone;
  ++lc.gen;
  r.live.free_copies.push_back(i);
}

// Whether `ref` still names an unconfirmed copy.
bool live(const Live &l, const LiveRef &ref) {
  const LiveCopy &lc = l.copies[ref.i];
  return lc.gen == ref.gen && lc.base != kNone;
}

// One fewer copy for the "sent" `a` waits on. After the last one, a
// message whose copies were all confirmed by their recipients can no
// longer be lost: its "sent" is written now, unless something queued
// before it waits for a commit (it must not overtake an earlier "sent" or
// receipt). A message with a stored copy queues its "sent" for the commit.
void settle_ack(Router &r, uint32_t a, Batch &b) {
  LiveAck &ack = r.live.acks[a];
  if (--ack.left != 0) return;
  if (!ack.stored && r.waiting.empty()) {
    if (directory_is(r.dir, ack.conn, ack.gen)) {
      uint32_t off = static_cast<uint32_t>(b.bytes.size());
      b.bytes.append(ack.frame(), ack.frame_len());
      b.writes.push_back(Write{ack.conn, off, static_cast<uint32_t>(ack.frame_len()), uint8_t(ack.binary), 0});
    }
  } else {
    // Queued even for a connection that has closed since (it is skipped at
    // the release): a receipt waits behind every queued "sent".
    router_queue_ack_to(r, ack.conn, ack.gen, ack.frame(), ack.frame_len(), ack.binary, b);
  }
  r.live.free_acks.push_back(a);
}

void settle(Router &r, uint32_t i, Batch &b) {
  LiveCopy &lc = r.live.copies[i];
  --r.dir.users[lc.recipient].live;
  if (lc.sole) r.live.free_bases.push_back(lc.base);
  else live_release_base(r, lc.base);
  lc.base = kNone;
  settle_ack(r, lc.ack, b);
  for (uint32_t a : r.live.copies[i].more) settle_ack(r, a, b);
  free_copy(r, i);
}

// Not confirmed in time (or its recipient left): written to the store, and
// "sent" follows the commit.
void store_copy(Router &r, uint32_t i, Batch &b) {
  LiveCopy &lc = r.live.copies[i];
  r.live.by_key.erase(lc.key);
  const LiveBase &base = r.live.bases[lc.base];
  StoreOp op{};
  op.kind = STORE_ENQUEUE;
  op.recipient = lc.recipient;
  op.sender = base.sender;
  op.id = base.id;
  op.refid = base.refid;
  op.gid = base.gid;
  op.flags = base.flags;
  op.type = base.type;
  op.expiry = base.expiry;
  op.expires_at = base.expires_at;
  op.payload_off = static_cast<uint32_t>(b.bytes.size());
  op.payload_len = static_cast<uint32_t>(base.payload.size());
  b.bytes.append(base.payload);
  b.ops.push_back(op);
  router_notify_stored(r, b);
  r.live.acks[lc.ack].stored = true;
  for (uint32_t a : lc.more) r.live.acks[a].stored = true;
  ++r.counters.copies_stored;
  router_inbox_added(r, lc.recipient, base.payload.size());
  settle(r, i, b);
  b.commit = std::max(b.commit, int(COMMIT_SOON));
}

// The timer fires at most every quarter of the grace, so a copy waits
// between the grace and 1.25 times it; the embedder decides in a
// setImmediate, after the loop's poll phase has read the confirmations that
// already arrived.
void arm(Router &r, uint64_t now, Batch &b) {
  Live &l = r.live;
  while (l.head < l.queue.size() && !live(l, l.queue[l.head])) ++l.head;
  if (l.head >= l.queue.size()) {
    l.queue.clear();
    l.head = 0;
  }
  uint64_t grace = r.settings.grace_ms;
  int64_t wait = static_cast<int64_t>((grace + 3) / 4);
  if (l.head < l.queue.size()) {
    int64_t due = static_cast<int64_t>(l.queue[l.head].sent_at + grace) - static_cast<int64_t>(now);
    wait = std::max(due, wait);
  } else if (l.late.empty()) {
    l.timer_armed = false;
    return;
  }
  wait = std::max<int64_t>(wait, 1);
  l.timer_armed = true;
  l.timer_at = now + static_cast<uint64_t>(wait);
  b.live_wait_ms = wait;
}

}  // namespace

uint32_t live_new_ack(Router &r) {
  uint32_t a = take(r.live.acks, r.live.free_acks);
  r.live.acks[a].left = 0;
  r.live.acks[a].stored = false;
  return a;
}

uint32_t live_new_base(Router &r) {
  uint32_t i = take(r.live.bases, r.live.free_bases);
  r.live.bases[i].refs = 0;
  return i;
}

void live_release_base(Router &r, uint32_t i) {
  if (i == kNone) return;
  LiveBase &lb = r.live.bases[i];
  if (lb.refs > 0 && --lb.refs > 0) return;
  r.live.free_bases.push_back(i);
}

void live_add(Router &r, uint32_t ack, UserId recipient, uint32_t base, uint64_t now, Batch &b) {
  ++r.live.acks[ack].left;
  LiveBase &lb = r.live.bases[base];
  Key3 key{lb.sender, recipient, lb.id};
  if (uint32_t *had = r.live.by_key.find(key)) {
    // A resend of a message still live (the sender reconnected before its
    // "sent"): one confirmation answers both.
    r.live.copies[*had].more.push_back(ack);
    return;
  }
  uint32_t i = take(r.live.copies, r.live.free_copies);
  LiveCopy &lc = r.live.copies[i];
  lc.key = key;
  lc.recipient = recipient;
  lc.base = base;
  ++lb.refs;
  // One recipient, so one copy: a resend while it is live joins it (above).
  lc.sole = lb.gid == 0;
  lc.sent_at = now;
  lc.ack = ack;
  ++r.dir.users[recipient].live;
  r.live.by_key.put(key, i);
  r.live.queue.push_back(LiveRef{i, lc.gen, now});
  if (!r.live.timer_armed) arm(r, now, b);
}

void live_confirm(Router &r, uint32_t i, Batch &b) {
  r.live.by_key.erase(r.live.copies[i].key);
  settle(r, i, b);
}

void live_store_user(Router &r, UserId u, Batch &b) {
  // Called on every logout and location change: a user with no live
  // copies costs no scan of the queue (which holds every user's).
  if (u != kNone && r.dir.users[u].live == 0) return;
  Live &l = r.live;
  // Oldest first: the late ones went out before any still in the queue.
  for (size_t k = 0; k < l.late.size(); ++k) {
    const LiveRef ref = l.late[k];
    if (live(l, ref) && (u == kNone || l.copies[ref.i].recipient == u)) store_copy(r, ref.i, b);
  }
  for (size_t k = l.head; k < l.queue.size(); ++k) {
    const LiveRef ref = l.queue[k];
    if (live(l, ref) && (u == kNone || l.copies[ref.i].recipient == u)) store_copy(r, ref.i, b);
  }
}

// Stores the copies that are past the grace, unless the server or their
// recipient gives a reason to wait, up to 5 s (or the grace, if longer):
// - the loop is busy (this timer fired over half a grace late): the server
//   reads confirmations late, so silence says nothing about recipients;
// - the recipient is still confirming other messages (a confirmation from
//   one of its devices within the grace, here or on another node).
// Storing copies whose confirmations are merely late would add a store
// write and a delete per message exactly when the server has no time for
// them, and it would fall further behind: measured, at 40-50k msg/s in rate
// mode a plain 50 ms grace sent half the copies to the store and p50
// latency to 300 ms. A connected recipient that confirms nothing has its
// copies stored after the grace. Whatever is stored for one recipient is an
// oldest-first run of its copies (one decision per recipient per pass,
// older copies first), so the store keeps each sender's order.
void router_expire(Router &r, uint64_t now, Batch &b) {
  batch_clear(b);
  Live &l = r.live;
  l.timer_armed = false;
  if (r.stopped) return;
  uint64_t grace = r.settings.grace_ms;
  uint64_t due = now > grace ? now - grace : 0;
  uint64_t hold_max = std::max<uint64_t>(grace, 5000);
  uint64_t cap = now > hold_max ? now - hold_max : 0;
  bool busy = now > l.timer_at && double(now - l.timer_at) > double(grace) / 2;
  uint64_t pass = ++l.pass;
  auto decide = [&](const LiveRef &ref) {
    uint32_t i = ref.i;
    UserId u = l.copies[i].recipient;
    User &usr = r.dir.users[u];
    bool alive = false;
    if (!busy) {
      if (usr.confirm_pass != pass) {
        usr.confirm_pass = pass;
        usr.confirming = usr.remote_confirmed_at > due;
        for (ConnId c = usr.first; c != kNone; c = r.dir.conns[c].next)
          if (r.dir.conns[c].confirmed_at > due) usr.confirming = true;
      }
      alive = usr.confirming;
    }
    if ((busy || alive) && ref.sent_at > cap) l.late.push_back(ref);
    else store_copy(r, i, b);
  };
  l.late_scratch.swap(l.late);
  l.late.clear();
  for (const LiveRef &ref : l.late_scratch)
    if (live(l, ref)) decide(ref);
  l.late_scratch.clear();
  // Copies went out in queue order, so the expired ones are a prefix
  // (stale refs, of copies confirmed since, are skipped).
  while (l.head < l.queue.size() && l.queue[l.head].sent_at <= due) {
    const LiveRef ref = l.queue[l.head++];
    if (live(l, ref)) decide(ref);
  }
  if (l.head > 1024 && l.head * 2 > l.queue.size()) {
    l.queue.erase(l.queue.begin(), l.queue.begin() + static_cast<std::ptrdiff_t>(l.head));
    l.head = 0;
  }
  arm(r, now, b);
}

void router_stop(Router &r, Batch &b) {
  batch_clear(b);
  // Unconfirmed live copies: their senders never heard "sent" and will
  // resend, but a copy stored now is not lost if they do not come back.
  live_store_user(r, kNone, b);
  // Deletes that waited for a device's backlog read: every device goes now.
  router_release_all_deferred_acks(r, b);
  r.stopped = true;
  r.live.timer_armed = false;
  b.live_wait_ms = -1;
}

size_t router_live_count(const Router &r) { return r.live.by_key.size(); }

}  // namespace sb
