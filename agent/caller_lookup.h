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
// Linux: gids lists the account's primary gid first, then its supplementary
// gids, each once (the groups of the account, not of the process: a process
// may have dropped or added groups since); groups holds the names of those
// gids that have one, in the same order. A uid without a passwd entry is
// false (uid rules still match it from peer.uid).
bool Account(const PeerCredentials& peer, CallerInfo* out);

// The pid of the process holding the client's socket: peer.pid when the
// transport gave one; Linux TCP: a scan of /proc/*/fd for socket:[peer.inode]
// among the processes of peer.uid. 0: not found (it closed first). If several
// processes share the socket (fork), the lowest pid.
// Linux: only processes whose /proc/PID belongs to peer.uid are looked into
// (a process that changed its uid after creating the socket, or a
// non-dumpable one, whose /proc/PID is root's, is not found); the scan is
// bounded (2^17 /proc entries, 2^18 fd entries: beyond that, not found). Other
// users' processes need CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH
// (systemd/process-rules.conf); without them only our own uid's are found.
uint32_t FindPid(const PeerCredentials& peer);

// Fills out->process_known, pid, exe and process_name for `pid`, and
// *start_time (Linux: /proc/PID/stat's starttime; Windows: the creation
// FILETIME) so a cache keyed by pid can tell a reused pid. False if the
// process is gone (a zombie counts as gone) or cannot be read.
// exe and process_name are the caller's bytes (any byte but NUL, not
// necessarily UTF-8 on Linux; at most PATH_MAX and 15 bytes). exe is empty
// when it cannot be read while the process can (Linux: another user's process
// without CAP_SYS_PTRACE, a kernel thread), so exe rules never match it. A
// deleted executable (replaced on disk by an upgrade) keeps its path: the
// kernel's " (deleted)" suffix is dropped when the file has no links left.
bool Process(uint32_t pid, CallerInfo* out, uint64_t* start_time);

}  // namespace mi::caller_lookup
