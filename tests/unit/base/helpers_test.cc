// The small shared helpers in agent/base: ascii, civil_time, fnv, socket_address.
#include <gtest/gtest.h>

#include <cstring>

#include "agent/base/ascii.h"
#include "agent/base/civil_time.h"
#include "agent/base/fnv.h"
#include "agent/base/socket_address.h"

namespace mi {
namespace {

TEST(Ascii, ComparesAndTrimsBytesNotLetters) {
  EXPECT_TRUE(EqualsIgnoreCase("Content-Length", "content-length"));
  EXPECT_FALSE(EqualsIgnoreCase("content-length", "content-lengt"));
  EXPECT_FALSE(EqualsIgnoreCase("\xc3\x84", "\xc3\xa4"));  // no Unicode folding
  EXPECT_TRUE(StartsWithIgnoreCase("Retry-After: 5", "retry-after:"));
  EXPECT_FALSE(StartsWithIgnoreCase("Retry", "retry-after:"));
  EXPECT_EQ(ToLower("ABC-def_1"), "abc-def_1");
  EXPECT_EQ(TrimOws(" \t a b \t"), "a b");
  EXPECT_EQ(TrimOws("\r\nx\r\n"), "\r\nx\r\n");
  EXPECT_EQ(TrimLine(" 5\r\n"), "5");
}

TEST(CivilTime, RoundTripsDatesAcrossLeapYearsAndTheEpoch) {
  EXPECT_EQ(DaysFromCivil(1970, 1, 1), 0);
  EXPECT_EQ(DaysFromCivil(2000, 3, 1), 11017);
  for (int64_t days : {-1LL, 0LL, 59LL, 11016LL, 11017LL, 20454LL, 2932896LL}) {
    CivilDate c = CivilFromDays(days);
    EXPECT_EQ(DaysFromCivil(c.year, c.month, c.day), days);
  }
  EXPECT_EQ(FormatIso8601Utc(FromEpochSeconds(1767225600)), "2026-01-01T00:00:00Z");
  EXPECT_EQ(FormatIso8601Utc(FromEpochSeconds(kMaxEpochSeconds)), "9999-12-31T23:59:59Z");
  EXPECT_EQ(FormatIso8601UtcMillis(TimePoint(Duration(1767225600123))), "2026-01-01T00:00:00.123Z");
}

TEST(CivilTime, ParsesTheThreeHttpDateForms) {
  EXPECT_EQ(ParseHttpDate("Sun, 06 Nov 1994 08:49:37 GMT"), 784111777);
  EXPECT_EQ(ParseHttpDate("Sunday, 06-Nov-94 08:49:37 GMT"), 784111777);
  EXPECT_EQ(ParseHttpDate("Sun Nov  6 08:49:37 1994"), 784111777);
  EXPECT_FALSE(ParseHttpDate("Sun, 29 Feb 2025 00:00:00 GMT"));
  EXPECT_FALSE(ParseHttpDate("sun, 06 Nov 1994 08:49:37 GMT"));
  EXPECT_FALSE(ParseHttpDate("Sun, 06 Nov 1994 08:49:37 GMT "));
  EXPECT_FALSE(ParseHttpDate(""));
}

TEST(Fnv, MatchesTheReferenceVectors) {
  EXPECT_EQ(Fnv1a64(""), 0xcbf29ce484222325ULL);
  EXPECT_EQ(Fnv1a64("a"), 0xaf63dc4c8601ec8cULL);
  EXPECT_EQ(Fnv1a64("foobar"), 0x85944171f73967e8ULL);
}

sockaddr_storage Address(const char* ip, int port) {
  sockaddr_storage ss{};
  if (std::strchr(ip, ':') != nullptr) {
    EXPECT_EQ(uv_ip6_addr(ip, port, reinterpret_cast<sockaddr_in6*>(&ss)), 0);
  } else {
    EXPECT_EQ(uv_ip4_addr(ip, port, reinterpret_cast<sockaddr_in*>(&ss)), 0);
  }
  return ss;
}

TEST(SocketAddress, FormatsAndClassifies) {
  EXPECT_EQ(FormatAddress(Address("127.0.0.1", 50342)), "127.0.0.1:50342");
  EXPECT_EQ(FormatAddress(Address("::1", 80)), "[::1]:80");
  EXPECT_EQ(PortOf(Address("::1", 65535)), 65535);
  EXPECT_TRUE(IsLoopback(Address("127.5.6.7", 1)));
  EXPECT_TRUE(IsLoopback(Address("::1", 1)));
  EXPECT_TRUE(IsLoopback(Address("::ffff:127.0.0.1", 1)));
  EXPECT_FALSE(IsLoopback(Address("::ffff:10.0.0.1", 1)));
  EXPECT_FALSE(IsLoopback(Address("169.254.169.254", 80)));
  sockaddr_storage unknown{};
  EXPECT_EQ(FormatAddress(unknown), "");
  EXPECT_EQ(PortOf(unknown), 0);
}

TEST(SocketAddress, ParsesHostPortStrictly) {
  std::string host;
  uint16_t port = 0;
  ASSERT_TRUE(ParseHostPort("127.0.0.1:50342", &host, &port));
  EXPECT_EQ(host, "127.0.0.1");
  EXPECT_EQ(port, 50342);
  ASSERT_TRUE(ParseHostPort("[::1]:8080", &host, &port));
  EXPECT_EQ(host, "::1");
  EXPECT_EQ(port, 8080);
  for (const char* bad : {"", "127.0.0.1", ":80", "::1:80", "[::1]", "[::1]80", "h:65536", "h:000080", "h:8a"}) {
    EXPECT_FALSE(ParseHostPort(bad, &host, &port)) << bad;
  }
}

}  // namespace
}  // namespace mi
