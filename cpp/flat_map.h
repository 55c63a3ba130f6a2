// A hash map for small plain keys (a few integers) on the per-message path:
// open addressing with linear probing in one array, so that an insert or an
// erase allocates nothing once the table has grown to its working size (a
// std::unordered_map allocates a node per insert). Erase shifts the entries
// behind the erased one back, so there are no tombstones and a table that
// sees a steady stream of inserts and erases never needs a rebuild.
//
// K must be trivially copyable with operator== and a `hash()` member; V
// trivially copyable. Pointers returned by find() are valid until the next
// insert (which may grow the table) or erase (which may move entries).
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace sb {

// Three 32-bit integers: (sender, recipient, message id), the key of a
// receipt flag and of a live copy; (sender, 0, id) for a stored copy.
struct Key3 {
  uint32_t a = 0, b = 0, c = 0;
  bool operator==(const Key3 &o) const { return a == o.a && b == o.b && c == o.c; }
  uint64_t hash() const {
    uint64_t h = (uint64_t(a) << 32 | b) * 0x9E3779B97F4A7C15ull;
    h ^= (h >> 29) + uint64_t(c) * 0xC2B2AE3D27D4EB4Full;
    return h ^ (h >> 32);
  }
};

template <class K, class V>
class FlatMap {
 public:
  size_t size() const { return size_; }

  V *find(const K &k) {
    if (!size_) return nullptr;
    for (size_t i = k.hash() & mask_;; i = (i + 1) & mask_) {
      if (!used_[i]) return nullptr;
      if (slots_[i].k == k) return &slots_[i].v;
    }
  }

  // Inserts or overwrites. Returns true when the key is new.
  bool put(const K &k, const V &v) {
    if ((size_ + 1) * 10 > slots_.size() * 7) grow();
    for (size_t i = k.hash() & mask_;; i = (i + 1) & mask_) {
      if (!used_[i]) {
        used_[i] = 1;
        slots_[i] = {k, v};
        ++size_;
        return true;
      }
      if (slots_[i].k == k) {
        slots_[i].v = v;
        return false;
      }
    }
  }

  // Returns whether the key was there; its value in *out when given.
  bool erase(const K &k, V *out = nullptr) {
    if (!size_) return false;
    size_t i = k.hash() & mask_;
    for (;; i = (i + 1) & mask_) {
      if (!used_[i]) return false;
      if (slots_[i].k == k) break;
    }
    if (out) *out = slots_[i].v;
    // Backward shift: move each following entry of the run into the hole
    // when its home slot does not lie between the hole and it.
    size_t hole = i;
    for (size_t j = (i + 1) & mask_; used_[j]; j = (j + 1) & mask_) {
      size_t home = slots_[j].k.hash() & mask_;
      bool between = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
      if (between) continue;
      slots_[hole] = slots_[j];
      hole = j;
    }
    used_[hole] = 0;
    --size_;
    return true;
  }

  void clear() {
    std::fill(used_.begin(), used_.end(), 0);
    size_ = 0;
  }

 private:
  struct Slot {
    K k;
    V v;
  };
  void grow() {
    std::vector<Slot> old = std::move(slots_);
    std::vector<uint8_t> old_used = std::move(used_);
    size_t cap = old.empty() ? 16 : old.size() * 2;
    slots_.assign(cap, Slot{});
    used_.assign(cap, 0);
    mask_ = cap - 1;
    size_ = 0;
    for (size_t i = 0; i < old.size(); ++i)
      if (old_used[i]) put(old[i].k, old[i].v);
  }
  std::vector<Slot> slots_;
  std::vector<uint8_t> used_;
  size_t mask_ = 0;
  size_t size_ = 0;
};

}  // namespace sb
