#include "tools.hpp"

#include "berth/base/fs.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <regex>

namespace berth::sandbox::tools {

namespace {

constexpr std::size_t default_max_read = 8u << 20;
constexpr std::size_t max_write = 64u << 20;
constexpr std::size_t max_search_file = 4u << 20;

struct fd_guard {
  int fd = -1;
  explicit fd_guard(int f) : fd(f) {}
  ~fd_guard() {
    if (fd >= 0) ::close(fd);
  }
  fd_guard(const fd_guard&) = delete;
  fd_guard& operator=(const fd_guard&) = delete;
};

error sys_error(const std::string& what, int e) {
  switch (e) {
    case ENOENT:
      return error{errc::not_found, what + ": no such file or directory"};
    case EXDEV:
    case ELOOP:
      return error{errc::permission_denied, what + ": leads outside the workspace"};
    case EACCES:
    case EPERM:
    case EROFS:
      return error{errc::permission_denied, what + ": " + errno_text(e)};
    case EFBIG:
      return error{errc::too_large, what + ": file size limit reached"};
    default:
      return error{errc::io_error, what + ": " + errno_text(e)};
  }
}

// A path as the tools accept it: relative to the workspace, or absolute under /work.
result<std::string> relative(const json::value& req, const char* field, bool allow_root) {
  const auto* v = req.find(field);
  if (!v || !v->is_string())
    return error{errc::invalid_argument, std::string(field) + ": required"};
  std::string p = v->as_string();
  if (p.find('\0') != std::string::npos)
    return error{errc::invalid_argument, std::string(field) + ": contains a NUL byte"};
  if (p == "/work" || p == "/work/")
    p = ".";
  else if (p.rfind("/work/", 0) == 0)
    p = p.substr(6);
  else if (!p.empty() && p[0] == '/')
    return error{errc::permission_denied,
                 std::string(field) + ": " + p + " is outside the workspace"};
  if (p.empty()) p = ".";
  if (!allow_root && (p == "." || p == "./"))
    return error{errc::invalid_argument, std::string(field) + ": names the workspace itself"};
  return p;
}

int open_beneath(int root, const std::string& path, std::uint64_t flags, std::uint64_t mode = 0) {
  open_how how{};
  how.flags = flags | O_CLOEXEC;
  how.mode = mode;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
  return static_cast<int>(::syscall(SYS_openat2, root, path.c_str(), &how, sizeof(how)));
}

std::pair<std::string, std::string> split(const std::string& p) {
  auto slash = p.find_last_of('/');
  if (slash == std::string::npos) return {".", p};
  return {slash == 0 ? "/" : p.substr(0, slash), p.substr(slash + 1)};
}

result<std::string> read_beneath(int root, const std::string& path, std::size_t limit) {
  int fd = open_beneath(root, path, O_RDONLY | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) return sys_error(path, errno);
  fd_guard g(fd);
  struct stat st {};
  if (::fstat(fd, &st) != 0) return sys_error(path, errno);
  if (!S_ISREG(st.st_mode)) return error{errc::invalid_argument, path + ": not a regular file"};
  if (static_cast<std::size_t>(st.st_size) > limit)
    return error{errc::too_large, path + ": " + std::to_string(st.st_size) +
                                      " bytes, more than the limit of " + std::to_string(limit)};
  return wire::read_all(fd, limit, path);
}

// Write `data` to `path` atomically: a temporary file in the same directory, then rename.
result<std::size_t> write_beneath(int root, const std::string& path, std::string_view data,
                                  mode_t mode, bool make_dirs) {
  auto [dir, base] = split(path);
  if (base.empty() || base == "." || base == "..")
    return error{errc::invalid_argument, "path: " + path + " does not name a file"};
  if (make_dirs && dir != ".") {
    std::string sofar;
    std::size_t start = 0;
    while (start < dir.size()) {
      auto end = dir.find('/', start);
      auto part = dir.substr(start, end == std::string::npos ? std::string::npos : end - start);
      if (!part.empty()) {
        sofar += (sofar.empty() ? "" : "/") + part;
        int pfd = open_beneath(root, sofar, O_PATH | O_DIRECTORY);
        if (pfd >= 0) {
          ::close(pfd);
        } else if (errno == ENOENT) {
          auto [pd, pb] = split(sofar);
          int parent = open_beneath(root, pd, O_PATH | O_DIRECTORY);
          if (parent < 0) return sys_error(sofar, errno);
          fd_guard pg(parent);
          if (::mkdirat(parent, pb.c_str(), 0755) != 0 && errno != EEXIST)
            return sys_error(sofar, errno);
        } else {
          return sys_error(sofar, errno);
        }
      }
      if (end == std::string::npos) break;
      start = end + 1;
    }
  }
  int dfd = open_beneath(root, dir, O_PATH | O_DIRECTORY);
  if (dfd < 0) return sys_error(dir, errno);
  fd_guard dg(dfd);
  std::string tmp = "." + base + ".berth-tmp";
  int fd = ::openat(dfd, tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, mode);
  if (fd < 0) return sys_error(path, errno);
  if (int e = fs::write_all(fd, data)) {
    ::close(fd);
    ::unlinkat(dfd, tmp.c_str(), 0);
    return sys_error(path, e);
  }
  ::fchmod(fd, mode);
  ::close(fd);
  if (::renameat(dfd, tmp.c_str(), dfd, base.c_str()) != 0) {
    int e = errno;
    ::unlinkat(dfd, tmp.c_str(), 0);
    return sys_error(path, e);
  }
  return data.size();
}

const char* type_name(mode_t m) {
  if (S_ISREG(m)) return "file";
  if (S_ISDIR(m)) return "dir";
  if (S_ISLNK(m)) return "symlink";
  return "other";
}

result<wire::message> read_file(int root, const json::value& req) {
  auto path = relative(req, "path", false);
  if (!path) return path.err();
  auto limit = static_cast<std::size_t>(req.get_int("max_bytes", default_max_read));
  auto data = read_beneath(root, *path, limit);
  if (!data) return data.err();
  auto fd = wire::memfd_with(*data, "berth-read");
  if (!fd) return fd.err();
  wire::message m;
  m.body = json::value::make_object();
  m.body.set("bytes", static_cast<std::int64_t>(data->size()));
  m.fds.push_back(*fd);
  return m;
}

result<wire::message> write_file(int root, const json::value& req, const std::vector<int>& fds) {
  auto path = relative(req, "path", false);
  if (!path) return path.err();
  if (fds.size() != 1)
    return error{errc::invalid_argument, "write_file: content descriptor missing"};
  auto data = wire::read_all(fds[0], max_write, "content");
  if (!data) return data.err();
  auto mode = static_cast<mode_t>(req.get_int("mode", 0644) & 0777);
  auto n = write_beneath(root, *path, *data, mode, req.get_bool("make_dirs", true));
  if (!n) return n.err();
  wire::message m;
  m.body = json::value::make_object();
  m.body.set("bytes", static_cast<std::int64_t>(*n));
  return m;
}

result<wire::message> edit(int root, const json::value& req) {
  auto path = relative(req, "path", false);
  if (!path) return path.err();
  const auto* search = req.find("search");
  const auto* replace = req.find("replace");
  if (!search || !search->is_string() || search->as_string().empty())
    return error{errc::invalid_argument, "search: required, not empty"};
  if (!replace || !replace->is_string()) return error{errc::invalid_argument, "replace: required"};
  auto data = read_beneath(root, *path, max_write);
  if (!data) return data.err();
  const auto& s = search->as_string();
  std::size_t count = 0, at = std::string::npos;
  for (auto p = data->find(s); p != std::string::npos; p = data->find(s, p + 1)) {
    if (count == 0) at = p;
    ++count;
  }
  if (count != 1)
    return error{count == 0 ? errc::not_found : errc::conflict,
                 "edit " + *path + ": the search text matches " + std::to_string(count) +
                     " times; it must match exactly once"};
  data->replace(at, s.size(), replace->as_string());
  struct stat st {};
  int fd = open_beneath(root, *path, O_PATH);
  mode_t mode = 0644;
  if (fd >= 0) {
    if (::fstat(fd, &st) == 0) mode = st.st_mode & 0777;
    ::close(fd);
  }
  auto n = write_beneath(root, *path, *data, mode, false);
  if (!n) return n.err();
  wire::message m;
  m.body = json::value::make_object();
  m.body.set("bytes", static_cast<std::int64_t>(*n));
  return m;
}

result<wire::message> list_dir(int root, const json::value& req) {
  auto path = relative(req, "path", true);
  if (!path) return path.err();
  int fd = open_beneath(root, *path, O_RDONLY | O_DIRECTORY);
  if (fd < 0) return sys_error(*path, errno);
  DIR* d = ::fdopendir(fd);
  if (!d) {
    int e = errno;
    ::close(fd);
    return sys_error(*path, e);
  }
  std::vector<std::pair<std::string, json::value>> entries;
  bool truncated = false;
  while (auto* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    if (entries.size() >= 10000) {
      truncated = true;
      break;
    }
    struct stat st {};
    json::value v = json::value::make_object();
    v.set("name", name);
    if (::fstatat(::dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
      v.set("type", type_name(st.st_mode));
      v.set("size", static_cast<std::int64_t>(st.st_size));
    }
    entries.emplace_back(name, std::move(v));
  }
  ::closedir(d);
  std::sort(entries.begin(), entries.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  json::value arr = json::value::make_array();
  for (auto& [_, v] : entries) arr.push(std::move(v));
  wire::message m;
  m.body = json::value::make_object();
  m.body.set("entries", std::move(arr));
  m.body.set("truncated", truncated);
  return m;
}

struct searcher {
  std::regex re;
  std::size_t max_results;
  json::value matches = json::value::make_array();
  std::size_t found = 0;
  bool truncated = false;

  // Walk `dir` (a directory descriptor for `rel`); never follows symlinks.
  void walk(int dir, const std::string& rel, int depth) {
    if (truncated || depth > 64) return;
    int fd = ::openat(dir, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return;
    DIR* d = ::fdopendir(fd);
    if (!d) {
      ::close(fd);
      return;
    }
    std::vector<std::string> names;
    while (auto* e = ::readdir(d)) {
      std::string n = e->d_name;
      if (n != "." && n != ".." && n != ".git") names.push_back(n);
    }
    std::sort(names.begin(), names.end());
    for (const auto& n : names) {
      if (truncated) break;
      struct stat st {};
      if (::fstatat(::dirfd(d), n.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
      auto child = rel == "." ? n : rel + "/" + n;
      if (S_ISDIR(st.st_mode)) {
        int sub = ::openat(::dirfd(d), n.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (sub >= 0) {
          walk(sub, child, depth + 1);
          ::close(sub);
        }
      } else if (S_ISREG(st.st_mode) && static_cast<std::size_t>(st.st_size) <= max_search_file) {
        int f = ::openat(::dirfd(d), n.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        if (f < 0) continue;
        auto text = wire::read_all(f, max_search_file, child);
        ::close(f);
        if (text) scan(child, *text);
      }
    }
    ::closedir(d);
  }

  void scan(const std::string& file, const std::string& text) {
    if (text.find('\0') != std::string::npos) return;  // binary
    std::size_t line_no = 0, start = 0;
    while (start <= text.size() && !truncated) {
      auto end = text.find('\n', start);
      auto line = text.substr(start, end == std::string::npos ? std::string::npos : end - start);
      ++line_no;
      if (std::regex_search(line, re)) {
        if (found >= max_results) {
          truncated = true;
          break;
        }
        json::value m = json::value::make_object();
        m.set("path", file);
        m.set("line", static_cast<std::int64_t>(line_no));
        m.set("text", line.size() > 500 ? line.substr(0, 500) : line);
        matches.push(std::move(m));
        ++found;
      }
      if (end == std::string::npos) break;
      start = end + 1;
    }
  }
};

result<wire::message> search(int root, const json::value& req) {
  const auto* pat = req.find("pattern");
  if (!pat || !pat->is_string() || pat->as_string().empty())
    return error{errc::invalid_argument, "pattern: required, not empty"};
  auto path =
      relative(req.find("path") ? req : json::parse(R"({"path":"."})").value(), "path", true);
  if (!path) return path.err();
  searcher s;
  try {
    auto flags = std::regex::ECMAScript;
    if (req.get_bool("ignore_case")) flags |= std::regex::icase;
    s.re = req.get_bool("literal")
               ? std::regex(std::regex_replace(pat->as_string(),
                                               std::regex(R"([.^$|()\[\]{}*+?\\])"), R"(\$&)"),
                            flags)
               : std::regex(pat->as_string(), flags);
  } catch (const std::regex_error& e) {
    return error{errc::invalid_argument,
                 std::string("pattern: not a valid regular expression: ") + e.what()};
  }
  s.max_results =
      static_cast<std::size_t>(std::clamp<std::int64_t>(req.get_int("max_results", 200), 1, 10000));
  int fd = open_beneath(root, *path, O_RDONLY | O_DIRECTORY);
  if (fd < 0) return sys_error(*path, errno);
  s.walk(fd, *path, 0);
  ::close(fd);
  wire::message m;
  m.body = json::value::make_object();
  m.body.set("matches", std::move(s.matches));
  m.body.set("truncated", s.truncated);
  return m;
}

}  // namespace

result<wire::message> run(int root, const std::string& op, const json::value& req,
                          const std::vector<int>& fds) {
  if (op == "read_file") return read_file(root, req);
  if (op == "write_file") return write_file(root, req, fds);
  if (op == "edit") return edit(root, req);
  if (op == "list_dir") return list_dir(root, req);
  if (op == "search") return search(root, req);
  return error{errc::invalid_argument, "op: unknown tool \"" + op + "\""};
}

}  // namespace berth::sandbox::tools
