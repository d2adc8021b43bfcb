#pragma once
// `mi-agent doctor`: checks an installation and says what to do
// (agent/app/doctor.cc).
//
//   mi-agent doctor [--config PATH] [--health HOST:PORT] [--bundle FILE]
//     One line per check: "ok  ", "warn", "fail" or "skip", what was found and,
//     when it is not ok, what to do. The checks: the config (the daemon's
//     loader), the listener port against mi-agent.socket's ListenStream, the
//     discovery file, IMDS reachable (its latency) and the clock against its
//     Date header, proxy variables, systemd's IP firewall (IPAddressDeny needs
//     cgroup2 and BPF cgroup_skb), the agent answering on its health listener
//     and ready, and every identity's health from /status.
//     --bundle FILE: a tar.gz for a support case (doctor's output, /status,
//     /metrics, the effective config, recent logs, versions). Never a token or
//     a secret. Exit 0: no check failed; 1: one did; 2: usage.

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "agent/app/config.h"

namespace mi {

int RunDoctorCommand(const std::vector<std::string>& args);

// The parsers behind the checks (unit-tested).
namespace doctor {

enum class Verdict { kOk, kWarn, kFail, kSkip };

struct Check {
  Verdict verdict = Verdict::kOk;
  std::string name;   // "config", "imds", ...
  std::string found;  // what was found
  std::string todo;   // what to do (empty when ok)
};

// "ok  : config: ... -> todo".
std::string FormatCheck(const Check& c);

// The TCP ports of the ListenStream= lines of a systemd .socket unit
// ("50342", "127.0.0.1:50342", "[::1]:50342"; paths are not ports).
std::vector<uint16_t> ListenStreamPorts(const std::string& unit_text);

// The port of the discovery file's {"url":"http://localhost:PORT/oauth2/token"};
// false when it is not that shape.
bool DiscoveryPort(const std::string& text, uint16_t* port);

// An HTTP Date (IMF-fixdate, "Tue, 01 Dec 2026 19:49:13 GMT") as epoch seconds.
bool ParseHttpDate(const std::string& text, int64_t* epoch);

// The clock check: |skew| over 300 s fails, over 60 s warns.
Check ClockCheck(int64_t skew_seconds);

// The proxy check from the environment (`getenv`-like: nullptr = unset).
Check ProxyCheck(const std::function<const char*(const char*)>& env);

// Every string under a key containing "secret" (any case) replaced by "[redacted]".
void RedactSecrets(nlohmann::ordered_json* doc);

// Anything shaped like a JWT ("eyJ" and 13+ base64url characters or dots)
// replaced by "[redacted]": the bundle's last line of defence.
std::string ScrubJwts(std::string text);

// The helpers the checks share (agent/app/doctor_bundle.cc).
std::string Trim(const std::string& s);
// The file when it can be read and holds at most `max` bytes (never reads
// more: config_merge::ReadBounded); else false.
bool ReadSmallFile(const std::string& path, std::string* out, size_t max = 1u << 20);
#ifndef _WIN32
// Runs argv (searched in PATH) with stdin from /dev/null, its stdout and
// stderr into *out (at most max_bytes), killed after timeout_seconds. False
// when it could not start, was killed or exited non-zero.
bool RunCapture(const std::vector<std::string>& argv, std::string* out, size_t max_bytes, int timeout_seconds);
// The --bundle tar.gz: `report` (doctor's lines), /status and /metrics from
// `health` ("" = none), the effective config, journalctl's last 500 lines of
// mi-agent and the versions; every file through ScrubJwts.
Check WriteBundle(const std::string& file, const std::string& report, const std::string& health,
                  const std::string& config_path, const Config& config);
#endif

}  // namespace doctor
}  // namespace mi
