#include "pump.hpp"

#include "berth/base/fs.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

namespace berth::sandbox {

void pump_output(int& out_fd, int& err_fd, int exit_fd, const command& cmd, const output_fn& fn,
                 outcome& out, const std::function<bool()>& check_exit,
                 const std::function<void()>& tick) {
  using clock = std::chrono::steady_clock;
  std::uint64_t bytes[3] = {0, 0, 0};
  bool marked[3] = {false, false, false};
  std::string buf(cmd.chunk_bytes, '\0');
  bool exited = false;
  auto drain_deadline = clock::time_point::max();
  for (;;) {
    pollfd fds[3];
    int n = 0;
    int idx_out = -1, idx_err = -1, idx_exit = -1;
    if (out_fd >= 0) {
      fds[n] = {out_fd, POLLIN, 0};
      idx_out = n++;
    }
    if (err_fd >= 0) {
      fds[n] = {err_fd, POLLIN, 0};
      idx_err = n++;
    }
    if (!exited && exit_fd >= 0) {
      fds[n] = {exit_fd, POLLIN, 0};
      idx_exit = n++;
    }
    if (n == 0 && exited) break;
    ::poll(fds, static_cast<nfds_t>(n), 100);
    auto read_stream = [&](int idx, int& fd, int stream) {
      if (idx < 0 || !(fds[idx].revents & (POLLIN | POLLHUP | POLLERR))) return;
      auto r = ::read(fd, buf.data(), buf.size());
      if (r > 0) {
        auto len = static_cast<std::uint64_t>(r);
        auto before = bytes[stream];
        bytes[stream] += len;
        auto cap = static_cast<std::uint64_t>(cmd.max_output_bytes);
        if (before < cap) {
          auto keep = std::min<std::uint64_t>(len, cap - before);
          fn(stream, std::string_view(buf.data(), keep), false);
        }
        if (bytes[stream] > cap && !marked[stream]) {
          marked[stream] = true;
          out.truncated = true;
          fn(stream, std::string_view(), true);
        }
      } else if (r == 0 || (errno != EINTR && errno != EAGAIN)) {
        ::close(fd);
        fd = -1;
      }
    };
    read_stream(idx_out, out_fd, 1);
    read_stream(idx_err, err_fd, 2);
    if (!exited && (idx_exit < 0 || (fds[idx_exit].revents & POLLIN)) && check_exit()) {
      exited = true;
      drain_deadline = clock::now() + std::chrono::seconds(2);
    }
    tick();
    if (exited && clock::now() >= drain_deadline) break;  // a grandchild holds the pipes
  }
  for (int* fd : {&out_fd, &err_fd})
    if (*fd >= 0) {
      ::close(*fd);
      *fd = -1;
    }
  out.stdout_bytes = bytes[1];
  out.stderr_bytes = bytes[2];
}

void stdio_fds::close_child_ends() {
  for (int* fd : {&in, &out_w, &err_w})
    if (*fd >= 0) {
      ::close(*fd);
      *fd = -1;
    }
}

void stdio_fds::close_all() {
  close_child_ends();
  for (int* fd : {&out_r, &err_r})
    if (*fd >= 0) {
      ::close(*fd);
      *fd = -1;
    }
}

result<stdio_fds> make_stdio(const command& cmd) {
  stdio_fds f;
  int out[2], err[2];
  if (::pipe2(out, O_CLOEXEC) != 0)
    return error{errc::io_error, std::string("pipe: ") + errno_text(errno)};
  f.out_r = out[0];
  f.out_w = out[1];
  if (::pipe2(err, O_CLOEXEC) != 0) {
    int e = errno;
    f.close_all();
    return error{errc::io_error, std::string("pipe: ") + errno_text(e)};
  }
  f.err_r = err[0];
  f.err_w = err[1];
  if (cmd.stdin_data) {
    f.in = ::memfd_create("berth-stdin", MFD_CLOEXEC);
    if (f.in < 0 || fs::write_all(f.in, *cmd.stdin_data) != 0) {
      int e = errno;
      f.close_all();
      return error{errc::io_error, std::string("stdin: ") + errno_text(e)};
    }
    ::lseek(f.in, 0, SEEK_SET);
  } else {
    f.in = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  }
  ::fcntl(f.out_r, F_SETFL, O_NONBLOCK);
  ::fcntl(f.err_r, F_SETFL, O_NONBLOCK);
  return f;
}

}  // namespace berth::sandbox
