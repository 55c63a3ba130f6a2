// The delivery engine (cpp/router.h) driven without Node: real frames
// through a core with no modules, then the routing decision, checked write
// by write against what lib/server/server.ts route() did. Also checks that
// the steady state allocates nothing (operator new is counted).
#include <cstdlib>
#include <new>
#include <string>
#include <vector>

#include "check.h"
#include "core.h"
#include "router.h"

// operator new and delete below are a matched malloc/free pair; GCC's
// -Wmismatched-new-delete sees only one half once a std::vector's
// reallocation is inlined into a test, and would fail the -Werror build.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace {
size_t g_allocs = 0;
bool g_counting = false;
}  // namespace

void *operator new(size_t n) {
  if (g_counting) ++g_allocs;
  if (void *p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void *p) noexcept { std::free(p); }
void operator delete(void *p, size_t) noexcept { std::free(p); }

namespace {

using sb::Batch;
using sb::ConnId;
using sb::UserId;

struct Fixture {
  sb::Core core;
  sb::Router r;
  Batch b;
  sb::SubmitResult res;
  int out_format = 0;

  explicit Fixture(sb::RouterSettings s = {}, sb::RouterHost host = {}) {
    sb::Config cfg;
    sb::ConfigError cerr;
    sb::config_parse("", "<test>", ".", cfg, cerr);
    sb::OpenError oerr;
    sb::core_open(core, cfg, sb::Host{}, oerr);
    sb::router_init(r, s, host);
  }
  ~Fixture() { sb::core_close(core); }

  ConnId online(UserId u, bool binary = false) {
    ConnId c = sb::router_login(r, u, binary);
    sb::router_backlog_done(r, c, b);
    return c;
  }

  // One frame from `from` on connection `conn` through the core and the router.
  int send(UserId from, ConnId conn, const std::string &frame, uint64_t now = 1000) {
    out_format = sb::router_out_format(r);
    const std::string &name = r.dir.users[from].name;
    int rc = sb::core_submit(core, name.data(), name.size(), reinterpret_cast<const uint8_t *>(frame.data()),
                             frame.size(), out_format, res);
    CHECK_EQ(rc, 0);
    return sb::router_route(r, from, conn, res, out_format, now, b);
  }

  std::string bytes(const sb::Write &w) const { return b.bytes.substr(w.off, w.len); }
  // "conn:bytes" per write, in order.
  std::vector<std::string> writes() const {
    std::vector<std::string> v;
    for (const sb::Write &w : b.writes) v.push_back(std::to_string(w.conn) + ":" + bytes(w));
    return v;
  }
};

std::string join(const std::vector<std::string> &v) {
  std::string s;
  for (const std::string &x : v) s += x + "\n";
  return s;
}

sb::RouterSettings durable_off() {
  sb::RouterSettings s;
  s.durable = false;
  return s;
}

TEST("durable off: a 1:1 message to an online user is written to it, and the sender's sent at once") {
  Fixture f(durable_off());
  UserId alice = sb::router_user_add(f.r, "alice"), bob = sb::router_user_add(f.r, "bob");
  ConnId a = f.online(alice), bb = f.online(bob);
  int st = f.send(alice, a, R"({"op":"msg","id":7,"to":"bob","data":"hi"})");
  CHECK_EQ(st, 1);
  CHECK_EQ(join(f.writes()), join({std::to_string(bb) + R"(:{"op":"msg","id":7,"from":"alice","to":"bob","data":"hi"})",
                                   std::to_string(a) + R"(:{"op":"status","id":7,"from":"bob","status":1})"}));
  CHECK_EQ(f.b.ops.size(), size_t(0));
  CHECK_EQ(f.b.commit, int(sb::COMMIT_NONE));
  CHECK(f.b.writes[0].delivery == 1 && f.b.writes[1].delivery == 0);
  CHECK_EQ(sb::router_owed(f.r)[bb], 2);
  CHECK_EQ(f.r.counters.delivered, uint64_t(1));
  CHECK_EQ(f.r.counters.received_pass, uint64_t(1));
  CHECK(f.b.talked);
}

TEST("a device still sent its backlog gets a transient copy after it, once; one that logs out drops it") {
  Fixture f(durable_off());
  UserId alice = sb::router_user_add(f.r, "alice"), bob = sb::router_user_add(f.r, "bob");
  ConnId a = f.online(alice);
  ConnId pb = sb::router_login(f.r, bob, false);
  CHECK_EQ(f.send(alice, a, R"({"op":"msg","id":8,"to":"bob","flags":4,"data":"now"})"), 1);
  CHECK_EQ(join(f.writes()), join({std::to_string(a) + R"(:{"op":"status","id":8,"from":"bob","status":1})"}));
  sb::router_backlog_done(f.r, pb, f.b);
  CHECK_EQ(join(f.writes()), join({std::to_string(pb) + R"(:{"op":"msg","id":8,"from":"alice","to":"bob","flags":4,"data":"now"})"}));
  CHECK(f.b.writes[0].delivery == 1);
  CHECK_EQ(sb::router_owed(f.r)[pb], 2);
  CHECK(f.r.after_backlog.empty());
  ConnId again = sb::router_login(f.r, bob, false);
  f.send(alice, a, R"({"op":"msg","id":9,"to":"bob","flags":4,"data":"now"})");
  sb::router_logout(f.r, again, f.b);
  sb::router_logout(f.r, pb, f.b);
  CHECK(f.r.after_backlog.empty());
}

TEST("durable off: to an offline user the copy is stored, and sent waits for the commit") {
  Fixture f(durable_off());
  UserId alice = sb::router_user_add(f.r, "alice"), bob = sb::router_user_add(f.r, "bob");
  ConnId a = f.online(alice);
  f.send(alice, a, R"({"op":"msg","id":8,"to":"bob","data":"hey","expiry":60})", 5000);
  CHECK_EQ(f.b.writes.size(), size_t(0));
  CHECK_EQ(f.b.ops.size(), size_t(1));
  const sb::StoreOp &op = f.b.ops[0];
  CHECK_EQ(op.kind, sb::STORE_ENQUEUE);
  CHECK_EQ(op.recipient, bob);
  CHECK_EQ(op.sender, alice);
  CHECK_EQ(op.id, 8u);
  CHECK_EQ(op.expires_at, uint64_t(65000));
  CHECK_EQ(f.b.bytes.substr(op.payload_off, op.payload_len), std::string("hey"));
  CHECK_EQ(f.b.commit, int(sb::COMMIT_SOON));
  uint64_t e = sb::router_commit_begin(f.r);
  sb::router_committed(f.r, e, f.b);
  CHECK_EQ(join(f.writes()), join({std::to_string(a) + R"(:{"op":"status","id":8,"from":"bob","status":1})"}));
  CHECK_EQ(f.r.counters.copies_stored, uint64_t(1));
}

TEST("a binary recipient gets the binary form, a JSON one the JSON form, in one message") {
  Fixture f(durable_off());
  UserId alice = sb::router_user_add(f.r, "alice"), bob = sb::router_user_add(f.r, "bob");
  ConnId a = f.online(alice);
  ConnId bj = f.online(bob, false), bbin = f.online(bob, true);
  CHECK_EQ(sb::router_out_format(f.r), sb::OUT_BOTH);
  f.send(alice, a, R"({"op":"msg","id":9,"to":"bob","data":"x"})");
  CHECK_EQ(f.b.writes.size(), size_t(3));
  int seen = 0;
  for (const sb::Write &w : f.b.writes) {
    if (w.conn == bbin) {
      CHECK(w.binary == 1);
      CHECK_EQ(uint8_t(f.bytes(w)[0]), uint8_t(0xB5));
      ++seen;
    } else if (w.conn == bj) {
      CHECK(w.binary == 0);
      CHECK_EQ(f.bytes(w), std::string(R"({"op":"msg","id":9,"from":"alice","to":"bob","data":"x"})"));
      ++seen;
    }
  }
  CHECK_EQ(seen, 2);
}

TEST("failures: unknown user INVALIDDEST, transient to offline NOTACTIVE, non-member BLOCKED") {
  sb::RouterHost host;
  host.load_group = [](void *, uint32_t gid, std::vector<std::string> &m) {
    if (gid != 5) return false;
    m = {"bob", "carol"};
    return true;
  };
  Fixture f(durable_off(), host);
  UserId alice = sb::router_user_add(f.r, "alice");
  sb::router_user_add(f.r, "bob");
  ConnId a = f.online(alice);
  CHECK_EQ(f.send(alice, a, R"({"op":"msg","id":1,"to":"nobody","data":"x"})"), 0x83);
  CHECK_EQ(join(f.writes()), join({std::to_string(a) + R"(:{"op":"status","id":1,"from":"nobody","status":131})"}));
  CHECK_EQ(f.send(alice, a, R"({"op":"msg","id":2,"to":"bob","flags":4,"data":"x"})"), 0x81);
  CHECK_EQ(f.send(alice, a, R"({"op":"msg","id":3,"gid":5,"data":"x"})"), 0x88);
  CHECK_EQ(join(f.writes()), join({std::to_string(a) + R"(:{"op":"status","id":3,"gid":5,"status":136})"}));
  CHECK_EQ(f.send(alice, a, R"({"op":"msg","id":4,"gid":6,"data":"x"})"), 0x83);
  CHECK_EQ(f.r.counters.received_failed, uint64_t(4));
}

TEST("inbox full: a 1:1 sender hears INBOXFULL; a group member over its limit is skipped") {
  sb::RouterSettings s = durable_off();
  s.max_inbox_messages = 1;
  sb::RouterHost host;
  host.load_group = [](void *, uint32_t, std::vector<std::string> &m) {
    m = {"alice", "bob", "carol"};
    return true;
  };
  Fixture f(s, host);
  UserId alice = sb::router_user_add(f.r, "alice"), bob = sb::router_user_add(f.r, "bob");
  UserId carol = sb::router_user_add(f.r, "carol");
  ConnId a = f.online(alice);
  CHECK_EQ(f.send(alice, a, R"({"op":"msg","id":1,"to":"bob","data":"x"})"), 1);
  CHECK_EQ(f.send(alice, a, R"({"op":"msg","id":2,"to":"bob","data":"x"})", 1100), 0x82);
  CHECK_EQ(f.send(alice, a, R"({"op":"msg","id":3,"gid":9,"data":"x"})", 1200), 1);
  CHECK_EQ(f.b.ops.size(), size_t(1));
  CHECK_EQ(f.b.ops[0].recipient, carol);
  CHECK_EQ(f.r.counters.inbox_full, uint64_t(2));
  (void)bob;
}

TEST("durable on, grace 0: a copy for an online user is held until the commit, then written before sent") {
  sb::RouterSettings s;
  s.grace_ms = 0;
  Fixture f(s);
  UserId alice = sb::router_user_add(f.r, "alice"), bob = sb::router_user_add(f.r, "bob");
  ConnId a = f.online(alice), bb = f.online(bob);
  f.send(alice, a, R"({"op":"msg","id":5,"to":"bob","data":"d"})");
  CHECK_EQ(f.b.writes.size(), size_t(0));
  CHECK_EQ(f.b.ops.size(), size_t(1));
  CHECK_EQ(f.r.dir.users[bob].held, 1u);
  uint64_t e = sb::router_commit_begin(f.r);
  sb::router_committed(f.r, e, f.b);
  CHECK_EQ(join(f.writes()), join({std::to_string(bb) + R"(:{"op":"msg","id":5,"from":"alice","to":"bob","data":"d"})",
                                   std::to_string(a) + R"(:{"op":"status","id":5,"from":"bob","status":1})"}));
  CHECK_EQ(f.r.dir.users[bob].held, 0u);
}

TEST("an asynchronous commit releases only what was queued before it began") {
  sb::RouterSettings s;
  s.grace_ms = 0;
  Fixture f(s);
  UserId alice = sb::router_user_add(f.r, "alice");
  sb::router_user_add(f.r, "bob");
  ConnId a = f.online(alice);
  f.send(alice, a, R"({"op":"msg","id":1,"to":"bob","data":"one"})");
  uint64_t e1 = sb::router_commit_begin(f.r);
  f.send(alice, a, R"({"op":"msg","id":2,"to":"bob","data":"two"})");
  sb::router_committed(f.r, e1, f.b);
  CHECK_EQ(join(f.writes()), join({std::to_string(a) + R"(:{"op":"status","id":1,"from":"bob","status":1})"}));
  uint64_t e2 = sb::router_commit_begin(f.r);
  sb::router_committed(f.r, e2, f.b);
  CHECK_EQ(join(f.writes()), join({std::to_string(a) + R"(:{"op":"status","id":2,"from":"bob","status":1})"}));
}

TEST("the backend API: a stored copy asks for the commit at once, nothing is written to a sender") {
  Fixture f;
  UserId alice = sb::router_user_add(f.r, "alice");
  sb::router_user_add(f.r, "bob");
  CHECK_EQ(f.send(alice, sb::kNone, R"({"op":"msg","id":1,"to":"bob","data":"x"})"), 1);
  CHECK_EQ(f.b.commit, int(sb::COMMIT_NOW));
  CHECK_EQ(f.b.writes.size(), size_t(0));
}

TEST("live copy: written at once, confirmed by delivered, sent at once with the receipt behind it") {
  Fixture f;  // durable on, grace 50
  UserId alice = sb::router_user_add(f.r, "alice"), bob = sb::router_user_add(f.r, "bob");
  ConnId a = f.online(alice), bb = f.online(bob);
  f.send(alice, a, R"({"op":"msg","id":3,"to":"bob","flags":1,"data":"hi"})", 1000);
  CHECK_EQ(join(f.writes()), join({std::to_string(bb) + R"(:{"op":"msg","id":3,"from":"alice","to":"bob","flags":1,"data":"hi"})"}));
  CHECK_EQ(f.b.ops.size(), size_t(0));
  CHECK_EQ(f.b.live_wait_ms, int64_t(50));
  CHECK_EQ(sb::router_live_count(f.r), size_t(1));
  f.send(bob, bb, R"({"op":"status","id":3,"to":"alice","status":2})", 1010);
  CHECK_EQ(sb::router_live_count(f.r), size_t(0));
  // Confirmed by its only recipient, it can no longer be lost, and nothing
  // waits before it: "sent" now, then the receipt; no commit.
  CHECK_EQ(join(f.writes()), join({std::to_string(a) + R"(:{"op":"status","id":3,"from":"bob","status":1})",
                                   std::to_string(a) + R"(:{"op":"status","id":3,"from":"bob","status":2})"}));
  CHECK_EQ(f.b.ops.size(), size_t(0));  // nothing stored, nothing to delete
  CHECK_EQ(f.b.commit, int(sb::COMMIT_NONE));
  CHECK_EQ(f.r.dir.conns[bb].confirmed_at, uint64_t(1010));
}

TEST("live copy: its sent still waits for the commit when a copy was stored beside it, or an earlier sent waits") {
  Fixture f;  // durable on, grace 50
  UserId alice = sb::router_user_add(f.r, "alice"), bob = sb::router_user_add(f.r, "bob");
  UserId carol = sb::router_user_add(f.r, "carol");
  ConnId a = f.online(alice), bb = f.online(bob);
  sb::directory_group_set(f.r.dir, 5, {alice, bob, carol});
  // carol is offline: her copy is stored, bob's is live.
  f.send(alice, a, R"({"op":"msg","id":1,"gid":5,"data":"g"})", 1000);
  CHECK_EQ(f.b.ops.size(), size_t(1));
  f.send(bob, bb, R"({"op":"status","id":1,"to":"alice","status":2})", 1005);
  CHECK_EQ(f.b.writes.size(), size_t(0));  // carol's copy is not committed yet
  uint64_t e = sb::router_commit_begin(f.r);
  sb::router_committed(f.r, e, f.b);
  CHECK_EQ(join(f.writes()), join({std::to_string(a) + R"(:{"op":"status","id":1,"gid":5,"status":1})"}));
  // An earlier "sent" waiting for a commit: a later confirmed one queues behind it.
  f.send(alice, a, R"({"op":"msg","id":2,"to":"carol","data":"s"})", 1010);  // stored: its "sent" waits
  f.send(alice, a, R"({"op":"msg","id":3,"to":"bob","data":"l"})", 1011);    // live
  f.send(bob, bb, R"({"op":"status","id":3,"to":"alice","status":2})", 1012);
  CHECK_EQ(f.b.writes.size(), size_t(0));
  e = sb::router_commit_begin(f.r);
  sb::router_committed(f.r, e, f.b);
  CHECK_EQ(join(f.writes()), join({std::to_string(a) + R"(:{"op":"status","id":2,"from":"carol","status":1})",
                                   std::to_string(a) + R"(:{"op":"status","id":3,"from":"bob","status":1})"}));
}

TEST("live copy not confirmed within the grace is stored, then sent; a busy loop gives it more time") {
  Fixture f;
  UserId alice = sb::router_user_add(f.r, "alice"), bob = sb::router_user_add(f.r, "bob");
  ConnId a = f.online(alice);
  f.online(bob);
  f.send(alice, a, R"({"op":"msg","id":4,"to":"bob","data":"p"})", 1000);
  CHECK_EQ(f.b.live_wait_ms, int64_t(50));  // the timer is due at 1050
  // Fired 40 ms late (over half the grace): the loop is busy, wait.
  sb::router_expire(f.r, 1090, f.b);
  CHECK_EQ(f.b.ops.size(), size_t(0));
  CHECK_EQ(f.b.live_wait_ms, int64_t(13));
  sb::router_expire(f.r, 1103, f.b);
  CHECK_EQ(f.b.ops.size(), size_t(1));
  CHECK_EQ(f.b.ops[0].recipient, bob);
  CHECK_EQ(f.b.bytes.substr(f.b.ops[0].payload_off, f.b.ops[0].payload_len), std::string("p"));
  CHECK_EQ(f.b.commit, int(sb::COMMIT_SOON));
  CHECK_EQ(f.b.live_wait_ms, int64_t(-1));
  uint64_t e = sb::router_commit_begin(f.r);
  sb::router_committed(f.r, e, f.b);
  CHECK_EQ(join(f.writes()), join({std::to_string(a) + R"(:{"op":"status","id":4,"from":"bob","status":1})"}));
  // Its delivered now deletes the stored copy.
  f.send(bob, f.r.dir.users[bob].first, R"({"op":"status","id":4,"to":"alice","status":2})", 1200);
  CHECK_EQ(f.b.ops.size(), size_t(1));
  CHECK_EQ(f.b.ops[0].kind, sb::STORE_ACK);
  CHECK_EQ(f.b.ops[0].recipient, bob);
  CHECK_EQ(f.b.ops[0].sender, alice);
}

TEST("live copy: a recipient still confirming others keeps its copies past the grace, up to 5 s") {
  Fixture f;
  UserId alice = sb::router_user_add(f.r, "alice"), bob = sb::router_user_add(f.r, "bob");
  ConnId a = f.online(alice), bb = f.online(bob);
  f.send(alice, a, R"({"op":"msg","id":1,"to":"bob","data":"1"})", 1000);
  f.send(alice, a, R"({"op":"msg","id":2,"to":"bob","data":"2"})", 1000);
  f.send(bob, bb, R"({"op":"status","id":1,"to":"alice","status":2})", 1040);
  // Each pass fires on time (not busy); the copy waits while bob's last
  // confirmation (1040) is within the grace, and is stored after that.
  uint64_t now = 1050;
  sb::router_expire(f.r, now, f.b);
  while (f.b.ops.empty() && f.b.live_wait_ms >= 0) {
    CHECK_EQ(sb::router_live_count(f.r), size_t(1));
    now += uint64_t(f.b.live_wait_ms);
    sb::router_expire(f.r, now, f.b);
  }
  CHECK(now >= 1090);
  CHECK_EQ(f.b.ops.size(), size_t(1));
  CHECK_EQ(f.b.ops[0].id, 2u);
}

TEST("logout stores the user's live copies oldest first; sent follows the commit") {
  Fixture f;
  UserId alice = sb::router_user_add(f.r, "alice"), bob = sb::router_user_add(f.r, "bob");
  ConnId a = f.online(alice), bb = f.online(bob);
  f.send(alice, a, R"({"op":"msg","id":1,"to":"bob","data":"1"})", 1000);
  f.send(alice, a, R"({"op":"msg","id":2,"to":"bob","data":"2"})", 1001);
  CHECK(sb::router_logout(f.r, bb, f.b));
  CHECK_EQ(f.b.ops.size(), size_t(2));
  CHECK_EQ(f.b.ops[0].id, 1u);
  CHECK_EQ(f.b.ops[1].id, 2u);
  uint64_t e = sb::router_commit_begin(f.r);
  sb::router_committed(f.r, e, f.b);
  CHECK_EQ(f.b.writes.size(), size_t(2));
  (void)bob;
}

TEST("a group message: each online member in its form, the sender skipped, receipts name the group") {
  sb::RouterHost host;
  host.load_group = [](void *, uint32_t, std::vector<std::string> &m) {
    m = {"alice", "bob", "carol"};
    return true;
  };
  Fixture f(durable_off(), host);
  UserId alice = sb::router_user_add(f.r, "alice"), bob = sb::router_user_add(f.r, "bob");
  UserId carol = sb::router_user_add(f.r, "carol");
  ConnId a = f.online(alice), bb = f.online(bob);
  f.send(alice, a, R"({"op":"msg","id":6,"gid":42,"flags":1,"data":"g"})");
  CHECK_EQ(f.b.writes.size(), size_t(1));  // "sent" waits for carol's stored copy
  CHECK_EQ(f.b.writes[0].conn, bb);
  CHECK_EQ(f.bytes(f.b.writes[0]), std::string(R"({"op":"msg","id":6,"from":"alice","gid":42,"flags":1,"data":"g"})"));
  CHECK_EQ(f.b.ops.size(), size_t(1));  // carol is offline
  CHECK_EQ(f.b.ops[0].recipient, carol);
  CHECK(!f.b.talked);
  uint64_t e = sb::router_commit_begin(f.r);
  sb::router_committed(f.r, e, f.b);
  CHECK_EQ(join(f.writes()), join({std::to_string(a) + R"(:{"op":"status","id":6,"gid":42,"status":1})"}));
  f.send(bob, bb, R"({"op":"status","id":6,"to":"alice","status":2})");
  CHECK_EQ(join(f.writes()), join({std::to_string(a) + R"(:{"op":"status","id":6,"from":"bob","gid":42,"status":2})"}));
  // Asked once: a second delivered is not forwarded.
  f.send(bob, bb, R"({"op":"status","id":6,"to":"alice","status":2})");
  CHECK_EQ(f.b.writes.size(), size_t(0));
}

namespace {
int g_status_frames = 0;
}  // namespace

TEST("a group receipt in both forms does not go through the host's status frame (the hooks ran once already)") {
  sb::RouterHost host;
  host.load_group = [](void *, uint32_t, std::vector<std::string> &m) {
    m = {"alice", "bob", "carol"};
    return true;
  };
  host.status_frame = [](void *, mesibo_message_params_t *p, int format, std::string &out) {
    ++g_status_frames;
    return sb::wire_encode_status(format == sb::WIRE_BINARY ? sb::WIRE_BINARY : sb::WIRE_JSON, *p, out);
  };
  Fixture f(durable_off(), host);
  UserId alice = sb::router_user_add(f.r, "alice"), bob = sb::router_user_add(f.r, "bob");
  UserId carol = sb::router_user_add(f.r, "carol");
  ConnId a = f.online(alice), bb = f.online(bob);
  f.online(carol, true);  // a binary reader: every frame in both forms
  f.send(alice, a, R"({"op":"msg","id":7,"gid":42,"flags":1,"data":"g"})");
  g_status_frames = 0;
  f.send(bob, bb, R"({"op":"status","id":7,"to":"alice","status":2})");
  CHECK_EQ(join(f.writes()), join({std::to_string(a) + R"(:{"op":"status","id":7,"from":"bob","gid":42,"status":2})"}));
  CHECK_EQ(g_status_frames, 0);
  // A failure the engine decides still goes through it (its hooks run there).
  f.send(alice, a, R"({"op":"msg","id":8,"to":"nobody","data":"x"})");
  CHECK_EQ(g_status_frames, 1);
}

TEST("receipt flags are tracked only for copies sent or stored, not for a transient one an offline member misses") {
  sb::RouterHost host;
  host.load_group = [](void *, uint32_t, std::vector<std::string> &m) {
    m = {"alice", "bob", "dave"};
    return true;
  };
  Fixture f(sb::RouterSettings{}, host);
  UserId alice = sb::router_user_add(f.r, "alice"), bob = sb::router_user_add(f.r, "bob");
  UserId dave = sb::router_user_add(f.r, "dave");
  ConnId a = f.online(alice), bb = f.online(bob);
  f.send(alice, a, R"({"op":"msg","id":5,"gid":42,"flags":5,"data":"typing"})");
  CHECK_EQ(f.r.receipts.flags.size(), size_t(1));  // bob's
  // dave, online later, never got it: a delivered from him goes nowhere.
  ConnId dv = f.online(dave);
  f.send(dave, dv, R"({"op":"status","id":5,"to":"alice","status":2})");
  CHECK_EQ(f.b.writes.size(), size_t(0));
  f.send(bob, bb, R"({"op":"status","id":5,"to":"alice","status":2})");
  CHECK_EQ(join(f.writes()), join({std::to_string(a) + R"(:{"op":"status","id":5,"from":"bob","gid":42,"status":2})"}));
  // A module's transient message to an offline user: not tracked either.
  sb::router_logout(f.r, dv, f.b);
  mesibo_message_params_t p{};
  p.id = 6;
  p.flags = 5;
  p.to = const_cast<char *>("dave");
  sb::router_module_message(f.r, "bot", p, "x", 1, 1000, f.b);
  CHECK_EQ(f.r.receipts.flags.size(), size_t(0));
  // Stored (not transient): tracked, the receipt comes with the backlog.
  p.id = 7;
  p.flags = 1;
  sb::router_module_message(f.r, "bot", p, "x", 1, 1000, f.b);
  CHECK_EQ(f.r.receipts.flags.size(), size_t(1));
}

TEST("owed: two per message written to a connection, none for a status or a device still pumping, capped") {
  sb::RouterSettings s = durable_off();
  s.max_inbox_messages = 2;  // cap 4
  Fixture f(s);
  UserId alice = sb::router_user_add(f.r, "alice"), bob = sb::router_user_add(f.r, "bob");
  ConnId a = f.online(alice), bb = f.online(bob);
  f.send(alice, a, R"({"op":"msg","id":1,"to":"bob","flags":1,"data":"x"})");
  CHECK_EQ(sb::router_owed(f.r)[bb], 2);
  f.send(bob, bb, R"({"op":"status","id":1,"to":"alice","status":2})");
  CHECK_EQ(f.b.writes.size(), size_t(1));  // the receipt to alice...
  CHECK_EQ(sb::router_owed(f.r)[a], 0);    // ...which she does not answer
  ConnId pumping = sb::router_login(f.r, bob, false);
  for (uint32_t id = 2; id < 6; ++id)
    f.send(alice, a, R"({"op":"msg","id":)" + std::to_string(id) + R"(,"to":"bob","data":"x"})");
  CHECK_EQ(sb::router_owed(f.r)[bb], 4);
  CHECK_EQ(sb::router_owed(f.r)[pumping], 0);  // its backlog brings the copies, and owes then
  sb::router_owe(f.r, pumping);
  sb::router_owe(f.r, pumping);
  sb::router_owe(f.r, pumping);
  CHECK_EQ(sb::router_owed(f.r)[pumping], 4);
}

TEST("durable on: a delivered lowers no inbox count by itself; only the store's answer (router_inbox_removed) does") {
  sb::RouterSettings s;
  s.max_inbox_messages = 1;
  sb::RouterHost host;
  host.inbox_count = [](void *, UserId, uint64_t &messages, double &bytes) {
    messages = 1;  // bob has one stored copy he has not confirmed
    bytes = 1;
  };
  Fixture f(s, host);
  UserId alice = sb::router_user_add(f.r, "alice"), bob = sb::router_user_add(f.r, "bob");
  ConnId a = f.online(alice), bb = f.online(bob);
  CHECK_EQ(f.send(alice, a, R"({"op":"msg","id":1,"to":"bob","data":"x"})", 1000), 0x82);
  CHECK_EQ(f.send(alice, a, R"({"op":"msg","id":2,"to":"bob","flags":4,"data":"typing"})", 1100), 1);
  f.send(bob, bb, R"({"op":"status","id":2,"to":"alice","status":2})", 1200);
  CHECK_EQ(f.b.ops.size(), size_t(1));  // the store is asked; a transient copy is not there
  CHECK_EQ(f.b.ops[0].kind, sb::STORE_ACK);
  CHECK_EQ(f.send(alice, a, R"({"op":"msg","id":3,"to":"bob","data":"x"})", 1300), 0x82);
  // The store deleted a copy (its ack said so): now there is room.
  sb::router_inbox_removed(f.r, bob);
  CHECK_EQ(f.send(alice, a, R"({"op":"msg","id":4,"to":"bob","data":"x"})", 1400), 1);
}

TEST("a read receipt goes back only when asked for") {
  Fixture f(durable_off());
  UserId alice = sb::router_user_add(f.r, "alice"), bob = sb::router_user_add(f.r, "bob");
  ConnId a = f.online(alice), bb = f.online(bob);
  f.send(alice, a, R"({"op":"msg","id":1,"to":"bob","flags":1,"data":"x"})");
  f.send(bob, bb, R"({"op":"status","id":1,"to":"alice","status":3})");
  CHECK_EQ(f.b.writes.size(), size_t(0));
  CHECK_EQ(f.r.counters.statuses[3], uint64_t(1));
}

TEST("durable off: delivered deletes a stored copy only when the backlog sent it to that connection") {
  Fixture f(durable_off());
  UserId alice = sb::router_user_add(f.r, "alice"), bob = sb::router_user_add(f.r, "bob");
  ConnId bb = sb::router_login(f.r, bob, false);
  sb::router_backlog_sent(f.r, bb, alice, 11);
  sb::router_backlog_done(f.r, bb, f.b);
  f.send(bob, bb, R"({"op":"status","id":12,"to":"alice","status":2})");
  CHECK_EQ(f.b.ops.size(), size_t(0));
  f.send(bob, bb, R"({"op":"status","id":11,"to":"alice","status":2})");
  CHECK_EQ(f.b.ops.size(), size_t(1));
  CHECK_EQ(f.b.ops[0].kind, sb::STORE_ACK);
}

TEST("a device still receiving its backlog gets nothing live; the copy is stored") {
  Fixture f(durable_off());
  UserId alice = sb::router_user_add(f.r, "alice"), bob = sb::router_user_add(f.r, "bob");
  ConnId a = f.online(alice);
  ConnId bb = sb::router_login(f.r, bob, false);
  f.send(alice, a, R"({"op":"msg","id":1,"to":"bob","data":"x"})");
  CHECK_EQ(f.b.ops.size(), size_t(1));
  for (const sb::Write &w : f.b.writes) CHECK(w.conn != bb);
  CHECK_EQ(sb::router_owed(f.r)[bb], 0);  // the backlog that brings the copy owes for it
}

TEST("cluster, durability off: a copy for a user on another node is forwarded at once, not stored") {
  Fixture f(durable_off());
  UserId alice = sb::router_user_add(f.r, "alice"), bob = sb::router_user_add(f.r, "bob");
  sb::directory_set_remote(f.r.dir, bob, 2);
  ConnId a = f.online(alice);
  // Transient: bob counts as online (not NOTACTIVE).
  CHECK_EQ(f.send(alice, a, R"({"op":"msg","id":1,"to":"bob","flags":4,"data":"x"})"), 1);
  CHECK_EQ(f.b.ops.size(), size_t(1));
  CHECK_EQ(f.b.ops[0].kind, sb::STORE_FORWARD);
  CHECK_EQ(f.b.ops[0].recipient, bob);
  CHECK_EQ(f.b.ops[0].sender, alice);
  CHECK_EQ(int(f.b.ops[0].after_commit), 0);
  CHECK_EQ(f.b.bytes.substr(f.b.ops[0].payload_off, f.b.ops[0].payload_len), std::string("x"));
  CHECK_EQ(join(f.writes()), join({std::to_string(a) + R"(:{"op":"status","id":1,"from":"bob","status":1})"}));
  // Not transient, durability off: forwarded, "sent" at once, nothing stored.
  CHECK_EQ(f.send(alice, a, R"({"op":"msg","id":2,"to":"bob","data":"y"})"), 1);
  CHECK_EQ(f.b.ops.size(), size_t(1));
  CHECK_EQ(f.b.ops[0].kind, sb::STORE_FORWARD);
  CHECK_EQ(f.b.commit, int(sb::COMMIT_NONE));
  CHECK_EQ(f.b.writes.size(), size_t(1));
}

TEST("cluster, durability on: a copy for a user on another node goes at once as a live copy kept here; its forwarded delivered sends sent") {
  Fixture f;
  UserId alice = sb::router_user_add(f.r, "alice"), bob = sb::router_user_add(f.r, "bob");
  sb::directory_set_remote(f.r.dir, bob, 1);
  ConnId a = f.online(alice);
  CHECK_EQ(f.send(alice, a, R"({"op":"msg","id":3,"to":"bob","data":"z"})"), 1);
  CHECK_EQ(f.b.ops.size(), size_t(1));
  CHECK_EQ(f.b.ops[0].kind, sb::STORE_FORWARD);
  CHECK_EQ(int(f.b.ops[0].after_commit), 0);
  CHECK_EQ(f.b.commit, int(sb::COMMIT_NONE));
  CHECK_EQ(f.b.writes.size(), size_t(0));  // "sent" waits for the confirmation
  CHECK_EQ(sb::router_live_count(f.r), size_t(1));
  sb::router_remote_status(f.r, bob, alice, 3, 2, -1, 1010, f.b);
  CHECK_EQ(sb::router_live_count(f.r), size_t(0));
  CHECK_EQ(join(f.writes()), join({std::to_string(a) + R"(:{"op":"status","id":3,"from":"bob","status":1})"}));
  sb::router_expire(f.r, 1050, f.b);  // the timer the first copy armed: nothing left
  // Not confirmed within the grace: stored here, "sent" after that commit.
  CHECK_EQ(f.send(alice, a, R"({"op":"msg","id":4,"to":"bob","data":"w"})", 2000), 1);
  sb::router_expire(f.r, 2000 + 60, f.b);
  CHECK_EQ(f.b.ops.size(), size_t(1));
  CHECK_EQ(f.b.ops[0].kind, sb::STORE_ENQUEUE);
  CHECK_EQ(f.b.ops[0].recipient, bob);
  CHECK_EQ(f.b.writes.size(), size_t(0));
  uint64_t e = sb::router_commit_begin(f.r);
  sb::router_committed(f.r, e, f.b);
  CHECK_EQ(join(f.writes()), join({std::to_string(a) + R"(:{"op":"status","id":4,"from":"bob","status":1})"}));
  // Gone from the other node (its count back to 0): stored as for any offline user, not forwarded.
  sb::directory_set_remote(f.r.dir, bob, 0);
  f.send(alice, a, R"({"op":"msg","id":5,"to":"bob","data":"v"})", 3000);
  CHECK_EQ(f.b.ops.size(), size_t(1));
  CHECK_EQ(f.b.ops[0].kind, sb::STORE_ENQUEUE);
}

TEST("cluster, durability on without live copies: stored here once, forwarded after the commit, sent after it") {
  sb::RouterSettings s;
  s.grace_ms = 0;
  Fixture f(s);
  UserId alice = sb::router_user_add(f.r, "alice"), bob = sb::router_user_add(f.r, "bob");
  ConnId a = f.online(alice), bb = f.online(bob);
  sb::directory_set_remote(f.r.dir, bob, 1);
  CHECK_EQ(f.send(alice, a, R"({"op":"msg","id":6,"to":"bob","data":"u"})"), 1);
  CHECK_EQ(f.b.ops.size(), size_t(1));
  CHECK_EQ(f.b.ops[0].kind, sb::STORE_ENQUEUE);
  CHECK_EQ(f.b.commit, int(sb::COMMIT_SOON));
  CHECK_EQ(f.b.writes.size(), size_t(0));
  // A commit in flight meanwhile does not release it: the copy is in the next one.
  uint64_t e0 = sb::router_commit_begin(f.r);
  CHECK_EQ(f.send(alice, a, R"({"op":"msg","id":7,"to":"bob","data":"v"})"), 1);
  sb::router_committed(f.r, e0, f.b);
  CHECK_EQ(f.b.ops.size(), size_t(1));
  CHECK_EQ(f.b.ops[0].kind, sb::STORE_FORWARD);
  CHECK_EQ(f.b.ops[0].id, 6u);
  CHECK_EQ(int(f.b.ops[0].after_commit), 1);
  CHECK_EQ(f.b.bytes.substr(f.b.ops[0].payload_off, f.b.ops[0].payload_len), std::string("u"));
  CHECK_EQ(join(f.writes()), join({std::to_string(bb) + R"(:{"op":"msg","id":6,"from":"alice","to":"bob","data":"u"})",
                                   std::to_string(a) + R"(:{"op":"status","id":6,"from":"bob","status":1})"}));
  uint64_t e1 = sb::router_commit_begin(f.r);
  sb::router_committed(f.r, e1, f.b);
  CHECK_EQ(f.b.ops.size(), size_t(1));
  CHECK_EQ(f.b.ops[0].id, 7u);
  CHECK_EQ(f.b.bytes.substr(f.b.ops[0].payload_off, f.b.ops[0].payload_len), std::string("v"));
  // A failed commit hands nothing out.
  f.send(alice, a, R"({"op":"msg","id":8,"to":"bob","data":"w"})");
  sb::router_commit_failed(f.r, f.b);
  CHECK_EQ(f.b.ops.size(), size_t(0));
  CHECK_EQ(f.r.held_forwards.size(), size_t(0));
}

TEST("cluster: a user with devices here and on another node gets one live copy, written here and forwarded") {
  Fixture f;
  UserId alice = sb::router_user_add(f.r, "alice"), bob = sb::router_user_add(f.r, "bob");
  ConnId a = f.online(alice), bb = f.online(bob);
  sb::directory_set_remote(f.r.dir, bob, 1);
  CHECK_EQ(f.send(alice, a, R"({"op":"msg","id":7,"to":"bob","data":"t"})"), 1);
  CHECK_EQ(f.b.ops.size(), size_t(1));
  CHECK_EQ(f.b.ops[0].kind, sb::STORE_FORWARD);
  CHECK_EQ(join(f.writes()), join({std::to_string(bb) + R"(:{"op":"msg","id":7,"from":"alice","to":"bob","data":"t"})"}));
  CHECK_EQ(sb::router_live_count(f.r), size_t(1));
  // The device here confirms first: "sent"; the other device's confirmation later finds nothing.
  CHECK_EQ(f.send(bob, bb, R"({"op":"status","id":7,"to":"alice","status":2})"), 2);
  CHECK_EQ(join(f.writes()), join({std::to_string(a) + R"(:{"op":"status","id":7,"from":"bob","status":1})"}));
  sb::router_remote_status(f.r, bob, alice, 7, 2, -1, 1001, f.b);
  CHECK_EQ(f.b.writes.size(), size_t(0));
}

TEST("cluster: a status for a sender with devices on another node is forwarded; the stored copy is deleted here") {
  Fixture f;
  UserId alice = sb::router_user_add(f.r, "alice"), bob = sb::router_user_add(f.r, "bob");
  sb::directory_set_remote(f.r.dir, alice, 1);
  ConnId bb = f.online(bob);
  CHECK_EQ(f.send(bob, bb, R"({"op":"status","id":9,"to":"alice","status":2})"), 2);
  CHECK_EQ(f.b.ops.size(), size_t(2));
  CHECK_EQ(f.b.ops[0].kind, sb::STORE_FORWARD_STATUS);
  CHECK_EQ(f.b.ops[0].recipient, alice);
  CHECK_EQ(f.b.ops[0].sender, bob);
  CHECK_EQ(f.b.ops[0].id, 9u);
  CHECK_EQ(f.b.ops[0].status, 2u);
  CHECK_EQ(f.b.ops[1].kind, sb::STORE_ACK);
  CHECK_EQ(f.b.writes.size(), size_t(0));  // no receipt flags are tracked here for alice's message
}

TEST("cluster: a forwarded copy is written to the recipient's devices here; one still pumping rechecks its backlog") {
  Fixture f;
  UserId alice = sb::router_user_add(f.r, "alice"), bob = sb::router_user_add(f.r, "bob");
  ConnId bb = f.online(bob);
  ConnId pumping = sb::router_login(f.r, bob, false);
  mesibo_message_params_t p{};
  p.id = 11;
  CHECK(sb::router_remote_message(f.r, bob, alice, p, "hello", 5, true, 1000, f.b));
  CHECK_EQ(join(f.writes()), join({std::to_string(bb) + R"(:{"op":"msg","id":11,"from":"alice","to":"bob","data":"hello"})"}));
  CHECK(f.b.writes[0].delivery == 1);
  CHECK_EQ(f.b.ops.size(), size_t(0));  // the other node stored it
  CHECK_EQ(sb::router_owed(f.r)[bb], 2);
  CHECK(sb::router_backlog_recheck(f.r, pumping));
  CHECK(!sb::router_backlog_recheck(f.r, pumping));  // cleared
  CHECK(!sb::router_backlog_recheck(f.r, bb));
  // bob's delivered deletes the copy the other node stored (durability on:
  // no live copy here), once his other device has read its backlog.
  CHECK_EQ(f.send(bob, bb, R"({"op":"status","id":11,"to":"alice","status":2})"), 2);
  CHECK_EQ(f.b.ops.size(), size_t(0));
  sb::router_backlog_done(f.r, pumping, f.b);
  CHECK_EQ(f.b.ops.size(), size_t(1));
  CHECK_EQ(f.b.ops[0].kind, sb::STORE_ACK);
}

TEST("multi-device: a delivered from one device while another reads its backlog leaves the stored copy until it is done") {
  Fixture f;
  UserId alice = sb::router_user_add(f.r, "alice"), bob = sb::router_user_add(f.r, "bob");
  ConnId aa = f.online(alice);
  ConnId b1 = f.online(bob);
  ConnId b2 = sb::router_login(f.r, bob, false);  // reading its backlog
  // With a device of bob's reading its backlog, the copy is stored, and
  // written to b1 once committed.
  CHECK_EQ(f.send(alice, aa, R"({"op":"msg","id":21,"to":"bob","data":"one"})"), 1);
  CHECK_EQ(f.b.ops.size(), size_t(1));
  CHECK_EQ(f.b.ops[0].kind, sb::STORE_ENQUEUE);
  sb::router_committed(f.r, sb::router_commit_begin(f.r), f.b);
  CHECK(!f.b.writes.empty());
  CHECK_EQ(f.b.writes[0].conn, b1);
  // b1 confirms: the copy stays stored for b2.
  CHECK_EQ(f.send(bob, b1, R"({"op":"status","id":21,"to":"alice","status":2})"), 2);
  CHECK_EQ(f.b.ops.size(), size_t(0));
  // b2's backlog is done: the delete goes now.
  sb::router_backlog_done(f.r, b2, f.b);
  CHECK_EQ(f.b.ops.size(), size_t(1));
  CHECK_EQ(f.b.ops[0].kind, sb::STORE_ACK);
  CHECK_EQ(f.b.ops[0].recipient, bob);
  CHECK_EQ(f.b.ops[0].sender, alice);
  CHECK_EQ(f.b.ops[0].id, 21u);
  CHECK(f.b.commit != sb::COMMIT_NONE);

  // A device that leaves while reading its backlog releases them too.
  ConnId b3 = sb::router_login(f.r, bob, false);
  CHECK_EQ(f.send(alice, aa, R"({"op":"msg","id":22,"to":"bob","data":"two"})"), 1);
  CHECK_EQ(f.send(bob, b1, R"({"op":"status","id":22,"to":"alice","status":2})"), 2);
  CHECK_EQ(f.b.ops.size(), size_t(0));
  sb::router_logout(f.r, b3, f.b);
  CHECK_EQ(f.b.ops.size(), size_t(1));
  CHECK_EQ(f.b.ops[0].kind, sb::STORE_ACK);
  CHECK_EQ(f.b.ops[0].id, 22u);

  // The reading device's own delivered (for a backlog copy) deletes at once:
  // no other device of bob's is reading.
  ConnId b4 = sb::router_login(f.r, bob, false);
  CHECK_EQ(f.send(bob, b4, R"({"op":"status","id":21,"to":"alice","status":2})"), 2);
  CHECK_EQ(f.b.ops.size(), size_t(1));
  CHECK_EQ(f.b.ops[0].kind, sb::STORE_ACK);
  // b4 still reads its backlog: b1's delivered waits, and stopping releases it
  // (the server closes every device).
  CHECK_EQ(f.send(bob, b1, R"({"op":"status","id":23,"to":"alice","status":2})"), 2);
  CHECK_EQ(f.b.ops.size(), size_t(0));
  sb::router_stop(f.r, f.b);
  bool released = false;
  for (const sb::StoreOp &op : f.b.ops) released = released || (op.kind == sb::STORE_ACK && op.id == 23u);
  CHECK(released);
  CHECK(f.r.acks_deferred.empty());
}

TEST("cluster: a forwarded copy nobody stored is stored here when no device here takes it (durability off)") {
  Fixture f(durable_off());
  UserId alice = sb::router_user_add(f.r, "alice"), bob = sb::router_user_add(f.r, "bob");
  mesibo_message_params_t p{};
  p.id = 12;
  // bob left this node before the copy came: stored, as for an offline user.
  CHECK(!sb::router_remote_message(f.r, bob, alice, p, "x", 1, false, 1000, f.b));
  CHECK_EQ(f.b.ops.size(), size_t(1));
  CHECK_EQ(f.b.ops[0].kind, sb::STORE_ENQUEUE);
  CHECK_EQ(f.b.ops[0].recipient, bob);
  CHECK_EQ(f.b.commit, int(sb::COMMIT_SOON));
  // A transient one is dropped.
  p.flags = MOD_MESIBO_MSGFLAG_TRANSIENT;
  CHECK(!sb::router_remote_message(f.r, bob, alice, p, "x", 1, false, 1000, f.b));
  CHECK_EQ(f.b.ops.size(), size_t(0));
  // Online and done with its backlog: written, not stored.
  ConnId bb = f.online(bob);
  p.flags = 0;
  CHECK(sb::router_remote_message(f.r, bob, alice, p, "x", 1, false, 1000, f.b));
  CHECK_EQ(f.b.ops.size(), size_t(0));
  CHECK_EQ(f.b.writes.size(), size_t(1));
  CHECK_EQ(f.b.writes[0].conn, bb);
}

TEST("cluster: a forwarded status is written as a receipt where the sender asked for one, and confirms a live copy") {
  Fixture f;
  UserId alice = sb::router_user_add(f.r, "alice"), bob = sb::router_user_add(f.r, "bob");
  ConnId a = f.online(alice), bb = f.online(bob);
  // alice's message goes live to bob's device here, with a delivery receipt asked for.
  CHECK_EQ(f.send(alice, a, R"({"op":"msg","id":13,"to":"bob","flags":1,"data":"r"})"), 1);
  CHECK_EQ(f.b.writes.size(), size_t(1));
  CHECK_EQ(f.b.writes[0].conn, bb);
  uint64_t e = sb::router_commit_begin(f.r);
  sb::router_committed(f.r, e, f.b);
  CHECK_EQ(sb::router_live_count(f.r), size_t(1));
  // bob's device on the other node confirmed: the live copy here is confirmed too, and alice gets her receipt.
  sb::router_remote_status(f.r, bob, alice, 13, 2, -1, 1001, f.b);
  CHECK_EQ(sb::router_live_count(f.r), size_t(0));
  CHECK_EQ(join(f.writes()), join({std::to_string(a) + R"(:{"op":"status","id":13,"from":"bob","status":1})",
                                   std::to_string(a) + R"(:{"op":"status","id":13,"from":"bob","status":2})"}));
  CHECK_EQ(f.b.ops.size(), size_t(0));
  // No receipt flags: nothing written.
  sb::router_remote_status(f.r, bob, alice, 99, 2, -1, 1002, f.b);
  CHECK_EQ(f.b.writes.size(), size_t(0));
}

TEST("cluster: every stored copy is also handed out after its commit; a device that had it from its backlog or live is not written again") {
  sb::RouterSettings s;
  s.cluster = true;
  Fixture f(s);
  UserId alice = sb::router_user_add(f.r, "alice");
  sb::router_user_add(f.r, "bob");
  ConnId a = f.online(alice);
  // bob is nowhere this node knows of: stored, and handed out after the commit for a bob who is logging in elsewhere.
  CHECK_EQ(f.send(alice, a, R"({"op":"msg","id":31,"to":"bob","data":"s"})"), 1);
  CHECK_EQ(f.b.ops.size(), size_t(1));
  CHECK_EQ(f.b.ops[0].kind, sb::STORE_ENQUEUE);
  uint64_t e = sb::router_commit_begin(f.r);
  sb::router_committed(f.r, e, f.b);
  CHECK_EQ(f.b.ops.size(), size_t(1));
  CHECK_EQ(f.b.ops[0].kind, sb::STORE_FORWARD);
  CHECK_EQ(int(f.b.ops[0].after_commit), 1);
  CHECK_EQ(f.b.bytes.substr(f.b.ops[0].payload_off, f.b.ops[0].payload_len), std::string("s"));
  // On bob's node: his backlog gave the device message 31; the same copy handed out is not written again, 32 is.
  Fixture g(s);
  UserId alice2 = sb::router_user_add(g.r, "alice"), bob2 = sb::router_user_add(g.r, "bob");
  ConnId bb = sb::router_login(g.r, bob2, false);
  sb::router_backlog_sent(g.r, bb, alice2, 31);
  sb::router_backlog_done(g.r, bb, g.b);
  mesibo_message_params_t p{};
  p.id = 31;
  CHECK(!sb::router_remote_message(g.r, bob2, alice2, p, "s", 1, true, 1000, g.b));
  CHECK_EQ(g.b.writes.size(), size_t(0));
  p.id = 32;
  CHECK(sb::router_remote_message(g.r, bob2, alice2, p, "t", 1, false, 1000, g.b));
  CHECK_EQ(g.b.writes.size(), size_t(1));
  // 32 was a live copy; unconfirmed, its sender stores it and hands it out again: not written twice.
  CHECK(!sb::router_remote_message(g.r, bob2, alice2, p, "t", 1, true, 1100, g.b));
  // Once confirmed, the key is forgotten.
  CHECK_EQ(g.send(bob2, bb, R"({"op":"status","id":32,"to":"alice","status":2})"), 2);
  CHECK(g.r.dir.conns[bb].stored.find(sb::Key3{alice2, 0, 32}) == nullptr);
}

TEST("cluster: while a copy for a user waits for its commit to be handed out, later copies for it wait too (no overtaking)") {
  sb::RouterSettings s;
  s.cluster = true;
  Fixture f(s);
  UserId alice = sb::router_user_add(f.r, "alice"), bob = sb::router_user_add(f.r, "bob");
  ConnId a = f.online(alice);
  f.send(alice, a, R"({"op":"msg","id":41,"to":"bob","data":"1"})");  // bob nowhere yet: stored, handed out after the commit
  sb::directory_set_remote(f.r.dir, bob, 1);                           // now on another node
  f.send(alice, a, R"({"op":"msg","id":42,"to":"bob","data":"2"})");
  CHECK_EQ(f.b.ops.size(), size_t(1));
  CHECK_EQ(f.b.ops[0].kind, sb::STORE_ENQUEUE);
  CHECK_EQ(sb::router_live_count(f.r), size_t(0));
  uint64_t e = sb::router_commit_begin(f.r);
  sb::router_committed(f.r, e, f.b);
  // Both handed out after the commit, in order.
  CHECK_EQ(f.b.ops.size(), size_t(2));
  CHECK_EQ(f.b.ops[0].id, 41u);
  CHECK_EQ(f.b.ops[1].id, 42u);
  CHECK_EQ(f.r.dir.users[bob].forwards_waiting, 0u);
  // Nothing waits any more: live again.
  f.send(alice, a, R"({"op":"msg","id":43,"to":"bob","data":"3"})");
  CHECK_EQ(f.b.ops.size(), size_t(1));
  CHECK_EQ(int(f.b.ops[0].after_commit), 0);
  CHECK_EQ(sb::router_live_count(f.r), size_t(1));
  // A failed commit lets go of what waited too. (43, still live, is stored
  // before 44: both wait.)
  sb::directory_set_remote(f.r.dir, bob, 0);
  f.send(alice, a, R"({"op":"msg","id":44,"to":"bob","data":"4"})");
  CHECK_EQ(f.r.dir.users[bob].forwards_waiting, 2u);
  sb::router_commit_failed(f.r, f.b);
  CHECK_EQ(f.r.dir.users[bob].forwards_waiting, 0u);
}

TEST("a copy that must be stored stores the recipient's older live copies first, so a backlog keeps the sender's order") {
  Fixture f;
  UserId alice = sb::router_user_add(f.r, "alice"), bob = sb::router_user_add(f.r, "bob");
  ConnId a = f.online(alice);
  f.online(bob);
  f.send(alice, a, R"({"op":"msg","id":71,"to":"bob","data":"1"})");  // live: bob's phone has it, unconfirmed
  CHECK_EQ(sb::router_live_count(f.r), size_t(1));
  // bob's laptop logs in: while it reads its backlog, copies for bob are stored.
  sb::router_login(f.r, bob, false);
  f.send(alice, a, R"({"op":"msg","id":72,"to":"bob","data":"2"})");
  // 71, stored later (the phone never confirms), would come after 72 in the laptop's backlog.
  CHECK_EQ(f.b.ops.size(), size_t(2));
  CHECK_EQ(f.b.ops[0].kind, sb::STORE_ENQUEUE);
  CHECK_EQ(f.b.ops[0].id, 71u);
  CHECK_EQ(f.b.ops[1].kind, sb::STORE_ENQUEUE);
  CHECK_EQ(f.b.ops[1].id, 72u);
  CHECK_EQ(sb::router_live_count(f.r), size_t(0));
  CHECK_EQ(f.r.dir.users[bob].live, 0u);
}

TEST("cluster: where a user is on other nodes changed: its unconfirmed live copies are stored at once, oldest first, and later copies wait behind that commit") {
  sb::RouterSettings s;
  s.cluster = true;
  Fixture f(s);
  UserId alice = sb::router_user_add(f.r, "alice"), bob = sb::router_user_add(f.r, "bob"), carol = sb::router_user_add(f.r, "carol");
  ConnId a = f.online(alice);
  sb::directory_set_remote(f.r.dir, bob, 1);
  sb::directory_set_remote(f.r.dir, carol, 1);
  f.send(alice, a, R"({"op":"msg","id":51,"to":"bob","data":"1"})");
  f.send(alice, a, R"({"op":"msg","id":52,"to":"bob","data":"2"})");
  f.send(alice, a, R"({"op":"msg","id":53,"to":"carol","data":"c"})");
  CHECK_EQ(sb::router_live_count(f.r), size_t(3));
  // bob's node died (or bob moved, or this node lost NATS): 51 and 52 may be
  // lost on the way. Stored now and handed out again after the commit, before
  // anything newer; carol's copy stays live.
  sb::directory_set_remote(f.r.dir, bob, 2);
  sb::router_store_live(f.r, bob, f.b);
  CHECK_EQ(f.b.ops.size(), size_t(2));
  CHECK_EQ(f.b.ops[0].kind, sb::STORE_ENQUEUE);
  CHECK_EQ(f.b.ops[0].id, 51u);
  CHECK_EQ(f.b.ops[1].kind, sb::STORE_ENQUEUE);
  CHECK_EQ(f.b.ops[1].id, 52u);
  CHECK_EQ(sb::router_live_count(f.r), size_t(1));
  CHECK_EQ(f.r.dir.users[bob].forwards_waiting, 2u);
  // A newer copy for bob is not forwarded live past them: stored, handed out after the same commit.
  f.send(alice, a, R"({"op":"msg","id":54,"to":"bob","data":"3"})");
  CHECK_EQ(f.b.ops.size(), size_t(1));
  CHECK_EQ(f.b.ops[0].kind, sb::STORE_ENQUEUE);
  uint64_t e = sb::router_commit_begin(f.r);
  sb::router_committed(f.r, e, f.b);
  CHECK_EQ(join(f.writes()), join({std::to_string(a) + R"(:{"op":"status","id":51,"from":"bob","status":1})",
                                   std::to_string(a) + R"(:{"op":"status","id":52,"from":"bob","status":1})",
                                   std::to_string(a) + R"(:{"op":"status","id":54,"from":"bob","status":1})"}));
  // Handed out after the commit, oldest first.
  CHECK_EQ(f.b.ops.size(), size_t(3));
  CHECK_EQ(f.b.ops[0].kind, sb::STORE_FORWARD);
  CHECK_EQ(int(f.b.ops[0].after_commit), 1);
  CHECK_EQ(f.b.ops[0].id, 51u);
  CHECK_EQ(f.b.ops[1].id, 52u);
  CHECK_EQ(f.b.ops[2].id, 54u);
  CHECK_EQ(f.r.dir.users[bob].forwards_waiting, 0u);
  // Nothing live for a user: nothing to do.
  sb::router_store_live(f.r, bob, f.b);
  CHECK_EQ(f.b.ops.size(), size_t(0));
}

TEST("cluster: the recipient's node keeps the receipt flags of a forwarded copy, and its forwarded status asks the sender's nodes for the receipt") {
  Fixture g;  // bob's node
  UserId alice = sb::router_user_add(g.r, "alice"), bob = sb::router_user_add(g.r, "bob");
  sb::directory_set_remote(g.r.dir, alice, 1);
  ConnId bb = g.online(bob);
  mesibo_message_params_t p{};
  p.id = 61;
  p.flags = MOD_MESIBO_MSGFLAG_DELIVERYRECEIPT;
  CHECK(sb::router_remote_message(g.r, bob, alice, p, "r", 1, false, 1000, g.b));
  CHECK_EQ(g.send(bob, bb, R"({"op":"status","id":61,"to":"alice","status":2})"), 2);
  CHECK_EQ(g.b.ops[0].kind, sb::STORE_FORWARD_STATUS);
  CHECK_EQ(int(g.b.ops[0].receipt), 1);
  CHECK_EQ(g.b.ops[0].gid, 0u);
  // A node of alice's that kept no flags (the message came through another node's API) writes it.
  Fixture f;
  UserId alice1 = sb::router_user_add(f.r, "alice"), bob1 = sb::router_user_add(f.r, "bob");
  ConnId a = f.online(alice1);
  sb::router_remote_status(f.r, bob1, alice1, 61, 2, 0, 1001, f.b);
  CHECK_EQ(join(f.writes()), join({std::to_string(a) + R"(:{"op":"status","id":61,"from":"bob","status":2})"}));
  // Without flags anywhere: none.
  sb::router_remote_status(f.r, bob1, alice1, 62, 2, -1, 1002, f.b);
  CHECK_EQ(f.b.writes.size(), size_t(0));
}

TEST("cluster: a live copy another node forwarded is not deleted from the store by the node that read its delivered; the node that kept it deletes it if it stored it") {
  sb::RouterSettings s;
  s.cluster = true;
  Fixture g(s);  // bob's node
  UserId alice = sb::router_user_add(g.r, "alice"), bob = sb::router_user_add(g.r, "bob");
  sb::directory_set_remote(g.r.dir, alice, 1);
  ConnId bb = g.online(bob);
  mesibo_message_params_t p{};
  p.id = 71;
  CHECK(sb::router_remote_message(g.r, bob, alice, p, "l", 1, false, 1000, g.b));
  CHECK_EQ(g.send(bob, bb, R"({"op":"status","id":71,"to":"alice","status":2})"), 2);
  CHECK_EQ(g.b.ops.size(), size_t(1));
  CHECK_EQ(g.b.ops[0].kind, sb::STORE_FORWARD_STATUS);
  // A copy the other node had stored is deleted here, as before.
  p.id = 72;
  CHECK(sb::router_remote_message(g.r, bob, alice, p, "s", 1, true, 1000, g.b));
  CHECK_EQ(g.send(bob, bb, R"({"op":"status","id":72,"to":"alice","status":2})"), 2);
  CHECK_EQ(g.b.ops.size(), size_t(2));
  CHECK_EQ(g.b.ops[1].kind, sb::STORE_ACK);
  // On alice's node: the live copy of 71 was stored at its grace; the delivered that comes back deletes it.
  Fixture f(s);
  UserId alice1 = sb::router_user_add(f.r, "alice"), bob1 = sb::router_user_add(f.r, "bob");
  f.online(alice1);
  sb::router_remote_status(f.r, bob1, alice1, 71, 2, -1, 2000, f.b);
  CHECK_EQ(f.b.ops.size(), size_t(1));
  CHECK_EQ(f.b.ops[0].kind, sb::STORE_ACK);
  CHECK_EQ(f.b.ops[0].recipient, bob1);
  CHECK_EQ(f.b.ops[0].sender, alice1);
  CHECK_EQ(f.b.ops[0].id, 71u);
  // A read is no delete.
  sb::router_remote_status(f.r, bob1, alice1, 71, 3, -1, 2001, f.b);
  CHECK_EQ(f.b.ops.size(), size_t(0));
}

TEST("cluster, multi-device: a delivered for a copy another node keeps, while another device here reads its backlog, asks that node to keep it stored; this node deletes it when the reading is done") {
  sb::RouterSettings s;
  s.cluster = true;
  Fixture g(s);  // bob's node: the phone has alice's live copy, the laptop reads its backlog
  UserId alice = sb::router_user_add(g.r, "alice"), bob = sb::router_user_add(g.r, "bob");
  sb::directory_set_remote(g.r.dir, alice, 1);
  ConnId phone = g.online(bob);
  mesibo_message_params_t p{};
  p.id = 81;
  CHECK(sb::router_remote_message(g.r, bob, alice, p, "l", 1, false, 1000, g.b));
  ConnId laptop = sb::router_login(g.r, bob, false);
  CHECK_EQ(g.send(bob, phone, R"({"op":"status","id":81,"to":"alice","status":2})"), 2);
  CHECK_EQ(g.b.ops.size(), size_t(1));
  CHECK_EQ(g.b.ops[0].kind, sb::STORE_FORWARD_STATUS);
  CHECK_EQ(int(g.b.ops[0].keep), 1);
  // The laptop's backlog is read: the delete goes now.
  sb::router_backlog_done(g.r, laptop, g.b);
  CHECK_EQ(g.b.ops.size(), size_t(1));
  CHECK_EQ(g.b.ops[0].kind, sb::STORE_ACK);
  CHECK_EQ(g.b.ops[0].recipient, bob);
  CHECK_EQ(g.b.ops[0].sender, alice);
  CHECK_EQ(g.b.ops[0].id, 81u);
  // Nobody reading: no keep, and no delete here (the other node keeps it).
  p.id = 82;
  CHECK(sb::router_remote_message(g.r, bob, alice, p, "m", 1, false, 1000, g.b));
  CHECK_EQ(g.send(bob, phone, R"({"op":"status","id":82,"to":"alice","status":2})"), 2);
  CHECK_EQ(g.b.ops.size(), size_t(1));
  CHECK_EQ(int(g.b.ops[0].keep), 0);

  // alice's node: bob on the other node; two live copies for him.
  Fixture f(s);
  UserId alice1 = sb::router_user_add(f.r, "alice"), bob1 = sb::router_user_add(f.r, "bob");
  ConnId a = f.online(alice1);
  sb::directory_set_remote(f.r.dir, bob1, 1);
  CHECK_EQ(f.send(alice1, a, R"({"op":"msg","id":91,"to":"bob","data":"one"})"), 1);
  CHECK_EQ(f.send(alice1, a, R"({"op":"msg","id":92,"to":"bob","data":"two"})"), 1);
  CHECK_EQ(sb::router_live_count(f.r), size_t(2));
  // The delivered of 92 with keep: both are stored, oldest first, and nothing is deleted.
  sb::router_remote_status(f.r, bob1, alice1, 92, 2, -1, 1001, f.b, true);
  CHECK_EQ(sb::router_live_count(f.r), size_t(0));
  std::vector<uint32_t> stored;
  for (const sb::StoreOp &op : f.b.ops) {
    CHECK(op.kind != sb::STORE_ACK);
    if (op.kind == sb::STORE_ENQUEUE) stored.push_back(op.id);
  }
  CHECK_EQ(stored.size(), size_t(2));
  CHECK_EQ(stored[0], 91u);
  CHECK_EQ(stored[1], 92u);
  // Its "sent"s follow the commit.
  CHECK(f.writes().empty());
  sb::router_committed(f.r, sb::router_commit_begin(f.r), f.b);
  CHECK_EQ(f.b.writes.size(), size_t(2));
  // Without keep, a delivered for a copy stored here deletes it.
  sb::router_remote_status(f.r, bob1, alice1, 91, 2, -1, 1002, f.b);
  CHECK_EQ(f.b.ops.size(), size_t(1));
  CHECK_EQ(f.b.ops[0].kind, sb::STORE_ACK);
}

TEST("cluster, multi-device: while another node has a device of the user reading its backlog, a delivered here leaves the stored copy; the deletes go when no node has one") {
  sb::RouterSettings s;
  s.cluster = true;
  Fixture f(s);
  UserId alice = sb::router_user_add(f.r, "alice"), bob = sb::router_user_add(f.r, "bob");
  sb::directory_set_remote(f.r.dir, alice, 1);
  ConnId phone = f.online(bob);
  sb::router_set_remote_pumping(f.r, bob, 2, f.b);
  CHECK(f.b.ops.empty());
  // A stored copy the phone had (its backlog, or handed out after a commit) and confirms.
  mesibo_message_params_t p{};
  p.id = 101;
  sb::router_remote_message(f.r, bob, alice, p, "s", 1, true, 1000, f.b);
  CHECK_EQ(f.send(bob, phone, R"({"op":"status","id":101,"to":"alice","status":2})"), 2);
  for (const sb::StoreOp &op : f.b.ops) CHECK(op.kind != sb::STORE_ACK);
  // A live copy alice's node keeps: the forwarded status asks it to keep it stored.
  p.id = 102;
  sb::router_remote_message(f.r, bob, alice, p, "l", 1, false, 1000, f.b);
  CHECK_EQ(f.send(bob, phone, R"({"op":"status","id":102,"to":"alice","status":2})"), 2);
  CHECK_EQ(f.b.ops.size(), size_t(1));
  CHECK_EQ(f.b.ops[0].kind, sb::STORE_FORWARD_STATUS);
  CHECK_EQ(int(f.b.ops[0].keep), 1);
  // One node done: still held. The last: both deletes.
  sb::router_set_remote_pumping(f.r, bob, 1, f.b);
  CHECK(f.b.ops.empty());
  sb::router_set_remote_pumping(f.r, bob, 0, f.b);
  CHECK_EQ(f.b.ops.size(), size_t(2));
  CHECK_EQ(f.b.ops[0].kind, sb::STORE_ACK);
  CHECK_EQ(f.b.ops[0].id, 101u);
  CHECK_EQ(f.b.ops[1].kind, sb::STORE_ACK);
  CHECK_EQ(f.b.ops[1].id, 102u);
  // With a device of bob's reading here too, the deletes wait for it as well.
  sb::router_set_remote_pumping(f.r, bob, 1, f.b);
  ConnId laptop = sb::router_login(f.r, bob, false);
  p.id = 103;
  sb::router_remote_message(f.r, bob, alice, p, "s", 1, true, 1000, f.b);
  CHECK_EQ(f.send(bob, phone, R"({"op":"status","id":103,"to":"alice","status":2})"), 2);
  sb::router_set_remote_pumping(f.r, bob, 0, f.b);
  CHECK(f.b.ops.empty());
  sb::router_backlog_done(f.r, laptop, f.b);
  CHECK_EQ(f.b.ops.size(), size_t(1));
  CHECK_EQ(f.b.ops[0].id, 103u);
}

TEST("a module's message is held for the commit and encoded from the sender") {
  Fixture f;
  sb::router_user_add(f.r, "alice");
  UserId bob = sb::router_user_add(f.r, "bob");
  ConnId bb = f.online(bob);
  mesibo_message_params_t p{};
  p.id = 77;
  p.to = const_cast<char *>("bob");
  CHECK_EQ(sb::router_module_message(f.r, "alice", p, "m", 1, 1000, f.b), 0);
  CHECK_EQ(f.b.ops.size(), size_t(1));
  uint64_t e = sb::router_commit_begin(f.r);
  sb::router_committed(f.r, e, f.b);
  CHECK_EQ(join(f.writes()), join({std::to_string(bb) + R"(:{"op":"msg","id":77,"from":"alice","to":"bob","data":"m"})"}));
  p.to = const_cast<char *>("nobody");
  CHECK_EQ(sb::router_module_message(f.r, "alice", p, "m", 1, 1000, f.b), -1);
}

TEST("live copy: a resend while still live waits on the same copy; one confirmation answers both") {
  Fixture f;
  UserId alice = sb::router_user_add(f.r, "alice"), bob = sb::router_user_add(f.r, "bob");
  ConnId a = f.online(alice), bb = f.online(bob);
  f.send(alice, a, R"({"op":"msg","id":9,"to":"bob","data":"x"})", 1000);
  // The sender reconnected and resent before its "sent".
  sb::router_logout(f.r, a, f.b);
  CHECK_EQ(f.b.ops.size(), size_t(0));  // alice's leaving stores nothing of bob's
  ConnId a2 = f.online(alice);
  f.send(alice, a2, R"({"op":"msg","id":9,"to":"bob","data":"x"})", 1005);
  CHECK_EQ(sb::router_live_count(f.r), size_t(1));
  f.send(bob, bb, R"({"op":"status","id":9,"to":"alice","status":2})", 1010);
  // The first "sent" was for a connection that has closed: only the new one hears it.
  CHECK_EQ(join(f.writes()), join({std::to_string(a2) + R"(:{"op":"status","id":9,"from":"bob","status":1})"}));
}

TEST("a queued sent is never given to a later connection that reuses the id") {
  sb::RouterSettings s;
  s.grace_ms = 0;
  Fixture f(s);
  UserId alice = sb::router_user_add(f.r, "alice"), carol = sb::router_user_add(f.r, "carol");
  sb::router_user_add(f.r, "bob");
  ConnId a = f.online(alice);
  f.send(alice, a, R"({"op":"msg","id":1,"to":"bob","data":"x"})");
  sb::router_logout(f.r, a, f.b);
  ConnId c = f.online(carol);
  CHECK_EQ(c, a);
  uint64_t e = sb::router_commit_begin(f.r);
  sb::router_committed(f.r, e, f.b);
  CHECK_EQ(f.b.writes.size(), size_t(0));
}

TEST("a receipt waits behind any queued sent, also one for another sender") {
  sb::RouterSettings s;
  s.grace_ms = 0;
  Fixture f(s);
  UserId alice = sb::router_user_add(f.r, "alice"), bob = sb::router_user_add(f.r, "bob");
  UserId carol = sb::router_user_add(f.r, "carol");
  ConnId a = f.online(alice), bb = f.online(bob), c = f.online(carol);
  f.send(alice, a, R"({"op":"msg","id":1,"to":"bob","flags":1,"data":"x"})");
  uint64_t e = sb::router_commit_begin(f.r);
  sb::router_committed(f.r, e, f.b);
  f.send(carol, c, R"({"op":"msg","id":2,"to":"bob","data":"y"})");  // carol's "sent" now waits
  f.send(bob, bb, R"({"op":"status","id":1,"to":"alice","status":2})");
  CHECK_EQ(f.b.writes.size(), size_t(0));
  e = sb::router_commit_begin(f.r);
  sb::router_committed(f.r, e, f.b);
  CHECK_EQ(join(f.writes()), join({std::to_string(bb) + R"(:{"op":"msg","id":2,"from":"carol","to":"bob","data":"y"})",
                                   std::to_string(c) + R"(:{"op":"status","id":2,"from":"bob","status":1})",
                                   std::to_string(a) + R"(:{"op":"status","id":1,"from":"bob","status":2})"}));
}

TEST("a recipient with a delivery held for the commit gets the next one held too, not live") {
  Fixture f;  // durable on, grace 50
  UserId alice = sb::router_user_add(f.r, "alice"), bob = sb::router_user_add(f.r, "bob");
  ConnId a = f.online(alice), bb = f.online(bob);
  mesibo_message_params_t p{};
  p.id = 50;
  p.to = const_cast<char *>("bob");
  sb::router_module_message(f.r, "alice", p, "m", 1, 1000, f.b);  // held
  f.send(alice, a, R"({"op":"msg","id":51,"to":"bob","data":"c"})", 1000);
  CHECK_EQ(f.b.writes.size(), size_t(0));  // a live copy would overtake the held one
  CHECK_EQ(f.b.ops.size(), size_t(1));
  uint64_t e = sb::router_commit_begin(f.r);
  sb::router_committed(f.r, e, f.b);
  CHECK_EQ(join(f.writes()), join({std::to_string(bb) + R"(:{"op":"msg","id":50,"from":"alice","to":"bob","data":"m"})",
                                   std::to_string(bb) + R"(:{"op":"msg","id":51,"from":"alice","to":"bob","data":"c"})",
                                   std::to_string(a) + R"(:{"op":"status","id":51,"from":"bob","status":1})"}));
}

TEST("a group message's live copies share one message; sent after the last confirmation") {
  sb::RouterHost host;
  host.load_group = [](void *, uint32_t, std::vector<std::string> &m) {
    m.push_back("alice");
    m.push_back("bob");
    m.push_back("carol");
    return true;
  };
  Fixture f({}, host);
  UserId alice = sb::router_user_add(f.r, "alice"), bob = sb::router_user_add(f.r, "bob");
  UserId carol = sb::router_user_add(f.r, "carol");
  ConnId a = f.online(alice), bb = f.online(bob), c = f.online(carol);
  f.send(alice, a, R"({"op":"msg","id":3,"gid":8,"data":"g"})", 1000);
  CHECK_EQ(f.b.writes.size(), size_t(2));
  CHECK_EQ(sb::router_live_count(f.r), size_t(2));
  f.send(bob, bb, R"({"op":"status","id":3,"to":"alice","status":2})", 1001);
  uint64_t e = sb::router_commit_begin(f.r);
  sb::router_committed(f.r, e, f.b);
  CHECK_EQ(f.b.writes.size(), size_t(0));  // carol has not confirmed yet
  sb::router_expire(f.r, 1050, f.b);       // carol is silent: her copy is stored
  CHECK_EQ(f.b.ops.size(), size_t(1));
  CHECK_EQ(f.b.ops[0].recipient, carol);
  CHECK_EQ(f.b.ops[0].gid, 8u);
  e = sb::router_commit_begin(f.r);
  sb::router_committed(f.r, e, f.b);
  CHECK_EQ(join(f.writes()), join({std::to_string(a) + R"(:{"op":"status","id":3,"gid":8,"status":1})"}));
  (void)c;
}

TEST("stop stores every live copy and takes no more timers; logout then stores nothing") {
  Fixture f;
  UserId alice = sb::router_user_add(f.r, "alice"), bob = sb::router_user_add(f.r, "bob");
  ConnId a = f.online(alice), bb = f.online(bob);
  f.send(alice, a, R"({"op":"msg","id":1,"to":"bob","data":"1"})", 1000);
  sb::router_stop(f.r, f.b);
  CHECK_EQ(f.b.ops.size(), size_t(1));
  sb::router_logout(f.r, bb, f.b);
  CHECK_EQ(f.b.ops.size(), size_t(0));
  sb::router_expire(f.r, 2000, f.b);
  CHECK_EQ(f.b.live_wait_ms, int64_t(-1));
  (void)bob;
}

TEST("receipt flags: the oldest is forgotten past the limit") {
  sb::Receipts r;
  r.max = 2;
  sb::receipts_track(r, 1, 2, 10, 1, 0);
  sb::receipts_track(r, 1, 2, 11, 1, 0);
  sb::receipts_track(r, 1, 2, 12, 1, 0);
  CHECK_EQ(sb::receipts_take(r, 1, 2, 10, 2), int64_t(-1));
  CHECK_EQ(sb::receipts_take(r, 1, 2, 11, 2), int64_t(0));
  CHECK_EQ(sb::receipts_take(r, 1, 2, 12, 2), int64_t(0));
}

TEST("flat map: erase keeps every other key findable") {
  sb::FlatMap<sb::Key3, uint32_t> m;
  for (uint32_t i = 0; i < 5000; ++i) m.put(sb::Key3{i % 7, i, i * 3}, i);
  for (uint32_t i = 0; i < 5000; i += 2) CHECK(m.erase(sb::Key3{i % 7, i, i * 3}));
  size_t found = 0;
  for (uint32_t i = 0; i < 5000; ++i) {
    uint32_t *v = m.find(sb::Key3{i % 7, i, i * 3});
    if (i % 2) found += v && *v == i;
    else CHECK(v == nullptr);
  }
  CHECK_EQ(found, size_t(2500));
}

TEST("directory names: every interned name is found by its bytes, through the table's growth; others are not") {
  sb::Directory d;
  CHECK_EQ(sb::directory_find(d, "nobody"), sb::kNone);
  std::vector<std::string> names;
  // Lengths 0 to 40 (the hash reads 8-byte words and a tail), common
  // prefixes, names that differ in one byte, and bytes above 0x7f.
  for (int i = 0; i < 20000; ++i) {
    std::string n = "u" + std::to_string(i);
    if (i % 7 == 0) n = std::string(size_t(i % 41), 'x');
    if (i % 11 == 0) n += "\xc3\xa9" + std::to_string(i);
    if (i % 13 == 0) n = "group-member-with-a-long-common-prefix-" + std::to_string(i);
    names.push_back(n);
  }
  std::vector<UserId> ids;
  for (const std::string &n : names) ids.push_back(sb::directory_intern(d, n));
  for (size_t i = 0; i < names.size(); ++i) {
    CHECK_EQ(sb::directory_find(d, names[i]), ids[i]);
    CHECK_EQ(d.users[ids[i]].name, names[i]);
    // Interning again gives the same id, and no new user.
    CHECK_EQ(sb::directory_intern(d, names[i]), ids[i]);
  }
  CHECK_EQ(sb::directory_find(d, "u1x"), sb::kNone);
  CHECK_EQ(sb::directory_find(d, "u20000"), sb::kNone);
  CHECK_EQ(sb::directory_find(d, std::string(41, 'x')), sb::kNone);
  CHECK_EQ(sb::directory_find(d, std::string_view("u1\0", 3)), sb::kNone);
  size_t distinct = d.users.size();
  CHECK(distinct < names.size());  // the repeated 'x' runs are one user each
  CHECK(distinct > 15000);
}

TEST("the steady state allocates nothing: live copies confirmed, receipts, commits") {
  Fixture f;
  std::vector<UserId> users;
  std::vector<ConnId> conns;
  for (int i = 0; i < 100; ++i) {
    users.push_back(sb::router_user_add(f.r, "u" + std::to_string(i)));
    conns.push_back(f.online(users.back()));
  }
  std::vector<std::string> msgs, statuses;
  for (int i = 0; i < 100; ++i) {
    msgs.push_back(R"({"op":"msg","id":)" + std::to_string(i + 1) + R"(,"to":"u)" + std::to_string((i + 1) % 100) +
                   R"(","flags":1,"data":"0123456789012345678901234567890123456789"})");
    statuses.push_back(R"({"op":"status","id":)" + std::to_string(i + 1) + R"(,"to":"u)" + std::to_string(i) +
                       R"(","status":2})");
  }
  auto round = [&](uint64_t now) {
    for (int i = 0; i < 100; ++i) f.send(users[i], conns[i], msgs[i], now);
    for (int i = 0; i < 100; ++i) f.send(users[(i + 1) % 100], conns[(i + 1) % 100], statuses[i], now);
    uint64_t e = sb::router_commit_begin(f.r);
    sb::router_committed(f.r, e, f.b);
    sb::router_expire(f.r, now + 60, f.b);
  };
  for (int i = 0; i < 50; ++i) round(1000 + i * 100);  // warm: every pool and buffer at its size
  g_allocs = 0;
  g_counting = true;
  for (int i = 50; i < 150; ++i) round(1000 + i * 100);
  g_counting = false;
  CHECK_EQ(g_allocs, size_t(0));
  CHECK_EQ(sb::router_live_count(f.r), size_t(0));
}

}  // namespace
