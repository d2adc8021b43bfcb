#pragma once
// A ResponseSink that records what a handler answered, for handler tests
// without a socket:
//
//   auto sink = std::make_shared<RecordingSink>();
//   handler.OnRequest(request, proxy::Responder(sink));
//   EXPECT_EQ(sink->status(), 200);
//
// A Responder dropped unanswered records the server's 500, as on a connection.

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "proxy/http/http_message.h"

namespace mi::testing {

class RecordingSink : public proxy::ResponseSink {
 public:
  void Send(proxy::HttpResponse&& response) override { sent.push_back(std::move(response)); }
  void Abort() override { aborted = true; }
  bool connected() const override { return !gone && !aborted; }

  bool answered() const { return !sent.empty(); }
  // The last answer's status (0 if none), body, JSON body and header value ("" if absent).
  int status() const { return sent.empty() ? 0 : sent.back().status; }
  const std::string& body() const { return sent.back().body; }
  nlohmann::json Json() const { return nlohmann::json::parse(sent.back().body, nullptr, false); }
  std::string Header(const std::string& name) const {
    for (const auto& [n, v] : sent.back().headers) {
      if (n == name) return v;
    }
    return "";
  }

  std::vector<proxy::HttpResponse> sent;
  bool aborted = false;
  bool gone = false;  // the client went away: connected() turns false
};

}  // namespace mi::testing
