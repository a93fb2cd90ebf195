#include "berth/setup/environment.hpp"

namespace berth::setup {

std::map<std::string, std::string> base_environment(const sandbox::layout& where,
                                                    const std::string& session,
                                                    const std::vector<std::string>& configured) {
  const auto& h = where.home;
  std::map<std::string, std::string> env = {
      // Tools a session installs for itself land in its home: found without a full path.
      {"PATH", h + "/.local/bin:" + h + "/" + cargo_home_dir + "/bin:" + h + "/" + go_path_dir +
                   "/bin:" + where.path},
      {"HOME", h},
      {"TMPDIR", where.tmp},
      {"LANG", "C.UTF-8"},
      {"BERTH_SESSION", session},
      {"BERTH_WORKSPACE", where.work},
      {"npm_config_cache", h + "/" + npm_cache_dir},
      // npm and pip check for their own new versions over the network and leave a stamp file.
      {"npm_config_update_notifier", "false"},
      {"npm_config_fund", "false"},
      {"PIP_CACHE_DIR", h + "/" + pip_cache_dir},
      {"PIP_DISABLE_PIP_VERSION_CHECK", "1"},
      {"CARGO_HOME", h + "/" + cargo_home_dir},
      {"GOPATH", h + "/" + go_path_dir},
      {"GOMODCACHE", h + "/" + go_path_dir + "/pkg/mod"},
      // Go makes its module cache read-only; writable, the session's home can be removed.
      {"GOFLAGS", "-modcacherw"},
  };
  for (const auto& e : configured) {
    auto eq = e.find('=');
    if (eq == std::string::npos || eq == 0) continue;  // the config refused it already
    env[e.substr(0, eq)] = e.substr(eq + 1);
  }
  // The node's Go modules for this session first (what its go.sum pins, seeded by setup); a
  // module not there falls through to the configured proxy, or Go's default.
  auto proxy = env.find("GOPROXY");
  env["GOPROXY"] =
      "file://" + h + "/" + go_proxy_dir + "," +
      (proxy != env.end() && !proxy->second.empty() ? proxy->second
                                                    : "https://proxy.golang.org,direct");
  return env;
}

}  // namespace berth::setup
