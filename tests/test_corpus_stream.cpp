// The streaming pair reader (data/corpus_stream.h): the order is the epoch permutation (world 1) or its
// strided slices (ranks partition each epoch), independent of worker count and prefetch; a stream opened at a
// saved position continues exactly as the uninterrupted one (1 and 2 ranks, with and without length
// bucketing, across epochs); errors reading or preparing a pair name it; and `train` on an HDF5 corpus gives
// bit-identical results to `train` on the same pairs as JSONL, including a resume, and uses the corpus's
// teacher block.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "models/backbones.h"
#include "core/error.h"
#include "core/file_util.h"
#include "train/teacher_cache.h"
#include "tokenizer/tokenizer.h"
#include "train/train_config.h"
#include "data/train_data.h"
#include "train/trainer.h"
#include "data/corpus.h"
#include "data/corpus_stream.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
const std::string kSrc = XV_SOURCE_DIR;
const std::string kFix = XV_FIXTURES;

std::string tmp_dir(const std::string& tag) {
  fs::path p = fs::temp_directory_path() / ("xv_stream_" + tag + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  return p.string();
}

// A corpus of n pairs with texts of varied length ("en i" padded with i % 7 words).
std::string write_synthetic(const std::string& dir, int n) {
  xv::Corpus c;
  const int32_t src = int32_t(c.sources.push("synthetic"));
  const char* langs[] = {"it", "es", "fr", "de"};
  for (int i = 0; i < n; ++i) {
    std::string en = "english " + std::to_string(i), xx = "altro " + std::to_string(i);
    for (int k = 0; k < i % 7; ++k) en += " word", xx += " parola";
    c.add_pair(en, xx, langs[i % 4], -1, src);
  }
  const std::string path = dir + "/synthetic.h5";
  xv::write_corpus(path, c);
  return path;
}

// The corpus of tests/fixtures/train/pairs_tiny.jsonl, pair for pair.
std::string write_tiny_corpus(const std::string& dir) {
  const xv::TrainData d = xv::read_train_data(kFix + "/train/pairs_tiny.jsonl");
  xv::Corpus c;
  const int32_t src = int32_t(c.sources.push("pairs_tiny"));
  for (const auto& p : d.pairs) c.add_pair(p.text_en, p.text_xx, p.lang, -1, src);
  const std::string path = dir + "/tiny.h5";
  xv::write_corpus(path, c);
  return path;
}

std::vector<int64_t> take(xv::PairStream& s, int64_t n) {
  std::vector<int64_t> out;
  for (int64_t i = 0; i < n; ++i) out.push_back(s.next().index);
  return out;
}

TEST(CorpusStream, OrderIsThePermutationWhateverTheWorkers) {
  const std::string dir = tmp_dir("order");
  auto src = std::shared_ptr<xv::PairSource>(xv::open_pair_source(write_synthetic(dir, 37)));
  ASSERT_EQ(src->size(), 37);
  std::vector<int64_t> want;
  for (int64_t e = 0; e < 3; ++e) {
    const auto perm = xv::epoch_permutation(37, 7, e);
    want.insert(want.end(), perm.begin(), perm.end());
  }
  for (int workers : {0, 1, 3})
    for (int64_t prefetch : {1, 5, 64}) {
      xv::StreamOptions o;
      o.seed = 7;
      o.workers = workers;
      o.prefetch = prefetch;
      o.chunk = 4;
      xv::PairStream s(src, o);
      EXPECT_EQ(take(s, 3 * 37), want) << workers << " workers, prefetch " << prefetch;
      EXPECT_EQ(s.position().epoch, 3);
      EXPECT_EQ(s.position().index, 0);
    }
  fs::remove_all(dir);
}

// The global stream (every epoch's sequence in turn) is dealt in blocks: rank r of n reads blocks r, r+n, ...
// Together the ranks read exactly what one rank reads, across the end of an epoch too.
TEST(CorpusStream, RanksDealBlocksOfTheGlobalStream) {
  const std::string dir = tmp_dir("ranks");
  auto src = std::shared_ptr<xv::PairSource>(xv::open_pair_source(write_synthetic(dir, 37)));
  std::vector<int64_t> global = xv::epoch_permutation(37, 1, 0);
  const auto e1 = xv::epoch_permutation(37, 1, 1);
  global.insert(global.end(), e1.begin(), e1.end());
  for (int64_t world : {1, 2, 3})
    for (int64_t block : {1, 3, 4}) {
      const int64_t blocks = 60 / block / world;  // per rank: well into the second epoch
      for (int64_t r = 0; r < world; ++r) {
        xv::StreamOptions o;
        o.seed = 1;
        o.rank = r;
        o.world = world;
        o.block = block;
        o.chunk = 2;
        xv::PairStream s(src, o);
        const auto got = take(s, blocks * block);
        for (int64_t k = 0; k < blocks * block; ++k) {
          const int64_t j = (k / block) * world + r;  // the global block
          ASSERT_EQ(got[size_t(k)], global[size_t(j * block + k % block)])
              << "world " << world << " block " << block << " rank " << r << " pair " << k;
        }
        // At a block boundary every rank reports the same global position.
        const int64_t g = blocks * block * world;
        EXPECT_EQ(s.position().epoch, g / 37);
        EXPECT_EQ(s.position().index, g % 37);
      }
    }
  fs::remove_all(dir);
}

TEST(CorpusStream, ResumeContinuesExactly) {
  const std::string dir = tmp_dir("resume");
  auto src = std::shared_ptr<xv::PairSource>(xv::open_pair_source(write_synthetic(dir, 29)));
  for (int64_t world : {1, 2})
    for (int64_t window : {0, 8})
      for (int64_t r = 0; r < world; ++r) {
        xv::StreamOptions o;
        o.seed = 3;
        o.rank = r;
        o.world = world;
        o.block = world == 1 ? 1 : 2;
        o.bucket_window = window;
        o.bucket_batch = 2;
        o.workers = 2;
        o.prefetch = 7;
        const int64_t total = (3 * 29 / world + 6) / 2 * 2;
        std::vector<int64_t> straight;
        {
          xv::PairStream s(src, o);
          straight = take(s, total);
        }
        // Cuts at block boundaries (where a checkpoint is taken), across the end of the epochs too.
        for (int64_t cut : {int64_t(2), int64_t(14), int64_t(16), int64_t(30), total - 2}) {
          xv::StreamPosition pos;
          std::vector<int64_t> got;
          {
            xv::PairStream s(src, o);
            got = take(s, cut);
            pos = s.position();  // what a checkpoint stores
          }
          xv::PairStream s2(src, o, pos);
          const auto rest = take(s2, total - cut);
          got.insert(got.end(), rest.begin(), rest.end());
          EXPECT_EQ(got, straight) << "world " << world << " rank " << r << " window " << window << " cut " << cut;
        }
      }
  // A position taken at world 2 continues at world 3 (and 1) with the same global stream.
  {
    auto dealt = [&](int64_t world, xv::StreamPosition start, int64_t blocks_per_rank) {
      std::vector<std::vector<int64_t>> per(static_cast<size_t>(world));
      for (int64_t r = 0; r < world; ++r) {
        xv::StreamOptions o;
        o.seed = 3, o.rank = r, o.world = world, o.block = 2;
        xv::PairStream s(src, o, start);
        per[size_t(r)] = take(s, blocks_per_rank * 2);
      }
      std::vector<int64_t> g;  // interleaved back into global order
      for (int64_t k = 0; k < blocks_per_rank; ++k)
        for (int64_t r = 0; r < world; ++r) g.insert(g.end(), per[size_t(r)].begin() + k * 2, per[size_t(r)].begin() + k * 2 + 2);
      return g;
    };
    const auto one = dealt(1, {}, 36);
    xv::StreamPosition mid;
    {
      xv::StreamOptions o;
      o.seed = 3, o.rank = 1, o.world = 2, o.block = 2;
      xv::PairStream s(src, o);
      take(s, 6 * 2);
      mid = s.position();  // 24 pairs of the global stream
    }
    EXPECT_EQ(mid.epoch * 29 + mid.index, 24);
    auto two_then_three = dealt(2, {}, 6);
    const auto rest = dealt(3, mid, 8);
    two_then_three.insert(two_then_three.end(), rest.begin(), rest.end());
    EXPECT_EQ(two_then_three, std::vector<int64_t>(one.begin(), one.begin() + 72));
  }
  fs::remove_all(dir);
}

TEST(CorpusStream, BucketingGroupsSimilarLengthsAndKeepsTheEpoch) {
  const std::string dir = tmp_dir("bucket");
  auto src = std::shared_ptr<xv::PairSource>(xv::open_pair_source(write_synthetic(dir, 64)));
  xv::StreamOptions o;
  o.seed = 5;
  o.bucket_window = 16;
  o.bucket_batch = 4;
  const auto seq = xv::epoch_sequence(*src, o, 0);
  std::vector<int64_t> sorted = seq, perm = xv::epoch_permutation(64, 5, 0);
  std::sort(sorted.begin(), sorted.end());
  std::sort(perm.begin(), perm.end());
  EXPECT_EQ(sorted, perm);  // the same pairs, reordered
  // Within a window, each group of 4 spans lengths no wider than the window's (sorted) neighbours allow:
  // the spread inside a group is at most the spread of the window.
  int64_t group_spread = 0, window_spread = 0;
  for (size_t w = 0; w < 64; w += 16) {
    int64_t lo = INT64_MAX, hi = 0;
    for (size_t k = w; k < w + 16; ++k) lo = std::min(lo, src->length(seq[k])), hi = std::max(hi, src->length(seq[k]));
    window_spread += hi - lo;
    for (size_t g = w; g < w + 16; g += 4) {
      int64_t glo = INT64_MAX, ghi = 0;
      for (size_t k = g; k < g + 4; ++k)
        glo = std::min(glo, src->length(seq[k])), ghi = std::max(ghi, src->length(seq[k]));
      group_spread += ghi - glo;
    }
  }
  EXPECT_LT(group_spread, window_spread);
  EXPECT_EQ(seq, xv::epoch_sequence(*src, o, 0));       // deterministic
  EXPECT_NE(seq, xv::epoch_sequence(*src, o, 1));       // and a new order each epoch
  fs::remove_all(dir);
}

TEST(CorpusStream, ErrorsNameThePair) {
  const std::string dir = tmp_dir("errors");
  auto src = std::shared_ptr<xv::PairSource>(xv::open_pair_source(write_synthetic(dir, 20)));
  xv::StreamOptions o;
  o.seed = 0;
  o.workers = 2;
  const int64_t bad = xv::epoch_permutation(20, 0, 0)[5];
  o.prepare = [bad](const xv::TrainPair& p) -> std::shared_ptr<const xv::PreparedInputs> {
    if (p.index == bad) xv::fail("cannot prepare this one");
    return nullptr;
  };
  xv::PairStream s(src, o);
  for (int i = 0; i < 5; ++i) EXPECT_NO_THROW(s.next());  // the pairs before it arrive
  try {
    s.next();
    FAIL() << "no error";
  } catch (const xv::Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("synthetic.h5 pair " + std::to_string(bad)), std::string::npos) << m;
    EXPECT_NE(m.find("cannot prepare this one"), std::string::npos) << m;
  }
  // A bad block size, and a missing file.
  xv::StreamOptions o3;
  o3.block = 0;
  EXPECT_THROW(xv::PairStream(src, o3), xv::Error);
  EXPECT_THROW(xv::open_pair_source(dir + "/missing.h5"), xv::Error);
  fs::remove_all(dir);
}

TEST(CorpusStream, PreTokenisedIdsOnlyFromTheModelsTokenizer) {
  const std::string dir = tmp_dir("tokens");
  const std::string tok_json = kFix + "/models/tiny_bert/tokenizer.json";
  const auto tok = xv::Tokenizer::from_file(tok_json);
  xv::Corpus c;
  c.sources.push("s");
  c.add_pair("Open the file", "Apri il file", "it", -1, 0);
  c.add_pair("Close the file", "Chiudi il file", "it", -1, 0);
  c.tokens = xv::CorpusTokens{};
  c.tokens->tokenizer_fingerprint = xv::tokenizer_fingerprint(tok_json);
  c.tokens->vocab_size = tok->vocab_size();
  for (size_t i = 0; i < c.text_en.size(); ++i) c.tokens->en.push(tok->encode(std::string(c.text_en.at(i)), true));
  for (size_t i = 0; i < c.text_xx.size(); ++i) c.tokens->xx.push(tok->encode(std::string(c.text_xx.at(i)), true));
  xv::write_corpus(dir + "/t.h5", c);
  xv::SourceOptions so;
  so.tokenizer_json = tok_json;
  auto same = xv::open_pair_source(dir + "/t.h5", so);
  EXPECT_EQ(same->note(), "");
  const auto p = same->fetch({1});
  EXPECT_EQ(p[0].ids_en, tok->encode("Close the file", true));
  EXPECT_EQ(p[0].ids_xx, tok->encode("Chiudi il file", true));
  // Another model's tokenizer: the ids are not used, and the source says so.
  so.tokenizer_json = kFix + "/tokenizer/bpe_llama/tokenizer.json";
  auto other = xv::open_pair_source(dir + "/t.h5", so);
  EXPECT_NE(other->note().find("made by another tokenizer"), std::string::npos) << other->note();
  EXPECT_TRUE(other->fetch({1})[0].ids_en.empty());
  fs::remove_all(dir);
}

// ---- train on a corpus ----

xv::TrainConfig tiny_config(const std::string& data, const std::string& out) {
  xv::TrainConfig c = xv::load_train_config(kSrc + "/configs/tiny-bert.yaml");
  c.model = kFix + "/models/tiny_bert";
  c.data.train = data;
  c.output_dir = out;
  c.train.max_steps = 10;
  c.checkpoint.every_steps = 5;
  c.export_.merged = false;
  return c;
}

xv::TrainOptions quiet(bool resume = false, int64_t stop_after = 0) {
  xv::TrainOptions o;
  o.quiet = true;
  o.resume = resume;
  o.stop_after = stop_after;
  return o;
}

// metrics.jsonl without the timing and memory fields.
std::vector<json> losses(const std::string& out) {
  std::ifstream f(out + "/metrics.jsonl");
  std::vector<json> v;
  std::string line;
  while (std::getline(f, line)) {
    json j = json::parse(line);
    for (const char* k : {"pairs_per_s", "elapsed_s", "peak_rss_mb"}) j.erase(k);
    v.push_back(j);
  }
  return v;
}

TEST(TrainOnCorpus, SameAsJsonlAndResumesBitIdentically) {
  const std::string dir = tmp_dir("train");
  const std::string h5 = write_tiny_corpus(dir);
  xv::train(tiny_config(kFix + "/train/pairs_tiny.jsonl", dir + "/jsonl"), quiet());
  xv::train(tiny_config(h5, dir + "/h5"), quiet());
  const auto a = losses(dir + "/jsonl"), b = losses(dir + "/h5");
  ASSERT_EQ(a.size(), 10u);
  EXPECT_EQ(a, b);  // bit-identical: the same pairs in the same order, the same arithmetic
  EXPECT_EQ(xv::read_file(dir + "/jsonl/adapter/adapter_model.safetensors"),
            xv::read_file(dir + "/h5/adapter/adapter_model.safetensors"));
  // Killed after 7 steps, resumed from the step-5 checkpoint.
  xv::train(tiny_config(h5, dir + "/h5r"), quiet(false, 7));
  xv::train(tiny_config(h5, dir + "/h5r"), quiet(true));
  EXPECT_EQ(losses(dir + "/h5r"), b);
  EXPECT_EQ(xv::read_file(dir + "/h5r/adapter/adapter_model.safetensors"),
            xv::read_file(dir + "/h5/adapter/adapter_model.safetensors"));
  // Worker count and prefetch do not change the numbers.
  auto c = tiny_config(h5, dir + "/h5w");
  c.data.workers = 0;
  c.data.prefetch = 1;
  xv::train(c, quiet());
  EXPECT_EQ(losses(dir + "/h5w"), b);
  fs::remove_all(dir);
}

TEST(TrainOnCorpus, TeacherBlockMatchesLiveTeacherAndRefusesAnotherModel) {
  const std::string dir = tmp_dir("teacher");
  const std::string h5 = write_tiny_corpus(dir);
  // The teacher block, computed as `corpus cache-teacher` does: teacher embeddings of the pairs in order.
  const xv::TrainData d = xv::read_train_data(kFix + "/train/pairs_tiny.jsonl");
  xv::LoraConfig lc;
  lc.targets = xv::default_lora_targets("bert");
  auto model = xv::KdModel::load(kFix + "/models/tiny_bert", "lora", lc, 0);
  const xv::Tensor emb = xv::compute_teacher_embeddings(*model, d, 4);
  xv::CorpusTeacher t;
  t.dim = emb.dim(1);
  t.embeddings = emb.to_vector();
  t.model_fingerprint = xv::model_fingerprint(kFix + "/models/tiny_bert");
  t.corpus_fingerprint = xv::read_corpus(h5).meta.fingerprint;
  xv::write_corpus_teacher(h5, t);
  EXPECT_TRUE(xv::validate_corpus(xv::read_corpus(h5), h5).empty());

  xv::train(tiny_config(h5, dir + "/live"), quiet());
  auto c = tiny_config(h5, dir + "/cached");
  c.data.teacher_cache = "corpus";
  xv::train(c, quiet());
  const auto a = losses(dir + "/live"), b = losses(dir + "/cached");
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i]["loss"].get<double>(), b[i]["loss"].get<double>(), 1e-6);

  // A teacher block from another model is refused, naming both.
  t.model_fingerprint = "fnv1a64:0000000000000000";
  xv::write_corpus_teacher(h5, t);
  auto c2 = tiny_config(h5, dir + "/other");
  c2.data.teacher_cache = "corpus";
  try {
    xv::train(c2, quiet());
    FAIL() << "no error";
  } catch (const xv::Error& e) {
    EXPECT_NE(std::string(e.what()).find("computed by another model"), std::string::npos) << e.what();
  }
  // 'corpus' with JSONL data, and a corpus without a teacher block.
  auto c3 = tiny_config(kFix + "/train/pairs_tiny.jsonl", dir + "/j");
  c3.data.teacher_cache = "corpus";
  EXPECT_THROW(xv::train(c3, quiet()), xv::Error);
  auto c4 = tiny_config(write_synthetic(dir, 8), dir + "/s");
  c4.data.teacher_cache = "corpus";
  try {
    xv::train(c4, quiet());
    FAIL() << "no error";
  } catch (const xv::Error& e) {
    EXPECT_NE(std::string(e.what()).find("no /teacher block"), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}

}  // namespace
