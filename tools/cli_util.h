// What every subcommand shares: atomic output folders, a progress bar that
// stays quiet off a terminal, and Ctrl-C handling.
#pragma once
#include <csignal>
#include <filesystem>
#include <string>

namespace ipna::cli {

extern volatile std::sig_atomic_t g_interrupted;
void install_interrupt_handler();

// A one-line progress bar on stderr, only when stderr is a terminal (and not
// with --json). Throws ipna::Error("interrupted") after Ctrl-C.
class Progress {
 public:
  explicit Progress(std::string label, bool enabled = true);
  void operator()(int done, int total);

 private:
  std::string label_;
  bool tty_;
};

// Outputs go to a sibling temporary folder renamed into place by commit(), so
// an error or Ctrl-C never leaves a half-written output folder.
class OutputDir {
 public:
  explicit OutputDir(const std::string& final_dir);
  ~OutputDir();
  OutputDir(const OutputDir&) = delete;
  OutputDir& operator=(const OutputDir&) = delete;
  std::string path(const std::string& name) const;
  const std::string& final_path() const { return final_str_; }
  void commit();

 private:
  std::filesystem::path final_, tmp_;
  std::string final_str_;
  bool committed_ = false;
};

void write_text(const std::string& path, const std::string& content);

}  // namespace ipna::cli
