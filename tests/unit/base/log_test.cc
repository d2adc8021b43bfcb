#include "agent/base/log.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace mi {
namespace {

TEST(LoggerTest, JournalFormatCarriesSyslogPriority) {
  Logger logger;
  std::vector<std::string> lines;
  logger.set_sink([&](std::string_view l) { lines.emplace_back(l); });
  logger.set_format(LogFormat::kJournal);
  MI_LOG(logger, kWarning) << "upstream failing";
  MI_LOG(logger, kDebug) << "hidden at info";
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0], "<4>upstream failing");
}

TEST(LoggerTest, JsonFormatIsOneObjectPerLine) {
  Logger logger;
  std::vector<std::string> lines;
  logger.set_sink([&](std::string_view l) { lines.emplace_back(l); });
  logger.set_format(LogFormat::kJson);
  MI_LOG(logger, kError) << "a \"quoted\"\nmessage";
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0].find('\n'), std::string::npos);
  EXPECT_NE(lines[0].find("\"level\":\"error\""), std::string::npos);
}

TEST(LoggerTest, NoValueCanForgeALineInAnyFormat) {
  // An IMDS "error" or a caller's resource with a line break, a carriage return,
  // another control character and a byte that is not UTF-8.
  const std::string hostile = "IMDS error: bad\nforged line\r\x1b[31m\xff end";
  for (LogFormat format : {LogFormat::kText, LogFormat::kJournal, LogFormat::kJson}) {
    Logger logger;
    std::vector<std::string> lines;
    logger.set_sink([&](std::string_view l) { lines.emplace_back(l); });
    logger.set_format(format);
    MI_LOG(logger, kWarning) << hostile;
    ASSERT_EQ(lines.size(), 1u);
    const std::string& line = lines[0];
    for (char c : line) {
      EXPECT_FALSE(static_cast<unsigned char>(c) < 0x20 || c == 0x7f) << "raw control byte in: " << line;
    }
    EXPECT_EQ(line.find('\xff'), std::string::npos) << line;
    std::string msg = line;
    if (format == LogFormat::kJson) {
      auto j = nlohmann::json::parse(line, nullptr, false);
      ASSERT_TRUE(j.is_object()) << line;
      msg = j["msg"];
    }
    EXPECT_NE(msg.find("bad\\nforged line\\r\\x1b[31m\\xff end"), std::string::npos) << msg;
  }
}

TEST(LogMacro, FormatsOnlyWhenTheLevelIsOn) {
  Logger logger;
  std::vector<std::string> lines;
  logger.set_sink([&](std::string_view line) { lines.emplace_back(line); });
  logger.set_format(LogFormat::kJournal);
  int evaluated = 0;
  auto expensive = [&] {
    ++evaluated;
    return std::string("x");
  };
  MI_LOG(logger, kDebug) << "hidden " << expensive();
  EXPECT_EQ(evaluated, 0);
  EXPECT_TRUE(lines.empty());
  MI_LOG(logger, kWarning) << "port " << 50342 << ' ' << expensive() << " ok=" << true;
  EXPECT_EQ(evaluated, 1);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0], "<4>port 50342 x ok=true");
}

TEST(LogMacro, DiscardLoggerDropsEverything) {
  Logger& discard = Logger::Discard();
  EXPECT_FALSE(discard.Enabled(LogLevel::kError));
  int evaluated = 0;
  MI_LOG(discard, kError) << (++evaluated);
  EXPECT_EQ(evaluated, 0);
}

TEST(LogMacro, IsOneStatementInAnUnbracedIfElse) {
  Logger logger;
  std::vector<std::string> lines;
  logger.set_sink([&](std::string_view line) { lines.emplace_back(line); });
  logger.set_format(LogFormat::kJournal);
  for (bool bad : {true, false}) {
    if (bad) MI_LOG(logger, kWarning) << "bad";
    else MI_LOG(logger, kInfo) << "good";
  }
  if (lines.empty()) MI_LOG(logger, kError) << "never";
  EXPECT_EQ(lines, (std::vector<std::string>{"<4>bad", "<6>good"}));
}

}  // namespace
}  // namespace mi
