// Who is online: users interned to integer ids, their connections with
// integer ids, each connection's format and backlog state, group members as
// user ids, and each user's inbox count. The delivery engine (router.h)
// reads it per message without building a string: a user's name is looked
// up once per connection (login) and once per 1:1 message (its "to"), and
// everything after that is an index into a vector.
//
// Loop thread only. Nothing here allocates per message: users and groups
// are added at login, from the store, or by the backend API.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "flat_map.h"

namespace sb {

using UserId = uint32_t;
using ConnId = uint32_t;
constexpr uint32_t kNone = 0xFFFFFFFFu;


// A token bucket (admit.h): `tokens` up to the rate, refilled for the time
// since `at` (ms; 0 until first used, when it starts full).
struct Bucket {
  double tokens = 0;
  uint64_t at = 0;
};

// A connection as the engine knows it. The embedder keeps its socket in an
// array indexed by the id; `gen` tells a reused id from the connection a
// queued write was meant for.
struct Connection {
  UserId user = kNone;
  uint32_t gen = 0;
  bool open = false;
  bool binary = false;   // the form deliveries are written in
  bool pumping = false;  // its stored backlog is still being sent: nothing live is written to it yet
  ConnId next = kNone;   // the user's next connection
  uint64_t confirmed_at = 0;  // ms of the last delivered/read status it sent (durable on)
  Bucket bucket;              // rate_limit (admit.h); starts full at login
  // Copies it has, (sender, 0, id): with durability off the stored ones
  // the backlog sent it, whose "delivered" deletes the stored copy; in a
  // cluster also (durability on) those its backlog or another node gave it,
  // not to be written again when the node that stored them hands them out
  // (router_remote_message), until it confirms them.
  FlatMap<Key3, uint8_t> stored;
  // A copy another node stored arrived while its backlog was being sent
  // (router_remote_message): the backlog may have been read before that
  // copy's commit, so the pump reads the store once more at its end
  // (router_backlog_recheck).
  bool recheck = false;
};

struct User {
  std::string name;
  bool exists = false;  // a user of the store: a 1:1 message to anyone else is INVALIDDEST
  // Other nodes of the cluster where it has connections (the cluster room
  // counts them from the nodes' announcements: directory_set_remote). A
  // copy for it is then also handed out as a STORE_FORWARD operation
  // (router.h), besides what is written to its connections here.
  uint32_t remote = 0;
  // Other nodes where a device of it is reading its backlog (the cluster
  // room counts them from the nodes' `pump` announcements): as for a
  // device here reading its backlog, a delivered from another device does
  // not delete a stored copy until they are done (DeferredAck, router.h),
  // and one for a copy another node keeps asks that node to keep it
  // stored (StoreOp::keep). Nothing else changes: where copies go is
  // decided as without it.
  uint32_t remote_pumping = 0;
  // ms of the last delivered/read status its devices on other nodes sent
  // (router_remote_status): it is still confirming (live.cc).
  uint64_t remote_confirmed_at = 0;
  // user_rate_limit, over all its connections; it outlives them, so
  // reconnecting buys no fresh budget.
  Bucket bucket;
  ConnId first = kNone;  // its connections, newest first
  uint32_t conns = 0;
  uint32_t pumping = 0;  // connections whose backlog is not done
  uint32_t held = 0;     // deliveries to it waiting for a commit: a live copy would overtake them
  uint32_t forwards_waiting = 0;  // copies for it handed to other nodes after a commit (WAIT_FORWARD)
  uint32_t live = 0;              // its live copies not confirmed or stored yet (live.cc)
  // The inbox count (max_inbox_messages, max_inbox_bytes), read from the store once, then moved by the engine's writes.
  bool inbox_known = false;
  uint64_t inbox_messages = 0;
  double inbox_bytes = 0;
  uint64_t inbox_read_at = 0;
  // One expiry pass's answer to "is it still confirming?" (live.cc).
  uint64_t confirm_pass = 0;
  bool confirming = false;
};

struct Directory {
  std::vector<User> users;
  // Names to ids: open addressing over (hash, id) pairs in one array, the
  // name itself compared in the user's record, which the caller reads next
  // anyway. A std::unordered_map<std::string> cost two or three cache
  // misses per lookup (bucket, node, key) with a thousand connections, two
  // lookups per message. Names are never removed (interned).
  std::vector<uint64_t> name_slots;  // hash << 32 | (id + 1); 0 is empty
  size_t names = 0;
  std::vector<Connection> conns;
  std::vector<ConnId> free_conns;
  // Free statuses per connection (lib/server/server.ts allow(): "owed"),
  // one array of max_connections entries that never moves: the directory's
  // own, or memory the embedder shares with JavaScript (directory_share_owed).
  int32_t *owed = nullptr;
  std::unique_ptr<int32_t[]> owed_own;
  size_t json_conns = 0, binary_conns = 0;
  // Members by group id, as the store has them; loaded on first use.
  std::unordered_map<uint32_t, std::vector<UserId>> groups;
};

// Room for `max_connections` connections at once (their ids are
// 0..max_connections-1).
void directory_init(Directory &d, size_t max_connections);

// Room for `n` connections (more than now): ids up to n-1 become free,
// after every id free now (lowest first stays true). The owed counts move
// into `mem` (n entries, shared as directory_share_owed says), or into the
// directory's own array when `mem` is null.
void directory_grow(Directory &d, size_t n, int32_t *mem);

// Moves the owed counts into `mem` (max_connections entries, owned by the
// caller and valid for the directory's life), which from then on is the
// only copy: the embedder reads and spends them there.
void directory_share_owed(Directory &d, int32_t *mem);

// The user's id, adding the name if it is new (does not make it a user of
// the store: see directory_set_exists).
UserId directory_intern(Directory &d, std::string_view name);
// The user's id, or kNone for a name never interned. Allocates nothing.
UserId directory_find(Directory &d, std::string_view name);
void directory_set_exists(Directory &d, UserId u, bool exists);
void directory_set_remote(Directory &d, UserId u, uint32_t nodes);

// A logged-in connection of `u`, its backlog still to be sent (pumping).
// kNone when max_connections are open.
ConnId directory_login(Directory &d, UserId u, bool binary);
// The connection closed. Returns whether it was its user's last one.
// False for an id that is not open.
bool directory_logout(Directory &d, ConnId c);
// Its backlog has been sent: live deliveries start.
void directory_backlog_done(Directory &d, ConnId c);
// Whether `c` is open and still the connection `gen` names.
inline bool directory_is(const Directory &d, ConnId c, uint32_t gen) {
  return c < d.conns.size() && d.conns[c].open && d.conns[c].gen == gen;
}

// The members of a group, or nullptr when it is not loaded.
const std::vector<UserId> *directory_group(Directory &d, uint32_t gid);
void directory_group_set(Directory &d, uint32_t gid, std::vector<UserId> members);
// Forgets one group (gid) or all (gid 0): read again on next use.
void directory_group_forget(Directory &d, uint32_t gid);

// The out_format core_submit should encode deliveries in: only the forms
// some connected device reads (WIRE_JSON, WIRE_BINARY or OUT_BOTH).
int directory_out_format(const Directory &d);

}  // namespace sb
