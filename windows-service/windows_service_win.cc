// mi-agent under the Windows Service Control Manager. See windows_service.h.
//
// Threads:
//  * the process's main thread sits in StartServiceCtrlDispatcherW and runs the
//    control handler; the handler only asks the Daemon to stop or reload (both
//    thread-safe: they post to the loop with uv_async_send);
//  * the ServiceMain thread reports to the SCM and keeps the checkpoint of a
//    pending state moving while the loop starts up or drains;
//  * the loop thread constructs, runs and destroys the Daemon, so every libuv
//    handle lives and dies on the one thread that runs the loop.
#include "windows-service/windows_service.h"

// winsock2.h before windows.h: agent/platform.h includes uv.h, which needs it.
#include <winsock2.h>
#include <windows.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <exception>
#include <iterator>
#include <memory>
#include <mutex>
#include <thread>
#include <share.h>
#include <string_view>
#include <type_traits>

#include "agent/app/cli.h"
#include "agent/base/log.h"
#include "agent/platform.h"

namespace mi {
namespace {

constexpr wchar_t kServiceName[] = L"mi-agent";
constexpr wchar_t kDisplayName[] = L"mi-agent (managed identity token agent)";
constexpr wchar_t kDescription[] =
    L"Serves Azure managed-identity tokens to local applications on the legacy VM-extension API "
    L"(http://localhost:50342/oauth2/token), fetched from the Instance Metadata Service.";
constexpr DWORD kStartWaitHintMs = 30000;
// A start that has not reported RUNNING by then is left to the SCM's judgement
// (prefetch with IMDS failing can hold start-up for the whole retry budget).
constexpr std::chrono::minutes kStartPendingLimit(5);
// Beyond the configured drain, this much slack before the SCM may call us hung.
constexpr std::chrono::seconds kStopSlack(30);
constexpr ULONGLONG kMaxLogBytes = 10ull << 20;
constexpr DWORD kUninstallStopTimeoutMs = 60000;

std::string Utf8(const std::wstring& wide) {
  if (wide.empty()) return {};
  int bytes = WideCharToMultiByte(CP_UTF8, 0, wide.data(), static_cast<int>(wide.size()), nullptr, 0, nullptr,
                                  nullptr);
  if (bytes <= 0) return {};
  std::string out(static_cast<size_t>(bytes), '\0');
  WideCharToMultiByte(CP_UTF8, 0, wide.data(), static_cast<int>(wide.size()), out.data(), bytes, nullptr, nullptr);
  return out;
}

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
  std::string out = message.empty() ? "error" : Utf8(message);
  return out + " (" + std::to_string(error) + ")";
}

int Fail(const char* what, DWORD error) {
  std::fprintf(stderr, "mi-agent: %s: %s%s\n", what, ErrorText(error).c_str(),
               error == ERROR_ACCESS_DENIED ? "; run it from an elevated (Administrator) prompt" : "");
  return 1;
}

void Warn(const char* what, DWORD error) {
  std::fprintf(stderr, "mi-agent: warning: %s: %s\n", what, ErrorText(error).c_str());
}

struct ScHandleCloser {
  void operator()(SC_HANDLE h) const { CloseServiceHandle(h); }
};
using ScHandle = std::unique_ptr<std::remove_pointer_t<SC_HANDLE>, ScHandleCloser>;

class WallClock : public Clock {
 public:
  TimePoint Now() const override {
    return std::chrono::time_point_cast<Duration>(std::chrono::system_clock::now());
  }
};

std::wstring Wide(const std::string& utf8) {
  if (utf8.empty()) return {};
  int n = MultiByteToWideChar(CP_UTF8, 0, utf8.data(), static_cast<int>(utf8.size()), nullptr, 0);
  if (n <= 0) return {};
  std::wstring out(static_cast<size_t>(n), L'\0');
  MultiByteToWideChar(CP_UTF8, 0, utf8.data(), static_cast<int>(utf8.size()), out.data(), n);
  return out;
}

// %ProgramData%\mi-agent\mi-agent.log: a service has no console, and Wine has
// no usable event log, so a file it is. Lines come from the ServiceMain and the
// loop threads (never at once, but the mutex makes that not matter).
class LogFile {
 public:
  ~LogFile() {
    if (file_ != nullptr) std::fclose(file_);
  }

  // Creates the directory, moves a file over kMaxLogBytes to mi-agent.log.1,
  // and opens the log for appending. Returns false if it cannot.
  bool Open() {
    std::wstring config = Wide(platform::DefaultConfigPath());
    std::wstring dir = config.substr(0, config.find_last_of(L'\\'));
    CreateDirectoryW(dir.c_str(), nullptr);  // ERROR_ALREADY_EXISTS is fine
    path_ = dir + L"\\mi-agent.log";
    WIN32_FILE_ATTRIBUTE_DATA attributes;
    if (GetFileAttributesExW(path_.c_str(), GetFileExInfoStandard, &attributes)) {
      ULONGLONG size = (static_cast<ULONGLONG>(attributes.nFileSizeHigh) << 32) | attributes.nFileSizeLow;
      if (size > kMaxLogBytes) MoveFileExW(path_.c_str(), (path_ + L".1").c_str(), MOVEFILE_REPLACE_EXISTING);
    }
    file_ = _wfsopen(path_.c_str(), L"ab", _SH_DENYNO);
    if (file_ == nullptr) return false;
    // Best effort: stray stderr output (libuv or C runtime fatal errors) into
    // the same file. The C runtime refuses when stderr was never open (Wine does).
    _wfreopen(path_.c_str(), L"a", stderr);
    return true;
  }

  void Write(std::string_view line) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (file_ == nullptr) return;
    std::fwrite(line.data(), 1, line.size(), file_);
    std::fwrite("\r\n", 1, 2, file_);
    std::fflush(file_);
  }

  const std::wstring& path() const { return path_; }

 private:
  std::mutex mutex_;
  FILE* file_ = nullptr;
  std::wstring path_;
};

// The service of this process. The SCM calls ServiceMain without a context
// pointer, hence the one global instance (set for the dispatcher's lifetime).
class ServiceInstance final : public ServiceNotifier {
 public:
  // A non-empty `startup_error` (a bad configuration) is logged and reported
  // to the SCM as a failed start.
  ServiceInstance(DaemonOptions options, std::string startup_error)
      : options_(std::move(options)), startup_error_(std::move(startup_error)), log_(&clock_) {
    auto drain = std::chrono::duration_cast<std::chrono::milliseconds>(options_.config.limits.drain_timeout);
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
    log_.Info("service: starting mi-agent " MI_VERSION " (log file " + Utf8(log_file_.path()) + ")");
    if (!startup_error_.empty()) {
      log_.Error("service: cannot start: " + startup_error_);
      exit_code_ = 1;
      Report(SERVICE_STOPPED, 0, ERROR_SERVICE_SPECIFIC_ERROR, 1);
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
      log_.Info("service: stopped");
    } else {
      log_.Error("service: stopped with exit code " + std::to_string(exit_code_.load()));
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
      log_.Error(std::string("service: start-up failed: ") + e.what());
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

std::wstring ModulePath() {
  std::wstring path(MAX_PATH, L'\0');
  for (;;) {
    DWORD n = GetModuleFileNameW(nullptr, path.data(), static_cast<DWORD>(path.size()));
    if (n == 0) return L"";
    if (n < path.size()) {
      path.resize(n);
      return path;
    }
    path.resize(path.size() * 2);
  }
}

}  // namespace

int RunWindowsService(DaemonOptions options) {
  ServiceInstance service(std::move(options), "");
  return Dispatch(service);
}

int RunWindowsCommand(const std::string& command, const std::vector<std::string>& args) {
  if (command == "install" || command == "uninstall") {
    if (!args.empty()) {
      std::fprintf(stderr, "mi-agent: %s takes no arguments\n", command.c_str());
      return 2;
    }
    if (command == "uninstall") return UninstallWindowsService();
    std::wstring exe = ModulePath();
    if (exe.empty()) return Fail("cannot find the path of mi-agent.exe", GetLastError());
    return InstallWindowsService(exe);
  }
  // `service`: the same configuration rules as a console run (agent/app/cli.cc).
  CliOptions cli;
  cli.config_path = DefaultConfigPath();
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--config" && i + 1 < args.size()) {
      cli.config_path = args[++i];
      cli.config_path_given = true;
    } else {
      cli.args.push_back(args[i]);
    }
  }
  DaemonOptions options;
  Status s = LoadConfigFile(cli.config_path, /*missing_ok=*/!cli.config_path_given, &options.config);
  std::string error = !s.ok() ? "invalid configuration: " + s.message() : ApplyOverrides(cli.args, &options.config).message();
  if (!error.empty()) {
    ServiceInstance failed(DaemonOptions(), error);
    return Dispatch(failed);
  }
  options.config_path = cli.config_path;
  options.overrides = [overrides = cli.args](Config* c) { ApplyOverrides(overrides, c); };
  return RunWindowsService(std::move(options));
}

int InstallWindowsService(const std::wstring& exe_path) {
  ScHandle scm(OpenSCManagerW(nullptr, nullptr, SC_MANAGER_CONNECT | SC_MANAGER_CREATE_SERVICE));
  if (!scm) return Fail("cannot open the Service Control Manager", GetLastError());
  std::wstring command = L"\"" + exe_path + L"\" service";
  bool updated = false;
  ScHandle service(CreateServiceW(scm.get(), kServiceName, kDisplayName, SERVICE_ALL_ACCESS,
                                  SERVICE_WIN32_OWN_PROCESS, SERVICE_AUTO_START, SERVICE_ERROR_NORMAL,
                                  command.c_str(), nullptr, nullptr, nullptr, nullptr /* LocalSystem */, nullptr));
  if (!service) {
    DWORD error = GetLastError();
    if (error != ERROR_SERVICE_EXISTS) return Fail("cannot create service mi-agent", error);
    // Installing over an existing registration (an upgrade): point it at this exe.
    service.reset(OpenServiceW(scm.get(), kServiceName, SERVICE_ALL_ACCESS));
    if (!service) return Fail("cannot open service mi-agent", GetLastError());
    if (!ChangeServiceConfigW(service.get(), SERVICE_WIN32_OWN_PROCESS, SERVICE_AUTO_START, SERVICE_ERROR_NORMAL,
                              command.c_str(), nullptr, nullptr, nullptr, nullptr, nullptr, kDisplayName)) {
      return Fail("cannot update service mi-agent", GetLastError());
    }
    updated = true;
  }

  SERVICE_DESCRIPTIONW description{const_cast<LPWSTR>(kDescription)};
  if (!ChangeServiceConfig2W(service.get(), SERVICE_CONFIG_DESCRIPTION, &description)) {
    Warn("cannot set the service description", GetLastError());
  }
  // Restart on failure: after 5 s, 10 s, then every 60 s; the count resets after a day.
  SC_ACTION actions[] = {{SC_ACTION_RESTART, 5000}, {SC_ACTION_RESTART, 10000}, {SC_ACTION_RESTART, 60000}};
  SERVICE_FAILURE_ACTIONSW failure{};
  failure.dwResetPeriod = 24 * 60 * 60;
  failure.cActions = static_cast<DWORD>(std::size(actions));
  failure.lpsaActions = actions;
  if (!ChangeServiceConfig2W(service.get(), SERVICE_CONFIG_FAILURE_ACTIONS, &failure)) {
    return Fail("cannot set the service's restart-on-failure actions", GetLastError());
  }
  // Also restart after a start-up failure (STOPPED with a non-zero exit code), not only a crash.
  SERVICE_FAILURE_ACTIONS_FLAG on_exit_code{TRUE};
  if (!ChangeServiceConfig2W(service.get(), SERVICE_CONFIG_FAILURE_ACTIONS_FLAG, &on_exit_code)) {
    Warn("cannot enable failure actions for non-crash failures", GetLastError());
  }
  // Time to drain at system shutdown (PRESHUTDOWN).
  SERVICE_PRESHUTDOWN_INFO preshutdown{30000};
  if (!ChangeServiceConfig2W(service.get(), SERVICE_CONFIG_PRESHUTDOWN_INFO, &preshutdown)) {
    Warn("cannot set the pre-shutdown timeout", GetLastError());
  }
  std::printf("mi-agent: %s service mi-agent (automatic start, restart on failure): %s\n",
              updated ? "updated" : "installed", Utf8(command).c_str());
  return 0;
}

int UninstallWindowsService() {
  ScHandle scm(OpenSCManagerW(nullptr, nullptr, SC_MANAGER_CONNECT));
  if (!scm) return Fail("cannot open the Service Control Manager", GetLastError());
  ScHandle service(OpenServiceW(scm.get(), kServiceName, SERVICE_STOP | SERVICE_QUERY_STATUS | DELETE));
  if (!service) {
    DWORD error = GetLastError();
    if (error == ERROR_SERVICE_DOES_NOT_EXIST) {
      std::printf("mi-agent: service mi-agent is not installed\n");
      return 0;
    }
    return Fail("cannot open service mi-agent", error);
  }
  SERVICE_STATUS status{};
  // The process outlives its STOPPED report a little; the caller (an
  // uninstaller) deletes the exe next, so wait for the process itself too.
  HANDLE process = nullptr;
  SERVICE_STATUS_PROCESS process_status{};
  DWORD needed = 0;
  if (QueryServiceStatusEx(service.get(), SC_STATUS_PROCESS_INFO, reinterpret_cast<BYTE*>(&process_status),
                           sizeof process_status, &needed) &&
      process_status.dwProcessId != 0) {
    process = OpenProcess(SYNCHRONIZE, FALSE, process_status.dwProcessId);
  }
  if (QueryServiceStatus(service.get(), &status) && status.dwCurrentState != SERVICE_STOPPED) {
    if (!ControlService(service.get(), SERVICE_CONTROL_STOP, &status)) {
      DWORD error = GetLastError();
      if (error != ERROR_SERVICE_NOT_ACTIVE && error != ERROR_SERVICE_CANNOT_ACCEPT_CTRL) {
        Warn("cannot stop service mi-agent", error);
      }
    }
    // Wait for the drain to finish, so that the files can be removed after us.
    for (DWORD waited = 0; waited < kUninstallStopTimeoutMs; waited += 250) {
      if (!QueryServiceStatus(service.get(), &status) || status.dwCurrentState == SERVICE_STOPPED) break;
      Sleep(250);
    }
    if (status.dwCurrentState != SERVICE_STOPPED) {
      std::fprintf(stderr, "mi-agent: warning: service mi-agent did not stop within %lu s; deleting it anyway\n",
                   static_cast<unsigned long>(kUninstallStopTimeoutMs / 1000));
    } else if (process != nullptr) {
      WaitForSingleObject(process, 10000);
    }
  }
  if (process != nullptr) CloseHandle(process);
  if (!DeleteService(service.get())) {
    DWORD error = GetLastError();
    if (error != ERROR_SERVICE_MARKED_FOR_DELETE) return Fail("cannot delete service mi-agent", error);
  }
  std::printf("mi-agent: removed service mi-agent\n");
  return 0;
}

}  // namespace mi
