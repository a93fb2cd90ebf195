#include "berth/base/crash.hpp"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace berth {

bool crash_armed(std::string_view point) {
  static const char* armed = std::getenv("BERTH_CRASH_AT");
  return armed && point == armed;
}

void crash_point(std::string_view point) {
  if (!crash_armed(point)) return;
  static std::atomic<long> remaining{[] {
    const char* n = std::getenv("BERTH_CRASH_AFTER");
    return n ? std::atol(n) : 0L;
  }()};
  if (remaining.fetch_sub(1) > 0) return;
  std::fprintf(stderr, "berth: BERTH_CRASH_AT=%s reached; aborting\n", std::string(point).c_str());
  std::fflush(stderr);
  std::_Exit(134);
}

}  // namespace berth
