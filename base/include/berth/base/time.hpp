#pragma once

#include "berth/base/error.hpp"

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace berth {

using millis = std::chrono::milliseconds;

/// Wall-clock milliseconds since the Unix epoch.
[[nodiscard]] std::int64_t now_unix_ms();
/// RFC 3339 UTC with milliseconds, e.g. "2026-11-22T04:00:00.123Z".
[[nodiscard]] std::string format_timestamp(std::int64_t unix_ms);
[[nodiscard]] inline std::string now_timestamp() {
  return format_timestamp(now_unix_ms());
}
/// Parse what format_timestamp() writes back to Unix milliseconds; 0 when malformed.
[[nodiscard]] std::int64_t parse_timestamp(const std::string& ts);

/// Parse a duration string: one or more `<number><unit>` with units ms, s, m, h, d ("1h30m").
/// `field` names the offending field in the error.
[[nodiscard]] result<millis> parse_duration(std::string_view text, std::string_view field);
/// The shortest exact spelling of a duration ("90s" -> "1m30s").
[[nodiscard]] std::string format_duration(millis d);

}  // namespace berth
