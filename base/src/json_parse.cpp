// JSON parsing with simdjson. Separate from json.cpp so that a small binary (the sandbox
// helper) can use json::value with a parser of its own and no simdjson.
#include "berth/base/json.hpp"

#include <simdjson.h>

namespace berth::json {

namespace {

value convert(simdjson::dom::element e) {
  using t = simdjson::dom::element_type;
  switch (e.type()) {
    case t::ARRAY: {
      value::array a;
      simdjson::dom::array arr = e.get_array().value_unsafe();  // keep it alive while iterating
      for (auto child : arr) a.push_back(convert(child));
      return value(std::move(a));
    }
    case t::OBJECT: {
      value::object o;
      simdjson::dom::object obj = e.get_object().value_unsafe();
      for (auto field : obj) o.emplace_back(std::string(field.key), convert(field.value));
      return value(std::move(o));
    }
    case t::INT64:
      return value(e.get_int64().value_unsafe());
    case t::UINT64:
      return value(static_cast<double>(e.get_uint64().value_unsafe()));
    case t::DOUBLE:
      return value(e.get_double().value_unsafe());
    case t::STRING:
      return value(std::string(e.get_string().value_unsafe()));
    case t::BOOL:
      return value(e.get_bool().value_unsafe());
    case t::NULL_VALUE:
      return value();
  }
  return value();
}

}  // namespace

result<value> parse(std::string_view text) {
  // One parser per thread: simdjson parsers are reusable but not thread-safe.
  thread_local simdjson::dom::parser parser;
  simdjson::padded_string padded(text);
  simdjson::dom::element root;
  auto err = parser.parse(padded).get(root);
  if (err)
    return error{errc::invalid_argument,
                 std::string("malformed JSON: ") + simdjson::error_message(err)};
  return convert(root);
}

}  // namespace berth::json
