#pragma once

#include "berth/sandbox/runner.hpp"

#include <functional>

namespace berth::sandbox {

/// The output loop every runner shares. Reads a command's stdout/stderr (non-blocking
/// descriptors, closed here) in chunks, delivers them through `fn` up to the command's cap per
/// stream and marks the cut once; keeps reading past the cap so the command never blocks and
/// the node's memory stays flat. `exit_fd` becomes readable when the command may have ended;
/// `check_exit()` then says whether it has. After the end the streams are drained for at most
/// two seconds (a grandchild holding them open does not hold the step). `tick()` runs at least
/// every 100 ms (stop deadlines). Fills the byte counts and `truncated` of `out`.
void pump_output(int& out_fd, int& err_fd, int exit_fd, const command& cmd, const output_fn& fn,
                 outcome& out, const std::function<bool()>& check_exit,
                 const std::function<void()>& tick);

/// A command's standard descriptors, all close-on-exec: `in` for the child (its stdin data in
/// a memfd, else /dev/null), and the stdout/stderr pipes (read ends non-blocking, for
/// pump_output). The parent closes the child's ends once the child has them.
struct stdio_fds {
  int in = -1, out_r = -1, out_w = -1, err_r = -1, err_w = -1;
  void close_child_ends();  ///< in, out_w, err_w
  void close_all();
};
[[nodiscard]] result<stdio_fds> make_stdio(const command& cmd);

}  // namespace berth::sandbox
