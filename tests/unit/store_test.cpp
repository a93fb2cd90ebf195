#include "harness.hpp"

#include "berth/persistence/snapshot_store.hpp"

#include <gtest/gtest.h>

#include <filesystem>

using namespace berth;
using persistence::snapshot_store;

TEST(snapshot_store, commits_survive_reopen) {
  test::temp_dir dir;
  {
    auto s = snapshot_store::open(dir / "db");
    ASSERT_TRUE(s.ok()) << s.err().message;
    persistence::write_set w;
    w.sessions = {{"a", "1"}, {"b", "2"}};
    ASSERT_TRUE((*s)->commit(w).ok());
    persistence::write_set d;
    d.deleted_sessions = {"a"};
    ASSERT_TRUE((*s)->commit(d).ok());
  }
  auto s = snapshot_store::open(dir / "db");
  ASSERT_TRUE(s.ok());
  EXPECT_FALSE((*s)->get_session("a")->has_value());
  EXPECT_EQ(**(*s)->get_session("b"), "2");
  int n = 0;
  ASSERT_TRUE((*s)->for_each_session([&](std::string_view, std::string_view) { ++n; }).ok());
  EXPECT_EQ(n, 1);
}

TEST(snapshot_store, refuses_a_newer_schema_naming_the_path) {
  test::temp_dir dir;
  {
    auto s = snapshot_store::open(dir / "db");
    ASSERT_TRUE(s.ok());
    persistence::write_set w;
    w.meta = {{"schema_version", "2"}};
    ASSERT_TRUE((*s)->commit(w).ok());
  }
  auto s = snapshot_store::open(dir / "db");
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(s.err().is(errc::unsupported));
  EXPECT_NE(s.err().message.find(dir / "db"), std::string::npos);
  EXPECT_NE(s.err().message.find("newer berth"), std::string::npos) << s.err().message;
}

TEST(snapshot_store, refuses_a_directory_that_is_not_a_database) {
  test::temp_dir dir;
  std::filesystem::create_directories(dir / "db");
  test::write_file(dir / "db/000123.sst", "garbage");
  auto s = snapshot_store::open(dir / "db");
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(s.err().is(errc::corrupt));
  EXPECT_NE(s.err().message.find("Refusing to start empty"), std::string::npos);
}

TEST(snapshot_store, refuses_a_damaged_database) {
  test::temp_dir dir;
  {
    auto s = snapshot_store::open(dir / "db");
    ASSERT_TRUE(s.ok());
  }
  for (const auto& e : std::filesystem::directory_iterator(dir / "db"))
    if (e.path().filename().string().rfind("MANIFEST", 0) == 0)
      test::write_file(e.path().string(), "not a manifest");
  auto s = snapshot_store::open(dir / "db");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.err().message.find(dir / "db"), std::string::npos) << s.err().message;
}

TEST(snapshot_store, a_second_opener_is_told_the_dir_is_in_use) {
  test::temp_dir dir;
  auto a = snapshot_store::open(dir / "db");
  ASSERT_TRUE(a.ok());
  auto b = snapshot_store::open(dir / "db");
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.err().message.find("another berth node"), std::string::npos) << b.err().message;
}
