#include "agent/base/random.h"

#include <uv.h>

namespace mi {

SystemRandom::SystemRandom() : engine_(uv_hrtime()) {}

double SystemRandom::Uniform() { return std::uniform_real_distribution<double>(0.0, 1.0)(engine_); }

}  // namespace mi
