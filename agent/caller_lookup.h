#pragma once
// What the operating system says about a local caller: its account (names,
// groups) and its process (pid, executable). These calls BLOCK (NSS may ask a
// directory server; /proc scans touch every process): run them off the loop
// (libuv's work queue). The caching and the asynchrony live in the caller
// resolver; these are the plain lookups, one implementation per platform
// (caller_lookup_linux.cc, caller_lookup_win.cc). Thread-safe, no state.

#include <cstdint>

#include "agent/base/peer_credentials.h"
#include "agent/caller.h"

namespace mi::caller_lookup {

// Fills out->account_known, user, gids and groups (POSIX: peer.uid's user
// name, primary and supplementary groups via getpwuid_r/getgrouplist/
// getgrgid_r; Windows: from the token of process peer.pid: user DOMAIN\name
// and SID, its groups by name and SID). False if the account cannot be found
// (then account_known stays false).
bool Account(const PeerCredentials& peer, CallerInfo* out);

// The pid of the process holding the client's socket: peer.pid when the
// transport gave one; Linux TCP: a scan of /proc/*/fd for socket:[peer.inode]
// among the processes of peer.uid. 0: not found (it closed first). If several
// processes share the socket (fork), the lowest pid.
uint32_t FindPid(const PeerCredentials& peer);

// Fills out->process_known, pid, exe and process_name for `pid`, and
// *start_time (Linux: /proc/PID/stat's starttime; Windows: the creation
// FILETIME) so a cache keyed by pid can tell a reused pid. False if the
// process is gone or cannot be read.
bool Process(uint32_t pid, CallerInfo* out, uint64_t* start_time);

}  // namespace mi::caller_lookup
