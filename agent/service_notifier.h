#pragma once
// How the agent tells its service manager what it is doing. SdNotifier talks to
// systemd (sd_notify); the Windows service reports to the SCM; NullNotifier
// does nothing (console runs, tests).

#include <string_view>

#include "agent/base/clock.h"

namespace mi {

class ServiceNotifier {
 public:
  virtual ~ServiceNotifier() = default;
  // Every listener is bound (and the first prefetch round is done, if configured).
  virtual void Ready() = 0;
  // Reload begins; Ready() follows when it is done.
  virtual void Reloading() = 0;
  virtual void Stopping() = 0;
  // A one-line summary ("3 identities ok, 0 failing, IMDS ok").
  virtual void Status(std::string_view line) = 0;
  // Liveness ping; only sent if WatchdogInterval() > 0.
  virtual void Watchdog() = 0;
  // How often Watchdog() should be called (half the manager's timeout), or 0.
  virtual Duration WatchdogInterval() const = 0;
};

class NullNotifier : public ServiceNotifier {
 public:
  void Ready() override {}
  void Reloading() override {}
  void Stopping() override {}
  void Status(std::string_view) override {}
  void Watchdog() override {}
  Duration WatchdogInterval() const override { return Duration(0); }
};

}  // namespace mi
