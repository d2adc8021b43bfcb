// The request side of the protocol on bytes: framing, limits, errors. No
// sockets, no loop (the connection's use of these events is in
// http_server_test.cc).
#include "proxy/http/request_parser.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace mi::proxy {
namespace {

using Event = RequestParser::Event;

RequestParser::Limits Limits(size_t header_bytes = 8192, size_t body_bytes = 8192) {
  RequestParser::Limits l;
  l.max_header_bytes = header_bytes;
  l.max_body_bytes = body_bytes;
  return l;
}

// Feeds `pieces` in order, collecting every request and the events seen.
struct Feeder {
  explicit Feeder(const RequestParser::Limits& limits = Limits()) : parser(limits) {}

  void Feed(std::string_view bytes) {
    while (!bytes.empty() && !failed) {
      Event event;
      size_t used = parser.Feed(bytes, &event);
      ASSERT_LE(used, bytes.size());
      bytes.remove_prefix(used);
      events.push_back(event);
      if (event == Event::kRequest) requests.push_back(parser.request());
      if (event == Event::kError) failed = true;
      if (event == Event::kNeedMore) {
        ASSERT_TRUE(bytes.empty());
      }
    }
  }
  void FeedAll(const std::vector<std::string>& pieces) {
    for (const auto& p : pieces) Feed(p);
  }

  RequestParser parser;
  std::vector<Event> events;
  std::vector<HttpRequest> requests;
  bool failed = false;
};

TEST(RequestParserTest, SimpleGetHeadersAreLowerCasedAndTrimmed) {
  Feeder r;
  r.Feed("GET /oauth2/token?resource=x HTTP/1.1\r\nHost: localhost\r\nMetadata:  true \t\r\n"
         "X-Dup: a\r\nx-DUP: b\r\nX-Empty:\r\n\r\n");
  ASSERT_EQ(r.requests.size(), 1u);
  const HttpRequest& req = r.requests[0];
  EXPECT_EQ(req.method, "GET");
  EXPECT_EQ(req.target, "/oauth2/token?resource=x");
  EXPECT_EQ(req.http_minor, 1);
  EXPECT_TRUE(req.keep_alive);
  std::vector<std::pair<std::string, std::string>> want = {
      {"host", "localhost"}, {"metadata", "true"}, {"x-dup", "a"}, {"x-dup", "b"}, {"x-empty", ""}};
  EXPECT_EQ(req.headers, want);
  EXPECT_FALSE(r.parser.in_request());
}

TEST(RequestParserTest, StopsAfterEachRequestOfAPipeline) {
  RequestParser parser(Limits());
  const std::string a = "GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
  const std::string b = "GET /b HTTP/1.0\r\n\r\n";
  const std::string both = a + b;
  Event event;
  size_t used = parser.Feed(both, &event);
  EXPECT_EQ(event, Event::kRequest);
  EXPECT_EQ(used, a.size());
  EXPECT_EQ(parser.request().target, "/a");
  EXPECT_EQ(parser.request().http_minor, 1);
  used = parser.Feed(std::string_view(both).substr(used), &event);
  EXPECT_EQ(event, Event::kRequest);
  EXPECT_EQ(used, b.size());
  EXPECT_EQ(parser.request().target, "/b");
  EXPECT_EQ(parser.request().http_minor, 0);
  EXPECT_FALSE(parser.request().keep_alive) << "HTTP/1.0 without keep-alive";
}

TEST(RequestParserTest, ConnectionCloseIsNotKeepAlive) {
  Feeder r;
  r.Feed("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  ASSERT_EQ(r.requests.size(), 1u);
  EXPECT_FALSE(r.requests[0].keep_alive);
}

TEST(RequestParserTest, ContentLengthBody) {
  Feeder r;
  r.Feed("POST /p HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
         "Content-Length: 11\r\n\r\nhello world");
  ASSERT_EQ(r.requests.size(), 1u);
  EXPECT_EQ(r.requests[0].method, "POST");
  EXPECT_EQ(r.requests[0].body, "hello world");
}

TEST(RequestParserTest, ChunkedBodyIsAssembledAcrossPieces) {
  Feeder r;
  r.Feed("POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
  EXPECT_TRUE(r.requests.empty());
  EXPECT_TRUE(r.parser.in_request());
  r.Feed("6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n");
  ASSERT_EQ(r.requests.size(), 1u);
  EXPECT_EQ(r.requests[0].body, "hello world");
}

TEST(RequestParserTest, ChunkedTrailerFieldsNeverBecomeHeaders) {
  Feeder r;
  // A header check (Metadata, Host) must not be satisfied from the trailer.
  r.Feed("POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
         "0\r\nMetadata: true\r\nHost: other\r\n\r\n");
  ASSERT_EQ(r.requests.size(), 1u);
  const HttpRequest& req = r.requests[0];
  EXPECT_EQ(req.body, "hello");
  std::vector<std::pair<std::string, std::string>> want = {{"host", "x"}, {"transfer-encoding", "chunked"}};
  EXPECT_EQ(req.headers, want);
  EXPECT_EQ(req.Header("metadata"), nullptr);
}

TEST(RequestParserTest, ChunkedTrailerCountsTowardsTheHeaderLimit) {
  Feeder r(Limits(1024));
  r.Feed("POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
         "0\r\nX-Big: " + std::string(2000, 'a') + "\r\n\r\n");
  ASSERT_TRUE(r.failed);
  EXPECT_EQ(r.parser.error_status(), 431);
  EXPECT_TRUE(r.requests.empty());
}

// Every split of a request, fed in two pieces, gives the same request.
TEST(RequestParserTest, EverySplitPointGivesTheSameRequest) {
  const std::string raw =
      "POST /split?a=b HTTP/1.1\r\nHost: x\r\nX-Long-Name:  value \r\nContent-Length: 5\r\n\r\nabcde";
  for (size_t cut = 0; cut <= raw.size(); ++cut) {
    Feeder r;
    r.FeedAll({raw.substr(0, cut), raw.substr(cut)});
    ASSERT_EQ(r.requests.size(), 1u) << cut;
    EXPECT_EQ(r.requests[0].target, "/split?a=b") << cut;
    ASSERT_NE(r.requests[0].Header("x-long-name"), nullptr) << cut;
    EXPECT_EQ(*r.requests[0].Header("x-long-name"), "value") << cut;
    EXPECT_EQ(r.requests[0].body, "abcde") << cut;
  }
}

TEST(RequestParserTest, RequestSplitIntoManyReads) {
  Feeder r;
  r.FeedAll({"GE", "T /sp", "lit HTTP/1.1\r\nHo", "st: x\r\nX-Long-Na", "me:  val", "ue \r", "\n\r", "\n"});
  ASSERT_EQ(r.requests.size(), 1u);
  EXPECT_EQ(r.requests[0].target, "/split");
  EXPECT_EQ(*r.requests[0].Header("x-long-name"), "value");
  EXPECT_EQ(*r.requests[0].Header("host"), "x");
}

TEST(RequestParserTest, HeadersTooLargeIs431) {
  Feeder r(Limits(1024));
  r.Feed("GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(4000, 'a') + "\r\n\r\n");
  ASSERT_TRUE(r.failed);
  EXPECT_EQ(r.parser.error_status(), 431);
  EXPECT_EQ(r.parser.error_description(), "request headers too large");
}

TEST(RequestParserTest, HeadersTooLargeAcrossPiecesIs431) {
  Feeder r(Limits(1024));
  r.Feed("GET / HTTP/1.1\r\nHost: x\r\nX-Big: ");
  for (int i = 0; i < 20 && !r.failed; ++i) r.Feed(std::string(100, 'a'));
  ASSERT_TRUE(r.failed);
  EXPECT_EQ(r.parser.error_status(), 431);
}

TEST(RequestParserTest, HeaderPaddingCountsTowardsTheLimit) {
  Feeder r(Limits(1024));
  // Whitespace that llhttp skips without a callback still counts.
  r.Feed("GET / HTTP/1.1\r\nHost: x\r\nX-Pad:" + std::string(4000, ' ') + "v\r\n\r\n");
  ASSERT_TRUE(r.failed);
  EXPECT_EQ(r.parser.error_status(), 431);
}

TEST(RequestParserTest, BodyTooLargeByContentLengthIs413AtTheHeaders) {
  Feeder r(Limits(8192, 16));
  r.Feed("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n");
  ASSERT_TRUE(r.failed);
  EXPECT_EQ(r.parser.error_status(), 413);
  EXPECT_EQ(r.parser.error_description(), "request body too large");
}

TEST(RequestParserTest, ChunkedBodyTooLargeIs413) {
  Feeder r(Limits(8192, 16));
  r.Feed("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n0123456789abcdef\r\n"
         "1\r\nX\r\n0\r\n\r\n");
  ASSERT_TRUE(r.failed);
  EXPECT_EQ(r.parser.error_status(), 413);
  EXPECT_TRUE(r.requests.empty());
}

TEST(RequestParserTest, MalformedRequestIs400WithLlhttpsReason) {
  Feeder r;
  r.Feed("GET / HTTP/1.1\r\nHost x\r\n\r\n");
  ASSERT_TRUE(r.failed);
  EXPECT_EQ(r.parser.error_status(), 400);
  EXPECT_EQ(r.parser.error_description().rfind("malformed request: ", 0), 0u) << r.parser.error_description();
  // Nothing more is taken after an error.
  Event event;
  EXPECT_EQ(r.parser.Feed("GET / HTTP/1.1\r\n\r\n", &event), 18u);
  EXPECT_EQ(event, Event::kError);
}

TEST(RequestParserTest, UnsupportedVersionIs505) {
  for (const char* raw : {"GET / HTTP/2.0\r\nHost: x\r\n\r\n", "GET / HTTP/3.1\r\nHost: x\r\n\r\n"}) {
    Feeder r;
    r.Feed(raw);
    ASSERT_TRUE(r.failed) << raw;
    EXPECT_EQ(r.parser.error_status(), 505) << raw;
    EXPECT_EQ(r.parser.error_description(), "HTTP version not supported");
  }
}

TEST(RequestParserTest, ExpectContinueStopsAtTheHeaders) {
  RequestParser parser(Limits());
  const std::string head = "POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n";
  const std::string raw = head + "abcde";
  Event event;
  size_t used = parser.Feed(raw, &event);
  EXPECT_EQ(event, Event::kExpectContinue);
  EXPECT_EQ(used, head.size());
  EXPECT_TRUE(parser.in_request());
  used = parser.Feed(std::string_view(raw).substr(used), &event);
  EXPECT_EQ(event, Event::kRequest);
  EXPECT_EQ(parser.request().body, "abcde");
}

TEST(RequestParserTest, ExpectContinueNeedsABodyAndHttp11) {
  for (const char* raw : {"GET /e HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n",
                          "POST /e HTTP/1.0\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\nx"}) {
    Feeder r;
    r.Feed(raw);
    EXPECT_EQ(r.events, std::vector<Event>{Event::kRequest}) << raw;
  }
}

TEST(RequestParserTest, AllowanceRestartsAtTheFirstByteAndAtABody) {
  RequestParser parser(Limits());
  Event event;
  const uint64_t start = parser.allowance_starts();
  parser.Feed("G", &event);
  EXPECT_EQ(event, Event::kNeedMore);
  EXPECT_TRUE(parser.in_request());
  EXPECT_EQ(parser.allowance_starts(), start + 1);
  parser.Feed("ET / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n", &event);
  EXPECT_EQ(parser.allowance_starts(), start + 2) << "the body gets its own allowance";
  parser.Feed("abc", &event);
  EXPECT_EQ(event, Event::kRequest);
  EXPECT_FALSE(parser.in_request());
  EXPECT_EQ(parser.allowance_starts(), start + 2);
}

TEST(RequestParserTest, EndOfInputEndsARequestCutShort) {
  RequestParser parser(Limits());
  Event event;
  parser.Feed("GET / HTTP/1.1\r\nHo", &event);
  EXPECT_TRUE(parser.in_request());
  parser.EndOfInput();
  EXPECT_FALSE(parser.in_request());
}

TEST(RequestParserTest, UpgradeStopsTheParser) {
  Feeder r;
  r.Feed("GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n");
  ASSERT_EQ(r.requests.size(), 1u);
  EXPECT_FALSE(r.requests[0].keep_alive) << "the connection closes after the answer";
}

TEST(RequestParserTest, LimitsApplyFromTheNextFeed) {
  RequestParser parser(Limits(8192, 4));
  parser.set_limits(Limits(8192, 16));
  Event event;
  parser.Feed("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789", &event);
  EXPECT_EQ(event, Event::kRequest);
}

}  // namespace
}  // namespace mi::proxy
