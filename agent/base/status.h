#pragma once
// Status and StatusOr<T>: the one way to report failure (start-up, config, bind,
// parse results). Model: LevelDB's Status and Abseil's StatusOr. The loop never
// throws; it returns these.

#include <cassert>
#include <optional>
#include <string>
#include <utility>

namespace mi {

class Status {
 public:
  Status() = default;
  static Status Ok() { return Status(); }
  static Status Error(std::string message) { return Status(std::move(message), 0); }
  // `code` names the failure for a caller that words it its own way (0: none);
  // the codes belong to the function that returns them.
  static Status Error(int code, std::string message) { return Status(std::move(message), code); }

  bool ok() const { return !failed_; }
  const std::string& message() const { return message_; }
  int code() const { return code_; }

 private:
  Status(std::string message, int code) : failed_(true), code_(code), message_(std::move(message)) {}
  bool failed_ = false;
  int code_ = 0;
  std::string message_;
};

// A value or the Status saying why there is none.
//   StatusOr<int> r = ParsePort(text);
//   if (!r.ok()) return r.status();
//   use(*r);
template <typename T>
class StatusOr {
 public:
  StatusOr(T value) : value_(std::move(value)) {}  // NOLINT: implicit, as in Abseil
  StatusOr(Status status) : status_(std::move(status)) {  // NOLINT
    assert(!status_.ok() && "StatusOr needs a value or an error");
    if (status_.ok()) status_ = Status::Error("StatusOr without a value");
  }

  bool ok() const { return value_.has_value(); }
  const Status& status() const { return status_; }
  // REQUIRES: ok().
  T& value() & { return *value_; }
  const T& value() const& { return *value_; }
  T&& value() && { return std::move(*value_); }
  T& operator*() & { return *value_; }
  const T& operator*() const& { return *value_; }
  T&& operator*() && { return std::move(*value_); }
  T* operator->() { return &*value_; }
  const T* operator->() const { return &*value_; }

 private:
  Status status_;
  std::optional<T> value_;
};

}  // namespace mi
