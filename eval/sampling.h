// Seeded choices for the benchmark makers: a splitmix64 stream per (seed, tag), so every choice is a pure
// function of the seed and adding a language or a source does not move the choices of another.
#pragma once
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "data/train_data.h"  // fnv1a64, splitmix64

namespace xv {

// splitmix64: a tiny, portable generator; a stream per (seed, tag) keeps every choice independent of the
// others (adding a language does not move the distractors of another).
struct Stream {
  uint64_t s;
  Stream(uint64_t seed, const std::string& tag) : s(fnv1a64(tag) ^ (seed * 0x9e3779b97f4a7c15ull + 0x632be59bd9b4e019ull)) {}
  uint64_t next() { return splitmix64(s); }
  // Uniform in [0, n), n >= 1, without modulo bias.
  uint64_t below(uint64_t n) {
    const uint64_t limit = (0 - n) % n;  // 2^64 mod n: the biased low values to reject
    uint64_t x;
    do x = next();
    while (x < limit);
    return x % n;
  }
};

// k distinct values of [0, n) other than `exclude`, in a random order: a Fisher-Yates shuffle of the
// first k+1 places of a virtual array (exclude moved to place 0), swaps kept in a map, O(k).
inline std::vector<int64_t> sample_excluding(int64_t n, int64_t exclude, int64_t k, Stream& rng) {
  std::unordered_map<int64_t, int64_t> moved;
  auto at = [&](int64_t i) {
    auto it = moved.find(i);
    return it == moved.end() ? i : it->second;
  };
  if (exclude != 0) {
    moved[exclude] = 0;
    moved[0] = exclude;
  }
  std::vector<int64_t> out;
  out.reserve(size_t(k));
  for (int64_t i = 1; i <= k; ++i) {
    const int64_t j = i + int64_t(rng.below(uint64_t(n - i)));
    const int64_t vi = at(i), vj = at(j);
    moved[i] = vj;
    moved[j] = vi;
    out.push_back(vj);
  }
  return out;
}

// The values 0..n-1 in a random order (Fisher-Yates).
inline std::vector<int64_t> shuffled(int64_t n, Stream& rng) {
  std::vector<int64_t> v(size_t(n > 0 ? n : 0));
  for (int64_t i = 0; i < n; ++i) v[size_t(i)] = i;
  for (int64_t i = n - 1; i > 0; --i) std::swap(v[size_t(i)], v[size_t(rng.below(uint64_t(i + 1)))]);
  return v;
}

}  // namespace xv
