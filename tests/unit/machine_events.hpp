#pragma once

// Events the machine tests feed in, built as the API would journal them.

#include "berth/core/machine.hpp"

#include <cstdint>
#include <string>

namespace berth::test {

/// Event 1 of session `id`: `session.accepted` with `spec` and the node's default timeout.
inline core::event accepted_event(const std::string& id, const json::value& spec,
                                  std::int64_t ts = 1000, std::int64_t timeout_ms = 60'000) {
  core::event e;
  e.session = id;
  e.n = 1;
  e.type = "session.accepted";
  e.ts_ms = ts;
  e.data = json::value::make_object();
  e.data.set("spec", spec);
  e.data.set("accepted_seq", 1);
  e.data.set("timeout_ms", timeout_ms);
  return e;
}

}  // namespace berth::test
