// The delivery engine without N-API: ns per message for the routing
// decisions and their batch, with 1,000 connections. Each message is the
// four frames of the e2e bench: the message in (core_submit + router_route:
// the delivery and, as the case may be, the "sent"), the recipient's
// delivered status in (core_submit + router_route), and a commit every 8
// messages (8 in flight per connection) releasing what waited for it.
// The same frames through core_submit alone are timed too, so the
// engine's share is the difference.
// Usage: router_native [N] [CONNECTIONS]. Prints one line per mode.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "core.h"
#include "router.h"

namespace {

struct Mode {
  const char *name;
  bool durable;
  uint64_t grace_ms;
};

double run(const Mode &mode, long n, int conns, bool route) {
  sb::Config cfg;
  sb::ConfigError cerr;
  sb::config_parse("", "<bench>", ".", cfg, cerr);
  sb::Core core;
  sb::OpenError oerr;
  if (!sb::core_open(core, cfg, sb::Host{}, oerr)) {
    std::fprintf(stderr, "%s\n", oerr.message.c_str());
    std::exit(1);
  }
  sb::RouterSettings s;
  s.durable = mode.durable;
  s.grace_ms = mode.grace_ms;
  s.max_connections = size_t(conns);
  sb::Router r;
  sb::router_init(r, s, sb::RouterHost{});
  std::vector<sb::UserId> users;
  std::vector<sb::ConnId> ids;
  sb::Batch logins;
  for (int i = 0; i < conns; ++i) {
    users.push_back(sb::router_user_add(r, "user" + std::to_string(i)));
    ids.push_back(sb::router_login(r, users.back(), false));
    sb::router_backlog_done(r, ids.back(), logins);  // nothing waits for a fresh connection
  }
  // A 100-byte message frame and the recipient's status frame, per sender.
  std::vector<std::string> msgs, statuses;
  std::string payload(40, 'x');
  for (int i = 0; i < conns; ++i) {
    int to = (i + 1) % conns;
    msgs.push_back("{\"op\":\"msg\",\"id\":" + std::to_string(i + 1) + ",\"to\":\"user" + std::to_string(to) +
                   "\",\"data\":\"" + payload + "\"}");
    statuses.push_back("{\"op\":\"status\",\"id\":" + std::to_string(i + 1) + ",\"to\":\"user" + std::to_string(i) +
                       "\",\"status\":2}");
  }
  sb::SubmitResult res;
  sb::Batch b;
  size_t writes = 0;
  uint64_t now = 1000;
  auto one = [&](long k) {
    int i = int(k % conns);
    int to = (i + 1) % conns;
    int of = sb::router_out_format(r);
    const std::string &from = r.dir.users[users[i]].name;
    sb::core_submit(core, from.data(), from.size(), reinterpret_cast<const uint8_t *>(msgs[i].data()), msgs[i].size(),
                    of, res);
    if (route) {
      sb::router_route(r, users[i], ids[i], res, of, now, b);
      writes += b.writes.size();
    }
    const std::string &rname = r.dir.users[users[to]].name;
    sb::core_submit(core, rname.data(), rname.size(), reinterpret_cast<const uint8_t *>(statuses[i].data()),
                    statuses[i].size(), of, res);
    if (route) {
      sb::router_route(r, users[to], ids[to], res, of, now, b);
      writes += b.writes.size();
      if (k % 8 == 7) {
        sb::router_committed(r, sb::router_commit_begin(r), b);
        writes += b.writes.size();
        ++now;
        if (r.live.timer_armed && now >= r.live.timer_at) sb::router_expire(r, now, b);
      }
    }
  };
  for (long k = 0; k < n / 10; ++k) one(k);
  uint64_t t0 = sb::now_ns();
  for (long k = 0; k < n; ++k) one(k);
  uint64_t t1 = sb::now_ns();
  sb::core_close(core);
  if (route && writes == 0) std::fprintf(stderr, "no writes: the bench routes nothing\n");
  return double(t1 - t0) / double(n);
}

}  // namespace

int main(int argc, char **argv) {
  long n = argc > 1 ? std::atol(argv[1]) : 1000000;
  int conns = argc > 2 ? std::atoi(argv[2]) : 1000;
  const Mode modes[] = {{"durable off", false, 0}, {"durable on, grace 50", true, 50}, {"durable on, grace 0", true, 0}};
  for (const Mode &m : modes) {
    double core_only = run(m, n, conns, false);
    double total = run(m, n, conns, true);
    std::printf("%-22s connections=%d core_submit_ns=%.1f with_router_ns=%.1f router_ns_per_msg=%.1f\n", m.name, conns,
                core_only, total, total - core_only);
  }
  return 0;
}
