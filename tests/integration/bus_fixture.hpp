#pragma once

#include "harness.hpp"

#include "berth/bus/client.hpp"

#include <gtest/gtest.h>

namespace berth::test {

/// A real nats-server -js on a random port and a provisioned client connected to it.
struct bus_fixture : ::testing::Test {
  temp_dir dir;
  nats_server server{dir / "nats"};
  std::shared_ptr<bus::client> c;
  bus::subjects names{"berth"};

  void SetUp() override {
    server.start();
    bus::client::options o;
    o.servers = {server.url()};
    o.request_timeout = millis(3000);
    auto r = bus::client::connect(o);
    ASSERT_TRUE(r.ok()) << r.err().message;
    c = std::move(*r);
    ASSERT_TRUE(c->provision(names, {}).ok());
  }
};

}  // namespace berth::test
