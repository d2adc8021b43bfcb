#include "agent/app/cli_http.h"

#include <curl/curl.h>

#include <memory>

#include "agent/base/ascii.h"
#include "agent/base/text.h"

namespace mi {
namespace {

struct CurlDeleter {
  void operator()(CURL* c) const { curl_easy_cleanup(c); }
};
struct SlistDeleter {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};

size_t Collect(char* data, size_t size, size_t n, void* user) {
  auto* out = static_cast<HttpResult*>(user);
  const size_t len = size * n;
  if (out->body.size() + len > out->max_body) {
    out->too_big = true;
    return 0;  // abort: not an agent answer
  }
  out->body.append(data, len);
  return len;
}

// Keeps the Date header (bounded), for doctor's clock check.
size_t CollectHeader(char* data, size_t size, size_t n, void* user) {
  auto* out = static_cast<HttpResult*>(user);
  const size_t len = size * n;
  constexpr char kDate[] = "date:";
  if (len > 5 && len < 128) {
    bool match = true;
    for (size_t i = 0; i < 5; ++i) match = match && AsciiLower(data[i]) == kDate[i];
    if (match) {
      std::string value(data + 5, len - 5);
      while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.erase(0, 1);
      while (!value.empty() && (value.back() == '\r' || value.back() == '\n' || value.back() == ' ')) value.pop_back();
      out->date = value;
    }
  }
  return len;
}

}  // namespace

HttpResult HttpGet(const std::string& url, const std::vector<std::string>& headers, long timeout_seconds,
                   size_t max_body, const std::string& unix_socket) {
  HttpResult out;
  out.max_body = max_body;
  std::unique_ptr<CURL, CurlDeleter> curl(curl_easy_init());
  if (!curl) {
    out.error = "cannot initialise libcurl";
    return out;
  }
  std::unique_ptr<curl_slist, SlistDeleter> list;
  for (const std::string& h : headers) {
    curl_slist* next = curl_slist_append(list.get(), h.c_str());
    if (next == nullptr) {
      out.error = "out of memory";
      return out;
    }
    list.release();
    list.reset(next);
  }
  char errbuf[CURL_ERROR_SIZE] = {0};
  CURL* c = curl.get();
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  if (!unix_socket.empty()) curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, unix_socket.c_str());
  // The agent is local and IMDS link-local: never through an HTTP proxy,
  // whatever the environment says (the daemon does the same).
  curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
  curl_easy_setopt(c, CURLOPT_PROXY, "");
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 5L);
  curl_easy_setopt(c, CURLOPT_TIMEOUT, timeout_seconds);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, list.get());
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, Collect);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &out);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, CollectHeader);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &out);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
  const CURLcode rc = curl_easy_perform(c);
  if (rc != CURLE_OK) {
    out.error = errbuf[0] != '\0' ? errbuf : curl_easy_strerror(rc);
    if (out.too_big) out.error = "the answer is larger than " + std::to_string(out.max_body >> 20) + " MiB";
    return out;
  }
  out.reached = true;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out.status);
  curl_easy_getinfo(c, CURLINFO_TOTAL_TIME, &out.seconds);
  return out;
}

std::string Escape(const std::string& value) {
  std::unique_ptr<CURL, CurlDeleter> curl(curl_easy_init());
  if (!curl) return value;
  char* e = curl_easy_escape(curl.get(), value.c_str(), static_cast<int>(value.size()));
  if (e == nullptr) return value;
  std::string out(e);
  curl_free(e);
  return out;
}

std::string HealthUrl(const std::string& health, const std::string& path) {
  std::string url =
      health.rfind("http://", 0) == 0 || health.rfind("https://", 0) == 0 ? health : "http://" + health;
  while (!url.empty() && url.back() == '/') url.pop_back();
  if (url.size() >= path.size() && url.compare(url.size() - path.size(), path.size(), path) == 0) return url;
  // An URL naming another route of the listener ("…/status" for /metrics): its base.
  const size_t scheme = url.find("://");
  const size_t slash = url.find('/', scheme == std::string::npos ? 0 : scheme + 3);
  if (slash != std::string::npos) url.resize(slash);
  return url + path;
}

nlohmann::ordered_json ParseJsonBounded(std::string_view text) {
  constexpr int kMaxDepth = 64;
  if (!JsonDepthWithin(text, kMaxDepth)) return nlohmann::ordered_json(nlohmann::ordered_json::value_t::discarded);
  return nlohmann::ordered_json::parse(text, nullptr, /*allow_exceptions=*/false);
}

}  // namespace mi
