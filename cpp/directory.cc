// Who is online, by integer ids (directory.h).
#include "directory.h"

#include <algorithm>
#include <cstring>

#include "core.h"

namespace sb {

void directory_init(Directory &d, size_t max_connections) {
  d.conns.assign(max_connections, Connection{});
  d.free_conns.clear();
  d.free_conns.reserve(max_connections);
  // Lowest ids first: the embedder's socket array stays dense.
  for (size_t i = max_connections; i-- > 0;) d.free_conns.push_back(static_cast<ConnId>(i));
  d.owed_own.reset(new int32_t[max_connections ? max_connections : 1]());
  d.owed = d.owed_own.get();
}

void directory_share_owed(Directory &d, int32_t *mem) {
  std::memcpy(mem, d.owed, d.conns.size() * sizeof(int32_t));
  d.owed = mem;
  d.owed_own.reset();
}

void directory_grow(Directory &d, size_t n, int32_t *mem) {
  size_t old = d.conns.size();
  if (n <= old) return;
  d.conns.resize(n);
  // free_conns is a stack taken from the back: the new, higher ids go under
  // the ones free now.
  std::vector<ConnId> ids;
  ids.reserve(n - old + d.free_conns.size());
  for (size_t i = n; i-- > old;) ids.push_back(static_cast<ConnId>(i));
  ids.insert(ids.end(), d.free_conns.begin(), d.free_conns.end());
  d.free_conns.swap(ids);
  std::unique_ptr<int32_t[]> own;
  if (!mem) {
    own.reset(new int32_t[n]());
    mem = own.get();
  } else {
    std::memset(mem, 0, n * sizeof(int32_t));
  }
  std::memcpy(mem, d.owed, old * sizeof(int32_t));
  d.owed = mem;
  d.owed_own = std::move(own);
}

namespace {

// 32 bits of a name's hash (FNV-1a over 8-byte words, then mixed): names
// are short, so this is a few multiplications.
uint32_t name_hash(std::string_view s) {
  uint64_t h = 0xcbf29ce484222325ull ^ s.size();
  size_t i = 0;
  for (; i + 8 <= s.size(); i += 8) {
    uint64_t w;
    std::memcpy(&w, s.data() + i, 8);
    h = (h ^ w) * 0x100000001b3ull;
    h ^= h >> 29;
  }
  uint64_t w = 0;
  std::memcpy(&w, s.data() + i, s.size() - i);
  h = (h ^ w) * 0x9E3779B97F4A7C15ull;
  h ^= h >> 32;
  return static_cast<uint32_t>(h);
}

void name_put(Directory &d, uint32_t hash, UserId u) {
  size_t mask = d.name_slots.size() - 1;
  for (size_t i = hash & mask;; i = (i + 1) & mask)
    if (d.name_slots[i] == 0) {
      d.name_slots[i] = uint64_t(hash) << 32 | (uint64_t(u) + 1);
      return;
    }
}

}  // namespace

UserId directory_intern(Directory &d, std::string_view name) {
  UserId u = directory_find(d, name);
  if (u != kNone) return u;
  u = static_cast<UserId>(d.users.size());
  d.users.emplace_back();
  d.users.back().name.assign(name.data(), name.size());
  // At most half full, so a miss ends within a slot or two.
  if ((d.names + 1) * 2 > d.name_slots.size()) {
    std::vector<uint64_t> old;
    old.swap(d.name_slots);
    d.name_slots.assign(std::max<size_t>(64, old.size() * 2), 0);
    for (uint64_t e : old)
      if (e) name_put(d, static_cast<uint32_t>(e >> 32), static_cast<UserId>((e & 0xffffffffu) - 1));
  }
  name_put(d, name_hash(name), u);
  ++d.names;
  return u;
}

UserId directory_find(Directory &d, std::string_view name) {
  if (d.name_slots.empty()) return kNone;
  uint32_t hash = name_hash(name);
  size_t mask = d.name_slots.size() - 1;
  for (size_t i = hash & mask;; i = (i + 1) & mask) {
    uint64_t e = d.name_slots[i];
    if (e == 0) return kNone;
    if (static_cast<uint32_t>(e >> 32) != hash) continue;
    UserId u = static_cast<UserId>((e & 0xffffffffu) - 1);
    if (d.users[u].name == name) return u;
  }
}

void directory_set_exists(Directory &d, UserId u, bool exists) {
  if (u < d.users.size()) d.users[u].exists = exists;
}

void directory_set_remote(Directory &d, UserId u, uint32_t nodes) {
  if (u < d.users.size()) d.users[u].remote = nodes;
}

ConnId directory_login(Directory &d, UserId u, bool binary) {
  if (u >= d.users.size() || d.free_conns.empty()) return kNone;
  ConnId id = d.free_conns.back();
  d.free_conns.pop_back();
  Connection &c = d.conns[id];
  User &usr = d.users[u];
  c.user = u;
  ++c.gen;
  c.open = true;
  c.binary = binary;
  c.pumping = true;
  c.confirmed_at = 0;
  c.bucket = Bucket{};
  c.stored.clear();
  c.recheck = false;
  c.next = usr.first;
  usr.first = id;
  ++usr.conns;
  ++usr.pumping;
  d.owed[id] = 0;
  ++(binary ? d.binary_conns : d.json_conns);
  return id;
}

bool directory_logout(Directory &d, ConnId id) {
  if (id >= d.conns.size() || !d.conns[id].open) return false;
  Connection &c = d.conns[id];
  User &usr = d.users[c.user];
  for (ConnId *p = &usr.first; *p != kNone; p = &d.conns[*p].next) {
    if (*p == id) {
      *p = c.next;
      break;
    }
  }
  if (c.pumping) --usr.pumping;
  --usr.conns;
  --(c.binary ? d.binary_conns : d.json_conns);
  c.open = false;
  c.pumping = false;
  c.next = kNone;
  c.stored.clear();
  d.free_conns.push_back(id);
  return usr.conns == 0;
}

void directory_backlog_done(Directory &d, ConnId id) {
  if (id >= d.conns.size() || !d.conns[id].open || !d.conns[id].pumping) return;
  d.conns[id].pumping = false;
  --d.users[d.conns[id].user].pumping;
}

const std::vector<UserId> *directory_group(Directory &d, uint32_t gid) {
  auto it = d.groups.find(gid);
  return it == d.groups.end() ? nullptr : &it->second;
}

void directory_group_set(Directory &d, uint32_t gid, std::vector<UserId> members) {
  d.groups[gid] = std::move(members);
}

void directory_group_forget(Directory &d, uint32_t gid) {
  if (gid == 0) d.groups.clear();
  else d.groups.erase(gid);
}

int directory_out_format(const Directory &d) {
  if (d.binary_conns == 0) return WIRE_JSON;
  return d.json_conns == 0 ? WIRE_BINARY : OUT_BOTH;
}

}  // namespace sb
