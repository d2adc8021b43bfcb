// mi-agent under the Windows Service Control Manager. See scm_service.h.
//
// Threads:
//  * the process's main thread sits in StartServiceCtrlDispatcherW and runs the
//    control handler; the handler only asks the Daemon to stop or reload (both
//    thread-safe: they post to the loop with uv_async_send);
//  * the ServiceMain thread reports to the SCM and keeps the checkpoint of a
//    pending state moving while the loop starts up or drains;
//  * the loop thread constructs, runs and destroys the Daemon, so every libuv
//    handle lives and dies on the one thread that runs the loop.
#include "windows-service/scm_service.h"

// winsock2.h before windows.h: agent/platform.h includes uv.h, which needs it.
#include <winsock2.h>
#include <windows.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>

#include "agent/app/cli.h"
#include "agent/base/log.h"
#include "agent/platform.h"
#include "windows-service/log_file_win.h"

namespace mi::windows_service {
namespace {

constexpr DWORD kStartWaitHintMs = 30000;
// A start that has not reported RUNNING by then is left to the SCM's judgement
// (prefetch with IMDS failing can hold start-up for the whole retry budget).
constexpr std::chrono::minutes kStartPendingLimit(5);
// Beyond the configured drain, this much slack before the SCM may call us hung.
constexpr std::chrono::seconds kStopSlack(30);

std::string ErrorText(DWORD error) {
  wchar_t* text = nullptr;
  DWORD n = FormatMessageW(FORMAT_MESSAGE_ALLOCATE_BUFFER | FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_IGNORE_INSERTS,
                           nullptr, error, 0, reinterpret_cast<wchar_t*>(&text), 0, nullptr);
  std::wstring message = n > 0 && text != nullptr ? std::wstring(text, n) : std::wstring();
  if (text != nullptr) LocalFree(text);
  while (!message.empty() && (message.back() == L'\n' || message.back() == L'\r' || message.back() == L' ' ||
                              message.back() == L'.')) {
    message.pop_back();
  }
  std::string out = message.empty() ? "error" : platform::Utf8FromWide(message);
  return out + " (" + std::to_string(error) + ")";
}

class WallClock : public Clock {
 public:
  TimePoint Now() const override {
    return std::chrono::time_point_cast<Duration>(std::chrono::system_clock::now());
  }
};

// The service of this process. The SCM calls ServiceMain without a context
// pointer, hence the one global instance (set for the dispatcher's lifetime).
class ServiceInstance final : public ServiceNotifier {
 public:
  // A non-empty `startup_error` (a bad configuration) is logged and reported
  // to the SCM as a failed start.
  ServiceInstance(DaemonOptions options, std::string startup_error)
      : options_(std::move(options)), startup_error_(std::move(startup_error)), log_(&clock_) {
    auto drain = std::chrono::duration_cast<std::chrono::milliseconds>(options_.config.drain_timeout);
    stop_wait_hint_ms_ = static_cast<DWORD>(drain.count()) + 5000;
    stop_pending_limit_ = drain + kStopSlack;
  }

  int exit_code() const { return exit_code_; }

  // ServiceMain, on the thread the dispatcher starts for it.
  void Main() {
    handle_ = RegisterServiceCtrlHandlerExW(kServiceName, &ServiceInstance::HandlerTrampoline, this);
    if (handle_ == nullptr) {
      exit_code_ = 1;
      return;
    }
    Report(SERVICE_START_PENDING, kStartWaitHintMs);
    bool logging = log_file_.Open();
    log_.set_format(LogFormat::kText);
    log_.set_level(options_.config.log_level);
    if (logging) log_.set_sink([this](std::string_view line) { log_file_.Write(line); });
    MI_LOG(log_, kInfo) << "service: starting mi-agent " MI_VERSION " (log file "
                        << platform::Utf8FromWide(log_file_.path()) << ")";
    if (!startup_error_.empty()) {
      MI_LOG(log_, kError) << "service: cannot start: " << startup_error_;
      // As on Linux: 78 (EX_CONFIG) for an invalid configuration, 1 otherwise.
      exit_code_ = startup_error_.rfind(kInvalidConfiguration, 0) == 0 ? kExitInvalidConfiguration : 1;
      Report(SERVICE_STOPPED, 0, ERROR_SERVICE_SPECIFIC_ERROR, static_cast<DWORD>(exit_code_.load()));
      return;
    }

    std::thread loop([this] { RunDaemon(); });
    {
      std::unique_lock<std::mutex> lock(done_mutex_);
      while (!done_) {
        done_cv_.wait_for(lock, std::chrono::seconds(1));
        if (!done_) Heartbeat();
      }
    }
    loop.join();

    if (exit_code_ == 0) {
      MI_LOG(log_, kInfo) << "service: stopped";
    } else {
      MI_LOG(log_, kError) << "service: stopped with exit code " << exit_code_.load();
    }
    if (exit_code_ == 0) {
      Report(SERVICE_STOPPED, 0);
    } else {
      Report(SERVICE_STOPPED, 0, ERROR_SERVICE_SPECIFIC_ERROR, static_cast<DWORD>(exit_code_.load()));
    }
  }

  // ServiceNotifier: called on the loop thread.
  void Ready() override { Report(SERVICE_RUNNING, 0); }
  void Reloading() override {}  // the SCM has no "reloading" state; stay RUNNING
  void Stopping() override { Report(SERVICE_STOP_PENDING, stop_wait_hint_ms_); }
  void Status(std::string_view) override {}
  void Watchdog() override {}
  Duration WatchdogInterval() const override { return Duration(0); }

  static void WINAPI ServiceMainTrampoline(DWORD, LPWSTR*) noexcept;

 private:
  static DWORD WINAPI HandlerTrampoline(DWORD control, DWORD, LPVOID, LPVOID context) noexcept {
    return static_cast<ServiceInstance*>(context)->Control(control);
  }

  // The control handler (dispatcher thread): posts to the loop, nothing else.
  DWORD Control(DWORD control) {
    switch (control) {
      case SERVICE_CONTROL_STOP:
      case SERVICE_CONTROL_SHUTDOWN:
      case SERVICE_CONTROL_PRESHUTDOWN: {
        std::lock_guard<std::mutex> lock(daemon_mutex_);
        stop_requested_ = true;
        if (daemon_ != nullptr) daemon_->RequestStop();
        return NO_ERROR;
      }
      case SERVICE_CONTROL_PARAMCHANGE: {
        std::lock_guard<std::mutex> lock(daemon_mutex_);
        if (daemon_ != nullptr) daemon_->RequestReload();
        return NO_ERROR;
      }
      case SERVICE_CONTROL_INTERROGATE:
        return NO_ERROR;  // the SCM already holds our last reported status
      default:
        return ERROR_CALL_NOT_IMPLEMENTED;
    }
  }

  // The loop thread: the Daemon is built, run and destroyed here.
  void RunDaemon() {
    int rc = 1;
    try {
      DaemonOptions options = std::move(options_);
      options.notifier = this;
      options.handle_signals = false;
      // The same file, in the format the configuration asks for.
      options.log_sink = [this](std::string_view line) { log_file_.Write(line); };
      auto daemon = std::make_unique<Daemon>(std::move(options));
      bool stop_first;
      {
        std::lock_guard<std::mutex> lock(daemon_mutex_);
        stop_first = stop_requested_;
        if (!stop_first) daemon_ = daemon.get();
      }
      rc = stop_first ? 0 : daemon->Run();
      {
        std::lock_guard<std::mutex> lock(daemon_mutex_);
        daemon_ = nullptr;
      }
    } catch (const std::exception& e) {
      MI_LOG(log_, kError) << "service: start-up failed: " << e.what();
      rc = 1;
    }
    exit_code_ = rc;
    {
      std::lock_guard<std::mutex> lock(done_mutex_);
      done_ = true;
    }
    done_cv_.notify_all();
  }

  void Report(DWORD state, DWORD wait_hint, DWORD win32_exit = NO_ERROR, DWORD specific_exit = 0) {
    std::lock_guard<std::mutex> lock(status_mutex_);
    if (handle_ == nullptr) return;
    // A late Ready() must not undo a stop already under way.
    if (state == SERVICE_RUNNING && status_.dwCurrentState == SERVICE_STOP_PENDING) return;
    bool pending = state == SERVICE_START_PENDING || state == SERVICE_STOP_PENDING;
    if (state != status_.dwCurrentState) pending_since_ = std::chrono::steady_clock::now();
    status_.dwServiceType = SERVICE_WIN32_OWN_PROCESS;
    status_.dwCurrentState = state;
    status_.dwControlsAccepted = state == SERVICE_RUNNING ? SERVICE_ACCEPT_STOP | SERVICE_ACCEPT_SHUTDOWN |
                                                                SERVICE_ACCEPT_PRESHUTDOWN | SERVICE_ACCEPT_PARAMCHANGE
                                                          : 0;
    status_.dwWin32ExitCode = win32_exit;
    status_.dwServiceSpecificExitCode = specific_exit;
    status_.dwCheckPoint = pending ? status_.dwCheckPoint + 1 : 0;
    status_.dwWaitHint = wait_hint;
    SetServiceStatus(handle_, &status_);
  }

  // Keeps a pending state's checkpoint moving, within bounds: a start or a
  // drain that overruns them is left for the SCM to judge.
  void Heartbeat() {
    std::lock_guard<std::mutex> lock(status_mutex_);
    auto elapsed = std::chrono::steady_clock::now() - pending_since_;
    bool bump = (status_.dwCurrentState == SERVICE_START_PENDING && elapsed < kStartPendingLimit) ||
                (status_.dwCurrentState == SERVICE_STOP_PENDING && elapsed < stop_pending_limit_);
    if (!bump) return;
    status_.dwCheckPoint++;
    SetServiceStatus(handle_, &status_);
  }

  DaemonOptions options_;  // moved to the loop thread when it starts
  std::string startup_error_;
  WallClock clock_;
  LogFile log_file_;
  Logger log_;  // ServiceMain and loop threads, never both at once
  DWORD stop_wait_hint_ms_ = 0;
  std::chrono::steady_clock::duration stop_pending_limit_{};
  // Written by the loop thread (or ServiceMain), read after the dispatcher returns.
  std::atomic<int> exit_code_{0};

  std::mutex status_mutex_;
  SERVICE_STATUS_HANDLE handle_ = nullptr;
  SERVICE_STATUS status_{};
  std::chrono::steady_clock::time_point pending_since_;

  std::mutex daemon_mutex_;
  Daemon* daemon_ = nullptr;
  bool stop_requested_ = false;

  std::mutex done_mutex_;
  std::condition_variable done_cv_;
  bool done_ = false;
};

ServiceInstance* g_service = nullptr;

void WINAPI ServiceInstance::ServiceMainTrampoline(DWORD, LPWSTR*) noexcept {
  if (g_service != nullptr) g_service->Main();
}

// Runs `service` under the SCM's dispatcher until it stops.
int Dispatch(ServiceInstance& service) {
  g_service = &service;
  SERVICE_TABLE_ENTRYW table[] = {
      {const_cast<LPWSTR>(kServiceName), &ServiceInstance::ServiceMainTrampoline},
      {nullptr, nullptr},
  };
  BOOL dispatched = StartServiceCtrlDispatcherW(table);
  DWORD error = dispatched ? NO_ERROR : GetLastError();
  g_service = nullptr;
  if (!dispatched) {
    if (error == ERROR_FAILED_SERVICE_CONTROLLER_CONNECT) {
      std::fprintf(stderr,
                   "mi-agent: 'service' is how the Service Control Manager starts mi-agent; "
                   "use `sc start mi-agent`, or run mi-agent.exe without 'service' in a console\n");
      return 2;
    }
    return Fail("cannot connect to the Service Control Manager", error);
  }
  return service.exit_code();
}

}  // namespace

int Fail(const char* what, unsigned long error) {
  std::fprintf(stderr, "mi-agent: %s: %s%s\n", what, ErrorText(error).c_str(),
               error == ERROR_ACCESS_DENIED ? "; run it from an elevated (Administrator) prompt" : "");
  return 1;
}

void Warn(const char* what, unsigned long error) {
  std::fprintf(stderr, "mi-agent: warning: %s: %s\n", what, ErrorText(error).c_str());
}

int RunService(StatusOr<DaemonOptions> options) {
  if (!options.ok()) {
    ServiceInstance failed(DaemonOptions(), options.status().message());
    return Dispatch(failed);
  }
  ServiceInstance service(std::move(*options), "");
  return Dispatch(service);
}

}  // namespace mi::windows_service
