// libFuzzer target: a configuration file (from an operator, but a typo must
// give a message, never a crash) through ParseConfig. A rejected file must
// come with a message; an accepted one must leave a usable Config.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "agent/app/config.h"

namespace {

[[noreturn]] void Die(const char* what, const std::string& input) {
  std::fprintf(stderr, "config_fuzz: %s:\n%s\n", what, input.c_str());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  mi::Config config;
  const mi::Status status = mi::ParseConfig(text, &config);
  if (!status.ok()) {
    if (status.message().empty()) Die("a rejected config without a message", text);
    return 0;
  }
  if (config.listen.empty()) Die("an accepted config with no listen address", text);
  for (const std::string& host : config.listen) {
    if (host.empty()) Die("an accepted config with an empty listen address", text);
  }
  for (const mi::TokenKey& key : config.cache.prefetch) {
    if (key.resource.empty()) Die("an accepted prefetch key without a resource", text);
  }
  return 0;
}
