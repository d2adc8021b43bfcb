#pragma once
// The configuration's sources: the main file and its drop-ins, the regular
// files "*.json" in the directory "config.d" beside it (/etc/mi-agent/config.d,
// %ProgramData%\mi-agent\config.d), merged in byte order of their names over
// the main file as JSON merge patches (RFC 7386: objects merge key by key,
// null deletes a key, arrays and scalars replace). Hidden files (".name") and
// anything not ending ".json" ("x.json~", "x.json.dpkg-old") are ignored. At
// most kMaxDropIns files, each (and the main file) at most kMaxFileBytes.
// Internal to agent/app/config*.cc; LoadConfigFile (config.h) is the way in.

#include <cstddef>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "agent/base/status.h"

namespace mi::config_merge {

inline constexpr size_t kMaxFileBytes = 16 << 20;  // a prefetch list of thousands of keys fits
inline constexpr size_t kMaxDropIns = 64;

// One file's document (a JSON object) and where it came from.
struct Source {
  std::string path;
  nlohmann::json doc;
  bool drop_in = false;  // merged as a patch; the main file is the base as it is
};

// The whole file, if it can be read and holds at most `max` bytes (never more
// is read); false with *error ("<path>: cannot be read" / "...: larger than
// N bytes") otherwise. Also the commands' reader (doctor).
bool ReadBounded(const std::string& path, size_t max, std::string* text, std::string* error);

// Parses one file's text: UTF-8, JSON (comments allowed), an object at the top.
Status ParseText(const std::string& text, nlohmann::json* out);

// RFC 7386: applies `patch` to *target.
void MergePatch(nlohmann::json* target, const nlohmann::json& patch);

// "<dir of config_path>/config.d" (the path's own separator; "config.d" for a
// bare file name).
std::string DropInDirectory(const std::string& config_path);

// The drop-ins among a directory's regular files, in merge order.
std::vector<std::string> DropInNames(std::vector<std::string> names);

// Reads the main file (nothing when it is absent and `missing_ok`), then the
// drop-ins. An error names the file (or the directory).
Status ReadSources(const std::string& config_path, bool missing_ok, std::vector<Source>* out);

// The sources merged in order (an empty object for none).
nlohmann::json Merge(const std::vector<Source>& sources);

// The file to name for an error about `key` ("cache.margin_seconds",
// "prefetch[0].resource"): the last source that sets it (arrays replace, so
// the last that sets the array), else the first source.
const std::string& Blame(const std::vector<Source>& sources, const std::string& key);

}  // namespace mi::config_merge
