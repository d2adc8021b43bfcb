#include "agent/app/cli.h"

#include <cstdio>

namespace mi {

int RunCli(int argc, char** argv) {
  (void)argc;
  (void)argv;
  std::printf("mi-agent %s\n", MI_VERSION);
  return 0;
}

}  // namespace mi
