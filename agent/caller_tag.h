#pragma once
// CallerTag: who a token request is for, as far as the fair share goes
// (TokenCache's per-caller cap on waiters, UpstreamScheduler's round robin of
// IMDS starts). Part of the broker interface (agent/token_broker.h).
//
//  * POSIX: the uid owning the caller's socket (TCP: inet_diag; Unix socket:
//    SO_PEERCRED). Every process of one user is one caller: a user cannot get
//    more than one share by starting more processes.
//  * Windows: PeerCredentials carries no user yet, only the owner PID of the
//    connection (GetExtendedTcpTable), so the tag is the process. Coarser
//    than a user (one user's processes are several callers) but it still
//    keeps one flooding process from holding every place.
//  * A caller that could not be resolved (no lookup on this platform, the
//    lookup failed, a remote caller) gets Unknown(): all such callers share
//    one tag, and so one share.
//
// A plain value: no allocation, compared and hashed as one integer.

#include <cstddef>
#include <cstdint>

#include "agent/base/peer_credentials.h"

namespace mi {

class CallerTag {
 public:
  constexpr CallerTag() = default;  // Unknown()
  static constexpr CallerTag Unknown() { return CallerTag(); }
  static constexpr CallerTag Uid(uint32_t uid) { return CallerTag(kUid | uid); }
  static constexpr CallerTag Pid(uint32_t pid) { return CallerTag(kPid | pid); }
  // The tag of the caller on a connection (HttpRequest::caller), as above.
  static constexpr CallerTag Of(const PeerCredentials& peer) {
#ifdef _WIN32
    return peer.known && peer.pid != 0 ? Pid(peer.pid) : Unknown();
#else
    return peer.known ? Uid(peer.uid) : Unknown();
#endif
  }

  constexpr bool known() const { return value_ != 0; }
  constexpr uint64_t value() const { return value_; }
  friend constexpr bool operator==(CallerTag a, CallerTag b) { return a.value_ == b.value_; }
  friend constexpr bool operator!=(CallerTag a, CallerTag b) { return a.value_ != b.value_; }

  struct Hash {
    size_t operator()(CallerTag t) const { return static_cast<size_t>(t.value_ ^ (t.value_ >> 32)); }
  };

 private:
  static constexpr uint64_t kUid = uint64_t{1} << 32;
  static constexpr uint64_t kPid = uint64_t{2} << 32;
  constexpr explicit CallerTag(uint64_t value) : value_(value) {}
  uint64_t value_ = 0;  // 0: unknown; else the kind in the high half, the id in the low half
};

}  // namespace mi
