#include "cli.hpp"

namespace berth::cli {

int run_bench(const globals& g, const std::string& scenario, int n) {
  return report(error{errc::unsupported, "bench " + scenario + ": not built yet"});
}

}  // namespace berth::cli
