#include "berth/base/log.hpp"

#include "berth/base/redact.hpp"

#include <spdlog/sinks/base_sink.h>

#include <cstdio>
#include <mutex>

namespace berth::log {
namespace {

// stderr, with every registered credential (and anything token-shaped) replaced: no secret
// reaches a log line, whoever formats it.
class redacting_sink final : public spdlog::sinks::base_sink<std::mutex> {
 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    spdlog::memory_buf_t buf;
    formatter_->format(msg, buf);
    auto text = redact::apply(std::string_view(buf.data(), buf.size()));
    std::fwrite(text.data(), 1, text.size(), stderr);
  }
  void flush_() override { std::fflush(stderr); }
};

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
  auto l = std::make_shared<spdlog::logger>(module, std::make_shared<redacting_sink>());
  apply(*l);
  spdlog::register_logger(l);
  return l;
}

}  // namespace berth::log
