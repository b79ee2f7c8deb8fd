#include "tools/cli_util.h"

#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

namespace fs = std::filesystem;

namespace ipna::cli {

volatile std::sig_atomic_t g_interrupted = 0;

namespace {
volatile std::sig_atomic_t g_first_interrupt_s = 0;  // CLOCK_MONOTONIC seconds of the first Ctrl-C

std::sig_atomic_t monotonic_seconds() {  // clock_gettime is async-signal-safe
  timespec t{};
  clock_gettime(CLOCK_MONOTONIC, &t);
  return static_cast<std::sig_atomic_t>(t.tv_sec);
}

void on_interrupt(int) {
  if (!g_interrupted) {
    g_first_interrupt_s = monotonic_seconds();
    g_interrupted = 1;
    return;
  }
  // One interrupt often arrives twice: `timeout` and job controllers signal the process and then its
  // whole group. A repeat within the first's clock second or the next is that same interrupt, and the
  // run goes on to clean up; a later Ctrl-C stops at once (leaving the temporary output folder behind).
  if (monotonic_seconds() - g_first_interrupt_s < 2) return;
  std::signal(SIGINT, SIG_DFL);
  std::raise(SIGINT);
}
}  // namespace

void install_interrupt_handler() { std::signal(SIGINT, on_interrupt); }

void check_interrupt() {
  if (g_interrupted) throw Interrupted();
}

namespace {
bool g_line_open = false;
}

Progress::Progress(std::string label, bool enabled) : label_(std::move(label)), tty_(enabled && isatty(fileno(stderr))) {}

bool Progress::line_open() { return g_line_open; }

void Progress::operator()(int done, int total) {
  check_interrupt();
  if (!tty_) return;
  g_line_open = done < total;
  const int width = 30, fill = total ? done * width / total : width;
  std::fprintf(stderr, "\r%-26s [%.*s%*s] %d/%d", label_.c_str(), fill, "##############################",
               width - fill, "", done, total);
  if (done >= total) std::fputs("\r\033[K", stderr);
  std::fflush(stderr);
}

namespace {

// Absolute, "." and ".." resolved lexically, no trailing separator ("out/" is "out").
fs::path normalise(const std::string& target) {
  fs::path p = fs::absolute(fs::path(target)).lexically_normal();
  if (p.has_relative_path() && p.filename().empty()) p = p.parent_path();
  return p;
}

// a is dir or lies inside it.
bool within(const fs::path& a, const fs::path& dir) {
  auto d = dir.begin(), x = a.begin();
  for (; d != dir.end(); ++d, ++x)
    if (x == a.end() || *x != *d) return false;
  return true;
}

// A new, uniquely named sibling folder of `target` with the permissions a
// plain mkdir would give (mkdtemp makes it private).
fs::path make_sibling(const fs::path& target, const char* kind) {
  std::string templ = (target.parent_path() / ("." + target.filename().string() + "." + kind + "-XXXXXX")).string();
  if (!mkdtemp(templ.data()))
    throw Error("cannot write into '" + target.parent_path().string() + "': " + std::strerror(errno));
  const mode_t mask = umask(0);
  umask(mask);
  std::error_code ec;
  fs::permissions(templ, static_cast<fs::perms>(0777 & ~mask), ec);
  return templ;
}

}  // namespace

OutputDir::OutputDir(const std::string& target, bool overwrite) : overwrite_(overwrite) {
  if (target.empty()) throw Error("no output folder given");
  final_ = normalise(target);
  std::error_code ec;
  const fs::path real = fs::weakly_canonical(final_, ec);
  const fs::path cwd = fs::weakly_canonical(fs::current_path(ec), ec);
  const char* home = std::getenv("HOME");
  auto refuse = [&](const std::string& why) {
    throw Error("refusing to write the outputs to '" + target + "': " + why + "; give a new folder for them");
  };
  if (!final_.has_relative_path() || real == real.root_path()) refuse("it is the root folder");
  if (home && *home && !ec && real == fs::weakly_canonical(home, ec)) refuse("it is your home folder");
  if (within(cwd, real) || within(cwd, final_)) refuse("it is or contains the current folder");
  check_replaceable();

  // The parent folders, created as needed (and removed again if nothing is committed).
  for (fs::path p = final_.parent_path(); !p.empty(); p = p.parent_path()) {
    const fs::file_status st = fs::status(p, ec);
    if (fs::exists(st)) {
      if (!fs::is_directory(st)) throw Error("cannot create the output folder '" + target + "': '" + p.string() + "' is not a folder");
      break;
    }
    created_parents_.insert(created_parents_.begin(), p);
    if (p == p.parent_path()) break;
  }
  for (const fs::path& p : created_parents_)
    if (!fs::create_directory(p, ec) && ec) {
      const std::string why = ec.message();
      for (auto it = created_parents_.rbegin(); it != created_parents_.rend(); ++it) fs::remove(*it, ec);
      throw Error("cannot create the output folder '" + p.string() + "': " + why);
    }
  try {
    tmp_ = make_sibling(final_, "partial");
    write_text(path(kMarker), "This folder was written by ipna-fast; a later run may replace it.\n");
  } catch (...) {
    if (!tmp_.empty()) fs::remove_all(tmp_, ec);
    for (auto it = created_parents_.rbegin(); it != created_parents_.rend(); ++it) fs::remove(*it, ec);
    throw;
  }
}

OutputDir::~OutputDir() {
  if (committed_) return;
  std::error_code ec;
  fs::remove_all(tmp_, ec);
  for (auto it = created_parents_.rbegin(); it != created_parents_.rend(); ++it) fs::remove(*it, ec);  // only if empty
}

std::string OutputDir::path(const std::string& name) const { return (tmp_ / name).string(); }

bool OutputDir::check_replaceable() const {
  std::error_code ec;
  const fs::file_status st = fs::symlink_status(final_, ec);
  if (!fs::exists(st)) return false;
  const std::string at = "'" + final_.string() + "'";
  if (fs::is_symlink(st))
    throw Error(at + " is a symbolic link; give the output folder itself (or a new name)");
  if (!fs::is_directory(st)) throw Error(at + " exists and is not a folder; give a new folder for the outputs");
  if (overwrite_ || fs::exists(final_ / kMarker)) return true;
  fs::directory_iterator it(final_, ec);
  if (ec) throw Error("cannot read " + at + ": " + ec.message());
  if (it == fs::directory_iterator()) return true;
  throw Error(at + " already exists and holds files ipna-fast did not write (for example '" +
              it->path().filename().string() +
              "'); give a new folder, or pass --overwrite to replace it and everything in it");
}

void OutputDir::commit() {
  check_interrupt();
  std::error_code ec;
  fs::path old;
  if (check_replaceable()) {
    // Renamed aside first (rename(2) may replace an empty folder), deleted once the new one is in place.
    old = make_sibling(final_, "old");
    fs::rename(final_, old, ec);
    if (ec) {
      fs::remove(old, ec);
      throw Error("cannot replace '" + final_.string() + "': " + ec.message());
    }
  }
  fs::rename(tmp_, final_, ec);
  if (ec) {
    const std::string why = ec.message();
    if (!old.empty()) fs::rename(old, final_, ec);
    throw Error("cannot move the outputs into '" + final_.string() + "': " + why);
  }
  committed_ = true;
  if (!old.empty()) fs::remove_all(old, ec);
}

void write_text(const std::string& path, const std::string& content) {
  std::ofstream f(path);
  f << content;
  if (!f) throw Error("failed writing '" + path + "'");
}

int parse_int(const std::string& text, const std::string& what) {
  errno = 0;
  char* end = nullptr;
  const long v = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || *end || errno || v < INT32_MIN || v > INT32_MAX)
    throw UsageError(what + ": expected an integer, got '" + text + "'");
  return static_cast<int>(v);
}

double parse_double(const std::string& text, const std::string& what) {
  errno = 0;
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (text.empty() || *end || errno || !std::isfinite(v))
    throw UsageError(what + ": expected a number, got '" + text + "'");
  return v;
}

std::vector<double> parse_double_list(const std::string& text, const std::string& what) {
  std::vector<double> out;
  std::stringstream ss(text);
  for (std::string tok; std::getline(ss, tok, ',');) {
    tok.erase(0, tok.find_first_not_of(' '));
    tok.erase(tok.find_last_not_of(' ') + 1);
    out.push_back(parse_double(tok, what));
  }
  if (out.empty()) throw UsageError(what + ": expected comma-separated numbers, got '" + text + "'");
  return out;
}

}  // namespace ipna::cli
