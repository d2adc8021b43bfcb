#pragma once
// A status value for control-plane operations (start-up, config, bind).
// Model: LevelDB's Status. The loop never throws; it returns these.

#include <string>
#include <utility>

namespace mi {

class Status {
 public:
  Status() = default;
  static Status Ok() { return Status(); }
  static Status Error(std::string message) { return Status(std::move(message)); }

  bool ok() const { return !failed_; }
  const std::string& message() const { return message_; }

 private:
  explicit Status(std::string message) : failed_(true), message_(std::move(message)) {}
  bool failed_ = false;
  std::string message_;
};

}  // namespace mi
