// xvlm2vec: the command-line entry point. Errors at the boundary print one line naming the file and
// field, and exit non-zero.
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <map>
#include <new>
#include <string>

#include "core/error.h"
#include "core/resources.h"
#include "kernels/cpu/blas_core.h"
#include "kernels/cpu/runtime.h"
#include "kernels/ops.h"
#include "launch/cli_checks.h"
#include "launch/commands.h"

int main(int argc, char** argv) {
  // Over the file-size limit (ulimit -f) a write fails with EFBIG, which the writers report naming the file and
  // clean up after, instead of SIGXFSZ killing the process and leaving a temporary file behind.
  std::signal(SIGXFSZ, SIG_IGN);
  xv::cpu::select_blas_core(argc, argv);
  xv::cpu::tune_allocator();
  CLI::App app{"xvlm2vec: adapt LVLM-based embedding models to new languages by self-knowledge distillation,\n"
               "and embed text and images with them."};
  app.require_subcommand(1);
  int threads = 0;
  app.add_option("--threads", threads, "CPU threads for the compute ops (default: all cores)")->check(xv::cli::at_least(0));
  std::map<CLI::App*, xv::cli::Runner> runners;
  auto add = [&](xv::cli::Runner (*fn)(CLI::App&)) {
    size_t before = app.get_subcommands({}).size();
    auto r = fn(app);
    runners[app.get_subcommands({})[before]] = r;
  };
  add(xv::cli::add_embed);
  add(xv::cli::add_init_model);
  add(xv::cli::add_train);
  add(xv::cli::add_corpus);
  add(xv::cli::add_export);
  add(xv::cli::add_eval);
  // An unknown command: CLI11 would only say that one is required.
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--threads") {
      ++i;
      continue;
    }
    if (a.empty() || a[0] == '-') continue;
    std::string names;
    bool known = false;
    for (const auto* sub : app.get_subcommands({})) {
      known = known || sub->get_name() == a;
      names += (names.empty() ? "" : ", ") + sub->get_name();
    }
    if (!known) {
      std::fprintf(stderr, "xvlm2vec: error: unknown command '%s'; the commands are %s (xvlm2vec --help)\n", a.c_str(),
                   names.c_str());
      return 1;
    }
    break;
  }
  CLI11_PARSE(app, argc, argv);
  try {
    xv::ops::set_num_threads(threads);
    xv::check_address_space_for_threads(xv::ops::num_threads());
    xv::cpu::warm_up_blas();
    for (auto& [sub, run] : runners)
      if (sub->parsed()) return run();
  } catch (const xv::Error& e) {
    std::fprintf(stderr, "xvlm2vec: error: %s\n", e.what());
    return 1;
  } catch (const std::filesystem::filesystem_error& e) {
    // A folder or file operation the checks before it did not foresee (a race, a file system's own limits):
    // its message names the path and the reason.
    std::fprintf(stderr, "xvlm2vec: error: %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    const xv::MemoryBudget b = xv::available_memory();
    std::fprintf(stderr, "xvlm2vec: error: out of memory: an allocation failed (%s available, limited by %s)\n",
                 xv::human_bytes(b.bytes).c_str(), b.limited_by.empty() ? "nothing known" : b.limited_by.c_str());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "xvlm2vec: internal error: %s\n", e.what());
    return 2;
  }
  return 0;
}
