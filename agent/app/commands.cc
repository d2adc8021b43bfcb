// Placeholder until the observability work lands: `status` and `token`.
#include <cstdio>

#include "agent/app/cli.h"

namespace mi {

int RunStatusCommand(const std::vector<std::string>&) {
  std::fprintf(stderr, "mi-agent status: not implemented yet\n");
  return 2;
}

int RunTokenCommand(const std::vector<std::string>&) {
  std::fprintf(stderr, "mi-agent token: not implemented yet\n");
  return 2;
}

}  // namespace mi
