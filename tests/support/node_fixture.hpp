#pragma once

#include "harness.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace berth::test {

/// A test with a `berth node` of its own (a fresh data dir, an embedded nats-server): sessions
/// are started from workflow text and watched through the CLI, as a user would.
struct node_fixture : ::testing::Test {
  temp_dir dir;
  std::unique_ptr<node_process> node;
  int counter = 0;

  void SetUp() override {
    node = std::make_unique<node_process>(dir / "node");
    node->start();
  }

  run_result cli(const std::vector<std::string>& args) { return test::cli(*node, args); }

  /// Write a workflow file in the test's directory; returns its path.
  std::string workflow(const std::string& name, const std::string& text) {
    auto path = dir / name;
    write_file(path, text);
    return path;
  }
  std::string write_workflow(const std::string& text) {
    return workflow("wf-" + std::to_string(counter++) + ".toml", text);
  }

  /// Start a session from workflow text; returns its id ("" and a test failure when refused).
  std::string start(const std::string& text, const std::vector<std::string>& extra = {}) {
    std::string err;
    auto id = start_session(*node, write_workflow(text), extra, &err);
    EXPECT_FALSE(id.empty()) << err;
    return id;
  }

  std::string status(const std::string& id) { return session_field(*node, id, "status"); }

  bool ends(const std::string& id, const std::string& want,
            std::chrono::seconds t = std::chrono::seconds(60)) {
    return eventually([&] { return status(id) == want; }, t);
  }
};

}  // namespace berth::test
