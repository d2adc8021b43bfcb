#include "proxy/error_body.h"

#include <gtest/gtest.h>

namespace mi::proxy {
namespace {

TEST(ErrorBodyTest, IsJson) {
  EXPECT_EQ(ErrorBody("bad_request", "say \"hi\""), R"({"error":"bad_request","error_description":"say \"hi\""})");
}

TEST(ErrorBodyTest, InvalidUtf8IsReplaced) {
  EXPECT_EQ(ErrorBody("e", "\xff"), "{\"error\":\"e\",\"error_description\":\"\xEF\xBF\xBD\"}");
}

}  // namespace
}  // namespace mi::proxy
