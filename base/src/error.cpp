#include "berth/base/error.hpp"

#include <cstdio>
#include <cstdlib>

namespace berth {
namespace {

class category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "berth"; }
  std::string message(int c) const override {
    switch (static_cast<errc>(c)) {
      case errc::ok:
        return "ok";
      case errc::invalid_argument:
        return "invalid argument";
      case errc::not_found:
        return "not found";
      case errc::conflict:
        return "conflict";
      case errc::timeout:
        return "timeout";
      case errc::unavailable:
        return "unavailable";
      case errc::io_error:
        return "i/o error";
      case errc::corrupt:
        return "corrupt data";
      case errc::unsupported:
        return "unsupported";
      case errc::fenced:
        return "fenced (ownership lost)";
      case errc::internal:
        return "internal error";
      case errc::too_large:
        return "too large";
      case errc::permission_denied:
        return "permission denied";
      case errc::cancelled:
        return "cancelled";
    }
    return "unknown berth error " + std::to_string(c);
  }
};

}  // namespace

const std::error_category& berth_category() noexcept {
  static const category c;
  return c;
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

}  // namespace berth
