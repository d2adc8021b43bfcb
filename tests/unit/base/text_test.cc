#include "agent/base/text.h"

#include <gtest/gtest.h>

#include <string>

namespace mi {
namespace {

TEST(Utf8Test, AcceptsWellFormedRejectsTheRest) {
  for (const char* good : {"", "plain", "caf\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", "\xf4\x8f\xbf\xbf",
                           "\xed\x9f\xbf"}) {
    EXPECT_TRUE(IsValidUtf8(good)) << good;
  }
  for (const char* bad : {"\xff", "http://x/\xff", "\x80", "\xc3", "\xc3\x28", "\xc0\xaf", "\xe0\x80\xaf",
                          "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xf8\x88\x80\x80\x80", "\xe2\x82"}) {
    EXPECT_FALSE(IsValidUtf8(bad)) << bad;
  }
  EXPECT_EQ(InvalidUtf8Offset("http://x/\xff"), 9u);
  EXPECT_EQ(InvalidUtf8Offset("ok"), std::string::npos);
}

TEST(EscapeTest, ControlCharactersAndBadBytesBecomeVisibleEscapes) {
  EXPECT_EQ(Escaped("a\nb\rc\td"), "a\\nb\\rc\\td");
  EXPECT_EQ(Escaped(std::string("nul\0bel\x07" "del\x7f", 12)), "nul\\x00bel\\x07del\\x7f");
  EXPECT_EQ(Escaped("bad\xff\xc3"), "bad\\xff\\xc3");
  EXPECT_EQ(Escaped("caf\xc3\xa9 C:\\path"), "caf\xc3\xa9 C:\\path");
  EXPECT_TRUE(IsValidUtf8(Escaped("\xc3\x28\xed\xa0\x80")));
}

TEST(EscapeTest, TheBoundNeverCutsAnEscapeOrACharacter) {
  std::string out;
  EXPECT_FALSE(AppendEscaped("ab\ncd", &out, 3));
  EXPECT_EQ(out, "ab");
  out.clear();
  EXPECT_FALSE(AppendEscaped("a\xc3\xa9", &out, 2));
  EXPECT_EQ(out, "a");
  out.clear();
  EXPECT_TRUE(AppendEscaped("abc", &out, 3));
  EXPECT_EQ(out, "abc");
}

TEST(JsonDepthTest, CountsNestingOutsideStringsOnly) {
  EXPECT_TRUE(JsonDepthWithin(R"({"a":[1,{"b":[]}]})", 4));
  EXPECT_FALSE(JsonDepthWithin(R"({"a":[1,{"b":[]}]})", 3));
  EXPECT_TRUE(JsonDepthWithin(R"({"a":"[[[[[[{{{{"})", 1));
  EXPECT_TRUE(JsonDepthWithin(R"({"a":"\"[[[[\\"})", 1));
  EXPECT_FALSE(JsonDepthWithin(R"({"a":"\\",[[[[]]]]})", 4));
  EXPECT_FALSE(JsonDepthWithin(std::string(30000, '[') + std::string(30000, ']'), 16));
  EXPECT_TRUE(JsonDepthWithin("[][][][][]", 1));
}

}  // namespace
}  // namespace mi
