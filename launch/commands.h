// The xvlm2vec subcommands. Each registers its options on the app and returns the function that runs it.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>

namespace xv::cli {

using Runner = std::function<int()>;

Runner add_embed(CLI::App& app);
Runner add_init_model(CLI::App& app);
Runner add_train(CLI::App& app);
Runner add_corpus(CLI::App& app);
Runner add_export(CLI::App& app);
Runner add_eval(CLI::App& app);

// The `corpus` subcommands, each registered on `corpus` (launch/cmd_corpus*.cpp); the Runner runs the one
// that was parsed and returns -1 when none of its subcommands was.
Runner add_corpus_build(CLI::App& corpus);
Runner add_corpus_tools(CLI::App& corpus);

}  // namespace xv::cli
