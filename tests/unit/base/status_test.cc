#include "agent/base/status.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>

namespace mi {
namespace {

StatusOr<int> ParseDigit(char c) {
  if (c < '0' || c > '9') return Status::Error(std::string("not a digit: ") + c);
  return c - '0';
}

TEST(StatusOr, HoldsAValueOrTheError) {
  StatusOr<int> seven = ParseDigit('7');
  ASSERT_TRUE(seven.ok());
  EXPECT_EQ(*seven, 7);
  EXPECT_TRUE(seven.status().ok());

  StatusOr<int> bad = ParseDigit('x');
  EXPECT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(), "not a digit: x");
}

TEST(StatusOr, MovesItsValueOut) {
  StatusOr<std::unique_ptr<int>> p = std::make_unique<int>(3);
  ASSERT_TRUE(p.ok());
  std::unique_ptr<int> owned = *std::move(p);
  EXPECT_EQ(*owned, 3);
}

}  // namespace
}  // namespace mi
