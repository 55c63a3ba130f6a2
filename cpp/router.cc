// The delivery decisions for one message or status (router.h). Each rule
// below is one of lib/server/server.ts route()'s, in its order; the
// comments carry route()'s reasons.
#include "router.h"

#include <algorithm>
#include <cstring>

#include "module.h"
#include "wire.h"

namespace sb {

namespace {

constexpr uint32_t kReceiptFlags = MOD_MESIBO_MSGFLAG_DELIVERYRECEIPT | MOD_MESIBO_MSGFLAG_READRECEIPT;
// Connection::stored values in a cluster: a copy another node stored, or
// one it forwarded live and keeps (it deletes it if it stores it).
constexpr uint8_t kForwardedStored = 1;
constexpr uint8_t kForwardedLive = 2;

bool transient(uint32_t flags) { return (flags & MOD_MESIBO_MSGFLAG_TRANSIENT) != 0; }

bool online(const Router &r, UserId u) {
  const User &usr = r.dir.users[u];
  return usr.conns > 0 || usr.remote > 0;
}

bool pumping(const Router &r, UserId u) { return r.dir.users[u].pumping > 0; }

// Whether a copy for `u` may end up in the store, and so counts against its inbox.
bool may_store(const Router &r, UserId u, uint32_t flags) {
  if (transient(flags)) return false;
  return r.settings.durable || !online(r, u) || pumping(r, u);
}

uint32_t put_bytes(std::string &arena, const char *p, size_t n) {
  uint32_t off = static_cast<uint32_t>(arena.size());
  if (n) arena.append(p, n);
  return off;
}

// A delivery's frames by form, from core_submit's frame/frame2.
struct Frames {
  const char *json = nullptr, *bin = nullptr;
  size_t json_len = 0, bin_len = 0;
};

Frames frames_of(const SubmitResult &res, int out_format) {
  Frames f;
  if (out_format == OUT_SAME) out_format = res.format;
  if (out_format == OUT_BOTH) {
    f.json = res.frame, f.json_len = res.frame_len;
    f.bin = res.frame2, f.bin_len = res.frame2_len;
  } else if (out_format == WIRE_BINARY) {
    f.bin = res.frame, f.bin_len = res.frame_len;
  } else {
    f.json = res.frame, f.json_len = res.frame_len;
  }
  return f;
}

// The frames copied once into the batch (written now) or into the waiting
// bytes (held for the commit); offsets so that either arena may grow.
struct Placed {
  bool done = false;
  uint32_t off = 0, len = 0, off2 = 0, len2 = 0;
};

void place(std::string &arena, const Frames &f, Placed &p) {
  if (p.done) return;
  p.done = true;
  p.off = put_bytes(arena, f.json, f.json_len);
  p.len = static_cast<uint32_t>(f.json_len);
  p.off2 = put_bytes(arena, f.bin, f.bin_len);
  p.len2 = static_cast<uint32_t>(f.bin_len);
}

void publish_placed(Router &r, UserId u, const Placed &p, bool delivery, Batch &b, bool unstored = false) {
  router_publish(r, u, p.off, p.len, p.off2, p.len2, delivery, b, unstored);
}

void hold(Router &r, UserId u, const Placed &p, Batch &b) {
  Waiting w{};
  w.kind = WAIT_HELD;
  w.user = u;
  w.off = p.off, w.len = p.len, w.off2 = p.off2, w.len2 = p.len2;
  ++r.dir.users[u].held;
  router_queue_waiting(r, w, b);
}

StoreOp &push_op(Batch &b, StoreOpKind kind, UserId recipient, UserId sender, const mesibo_message_params_t &p,
                 uint64_t now) {
  StoreOp op{};
  op.kind = kind;
  op.recipient = recipient;
  op.sender = sender;
  op.id = static_cast<uint32_t>(p.id);
  op.refid = static_cast<uint32_t>(p.refid);
  op.gid = static_cast<uint32_t>(p.groupid);
  op.flags = static_cast<uint32_t>(p.flags);
  op.type = static_cast<uint32_t>(p.type);
  op.expiry = static_cast<uint32_t>(p.expiry);
  op.expires_at = p.expiry ? now + uint64_t(p.expiry) * 1000 : 0;
  b.ops.push_back(op);
  return b.ops.back();
}

// The payload of a message, copied into the batch once for all its store operations.
struct PayloadAt {
  bool done = false;
  uint32_t off = 0;
};
uint32_t payload_in(Batch &b, PayloadAt &at, const char *payload, size_t len) {
  if (!at.done) {
    at.done = true;
    at.off = put_bytes(b.bytes, payload, len);
  }
  return at.off;
}

size_t status_frame(Router &r, mesibo_message_params_t &p, int format, std::string &out) {
  if (r.host.status_frame) return r.host.status_frame(r.host.data, &p, format, out);
  return wire_encode_status(format == WIRE_BINARY ? WIRE_BINARY : WIRE_JSON, p, out);
}

void write_now(Batch &b, ConnId c, const char *data, size_t len, bool binary) {
  uint32_t off = put_bytes(b.bytes, data, len);
  b.writes.push_back(Write{c, off, static_cast<uint32_t>(len), uint8_t(binary), 0});
}

// The members of a group, loaded from the store on first use; nullptr when
// the group does not exist.
const std::vector<UserId> *group(Router &r, uint32_t gid) {
  if (const std::vector<UserId> *m = directory_group(r.dir, gid)) return m;
  if (!r.host.load_group) return nullptr;
  r.names_scratch.clear();
  if (!r.host.load_group(r.host.data, gid, r.names_scratch)) return nullptr;
  std::vector<UserId> ids;
  ids.reserve(r.names_scratch.size());
  for (const std::string &n : r.names_scratch) ids.push_back(directory_intern(r.dir, n));
  directory_group_set(r.dir, gid, std::move(ids));
  return directory_group(r.dir, gid);
}

bool contains(const std::vector<UserId> &v, UserId u) {
  for (UserId x : v)
    if (x == u) return true;
  return false;
}

// `from` sent `status` for message `id` of `to`: confirms a live copy of
// it, and writes the status to `to` as a receipt where its flags ask for
// one, or where `wanted` (>= 0, the group) says another node's flags did.
// The status is encoded here, in `out_format`'s forms, only when a
// receipt is due (most statuses only confirm: the core does not encode them
// on the engine's path, core_submit). Returns whether a live copy was
// confirmed; `receipt` is the receipt's group (0 for 1:1) or -1 for none.
bool status_to_sender(Router &r, UserId from, UserId to, uint32_t id, uint32_t status, int out_format,
                      int64_t wanted, int64_t &receipt, Batch &b) {
  bool confirms = status == MESIBO_MODULE_MSGSTATUS_DELIVERED || status == MESIBO_MODULE_MSGSTATUS_READ;
  // A live copy confirmed: nothing was stored, nothing to delete. Its
  // "sent" goes before the receipt.
  uint32_t lc = kNone;
  if (confirms && to != kNone && r.live.by_key.size()) {
    if (uint32_t *found = r.live.by_key.find(Key3{to, from, id})) lc = *found;
  }
  if (lc != kNone) live_confirm(r, lc, b);
  int64_t gid = to == kNone ? -1 : receipts_take(r.receipts, to, from, id, status);
  if (gid < 0) gid = wanted;
  receipt = gid;
  if (gid < 0) return lc != kNone;
  Frames f;
  // A group message's receipt names the group, as the sender's "sent"
  // did. Encoded once per form some device reads, without the host: the
  // status hooks ran once for this status when the core took it (on
  // whichever node read it), and must not run again per form.
  mesibo_message_params_t sp{};
  sp.id = id;
  sp.status = status;
  sp.groupid = static_cast<mesibo_uint_t>(gid);
  sp.from = const_cast<char *>(r.dir.users[from].name.c_str());
  sp.to = const_cast<char *>(r.dir.users[to].name.c_str());
  r.frame_scratch.clear();
  r.frame_scratch2.clear();
  if (out_format != WIRE_BINARY) wire_encode_status(WIRE_JSON, sp, r.frame_scratch);
  if (out_format != WIRE_JSON) wire_encode_status(WIRE_BINARY, sp, r.frame_scratch2);
  f.json = r.frame_scratch.data(), f.json_len = r.frame_scratch.size();
  f.bin = r.frame_scratch2.data(), f.bin_len = r.frame_scratch2.size();
  // Statuses reach the sender in the order sent, delivered, read: a "sent"
  // still waiting for a commit (one queued just now by the confirmation
  // above, a commit not yet done) goes first, so the receipt waits behind
  // it, as any receipt queued before it does. A "sent" the confirmation
  // wrote at once is already in this batch, before it.
  if (r.acks_waiting || r.receipts_waiting) {
    Placed pl;
    place(r.waiting_bytes, f, pl);
    Waiting w{};
    w.kind = WAIT_RECEIPT;
    w.user = to;
    w.off = pl.off, w.len = pl.len, w.off2 = pl.off2, w.len2 = pl.len2;
    router_queue_waiting(r, w, b);
  } else {
    Placed pl;
    place(b.bytes, f, pl);
    publish_placed(r, to, pl, false, b);
  }
  return lc != kNone;
}

// The deletes that waited for `u`'s devices to finish their backlogs
// (DeferredAck), once none is reading; all of them for kNone.
void release_deferred_acks(Router &r, UserId u, Batch &b) {
  if (r.acks_deferred.empty()) return;
  if (u != kNone && (r.dir.users[u].pumping || r.dir.users[u].remote_pumping)) return;
  size_t keep = 0;
  for (const DeferredAck &d : r.acks_deferred) {
    if (u != kNone && d.user != u) {
      r.acks_deferred[keep++] = d;
      continue;
    }
    mesibo_message_params_t p{};
    p.id = d.id;
    push_op(b, STORE_ACK, d.user, d.sender, p, 0);
    b.commit = std::max(b.commit, int(COMMIT_SOON));
  }
  r.acks_deferred.resize(keep);
}

// Whether a "delivered" from `conn` of `u` must leave the stored copy for
// another of `u`'s devices that is still reading its backlog.
bool defer_ack(Router &r, UserId u, ConnId conn, UserId sender, uint32_t id) {
  const User &usr = r.dir.users[u];
  uint32_t others = usr.pumping - (conn != kNone && r.dir.conns[conn].pumping ? 1 : 0) + usr.remote_pumping;
  if (!others || sender == kNone || r.acks_deferred.size() >= kMaxDeferredAcks) return false;
  r.acks_deferred.push_back(DeferredAck{u, sender, id});
  return true;
}

int route_status(Router &r, UserId from, ConnId conn, const SubmitResult &res, int out_format, uint64_t now,
                 Batch &b) {
  const mesibo_message_params_t &p = res.params;
  uint32_t status = static_cast<uint32_t>(p.status);
  uint32_t id = static_cast<uint32_t>(p.id);
  ++r.counters.statuses[status & 255];
  bool confirms = status == MESIBO_MODULE_MSGSTATUS_DELIVERED || status == MESIBO_MODULE_MSGSTATUS_READ;
  std::string_view to_name(p.to ? p.to : "");
  // The user the receipt is for: the message's sender.
  UserId to = directory_find(r.dir, to_name);
  int64_t receipt = -1;
  bool confirmed_live =
      status_to_sender(r, from, to, id, status, out_format == OUT_SAME ? res.format : out_format, -1, receipt, b);
  // Any confirmation shows the device is reading (live.cc), also one for a
  // stored copy: an overloaded server may have stored the copies it now
  // reads confirmations for, and must not take the device for a silent one.
  // A copy another node forwarded live, and keeps: if that node stored it
  // meanwhile (its grace ran out), it deletes it itself when this status
  // reaches it (router_remote_status), so this node asks the store nothing.
  bool kept_elsewhere = false;
  if (conn != kNone && confirms && r.settings.durable) {
    r.dir.conns[conn].confirmed_at = now;
    uint8_t how = 0;
    if (r.settings.cluster && to != kNone && r.dir.conns[conn].stored.erase(Key3{to, 0, id}, &how))
      kept_elsewhere = how == kForwardedLive && r.dir.users[to].remote;
  }
  // A copy another node keeps, confirmed by this device while another
  // device of the same user here still reads its backlog: that node stores
  // it rather than settle it (keep), and this one deletes it once the
  // reading is done (a DeferredAck), or the reading device would never find
  // it: stored copies are per user.
  bool keep = kept_elsewhere && defer_ack(r, from, conn, to, id);
  // The sender has devices on other nodes: they confirm their live copies
  // and write the receipts their node tracks (router_remote_status).
  if (to != kNone && r.dir.users[to].remote) {
    StoreOp &op = push_op(b, STORE_FORWARD_STATUS, to, from, p, now);
    op.status = status;
    op.expires_at = 0;
    op.keep = keep;
    // The flags that asked for a receipt may be here (a copy another node
    // forwarded): the sender's devices there get it too.
    op.receipt = receipt >= 0;
    op.gid = receipt >= 0 ? static_cast<uint32_t>(receipt) : 0;
  }
  // With durability off only copies for offline users are stored: a
  // receipt for anything else has no copy to delete.
  if (!confirmed_live && !kept_elsewhere && status == MESIBO_MODULE_MSGSTATUS_DELIVERED &&
      (r.settings.durable || (conn != kNone && to != kNone && r.dir.conns[conn].stored.erase(Key3{to, 0, id}))) &&
      !defer_ack(r, from, conn, to, id)) {
    StoreOp &op = push_op(b, STORE_ACK, from, to, p, now);
    op.expires_at = 0;
    if (to == kNone) {
      op.payload_off = put_bytes(b.bytes, to_name.data(), to_name.size());
      op.payload_len = static_cast<uint32_t>(to_name.size());
    }
    // The inbox count goes down only when the store says a copy was there
    // (router_inbox_removed): a transient message was never stored.
    b.commit = std::max(b.commit, int(COMMIT_SOON));
  }
  return static_cast<int>(status);
}

// A copy for `rc`, who has connections on other nodes: handed out
// (STORE_FORWARD). With durability on (not transient, and `may_keep`: it
// is not a live copy) it is stored here first and handed out after that
// commit, so "sent" means what it means on one node; returns whether it
// was stored.
bool forward(Router &r, UserId rc, UserId from, const mesibo_message_params_t &p, const char *payload, size_t len,
             bool may_keep, PayloadAt &at, uint64_t now, Batch &b) {
  uint32_t flags = static_cast<uint32_t>(p.flags);
  // Also with durability off while an earlier copy waits for its commit:
  // forwarded at once, this one would overtake it.
  bool keep = may_keep && !transient(flags) && (r.settings.durable || r.dir.users[rc].forwards_waiting);
  StoreOp &op = push_op(b, keep ? STORE_ENQUEUE : STORE_FORWARD, rc, from, p, now);
  op.payload_off = payload_in(b, at, payload, len);
  op.payload_len = static_cast<uint32_t>(len);
  if (!keep) return false;
  router_inbox_added(r, rc, len);
  ++r.counters.copies_stored;
  b.commit = std::max(b.commit, int(COMMIT_SOON));
  router_forward_after_commit(r, b);
  return true;
}

// A copy as the store would give it back (from the sender, to the
// recipient or the group), encoded in the forms some device here reads;
// in the engine's scratch buffers until the next call.
Frames copy_frames(Router &r, UserId rc, UserId from, const mesibo_message_params_t &p, const char *payload,
                   size_t len) {
  mesibo_message_params_t mp = p;
  mp.from = const_cast<char *>(r.dir.users[from].name.c_str());
  mp.to = const_cast<char *>(p.groupid ? "" : r.dir.users[rc].name.c_str());
  r.frame_scratch.clear();
  r.frame_scratch2.clear();
  if (r.dir.json_conns) wire_encode_message(WIRE_JSON, mp, payload, len, r.frame_scratch);
  if (r.dir.binary_conns) wire_encode_message(WIRE_BINARY, mp, payload, len, r.frame_scratch2);
  return Frames{r.frame_scratch.data(), r.frame_scratch2.data(), r.frame_scratch.size(), r.frame_scratch2.size()};
}

}  // namespace

void batch_clear(Batch &b) {
  b.bytes.clear();
  b.writes.clear();
  b.ops.clear();
  b.commit = COMMIT_NONE;
  b.live_wait_ms = -1;
  b.per_recipient = false;
  b.recipients.clear();
  b.talked = false;
}

void router_init(Router &r, const RouterSettings &s, const RouterHost &host) {
  r.settings = s;
  r.host = host;
  directory_init(r.dir, s.max_connections);
  r.receipts.max = s.max_tracked_receipts;
}

UserId router_user_add(Router &r, std::string_view name) {
  UserId u = directory_intern(r.dir, name);
  directory_set_exists(r.dir, u, true);
  return u;
}

void router_user_remove(Router &r, std::string_view name) {
  UserId u = directory_find(r.dir, name);
  if (u == kNone) return;
  directory_set_exists(r.dir, u, false);
  r.dir.users[u].inbox_known = false;
}

ConnId router_login(Router &r, UserId u, bool binary) { return directory_login(r.dir, u, binary); }

void router_backlog_sent(Router &r, ConnId c, UserId sender, uint32_t id) {
  if (c >= r.dir.conns.size() || !r.dir.conns[c].open) return;
  // Durability on keeps them only in a cluster, where the same copy may
  // also come from the node that stored it (router_remote_message).
  if (r.settings.durable && !r.settings.cluster) return;
  r.dir.conns[c].stored.put(Key3{sender, 0, id}, 1);
}

void router_release_all_deferred_acks(Router &r, Batch &b) { release_deferred_acks(r, kNone, b); }

void router_set_remote_pumping(Router &r, UserId u, uint32_t nodes, Batch &b) {
  batch_clear(b);
  if (u >= r.dir.users.size()) return;
  User &usr = r.dir.users[u];
  bool released = usr.remote_pumping && !nodes;
  usr.remote_pumping = nodes;
  if (released) release_deferred_acks(r, u, b);
}

void router_backlog_done(Router &r, ConnId c, Batch &b) {
  batch_clear(b);
  if (c >= r.dir.conns.size() || !r.dir.conns[c].open) return;
  directory_backlog_done(r.dir, c);
  release_deferred_acks(r, r.dir.conns[c].user, b);
  if (r.after_backlog.empty()) return;
  const Connection &conn = r.dir.conns[c];
  size_t keep = 0;
  for (AfterBacklog &a : r.after_backlog) {
    if (a.conn != c) {
      if (&r.after_backlog[keep] != &a) r.after_backlog[keep] = std::move(a);
      ++keep;
      continue;
    }
    // One for an earlier connection with this id is dropped (router_logout drops them too).
    if (a.gen != conn.gen) continue;
    if (a.delivery) router_owe(r, c);
    b.writes.push_back(Write{c, put_bytes(b.bytes, a.bytes.data(), a.bytes.size()), static_cast<uint32_t>(a.bytes.size()),
                             a.binary, a.delivery});
  }
  r.after_backlog.resize(keep);
}

void router_forward_after_commit(Router &r, Batch &b) {
  StoreOp op = b.ops.back();
  op.kind = STORE_FORWARD;
  op.after_commit = 1;
  op.payload_off = put_bytes(r.waiting_bytes, b.bytes.data() + op.payload_off, op.payload_len);
  Waiting w{};
  w.kind = WAIT_FORWARD;
  w.user = op.recipient;
  w.off = static_cast<uint32_t>(r.held_forwards.size());
  r.held_forwards.push_back(op);
  ++r.dir.users[op.recipient].forwards_waiting;
  router_queue_waiting(r, w, b);
}

void router_notify_stored(Router &r, Batch &b) {
  if (r.settings.cluster) router_forward_after_commit(r, b);
}

bool router_backlog_recheck(Router &r, ConnId c) {
  if (c >= r.dir.conns.size() || !r.dir.conns[c].open) return false;
  bool again = r.dir.conns[c].recheck;
  r.dir.conns[c].recheck = false;
  return again;
}

bool router_logout(Router &r, ConnId c, Batch &b) {
  batch_clear(b);
  if (c >= r.dir.conns.size() || !r.dir.conns[c].open) return false;
  UserId u = r.dir.conns[c].user;
  if (!r.after_backlog.empty())
    r.after_backlog.erase(std::remove_if(r.after_backlog.begin(), r.after_backlog.end(),
                                         [c](const AfterBacklog &a) { return a.conn == c; }),
                          r.after_backlog.end());
  bool last = directory_logout(r.dir, c);
  release_deferred_acks(r, u, b);
  // What this device was sent but did not confirm may be lost with it:
  // store it now, in the order it was sent (another device of the same
  // user that confirms it deletes it).
  if (!r.stopped && r.live.by_key.size()) live_store_user(r, u, b);
  return last;
}

void router_store_live(Router &r, UserId u, Batch &b) {
  batch_clear(b);
  if (r.stopped || u >= r.dir.users.size() || !r.live.by_key.size()) return;
  live_store_user(r, u, b);
}

int32_t *router_owed(Router &r) { return r.dir.owed; }

void router_owe(Router &r, ConnId c) {
  // Two per message an inbox may hold: the most a connection legitimately
  // has unanswered from its backlog. A client that never answers cannot
  // save up an allowance for a flood of statuses later.
  int64_t cap = std::min<int64_t>(int64_t(2) * int64_t(r.settings.max_inbox_messages), INT32_MAX);
  r.dir.owed[c] = static_cast<int32_t>(std::min<int64_t>(int64_t(r.dir.owed[c]) + 2, cap));
}

int router_out_format(const Router &r) { return directory_out_format(r.dir); }

void router_track_receipt(Router &r, UserId sender, UserId recipient, uint32_t id, uint32_t flags, uint32_t gid) {
  receipts_track(r.receipts, sender, recipient, id, flags, gid);
}

void router_inbox_forget(Router &r, UserId u) {
  if (u == kNone) {
    for (User &usr : r.dir.users) usr.inbox_known = false;
  } else if (u < r.dir.users.size()) {
    r.dir.users[u].inbox_known = false;
  }
}

bool router_inbox_full(Router &r, UserId u, size_t bytes, uint64_t now) {
  User &usr = r.dir.users[u];
  auto read = [&] {
    usr.inbox_messages = 0;
    usr.inbox_bytes = 0;
    if (r.host.inbox_count) r.host.inbox_count(r.host.data, u, usr.inbox_messages, usr.inbox_bytes);
    usr.inbox_known = true;
    usr.inbox_read_at = now;
  };
  auto over = [&] {
    return usr.inbox_messages + 1 > r.settings.max_inbox_messages ||
           usr.inbox_bytes + double(bytes) > r.settings.max_inbox_bytes;
  };
  if (!usr.inbox_known) read();
  if (!over()) return false;
  // The count drifts (a deleted copy takes off the average size): read it
  // again when it says full, at most once a second.
  if (now - usr.inbox_read_at < 1000) return true;
  read();
  return over();
}

void router_inbox_removed(Router &r, UserId u) {
  if (u >= r.dir.users.size()) return;
  User &usr = r.dir.users[u];
  if (!usr.inbox_known || usr.inbox_messages == 0) return;
  // The store does not say how large the deleted copy was: take off the average.
  double avg = usr.inbox_bytes / double(usr.inbox_messages);
  --usr.inbox_messages;
  usr.inbox_bytes = usr.inbox_messages == 0 ? 0 : std::max(0.0, usr.inbox_bytes - avg);
}

void router_inbox_added(Router &r, UserId u, size_t bytes) {
  User &usr = r.dir.users[u];
  if (!usr.inbox_known) return;  // read from the store, with this copy, when first needed
  ++usr.inbox_messages;
  usr.inbox_bytes += double(bytes);
}

void router_publish(Router &r, UserId u, uint32_t json_off, uint32_t json_len, uint32_t bin_off, uint32_t bin_len,
                    bool delivery, Batch &b, bool unstored) {
  for (ConnId c = r.dir.users[u].first; c != kNone; c = r.dir.conns[c].next) {
    const Connection &conn = r.dir.conns[c];
    if (conn.binary ? !bin_len : !json_len) continue;
    if (conn.pumping) {
      // A stored copy comes with the backlog; what no store keeps would be
      // lost to a device that has just logged in (in a cluster its backlog
      // read waits for NATS and the store, long enough for a receipt or a
      // transient message to come).
      if ((!delivery || unstored) && r.after_backlog.size() < kMaxAfterBacklog) {
        uint32_t off = conn.binary ? bin_off : json_off, len = conn.binary ? bin_len : json_len;
        r.after_backlog.push_back(AfterBacklog{c, conn.gen, uint8_t(conn.binary), uint8_t(delivery), b.bytes.substr(off, len)});
      }
      continue;
    }
    // A message written may be answered with a delivered and a read status
    // that the rate limit does not count; a status is not answered, and a
    // device still sent its backlog gets the message (and owes) from it.
    if (delivery) router_owe(r, c);
    b.writes.push_back(
        Write{c, conn.binary ? bin_off : json_off, conn.binary ? bin_len : json_len, uint8_t(conn.binary), uint8_t(delivery)});
  }
}

int router_route(Router &r, UserId from, ConnId conn, const SubmitResult &res, int out_format, uint64_t now,
                 Batch &b) {
  batch_clear(b);
  if (conn != kNone && (conn >= r.dir.conns.size() || !r.dir.conns[conn].open)) conn = kNone;
  if (res.op == WIRE_OP_STATUS) return route_status(r, from, conn, res, out_format, now, b);

  const mesibo_message_params_t &p = res.params;
  uint32_t gid = static_cast<uint32_t>(p.groupid);
  uint32_t flags = static_cast<uint32_t>(p.flags);
  uint32_t id = static_cast<uint32_t>(p.id);
  bool sender_binary = res.format == WIRE_BINARY;
  int status = MSGSTATUS_SENT;
  bool stored = false;
  uint32_t live_ack = kNone;
  if (res.verdict != MESIBO_RESULT_PASS) {
    ++r.counters.received_consumed;
  } else {
    std::string_view to_name(p.to ? p.to : "");
    UserId to = kNone;
    if (!gid) {
      UserId seen = r.looked_up;
      to = seen != kNone && seen < r.dir.users.size() && r.dir.users[seen].name == to_name ? seen
                                                                                         : directory_find(r.dir, to_name);
    }
    r.looked_up = kNone;
    const std::vector<UserId> *group_members = gid ? group(r, gid) : nullptr;
    bool known = gid ? group_members != nullptr : (to != kNone && r.dir.users[to].exists);
    if (!known) {
      status = MESIBO_MODULE_MSGSTATUS_INVALIDDEST;
    } else if (gid && !contains(*group_members, from)) {
      status = MESIBO_MODULE_MSGSTATUS_BLOCKED;
    } else if (transient(flags) && !gid && !online(r, to)) {
      status = MESIBO_MODULE_MSGSTATUS_NOTACTIVE;
    } else if (!gid && may_store(r, to, flags) && router_inbox_full(r, to, res.payload_len, now)) {
      ++r.counters.inbox_full;
      status = MESIBO_MODULE_MSGSTATUS_INBOXFULL;
    } else if (r.settings.per_recipient_stages) {
      // Per-recipient middleware: each copy is built, stored and sent on
      // its own by the embedder; the sender's "sent" follows the last one.
      ++r.counters.received_pass;
      b.per_recipient = true;
      if (gid) b.recipients = *group_members;
      else b.recipients.push_back(to);
      return status;
    } else {
      const UserId one[1] = {to};
      const UserId *rcp = gid ? group_members->data() : one;
      size_t n = gid ? group_members->size() : 1;
      Frames frames = frames_of(res, out_format);
      Placed now_frames, held_frames;
      PayloadAt payload_at;
      // With durability on, a recipient sees a message only once it is in
      // the store (a copy published before the commit could be lost with a
      // killed process, and its resend would then arrive after later
      // messages, out of the sender's order), unless it is a live copy:
      // sent at once, and "sent" waits for its confirmation (live.cc).
      bool held = r.settings.durable && !transient(flags);
      bool live = held && conn != kNone && r.settings.grace_ms > 0;
      uint32_t live_base = kNone;
      if (!gid) b.talked = true;
      for (size_t i = 0; i < n; ++i) {
        UserId rc = rcp[i];
        if (rc == from && gid) continue;
        // A member whose inbox is full misses a group message; the sender
        // still hears "sent" for the others (a 1:1 message was refused above).
        if (gid && may_store(r, rc, flags) && router_inbox_full(r, rc, res.payload_len, now)) {
          ++r.counters.inbox_full;
          continue;
        }
        const User &usr = r.dir.users[rc];
        bool on = usr.conns > 0;
        // A copy neither sent nor stored (transient, recipient offline) is
        // never answered: its flags would only wait to be evicted.
        if (flags & kReceiptFlags && (on || !transient(flags) || usr.remote))
          receipts_track(r.receipts, from, rc, id, flags, gid);
        // Devices on other nodes get it from there. As a live copy (durable
        // on, a grace, and no device here that must get it after a commit)
        // it goes at once and this node keeps the live copy, as for a device
        // here: the "delivered" their node forwards confirms it, and
        // unconfirmed within the grace it is stored. Otherwise, with
        // durability on, it is stored once here and goes after that commit.
        bool local_live = on && live && !usr.pumping && !usr.held;
        // A copy that is stored (a device here still reading its backlog,
        // a copy before it waiting for its commit) must not land in the
        // store before this user's older live copies, should they be
        // stored later (unconfirmed, or their device gone): a backlog
        // would then give them after it. They are stored first.
        if (held && usr.live &&
            !(usr.remote ? live && !usr.forwards_waiting && (!on || local_live) : local_live))
          live_store_user(r, rc, b);
        bool remote_live = false, kept = false;
        if (usr.remote) {
          remote_live = live && !usr.forwards_waiting && (!on || local_live);
          kept = forward(r, rc, from, p, res.payload, res.payload_len, !remote_live, payload_at, now, b);
          stored = stored || kept;
          if (!on && !remote_live) continue;
        }
        if (remote_live || (local_live && !kept)) {
          if (local_live) {
            place(b.bytes, frames, now_frames);
            publish_placed(r, rc, now_frames, true, b);
            ++r.counters.delivered;
          }
          if (live_ack == kNone) {
            live_ack = live_new_ack(r);
            LiveAck &a = r.live.acks[live_ack];
            a.conn = conn;
            a.gen = r.dir.conns[conn].gen;
            a.binary = sender_binary;
            a.set_frame(res.ack, res.ack_len);
          }
          if (live_base == kNone) {
            live_base = live_new_base(r);
            LiveBase &lb = r.live.bases[live_base];
            lb.sender = from;
            lb.id = id;
            lb.refid = static_cast<uint32_t>(p.refid);
            lb.gid = gid;
            lb.flags = flags;
            lb.type = static_cast<uint32_t>(p.type);
            lb.expiry = static_cast<uint32_t>(p.expiry);
            lb.expires_at = p.expiry ? now + uint64_t(p.expiry) * 1000 : 0;
            lb.payload.assign(res.payload, res.payload_len);
          }
          live_add(r, live_ack, rc, live_base, now, b);
          continue;
        }
        if (on) {
          ++r.counters.delivered;
          if (!held) {
            place(b.bytes, frames, now_frames);
            publish_placed(r, rc, now_frames, true, b, transient(flags));
          } else {
            place(r.waiting_bytes, frames, held_frames);
            hold(r, rc, held_frames, b);
          }
        }
        if (kept || transient(flags) || (on && !r.settings.durable && !usr.pumping)) continue;
        StoreOp &op = push_op(b, STORE_ENQUEUE, rc, from, p, now);
        op.payload_off = payload_in(b, payload_at, res.payload, res.payload_len);
        op.payload_len = static_cast<uint32_t>(res.payload_len);
        router_inbox_added(r, rc, res.payload_len);
        ++r.counters.copies_stored;
        router_notify_stored(r, b);
        stored = true;
      }
      // Every copy found its message already live (resends): nothing holds the base.
      if (live_base != kNone && r.live.bases[live_base].refs == 0) live_release_base(r, live_base);
      // A copy stored beside the live ones: "sent" waits for its commit.
      if (live_ack != kNone && stored) r.live.acks[live_ack].stored = true;
    }
    if (status == MSGSTATUS_SENT) ++r.counters.received_pass;
    else ++r.counters.received_failed;
  }
  if (conn == kNone) {
    if (stored) b.commit = COMMIT_NOW;
    return status;
  }
  if (status != int(MSGSTATUS_SENT)) {
    mesibo_message_params_t sp{};
    sp.id = id;
    sp.status = static_cast<mesibo_uint_t>(status);
    sp.groupid = gid;
    sp.from = p.to;
    sp.to = const_cast<char *>(r.dir.users[from].name.c_str());
    r.frame_scratch.clear();
    size_t n = status_frame(r, sp, sender_binary ? WIRE_BINARY : WIRE_JSON, r.frame_scratch);
    write_now(b, conn, r.frame_scratch.data(), n, sender_binary);
  } else if (live_ack != kNone) {
    // "Sent" when the last live copy is confirmed or stored, with the acks
    // of that turn, after its commit: so also after the commit of any copy
    // stored here.
  } else if (stored) {
    // "Sent" means durable: the ack waits for this turn's group commit.
    router_queue_ack(r, conn, res.ack, res.ack_len, sender_binary, b);
  } else {
    write_now(b, conn, res.ack, res.ack_len, sender_binary);
  }
  return status;
}

bool router_deliver_copy(Router &r, UserId rc, UserId from, const mesibo_message_params_t &p, const char *payload,
                         size_t len, uint64_t now, Batch &b) {
  uint32_t flags = static_cast<uint32_t>(p.flags);
  if (may_store(r, rc, flags) && router_inbox_full(r, rc, len, now)) {
    ++r.counters.inbox_full;
    return false;
  }
  const User &usr = r.dir.users[rc];
  bool on = usr.conns > 0;
  bool kept = false;
  if (usr.remote) {
    PayloadAt at;
    kept = forward(r, rc, from, p, payload, len, true, at, now, b);
  }
  if (on) {
    ++r.counters.delivered;
    Frames f = copy_frames(r, rc, from, p, payload, len);
    Placed pl;
    if (r.settings.durable && !transient(flags)) {
      place(r.waiting_bytes, f, pl);
      hold(r, rc, pl, b);
    } else {
      place(b.bytes, f, pl);
      publish_placed(r, rc, pl, true, b, transient(flags));
    }
  }
  if (flags & kReceiptFlags && (on || !transient(flags) || usr.remote))
    receipts_track(r.receipts, from, rc, static_cast<uint32_t>(p.id), flags, static_cast<uint32_t>(p.groupid));
  if (kept) return true;
  if (transient(flags) || (on && !r.settings.durable && !usr.pumping)) return false;
  StoreOp &op = push_op(b, STORE_ENQUEUE, rc, from, p, now);
  op.payload_off = put_bytes(b.bytes, payload, len);
  op.payload_len = static_cast<uint32_t>(len);
  ++r.counters.copies_stored;
  router_inbox_added(r, rc, len);
  router_notify_stored(r, b);
  b.commit = std::max(b.commit, int(COMMIT_SOON));
  return true;
}

int router_module_message(Router &r, std::string_view from_name, const mesibo_message_params_t &p,
                          const char *payload, size_t len, uint64_t now, Batch &b) {
  batch_clear(b);
  uint32_t gid = static_cast<uint32_t>(p.groupid);
  UserId from = directory_intern(r.dir, from_name);
  const std::vector<UserId> *members = nullptr;
  UserId to = kNone;
  if (gid) {
    members = group(r, gid);
    if (!members) return -1;
  } else {
    to = directory_find(r.dir, p.to ? p.to : "");
    if (to == kNone || !r.dir.users[to].exists) return -1;
  }
  if (r.settings.per_recipient_stages) {
    b.per_recipient = true;
    if (gid) b.recipients = *members;
    else b.recipients.push_back(to);
    return 0;
  }
  if (gid) {
    for (size_t i = 0; i < members->size(); ++i) {
      UserId rc = (*members)[i];
      if (rc != from) router_deliver_copy(r, rc, from, p, payload, len, now, b);
    }
  } else {
    router_deliver_copy(r, to, from, p, payload, len, now, b);
  }
  b.commit = std::max(b.commit, int(COMMIT_SOON));
  return 0;
}

bool router_remote_message(Router &r, UserId rc, UserId from, const mesibo_message_params_t &p, const char *payload,
                           size_t len, bool stored, uint64_t now, Batch &b) {
  batch_clear(b);
  if (rc >= r.dir.users.size() || from >= r.dir.users.size()) return false;
  uint32_t flags = static_cast<uint32_t>(p.flags);
  User &usr = r.dir.users[rc];
  bool written = false;
  // The recipient's status is read here: it is a receipt when these flags
  // ask for one, on every node where the sender has devices
  // (STORE_FORWARD_STATUS.receipt).
  if (flags & kReceiptFlags && (usr.conns || !transient(flags)))
    receipts_track(r.receipts, from, rc, static_cast<uint32_t>(p.id), flags, static_cast<uint32_t>(p.groupid));
  // A transient copy is for devices still sent their backlog too (after it): no store keeps it.
  if (usr.conns > usr.pumping || (usr.conns && transient(flags))) {
    Frames f = copy_frames(r, rc, from, p, payload, len);
    Placed pl;
    place(b.bytes, f, pl);
    size_t before = b.writes.size();
    publish_placed(r, rc, pl, true, b, transient(flags));
    // A stored copy its backlog already gave a device is not written again.
    if (stored) {
      Key3 key{from, 0, static_cast<uint32_t>(p.id)};
      size_t keep = before;
      for (size_t i = before; i < b.writes.size(); ++i)
        if (!r.dir.conns[b.writes[i].conn].stored.find(key)) b.writes[keep++] = b.writes[i];
      b.writes.resize(keep);
    }
    written = b.writes.size() > before;
    if (written) ++r.counters.delivered;
    // Durability on: the sending node stores the copy if this device does
    // not confirm in time, and hands it out again after that commit; the
    // device has it already.
    if (r.settings.durable && r.settings.cluster)
      for (size_t i = before; i < b.writes.size(); ++i)
        r.dir.conns[b.writes[i].conn].stored.put(Key3{from, 0, static_cast<uint32_t>(p.id)},
                                                 stored ? kForwardedStored : kForwardedLive);
  }
  for (ConnId c = usr.first; c != kNone; c = r.dir.conns[c].next) {
    Connection &conn = r.dir.conns[c];
    // Its backlog read may have come before the other node's commit.
    if (conn.pumping && stored) conn.recheck = true;
  }
  // Not stored by the other node (durability off, or transient): stored
  // here when no device here took it, as a copy for an offline user, or
  // one still reading its backlog, is on one node.
  if (!stored && !transient(flags) && (!written || usr.pumping)) {
    StoreOp &op = push_op(b, STORE_ENQUEUE, rc, from, p, now);
    op.payload_off = put_bytes(b.bytes, payload, len);
    op.payload_len = static_cast<uint32_t>(len);
    router_inbox_added(r, rc, len);
    ++r.counters.copies_stored;
    b.commit = std::max(b.commit, int(COMMIT_SOON));
  }
  return written;
}

void router_remote_status(Router &r, UserId from, UserId to, uint32_t id, uint32_t status, int64_t receipt_gid,
                          uint64_t now, Batch &b, bool keep) {
  batch_clear(b);
  if (from >= r.dir.users.size() || to >= r.dir.users.size()) return;
  bool confirms = status == MESIBO_MODULE_MSGSTATUS_DELIVERED || status == MESIBO_MODULE_MSGSTATUS_READ;
  if (confirms) r.dir.users[from].remote_confirmed_at = now;
  // Another device of `from` on that node is reading its backlog: settled
  // here, this copy would be in no store for it to find. `from`'s live
  // copies are stored (oldest first, as at a second device's login), this
  // one with them, and hand out after their commit.
  if (keep && confirms && r.settings.durable) live_store_user(r, from, b);
  int64_t receipt = -1;
  bool confirmed = status_to_sender(r, from, to, id, status, directory_out_format(r.dir), receipt_gid, receipt, b);
  // A copy this node forwarded live and stored when its grace ran out: the
  // recipient's node left the delete to this one (route_status), unless it
  // keeps it for a device reading its backlog.
  if (!confirmed && !keep && r.settings.durable && status == MESIBO_MODULE_MSGSTATUS_DELIVERED &&
      !defer_ack(r, from, kNone, to, id)) {
    mesibo_message_params_t p{};
    p.id = id;
    StoreOp &op = push_op(b, STORE_ACK, from, to, p, now);
    op.expires_at = 0;
    b.commit = std::max(b.commit, int(COMMIT_SOON));
  }
}

bool router_dest_online(Router &r, std::string_view to) {
  UserId u = directory_find(r.dir, to);
  r.looked_up = u;
  return u != kNone && r.dir.users[u].first != kNone;
}

}  // namespace sb
