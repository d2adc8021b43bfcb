#include "agent/log.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace mi {
namespace {

TEST(LoggerTest, JournalFormatCarriesSyslogPriority) {
  Logger logger;
  std::vector<std::string> lines;
  logger.set_sink([&](std::string_view l) { lines.emplace_back(l); });
  logger.set_format(LogFormat::kJournal);
  logger.Warning("upstream failing");
  logger.Debug("hidden at info");
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0], "<4>upstream failing");
}

TEST(LoggerTest, JsonFormatIsOneObjectPerLine) {
  Logger logger;
  std::vector<std::string> lines;
  logger.set_sink([&](std::string_view l) { lines.emplace_back(l); });
  logger.set_format(LogFormat::kJson);
  logger.Error("a \"quoted\"\nmessage");
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0].find('\n'), std::string::npos);
  EXPECT_NE(lines[0].find("\"level\":\"error\""), std::string::npos);
}

}  // namespace
}  // namespace mi
