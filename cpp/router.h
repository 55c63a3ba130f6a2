// The delivery engine: every per-message decision lib/server/server.ts
// route() made in TypeScript, made here on integer ids (docs/delivery.md).
// One call per frame, after core_submit: router_route() decides where the
// message or the status goes and fills a Batch with
// - the writes to make now (connection id, bytes, form), which the embedder
//   performs corked, in order;
// - the store operations to perform (enqueue a copy, delete an
//   acknowledged one, forward a copy to another node);
// - whether a commit is due (soon, or at once for the backend API).
// Deliveries held for the group commit and "sent"s that wait for it are
// kept here and come out of router_committed(), which the embedder calls
// when the store reports the commit done: with SQLite right after
// store.flush(), with an asynchronous store (PostgreSQL) whenever its commit
// completes. router_commit_begin() closes an epoch first, so that a commit
// releases exactly what was queued before it began.
//
// Memory: the Router owns everything it keeps; a Batch belongs to the
// caller, is cleared by every call that fills it and keeps its capacity, so
// the steady state allocates nothing. Pointers and offsets in a Batch are
// valid until the next call with it. Loop thread only.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "core.h"
#include "directory.h"
#include "flat_map.h"
#include "receipts.h"

namespace sb {

// One write for the embedder: bytes [off, off+len) of Batch::bytes to
// connection `conn` (its id from router_login), a binary or a text frame.
// `delivery` marks a message copy (the format middleware stage applies to
// it); statuses and "sent"s are not deliveries.
struct Write {
  ConnId conn;
  uint32_t off, len;
  uint8_t binary;
  uint8_t delivery;
  // Not a write: close this connection, its "sent" was dropped by a failed
  // commit (router_commit_failed); len is 0.
  uint8_t close = 0;
};

enum StoreOpKind : uint32_t {
  // Write a copy for `recipient` (store.enqueue); the payload is in Batch::bytes.
  STORE_ENQUEUE = 1,
  // `recipient` confirmed `sender`'s message `id`: delete the stored copy
  // (store.ack(recipient, sender, id)); each copy the store reports deleted
  // goes to router_inbox_removed. `sender` is kNone when the status
  // named someone the engine never knew; the name is then in Batch::bytes
  // at payload_off/payload_len.
  STORE_ACK = 2,
  // The recipient has connections on other nodes (directory_set_remote):
  // hand them the copy (the cluster room publishes it to the recipient's
  // subject; docs/cluster.md). `after_commit`: the copy was also stored in
  // this batch (an STORE_ENQUEUE before it), and goes out once that commit
  // is done; otherwise (a transient message, or durability off) at once.
  // The other node delivers it with router_remote_message.
  STORE_FORWARD = 3,
  // A status for `recipient` (the message's sender), who has connections
  // on other nodes: `sender` sent status `status` for message `id`. The
  // other node writes it (router_remote_status) where its receipt flags
  // ask for it. Not stored: a status is not kept.
  STORE_FORWARD_STATUS = 4,
};

struct StoreOp {
  StoreOpKind kind;
  UserId recipient, sender;
  uint32_t id, refid, gid, flags, type, expiry;
  uint64_t expires_at;  // ms, 0 for none
  uint32_t payload_off, payload_len;
  uint8_t after_commit;  // STORE_FORWARD
  uint32_t status;       // STORE_FORWARD_STATUS
  // STORE_FORWARD_STATUS: the flags this node keeps asked for a receipt
  // (its group in gid): the other node writes it to the sender's devices
  // there even without flags of its own.
  uint8_t receipt;
  // STORE_FORWARD_STATUS: a device of the recipient here is still reading
  // its backlog: the node that keeps the copy stores it rather than settle
  // it, and leaves the delete to this node, which makes it once the
  // reading is done (router_remote_status).
  uint8_t keep;
};

enum CommitDue : int {
  COMMIT_NONE = 0,
  COMMIT_SOON = 1,  // after this loop turn (setImmediate): the group commit
  COMMIT_NOW = 2,   // before answering (a backend API message that was stored)
};

struct Batch {
  std::string bytes;
  std::vector<Write> writes;
  std::vector<StoreOp> ops;
  int commit = COMMIT_NONE;
  // >= 0: arm the live-copy timer to call router_expire in this many ms.
  int64_t live_wait_ms = -1;
  // router_route / router_module_message: the per-recipient middleware
  // stages (send, format) are not empty, so the embedder delivers each copy
  // itself (router_deliver_copy) to these recipients, as deliverEach() did.
  bool per_recipient = false;
  std::vector<UserId> recipients;
  // A 1:1 message went the plain path: the presence room records that
  // sender and recipient talked (presence = contacts).
  bool talked = false;
};

void batch_clear(Batch &b);

// What /metrics counts of deliveries (lib/server/metrics.ts names them).
struct Counters {
  uint64_t delivered = 0;
  uint64_t copies_stored = 0;
  uint64_t received_pass = 0;
  uint64_t received_failed = 0;
  uint64_t received_consumed = 0;
  uint64_t inbox_full = 0;
  uint64_t statuses[256] = {};
};

struct RouterSettings {
  bool durable = true;
  uint64_t grace_ms = 50;  // durable_grace
  uint64_t max_inbox_messages = 10000;
  double max_inbox_bytes = 64 << 20;
  size_t max_connections = 1024;
  size_t max_tracked_receipts = 1000000;
  // Frames a second (admit.h): rate_limit per connection, user_rate_limit
  // per user; each bucket's burst is one second's worth.
  double rate_limit = 100;
  double user_rate_limit = 300;
  // The send or format middleware stage has a handler: deliveries go
  // through the embedder one recipient at a time (Batch::per_recipient).
  bool per_recipient_stages = false;
  // One node of a cluster: every copy stored is also handed out after its
  // commit (STORE_FORWARD, after_commit), so a device of its recipient that
  // logs in on another node while the copy is being stored gets it even if
  // it read its backlog before that commit (docs/cluster.md).
  bool cluster = false;
};

// How the engine reaches what it does not keep. Each may be null. Called
// only off the plain path: the first message to a group, the first copy
// for a recipient (its inbox count), an inbox that looks full.
struct RouterHost {
  void *data = nullptr;
  // The members of group `gid` as the store has them; false when there is
  // no such group.
  bool (*load_group)(void *data, uint32_t gid, std::vector<std::string> &members) = nullptr;
  // The committed count of `u`'s inbox (the embedder commits pending writes
  // first, or errs low: the server's does not). Null: counts start at 0.
  void (*inbox_count)(void *data, UserId u, uint64_t &messages, double &bytes) = nullptr;
  // Encodes a status frame the engine decided (a failure) for p->to into
  // `out` and returns its length (the server's: core_status, which also
  // runs on_message_status). Null: wire_encode_status. Not used for a group
  // receipt, whose status the core already dispatched. It may reuse the core's buffers: the engine calls
  // it only once it no longer reads the frames of the SubmitResult.
  size_t (*status_frame)(void *data, mesibo_message_params_t *p, int format, std::string &out) = nullptr;
};

// A live copy (durable on, durable_grace > 0): delivered before it was
// stored; the sender's "sent" waits for its confirmation, or for the store
// when it is not confirmed in time (live.cc).
struct LiveAck {
  ConnId conn = kNone;
  uint32_t gen = 0;
  uint32_t left = 0;  // copies not yet confirmed or stored
  // A copy of the message was stored (or handed to another node): "sent"
  // then waits for the commit that covers it. Otherwise every copy was
  // confirmed by its recipient, and "sent" goes at once unless an earlier
  // "sent" or receipt still waits for a commit.
  bool stored = false;
  bool binary = false;
  // The sender's "sent", in the record when it fits (names up to some 40
  // bytes), so the confirmation, some 20 ms later at 8,000 copies in
  // flight, reads one cold record rather than a record and a heap string;
  // otherwise in long_frame (len kLong).
  static constexpr size_t kInline = 96;
  static constexpr uint8_t kLong = 255;
  uint8_t len = 0;
  char inline_frame[kInline];
  std::string long_frame;
  void set_frame(const char *f, size_t n) {
    if (n <= kInline) {
      std::memcpy(inline_frame, f, n);
      len = static_cast<uint8_t>(n);
    } else {
      long_frame.assign(f, n);
      len = kLong;
    }
  }
  const char *frame() const { return len == kLong ? long_frame.data() : inline_frame; }
  size_t frame_len() const { return len == kLong ? long_frame.size() : len; }
};
struct LiveBase {  // the message as the store takes it, shared by a group message's copies
  UserId sender = kNone;
  uint32_t id = 0, refid = 0, gid = 0, flags = 0, type = 0, expiry = 0;
  uint64_t expires_at = 0;
  std::string payload;
  uint32_t refs = 0;
};
struct LiveCopy {
  Key3 key;  // (sender, recipient, id)
  UserId recipient = kNone;
  uint32_t base = kNone;  // kNone once confirmed or stored
  uint64_t sent_at = 0;
  uint32_t ack = kNone;
  // A 1:1 message's base has this one copy: freed without reading it (a
  // cold line at the confirmation).
  bool sole = false;
  std::vector<uint32_t> more;  // acks of resends while it was live
  // Changes each time the record is freed: a LiveRef to an older use of
  // the record no longer names it.
  uint32_t gen = 0;
};
// A copy in the send-order queue or the late list: its record and the
// use of it (gen), with the send time kept here, so the expiry pass reads
// the queue without touching records. A copy's record is freed as soon as
// it is confirmed or stored (and reused while it is still in cache); its
// refs are then stale and skipped.
struct LiveRef {
  uint32_t i, gen;
  uint64_t sent_at;
};
struct Live {
  std::vector<LiveCopy> copies;
  std::vector<uint32_t> free_copies;
  std::vector<LiveBase> bases;
  std::vector<uint32_t> free_bases;
  std::vector<LiveAck> acks;
  std::vector<uint32_t> free_acks;
  FlatMap<Key3, uint32_t> by_key;  // unconfirmed copies
  std::vector<LiveRef> queue;      // in the order they were sent
  size_t head = 0;
  std::vector<LiveRef> late, late_scratch;  // past the grace, given more time
  bool timer_armed = false;
  uint64_t timer_at = 0;  // when the timer should fire: how late it does shows how busy the loop is
  uint64_t pass = 0;
};

// What waits for a commit, in the order it was queued.
// WAIT_FORWARD: a copy for `user` stored in this commit, which comes out of
// router_committed as a STORE_FORWARD operation (after_commit) for the
// cluster room to hand out; until then later copies for that user are not
// forwarded live, which would overtake it.
enum WaitKind : uint8_t { WAIT_HELD, WAIT_ACK, WAIT_RECEIPT, WAIT_FORWARD };
struct Waiting {
  WaitKind kind;
  uint8_t binary;  // WAIT_ACK
  uint64_t epoch;
  UserId user;   // WAIT_HELD, WAIT_RECEIPT, WAIT_FORWARD
  ConnId conn;   // WAIT_ACK
  uint32_t gen;  // WAIT_ACK
  // Bytes in Router::waiting_bytes: the JSON form (or the ack) and the
  // binary form; len 0 for a form nobody reads.
  uint32_t off, len, off2, len2;
};

// A "delivered" from one device of `user` for a stored copy while another
// device of that user was still reading its backlog: the copy's delete
// waits until none of its devices is reading (router_backlog_done,
// router_logout), or that device would never find it, since stored copies
// are per user, not per device.
struct DeferredAck {
  UserId user, sender;
  uint32_t id;
};
// At most this many wait; past it a delete goes at once (a backlog reader
// stuck for that long is the slow-reader case, closed anyway).
constexpr size_t kMaxDeferredAcks = 1 << 16;
// A write for a connection still sent its backlog that the backlog does
// not carry (a status, a receipt, a transient copy): written right after
// its backlog (router_backlog_done), in the order made.
struct AfterBacklog {
  ConnId conn;
  uint32_t gen;
  uint8_t binary, delivery;
  std::string bytes;
};
// At most this many wait at once; past it they are dropped, as before there was a wait.
constexpr size_t kMaxAfterBacklog = 65536;

struct Router {
  RouterSettings settings;
  RouterHost host;
  Directory dir;
  Receipts receipts;
  Live live;
  Counters counters;
  std::vector<DeferredAck> acks_deferred;
  std::vector<Waiting> waiting;
  std::string waiting_bytes;
  // The copies WAIT_FORWARD entries hand out (Waiting::off indexes it),
  // their payloads in waiting_bytes at payload_off.
  std::vector<StoreOp> held_forwards;
  uint64_t epoch = 1;  // the open epoch: what is queued now
  size_t acks_waiting = 0, receipts_waiting = 0;
  std::vector<AfterBacklog> after_backlog;
  bool stopped = false;
  // Scratch, reused.
  std::vector<std::string> names_scratch;
  std::string frame_scratch, frame_scratch2;
  // The user the core last asked about (router_dest_online), for the
  // routing that follows: used only if its name is the one routed to (a
  // module may have rewritten the destination meanwhile).
  UserId looked_up = kNone;
};

// For the core's chain (Core::dest_online): whether `to` has a connection
// here; remembers the user for router_route.
bool router_dest_online(Router &r, std::string_view to);

// Sets up an engine; `host` may be all null (native tests).
void router_init(Router &r, const RouterSettings &s, const RouterHost &host);

// --- Sessions -------------------------------------------------------------

// A user of the store (created, or listed at start-up): 1:1 messages to it
// are routed. Returns its id.
UserId router_user_add(Router &r, std::string_view name);
// No longer a user (removed): 1:1 messages to it are INVALIDDEST; its
// inbox count is forgotten.
void router_user_remove(Router &r, std::string_view name);

// A connection of `u` logged in, in the given form. Its backlog is being
// sent (router_backlog_done ends that); until then nothing live is written
// to it and copies for its user are stored. kNone when max_connections are
// open.
ConnId router_login(Router &r, UserId u, bool binary);
// A backlog message went to `c` (the embedder's pump): with durability off
// its "delivered" deletes the stored copy (Connection::stored); in a
// cluster the same copy coming from the node that stored it is not written
// to `c` again. The pump also owes the connection its statuses (router_owe).
void router_backlog_sent(Router &r, ConnId c, UserId sender, uint32_t id);
// The backlog of `c` is sent: live writes go to it from now on, and the
// batch holds what waited for it (AfterBacklog, and the deletes of
// DeferredAck). Clears `b`.
void router_backlog_done(Router &r, ConnId c, Batch &b);
// How many other nodes have a device of `u` reading its backlog
// (User::remote_pumping). Back to 0 with none reading here: the deletes
// that waited for them are in the batch.
void router_set_remote_pumping(Router &r, UserId u, uint32_t nodes, Batch &b);
// Appends every delete that waits for a backlog read (DeferredAck) to `b`
// and forgets them: the server stops, and no device is reading any more.
void router_release_all_deferred_acks(Router &r, Batch &b);
// Whether the pump of `c` must read the store once more before it calls
// router_backlog_done: a copy another node stored arrived meanwhile
// (Connection::recheck). Clears the flag.
bool router_backlog_recheck(Router &r, ConnId c);
// The connection closed. Unless the engine is stopped, every live copy of
// its user is stored now, oldest first (another device that confirms one
// deletes it). Returns whether it was the user's last connection (the
// presence room announces "offline").
bool router_logout(Router &r, ConnId c, Batch &b);
// Where `u` is on other nodes changed (a node gained or lost a device of
// it, a node died, or this node lost NATS): the live copies forwarded to it
// and not confirmed may be lost on the way, like those of a device that
// logged out. Every live copy of `u` is stored now, oldest first, and
// handed out again after that commit; later copies for `u` wait behind it
// (User::forwards_waiting), so none overtakes a lost one. Clears `b`.
void router_store_live(Router &r, UserId u, Batch &b);
// Free statuses per connection id (rate limits: a status answering a
// delivery costs no budget). The array never moves; the embedder may share
// it with JavaScript. Each message written to a connection adds 2 to it
// (router_owe); statuses written add nothing.
int32_t *router_owed(Router &r);
// A message was written to connection `c`: 2 more free statuses, up to
// 2 * max_inbox_messages (docs/config.md, rate_limit). The backlog pump
// calls it (as the JavaScript owe() with the shared array) per message.
void router_owe(Router &r, ConnId c);

// --- Messages -------------------------------------------------------------

// Routes what core_submit returned for one frame from `from`, sent on
// connection `conn` (kNone for the backend API, or a deferred message whose
// connection has closed). `out_format` is what the frame was encoded in
// (router_out_format at submit time). `now` in ms. Returns the status the
// sender gets: MSGSTATUS_SENT (core.h), a failure (INVALIDDEST, BLOCKED,
// NOTACTIVE, INBOXFULL), or for a status frame its own status.
int router_route(Router &r, UserId from, ConnId conn, const SubmitResult &res, int out_format, uint64_t now,
                 Batch &b);

// The form to pass core_submit as out_format (directory_out_format).
int router_out_format(const Router &r);

// A module's message (mesibo_message) after the chain: the same delivery
// rules, stored first when durable. Returns 0, or -1 for an unknown
// destination (the embedder logs module.unknown_destination).
int router_module_message(Router &r, std::string_view from, const mesibo_message_params_t &p, const char *payload,
                          size_t len, uint64_t now, Batch &b);

// One recipient's copy of a message the embedder delivers itself (after
// the send middleware stage): stored as the rules say, written now or held
// for the commit; a stored copy asks for the commit (COMMIT_SOON). Returns
// whether it was stored (the sender's "sent" then waits for the commit:
// router_queue_ack). Appends to `b` without clearing it.
bool router_deliver_copy(Router &r, UserId recipient, UserId from, const mesibo_message_params_t &p,
                         const char *payload, size_t len, uint64_t now, Batch &b);
// --- Copies and statuses from other nodes (the cluster room) ----------------

// A copy another node handed over (STORE_FORWARD) for `recipient`, from
// `from`: written to the recipient's connections here that are done with
// their backlog. `stored`: the other node stored it (after_commit), so a
// device's "delivered" deletes it and a device still reading its backlog
// reads it from there (router_backlog_recheck); otherwise it is stored
// here when no device here can take it now, as a copy for an offline or
// still-pumping user is (a transient one is dropped). Returns whether it
// was written to any connection. Clears `b`.
bool router_remote_message(Router &r, UserId recipient, UserId from, const mesibo_message_params_t &p,
                           const char *payload, size_t len, bool stored, uint64_t now, Batch &b);
// A status another node handed over (STORE_FORWARD_STATUS): `from` sent
// `status` for message `id` of `to` (at `now`, ms: a confirmation shows
// `from` is still confirming, live.cc). Confirms a live copy here, and is
// written to `to`'s connections as a receipt where the flags kept here ask
// for one, or when `receipt_gid` >= 0 (the op's receipt and gid: the node
// that read it had the flags). A delivered for a copy this node forwarded
// live and stored since deletes it here (the node that read the status
// left that to this one). With `keep` (the op's keep: a device of `from`
// on that node is reading its backlog) `from`'s live copies here are
// stored instead, this one with them, and nothing is deleted: that node
// deletes it once the reading is done. Clears `b`.
void router_remote_status(Router &r, UserId from, UserId to, uint32_t id, uint32_t status, int64_t receipt_gid,
                          uint64_t now, Batch &b, bool keep = false);

// A "sent" for connection `c` that goes out after the next commit.
void router_queue_ack(Router &r, ConnId c, const char *frame, size_t len, bool binary, Batch &b);

// Receipt flags read back from the store at start-up.
void router_track_receipt(Router &r, UserId sender, UserId recipient, uint32_t id, uint32_t flags, uint32_t gid);

// Forgets one inbox count (u) or all (kNone): read again when next needed.
void router_inbox_forget(Router &r, UserId u);
// The store deleted a copy for `u` (it reports each one a STORE_ACK
// deleted: lib/store/types.ts onCopyDeleted): one message fewer in u's
// inbox count. Only the store knows whether the status was for
// a stored copy (a transient message's never is).
void router_inbox_removed(Router &r, UserId u);

// --- The commit handshake -------------------------------------------------

// Closes the open epoch and returns it: what was queued until now is
// released by router_committed(epoch) once the store's commit (begun after
// this call) has completed.
uint64_t router_commit_begin(Router &r);
// The commit of `epoch` completed: held deliveries are written to their
// recipients' connections (those open and done with their backlog now),
// then the "sent"s, then the receipts that waited behind them.
void router_committed(Router &r, uint64_t epoch, Batch &b);

// The store's commit failed (and the store dropped that batch and
// everything buffered behind it): nothing waiting is released. Held
// deliveries are dropped (their copies were not kept); each connection
// whose "sent" was waiting gets a close entry in `b` (Write::close), so its
// client resends, in order, what never heard "sent"; receipts do not depend
// on the store and are written. Every epoch is dropped, the one in flight
// and the next, since a sender's later message must not overtake the resend
// of an earlier one.
void router_commit_failed(Router &r, Batch &b);

// --- Live copies (live.cc) --------------------------------------------------

// The live timer fired (Batch::live_wait_ms): stores the copies past the
// grace, unless the loop is busy or their recipient is still confirming.
void router_expire(Router &r, uint64_t now, Batch &b);
// Server stop: every unconfirmed live copy is stored; the engine takes no
// more timers.
void router_stop(Router &r, Batch &b);
// Unconfirmed live copies.
size_t router_live_count(const Router &r);

// --- Shared by router.cc, live.cc and commit.cc -----------------------------

// Writes frames already in b.bytes to every connection of `u` that is done
// with its backlog, each in its form (a form with len 0 is skipped); for a
// `delivery` (a message), router_owe for each connection written to. A
// connection still sent its backlog gets a status, or a copy that is
// `unstored` (transient: its backlog cannot have it), after its backlog.
void router_publish(Router &r, UserId u, uint32_t json_off, uint32_t json_len, uint32_t bin_off, uint32_t bin_len,
                    bool delivery, Batch &b, bool unstored = false);
void router_queue_waiting(Router &r, Waiting w, Batch &b);
// After an STORE_ENQUEUE was pushed: in a cluster, the same copy handed out
// after its commit (RouterSettings::cluster).
void router_notify_stored(Router &r, Batch &b);
// The same, in or out of a cluster (a copy for a user on another node):
// held (WAIT_FORWARD) and released by router_committed as STORE_FORWARD.
// Later copies for that user wait for this commit too.
void router_forward_after_commit(Router &r, Batch &b);
bool router_inbox_full(Router &r, UserId u, size_t bytes, uint64_t now);
void router_inbox_added(Router &r, UserId u, size_t bytes);
void live_add(Router &r, uint32_t ack, UserId recipient, uint32_t base, uint64_t now, Batch &b);
void live_confirm(Router &r, uint32_t copy, Batch &b);
void live_store_user(Router &r, UserId u, Batch &b);
// A "sent" for connection `c` as it was (`gen`) when the message came.
void router_queue_ack_to(Router &r, ConnId c, uint32_t gen, const char *frame, size_t len, bool binary, Batch &b);
uint32_t live_new_ack(Router &r);
uint32_t live_new_base(Router &r);
void live_release_base(Router &r, uint32_t base);

}  // namespace sb
