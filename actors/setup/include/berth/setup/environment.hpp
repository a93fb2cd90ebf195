#pragma once

// The environment a session's commands start with. Every path in it is a path where the
// command runs (inside the sandbox: /work, /home/berth, /tmp), never one of the node's.

#include "berth/sandbox/runner.hpp"

#include <map>
#include <string>
#include <vector>

namespace berth::setup {

/// Where each package manager keeps its state in a session's home (relative to $HOME): the
/// cache directories that dependency caches are seeded into and promoted from.
inline constexpr const char* npm_cache_dir = ".npm";                 ///< npm_config_cache
inline constexpr const char* pip_cache_dir = ".cache/pip";           ///< PIP_CACHE_DIR
inline constexpr const char* pip_wheel_dir = ".cache/berth/wheels";  ///< shared wheels, by hash
inline constexpr const char* cargo_home_dir = ".cargo";              ///< CARGO_HOME
inline constexpr const char* go_path_dir = "go";  ///< GOPATH (modules: go/pkg/mod)
inline constexpr const char* go_proxy_dir = ".cache/berth/goproxy";  ///< a file:// GOPROXY

/// The environment every command of a session starts with: PATH, HOME, TMPDIR, LANG,
/// BERTH_SESSION, BERTH_WORKSPACE, and each package manager's cache and settings pointed into
/// the session's home (npm, pip, cargo, Go), then the node's `sandbox.env` entries
/// ("NAME=value", validated by the config). Callers add BERTH_STEP and the like, then the
/// step's own env.
[[nodiscard]] std::map<std::string, std::string> base_environment(
    const sandbox::layout& where, const std::string& session,
    const std::vector<std::string>& configured);

}  // namespace berth::setup
