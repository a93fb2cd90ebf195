#pragma once
// The config schema: every key of every section, with its type, default, bounds, description
// and how it lands in `config`. parse, apply_env and the generated reference all read it.

#include "berth/config/config.hpp"

#include <cstdint>
#include <functional>
#include <string>
#include <variant>
#include <vector>

namespace berth::config::detail {

enum class kind { string, integer, boolean, duration, string_list };

using raw = std::variant<std::string, std::int64_t, bool, millis, std::vector<std::string>>;

struct key_spec {
  const char* section;
  const char* key;
  kind type;
  const char* default_text;  // TOML literal
  std::int64_t min = 0;      // integers: bounds; durations: bounds in ms
  std::int64_t max = 0;
  std::vector<std::string> choices;  // strings: allowed values (empty: any)
  const char* description;
  std::function<void(config&, const raw&)> apply;
};

template <class T>
const T& as(const raw& r) {
  return std::get<T>(r);
}

/// Every key, grouped by section in the order the reference prints them.
const std::vector<key_spec>& schema();
/// "a string", "an integer", ...: what a key of kind `k` expects.
const char* kind_name(kind k);

}  // namespace berth::config::detail
