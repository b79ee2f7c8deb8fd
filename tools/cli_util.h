// What every subcommand shares: output folders that never cost the user a
// file, a progress bar that stays quiet off a terminal, Ctrl-C handling, and
// strict parsing of command-line values.
#pragma once
#include <csignal>
#include <filesystem>
#include <string>
#include <vector>

#include "engine/error.h"

namespace ipna::cli {

// A bad command-line value: the CLI exits with code 2, as for CLI11's own errors.
class UsageError : public Error {
 public:
  using Error::Error;
};

extern volatile std::sig_atomic_t g_interrupted;
// Ctrl-C sets g_interrupted, and the work stops at its next check (between
// chunks of steps, images or pruning levels); a second Ctrl-C, one to two seconds or more after the
// first, ends the process at once (a repeat sooner is taken for the same interrupt).
void install_interrupt_handler();
// Throws ipna::Error("interrupted") after Ctrl-C.
void check_interrupt();

// A one-line progress bar on stderr, only when stderr is a terminal (and not
// with --json). Checks for Ctrl-C on every call.
class Progress {
 public:
  explicit Progress(std::string label, bool enabled = true);
  void operator()(int done, int total);
  // Whether a bar is drawn and unfinished: a message printed now needs a new line first.
  static bool line_open();

 private:
  std::string label_;
  bool tty_;
};

// An output folder that is written completely or not at all, and never costs
// the user a file they wrote:
// - refused: "/", the home folder, any folder containing the current one, an
//   existing file or symbolic link, and an existing non-empty folder unless an
//   earlier ipna-fast run wrote it (the marker file kMarker) or `overwrite` is set;
// - everything is written into a hidden sibling folder created at once (so an
//   unwritable location fails before any work), and commit() renames it into
//   place; an earlier output is first renamed aside and deleted only once the
//   new one is in place;
// - without commit() (an error, Ctrl-C) the sibling and any parent folders
//   created for it are removed.
class OutputDir {
 public:
  static constexpr const char* kMarker = ".ipna-fast-output";
  OutputDir(const std::string& target, bool overwrite);
  ~OutputDir();
  OutputDir(const OutputDir&) = delete;
  OutputDir& operator=(const OutputDir&) = delete;
  std::string path(const std::string& name) const;
  const std::filesystem::path& final_path() const { return final_; }
  void commit();

 private:
  // Throws when `final_` may not be replaced; true when it exists.
  bool check_replaceable() const;
  std::filesystem::path final_, tmp_;
  std::vector<std::filesystem::path> created_parents_;  // outermost last
  bool overwrite_ = false, committed_ = false;
};

void write_text(const std::string& path, const std::string& content);

// Strict parses of command-line values: the whole text must be the number.
// `what` names the argument in the UsageError.
int parse_int(const std::string& text, const std::string& what);
double parse_double(const std::string& text, const std::string& what);
// "0,0.1,0.5" -> {0, 0.1, 0.5}
std::vector<double> parse_double_list(const std::string& text, const std::string& what);

}  // namespace ipna::cli
