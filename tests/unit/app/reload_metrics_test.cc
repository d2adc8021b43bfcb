#include <gtest/gtest.h>

#include "agent/app/process_metrics.h"

namespace mi {
namespace {

std::string Render(const HealthModel::Info& info) {
  MetricsWriter w{TimePoint()};
  ReloadMetrics(info).WriteMetrics(w);
  return w.Take();
}

TEST(ReloadMetricsTest, SuccessAndTimestampOfTheLastReload) {
  HealthModel::Info info;
  std::string text = Render(info);
  EXPECT_NE(text.find("\nmi_agent_config_reload_success 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("\nmi_agent_config_reload_timestamp_seconds 0\n"), std::string::npos) << text;
  info.reload.result = HealthModel::Info::ReloadResult::kFailed;
  info.reload.time = TimePoint(std::chrono::seconds(1767225600));
  text = Render(info);
  EXPECT_NE(text.find("\nmi_agent_config_reload_success 0\n"), std::string::npos) << text;
  EXPECT_NE(text.find("\nmi_agent_config_reload_timestamp_seconds 1767225600\n"), std::string::npos) << text;
  info.reload.result = HealthModel::Info::ReloadResult::kOk;
  EXPECT_NE(Render(info).find("\nmi_agent_config_reload_success 1\n"), std::string::npos);
}

}  // namespace
}  // namespace mi
