#pragma once
// `mi-agent status`: the running agent's /status as a table that fits the
// terminal (agent/app/status_command.cc).
//
//   mi-agent status [--health HOST:PORT|URL] [--json] [-o wide]
//     GET /status?entries=all from the health listener (default 127.0.0.1:50343).
//     A header (ready, version, uptime, config digest, IMDS, last reload), then
//     one group per identity with its resources under it. Lines fit the width:
//     $COLUMNS, else the terminal's (stdout a tty), else 80; long identities,
//     resources and error codes are shortened in the middle ("…"), a failing
//     key's error description (its own line under the key) and the header at
//     the end. `-o wide`: every value whole. `--json`: the document as the agent sent it.
//     Exit 0: every key ok (or refreshing with a valid token); 1: any key
//     degraded, failing or without a token; 2: agent unreachable.

#include <cstddef>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace mi {

int RunStatusCommand(const std::vector<std::string>& args);

// GET /status?entries=all from `health` (HOST:PORT or URL), asking again while
// the agent is busy with another full view (503). False: `*error` says why.
bool FetchStatus(const std::string& health, nlohmann::ordered_json* doc, std::string* error);

// Every key ok, or refreshing with a valid token.
bool StatusHealthy(const nlohmann::ordered_json& doc);

// The text `mi-agent status` prints: every line at most `width` columns
// (code points) unless `wide`.
std::string FormatStatus(const nlohmann::ordered_json& doc, size_t width, bool wide);

// `text` at most `width` columns: the middle replaced by "…" (40% head, the
// rest tail: a resource id's name is at its end).
std::string ShortenMiddle(const std::string& text, size_t width);
size_t Columns(const std::string& text);  // UTF-8 code points

// $COLUMNS when a number, else the terminal's width when stdout is one, else
// 80; never under 40.
size_t OutputWidth();

// A /status "last_error" object as "400 invalid_request: Identity not found"
// (the description cleaned again; "?" for what is missing or mistyped).
std::string DescribeLastError(const nlohmann::ordered_json& last_error);

// "23h59m", "4m05s", "12s".
std::string FormatDuration(int64_t seconds);

}  // namespace mi
