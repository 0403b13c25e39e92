// xvlm2vec: the command-line entry point. Errors at the boundary print one line naming the file and
// field, and exit non-zero.
#include <cstdio>
#include <map>
#include <string>

#include "core/error.h"
#include "kernels/cpu/blas_core.h"
#include "kernels/cpu/runtime.h"
#include "kernels/ops.h"
#include "launch/commands.h"

int main(int argc, char** argv) {
  xv::cpu::select_blas_core(argc, argv);
  xv::cpu::tune_allocator();
  CLI::App app{"xvlm2vec: adapt LVLM-based embedding models to new languages by self-knowledge distillation,\n"
               "and embed text and images with them."};
  app.require_subcommand(1);
  int threads = 0;
  app.add_option("--threads", threads, "CPU threads for the compute ops (default: all cores)")->check(CLI::NonNegativeNumber);
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
  CLI11_PARSE(app, argc, argv);
  try {
    xv::ops::set_num_threads(threads);
    for (auto& [sub, run] : runners)
      if (sub->parsed()) return run();
  } catch (const xv::Error& e) {
    std::fprintf(stderr, "xvlm2vec: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "xvlm2vec: internal error: %s\n", e.what());
    return 2;
  }
  return 0;
}
