// imds-emulator: an IMDS look-alike for tests, the demo and benchmarks.
#include "tests/emulator/cli.h"

int main(int argc, char** argv) { return mi::emulator::EmulatorMain(argc, argv); }
