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

}  // namespace berth::sandbox
