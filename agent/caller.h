#pragma once
// What is known about the process on the other end of a token request: the
// socket's owner from the listener (PeerCredentials, at accept), and what the
// caller resolver (issue #13) adds when a policy or the audit trail needs it:
// account names and groups (from the uid; cached with a TTL) and the process
// (pid, executable; found off the loop). Never a secret.

#include <cstdint>
#include <string>
#include <vector>

#include "agent/base/peer_credentials.h"

namespace mi {

struct CallerInfo {
  PeerCredentials peer;  // peer.known = false: an unresolved caller (denied under enforce)

  // The account. POSIX: the uid's user name and its groups (primary and
  // supplementary), by gid and by name. Windows: user "DOMAIN\\name" and its
  // SID in user_sid; groups by name ("DOMAIN\\name") and SID (group_sids).
  bool account_known = false;
  std::string user;
  std::string user_sid;                // Windows only
  std::vector<uint32_t> gids;          // POSIX only
  std::vector<std::string> groups;     // names
  std::vector<std::string> group_sids; // Windows only

  // The process. exe: the executable's full path (Linux: /proc/PID/exe;
  // Windows: QueryFullProcessImageName); process_name: Linux comm, Windows
  // the image's file name.
  bool process_known = false;
  uint32_t pid = 0;
  std::string exe;
  std::string process_name;
};

}  // namespace mi
