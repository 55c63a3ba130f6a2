// Admission: the rate limits a client frame meets before it costs anything
// (docs/config.md, "Limits": rate_limit, user_rate_limit). Each connection
// and each user has a token bucket, refilled for the time since it was last
// used, with a burst of one second's worth. A message spends a token of its
// connection's bucket and one of its user's; a status answering a delivery
// the connection was sent spends neither (the connection's owed count:
// acknowledging a backlog is never limited); other statuses spend the
// connection's bucket. The kind of frame is read before it is decoded
// (admit_looks_like_status), and a frame that passed as a status but
// decodes as a message is charged afterwards (router_admit_charge).
#pragma once
#include <cstddef>
#include <cstdint>

#include "directory.h"

namespace sb {

struct Router;

// What router_admit decided. Refusals are below every wire error and verdict.
enum AdmitResult : int {
  ADMIT_MESSAGE = 1,
  ADMIT_STATUS = 2,
  ADMIT_REFUSED_STATUS = -1000,      // over rate_limit with no owed status left
  ADMIT_REFUSED_CONNECTION = -1001,  // a message over the connection's rate_limit
  ADMIT_REFUSED_USER = -1002,        // a message over user_rate_limit (all the user's connections)
};

// Whether a client frame looks like a status (an acknowledgement or a
// receipt), before the core decodes it. Binary: the op byte. JSON: the value
// of the first "op" key. A crafted frame can fool the JSON look (an "op" in
// a nested object before the real one): router_admit_charge then charges it.
bool admit_looks_like_status(const uint8_t *f, size_t n);

// Spends what frame `f` of connection `c` costs, or refuses it. `now` in ms.
int router_admit(Router &r, ConnId c, const uint8_t *f, size_t n, uint64_t now);
// A frame admitted as a status decoded as a message: it spends the message
// budget after all (the buckets may go into debt, down to -burst).
void router_admit_charge(Router &r, ConnId c, uint64_t now);

}  // namespace sb
