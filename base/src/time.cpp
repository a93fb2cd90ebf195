#include "berth/base/time.hpp"

#include <cstdio>
#include <ctime>

namespace berth {

std::int64_t now_unix_ms() {
  return std::chrono::duration_cast<millis>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string format_timestamp(std::int64_t unix_ms) {
  std::time_t secs = static_cast<std::time_t>(unix_ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[96];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(unix_ms % 1000));
  return buf;
}

std::int64_t parse_timestamp(const std::string& ts) {
  std::tm tm{};
  int ms = 0;
  if (std::sscanf(ts.c_str(), "%d-%d-%dT%d:%d:%d.%dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                  &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms) < 6)
    return 0;
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  return static_cast<std::int64_t>(timegm(&tm)) * 1000 + ms;
}

result<millis> parse_duration(std::string_view text, std::string_view field) {
  auto bad = [&](const std::string& why) {
    return error{errc::invalid_argument, std::string(field) + ": invalid duration \"" +
                                             std::string(text) + "\" (" + why +
                                             "); use e.g. \"500ms\", \"30s\", \"10m\", \"1h30m\""};
  };
  if (text.empty()) return bad("empty");
  std::int64_t total = 0;
  std::size_t i = 0;
  while (i < text.size()) {
    std::size_t start = i;
    std::int64_t n = 0;
    while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
      n = n * 10 + (text[i] - '0');
      if (n > 1'000'000'000'000LL) return bad("too large");
      ++i;
    }
    if (i == start) return bad("expected a number");
    std::size_t ustart = i;
    while (i < text.size() && text[i] >= 'a' && text[i] <= 'z') ++i;
    auto unit = text.substr(ustart, i - ustart);
    std::int64_t mult = 0;
    if (unit == "ms")
      mult = 1;
    else if (unit == "s")
      mult = 1000;
    else if (unit == "m")
      mult = 60'000;
    else if (unit == "h")
      mult = 3'600'000;
    else if (unit == "d")
      mult = 86'400'000;
    else
      return bad(unit.empty() ? "missing unit" : "unknown unit \"" + std::string(unit) + "\"");
    total += n * mult;
    if (total > 100LL * 365 * 86'400'000) return bad("too large");
  }
  return millis(total);
}

std::string format_duration(millis d) {
  auto ms = d.count();
  if (ms == 0) return "0s";
  std::string out;
  auto part = [&](std::int64_t unit, const char* name) {
    if (ms >= unit) {
      out += std::to_string(ms / unit) + name;
      ms %= unit;
    }
  };
  if (ms % 1000 != 0 && ms < 1000) {
    return std::to_string(ms) + "ms";
  }
  part(86'400'000, "d");
  part(3'600'000, "h");
  part(60'000, "m");
  part(1000, "s");
  if (ms) out += std::to_string(ms) + "ms";
  return out;
}

}  // namespace berth
