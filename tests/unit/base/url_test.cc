#include "agent/base/url.h"

#include <gtest/gtest.h>

#include <string>

namespace mi {
namespace {

TEST(UrlTest, EncodeKeepsOnlyUnreserved) {
  EXPECT_EQ(UrlEncode("AZaz09-._~"), "AZaz09-._~");
  EXPECT_EQ(UrlEncode("https://management.azure.com/"), "https%3A%2F%2Fmanagement.azure.com%2F");
  EXPECT_EQ(UrlEncode("a b+c&d=e?f#g%"), "a%20b%2Bc%26d%3De%3Ff%23g%25");
  EXPECT_EQ(UrlEncode("\xC3\xA9"), "%C3%A9");
  EXPECT_EQ(UrlEncode(std::string_view("\0\xff", 2)), "%00%FF");
  EXPECT_EQ(UrlEncode(""), "");
}

std::string Decoded(std::string_view in, bool plus_as_space) {
  StatusOr<std::string> out = UrlDecode(in, plus_as_space);
  EXPECT_TRUE(out.ok()) << in << ": " << out.status().message();
  return out.ok() ? *out : "<error>";
}

TEST(UrlTest, DecodePercentAndPlus) {
  EXPECT_EQ(Decoded("a+b%2Fc", true), "a b/c");
  EXPECT_EQ(Decoded("a+b%2Fc", false), "a+b/c");
  EXPECT_EQ(Decoded("%2f%2F%3a", true), "//:");
  EXPECT_EQ(Decoded("%2B", true), "+");
  // Unencoded input passes through.
  EXPECT_EQ(Decoded("https://vault.azure.net/", true), "https://vault.azure.net/");
  EXPECT_EQ(Decoded("", true), "");
}

TEST(UrlTest, DecodeRejectsBadEscapes) {
  for (const char* bad : {"%", "%2", "abc%", "abc%4", "%zz", "%G1", "%1G", "a%%20", "% 20"}) {
    StatusOr<std::string> out = UrlDecode(bad, true);
    EXPECT_FALSE(out.ok()) << bad;
    EXPECT_FALSE(out.status().message().empty()) << bad;
  }
}

TEST(UrlTest, RoundTripsEveryByte) {
  std::string all;
  for (int i = 0; i < 256; ++i) all.push_back(static_cast<char>(i));
  EXPECT_EQ(Decoded(UrlEncode(all), true), all);
}

}  // namespace
}  // namespace mi
