// `xvlm2vec eval import`: the released MMEB / MMMEB evaluation files as a benchmark folder (docs/benchmark-format.md).
// A released file is one dataset in one language, one query per line with VLM2Vec's fields
//   {"qry_text": "<|image_1|>\nRepresent the given image for classification", "qry_img_path": "ImageNet-1K/x.jpg",
//    "tgt_text": ["tench", "goldfish", ...], "tgt_img_path": ["", "", ...]}
// (the gold first), with the image folder beside it. The import keeps every query and candidate as written,
// adds the language and the task family the benchmark format wants, and points at the images where they are
// (paths relative to the benchmark folder): nothing is copied.
#pragma once
#include <string>
#include <vector>

#include "eval/benchmark.h"

namespace xv {

struct ImportSource {
  std::string file;        // a released JSONL
  std::string dataset;     // "" = from the file name: <dataset>_<lang>.jsonl
  std::string language;    // "" = from the file name
  std::string family;      // "" = from the dataset's name (mmeb_family)
  std::string image_root;  // where relative image paths start; "" = the file's folder
};

struct ImportOptions {
  std::string name = "imported";
  std::string out_dir;     // the benchmark folder to be written (image paths are made relative to it)
  std::string created_by;  // the command line, recorded in the manifest
};

// The MMEB task family of a dataset by its released name (classification: ImageNet-1K, N24News, ...; vqa: OK-VQA,
// ...; retrieval: MSCOCO_t2i, VisDial, ...; grounding: MSCOCO, RefCOCO, ...); "" when the name is not one of
// them. Case-sensitive, as released.
std::string mmeb_family(const std::string& dataset);

// The benchmark the sources make, one task per source (named "<dataset>/<language>", direction xx->xx: query and
// candidates in the file's language), every image checked to exist. Errors name the file, the line and the
// field: a line that is not a JSON object, a missing or mistyped field, an empty candidate list, a candidate
// count other than the first line's, a tgt_img_path list of another length than tgt_text, a missing image; a
// file name that gives no language, a dataset of no known family without a family given, two sources of one
// dataset and language.
Benchmark import_vlm2vec(const std::vector<ImportSource>& sources, const ImportOptions& opt);

}  // namespace xv
