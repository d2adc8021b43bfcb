// MetricsWriter: the text format 0.0.4 as /metrics serves it.
#include "agent/base/metrics.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace mi {
namespace {

TEST(MetricsWriterTest, FamilyThenSamples) {
  MetricsWriter w(TimePoint(std::chrono::seconds(5)));
  EXPECT_EQ(w.now(), TimePoint(std::chrono::seconds(5)));
  w.One("mi_agent_a_total", "counter", "Things counted.", 3);
  w.Family("mi_agent_b", "gauge", "Things by kind.");
  w.Sample("mi_agent_b", {{"kind", "x"}}, 1);
  w.Sample("mi_agent_b", {{"kind", "y"}, {"code", "200"}}, 2.5);
  EXPECT_EQ(w.Take(),
            "# HELP mi_agent_a_total Things counted.\n"
            "# TYPE mi_agent_a_total counter\n"
            "mi_agent_a_total 3\n"
            "# HELP mi_agent_b Things by kind.\n"
            "# TYPE mi_agent_b gauge\n"
            "mi_agent_b{kind=\"x\"} 1\n"
            "mi_agent_b{kind=\"y\",code=\"200\"} 2.5\n");
  EXPECT_EQ(w.Take(), "");  // emptied
}

// Two sources writing one family (two listeners): HELP and TYPE once, the
// samples together, the family where it was first named.
TEST(MetricsWriterTest, GroupsSamplesByFamily) {
  MetricsWriter w(TimePoint{});
  for (const char* listener : {"token", "health"}) {
    w.Family("mi_agent_open", "gauge", "Open.");
    w.Sample("mi_agent_open", {{"listener", listener}}, 1);
    w.Family("mi_agent_accepted_total", "counter", "Accepted.");
    w.Sample("mi_agent_accepted_total", {{"listener", listener}}, 2);
  }
  w.One("mi_agent_last", "gauge", "Last.", 0);
  EXPECT_EQ(w.Take(),
            "# HELP mi_agent_open Open.\n"
            "# TYPE mi_agent_open gauge\n"
            "mi_agent_open{listener=\"token\"} 1\n"
            "mi_agent_open{listener=\"health\"} 1\n"
            "# HELP mi_agent_accepted_total Accepted.\n"
            "# TYPE mi_agent_accepted_total counter\n"
            "mi_agent_accepted_total{listener=\"token\"} 2\n"
            "mi_agent_accepted_total{listener=\"health\"} 2\n"
            "# HELP mi_agent_last Last.\n"
            "# TYPE mi_agent_last gauge\n"
            "mi_agent_last 0\n");
}

TEST(MetricsWriterTest, HistogramSeriesStayInTheirFamily) {
  MetricsWriter w(TimePoint{});
  w.Family("mi_agent_h_seconds", "histogram", "H.");
  w.Sample("mi_agent_h_seconds_bucket", {{"le", "0.5"}}, 1);
  w.Sample("mi_agent_h_seconds_bucket", {{"le", "+Inf"}}, 2);
  w.Sample("mi_agent_h_seconds_sum", 0.75);
  w.Sample("mi_agent_h_seconds_count", 2);
  EXPECT_EQ(w.Take(),
            "# HELP mi_agent_h_seconds H.\n"
            "# TYPE mi_agent_h_seconds histogram\n"
            "mi_agent_h_seconds_bucket{le=\"0.5\"} 1\n"
            "mi_agent_h_seconds_bucket{le=\"+Inf\"} 2\n"
            "mi_agent_h_seconds_sum 0.75\n"
            "mi_agent_h_seconds_count 2\n");
}

TEST(MetricsWriterTest, SampleWithoutFamilyIsDropped) {
  MetricsWriter w(TimePoint{});
  w.Sample("mi_agent_orphan", 1);
  EXPECT_EQ(w.Take(), "");
}

TEST(MetricsWriterTest, EscapesLabelValues) {
  EXPECT_EQ(MetricsWriter::EscapeLabel("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
  EXPECT_EQ(MetricsWriter::EscapeLabel("plain-1.0"), "plain-1.0");
  MetricsWriter w(TimePoint{});
  w.Family("mi_agent_build_info", "gauge", "Build.");
  w.Sample("mi_agent_build_info", {{"version", "1\"2\\3\n"}}, 1);
  EXPECT_EQ(w.Take(),
            "# HELP mi_agent_build_info Build.\n"
            "# TYPE mi_agent_build_info gauge\n"
            "mi_agent_build_info{version=\"1\\\"2\\\\3\\n\"} 1\n");
}

TEST(MetricsWriterTest, FormatsValues) {
  EXPECT_EQ(MetricsWriter::FormatValue(0), "0");
  EXPECT_EQ(MetricsWriter::FormatValue(-3), "-3");
  EXPECT_EQ(MetricsWriter::FormatValue(1767225600), "1767225600");
  EXPECT_EQ(MetricsWriter::FormatValue(0.0025), "0.0025");
  EXPECT_EQ(MetricsWriter::FormatValue(597.356), "597.356");
  EXPECT_EQ(MetricsWriter::FormatValue(1.0 / 3), "0.333333333333");
  EXPECT_EQ(MetricsWriter::FormatValue(1e15), "1e+15");
  EXPECT_EQ(MetricsWriter::FormatValue(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(MetricsWriter::FormatValue(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(MetricsWriter::FormatValue(std::nan("")), "NaN");
}

TEST(HistogramTest, CountsIntoCumulativeBuckets) {
  static constexpr double kBounds[] = {0.001, 0.01, 0.1};
  Histogram h(kBounds, 3);
  EXPECT_EQ(h.count(), 0u);
  for (double v : {0.0, 0.001, 0.005, 0.5, 2.0}) h.Observe(v);  // a bound counts in its own bucket
  EXPECT_EQ(h.bucket_count(), 3u);
  EXPECT_EQ(h.cumulative(0), 2u);
  EXPECT_EQ(h.cumulative(1), 3u);
  EXPECT_EQ(h.cumulative(2), 3u);
  EXPECT_EQ(h.cumulative(3), 5u);  // +Inf
  EXPECT_EQ(h.count(), 5u);
  EXPECT_DOUBLE_EQ(h.sum(), 2.506);
  h.Observe(std::nan(""));  // never below a bound: +Inf only
  EXPECT_EQ(h.cumulative(2), 3u);
  EXPECT_EQ(h.cumulative(3), 6u);
}

TEST(HistogramTest, DefaultBucketsSpanRequestLatencies) {
  Histogram h;
  ASSERT_EQ(h.bucket_count(), Histogram::kLatencyBuckets.size());
  h.Observe(0);      // a cache hit within the clock's resolution
  h.Observe(0.0003);
  h.Observe(30);     // beyond 25 s
  EXPECT_EQ(h.cumulative(0), 1u);  // le 0.0001
  EXPECT_EQ(h.cumulative(1), 1u);  // le 0.00025
  EXPECT_EQ(h.cumulative(2), 2u);  // le 0.0005
  EXPECT_EQ(h.cumulative(h.bucket_count() - 1), 2u);
  EXPECT_EQ(h.cumulative(h.bucket_count()), 3u);
}

TEST(HistogramTest, WritesBucketsSumAndCountWithLabels) {
  static constexpr double kBounds[] = {0.25, 1};
  Histogram h(kBounds, 2);
  h.Observe(0.5);
  h.Observe(0.125);
  MetricsWriter w(TimePoint{});
  w.Family("x_seconds", "histogram", "X.");
  h.Write(w, "x_seconds", {{"route", "legacy"}, {"cache", "hit"}});
  Histogram none(kBounds, 2);
  none.Write(w, "x_seconds", {});
  EXPECT_EQ(w.Take(),
            "# HELP x_seconds X.\n"
            "# TYPE x_seconds histogram\n"
            "x_seconds_bucket{route=\"legacy\",cache=\"hit\",le=\"0.25\"} 1\n"
            "x_seconds_bucket{route=\"legacy\",cache=\"hit\",le=\"1\"} 2\n"
            "x_seconds_bucket{route=\"legacy\",cache=\"hit\",le=\"+Inf\"} 2\n"
            "x_seconds_sum{route=\"legacy\",cache=\"hit\"} 0.625\n"
            "x_seconds_count{route=\"legacy\",cache=\"hit\"} 2\n"
            "x_seconds_bucket{le=\"0.25\"} 0\n"
            "x_seconds_bucket{le=\"1\"} 0\n"
            "x_seconds_bucket{le=\"+Inf\"} 0\n"
            "x_seconds_sum 0\n"
            "x_seconds_count 0\n");
}

}  // namespace
}  // namespace mi
