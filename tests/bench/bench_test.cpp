// Every `berth bench` scenario, run with a small -n under whatever build this is (the dev
// preset's sanitizers included): it finishes within its time limit and prints a result per
// measure. No figure is asserted on (tests never assert on timing); the watchdog is checked by a
// scenario given a limit it cannot meet.

#include "harness.hpp"

#include <gtest/gtest.h>

using namespace berth;

namespace {

struct scenario {
  const char* name;
  const char* n;
};

class bench_smoke : public ::testing::TestWithParam<scenario> {};

}  // namespace

TEST_P(bench_smoke, finishes_within_its_time_limit_with_a_result_per_measure) {
  auto [name, n] = GetParam();
  auto r = test::run_berth({"bench", name, "-n", n, "-o", "json", "--time-limit", "8m"}, {},
                           std::chrono::seconds(600));
  ASSERT_EQ(r.code, 0) << r.err << r.out;
  auto v = r.json();
  ASSERT_TRUE(v) << r.out;
  EXPECT_EQ(v->get_string("scenario"), name);
  const auto* rows = v->find("results");
  ASSERT_TRUE(rows && rows->is_array() && !rows->as_array().empty()) << r.out;
  for (const auto& row : rows->as_array()) {
    SCOPED_TRACE(row.get_string("name"));
    EXPECT_GT(row.get_int("n"), 0);
    ASSERT_NE(row.find("berth_p50_us"), nullptr);
    EXPECT_TRUE(row.find("berth_p50_us")->is_number());
  }
}

INSTANTIATE_TEST_SUITE_P(every_scenario, bench_smoke,
                         ::testing::Values(scenario{"step", "20"}, scenario{"graph", "20"},
                                           scenario{"sessions", "20"}, scenario{"resume", "10"},
                                           scenario{"sandbox", "5"}, scenario{"workspace", "1"},
                                           scenario{"setup", "1"}, scenario{"gateway", "100"}),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(bench_watchdog, a_scenario_past_its_time_limit_stops_with_a_message_and_exit_code_4) {
  auto r = test::run_berth({"bench", "sessions", "-n", "5000", "--time-limit", "3s"}, {},
                           std::chrono::seconds(60));
  EXPECT_EQ(r.code, 4) << r.out << r.err;
  EXPECT_NE(r.err.find("bench sessions did not finish within its time limit of 3s"),
            std::string::npos)
      << r.err;
  // Nothing it started is left: no node of a bench dir still runs.
  auto left = test::run_checked({"sh", "-c", "pgrep -f '[b]erth-bench-.*/node' || true"});
  EXPECT_EQ(left, "") << left;
}

TEST(bench_watchdog, a_bad_time_limit_is_refused_naming_the_option) {
  auto r = test::run_berth({"bench", "step", "--time-limit", "soon"});
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("--time-limit"), std::string::npos) << r.err;
}
