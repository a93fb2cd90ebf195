#include "berth/sandbox/wire.hpp"

#include "berth/base/fs.hpp"

#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace berth::sandbox::wire {

namespace {

status send_raw(int sock, std::string_view data, const std::vector<int>& fds) {
  iovec iov{const_cast<char*>(data.data()), data.size()};
  msghdr mh{};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * max_fds)];
  if (!fds.empty()) {
    if (fds.size() > max_fds) return error{errc::invalid_argument, "too many descriptors"};
    mh.msg_control = control;
    mh.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  for (;;) {
    auto n = ::sendmsg(sock, &mh, MSG_NOSIGNAL);
    if (n >= 0) return {};
    if (errno == EINTR) continue;
    if (errno == EPIPE || errno == ECONNRESET)
      return error{errc::unavailable, "the sandbox helper is gone"};
    return error{errc::io_error, std::string("sandbox socket: ") + errno_text(errno)};
  }
}

}  // namespace

status send(int sock, const json::value& body, const std::vector<int>& fds) {
  auto text = body.dump();
  if (text.size() <= max_inline) return send_raw(sock, text, fds);
  // Too big for one packet: the body travels in a memfd, listed first.
  auto fd = memfd_with(text, "berth-msg");
  if (!fd) return fd.err();
  std::vector<int> all{*fd};
  all.insert(all.end(), fds.begin(), fds.end());
  auto st = send_raw(sock, R"({"via_fd":true})", all);
  ::close(*fd);
  return st;
}

result<message> receive(int sock) {
  std::string buf(max_inline + 1024, '\0');
  iovec iov{buf.data(), buf.size()};
  msghdr mh{};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * (max_fds + 1))];
  mh.msg_control = control;
  mh.msg_controllen = sizeof(control);
  ssize_t n;
  do {
    n = ::recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return error{errc::io_error, std::string("sandbox socket: ") + errno_text(errno)};
  message out;
  for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    auto count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (std::size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      out.fds.push_back(fd);
    }
  }
  auto close_fds = [&] {
    for (int fd : out.fds) ::close(fd);
    out.fds.clear();
  };
  if (n == 0) {
    close_fds();
    return error{errc::unavailable, "the sandbox helper closed its socket"};
  }
  if (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
    close_fds();
    return error{errc::corrupt, "sandbox message truncated"};
  }
  auto body = json::parse(std::string_view(buf.data(), static_cast<std::size_t>(n)));
  if (!body || !body->is_object()) {
    close_fds();
    return error{errc::corrupt, "sandbox message is not a JSON object"};
  }
  if (body->get_bool("via_fd")) {
    if (out.fds.empty()) return error{errc::corrupt, "sandbox message without its memfd"};
    int fd = out.fds.front();
    out.fds.erase(out.fds.begin());
    auto text = read_all(fd, 256u << 20, "sandbox message");
    ::close(fd);
    if (!text) {
      close_fds();
      return text.err();
    }
    body = json::parse(*text);
    if (!body || !body->is_object()) {
      close_fds();
      return error{errc::corrupt, "sandbox message is not a JSON object"};
    }
  }
  out.body = std::move(*body);
  return out;
}

result<int> memfd_with(std::string_view data, const char* name) {
  int fd = ::memfd_create(name, MFD_CLOEXEC);
  if (fd < 0) return error{errc::io_error, std::string("memfd_create: ") + errno_text(errno)};
  if (int e = fs::write_all(fd, data)) {
    ::close(fd);
    return error{errc::io_error, std::string("memfd write: ") + errno_text(e)};
  }
  ::lseek(fd, 0, SEEK_SET);
  return fd;
}

result<std::string> read_all(int fd, std::size_t limit, const std::string& what) {
  std::string out;
  char buf[65536];
  for (;;) {
    auto r = ::read(fd, buf, sizeof(buf));
    if (r < 0) {
      if (errno == EINTR) continue;
      return error{errc::io_error, what + ": " + errno_text(errno)};
    }
    if (r == 0) return out;
    if (out.size() + static_cast<std::size_t>(r) > limit)
      return error{errc::too_large, what + " is larger than " + std::to_string(limit) + " bytes"};
    out.append(buf, static_cast<std::size_t>(r));
  }
}

}  // namespace berth::sandbox::wire
