#pragma once

#include "berth/sandbox/wire.hpp"

#include <string>
#include <vector>

namespace berth::sandbox::tools {

/// Run one file tool (`read_file`, `write_file`, `edit`, `list_dir`, `search`) inside the
/// sandbox. Every path is resolved beneath `root` (a directory descriptor) with openat2's
/// RESOLVE_BENEATH: `..`, absolute symlinks and symlinks leading out are refused by the kernel,
/// atomically, so a symlink swapped during the call cannot redirect it. `fds` are the
/// request's descriptors (content for write_file); the caller closes them.
[[nodiscard]] result<wire::message> run(int root, const std::string& op, const json::value& req,
                                        const std::vector<int>& fds);

}  // namespace berth::sandbox::tools
