#include "files.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>

namespace berth::setup::detail {

std::optional<std::string> base64_decode(std::string_view in) {
  auto val = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+' || c == '-') return 62;
    if (c == '/' || c == '_') return 63;
    return -1;
  };
  std::string out;
  unsigned buf = 0;
  int bits = 0;
  for (char c : in) {
    if (c == '=') break;
    int v = val(c);
    if (v < 0) return std::nullopt;
    buf = (buf << 6) | static_cast<unsigned>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((buf >> bits) & 0xff));
    }
  }
  return out;
}

std::string to_hex(std::string_view bytes) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out.push_back(digits[c >> 4]);
    out.push_back(digits[c & 15]);
  }
  return out;
}

// Digest lengths in bytes, for the algorithms npm's integrity strings use.
std::size_t digest_bytes(std::string_view algo) {
  if (algo == "sha512") return 64;
  if (algo == "sha384") return 48;
  if (algo == "sha256") return 32;
  if (algo == "sha1") return 20;
  return 0;
}

bool is_hex(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
  });
}

// Open (and with `create`, make, owned by uid/gid) each directory of `parts` below `base`,
// never following a symlink: a session cannot redirect the node's writes out of its home.
fd_t open_dirs(int base, const std::vector<std::string>& parts, bool create, int uid, int gid) {
  fd_t cur(::dup(base));
  for (const auto& p : parts) {
    int next = ::openat(cur.fd, p.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (next < 0 && errno == ENOENT && create) {
      if (::mkdirat(cur.fd, p.c_str(), 0755) != 0 && errno != EEXIST) return fd_t();
      next = ::openat(cur.fd, p.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      // A directory left root's is still walkable (0755); only writes into it by the user fail.
      if (next >= 0 && uid >= 0)
        (void)::fchown(next, static_cast<uid_t>(uid), static_cast<gid_t>(gid >= 0 ? gid : uid));
    }
    if (next < 0) return fd_t();
    cur = fd_t(next);
  }
  return cur;
}

fd_t open_root(const std::string& path) {
  return fd_t(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
}

std::optional<std::string> read_small(int dir, const char* name, std::size_t cap) {
  fd_t f(::openat(dir, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
  if (!f) return std::nullopt;
  struct stat st {};
  if (::fstat(f.fd, &st) != 0 || !S_ISREG(st.st_mode) ||
      static_cast<std::uint64_t>(st.st_size) > cap)
    return std::nullopt;
  std::string text(static_cast<std::size_t>(st.st_size), '\0');
  std::size_t got = 0;
  while (got < text.size()) {
    auto n = ::read(f.fd, text.data() + got, text.size() - got);
    if (n <= 0) return std::nullopt;
    got += static_cast<std::size_t>(n);
  }
  return text;
}

// The hex digest of what `fd` holds (read from the start), or nullopt.
std::optional<std::string> digest_of(int fd, std::string_view algo) {
  const EVP_MD* md = EVP_get_digestbyname(std::string(algo).c_str());
  if (!md) return std::nullopt;
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  if (!ctx || EVP_DigestInit_ex(ctx, md, nullptr) != 1) {
    EVP_MD_CTX_free(ctx);
    return std::nullopt;
  }
  char buf[1 << 16];
  bool ok = true;
  off_t off = 0;
  for (;;) {
    auto n = ::pread(fd, buf, sizeof buf, off);
    if (n < 0) {
      ok = false;
      break;
    }
    if (n == 0) break;
    off += n;
    if (EVP_DigestUpdate(ctx, buf, static_cast<std::size_t>(n)) != 1) {
      ok = false;
      break;
    }
  }
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned len = 0;
  if (ok) ok = EVP_DigestFinal_ex(ctx, out, &len) == 1;
  EVP_MD_CTX_free(ctx);
  if (!ok) return std::nullopt;
  return to_hex(std::string_view(reinterpret_cast<const char*>(out), len));
}

// Copy `from` (an open regular file) into `dir`/`name`, created exclusively; owned by uid/gid
// when given, mode `mode`. False on any failure (nothing half-written is left).
bool copy_into(int from, int dir, const std::string& name, mode_t mode, int uid, int gid,
               bool sync) {
  fd_t to(::openat(dir, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!to) return false;
  char buf[1 << 16];
  off_t off = 0;
  bool ok = true;
  for (;;) {
    auto n = ::pread(from, buf, sizeof buf, off);
    if (n < 0) ok = false;
    if (n <= 0) break;
    off += n;
    for (ssize_t w = 0; w < n;) {
      auto k = ::write(to.fd, buf + w, static_cast<std::size_t>(n - w));
      if (k <= 0) {
        ok = false;
        break;
      }
      w += k;
    }
    if (!ok) break;
  }
  if (ok && uid >= 0)
    ok = ::fchown(to.fd, static_cast<uid_t>(uid), static_cast<gid_t>(gid >= 0 ? gid : uid)) == 0;
  if (ok) ok = ::fchmod(to.fd, mode) == 0;
  if (ok && sync) ok = ::fdatasync(to.fd) == 0;
  if (!ok) ::unlinkat(dir, name.c_str(), 0);
  return ok;
}

// Entries of a directory (names only, no dot entries), never following symlinks.
std::vector<std::string> names_in(int dir) {
  std::vector<std::string> out;
  int d = ::dup(dir);
  if (d < 0) return out;
  DIR* dp = ::fdopendir(d);
  if (!dp) {
    ::close(d);
    return out;
  }
  ::rewinddir(dp);
  while (auto* e = ::readdir(dp)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") out.push_back(std::move(n));
  }
  ::closedir(dp);
  return out;
}

void remove_at(int dir, const std::string& name) {
  if (::unlinkat(dir, name.c_str(), 0) == 0 || errno == ENOENT) return;
  fd_t sub(::openat(dir, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (sub)
    for (const auto& n : names_in(sub.fd)) remove_at(sub.fd, n);
  // Best effort by contract: a directory that is not empty now is the caller's to report.
  (void)::unlinkat(dir, name.c_str(), AT_REMOVEDIR);
}

std::vector<std::string> split_slash(std::string_view path) {
  std::vector<std::string> out;
  std::size_t at = 0;
  while (at <= path.size()) {
    auto slash = path.find('/', at);
    if (slash == std::string_view::npos) slash = path.size();
    out.emplace_back(path.substr(at, slash - at));
    at = slash + 1;
  }
  return out;
}

std::string trim_blanks(std::string_view s) {
  auto b = s.find_first_not_of(" \t\r");
  if (b == std::string_view::npos) return {};
  auto e = s.find_last_not_of(" \t\r");
  return std::string(s.substr(b, e - b + 1));
}

std::string sha256_hex(std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned len = 0;
  if (EVP_Digest(data.data(), data.size(), out, &len, EVP_sha256(), nullptr) != 1) return {};
  return to_hex(std::string_view(reinterpret_cast<const char*>(out), len));
}

}  // namespace berth::setup::detail
