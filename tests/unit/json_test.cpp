#include "berth/base/json.hpp"

#include "berth/base/time.hpp"

#include <gtest/gtest.h>

using namespace berth;

TEST(json, round_trips_nested_values_in_key_order) {
  auto v = json::parse(R"({"b":1,"a":[true,null,"x\n\"y\"",2.5,{"k":-3}]})");
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(v->dump(), R"({"b":1,"a":[true,null,"x\n\"y\"",2.5,{"k":-3}]})");
  EXPECT_EQ(v->get_int("b"), 1);
  EXPECT_EQ(v->find("a")->as_array().size(), 5u);
}

TEST(json, malformed_text_is_an_error_not_a_crash) {
  for (const char* bad : {"{", "{\"a\":}", "[1,2", "nul", "{\"a\" 1}", "\"\\u12\""}) {
    auto v = json::parse(bad);
    ASSERT_FALSE(v.ok()) << bad;
    EXPECT_TRUE(v.err().is(errc::invalid_argument));
    EXPECT_NE(v.err().message.find("malformed JSON"), std::string::npos);
  }
}

TEST(json, escapes_control_characters) {
  json::value v(
      std::string("a\x01"
                  "b"));
  EXPECT_EQ(v.dump(), "\"a\\u0001b\"");
}

TEST(json, set_replaces_existing_member) {
  json::value v = json::value::make_object();
  v.set("a", 1);
  v.set("a", "two");
  EXPECT_EQ(v.dump(), R"({"a":"two"})");
}

TEST(errc, names_round_trip_and_unknown_names_are_internal) {
  for (auto c : {errc::invalid_argument, errc::not_found, errc::conflict, errc::timeout,
                 errc::too_large, errc::fenced, errc::unavailable})
    EXPECT_EQ(errc_from_name(errc_name(make_error_code(c))), c);
  EXPECT_EQ(errc_from_name("no_such_code"), errc::internal);
  EXPECT_STREQ(errc_name(std::make_error_code(std::errc::io_error)), "internal");
}

TEST(time, timestamps_round_trip) {
  EXPECT_EQ(parse_timestamp(format_timestamp(1795320000123)), 1795320000123);
  EXPECT_EQ(parse_timestamp("yesterday"), 0);
}

TEST(json, strings_are_always_valid_utf8) {
  // Well-formed UTF-8 passes as it is; anything else becomes U+FFFD, so the text parses again.
  EXPECT_EQ(json::quote("h\xc3\xa9 \xe2\x82\xac \xf0\x9f\x9a\xa2"),
            "\"h\xc3\xa9 \xe2\x82\xac \xf0\x9f\x9a\xa2\"");
  const std::string bad[] = {"\xff",     "\xc3", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80",
                             "a\xe2\x82"};
  for (const auto& b : bad) {
    auto q = json::quote(b);
    EXPECT_NE(q.find("\xef\xbf\xbd"), std::string::npos) << q;
    auto v = json::parse(q);
    ASSERT_TRUE(v) << q;
  }
  json::value v = json::value::make_object();
  v.set("text", std::string("cut \xe2\x82"));
  EXPECT_TRUE(json::parse(v.dump()));
}
