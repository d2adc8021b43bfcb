#include "agent/app/doctor.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <sstream>

#ifndef _WIN32
#include <unistd.h>
#endif
#ifdef __linux__
#include <linux/bpf.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#endif

#include "agent/app/cli_http.h"
#include "agent/app/config.h"
#include "agent/app/status_command.h"
#include "agent/base/text.h"

namespace mi {
namespace doctor {

using ojson = nlohmann::ordered_json;

std::string FormatCheck(const Check& c) {
  static const char* const kWords[] = {"ok  ", "warn", "fail", "skip"};
  std::string line = std::string(kWords[static_cast<int>(c.verdict)]) + " " + c.name + ": " + c.found;
  if (!c.todo.empty()) line += " -> " + c.todo;
  return line;
}

std::string Trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return s.substr(b, e - b);
}

namespace {

bool ParsePort(const std::string& text, uint16_t* port) {
  if (text.empty() || text.size() > 5) return false;
  long v = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  if (v < 1 || v > 65535) return false;
  *port = static_cast<uint16_t>(v);
  return true;
}

}  // namespace

std::vector<uint16_t> ListenStreamPorts(const std::string& unit_text) {
  std::vector<uint16_t> ports;
  std::istringstream in(unit_text);
  bool in_socket = false;
  for (std::string line; std::getline(in, line);) {
    line = Trim(line);
    if (line.empty() || line[0] == '#' || line[0] == ';') continue;
    if (line[0] == '[') {
      in_socket = line == "[Socket]";
      continue;
    }
    if (!in_socket || line.rfind("ListenStream", 0) != 0) continue;
    const size_t eq = line.find('=');
    if (eq == std::string::npos || Trim(line.substr(0, eq)) != "ListenStream") continue;
    const std::string value = Trim(line.substr(eq + 1));
    if (value.empty()) {  // "ListenStream=" (a drop-in's reset): clears the list
      ports.clear();
      continue;
    }
    if (value[0] == '/' || value[0] == '@') continue;  // a path, an abstract socket
    const size_t colon = value.rfind(':');
    uint16_t port = 0;
    if (ParsePort(colon == std::string::npos ? value : value.substr(colon + 1), &port)) ports.push_back(port);
  }
  return ports;
}

bool DiscoveryPort(const std::string& text, uint16_t* port) {
  const ojson doc = ParseJsonBounded(text);
  if (!doc.is_object() || !doc.contains("url") || !doc["url"].is_string()) return false;
  const std::string url = doc["url"].get<std::string>();
  constexpr char kPrefix[] = "http://localhost:";
  constexpr char kSuffix[] = "/oauth2/token";
  const size_t p = sizeof kPrefix - 1, s = sizeof kSuffix - 1;
  if (url.size() <= p + s || url.compare(0, p, kPrefix) != 0 || url.compare(url.size() - s, s, kSuffix) != 0) {
    return false;
  }
  return ParsePort(url.substr(p, url.size() - p - s), port);
}

bool ParseHttpDate(const std::string& text, int64_t* epoch) {
  static const char* const kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  char wday[4] = {0}, mon[4] = {0}, zone[4] = {0};
  int day = 0, year = 0, h = 0, m = 0, s = 0;
  if (std::sscanf(text.c_str(), "%3s, %d %3s %d %d:%d:%d %3s", wday, &day, mon, &year, &h, &m, &s, zone) != 8) {
    return false;
  }
  if (std::strcmp(zone, "GMT") != 0 || day < 1 || day > 31 || year < 1970 || year > 9999 || h > 23 || m > 59 ||
      s > 60 || h < 0 || m < 0 || s < 0) {
    return false;
  }
  int month = -1;
  for (int i = 0; i < 12; ++i) {
    if (std::strcmp(mon, kMonths[i]) == 0) month = i;
  }
  if (month < 0) return false;
  // Days from the civil date (Howard Hinnant's algorithm): no timegm on every platform.
  const int m1 = month + 1;  // 1..12
  const int y = year - (m1 <= 2 ? 1 : 0);
  const int era = y / 400;
  const int yoe = y - era * 400;
  const int mp = (m1 + 9) % 12;
  const int doy = (153 * mp + 2) / 5 + day - 1;
  const int doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  const int64_t days = static_cast<int64_t>(era) * 146097 + doe - 719468;
  *epoch = days * 86400 + h * 3600 + m * 60 + s;
  return true;
}

Check ClockCheck(int64_t skew) {
  const int64_t abs = skew < 0 ? -skew : skew;
  const std::string found = skew == 0 ? std::string("this machine's clock agrees with IMDS's Date")
                                      : "this machine's clock is " + std::to_string(abs) + " s " +
                                            (skew > 0 ? "ahead of" : "behind") + " IMDS's Date";
  if (abs > 300) return {Verdict::kFail, "clock", found, "fix time sync (chronyd or systemd-timesyncd): tokens look expired or not yet valid"};
  if (abs > 60) return {Verdict::kWarn, "clock", found, "check time sync (timedatectl status)"};
  return {Verdict::kOk, "clock", found, ""};
}

Check ProxyCheck(const std::function<const char*(const char*)>& env) {
  std::vector<std::string> set;
  for (const char* name : {"http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"}) {
    const char* v = env(name);
    if (v != nullptr && *v != '\0') set.push_back(name);
  }
  if (set.empty()) return {Verdict::kOk, "proxy", "no proxy variables set", ""};
  std::string names;
  for (const std::string& n : set) names += (names.empty() ? "" : ", ") + n;
  bool exempt = false;
  for (const char* name : {"no_proxy", "NO_PROXY"}) {
    const char* v = env(name);
    if (v == nullptr) continue;
    std::istringstream list(v);
    for (std::string item; std::getline(list, item, ',');) {
      item = Trim(item);
      if (item == "169.254.169.254" || item == "*") exempt = true;
    }
  }
  if (exempt) return {Verdict::kOk, "proxy", names + " set, 169.254.169.254 in no_proxy", ""};
  return {Verdict::kWarn, "proxy", names + " set and no_proxy lacks 169.254.169.254 (mi-agent ignores proxies; "
                                            "SDKs calling IMDS directly would go through the proxy)",
          "add 169.254.169.254 to no_proxy and NO_PROXY"};
}

void RedactSecrets(ojson* doc) {
  if (doc->is_array()) {
    for (ojson& v : *doc) RedactSecrets(&v);
    return;
  }
  if (!doc->is_object()) return;
  for (auto it = doc->begin(); it != doc->end(); ++it) {
    std::string key = it.key();
    for (char& c : key) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (key.find("secret") != std::string::npos && (it->is_string() || it->is_number())) {
      *it = "[redacted]";
    } else {
      RedactSecrets(&*it);
    }
  }
}

}  // namespace doctor

namespace {

using doctor::Check;
using doctor::Verdict;
using ojson = nlohmann::ordered_json;

constexpr const char* kDoctorUsage =
    "Usage: mi-agent doctor [--config PATH] [--health HOST:PORT] [--bundle FILE]\n"
    "  --config PATH       the agent's config file (default /etc/mi-agent/config.json)\n"
    "  --health HOST:PORT  the agent's health listener (default: the config's first)\n"
    "  --bundle FILE       also write a tar.gz for a support case: this output,\n"
    "                      /status, /metrics, the effective config, recent logs and\n"
    "                      versions (never a token or a secret)\n"
    "Exit status: 0 no check failed, 1 a check failed, 2 usage.\n";

constexpr size_t kMaxShownKeys = 20;

#ifdef _WIN32
constexpr const char* kReload = "sc control mi-agent paramchange";
constexpr const char* kIsRunning = "is mi-agent running? (sc query mi-agent; %ProgramData%\\mi-agent\\mi-agent.log)";
constexpr const char* kLogs = "see mi-agent status and %ProgramData%\\mi-agent\\mi-agent.log";
#else
constexpr const char* kReload = "systemctl reload mi-agent";
constexpr const char* kIsRunning = "is mi-agent running? (systemctl status mi-agent; journalctl -u mi-agent)";
constexpr const char* kLogs = "see mi-agent status and journalctl -u mi-agent";
#endif

Check ConfigCheck(const std::string& path, bool given, Config* config) {
  const Status s = LoadConfigFile(path, /*missing_ok=*/!given, config);
  if (!s.ok()) {
    return {Verdict::kFail, "config", "invalid: " + Escaped(s.message()),
            "fix it (mi-agent --check-config " + path + "), then " + kReload};
  }
  // It loaded: the file is there, or it is the missing default (built-in defaults).
  std::error_code ec;
  const std::string found =
      std::filesystem::exists(path, ec) ? path + " valid" : "no " + path + ": built-in defaults";
  return {Verdict::kOk, "config", found + " (token port " + std::to_string(config->port) + ")", ""};
}

Check SocketUnitCheck(const Config& config) {
#ifdef _WIN32
  (void)config;
  return {Verdict::kSkip, "socket", "no systemd on Windows", ""};
#else
  for (const char* path : {"/etc/systemd/system/mi-agent.socket", "/lib/systemd/system/mi-agent.socket",
                           "/usr/lib/systemd/system/mi-agent.socket"}) {
    std::string text;
    if (!doctor::ReadSmallFile(path, &text)) continue;
    // Drop-ins (systemctl edit mi-agent.socket) apply after the unit, by name.
    std::vector<std::string> dropins;
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator("/etc/systemd/system/mi-agent.socket.d", ec)) {
      if (entry.path().extension() == ".conf") dropins.push_back(entry.path().string());
    }
    std::sort(dropins.begin(), dropins.end());
    for (const std::string& d : dropins) {
      std::string more;
      if (doctor::ReadSmallFile(d, &more)) text += "\n" + more;
    }
    const std::vector<uint16_t> ports = doctor::ListenStreamPorts(text);
    std::string list;
    for (uint16_t p : ports) list += (list.empty() ? "" : ",") + std::to_string(p);
    if (std::find(ports.begin(), ports.end(), config.port) != ports.end()) {
      return {Verdict::kOk, "socket", std::string(path) + " listens on the config's port " + std::to_string(config.port), ""};
    }
    return {Verdict::kFail, "socket",
            std::string(path) + " ListenStream ports [" + list + "] do not include the config's port " +
                std::to_string(config.port),
            "make them agree (systemctl edit mi-agent.socket, or \"port\" in the config)"};
  }
  return {Verdict::kSkip, "socket", "no mi-agent.socket unit installed", ""};
#endif
}

Check DiscoveryCheck(const Config& config) {
#ifdef _WIN32
  (void)config;
  return {Verdict::kSkip, "discovery", "no discovery file on Windows", ""};
#else
  constexpr const char* kPath = "/var/lib/waagent/ManagedIdentity-Settings";
  std::string text;
  if (!doctor::ReadSmallFile(kPath, &text, 4096)) {
    return {Verdict::kWarn, "discovery", std::string(kPath) + " absent: old clients reading it will not find the agent",
            "reinstall the package (it writes the file) if such clients run here"};
  }
  uint16_t port = 0;
  if (!doctor::DiscoveryPort(text, &port)) {
    return {Verdict::kWarn, "discovery", std::string(kPath) + " is not mi-agent's (no http://localhost:PORT/oauth2/token url)",
            "check what wrote it (the retired VM extension?)"};
  }
  if (port != config.port) {
    return {Verdict::kFail, "discovery",
            std::string(kPath) + " names port " + std::to_string(port) + ", the config " + std::to_string(config.port),
            "reinstall or reconfigure the package (dpkg-reconfigure mi-agent) to rewrite it"};
  }
  return {Verdict::kOk, "discovery", std::string(kPath) + " names port " + std::to_string(port), ""};
#endif
}

// Any HTTP answer is reachable: without a resource IMDS answers 400.
std::vector<Check> ImdsChecks(const Config& config) {
  const std::string url = config.imds.endpoint + "?api-version=" + Escape(config.imds.api_version);
  const HttpResult r = HttpGet(url, {"Metadata: true"}, 10, 1u << 16);
  if (!r.reached) {
    return {{Verdict::kFail, "imds", "cannot reach " + config.imds.endpoint + ": " + Escaped(r.error),
             "check the route to 169.254.169.254 (an Azure VM? a firewall? run: curl -H Metadata:true " +
                 config.imds.endpoint + ")"}};
  }
  char latency[64];
  std::snprintf(latency, sizeof latency, "HTTP %ld in %.0f ms", r.status, r.seconds * 1000);
  std::vector<Check> out = {{r.seconds > 2 ? Verdict::kWarn : Verdict::kOk, "imds",
                             config.imds.endpoint + " answers (" + latency + ")",
                             r.seconds > 2 ? "IMDS is slow: check the VM's network" : ""}};
  int64_t date = 0;
  if (r.date.empty() || !doctor::ParseHttpDate(r.date, &date)) {
    out.push_back({Verdict::kWarn, "clock", "IMDS's answer has no usable Date header: skew unknown",
                   "check time sync (timedatectl status)"});
  } else {
    out.push_back(doctor::ClockCheck(static_cast<int64_t>(std::time(nullptr)) - date));
  }
  return out;
}

Check FirewallCheck() {
#ifndef __linux__
  return {Verdict::kSkip, "firewall", "systemd's IP firewall is Linux only", ""};
#else
  std::string deny;
  if (!doctor::RunCapture({"systemctl", "show", "mi-agent", "-p", "IPAddressDeny", "--value"}, &deny, 4096, 10)) {
    return {Verdict::kSkip, "firewall", "no systemd here (systemctl show failed)", ""};
  }
  deny = doctor::Trim(deny);
  if (deny.empty()) {
    return {Verdict::kWarn, "firewall", "mi-agent.service sets no IPAddressDeny",
            "keep the packaged unit's IPAddressDeny=any / IPAddressAllow= lines"};
  }
  struct statfs fs {};
  if (::statfs("/sys/fs/cgroup", &fs) != 0 || static_cast<unsigned long>(fs.f_type) != 0x63677270UL) {
    return {Verdict::kWarn, "firewall", "IPAddressDeny is set but /sys/fs/cgroup is not cgroup2: systemd cannot enforce it",
            "boot with the unified cgroup hierarchy (systemd.unified_cgroup_hierarchy=1)"};
  }
  // A trivial cgroup_skb program ("r0 = 1; exit"): the kernel side of IPAddressDeny.
  struct bpf_insn insns[2] = {};
  insns[0].code = BPF_ALU64 | BPF_MOV | BPF_K;
  insns[0].imm = 1;
  insns[1].code = BPF_JMP | BPF_EXIT;
  union bpf_attr attr;
  std::memset(&attr, 0, sizeof attr);
  attr.prog_type = BPF_PROG_TYPE_CGROUP_SKB;
  attr.insns = reinterpret_cast<uintptr_t>(insns);
  attr.insn_cnt = 2;
  attr.license = reinterpret_cast<uintptr_t>("GPL");
  const long fd = ::syscall(__NR_bpf, BPF_PROG_LOAD, &attr, sizeof attr);
  if (fd >= 0) {
    ::close(static_cast<int>(fd));
    return {Verdict::kOk, "firewall", "IPAddressDeny=" + ShortenMiddle(deny, 40) + ", cgroup2, BPF cgroup_skb loads", ""};
  }
  const int err = errno;
  if (err == EPERM || err == EACCES) {
    return {Verdict::kWarn, "firewall",
            "IPAddressDeny is set, cgroup2; BPF cgroup_skb support not confirmed (" + std::string(std::strerror(err)) + ")",
            "run mi-agent doctor as root to confirm"};
  }
  return {Verdict::kFail, "firewall",
          "the kernel refuses BPF cgroup_skb programs (" + std::string(std::strerror(err)) + "): IPAddressDeny is not enforced",
          "use a kernel with CONFIG_CGROUP_BPF, or firewall 169.254.169.254 otherwise"};
#endif
}

std::string DefaultHealth(const Config& config) {
  if (config.health.empty()) return std::string();
  const ListenAddress& a = config.health.front();
  std::string host = a.host == "0.0.0.0" ? "127.0.0.1" : a.host == "::" ? "::1" : a.host;
  if (host.find(':') != std::string::npos) host = "[" + host + "]";
  return host + ":" + std::to_string(a.port);
}

// The agent and every identity's health; *doc = /status (null when none).
std::vector<Check> AgentChecks(const std::string& health, ojson* doc) {
  if (health.empty()) {
    return {{Verdict::kFail, "agent", "the config has no health listener", "pass --health HOST:PORT"}};
  }
  std::string error;
  if (!FetchStatus(health, doc, &error)) {
    *doc = nullptr;
    return {{Verdict::kFail, "agent", Escaped(error), kIsRunning}};
  }
  std::vector<Check> out;
  const std::string version = (*doc).value("version", "?");
  if ((*doc).value("ready", false)) {
    out.push_back({Verdict::kOk, "agent", "mi-agent " + version + " ready on " + health, ""});
  } else {
    const ojson& why = (*doc)["not_ready_reason"];
    out.push_back({Verdict::kFail, "agent",
                   "mi-agent " + version + " on " + health + " is not ready" +
                       (why.is_string() ? " (" + why.get<std::string>() + ")" : std::string()),
                   kLogs});
  }
  size_t ok = 0, shown = 0, hidden = 0;
  static const ojson kNone = ojson::array();
  const ojson& ids = (*doc)["identities"];
  for (const ojson& id : ids.is_array() ? ids : kNone) {
    const std::string who = id.is_object() ? id.value("identity", "?") : "?";
    const ojson& resources = id.is_object() && id.contains("resources") ? id["resources"] : kNone;
    for (const ojson& res : resources.is_array() ? resources : kNone) {
      if (!res.is_object()) continue;
      const std::string state = res.value("state", "?");
      if (state == "ok" || state == "refreshing") {
        ++ok;
        continue;
      }
      if (shown == kMaxShownKeys) {
        ++hidden;
        continue;
      }
      ++shown;
      std::string error;
      const auto le = res.find("last_error");
      if (le != res.end() && le->is_object()) error = " (" + DescribeLastError(*le) + ")";
      out.push_back({state == "degraded" ? Verdict::kWarn : Verdict::kFail, "identity",
                     ShortenMiddle(who, 60) + " " + ShortenMiddle(res.value("resource", "?"), 60) + ": " + state + error,
                     "mi-agent status -o wide; is the identity assigned to this VM?"});
    }
  }
  if (hidden > 0) {
    out.push_back({Verdict::kFail, "identity", std::to_string(hidden) + " more key(s) not ok", "mi-agent status -o wide"});
  }
  out.push_back({Verdict::kOk, "identity", std::to_string(ok) + " key(s) ok", ""});
  return out;
}

}  // namespace

int RunDoctorCommand(const std::vector<std::string>& args) {
  std::string config_path = DefaultConfigPath();
  bool config_given = false;
  std::string health;
  std::string bundle;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    const bool has_value = i + 1 < args.size();
    if (a == "--config" && has_value) {
      config_path = args[++i];
      config_given = true;
    } else if (a == "--health" && has_value) {
      health = args[++i];
    } else if (a == "--bundle" && has_value) {
      bundle = args[++i];
    } else if (a == "--help" || a == "-h") {
      std::printf("%s", kDoctorUsage);
      return 0;
    } else {
      std::fprintf(stderr, "mi-agent doctor: unexpected argument %s\n%s", a.c_str(), kDoctorUsage);
      return 2;
    }
  }

  std::string report;
  bool failed = false;
  auto emit = [&](const Check& c) {
    const std::string line = doctor::FormatCheck(c);
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
    report += line + "\n";
    failed = failed || c.verdict == Verdict::kFail;
  };

  Config config;
  const Check config_check = ConfigCheck(config_path, config_given, &config);
  emit(config_check);
  if (config_check.verdict == Verdict::kFail) config = Config();  // the rest against the defaults
  emit(SocketUnitCheck(config));
  emit(DiscoveryCheck(config));
  for (const Check& c : ImdsChecks(config)) emit(c);
  emit(doctor::ProxyCheck([](const char* name) { return std::getenv(name); }));
  emit(FirewallCheck());
  if (health.empty()) health = DefaultHealth(config);
  ojson doc;
  for (const Check& c : AgentChecks(health, &doc)) emit(c);

  if (!bundle.empty()) {
#ifdef _WIN32
    emit({Verdict::kFail, "bundle", "--bundle is not supported on Windows", ""});
#else
    emit(doctor::WriteBundle(bundle, report, health, config_path, config));
#endif
  }
  return failed ? 1 : 0;
}

}  // namespace mi
