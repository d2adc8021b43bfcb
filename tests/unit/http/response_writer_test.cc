#include "proxy/http/response_writer.h"

#include <gtest/gtest.h>

#include <string>

#include <nlohmann/json.hpp>

namespace mi::proxy {
namespace {

std::string NlohmannBody(std::string_view error, std::string_view description) {
  nlohmann::json j = nlohmann::json::object();
  j["error"] = std::string(error);
  j["error_description"] = std::string(description);
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

TEST(ProtocolErrorBodyTest, BytesAreThoseOfTheJsonLibrary) {
  const std::string controls = std::string("a\x01\x1f\x7f", 4) + "\b\f\n\r\t";
  for (const std::string& d : {std::string("request headers too large"), std::string("say \"hi\" \\ back"), controls,
                               std::string("malformed request: Invalid header value char"), std::string()}) {
    EXPECT_EQ(ProtocolErrorBody("bad_request", d), NlohmannBody("bad_request", d)) << d;
  }
  EXPECT_EQ(ProtocolErrorBody("bad_request", "say \"hi\""),
            R"({"error":"bad_request","error_description":"say \"hi\""})");
}

TEST(SerializeTest, StatusLineFramingAndSanitisedHeaders) {
  HttpResponse r;
  r.body = "{}";
  r.headers = {{"Retry-After", "1"}, {"Content-Length", "9"}, {"X-Bad", "a\r\nb"}, {"Bad Name", "v"}};
  std::string out;
  Serialize(&out, r, /*head_request=*/false, /*close=*/true, /*keep_alive_header=*/false);
  EXPECT_EQ(out,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nRetry-After: 1\r\n"
            "Connection: close\r\n\r\n{}");
}

TEST(SerializeTest, HeadAndBodylessStatuses) {
  HttpResponse r;
  r.status = 404;
  r.body = "nope";
  std::string out;
  Serialize(&out, r, /*head_request=*/true, false, /*keep_alive_header=*/true);
  EXPECT_EQ(out, "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 4\r\n"
                 "Connection: keep-alive\r\n\r\n");
  r.status = 204;
  out.clear();
  Serialize(&out, r, false, false, false);
  EXPECT_EQ(out, "HTTP/1.1 204 No Content\r\n\r\n");
  r.status = 42;
  out.clear();
  Serialize(&out, r, false, false, false);
  EXPECT_EQ(out.rfind("HTTP/1.1 500 Internal Server Error\r\n", 0), 0u);
}

}  // namespace
}  // namespace mi::proxy
