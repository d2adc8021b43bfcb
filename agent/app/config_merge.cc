#include "agent/app/config_merge.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <system_error>

#include "agent/base/text.h"

namespace mi::config_merge {
namespace {

using nlohmann::json;

Status ReadSource(const std::string& path, bool drop_in, std::vector<Source>* out) {
  std::string text, error;
  if (!ReadBounded(path, kMaxFileBytes, &text, &error)) return Status::Error(error);
  Source source{path, json(), drop_in};
  Status s = ParseText(text, &source.doc);
  if (!s.ok()) return Status::Error(path + ": " + s.message());
  out->push_back(std::move(source));
  return Status::Ok();
}

// The directory's drop-in names (none when it does not exist).
Status ListDropIns(const std::string& dir, std::vector<std::string>* names) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status st = fs::status(dir, ec);
  if (st.type() == fs::file_type::not_found) return Status::Ok();
  if (ec || !fs::is_directory(st)) return Status::Error(dir + ": cannot be read (not a directory)");
  std::vector<std::string> all;
  try {  // path::string() may throw (a Windows name with no narrow form)
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
      std::error_code type_ec;
      if (!it->is_regular_file(type_ec)) continue;  // follows a symlink; directories, sockets, ... skipped
      all.push_back(it->path().filename().string());
    }
  } catch (const std::exception&) {
    return Status::Error(dir + ": cannot be read (a file name that is not valid here)");
  }
  if (ec) return Status::Error(dir + ": cannot be read");
  *names = DropInNames(std::move(all));
  if (names->size() > kMaxDropIns) {
    return Status::Error(dir + ": more than " + std::to_string(kMaxDropIns) + " drop-in files");
  }
  return Status::Ok();
}

// Does `doc` set `key`? Arrays are whole values: "prefetch[0].resource" is set
// where "prefetch" is.
bool Sets(const json& doc, const std::string& key) {
  const json* at = &doc;
  size_t start = 0;
  while (true) {
    const size_t dot = key.find('.', start);
    std::string segment = key.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    const size_t bracket = segment.find('[');
    if (bracket != std::string::npos) segment.resize(bracket);
    if (!at->is_object()) return false;
    auto it = at->find(segment);
    if (it == at->end()) return false;
    if (bracket != std::string::npos || dot == std::string::npos) return true;
    at = &*it;
    start = dot + 1;
  }
}

}  // namespace

bool ReadBounded(const std::string& path, size_t max, std::string* text, std::string* error) {
  text->clear();
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    *error = path + ": cannot be read";
    return false;
  }
  char chunk[16384];
  while (text->size() <= max && in.read(chunk, sizeof chunk).gcount() > 0) {
    text->append(chunk, static_cast<size_t>(in.gcount()));
  }
  if (text->size() > max) {
    text->clear();
    *error = path + ": larger than " + std::to_string(max) + " bytes";
    return false;
  }
  if (in.bad()) {
    *error = path + ": cannot be read";
    return false;
  }
  return true;
}

Status ParseText(const std::string& text, json* out) {
  // The parser refuses bad UTF-8 too, but only as "not valid JSON".
  if (size_t bad = InvalidUtf8Offset(text); bad != std::string::npos) {
    return Status::Error("not valid UTF-8 (byte " + std::to_string(bad) + ")");
  }
  // A configuration nests a few levels; a deeper tree is refused before
  // nlohmann builds it (copying and merging it would recurse over every level).
  constexpr int kMaxDepth = 32;
  if (!JsonDepthWithin(text, kMaxDepth)) {
    return Status::Error("nested deeper than " + std::to_string(kMaxDepth) + " levels");
  }
  json doc = json::parse(text, nullptr, /*allow_exceptions=*/false, /*ignore_comments=*/true);
  if (doc.is_discarded()) return Status::Error("not valid JSON");
  if (!doc.is_object()) return Status::Error("the top level must be a JSON object");
  *out = std::move(doc);
  return Status::Ok();
}

void MergePatch(json* target, const json& patch) {
  if (!patch.is_object()) {
    *target = patch;
    return;
  }
  if (!target->is_object()) *target = json::object();
  for (auto it = patch.begin(); it != patch.end(); ++it) {
    if (it.value().is_null()) {
      target->erase(it.key());
    } else {
      MergePatch(&(*target)[it.key()], it.value());
    }
  }
}

std::string DropInDirectory(const std::string& config_path) {
  const size_t sep = config_path.find_last_of("/\\");
  if (sep == std::string::npos) return "config.d";
  return config_path.substr(0, sep + 1) + "config.d";
}

std::vector<std::string> DropInNames(std::vector<std::string> names) {
  constexpr std::string_view kSuffix = ".json";
  names.erase(std::remove_if(names.begin(), names.end(),
                             [&](const std::string& n) {
                               return n.empty() || n.front() == '.' || n.size() <= kSuffix.size() ||
                                      n.compare(n.size() - kSuffix.size(), kSuffix.size(), kSuffix) != 0;
                             }),
              names.end());
  std::sort(names.begin(), names.end());  // std::string compares bytes as unsigned: byte order
  return names;
}

Status ReadSources(const std::string& config_path, bool missing_ok, std::vector<Source>* out) {
  std::vector<Source> sources;
  std::error_code ec;
  if (!(missing_ok && !std::filesystem::exists(config_path, ec) && !ec)) {
    Status s = ReadSource(config_path, /*drop_in=*/false, &sources);
    if (!s.ok()) return s;
  }
  const std::string dir = DropInDirectory(config_path);
  std::vector<std::string> names;
  Status s = ListDropIns(dir, &names);
  if (!s.ok()) return s;
  const char sep = dir.size() > 8 ? dir[dir.size() - 9] : '/';  // the separator before "config.d"
  for (const std::string& name : names) {
    s = ReadSource(dir + sep + name, /*drop_in=*/true, &sources);
    if (!s.ok()) return s;
  }
  *out = std::move(sources);
  return Status::Ok();
}

json Merge(const std::vector<Source>& sources) {
  json doc = json::object();
  for (const Source& s : sources) {
    // The main file's nulls stay (and are refused as the wrong type, as ever).
    if (s.drop_in) MergePatch(&doc, s.doc);
    else doc = s.doc;
  }
  return doc;
}

const std::string& Blame(const std::vector<Source>& sources, const std::string& key) {
  static const std::string kNone;
  if (sources.empty()) return kNone;
  for (size_t i = sources.size(); i-- > 1;) {
    if (Sets(sources[i].doc, key)) return sources[i].path;
  }
  return sources.front().path;
}

}  // namespace mi::config_merge
