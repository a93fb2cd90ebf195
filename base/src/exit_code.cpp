#include "berth/base/exit_code.hpp"

#include <cstdio>

namespace berth {

exit_code exit_code_for(const error& e) {
  if (e.is(errc::not_found)) return not_found;
  if (e.is(errc::timeout)) return timed_out;
  if (e.is(errc::invalid_argument) || e.is(errc::too_large)) return usage;
  return failure;
}

int report(const error& e) {
  std::fprintf(stderr, "berth: %s\n", e.message.c_str());
  return exit_code_for(e);
}

}  // namespace berth
