#include "berth/session/spec.hpp"

#include <gtest/gtest.h>

using namespace berth;

namespace {
result<session::session_spec> spec_of(const std::string& text) {
  auto v = json::parse(text);
  if (!v) return v.err();
  return session::parse_spec(*v);
}
void expect_error(const std::string& text, const std::string& needle) {
  auto s = spec_of(text);
  ASSERT_FALSE(s.ok()) << text;
  EXPECT_NE(s.err().message.find(needle), std::string::npos) << s.err().message;
}
}  // namespace

TEST(spec, accepts_a_valid_workflow_and_round_trips) {
  auto s = spec_of(
      R"({"repo":"file:///srv/app.git","steps":[{"id":"build","run":["make","-j2"],"timeout":"10m",
                      "retry":{"max_attempts":3,"backoff":"2s","max_backoff":"30s"}}]})");
  ASSERT_TRUE(s.ok()) << s.err().message;
  EXPECT_EQ(s->steps[0].retry.max_attempts, 3);
  EXPECT_EQ(*s->steps[0].timeout, millis(600'000));
  auto again = session::parse_spec(session::to_json(*s));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(session::to_json(*again), session::to_json(*s));
}

TEST(spec, hostile_inputs_name_the_field) {
  expect_error(R"({"repo":"x","steps":[{"id":"a","run":[]}]})", "steps[0].run: must not be empty");
  expect_error(R"({"repo":"x","steps":[{"id":"a","run":"make"}]})",
               "steps[0].run: expected an array of strings, got string");
  expect_error(R"({"repo":"x","steps":[{"id":"a","run":["make"],"bogus":1}]})",
               "steps[0].bogus: unknown field");
  expect_error(R"({"repo":"x","steps":[],"extra":true})", "extra: unknown field");
  expect_error(R"({"repo":5,"steps":[{"id":"a","run":["x"]}]})",
               "repo: expected a string, got integer");
  expect_error(R"({"steps":[{"id":"a","run":["x"]}]})", "repo: is required");
  expect_error(R"({"repo":"x","steps":[{"id":"a","run":["x"]},{"id":"a","run":["y"]}]})",
               "steps[1].id: duplicate step id");
  expect_error(R"({"repo":"x","steps":[{"id":"a","run":["x"],"timeout":"soon"}]})",
               "steps[0].timeout: invalid duration");
  expect_error(R"({"repo":"x","steps":[{"id":"a","run":["x"],"retry":{"max_attempts":0}}]})",
               "steps[0].retry.max_attempts: 0 is out of range");
  expect_error(R"({"repo":"x","priority":12,"steps":[{"id":"a","run":["x"]}]})",
               "priority: 12 is out of range");
  expect_error(R"([1,2])", "spec: expected an object");
}

TEST(spec, session_ids_with_subject_characters_are_refused) {
  for (std::string bad : {"a.b", "a*", "a>", "a b", "a/b", ""}) {
    auto text = R"({"id":")" + bad + R"(","repo":"x","steps":[{"id":"s","run":["x"]}]})";
    auto s = spec_of(text);
    ASSERT_FALSE(s.ok()) << bad;
    EXPECT_EQ(s.err().message.rfind("id:", 0), 0u) << s.err().message;
  }
}

TEST(spec, oversized_spec_is_refused_with_the_limit) {
  std::string big(2 * 1024 * 1024, 'x');
  auto s = spec_of(R"({"repo":"x","goal":")" + big + R"(","steps":[{"id":"s","run":["x"]}]})");
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(s.err().is(errc::too_large));
  EXPECT_NE(s.err().message.find("session.max_spec_bytes"), std::string::npos);
}
