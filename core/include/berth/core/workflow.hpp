#pragma once

// Workflow files: TOML with an optional [session] table and a list of [[steps]], turned into
// the JSON spec the API takes (not yet validated: parse_spec does that). Errors name the file,
// line and column, and the unknown key with the known ones.

#include "berth/base/error.hpp"
#include "berth/base/json.hpp"

#include <string>
#include <string_view>

namespace berth::core {

/// Read and convert the workflow file at `path`.
[[nodiscard]] result<json::value> load_workflow(const std::string& path);
/// Convert workflow text; `source` names it in errors (a path, or "body" for an upload).
[[nodiscard]] result<json::value> parse_workflow(std::string_view text, const std::string& source);

}  // namespace berth::core
