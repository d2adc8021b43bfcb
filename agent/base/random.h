#pragma once
// Randomness for jitter, injected so tests are deterministic (FakeRandom,
// tests/fakes/fake_random.h).

#include <random>

namespace mi {

class Random {
 public:
  virtual ~Random() = default;
  // Uniform in [0, 1).
  virtual double Uniform() = 0;
};

// A Mersenne Twister seeded once from the high-resolution clock. Not for secrets.
class SystemRandom : public Random {
 public:
  SystemRandom();
  double Uniform() override;

 private:
  std::mt19937_64 engine_;
};

}  // namespace mi
