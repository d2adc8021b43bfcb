#include "agent/app/status_command.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <type_traits>

#ifndef _WIN32
#include <sys/ioctl.h>
#include <unistd.h>
#endif

#include "agent/app/cli_http.h"
#include "agent/token.h"  // CleanDescription

namespace mi {
namespace {

using ojson = nlohmann::ordered_json;

// A full /status of 4,096 keys with 2 KB resources is about 10 MB.
constexpr size_t kMaxStatusBytes = 256u << 20;
constexpr size_t kIndent = 2;
constexpr size_t kGap = 2;
constexpr const char* kEllipsis = "\xE2\x80\xA6";

constexpr const char* kStatusUsage =
    "Usage: mi-agent status [--health HOST:PORT] [--json] [-o wide]\n"
    "  --health HOST:PORT  the agent's health listener (default 127.0.0.1:50343;\n"
    "                      an http:// URL is accepted too)\n"
    "  --json              print the agent's /status JSON as it is\n"
    "  -o wide             every identity, resource and error whole (by default\n"
    "                      lines fit $COLUMNS or the terminal, else 80 columns)\n"
    "Exit status: 0 all identities ok, 1 any degraded or failing, 2 agent unreachable.\n";

template <typename T>
T Field(const ojson& j, const char* name, T fallback) {
  if (!j.is_object()) return fallback;
  auto it = j.find(name);
  if (it == j.end() || it->is_null()) return fallback;
  if constexpr (std::is_same_v<T, std::string>) {
    return it->is_string() ? it->get<std::string>() : fallback;
  } else if constexpr (std::is_same_v<T, bool>) {
    return it->is_boolean() ? it->get<bool>() : fallback;
  } else {
    return it->is_number() ? it->get<T>() : fallback;
  }
}

const ojson kNoObject = ojson::object();
const ojson kNoArray = ojson::array();

// j[name] when it has the type of `fallback` (kNoObject, kNoArray), else that.
const ojson& Member(const ojson& j, const char* name, const ojson& fallback) {
  if (!j.is_object()) return fallback;
  auto it = j.find(name);
  return it != j.end() && it->type() == fallback.type() ? *it : fallback;
}

bool Continuation(char c) { return (static_cast<unsigned char>(c) & 0xC0) == 0x80; }

// The byte offset of code point `n` (text.size() past the end).
size_t OffsetOf(const std::string& text, size_t n) {
  size_t i = 0;
  for (; i < text.size(); ++i) {
    if (!Continuation(text[i]) && n-- == 0) return i;
  }
  return i;
}

std::string Fit(const std::string& text, size_t width, bool wide) { return wide ? text : ShortenMiddle(text, width); }

// Prose (a header line, an error's description): cut at the end, where a
// sentence loses least.
std::string FitEnd(const std::string& text, size_t width, bool wide) {
  if (wide || Columns(text) <= width) return text;
  return width == 0 ? std::string() : text.substr(0, OffsetOf(text, width - 1)) + kEllipsis;
}

std::string Pad(const std::string& text, size_t width) {
  const size_t cols = Columns(text);
  return cols >= width ? text : text + std::string(width - cols, ' ');
}

// A last_error object of /status as "<status> <error>".
std::string ErrorCode(const ojson& le) {
  const int status = Field<int>(le, "status", 0);
  return (status != 0 ? std::to_string(status) + " " : std::string()) + Field<std::string>(le, "error", "?");
}

// Its description (IMDS's error_description, or the OS's reason), cleaned
// again: it is IMDS's text. "" when none.
std::string ErrorDescription(const ojson& le) { return CleanDescription(Field<std::string>(le, "description", "")); }

}  // namespace

std::string DescribeLastError(const ojson& last_error) {
  const std::string description = ErrorDescription(last_error);
  return ErrorCode(last_error) + (description.empty() ? "" : ": " + description);
}

namespace {

struct Row {
  std::string resource, state, expires, error;
  std::string detail;  // the last error's description: a line of its own under the row
};

// A failing key's last error for the LAST ERROR column ("400 invalid_request
// (3x)": 3 in a row, or "-") and its description.
void SetLastError(const ojson& res, Row* row) {
  const int failures = Field<int>(res, "consecutive_failures", 0);
  const ojson& le = Member(res, "last_error", kNoObject);
  if (failures <= 0 || le.empty()) {
    row->error = "-";
    return;
  }
  row->error = ErrorCode(le);
  if (failures > 1) row->error += " (" + std::to_string(failures) + "x)";
  row->detail = ErrorDescription(le);
}

struct Group {
  std::string identity;
  std::vector<Row> rows;
};

std::string HeaderLines(const ojson& doc) {
  std::string out = "mi-agent " + Field<std::string>(doc, "version", "?");
  if (Field<bool>(doc, "ready", false)) {
    out += ", ready";
  } else {
    const std::string why = Field<std::string>(doc, "not_ready_reason", "");
    out += ", NOT READY" + (why.empty() ? std::string() : " (" + why + ")");
  }
  out += ", up " + FormatDuration(Field<int64_t>(doc, "uptime_seconds", 0)) + "\n";

  const ojson& up = Member(doc, "upstream", kNoObject);
  std::string imds = "IMDS " + Field<std::string>(up, "state", "unknown");
  const ojson& le = Member(up, "last_error", kNoObject);
  // The error first: the width cuts the latency before it.
  if (Field<std::string>(up, "state", "") == "failing" && !le.empty()) {
    imds += " (" + DescribeLastError(le) + ")";
  }
  const ojson& lat = Member(up, "latency_ms", kNoObject);
  if (Field<int64_t>(lat, "samples", 0) > 0) {
    char buf[96];
    std::snprintf(buf, sizeof buf, ", latency p50 %.0f ms p99 %.0f ms", Field<double>(lat, "p50", 0),
                  Field<double>(lat, "p99", 0));
    imds += buf;
  }
  const std::string throttled = Field<std::string>(up, "throttled_until", "");
  if (!throttled.empty()) imds += ", throttled until " + throttled;
  out += imds + "\n";

  // "reload" comes with the config reload work; "-" from an agent without it.
  std::string reload = "-";
  const ojson& r = Member(doc, "reload", kNoObject);
  const std::string result = Field<std::string>(r, "result", "");
  if (result == "none") {
    reload = "none";
  } else if (!result.empty()) {
    reload = result;
    const std::string time = Field<std::string>(r, "time", "");
    if (!time.empty()) reload += " at " + time;
    const std::string error = Field<std::string>(r, "error", "");
    if (!error.empty()) reload += ": " + error;
  }
  out += "config " + Field<std::string>(doc, "config_digest", "?") + ", last reload " + reload + "\n";
  return out;
}

}  // namespace

size_t Columns(const std::string& text) {
  size_t n = 0;
  for (char c : text) n += Continuation(c) ? 0 : 1;
  return n;
}

std::string ShortenMiddle(const std::string& text, size_t width) {
  const size_t cols = Columns(text);
  if (cols <= width) return text;
  if (width == 0) return std::string();
  if (width == 1) return kEllipsis;
  const size_t keep = width - 1;
  const size_t head = keep * 2 / 5;
  const size_t tail = keep - head;
  return text.substr(0, OffsetOf(text, head)) + kEllipsis + text.substr(OffsetOf(text, cols - tail));
}

size_t OutputWidth() {
  size_t width = 80;
  const char* env = std::getenv("COLUMNS");
  char* end = nullptr;
  const long columns = env != nullptr ? std::strtol(env, &end, 10) : 0;
  if (env != nullptr && *env != '\0' && *end == '\0' && columns > 0 && columns <= 100000) {
    width = static_cast<size_t>(columns);
  } else {
#ifndef _WIN32
    struct winsize ws {};
    if (::isatty(STDOUT_FILENO) == 1 && ::ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) {
      width = ws.ws_col;
    }
#endif
  }
  return std::max<size_t>(width, 40);
}

std::string FormatDuration(int64_t s) {
  char buf[32];
  if (s >= 86400) std::snprintf(buf, sizeof buf, "%lldd%02lldh", (long long)(s / 86400), (long long)(s % 86400 / 3600));
  else if (s >= 3600) std::snprintf(buf, sizeof buf, "%lldh%02lldm", (long long)(s / 3600), (long long)(s % 3600 / 60));
  else if (s >= 60) std::snprintf(buf, sizeof buf, "%lldm%02llds", (long long)(s / 60), (long long)(s % 60));
  else std::snprintf(buf, sizeof buf, "%llds", (long long)s);
  return buf;
}

bool StatusHealthy(const ojson& doc) {
  for (const ojson& id : Member(doc, "identities", kNoArray)) {
    for (const ojson& res : Member(id, "resources", kNoArray)) {
      const std::string state = Field<std::string>(res, "state", "?");
      const bool valid = Field<int64_t>(res, "expires_in_seconds", -1) > 0;
      if (!(state == "ok" || (state == "refreshing" && valid))) return false;
    }
  }
  return true;
}

std::string FormatStatus(const ojson& doc, size_t width, bool wide) {
  std::vector<Group> groups;
  for (const ojson& id : Member(doc, "identities", kNoArray)) {
    if (!id.is_object()) continue;
    Group g{Field<std::string>(id, "identity", "?"), {}};
    for (const ojson& res : Member(id, "resources", kNoArray)) {
      if (!res.is_object()) continue;
      const auto expires_in = Field<int64_t>(res, "expires_in_seconds", -1);
      Row row{Field<std::string>(res, "resource", "?"), Field<std::string>(res, "state", "?"),
              expires_in < 0 ? "-" : expires_in == 0 ? "expired" : FormatDuration(expires_in), "", ""};
      SetLastError(res, &row);
      g.rows.push_back(std::move(row));
    }
    groups.push_back(std::move(g));
  }

  std::string out;
  {
    const std::string header = HeaderLines(doc);
    size_t start = 0;
    for (size_t nl; (nl = header.find('\n', start)) != std::string::npos; start = nl + 1) {
      out += FitEnd(header.substr(start, nl - start), width, wide) + "\n";
    }
  }
  if (groups.empty()) return out + "no identities in the cache yet\n";

  // Column widths: STATE and EXPIRES IN as wide as their values; the resource
  // (under the identity headings) and the last error share what is left.
  const Row head{"IDENTITY / RESOURCE", "STATE", "EXPIRES IN", "LAST ERROR", ""};
  size_t ws = Columns(head.state), we = Columns(head.expires), wr = 0, werr = Columns(head.error);
  for (const Group& g : groups) {
    for (const Row& r : g.rows) {
      ws = std::max(ws, Columns(r.state));
      we = std::max(we, Columns(r.expires));
      wr = std::max(wr, Columns(r.resource));
      werr = std::max(werr, Columns(r.error));
    }
  }
  wr = std::max(wr, Columns(head.resource) - kIndent);
  if (!wide) {
    ws = std::min<size_t>(ws, 12);
    we = std::min<size_t>(we, 12);
    const size_t fixed = kIndent + ws + we + 3 * kGap;
    const size_t avail = width > fixed + 10 ? width - fixed : 10;
    if (wr + werr > avail) {
      size_t e = std::min(werr, std::max<size_t>(avail / 3, 10));
      size_t r = avail - e;
      const size_t heading = Columns(head.resource) - kIndent;
      if (r < heading && avail >= heading + 10) {
        r = heading;
        e = avail - r;
      }
      if (r > wr) {
        e += r - wr;
        r = wr;
      }
      wr = r;
      werr = e;
    }
  }
  auto line = [&](const std::string& indent, const Row& r, size_t first) {
    std::string l = indent + Pad(Fit(r.resource, first, wide), first) + std::string(kGap, ' ') +
                    Pad(Fit(r.state, ws, wide), ws) + std::string(kGap, ' ') + Pad(Fit(r.expires, we, wide), we) +
                    std::string(kGap, ' ') + Fit(r.error, werr, wide);
    while (!l.empty() && l.back() == ' ') l.pop_back();
    return l + "\n";
  };
  out += line("", head, kIndent + wr);
  for (const Group& g : groups) {
    out += Fit(g.identity, width, wide) + "\n";
    for (const Row& r : g.rows) {
      out += line(std::string(kIndent, ' '), r, wr);
      if (!r.detail.empty()) out += FitEnd(std::string(2 * kIndent, ' ') + r.detail, width, wide) + "\n";
    }
  }
  return out;
}

bool FetchStatus(const std::string& health, ojson* doc, std::string* error) {
  // Every key: the default view is capped and shortens long resources.
  const std::string url = HealthUrl(health, "/status") + "?entries=all";
  // One full view at a time per agent: another one under way is a 503, soon over.
  HttpResult r;
  for (int attempt = 0;; ++attempt) {
    r = HttpGet(url, {}, 60, kMaxStatusBytes);
    if (!r.reached || r.status != 503 || attempt == 9) break;
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }
  if (!r.reached) {
    *error = "cannot reach the agent's health listener at " + url + ": " + r.error + "; " + kServiceHint;
    return false;
  }
  *doc = ParseJsonBounded(r.body);
  if (r.status != 200 || doc->is_discarded() || !doc->is_object()) {
    *error = url + " answered HTTP " + std::to_string(r.status) + ", not a status document";
    return false;
  }
  return true;
}

int RunStatusCommand(const std::vector<std::string>& args) {
  std::string health = "127.0.0.1:50343";
  bool json = false;
  bool wide = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--json") {
      json = true;
    } else if (a == "--health" && i + 1 < args.size()) {
      health = args[++i];
    } else if ((a == "-o" || a == "--output") && i + 1 < args.size() && args[i + 1] == "wide") {
      wide = true;
      ++i;
    } else if (a == "--help" || a == "-h") {
      std::printf("%s", kStatusUsage);
      return 0;
    } else {
      std::fprintf(stderr, "mi-agent status: unexpected argument %s\n%s", a.c_str(), kStatusUsage);
      return 2;
    }
  }
  ojson doc;
  std::string error;
  if (!FetchStatus(health, &doc, &error)) {
    std::fprintf(stderr, "mi-agent status: %s\n", error.c_str());
    return 2;
  }
  const bool healthy = StatusHealthy(doc);
  if (json) {
    std::printf("%s\n", doc.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  } else {
    std::fputs(FormatStatus(doc, OutputWidth(), wide).c_str(), stdout);
  }
  return healthy ? 0 : 1;
}

}  // namespace mi
