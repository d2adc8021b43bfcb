#pragma once
// The JSON error body of the token and health routes.

#include <string>
#include <string_view>

namespace mi::proxy {

// {"error":..,"error_description":..}; bytes that are not UTF-8 become U+FFFD.
std::string ErrorBody(std::string_view error, std::string_view description);

}  // namespace mi::proxy
