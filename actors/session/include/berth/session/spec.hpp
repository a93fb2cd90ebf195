#pragma once

#include "berth/base/error.hpp"
#include "berth/base/json.hpp"
#include "berth/base/time.hpp"

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace berth::session {

/// How a failed step is tried again.
struct retry_policy {
  std::int64_t max_attempts = 1;  ///< failed attempts allowed in all (1: no retry)
  millis backoff{1000};           ///< delay before the 2nd attempt; doubles each time
  millis max_backoff{60'000};
};

struct step_spec {
  std::string id;
  std::vector<std::string> run;  ///< argv; argv[0] looked up in PATH
  std::optional<millis> timeout;
  retry_policy retry;
  std::map<std::string, std::string> env;
  std::string network;  ///< "none" | "host"; empty: the session's
};

/// A validated session spec: what a client asked for.
struct session_spec {
  std::string id;
  std::string repo;
  std::string ref;
  std::string goal;
  std::optional<millis> timeout;  ///< nullopt: the node's session.default_timeout
  std::int64_t priority = 5;      ///< 0..9, higher placed first
  std::string network;            ///< "none" | "host"; empty: "none" (sandbox network policy)
  std::vector<step_spec> steps;
};

/// Limits applied at validation.
struct spec_limits {
  std::int64_t max_spec_bytes = 256 * 1024;
  std::size_t max_steps = 1000;
  std::size_t max_argv = 4096;
};

/// Validate a spec given as JSON. Every error names the field ("steps[2].run: must not be
/// empty"). Unknown fields are errors.
[[nodiscard]] result<session_spec> parse_spec(const json::value& v, const spec_limits& limits = {});

/// The canonical JSON form of a spec (what is stored in the journal).
[[nodiscard]] json::value to_json(const session_spec& s);

}  // namespace berth::session
