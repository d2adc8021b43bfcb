// libFuzzer target: a token request's target and form body (hostile: from any
// local caller) through ClassifyTarget and ParseTokenParams. Input: the request
// target, a newline, then the form body.
// A key the parser accepts must be one MakeTokenKey accepts again unchanged
// (normalisation is idempotent; its claims SetClaims again), with a resource and a
// lower-case id.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "agent/token.h"
#include "proxy/request_params.h"

namespace {

[[noreturn]] void Die(const char* what, std::string_view input) {
  std::fprintf(stderr, "request_params_fuzz: %s:\n%.*s\n", what, static_cast<int>(input.size()), input.data());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t nl = input.find('\n');
  const std::string_view target = input.substr(0, nl);
  const std::string_view body = nl == std::string_view::npos ? std::string_view() : input.substr(nl + 1);

  std::string_view query;
  const mi::proxy::Route origin = mi::proxy::ClassifyTarget(target, /*absolute_form=*/false, &query);
  const mi::proxy::Route route = mi::proxy::ClassifyTarget(target, /*absolute_form=*/true, &query);
  if (origin != mi::proxy::Route::kUnknown && route != origin) Die("absolute_form changed an origin-form route", input);
  if (!query.empty() && (query.data() < target.data() || query.data() + query.size() > target.data() + target.size())) {
    Die("the query is not a slice of the target", input);
  }
  (void)mi::proxy::RouteName(route);

  const mi::StatusOr<mi::proxy::ParsedParams> params = mi::proxy::ParseTokenParams(query, body);
  if (!params.ok()) {
    if (params.status().message().empty()) Die("refused without a description", input);
    return 0;
  }
  const mi::TokenKey& key = params->key;
  if (key.resource.empty()) Die("accepted without a resource", input);
  for (char c : key.id) {
    if (c >= 'A' && c <= 'Z') Die("an id that is not lower-cased", input);
  }
  mi::StatusOr<mi::TokenKey> again = mi::MakeTokenKey(mi::SelectorFields::Of(key.kind, key.id), key.resource);
  // claims are set apart from the selector rule (SetClaims), and must survive it again too.
  if (again.ok() && !key.claims.empty() && !mi::SetClaims(&*again, key.claims).ok()) {
    Die("the claims do not survive SetClaims again", input);
  }
  if (!again.ok() || !(*again == key)) Die("the key does not survive MakeTokenKey again", input);
  if (mi::TokenKeyHash()(*again) != mi::TokenKeyHash()(key)) Die("equal keys hash differently", input);
  (void)key.Describe();
  return 0;
}
