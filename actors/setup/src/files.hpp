#pragma once

// File helpers of the dependency cache (private to berth::setup): every path below a session's
// home or workspace is opened with openat and O_NOFOLLOW, one component at a time, so that a
// session cannot redirect the node's reads or writes with a symlink.

#include <sys/types.h>
#include <unistd.h>

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace berth::setup::detail {

// A file descriptor that closes itself.
struct fd_t {
  int fd = -1;
  fd_t() = default;
  explicit fd_t(int f) : fd(f) {}
  fd_t(const fd_t&) = delete;
  fd_t& operator=(const fd_t&) = delete;
  fd_t(fd_t&& o) noexcept : fd(std::exchange(o.fd, -1)) {}
  fd_t& operator=(fd_t&& o) noexcept {
    if (this != &o) {
      if (fd >= 0) ::close(fd);
      fd = std::exchange(o.fd, -1);
    }
    return *this;
  }
  ~fd_t() {
    if (fd >= 0) ::close(fd);
  }
  explicit operator bool() const { return fd >= 0; }
};

/// Base64 (standard or URL alphabet) to bytes; nullopt on a character outside both.
std::optional<std::string> base64_decode(std::string_view in);
/// Lowercase hex of `bytes`.
std::string to_hex(std::string_view bytes);
/// Digest length in bytes of an integrity algorithm npm uses (sha512/384/256, sha1); 0: other.
std::size_t digest_bytes(std::string_view algo);
bool is_hex(std::string_view s);
/// Open (with `create`, make, owned by uid/gid) each directory of `parts` below `base`, never
/// following a symlink. Invalid fd on failure.
fd_t open_dirs(int base, const std::vector<std::string>& parts, bool create, int uid, int gid);
/// Open a directory the node owns (not following a final symlink).
fd_t open_root(const std::string& path);
/// A regular file of at most `cap` bytes in `dir`, not following symlinks.
std::optional<std::string> read_small(int dir, const char* name, std::size_t cap);
/// The hex digest of what `fd` holds (read from the start), or nullopt.
std::optional<std::string> digest_of(int fd, std::string_view algo);
/// Copy `from` (an open regular file) into `dir`/`name`, created exclusively; owned by uid/gid
/// when given, mode `mode`. False on any failure (nothing half-written is left).
bool copy_into(int from, int dir, const std::string& name, mode_t mode, int uid, int gid,
               bool sync);
/// Remove `name` below `dir` and everything under it, never following a symlink (a process
/// that swaps a directory for a link meanwhile gets the link removed, nothing elsewhere).
void remove_at(int dir, const std::string& name);
/// The parts of a slash-separated path, empty ones included ("a//b" -> {"a", "", "b"}).
std::vector<std::string> split_slash(std::string_view path);
/// `s` without leading and trailing blanks (spaces, tabs, CR).
std::string trim_blanks(std::string_view s);
/// Hex sha256 of `data`.
std::string sha256_hex(std::string_view data);
/// Entries of a directory (names only, no dot entries).
std::vector<std::string> names_in(int dir);

}  // namespace berth::setup::detail
