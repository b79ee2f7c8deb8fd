// Output folders never cost the user a file: each case that once deleted
// files (tests/cli_outputs_test.cmake runs the same through the CLI) and the
// replace-aside protocol.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "tools/cli_util.h"

namespace ipna::test {
namespace {

namespace fs = std::filesystem;
using cli::OutputDir;

std::string t_home() {
  const char* h = std::getenv("HOME");
  return h && *h ? h : "/root";
}

// A scratch folder with a user's file in it, made the current folder for the test.
class OutputDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("ipna_outdir_" + std::to_string(getpid()));
    fs::remove_all(root_);
    fs::create_directories(root_ / "work");
    old_cwd_ = fs::current_path();
    fs::current_path(root_ / "work");
    write("thesis.txt", "chapter 1");
  }
  void TearDown() override {
    fs::current_path(old_cwd_);
    fs::remove_all(root_);
  }
  static void write(const fs::path& p, const std::string& text) { std::ofstream(p) << text; }
  static std::string read(const fs::path& p) {
    std::ifstream f(p);
    return std::string((std::istreambuf_iterator<char>(f)), {});
  }
  // Everything under the scratch root, so a test can assert nothing else appeared.
  std::vector<std::string> listing() const {
    std::vector<std::string> out;
    for (const auto& e : fs::recursive_directory_iterator(root_)) out.push_back(fs::relative(e.path(), root_).string());
    std::sort(out.begin(), out.end());
    return out;
  }
  static void produce(const std::string& target, bool overwrite, const std::string& content) {
    OutputDir out(target, overwrite);
    write(out.path("report.json"), content);
    out.commit();
  }
  fs::path root_, old_cwd_;
};

TEST_F(OutputDirTest, RefusesFoldersThatHoldTheCurrentOneAndTheUsersHome) {
  for (const std::string t : {".", "./", "..", "../", "/", "../work", "../../"})
    EXPECT_THROW(OutputDir(t, false), Error) << t;
  EXPECT_THROW(OutputDir(t_home(), true), Error);
  EXPECT_EQ(read("thesis.txt"), "chapter 1");
  EXPECT_EQ(listing(), (std::vector<std::string>{"work", "work/thesis.txt"}));
}

TEST_F(OutputDirTest, RefusesAnExistingFileOrALink) {
  EXPECT_THROW(OutputDir("thesis.txt", true), Error);
  fs::create_directory_symlink(root_ / "work", "link");
  EXPECT_THROW(OutputDir("link", true), Error);
  EXPECT_EQ(read("thesis.txt"), "chapter 1");
}

TEST_F(OutputDirTest, RefusesAFolderOfTheUsersFilesUnlessOverwrite) {
  fs::create_directory("mine");
  write("mine/notes.txt", "keep");
  try {
    OutputDir("mine/", false);
    ADD_FAILURE() << "accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("notes.txt"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("--overwrite"), std::string::npos) << e.what();
  }
  EXPECT_EQ(read("mine/notes.txt"), "keep");
  produce("mine", true, "new");
  EXPECT_FALSE(fs::exists("mine/notes.txt"));
  EXPECT_EQ(read("mine/report.json"), "new");
}

TEST_F(OutputDirTest, TrailingSlashNewAndNestedFolders) {
  produce("new/", false, "a");
  produce("deep/er/out/", false, "b");
  EXPECT_EQ(read("new/report.json"), "a");
  EXPECT_EQ(read("deep/er/out/report.json"), "b");
  EXPECT_TRUE(fs::exists(fs::path("new") / OutputDir::kMarker));
  EXPECT_EQ(fs::status("new").permissions() & fs::perms::others_read, fs::perms::others_read);  // not mkdtemp's 0700
}

TEST_F(OutputDirTest, ReplacesItsOwnEarlierOutputLeavingNothingBehind) {
  produce("run", false, "first");
  write("run/extra.npy", "old");
  produce("run/", false, "second");
  EXPECT_EQ(read("run/report.json"), "second");
  EXPECT_FALSE(fs::exists("run/extra.npy"));
  const auto l = listing();
  EXPECT_EQ(l, (std::vector<std::string>{"work", "work/run", "work/run/.ipna-fast-output", "work/run/report.json",
                                         "work/thesis.txt"}));
}

TEST_F(OutputDirTest, AFailedRunKeepsTheEarlierOutputAndRemovesWhatItCreated) {
  produce("run", false, "first");
  {
    OutputDir out("run", false);
    write(out.path("report.json"), "half");
  }  // no commit: an error or Ctrl-C
  {
    OutputDir out("new/parents/run", false);
    write(out.path("report.json"), "half");
  }
  EXPECT_EQ(read("run/report.json"), "first");
  EXPECT_FALSE(fs::exists("new"));
  EXPECT_EQ(listing().size(), 5u);  // work, thesis.txt, run and its two files
}

TEST_F(OutputDirTest, AnUnwritableLocationFailsBeforeAnyWork) {
  EXPECT_THROW(OutputDir("thesis.txt/out", false), Error);  // a parent is a file
  EXPECT_EQ(read("thesis.txt"), "chapter 1");
}

}  // namespace
}  // namespace ipna::test
