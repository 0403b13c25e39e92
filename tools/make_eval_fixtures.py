#!/usr/bin/env python3
"""Fixtures for the evaluation (eval/): ranking metrics computed by numpy, and a tiny benchmark folder
written independently of the C++ writer, with the gold ranks its texts must get from the reference
embeddings.

Regenerate (from the repository root; needs only numpy, and reads fixtures that tools/make_model_fixtures.py
and tools/make_peft_fixtures.py made):

    python tools/make_eval_fixtures.py

Writes tests/fixtures/eval/:
  metrics_cases.json   score matrices (queries x candidates, the gold in column 0) with planted ties, and
                       for each the gold ranks, P@1, R@5 and MRR. Ranks come from a stable descending sort
                       (the gold, first, wins every tie), not from counting scores above the gold as the C++
                       does, so the two computations are independent.
  tiny_benchmark/      benchmark.json, one JSONL per task, english.jsonl (docs/benchmark-format.md):
                       de->en, en->de, es->en, en->es over the 44 sentences of
                       tests/fixtures/models/tiny_bert_golden but the empty one (30 candidates; one query
                       holds a second copy of its gold, an exact tie), and fr->en over the 10 sentences of tests/fixtures/peft
                       (9 candidates); english.jsonl holds those 10 sentences.
  tiny_expected.json   gold ranks per task: "before" from sentence-transformers' embeddings of the base
                       model (tiny_bert_golden/embeddings.npy) for the 44-sentence tasks, "after" from PEFT's
                       embeddings with the adapter (peft/peft_embeddings.npy) for fr->en. Queries are drawn
                       again until every non-identical candidate scores at least MARGIN away from the gold, so
                       float differences between implementations cannot flip a rank.
"""
import json
import os

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(REPO, "tests", "fixtures")
OUT = os.path.join(FIX, "eval")
MARGIN = 2e-4


def ranks_by_stable_sort(scores):
    """1-based position of column 0 after a stable sort by descending score."""
    order = np.argsort(-scores, axis=1, kind="stable")
    return [int(np.nonzero(row == 0)[0][0]) + 1 for row in order]


def metrics_case(name, scores):
    ranks = np.array(ranks_by_stable_sort(scores))
    return {
        "name": name,
        "scores": scores.tolist(),
        "ranks": ranks.tolist(),
        "p_at_1": float(np.mean(ranks == 1)),
        "r_at_5": float(np.mean(ranks <= 5)),
        "mrr": float(np.mean(1.0 / ranks)),
    }


def make_metrics_cases(rng):
    cases = [metrics_case("continuous 50x20", rng.standard_normal((50, 20)))]
    # One decimal: many ties, with the gold and among distractors.
    cases.append(metrics_case("rounded 40x12", np.round(rng.uniform(-1, 1, (40, 12)), 1)))
    planted = rng.uniform(-1, 1, (8, 10))
    planted[0, :] = 0.25                            # all equal: the gold ranks first
    planted[1, 0] = -5.0                            # the gold lowest: rank 10
    planted[2, :5] = 0.5; planted[2, 5:] = 0.1      # four tie with the gold, nothing above
    planted[3, 0] = 0.3; planted[3, 1:5] = 0.9; planted[3, 5:] = 0.0   # exactly 4 above: rank 5
    planted[4, 0] = 0.3; planted[4, 1:6] = 0.9; planted[4, 6:] = 0.0   # exactly 5 above: rank 6
    planted[5, 0] = 0.3; planted[5, 1:3] = 0.9; planted[5, 3:6] = 0.3; planted[5, 6:] = -0.3  # 2 above, 3 tie
    planted[6, 0] = 1.0; planted[6, 1:] = np.nextafter(1.0, 2.0)       # everything one ulp above
    planted[7, 0] = 1.0; planted[7, 1:] = np.nextafter(1.0, 0.0)       # everything one ulp below
    cases.append(metrics_case("planted 8x10", planted))
    cases.append(metrics_case("single candidate 5x1", rng.standard_normal((5, 1))))
    return cases


def unit(e):
    e = e.astype(np.float64)
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def draw_queries(rng, texts, emb, lang, direction, n_queries, n_cands, plant_duplicate):
    """Queries over `texts` whose gold ranks are safe from float noise; returns (lines, ranks)."""
    lines, ranks = [], []
    usable = [i for i, t in enumerate(texts) if t]  # the format has no empty texts
    while len(lines) < n_queries:
        q, g = rng.choice(usable, 2, replace=False)
        others = [i for i in rng.permutation(usable) if i not in (q, g)][: n_cands - 1]
        cands = [g] + others
        if plant_duplicate and not lines:
            cands[n_cands // 2] = g  # a second copy of the gold: an exact tie the gold must win
        scores = emb[cands] @ emb[q]
        close = [abs(scores[c] - scores[0]) < MARGIN for c in range(1, n_cands) if cands[c] != g]
        if any(close):
            continue
        ranks.append(ranks_by_stable_sort(scores[None, :])[0])
        lines.append({"qry_text": texts[q], "qry_img_path": None, "tgt_text": [texts[c] for c in cands],
                      "lang": lang, "task_type": "retrieval"})
    return lines, ranks


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def make_tiny_benchmark(rng):
    golden_texts = json.load(open(os.path.join(FIX, "models", "tiny_bert_golden", "sentences.json"), encoding="utf-8"))
    golden = unit(np.load(os.path.join(FIX, "models", "tiny_bert_golden", "embeddings.npy")))
    peft_texts = json.load(open(os.path.join(FIX, "peft", "sentences.json"), encoding="utf-8"))
    peft = unit(np.load(os.path.join(FIX, "peft", "peft_embeddings.npy")))
    assert len(set(golden_texts)) == len(golden_texts) and len(set(peft_texts)) == len(peft_texts)

    bench = os.path.join(OUT, "tiny_benchmark")
    os.makedirs(bench, exist_ok=True)
    tasks, expected = [], {}
    specs = [("de->en", "de", "xx->en", True), ("en->de", "de", "en->xx", False),
             ("es->en", "es", "xx->en", False), ("en->es", "es", "en->xx", False)]
    for name, lang, direction, dup in specs:
        lines, ranks = draw_queries(rng, golden_texts, golden, lang, direction, 6, 30, dup)
        file = name.replace("->", "_to_") + ".jsonl"
        write_jsonl(os.path.join(bench, file), lines)
        tasks.append({"name": name, "file": file, "language": lang, "direction": direction,
                      "task_type": "retrieval", "num_queries": len(lines), "num_candidates": 30})
        expected[name] = {"before": ranks}
    lines, ranks = draw_queries(rng, peft_texts, peft, "fr", "xx->en", 5, 9, False)
    write_jsonl(os.path.join(bench, "fr_to_en.jsonl"), lines)
    tasks.append({"name": "fr->en", "file": "fr_to_en.jsonl", "language": "fr", "direction": "xx->en",
                  "task_type": "retrieval", "num_queries": len(lines), "num_candidates": 9})
    expected["fr->en"] = {"after": ranks}
    write_jsonl(os.path.join(bench, "english.jsonl"), [{"text": t} for t in peft_texts])
    manifest = {"format": "xvlm2vec-benchmark", "format_version": 1, "name": "tiny",
                "source": "tests/fixtures/models/tiny_bert_golden and tests/fixtures/peft sentences",
                "created_by": "tools/make_eval_fixtures.py", "tasks": tasks,
                "english": {"file": "english.jsonl", "num_texts": len(peft_texts)}}
    with open(os.path.join(bench, "benchmark.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, ensure_ascii=False)
        f.write("\n")
    return expected


def main():
    rng = np.random.default_rng(20240611)
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "metrics_cases.json"), "w") as f:
        json.dump({"cases": make_metrics_cases(rng)}, f)
        f.write("\n")
    expected = make_tiny_benchmark(rng)
    with open(os.path.join(OUT, "tiny_expected.json"), "w") as f:
        json.dump({"margin": MARGIN, "tasks": expected}, f, indent=1)
        f.write("\n")
    print("eval fixtures written under", OUT)


if __name__ == "__main__":
    main()
