#include "proxy/error_body.h"

#include <nlohmann/json.hpp>

namespace mi::proxy {

std::string ErrorBody(std::string_view error, std::string_view description) {
  nlohmann::json j = nlohmann::json::object();
  j["error"] = std::string(error);
  j["error_description"] = std::string(description);
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace mi::proxy
