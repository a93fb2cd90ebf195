#pragma once

#include <spdlog/spdlog.h>

#include <memory>
#include <string>

namespace berth::log {

/// Configure every logger: level ("trace".."off") and format ("text" | "json"). Call once at
/// start-up, before other threads log.
void setup(const std::string& level, const std::string& format);

/// The named logger of a module ("bus", "session", ...), created on first use. Thread-safe.
std::shared_ptr<spdlog::logger> get(const std::string& module);

}  // namespace berth::log
