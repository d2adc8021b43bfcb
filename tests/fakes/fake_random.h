#pragma once
// FakeRandom: the one Random double of the unit tests. Header-only, no gtest
// dependency.

#include <cmath>
#include <cstdint>
#include <deque>
#include <vector>

#include "agent/base/random.h"

namespace mi {

// A Random for tests. By default returns a fixed value (0.5: "no jitter" for
// symmetric jitter); Script() queues exact values returned first, in order;
// UseSequence() switches to a deterministic pseudo-random stream (splitmix64).
// Every value is clamped into [0, 1).
class FakeRandom : public Random {
 public:
  explicit FakeRandom(double value = 0.5) : value_(value) {}

  void set_value(double v) {
    value_ = v;
    sequence_ = false;
  }
  void Script(std::vector<double> values) {
    for (double v : values) script_.push_back(v);
  }
  void UseSequence(uint64_t seed) {
    seed_ = seed;
    sequence_ = true;
  }

  double Uniform() override {
    ++calls_;
    double v = value_;
    if (!script_.empty()) {
      v = script_.front();
      script_.pop_front();
    } else if (sequence_) {
      v = static_cast<double>(NextU64() >> 11) * (1.0 / 9007199254740992.0);  // 53 bits
    }
    if (!(v >= 0.0)) v = 0.0;  // also NaN
    if (v >= 1.0) v = std::nextafter(1.0, 0.0);
    return v;
  }
  int calls() const { return calls_; }

 private:
  uint64_t NextU64() {
    uint64_t z = (seed_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }

  double value_;
  std::deque<double> script_;
  bool sequence_ = false;
  uint64_t seed_ = 0;
  int calls_ = 0;
};

}  // namespace mi
