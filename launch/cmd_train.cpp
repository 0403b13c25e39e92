// xvlm2vec train: self-knowledge distillation from a YAML config (docs/config.md). Under mpirun or srun with
// more than one rank, every rank runs this: MPI is started, the ranks train together (docs/distributed.md), and
// a rank that fails ends the whole job (MPI_Abort) after printing its rank and the cause.
#include <algorithm>
#include <cstdio>

#include "core/error.h"
#include "train/train_config.h"
#include "train/trainer.h"
#include "launch/cli_checks.h"
#include "launch/commands.h"
#include "parallel/launch_env.h"
#ifdef XV_HAVE_MPI
#include "parallel/comm_mpi.h"
#include "parallel/mpi_watchdog.h"
#endif

namespace xv::cli {

namespace {

struct TrainArgs {
  std::string config;
  std::vector<std::string> sets;
  bool resume = false, quiet = false;
  int64_t stop_after = 0;
};

}  // namespace

Runner add_train(CLI::App& app) {
  auto* sub = app.add_subcommand("train", "Train a student by self-knowledge distillation (YAML config: docs/config.md)");
  auto a = std::make_shared<TrainArgs>();
  sub->add_option("config", a->config, "YAML config file")->required();
  sub->add_option("--set", a->sets, "Override a config key, YAML value: --set train.lr=2e-5 --set lora.targets=[query,value]")
      ->allow_extra_args(false)
      ->type_name("KEY=VALUE");
  sub->add_flag("--resume", a->resume, "Continue from the newest checkpoint in output_dir (bit-identical to an uninterrupted run)");
  sub->add_flag("--quiet", a->quiet, "No terminal output (output_dir/metrics.jsonl is still written)");
  sub->add_option("--stop-after", a->stop_after,
                  "Stop after this many steps of this run, as an interrupted run would (then --resume); 0 = to the end")
      ->check(at_least(0));
  return [a] {
    const par::LaunchEnv env = par::launch_env();
    TrainOptions opt;
    opt.resume = a->resume;
    opt.quiet = a->quiet;
    opt.stop_after = a->stop_after;
    if (env.world == 1) {
      train(load_train_config(a->config, a->sets), opt);
      return 0;
    }
#ifdef XV_HAVE_MPI
    // Every rank: an error here (a bad config, a failing pair, a full disk) reaches only this rank, the others
    // wait in a collective for it: end them all, naming the rank.
    try {
      par::mpi_init();
      const TrainConfig cfg = load_train_config(a->config, a->sets);
      auto world = par::make_mpi_communicator();
      opt.world = world.get();
      {
        // A rank stopped, hung or lost is named by the heartbeat within parallel.collective_timeout_s; a
        // collective still not done a little later (every rank alive, but stuck) ends the job on its own.
        const double t = cfg.parallel.collective_timeout_s;
        par::mpi_set_collective_timeout(t > 0 ? t + std::max(2.0, t / 10) : 0);
        par::MpiWatchdog watchdog(cfg.parallel.collective_timeout_s);
        train(cfg, opt);
      }
      world.reset();
      par::mpi_finalize();
      return 0;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "xvlm2vec train: rank %d of %d (%s) failed: %s\nxvlm2vec train: stopping every rank\n",
                   env.rank, env.world, env.launcher.c_str(), e.what());
      std::fflush(stderr);
      par::mpi_abort(1);
    }
#else
    fail("train: started by {} as rank {} of {}, but this build has no MPI (install libopenmpi-dev and rebuild)",
         env.launcher, env.rank, env.world);
#endif
  };
}

}  // namespace xv::cli
