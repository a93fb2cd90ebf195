#pragma once

// Installed npm trees the node builds itself. For a lockfile whose every package is a registry
// tarball pinned by a strong digest, with no install scripts, no platform conditions and no
// links, `npm ci` produces exactly the files of those tarballs at the lockfile's paths, plus
// the `.bin` links. The node builds that tree once from the tarballs of its verified store
// (never from what a session's npm left behind) and restores it into later workspaces: a warm
// setup is a directory walk instead of a package manager run.

#include "berth/base/error.hpp"

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace berth::setup {

/// What the node would build for a lockfile, or why it cannot.
struct npm_tree {
  struct package {
    std::string path;       ///< "node_modules/a", "node_modules/@s/b/node_modules/c"
    std::string algorithm;  ///< the strongest digest of its integrity (sha512, sha384, sha256)
    std::string hex;        ///< lowercase hex: the tarball's name in the store
    std::vector<std::pair<std::string, std::string>> bins;  ///< name -> path in the package
  };
  std::string key;         ///< hex sha256 of the packages, their digests and bins ("": none)
  std::string ineligible;  ///< why npm ci's tree is not the tarballs' files ("": eligible)
  std::vector<package> packages;
};

/// The tree of a workspace's `package_json` and lockfile text (package-lock.json or
/// npm-shrinkwrap.json, lockfileVersion 2 or 3), under the npm configuration in effect:
/// `config` holds "name=value" entries from the environment (npm_config_*, NODE_ENV) and the
/// lines of every .npmrc that applies. Ineligible when npm ci would do anything but unpack
/// pinned tarballs: a root or package install script, a platform-specific, bundled, linked or
/// non-registry package, a package pinned only by sha1, a lockfile out of sync with
/// package.json, or a setting that leaves packages out (omit, production, NODE_ENV=production,
/// install-strategy, ...).
[[nodiscard]] npm_tree plan_npm_tree(std::string_view package_json, std::string_view lockfile,
                                     const std::vector<std::string>& config);

/// What extracting one npm tarball wrote.
struct unpacked {
  std::uint64_t files = 0;
  std::uint64_t bytes = 0;
};

/// Unpack the npm package tarball (gzip'd tar) open at `tarball` into the directory `dir`, as
/// npm does: the first path component stripped, links, devices and entries with ".." skipped,
/// files 0444 (0555 when executable in the tarball), directories 0755. Stops with an error
/// past `max_bytes` or `max_files` in total (`budget` is what was used before and gains this
/// tarball's share).
[[nodiscard]] status unpack_npm_tarball(int tarball, int dir, std::uint64_t max_bytes,
                                        std::uint64_t max_files, unpacked& budget);

}  // namespace berth::setup
