// The training data stream: pairs in the order of a per-epoch permutation, read ahead by a pipeline
//
//   I/O thread (owns every HDF5 call) --chunks of raw pairs--> worker threads (KdModel::prepare: tokenize,
//   decode, HD-preprocess) --reorder buffer--> next()
//
// bounded to `prefetch` pairs in flight. The order is a pure function of (seed, epoch, rank, world) and,
// with length bucketing, of the pairs' lengths: a stream opened at a position yields exactly what an
// uninterrupted stream yields from there, which is what makes `train --resume` bit-identical.
//
// The epochs' sequences, one after another, form one global stream. It is dealt to the ranks in blocks of
// `block` pairs (a micro-batch), counted from the position the stream starts at: rank r of n reads blocks
// r, r+n, r+2n, ... So the pairs of global micro-batch j do not depend on the number of ranks, only on who
// reads them: n ranks with grad_accum a see, step for step, the pairs one process with grad_accum n*a sees,
// which is what makes distributed training equal to one process and lets a run resume at another world size.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/train_pair.h"
#include "data/train_data.h"

namespace xv {

// Where the pairs come from. fetch() runs on the stream's I/O thread only.
class PairSource {
 public:
  virtual ~PairSource() = default;
  virtual int64_t size() const = 0;
  virtual std::string path() const = 0;
  virtual std::string where(int64_t i) const = 0;  // "file:line" or "file pair i", for messages
  virtual std::string fingerprint() const = 0;     // of the contents (train --resume compares it)
  virtual bool has_images() const = 0;
  virtual int64_t length(int64_t i) const = 0;     // bytes of both texts (length bucketing)
  virtual std::string note() const { return ""; }  // what the user should know (e.g. tokens not used)
  // The pairs of rows `idx`, in order, with index set.
  virtual std::vector<TrainPair> fetch(const std::vector<int64_t>& idx) = 0;
};

struct SourceOptions {
  std::string image_root;           // JSONL: folder image paths are relative to ("" = the JSONL's folder)
  bool teacher = false;             // corpus: attach /teacher rows (TrainPair::teacher_en)
  std::string tokenizer_json;       // corpus: attach /tokens when made by this tokenizer ("" = never)
};

// A corpus file (docs/corpus-format.md) or a JSONL of pairs (data/train_data.h), chosen by content: an HDF5
// file is a corpus. Texts, the pair table and token ids are held in memory; images and teacher rows are read
// per pair.
std::unique_ptr<PairSource> open_pair_source(const std::string& path, const SourceOptions& opt = {});
bool is_hdf5_file(const std::string& path);
// A source over pairs already read (a JSONL).
std::unique_ptr<PairSource> make_jsonl_source(TrainData data);
// The teacher model fingerprint recorded with a corpus source's /teacher block ("" when there is none).
std::string corpus_teacher_model(const PairSource& src);

struct StreamOptions {
  uint64_t seed = 0;
  int64_t rank = 0, world = 1;
  int64_t block = 1;          // pairs per block dealt to a rank (the micro-batch)
  int workers = 2;            // preparing threads (0: prepare on the I/O thread)
  int64_t prefetch = 256;     // pairs read or prepared ahead, at most
  int64_t chunk = 16;         // pairs per unit of work
  int64_t bucket_window = 0;  // length bucketing: each window of this many pairs of the sequence is sorted by
                              // length, cut into groups of bucket_batch, and the groups shuffled; 0 = off
  int64_t bucket_batch = 1;
  std::function<std::shared_ptr<const PreparedInputs>(const TrainPair&)> prepare;  // may be empty
};

// A place in the global stream.
struct StreamPosition {
  int64_t epoch = 0;
  int64_t index = 0;  // pairs of `epoch`'s sequence before it
};

// The order of pair rows for one epoch (the permutation, then length bucketing): the same for every rank.
std::vector<int64_t> epoch_sequence(const PairSource& src, const StreamOptions& o, int64_t epoch);

class PairStream {
 public:
  PairStream(std::shared_ptr<PairSource> src, const StreamOptions& o, StreamPosition start = {});
  ~PairStream();
  PairStream(const PairStream&) = delete;
  PairStream& operator=(const PairStream&) = delete;

  // The next pair (prepared); rethrows, as xv::Error naming the pair, what failed reading or preparing it.
  TrainPair next();
  // Where the global stream stands once every rank has read as many pairs as this one: with one rank, the
  // place of the pair next() returns next; at a step boundary (whole blocks read), the same on every rank.
  StreamPosition position() const;

 private:
  void stop_threads();  // stops and joins every thread that started
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int64_t start_ = 0;     // global offset (epoch * P + index) the stream started at
  int64_t returned_ = 0;  // pairs this rank returned
  int64_t P_ = 0;
};

}  // namespace xv
