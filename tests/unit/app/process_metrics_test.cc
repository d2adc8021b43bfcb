// The process families: /proc/self/stat parsing, and what a real read gives.
#include "agent/app/process_metrics.h"

#include <gtest/gtest.h>

#include <string>

namespace mi {
namespace {

// proc(5): pid (comm) state ppid pgrp session tty_nr tpgid flags minflt cminflt
// majflt cmajflt utime stime cutime cstime priority nice num_threads
// itrealvalue starttime vsize rss ...
constexpr char kStat[] =
    "4711 (mi-agent) S 1 4711 4711 0 -1 4194560 812 0 3 0 250 50 0 0 20 0 1 0 123456 "
    "26214400 1536 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0\n";

TEST(ProcessMetricsTest, ParsesProcStat) {
  ProcessStats st;
  ASSERT_TRUE(ParseProcStat(kStat, 100, 4096, &st));
  EXPECT_DOUBLE_EQ(st.cpu_seconds, 3.0);  // (250 + 50) ticks at 100 Hz
  EXPECT_EQ(st.virtual_bytes, 26214400);
  EXPECT_EQ(st.resident_bytes, 1536.0 * 4096);
  EXPECT_EQ(st.open_fds, -1);  // not from this file
}

TEST(ProcessMetricsTest, CommandNamesMayHoldSpacesAndParentheses) {
  std::string stat = kStat;
  stat.replace(stat.find("(mi-agent)"), 10, "(a) b (c) d)");
  ProcessStats st;
  ASSERT_TRUE(ParseProcStat(stat, 100, 4096, &st));
  EXPECT_DOUBLE_EQ(st.cpu_seconds, 3.0);
  EXPECT_EQ(st.virtual_bytes, 26214400);
}

TEST(ProcessMetricsTest, RefusesWhatIsNotAStatLine) {
  ProcessStats st;
  EXPECT_FALSE(ParseProcStat("", 100, 4096, &st));
  EXPECT_FALSE(ParseProcStat("4711 mi-agent S 1", 100, 4096, &st));             // no ')'
  EXPECT_FALSE(ParseProcStat("4711 (mi-agent) S 1 4711 4711 0", 100, 4096, &st));  // cut short
  std::string bad = kStat;
  bad.replace(bad.find(" 250 "), 5, " 2x0 ");  // utime not a number
  EXPECT_FALSE(ParseProcStat(bad, 100, 4096, &st));
  EXPECT_FALSE(ParseProcStat(kStat, 0, 4096, &st));  // no tick rate
  EXPECT_EQ(st.cpu_seconds, -1);  // nothing set
  EXPECT_EQ(st.resident_bytes, -1);
}

TEST(ProcessMetricsTest, ReadsThisProcess) {
  ProcessStats st;
  ReadProcessStats(&st);
  EXPECT_GT(st.resident_bytes, 0);
  EXPECT_GE(st.cpu_seconds, 0);
#ifndef _WIN32
  EXPECT_GT(st.virtual_bytes, 0);
  EXPECT_GT(st.open_fds, 0);  // stdin, stdout, stderr at least
  EXPECT_GE(st.max_fds, st.open_fds);
#else
  // Known, or left out (-1): Wine keeps neither private bytes nor a handle count.
  EXPECT_TRUE(st.virtual_bytes > 0 || st.virtual_bytes == -1) << st.virtual_bytes;
  EXPECT_TRUE(st.open_fds > 0 || st.open_fds == -1) << st.open_fds;
#endif
}

TEST(ProcessMetricsTest, WritesBuildReadinessAndProcessFamilies) {
  ProcessMetrics metrics("1.2.3", "abc1234", FromEpochSeconds(1767225600), nullptr,
                         [](ProcessStats* st) { st->open_fds = 9; });
  MetricsWriter w(TimePoint{});
  metrics.WriteMetrics(w);
  const std::string text = w.Take();
  EXPECT_NE(text.find("mi_agent_build_info{version=\"1.2.3\",revision=\"abc1234\"} 1\n"), std::string::npos);
  EXPECT_EQ(text.find("mi_agent_ready"), std::string::npos);  // no readiness given
  EXPECT_NE(text.find("\nmi_agent_process_start_time_seconds 1767225600\n"), std::string::npos);
  EXPECT_NE(text.find("\nprocess_start_time_seconds 1767225600\n"), std::string::npos);
  EXPECT_NE(text.find("\nprocess_open_fds 9\n"), std::string::npos);
  EXPECT_EQ(text.find("process_resident_memory_bytes"), std::string::npos);  // unknown: left out
  EXPECT_NE(std::string(BuildRevision()), "");
}

}  // namespace
}  // namespace mi
