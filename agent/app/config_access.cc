// The "authorization" and "audit" sections of the configuration (issue #13).

#include <string>
#include <vector>

#include "agent/app/config_reader.h"
#include "agent/token_key.h"

namespace mi::config_internal {
namespace {

// --- "authorization" (issue #13) --------------------------------------------------

// An array of non-empty strings at `path` (each passing `valid` when given),
// appended to *out. Anything else: an error naming the item, `what` it expects.
bool StringList(const json& v, const std::string& path, std::string* error, std::vector<std::string>* out,
                bool (*valid)(const std::string&), const char* what) {
  if (!v.is_array()) {
    if (error->empty()) *error = path + ": expected an array of " + what;
    return false;
  }
  for (size_t i = 0; i < v.size(); ++i) {
    const json& item = v[i];
    if (!item.is_string() || item.get_ref<const std::string&>().empty() ||
        (valid != nullptr && !valid(item.get_ref<const std::string&>()))) {
      if (error->empty()) *error = path + "[" + std::to_string(i) + "]: expected " + what;
      return false;
    }
    out->push_back(item.get<std::string>());
  }
  return true;
}

bool FullPath(const std::string& path) {
#ifdef _WIN32
  // C:\dir\app.exe or \\server\share\app.exe
  return (path.size() > 3 && path[1] == ':' && (path[2] == '\\' || path[2] == '/')) || path.rfind("\\\\", 0) == 0;
#else
  return path.front() == '/';
#endif
}

void ParseCallers(const json& v, const std::string& path, std::string* error, AuthorizationRule* rule) {
  if (v.is_string() && v.get_ref<const std::string&>() == "*") {
    rule->any_caller = true;
    return;
  }
  if (!v.is_object()) {
    if (error->empty()) *error = path + ": expected \"*\" or an object of users, groups, uids, exe, process_names";
    return;
  }
  Reader r(v, path, error);
  if (const json* users = r.Take("users")) {
    StringList(*users, r.Path("users"), error, &rule->users, nullptr, "user names");
  }
  if (const json* groups = r.Take("groups")) {
    StringList(*groups, r.Path("groups"), error, &rule->groups, nullptr, "group names");
  }
  if (const json* uids = r.Take("uids")) {
    if (!uids->is_array()) r.Fail("uids", "expected an array of uids");
    for (size_t i = 0; uids->is_array() && i < uids->size(); ++i) {
      const json& u = (*uids)[i];
      if (!u.is_number_unsigned() || u.get<uint64_t>() > 4294967294ULL) {
        r.Fail("uids[" + std::to_string(i) + "]", "expected a uid from 0 to 4294967294");
        break;
      }
      rule->uids.push_back(static_cast<uint32_t>(u.get<uint64_t>()));
    }
  }
  if (const json* exe = r.Take("exe")) StringList(*exe, r.Path("exe"), error, &rule->exe, FullPath, "full paths");
  if (const json* names = r.Take("process_names")) {
#ifdef _WIN32
    StringList(*names, r.Path("process_names"), error, &rule->process_names, nullptr, "process names");
#else
    // Linux keeps 15 bytes of a process's name (comm): a longer one would never match.
    StringList(*names, r.Path("process_names"), error, &rule->process_names,
               [](const std::string& name) { return name.size() <= 15; }, "process names of at most 15 bytes");
#endif
  }
  r.Finish();
  if (error->empty() && rule->users.empty() && rule->groups.empty() && rule->uids.empty() && rule->exe.empty() &&
      rule->process_names.empty()) {
    *error = path + ": name at least one caller (users, groups, uids, exe, process_names), or \"*\" for everyone";
  }
}

void ParseIdentities(const json& v, const std::string& path, std::string* error, AuthorizationRule* rule) {
  if (v.is_string() && v.get_ref<const std::string&>() == "*") {
    rule->any_identity = true;
    return;
  }
  if (!v.is_array() || v.empty()) {
    if (error->empty()) *error = path + ": expected \"*\" or a non-empty array of identities";
    return;
  }
  for (size_t i = 0; i < v.size() && error->empty(); ++i) {
    const std::string item_path = path + "[" + std::to_string(i) + "]";
    const json& item = v[i];
    if (item.is_string() && (item == "*" || item == "default")) {
      if (item == "*") rule->any_identity = true;
      else rule->identities.push_back({SelectorKind::kDefault, ""});
      continue;
    }
    if (!item.is_object() || item.size() != 1) {
      *error = item_path + ": expected \"default\", \"*\" or one of {\"client_id\": ...}, {\"object_id\": ...}, "
                           "{\"mi_res_id\": ...}, {\"msi_res_id\": ...}";
      return;
    }
    const std::string& field = item.begin().key();
    const json& value = item.begin().value();
    if (field != "client_id" && field != "object_id" && field != "mi_res_id" && field != "msi_res_id") {
      *error = item_path + "." + field + ": unknown key";
      return;
    }
    if (!value.is_string() || value.get_ref<const std::string&>().empty()) {
      *error = item_path + "." + field + ": expected a non-empty string";
      return;
    }
    // The token key's own rule: the same syntax checks, the same lower-casing.
    SelectorFields fields;
    const std::string& id = value.get_ref<const std::string&>();
    if (field == "client_id") fields.client_id = id;
    else if (field == "object_id") fields.object_id = id;
    else fields.mi_res_id = id;
    StatusOr<TokenKey> key = MakeTokenKey(fields, "x");
    if (!key.ok()) {
      *error = item_path + "." + field + ": " +
               (field == "client_id" || field == "object_id" ? "not a GUID" : "not an Azure resource id");
      return;
    }
    rule->identities.push_back({key->kind, key->id});
  }
}

bool ValidResource(const std::string& resource) { return MakeTokenKey(SelectorFields{}, resource).ok(); }

void ParseResources(const json& v, const std::string& path, std::string* error, AuthorizationRule* rule) {
  if (v.is_string() && v.get_ref<const std::string&>() == "*") {
    rule->any_resource = true;
    return;
  }
  if (!v.is_array() || v.empty()) {
    if (error->empty()) *error = path + ": expected \"*\" or a non-empty array of resources";
    return;
  }
  std::vector<std::string> resources;
  if (!StringList(v, path, error, &resources, ValidResource,
                  "a resource (\"*\", or printable, at most 2048 bytes)")) {
    return;
  }
  for (std::string& resource : resources) {
    if (resource == "*") rule->any_resource = true;
    else rule->resources.push_back(std::move(resource));
  }
}

}  // namespace

void ParseAuthorization(Reader& top, std::string* error, AuthorizationOptions* out) {
  const json* section = top.Object("authorization");
  if (section == nullptr) return;
  AuthorizationOptions options = *out;
  Reader r(*section, "authorization", error);
  std::string mode;
  r.String("mode", &mode);
  if (mode == "off") options.mode = AuthorizationMode::kOff;
  else if (mode == "audit") options.mode = AuthorizationMode::kAudit;
  else if (mode == "enforce") options.mode = AuthorizationMode::kEnforce;
  else if (!mode.empty()) r.Fail("mode", "expected off, audit or enforce");
  r.Seconds("cache_seconds", &options.cache_ttl, 0, 86400);
  if (const json* rules = r.Array("rules")) {
    options.rules.clear();
    for (size_t i = 0; i < rules->size() && error->empty(); ++i) {
      const std::string path = "authorization.rules[" + std::to_string(i) + "]";
      const json& item = (*rules)[i];
      if (!item.is_object()) {
        *error = path + ": expected an object";
        break;
      }
      Reader ir(item, path, error);
      AuthorizationRule rule;
      ir.String("name", &rule.name);
      const json* callers = ir.Take("callers");
      const json* identities = ir.Take("identities");
      const json* resources = ir.Take("resources");
      ir.Finish();
      if (!error->empty()) break;
      if (rule.name.empty()) ir.Fail("name", "required");
      else if (callers == nullptr) ir.Fail("callers", "required");
      else if (identities == nullptr) ir.Fail("identities", "required");
      else if (resources == nullptr) ir.Fail("resources", "required");
      if (!error->empty()) break;
      ParseCallers(*callers, ir.Path("callers"), error, &rule);
      if (error->empty()) ParseIdentities(*identities, ir.Path("identities"), error, &rule);
      if (error->empty()) ParseResources(*resources, ir.Path("resources"), error, &rule);
      options.rules.push_back(std::move(rule));
    }
  }
  r.Finish();
  if (error->empty()) *out = std::move(options);
}

// The "audit" block (agent/audit_trail.h).
void ParseAudit(Reader& r, std::string* error, AuditTrail::Options* out) {
  AuditTrail::Options a = *out;
  std::string sink;
  bool given = false;
  r.Section("audit", [&](Reader& s) {
    given = true;
    s.Bool("enabled", &a.enabled);
    s.String("sink", &sink);
    s.String("path", &a.path);
    s.Seconds("summarize_seconds", &a.summarize, 0, 86400);
    s.Integer("max_file_bytes", &a.max_file_bytes, 4096, int64_t(1) << 50);
  });
  if (!given || !error->empty()) return;
  if (sink == "file") {
    a.sink = AuditTrail::SinkKind::kFile;
  } else if (sink == "stderr") {
    a.sink = AuditTrail::SinkKind::kStderr;
  } else if (sink == "journal") {
#ifdef _WIN32
    *error = "audit.sink: journal is not available on Windows; use file";
    return;
#else
    a.sink = AuditTrail::SinkKind::kJournal;
#endif
  } else if (!sink.empty()) {
    *error = "audit.sink: expected journal, file or stderr";
    return;
  }
  if (a.sink == AuditTrail::SinkKind::kFile && a.enabled && a.path.empty()) {
    *error = "audit.path: required for the file sink";
    return;
  }
  if (!a.path.empty() && !FullPath(a.path)) {
    *error = "audit.path: expected an absolute path";
    return;
  }
  *out = std::move(a);
}

}  // namespace mi::config_internal
