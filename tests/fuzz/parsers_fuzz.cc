// libFuzzer target for the parsers that take hostile input: request targets and
// token parameters (callers), IMDS answers (the network), configuration files
// (operators). Built with -DMI_FUZZ=ON and clang; run e.g.
//   build-fuzz/tests/parsers_fuzz -max_total_time=60
// Each input feeds every parser; none may crash, leak or report UB.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "agent/config.h"
#include "agent/token.h"
#include "proxy/request_params.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);

  std::string_view query;
  mi::proxy::ClassifyTarget(input, /*absolute_form=*/true, &query);
  mi::proxy::ParsedParams params;
  mi::proxy::ParseTokenParams(query, input, &params);

  std::string why;
  if (auto token = mi::Token::FromImdsBody(input, &why)) {
    std::string body;
    token->AppendBody(mi::FromEpochSeconds(1700000000), &body);
  }

  mi::Config config;
  mi::ParseConfig(std::string(input), &config);
  return 0;
}
