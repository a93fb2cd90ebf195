#include "berth/core/events.hpp"

#include "berth/base/time.hpp"

namespace berth::core {

bool is_terminal(std::string_view status) {
  for (const char* t : terminal_states)
    if (status == t) return true;
  return false;
}

// --- event -------------------------------------------------------------------------------------

json::value event::envelope() const {
  json::value v = json::value::make_object();
  v.set("session", session);
  v.set("n", n);
  v.set("type", type);
  v.set("ts", format_timestamp(ts_ms));
  v.set("data", data.is_null() ? json::value::make_object() : data);
  return v;
}

result<event> event::from_envelope(const json::value& v) {
  if (!v.is_object()) return error{errc::corrupt, "event: not a JSON object"};
  event e;
  e.session = v.get_string("session");
  e.n = v.get_int("n", 0);
  e.type = v.get_string("type");
  e.ts_ms = parse_timestamp(v.get_string("ts"));
  if (const auto* d = v.find("data")) e.data = *d;
  if (e.n <= 0 || e.type.empty()) return error{errc::corrupt, "event: missing n or type"};
  return e;
}

// --- state -------------------------------------------------------------------------------------

std::string terminal_event(std::string_view status) {
  return "session." + std::string(status);
}

bool is_terminal_event(std::string_view type) {
  return type.substr(0, 8) == "session." && is_terminal(type.substr(8));
}

}  // namespace berth::core
