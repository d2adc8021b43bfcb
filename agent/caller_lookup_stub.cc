// Placeholder until the platform lookups land (h-plat: caller_lookup_win.cc;
// Linux has caller_lookup_linux.cc); the lead deletes this file at merge. Finds nothing.
#include "agent/caller_lookup.h"

namespace mi::caller_lookup {

bool Account(const PeerCredentials&, CallerInfo*) { return false; }
uint32_t FindPid(const PeerCredentials&) { return 0; }
bool Process(uint32_t, CallerInfo*, uint64_t*) { return false; }

}  // namespace mi::caller_lookup
