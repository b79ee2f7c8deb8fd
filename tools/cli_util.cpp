#include "tools/cli_util.h"

#include <unistd.h>

#include <cstdio>
#include <fstream>

#include "engine/error.h"

namespace fs = std::filesystem;

namespace ipna::cli {

volatile std::sig_atomic_t g_interrupted = 0;

void install_interrupt_handler() {
  std::signal(SIGINT, [](int) { g_interrupted = 1; });
}

Progress::Progress(std::string label, bool enabled) : label_(std::move(label)), tty_(enabled && isatty(fileno(stderr))) {}

void Progress::operator()(int done, int total) {
  if (g_interrupted) throw Error("interrupted");
  if (!tty_) return;
  const int width = 30, fill = total ? done * width / total : width;
  std::fprintf(stderr, "\r%-26s [%.*s%*s] %d/%d", label_.c_str(), fill, "##############################",
               width - fill, "", done, total);
  if (done >= total) std::fputs("\r\033[K", stderr);
  std::fflush(stderr);
}

OutputDir::OutputDir(const std::string& final_dir) : final_(final_dir), final_str_(final_dir) {
  if (final_dir.empty()) throw Error("no output folder given (-o DIR)");
  tmp_ = final_.string() + ".partial-" + std::to_string(getpid());
  std::error_code ec;
  fs::remove_all(tmp_, ec);
  fs::create_directories(tmp_, ec);
  if (ec) throw Error("cannot create output folder '" + tmp_.string() + "': " + ec.message());
}

OutputDir::~OutputDir() {
  std::error_code ec;
  if (!committed_) fs::remove_all(tmp_, ec);
}

std::string OutputDir::path(const std::string& name) const { return (tmp_ / name).string(); }

void OutputDir::commit() {
  if (g_interrupted) throw Error("interrupted");
  std::error_code ec;
  fs::remove_all(final_, ec);
  fs::rename(tmp_, final_, ec);
  if (ec) throw Error("cannot move outputs into '" + final_.string() + "': " + ec.message());
  committed_ = true;
}

void write_text(const std::string& path, const std::string& content) {
  std::ofstream f(path);
  f << content;
  if (!f) throw Error("failed writing '" + path + "'");
}

}  // namespace ipna::cli
