#include "berth/base/log.hpp"

#include <spdlog/sinks/stdout_sinks.h>

#include <mutex>

namespace berth::log {
namespace {

std::mutex mu;
std::string g_level = "info";
std::string g_format = "text";

void apply(spdlog::logger& l) {
  l.set_level(spdlog::level::from_str(g_level));
  if (g_format == "json") {
    l.set_pattern(R"({"ts":"%Y-%m-%dT%H:%M:%S.%eZ","level":"%l","module":"%n","msg":"%v"})",
                  spdlog::pattern_time_type::utc);
  } else {
    l.set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%-5l%$ [%n] %v", spdlog::pattern_time_type::utc);
  }
}

}  // namespace

void setup(const std::string& level, const std::string& format) {
  std::lock_guard lock(mu);
  g_level = level;
  g_format = format;
  spdlog::apply_all([](const std::shared_ptr<spdlog::logger>& l) { apply(*l); });
}

std::shared_ptr<spdlog::logger> get(const std::string& module) {
  std::lock_guard lock(mu);
  if (auto l = spdlog::get(module)) return l;
  auto l =
      std::make_shared<spdlog::logger>(module, std::make_shared<spdlog::sinks::stderr_sink_mt>());
  apply(*l);
  spdlog::register_logger(l);
  return l;
}

}  // namespace berth::log
