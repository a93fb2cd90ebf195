#include "berth/base/fs.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace berth::fs {

result<std::string> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return error{errc::not_found, path + ": cannot open: " + errno_text(errno)};
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

status write_existing(const std::string& path, const std::string& content) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return error{errc::io_error, path + ": cannot open: " + errno_text(errno)};
  ssize_t n;
  do {
    n = ::write(fd, content.data(), content.size());
  } while (n < 0 && errno == EINTR);
  int e = errno;
  ::close(fd);
  if (n < 0)
    return error{errc::io_error, path + ": write of \"" + content + "\" refused: " + errno_text(e)};
  return {};
}

int write_all(int fd, std::string_view data) {
  std::size_t off = 0;
  while (off < data.size()) {
    auto n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    off += static_cast<std::size_t>(n);
  }
  return 0;
}

status write_file_atomic(const std::string& path, const std::string& content, unsigned mode) {
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  ::unlink(tmp.c_str());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, static_cast<mode_t>(mode));
  if (fd < 0) return error{errc::io_error, tmp + ": cannot create: " + errno_text(errno)};
  if (int e = write_all(fd, content)) {
    ::close(fd);
    ::unlink(tmp.c_str());
    return error{errc::io_error, tmp + ": write failed: " + errno_text(e)};
  }
  ::fchmod(fd, static_cast<mode_t>(mode));  // exact mode, whatever the umask
  ::fsync(fd);
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    return error{errc::io_error, path + ": rename failed: " + errno_text(e)};
  }
  return {};
}

status ensure_writable_dir(const std::string& path, const std::string& what) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  if (ec)
    return error{errc::permission_denied,
                 what + ": cannot create directory " + path + ": " + ec.message()};
  std::string probe = path + "/.berth-write-probe." + std::to_string(::getpid());
  int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0)
    return error{errc::permission_denied, what + ": directory " + path +
                                              " is not writable: " + errno_text(errno) +
                                              "; choose another directory or fix its permissions"};
  ::close(fd);
  ::unlink(probe.c_str());
  return {};
}

void remove_tree(const std::string& path) {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
}

}  // namespace berth::fs
