// Admission (admit.h): token buckets per connection and per user.
#include "admit.h"

#include <cstring>

#include "router.h"

namespace sb {

namespace {

// A bucket not used yet (at == 0) starts full.
void refill(Bucket &b, double rate, uint64_t now) {
  if (b.at == 0) {
    b.tokens = rate;
  } else if (now > b.at) {
    double t = b.tokens + double(now - b.at) * rate / 1000.0;
    b.tokens = t > rate ? rate : t;
  }
  b.at = now ? now : 1;
}

bool take(Bucket &b, double rate, uint64_t now) {
  refill(b, rate, now);
  if (b.tokens < 1) return false;
  b.tokens -= 1;
  return true;
}

void charge(Bucket &b, double rate, uint64_t now) {
  refill(b, rate, now);
  b.tokens = b.tokens - 1 < -rate ? -rate : b.tokens - 1;
}

bool is_space(uint8_t c) { return c == 0x20 || c == 0x09 || c == 0x0a || c == 0x0d; }

}  // namespace

bool admit_looks_like_status(const uint8_t *f, size_t n) {
  if (n >= 3 && f[0] == 0xB5) return f[2] == 2;
  static const char kStatus[] = "\"status\"";
  const size_t slen = sizeof kStatus - 1;
  for (size_t i = 0; i + 3 < n; ++i) {
    if (f[i] != '"' || f[i + 1] != 'o' || f[i + 2] != 'p' || f[i + 3] != '"') continue;
    size_t j = i + 4;
    while (j < n && is_space(f[j])) ++j;
    if (j >= n || f[j] != ':') return false;  // "op" as a value, not a key: not worth a second look
    ++j;
    while (j < n && is_space(f[j])) ++j;
    return j + slen <= n && std::memcmp(f + j, kStatus, slen) == 0;
  }
  return false;
}

int router_admit(Router &r, ConnId c, const uint8_t *f, size_t n, uint64_t now) {
  if (c >= r.dir.conns.size() || !r.dir.conns[c].open) return ADMIT_MESSAGE;
  Connection &conn = r.dir.conns[c];
  double rate = r.settings.rate_limit;
  if (admit_looks_like_status(f, n)) {
    int32_t &owed = r.dir.owed[c];
    if (owed > 0) {
      --owed;
      return ADMIT_STATUS;
    }
    return take(conn.bucket, rate, now) ? ADMIT_STATUS : ADMIT_REFUSED_STATUS;
  }
  Bucket &user = r.dir.users[conn.user].bucket;
  refill(conn.bucket, rate, now);
  if (conn.bucket.tokens < 1) return ADMIT_REFUSED_CONNECTION;
  if (!take(user, r.settings.user_rate_limit, now)) return ADMIT_REFUSED_USER;
  conn.bucket.tokens -= 1;
  return ADMIT_MESSAGE;
}

void router_admit_charge(Router &r, ConnId c, uint64_t now) {
  if (c >= r.dir.conns.size() || !r.dir.conns[c].open) return;
  Connection &conn = r.dir.conns[c];
  charge(conn.bucket, r.settings.rate_limit, now);
  charge(r.dir.users[conn.user].bucket, r.settings.user_rate_limit, now);
}

}  // namespace sb
