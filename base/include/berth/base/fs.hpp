#pragma once

#include "berth/base/error.hpp"

#include <string>
#include <string_view>

namespace berth::fs {

/// Read a whole file. Errors name the path.
[[nodiscard]] result<std::string> read_file(const std::string& path);
/// Write all of `data` to `fd` (retrying short writes and EINTR). Returns 0 or the errno.
[[nodiscard]] int write_all(int fd, std::string_view data);
/// Write a file atomically: write a temporary sibling with `mode`, fsync, rename over `path`.
[[nodiscard]] status write_file_atomic(const std::string& path, const std::string& content,
                                       unsigned mode = 0644);
/// Write `content` to an existing file in one write(2), in place (kernel files: cgroup knobs,
/// /proc). Errors name the path and the kernel's answer.
[[nodiscard]] status write_existing(const std::string& path, const std::string& content);
/// Create a directory (and parents) and check that this process can write into it. `what`
/// says what the directory is for, e.g. "node.data_dir".
[[nodiscard]] status ensure_writable_dir(const std::string& path, const std::string& what);
/// Remove a directory tree; missing is fine.
void remove_tree(const std::string& path);

}  // namespace berth::fs
