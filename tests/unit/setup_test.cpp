// berth::setup without a node: lockfile pins, detection, the script's report, failure reasons,
// and the cache store's verification and eviction.

#include "harness.hpp"

#include "berth/base/fs.hpp"
#include "berth/setup/cache.hpp"
#include "berth/setup/plan.hpp"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <sys/stat.h>

#include <filesystem>

using namespace berth;
namespace sfs = std::filesystem;

namespace {

std::string sha512_hex(const std::string& data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned len = 0;
  EVP_Digest(data.data(), data.size(), out, &len, EVP_sha512(), nullptr);
  static const char* d = "0123456789abcdef";
  std::string hex;
  for (unsigned i = 0; i < len; ++i) {
    hex += d[out[i] >> 4];
    hex += d[out[i] & 15];
  }
  return hex;
}

std::string b64_of_hex(const std::string& hex) {
  std::string raw;
  for (std::size_t i = 0; i < hex.size(); i += 2)
    raw.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  std::string out(4 * ((raw.size() + 2) / 3) + 1, '\0');
  auto n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                           reinterpret_cast<const unsigned char*>(raw.data()),
                           static_cast<int>(raw.size()));
  out.resize(static_cast<std::size_t>(n));
  return out;
}

// Put `data` where npm's cacache would keep it in `home`, under `hex` (its digest, or a lie).
void put_content(const std::string& home, const std::string& hex, const std::string& data) {
  auto dir = home + "/.npm/_cacache/content-v2/sha512/" + hex.substr(0, 2) + "/" + hex.substr(2, 2);
  sfs::create_directories(dir);
  test::write_file(dir + "/" + hex.substr(4), data);
}

}  // namespace

TEST(setup_pins, lockfiles_of_every_version_give_their_integrity_digests) {
  auto a = sha512_hex("a"), b = sha512_hex("b");
  auto v3 =
      "{\"lockfileVersion\": 3, \"packages\": {\"\": {}, \"node_modules/a\": {\"integrity\": "
      "\"sha512-" +
      b64_of_hex(a) + "\"}, \"node_modules/b\": {\"integrity\": \"sha512-" + b64_of_hex(b) +
      " sha1-" + b64_of_hex(std::string(40, 'f')) + "\"}}}";
  auto pins = setup::npm_pins(v3);
  ASSERT_EQ(pins.size(), 3u);
  EXPECT_EQ(pins[0].algorithm, "sha1");
  EXPECT_EQ(pins[1].hex == a || pins[2].hex == a, true);
  auto v1 = "{\"lockfileVersion\": 1, \"dependencies\": {\"a\": {\"integrity\": \"sha512-" +
            b64_of_hex(a) + "\", \"dependencies\": {\"b\": {\"integrity\": \"sha512-" +
            b64_of_hex(b) + "\"}}}}}";
  EXPECT_EQ(setup::npm_pins(v1).size(), 2u);
  // Hostile or broken pins are skipped, never thrown on.
  for (const char* bad :
       {"", "[]", "{\"packages\": 3}", "{\"packages\": {\"x\": {\"integrity\": 7}}}",
        "{\"packages\": {\"x\": {\"integrity\": \"sha512-!!!\"}}}",
        "{\"packages\": {\"x\": {\"integrity\": \"md5-AAAA\"}}}",
        "{\"packages\": {\"x\": {\"integrity\": \"sha512-AAAA\"}}}",
        "{\"packages\": {\"x\": {\"integrity\": \"sha512-../../etc\"}}}"})
    EXPECT_TRUE(setup::npm_pins(bad).empty()) << bad;
}

TEST(setup_detect, each_ecosystem_by_its_files) {
  test::temp_dir d;
  auto dir = d / "ws";
  sfs::create_directories(dir);
  EXPECT_TRUE(setup::detect(dir, {}).detected.empty());
  test::write_file(dir + "/package.json", "{}");
  EXPECT_EQ(setup::detect(dir, {}).steps[0].command, "npm install --no-audit --no-fund");
  test::write_file(dir + "/package-lock.json", "{}");
  EXPECT_EQ(setup::detect(dir, {}).steps[0].command, "npm ci --no-audit --no-fund");
  test::write_file(dir + "/yarn.lock", "");
  EXPECT_EQ(setup::detect(dir, {}).steps[0].manager, "yarn");
  test::write_file(dir + "/pnpm-lock.yaml", "");
  EXPECT_EQ(setup::detect(dir, {}).steps[0].command, "pnpm install --frozen-lockfile");
  test::write_file(
      dir + "/pyproject.toml",
      "[project]\nname = \"x\"\n[project.optional-dependencies]\ndev = [\"pytest\"]\n");
  auto p = setup::detect(dir, {});
  EXPECT_EQ(p.steps[1].command, "python3 -m venv .venv && .venv/bin/pip install -e '.[dev]'");
  // uv, when the sandbox's PATH has it.
  sfs::create_directories(d / "bin");
  test::write_file(d / "bin/uv", "#!/bin/sh\n");
  ::chmod((d / "bin/uv").c_str(), 0755);
  EXPECT_EQ(setup::detect(dir, {d / "bin"}).steps[1].manager, "uv");
  test::write_file(dir + "/go.mod", "module x\n");
  test::write_file(dir + "/Cargo.toml", "[package]\n");
  p = setup::detect(dir, {});
  EXPECT_EQ(p.detected, (std::vector<std::string>{"node", "python", "rust", "go"}));
  EXPECT_EQ(p.steps[2].command, "cargo fetch");
  EXPECT_EQ(p.steps[3].command, "go mod download");
  auto e = setup::explicit_plan(dir, {}, {"make", "deps"});
  EXPECT_EQ(e.detected.size(), 4u);
  ASSERT_EQ(e.steps.size(), 1u);
  EXPECT_EQ(e.steps[0].command, "make deps");
}

TEST(setup_report, the_script_reports_each_command_and_bad_lines_are_ignored) {
  test::temp_dir d;
  auto home = d / "home", ws = d / "ws";
  sfs::create_directories(home);
  sfs::create_directories(ws);
  setup::plan p;
  p.detected = {"node", "python"};
  p.steps = {{"node", "sh", "true", "package.json"}, {"python", "sh", "exit 3", "setup.py"}};
  auto argv = setup::script(p);
  auto out = test::run_checked(
      {"sh", "-c", "cd '" + ws + "' && HOME='" + home + "' sh -c \"$0\" || true", argv[2]});
  auto ran = setup::read_report(home);
  ASSERT_EQ(ran.size(), 2u) << out;
  EXPECT_EQ(ran[0].exit_code, 0);
  EXPECT_EQ(ran[1].exit_code, 3);
  auto why = setup::failure_reason(p, ran, false);
  ASSERT_TRUE(why);
  EXPECT_NE(why->find("`exit 3` (python) exited with code 3"), std::string::npos) << *why;
  EXPECT_NE(why->find("network = \"host\""), std::string::npos) << *why;
  EXPECT_FALSE(setup::failure_reason(p, {ran[0]}, false));
  test::write_file(home + "/" + setup::report_file, "0 0 5\nx y z\n9 -1 3\n1 300 1\n-2 0 0\n");
  ran = setup::read_report(home);
  ASSERT_EQ(ran.size(), 1u);  // negative, out-of-range and unparsable lines are dropped
  EXPECT_EQ(ran[0].duration_ms, 5);
  test::write_file(home + "/" + setup::report_file, "0 0 5\n9 0 1\n");
  EXPECT_EQ(setup::details(p, setup::read_report(home)).find("ran")->as_array().size(), 1u);
  // A symlinked report is never followed.
  sfs::remove(home + "/" + setup::report_file);
  test::write_file(d / "secret", "0 0 1\n");
  sfs::create_symlink(d / "secret", home + "/" + setup::report_file);
  EXPECT_TRUE(setup::read_report(home).empty());
}

TEST(setup_cache, only_content_that_hashes_to_its_name_is_shared_and_the_cap_holds) {
  test::temp_dir d;
  auto root = d / "store", home = d / "home", ws = d / "ws";
  sfs::create_directories(home);
  sfs::create_directories(ws);
  setup::cache_store store(root, 1 << 20, -1, -1);
  ASSERT_TRUE(store.open());
  std::string good = "a package tarball", other = "another one";
  put_content(home, sha512_hex(good), good);
  put_content(home, sha512_hex(other), "not what the name says");
  put_content(home, std::string(128, 'z'), "not hex");
  json::value rep = json::value::make_object();
  store.promote(home, rep);
  EXPECT_EQ(rep.find("npm")->get_int("added"), 1) << rep.dump();
  EXPECT_EQ(rep.find("npm")->get_int("refused"), 1) << rep.dump();
  auto stored = root + "/npm/sha512/" + sha512_hex(good).substr(0, 2) + "/" + sha512_hex(good);
  auto kept = fs::read_file(stored);
  ASSERT_TRUE(kept);
  EXPECT_EQ(*kept, good);
  struct stat st {};
  ASSERT_EQ(::stat(stored.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0444u);

  // A new session pinning it gets it seeded; one pinning something else gets nothing.
  test::write_file(ws + "/package-lock.json",
                   "{\"packages\": {\"node_modules/a\": {\"integrity\": \"sha512-" +
                       b64_of_hex(sha512_hex(good)) +
                       "\"}, \"node_modules/b\": {\"integrity\": "
                       "\"sha512-" +
                       b64_of_hex(sha512_hex(other)) + "\"}}}");
  auto home2 = d / "home2";
  sfs::create_directories(home2);
  auto seeded = store.seed(ws, home2);
  EXPECT_EQ(seeded.find("npm")->get_int("pinned"), 2);
  EXPECT_EQ(seeded.find("npm")->get_int("seeded"), 1);
  auto h = sha512_hex(good);
  auto linked = fs::read_file(home2 + "/.npm/_cacache/content-v2/sha512/" + h.substr(0, 2) + "/" +
                              h.substr(2, 2) + "/" + h.substr(4));
  ASSERT_TRUE(linked);
  EXPECT_EQ(*linked, good);
  // A symlinked .npm is never followed: nothing is written through it.
  auto home3 = d / "home3";
  sfs::create_directories(home3);
  sfs::create_directories(d / "elsewhere");
  sfs::create_symlink(d / "elsewhere", home3 + "/.npm");
  EXPECT_EQ(store.seed(ws, home3).find("npm")->get_int("seeded"), 0);
  EXPECT_TRUE(sfs::is_empty(d / "elsewhere"));

  auto u = store.usage();
  ASSERT_EQ(u.size(), 1u);
  EXPECT_EQ(u[0].entries, 1u);
  EXPECT_EQ(u[0].bytes, good.size());
  auto p = store.prune(0);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->entries, 1u);
  EXPECT_EQ(store.usage()[0].entries, 0u);

  // The cap: a store of 40 bytes keeps the most recently added entries within it.
  setup::cache_store small(d / "small", 40, -1, -1);
  ASSERT_TRUE(small.open());
  auto home4 = d / "home4";
  for (int i = 0; i < 4; ++i) {
    std::string data(16, static_cast<char>('a' + i));
    put_content(home4, sha512_hex(data), data);
    json::value r = json::value::make_object();
    small.promote(home4, r);
  }
  EXPECT_LE(small.usage()[0].bytes, 40u);
  EXPECT_EQ(small.usage()[0].entries, 2u);
}
