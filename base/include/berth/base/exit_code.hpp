#pragma once

#include "berth/base/error.hpp"

namespace berth {

/// The CLI's exit codes (the CLI contract in DESIGN.md): 0 ok, 1 error, 2 usage, 3 not found,
/// 4 timeout. `berth` and `berth bench` both end with them.
enum exit_code : int { ok = 0, failure = 1, usage = 2, not_found = 3, timed_out = 4 };

/// The exit code an error maps to: not_found 3, timeout 4, invalid_argument and too_large 2,
/// anything else 1.
[[nodiscard]] exit_code exit_code_for(const error& e);

/// Print an error as the CLI does ("berth: <message>" on stderr) and return its exit code.
int report(const error& e);

}  // namespace berth
