#include "proxy/http/request_parser.h"

#include "agent/base/ascii.h"

namespace mi::proxy {

llhttp_settings_t RequestParser::MakeSettings() {
  llhttp_settings_t s;
  llhttp_settings_init(&s);
  s.on_message_begin = [](llhttp_t* p) noexcept -> int { return From(p)->OnMessageBegin(); };
  s.on_method = [](llhttp_t* p, const char* at, size_t len) noexcept -> int { return From(p)->HeadSpan(at, len); };
  s.on_url = [](llhttp_t* p, const char* at, size_t len) noexcept -> int { return From(p)->OnUrl(at, len); };
  s.on_version = [](llhttp_t* p, const char* at, size_t len) noexcept -> int { return From(p)->HeadSpan(at, len); };
  s.on_header_field = [](llhttp_t* p, const char* at, size_t len) noexcept -> int {
    return From(p)->OnHeaderField(at, len);
  };
  s.on_header_value = [](llhttp_t* p, const char* at, size_t len) noexcept -> int {
    return From(p)->OnHeaderValue(at, len);
  };
  s.on_header_value_complete = [](llhttp_t* p) noexcept -> int { return From(p)->OnHeaderValueComplete(); };
  s.on_headers_complete = [](llhttp_t* p) noexcept -> int { return From(p)->OnHeadersComplete(); };
  s.on_body = [](llhttp_t* p, const char* at, size_t len) noexcept -> int { return From(p)->OnBody(at, len); };
  s.on_message_complete = [](llhttp_t* p) noexcept -> int { return From(p)->OnMessageComplete(); };
  return s;
}

const llhttp_settings_t RequestParser::kSettings = RequestParser::MakeSettings();

RequestParser::RequestParser(const Limits& limits) : limits_(limits) {
  llhttp_init(&parser_, HTTP_REQUEST, &kSettings);
  parser_.data = this;
}

size_t RequestParser::Feed(std::string_view bytes, Event* event) {
  *event = Event::kNeedMore;
  if (failed_ || upgraded_) {
    if (failed_) *event = Event::kError;
    return bytes.size();  // the parser takes nothing more
  }
  const char* data = bytes.data();
  const size_t len = bytes.size();
  event_ = Event::kNeedMore;
  if (in_head_) head_start_ = last_end_ = data;
  llhttp_errno_t err = llhttp_execute(&parser_, data, len);
  const char* stop = data + len;
  if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE) {
    stop = llhttp_get_error_pos(&parser_);
    if (stop == nullptr || stop < data || stop > data + len) stop = data + len;
    if (err == HPE_PAUSED_UPGRADE) {
      upgraded_ = true;  // we do not speak other protocols; the caller closes after the answer
    } else {
      llhttp_resume(&parser_);  // paused by a callback at an event
    }
  } else if (err != HPE_OK) {
    SetError(err);
    *event = Event::kError;
    return len;
  }
  if (in_head_ && head_start_ != nullptr) {
    // Head bytes llhttp skipped without a callback (e.g. padding) still count.
    head_bytes_ += static_cast<size_t>(stop - head_start_);
    head_start_ = last_end_ = nullptr;
    if (head_bytes_ > limits_.max_header_bytes) {
      Fail(431, "request headers too large");
      SetError(HPE_USER);
      *event = Event::kError;
      return len;
    }
  }
  *event = event_;
  return static_cast<size_t>(stop - data);
}

int RequestParser::Fail(int status, const char* description) {
  if (error_status_ == 0) {
    error_status_ = status;
    fail_description_ = description;
  }
  return -1;
}

void RequestParser::SetError(llhttp_errno_t err) {
  failed_ = true;
  in_message_ = false;
  in_head_ = false;
  if (error_status_ != 0) {
    error_description_ = fail_description_ != nullptr ? fail_description_ : "bad request";
  } else if (err == HPE_INVALID_VERSION || err == HPE_PAUSED_H2_UPGRADE) {
    error_status_ = 505;
    error_description_ = "HTTP version not supported";
  } else {
    error_status_ = 400;
    const char* reason = llhttp_get_error_reason(&parser_);
    error_description_ = "malformed request";
    if (reason != nullptr && *reason != '\0') {
      error_description_ += ": ";
      error_description_ += reason;
    }
  }
}

// Accounts a span of the request head (or of a chunked trailer).
int RequestParser::HeadSpan(const char* at, size_t len) {
  if (!in_head_) {
    head_bytes_ += len;  // trailers
    return head_bytes_ > limits_.max_header_bytes ? Fail(431, "request headers too large") : 0;
  }
  if (head_start_ == nullptr) head_start_ = at;
  last_end_ = at + len;
  if (head_bytes_ + static_cast<size_t>(last_end_ - head_start_) > limits_.max_header_bytes) {
    return Fail(431, "request headers too large");
  }
  return 0;
}

int RequestParser::OnMessageBegin() {
  in_message_ = true;
  in_head_ = true;
  head_bytes_ = 0;
  head_start_ = last_end_ = nullptr;
  // Cleared, not replaced: the strings keep their capacity.
  request_.method.clear();
  request_.target.clear();
  request_.headers.clear();
  request_.body.clear();
  request_.keep_alive = true;
  field_.clear();
  value_.clear();
  ++allowance_starts_;
  return 0;
}

int RequestParser::OnUrl(const char* at, size_t len) {
  if (HeadSpan(at, len) != 0) return -1;
  request_.target.append(at, len);
  return 0;
}

int RequestParser::OnHeaderField(const char* at, size_t len) {
  if (HeadSpan(at, len) != 0) return -1;
  field_.append(at, len);
  return 0;
}

int RequestParser::OnHeaderValue(const char* at, size_t len) {
  if (HeadSpan(at, len) != 0) return -1;
  value_.append(at, len);
  return 0;
}

int RequestParser::OnHeaderValueComplete() {
  if (!in_head_) {
    // A chunked trailer field: a header check must never see it (a trailer
    // "Metadata: true" would pass it). Its bytes were counted in HeadSpan.
    field_.clear();
    value_.clear();
    return 0;
  }
  for (char& ch : field_) ch = AsciiLower(ch);
  request_.headers.emplace_back(field_, TrimOws(value_));
  field_.clear();
  value_.clear();
  return 0;
}

int RequestParser::OnHeadersComplete() {
  if (head_start_ != nullptr && last_end_ != nullptr) head_bytes_ += static_cast<size_t>(last_end_ - head_start_);
  head_start_ = last_end_ = nullptr;
  in_head_ = false;
  if (head_bytes_ > limits_.max_header_bytes) return Fail(431, "request headers too large");
  if (llhttp_get_http_major(&parser_) != 1) return Fail(505, "HTTP version not supported");
  request_.http_minor = llhttp_get_http_minor(&parser_);
  request_.method = llhttp_method_name(static_cast<llhttp_method_t>(llhttp_get_method(&parser_)));
  request_.keep_alive = llhttp_should_keep_alive(&parser_) != 0 && llhttp_get_upgrade(&parser_) == 0;
  const bool chunked = (parser_.flags & F_CHUNKED) != 0;
  const bool has_length = (parser_.flags & F_CONTENT_LENGTH) != 0;
  if (has_length && parser_.content_length > limits_.max_body_bytes) {
    return Fail(413, "request body too large");
  }
  if (chunked || (has_length && parser_.content_length > 0)) {
    if (has_length) request_.body.reserve(static_cast<size_t>(parser_.content_length));
    ++allowance_starts_;  // the body gets the same allowance as the head, counted afresh
    const std::string* expect = request_.Header("expect");
    if (expect != nullptr && request_.http_minor != 0 && EqualsIgnoreCase(*expect, "100-continue")) {
      event_ = Event::kExpectContinue;
      return HPE_PAUSED;
    }
  }
  return 0;
}

int RequestParser::OnBody(const char* at, size_t len) {
  if (request_.body.size() + len > limits_.max_body_bytes) return Fail(413, "request body too large");
  request_.body.append(at, len);
  return 0;
}

int RequestParser::OnMessageComplete() {
  in_message_ = false;
  event_ = Event::kRequest;
  return HPE_PAUSED;
}

}  // namespace mi::proxy
