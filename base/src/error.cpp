#include "berth/base/error.hpp"

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace berth {
namespace {

struct errc_info {
  errc code;
  const char* name;     // stable, machine-readable (API replies)
  const char* message;  // for people
};

constexpr errc_info infos[] = {
    {errc::ok, "ok", "ok"},
    {errc::invalid_argument, "invalid_argument", "invalid argument"},
    {errc::not_found, "not_found", "not found"},
    {errc::conflict, "conflict", "conflict"},
    {errc::timeout, "timeout", "timeout"},
    {errc::unavailable, "unavailable", "unavailable"},
    {errc::io_error, "io_error", "i/o error"},
    {errc::corrupt, "corrupt", "corrupt data"},
    {errc::unsupported, "unsupported", "unsupported"},
    {errc::fenced, "fenced", "fenced (ownership lost)"},
    {errc::internal, "internal", "internal error"},
    {errc::too_large, "too_large", "too large"},
    {errc::permission_denied, "permission_denied", "permission denied"},
    {errc::cancelled, "cancelled", "cancelled"},
    {errc::unauthorized, "unauthorized", "unauthorized"},
    {errc::rate_limited, "rate_limited", "rate limited"},
};

const errc_info* info_of(int c) {
  for (const auto& i : infos)
    if (static_cast<int>(i.code) == c) return &i;
  return nullptr;
}

class category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "berth"; }
  std::string message(int c) const override {
    const auto* i = info_of(c);
    return i ? i->message : "unknown berth error " + std::to_string(c);
  }
};

}  // namespace

const std::error_category& berth_category() noexcept {
  static const category c;
  return c;
}

const char* errc_name(const std::error_code& c) noexcept {
  if (c.category() != berth_category()) return "internal";
  const auto* i = info_of(c.value());
  return i ? i->name : "internal";
}

errc errc_from_name(std::string_view name) noexcept {
  for (const auto& i : infos)
    if (name == i.name) return i.code;
  return errc::internal;
}

std::string error::describe() const {
  return message + " [" + code.message() + "]";
}

void assert_failed(const char* cond, const std::string& what, const char* file, int line) {
  std::fprintf(stderr, "berth: invariant broken at %s:%d: %s (%s)\n", file, line, what.c_str(),
               cond);
  std::fflush(stderr);
  std::abort();
}

std::string errno_text(int err) {
  char buf[256];
  // The GNU strerror_r: returns the text, in buf or a static string.
  return ::strerror_r(err, buf, sizeof buf);
}

}  // namespace berth
