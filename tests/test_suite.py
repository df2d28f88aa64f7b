"""Regression suite files (promptreg.evaluation.suite) and perturbations (promptreg.evaluation.perturb)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from promptreg.errors import InputError
from promptreg.evaluation.perturb import FIRST_NAMES, NEGATION_CLAUSES, get_perturbation
from promptreg.evaluation.suite import CheckCase, load_suite
from promptreg.fingerprints.dataset import dataset_fingerprint

ROWS = [
    {"text": "A wonderful film with Mary in the lead.", "label": "positive"},
    {"text": "Dull and boring from start to finish.", "label": "negative"},
    {"text": "John gave a terrific performance!", "label": "positive"},
    {"text": "Not worth the ticket", "label": "negative"},
    {"text": "Great fun.", "label": "positive"},
    {"text": "It was bad.", "label": "negative"},
]

FULL = """\
# a full suite
name: rt-sentiment
task: classification
golden:
  - name: rt-golden
    path: golden.jsonl
    limit: 500
    metrics:
      accuracy: {margin: 0.02, min: 0.80}
      macro_f1: {margin: 0.02}
      ece: {margin: 0.03, max: 0.15}
      recall_negative: {min: 0.5}
checks:
  - name: mft-positive
    type: mft
    template: "The movie was {adj} and the acting {verb}."
    fill: {adj: [great, wonderful], verb: [shone, impressed me]}
    label: positive
    max_failure_rate: 0.1
  - name: inv-typos
    type: invariance
    data: rt-golden
    perturbation: typos
    samples: 200
    seed: 0
    max_failure_rate: 0.1
  - name: inv-file
    type: invariance
    data: ../extra/texts.csv
    perturbation: {suffix: ["Anyway.", "So it goes."]}
  - name: dir-negation
    type: directional
    data: rt-golden
    perturbation: add_negation
    label: positive
    direction: decrease
    tolerance: 0.0
    only_labels: [positive]
    max_failure_rate: 0.2
gate:
  confidence: 0.9
  resamples: 500
  seed: 3
policies:
  production: {require_gate: true}
  staging: {require_gate: false}
"""


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def suite_dir(tmp_path: Path) -> Path:
    d = tmp_path / "suites"
    write_jsonl(d / "golden.jsonl", ROWS)
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "texts.csv").write_text("text\nfirst text\nsecond text\n", encoding="utf-8")
    (d / "suite.yaml").write_text(FULL, encoding="utf-8")
    return d


# --------------------------------------------------------------------------------------------------
# valid suites


def test_full_suite_round_trip(suite_dir: Path) -> None:
    s = load_suite(suite_dir / "suite.yaml")
    assert (s.name, s.task, s.task_declared, s.path) == ("rt-sentiment", "classification", True,
                                                         suite_dir / "suite.yaml")
    (g,) = s.golden
    assert g.name == "rt-golden" and g.path == suite_dir / "golden.jsonl" and g.rows == len(ROWS)
    assert [e.text for e in g.examples] == [r["text"] for r in ROWS]
    assert g.fingerprint == dataset_fingerprint(ROWS)
    assert s.thresholds() == {"rt-golden": {
        "accuracy": {"margin": 0.02, "min": 0.8, "max": None},
        "macro_f1": {"margin": 0.02, "min": None, "max": None},
        "ece": {"margin": 0.03, "min": None, "max": 0.15},
        "recall_negative": {"margin": None, "min": 0.5, "max": None},
    }}
    assert [c.name for c in s.checks] == ["mft-positive", "inv-typos", "inv-file", "dir-negation"]
    assert (s.gate.confidence, s.gate.resamples, s.gate.seed) == (0.9, 500, 3)
    assert s.policy("production") == {"require_gate": True}
    assert s.policy("staging") == {"require_gate": False}
    assert s.policy("canary") == {"require_gate": False}

    checks = {c.name: c for c in s.expand_checks()}
    f = checks["inv-file"]
    assert (f.perturbation, f.data) == ("suffix", "../extra/texts.csv")
    assert [(c.text, c.source_index) for c in f.cases] == [("first text", 0), ("second text", 1)]
    assert all(c.perturbed in (f"{c.text} Anyway.", f"{c.text} So it goes.") for c in f.cases)
    mft = checks["mft-positive"]
    assert mft.cases[0] == CheckCase(text="The movie was great and the acting shone.", expected="positive")
    d = checks["dir-negation"]
    assert (d.type, d.label, d.direction, d.tolerance, d.max_failure_rate, d.perturbation) == (
        "directional", "positive", "decrease", 0.0, 0.2, "add_negation")
    assert [c.source_index for c in d.cases] == [0, 2, 4]  # only_labels: the positive rows
    assert all(c.perturbed.startswith(c.text) for c in d.cases)
    inv = checks["inv-typos"]
    assert inv.type == "invariance" and inv.label is None and inv.data == "rt-golden"
    assert len(inv.cases) == 5  # "Great fun." has no word of >= 4 letters with a swappable inner pair

    s.validate_labels(["negative", "positive"])
    s.validate_task("classification")
    with pytest.raises(InputError, match="validate_task|task 'classification'"):
        s.validate_task("generation")


def test_defaults_and_generation_suite(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "gen.jsonl", [{"q": "2+2?", "a": "4"}, {"q": "Capital of France?", "a": "Paris"}])
    (tmp_path / "s.yaml").write_text(textwrap.dedent("""\
        name: qa
        task: generation
        golden:
          - name: qa-golden
            path: gen.jsonl
            text_column: q
            target_column: a
            metrics:
              exact_match: {margin: 0.05}
              length_ratio: {min: 0.5, max: 2.0}
        checks:
          - name: mft-greeting
            type: mft
            template: "Say {word}."
            fill: {word: [hi, hello]}
            expect: "ok"
        """))
    s = load_suite(tmp_path / "s.yaml")
    assert s.task == "generation" and s.golden[0].examples[1].target == "Paris"
    assert (s.gate.confidence, s.gate.resamples, s.gate.seed) == (0.95, 2000, 0)
    assert s.policy("production") == {"require_gate": True} and s.policy("staging") == {"require_gate": False}
    (mft,) = s.expand_checks()
    assert [(c.text, c.expected) for c in mft.cases] == [("Say hi.", "ok"), ("Say hello.", "ok")]
    assert mft.max_failure_rate == 0.0
    s.validate_labels(["anything"])  # nothing to check for generation


def test_sha256_stable_and_sensitive(suite_dir: Path) -> None:
    path = suite_dir / "suite.yaml"
    base = load_suite(path).sha256
    # comments, whitespace, flow vs block style, quoting, explicit defaults: same suite
    path.write_text("# edited\n\n" + FULL.replace("seed: 3", "seed: 3   # the seed")
                    .replace("name: rt-sentiment", "name: 'rt-sentiment'")
                    .replace("      macro_f1: {margin: 0.02}", "      macro_f1:\n        margin: 0.020")
                    .replace("    tolerance: 0.0\n", ""), encoding="utf-8")
    assert load_suite(path).sha256 == base
    # moving the golden file (and pointing at it) keeps it too
    (suite_dir / "golden.jsonl").rename(suite_dir / "moved.jsonl")
    path.write_text(FULL.replace("path: golden.jsonl", "path: moved.jsonl"), encoding="utf-8")
    assert load_suite(path).sha256 == base
    (suite_dir / "moved.jsonl").rename(suite_dir / "golden.jsonl")
    path.write_text(FULL, encoding="utf-8")
    assert load_suite(path).sha256 == base

    path.write_text(FULL.replace("margin: 0.03", "margin: 0.04"), encoding="utf-8")
    assert load_suite(path).sha256 != base
    path.write_text(FULL.replace("samples: 200", "samples: 199"), encoding="utf-8")
    assert load_suite(path).sha256 != base
    path.write_text(FULL, encoding="utf-8")
    write_jsonl(suite_dir / "golden.jsonl", ROWS[:-1] + [{"text": "It was bad!", "label": "negative"}])
    assert load_suite(path).sha256 != base
    write_jsonl(suite_dir / "golden.jsonl", ROWS)
    (suite_dir.parent / "extra" / "texts.csv").write_text("text\nfirst text\nthird text\n", encoding="utf-8")
    assert load_suite(path).sha256 != base


def test_limit_keeps_first_rows(suite_dir: Path) -> None:
    path = suite_dir / "suite.yaml"
    path.write_text(FULL.replace("limit: 500", "limit: 2"), encoding="utf-8")
    s = load_suite(path)
    assert s.golden[0].rows == 2 and s.golden[0].fingerprint == dataset_fingerprint(ROWS[:2])


def test_mft_cartesian_expansion(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "g.jsonl", ROWS)
    (tmp_path / "s.yaml").write_text(textwrap.dedent("""\
        name: mft
        checks:
          - name: m
            type: mft
            template: "{a} {b} {a} {{literal}} {c}"
            fill: {c: ["!"], b: [x, y, z], a: [1, "2"]}  # a YAML integer is its decimal text
            label: positive
        """))
    (c,) = load_suite(tmp_path / "s.yaml").expand_checks()
    assert [case.text for case in c.cases] == [
        "1 x 1 {literal} !", "1 y 1 {literal} !", "1 z 1 {literal} !",
        "2 x 2 {literal} !", "2 y 2 {literal} !", "2 z 2 {literal} !",
    ]
    assert {case.expected for case in c.cases} == {"positive"} and c.label == "positive"


def _sampling_suite(tmp_path: Path, extra: str) -> list[int | None]:
    rows = [{"text": f"row number {i} sentence", "label": "positive" if i % 2 else "negative"}
            for i in range(40)]
    write_jsonl(tmp_path / "g.jsonl", rows)
    (tmp_path / "s.yaml").write_text(textwrap.dedent("""\
        name: sampling
        golden:
          - {name: g, path: g.jsonl, metrics: {accuracy: {min: 0.5}}}
        checks:
          - name: inv
            type: invariance
            data: g
            perturbation: punctuation
        """) + "".join(f"    {line}\n" for line in extra.splitlines()))
    (c,) = load_suite(tmp_path / "s.yaml").expand_checks()
    return [case.source_index for case in c.cases]


def test_sampling_limit_seed_and_only_labels(tmp_path: Path) -> None:
    assert _sampling_suite(tmp_path, "") == list(range(40))
    a = _sampling_suite(tmp_path, "samples: 10\nseed: 1")
    assert len(a) == 10 == len(set(a)) and a == sorted(a)
    assert _sampling_suite(tmp_path, "samples: 10\nseed: 1") == a  # deterministic
    b = _sampling_suite(tmp_path, "samples: 10\nseed: 2")
    assert b != a
    assert _sampling_suite(tmp_path, "samples: 1000") == list(range(40))
    odd = _sampling_suite(tmp_path, "only_labels: [positive]")
    assert odd == list(range(1, 40, 2))
    some = _sampling_suite(tmp_path, "only_labels: [positive]\nsamples: 5\nseed: 7")
    assert len(some) == 5 and all(i % 2 for i in some)


def test_validate_labels(suite_dir: Path) -> None:
    s = load_suite(suite_dir / "suite.yaml")
    with pytest.raises(InputError) as ei:
        s.validate_labels(["positive"])
    assert str(ei.value) == (f"{suite_dir / 'suite.yaml'}: golden set 'rt-golden' row 2 has label 'negative', "
                             "which is not one of the version's labels ('positive')")
    path = suite_dir / "suite.yaml"
    path.write_text(FULL.replace("recall_negative", "recall_neutral"), encoding="utf-8")
    with pytest.raises(InputError, match="metric 'recall_neutral' names label 'neutral'"):
        load_suite(path).validate_labels(["negative", "positive"])
    path.write_text(FULL.replace("only_labels: [positive]", "only_labels: [positive, neutral]"), encoding="utf-8")
    with pytest.raises(InputError, match="check 'dir-negation' uses label 'neutral'"):
        load_suite(path).validate_labels(["negative", "positive"])


# --------------------------------------------------------------------------------------------------
# perturbations


def test_typos() -> None:
    p = get_perturbation("typos")
    text = "The wonderful acting impressed everyone"
    out = p.apply(text, "0:1")
    assert out is not None and out != text and len(out) == len(text)
    diff = [(a, b) for a, b in zip(text.split(), out.split(), strict=True) if a != b]
    assert len(diff) == 1
    a, b = diff[0]
    assert len(a) >= 4 and sorted(a) == sorted(b) and a[0] == b[0] and a[-1] == b[-1]
    assert p.apply(text, "0:1") == out  # deterministic for the key
    assert len({p.apply(text, f"0:{i}") for i in range(30)}) > 3  # the key matters
    assert p.apply("A cat is on my mat, all day.", "0:0") is None  # no word of >= 4 letters
    assert p.apply("book", "0:0") is None  # the only inner pair is "oo": swapping changes nothing
    two = get_perturbation({"typos": {"count": 2}})
    out2 = two.apply(text, "5:5")
    assert sum(a != b for a, b in zip(text.split(), out2.split(), strict=True)) == 2
    assert two.name == "typos(count=2)"
    assert get_perturbation({"typos": {"count": 9}}).apply("Wonderful acting", "0:0").split() != \
        ["Wonderful", "acting"]


def test_names() -> None:
    p = get_perturbation("names")
    text = "Mary met John, and Mary smiled at Maryland."
    out = p.apply(text, "1:2")
    assert out == p.apply(text, "1:2")
    words = out.replace(",", "").replace(".", "").split()
    changed = {w for w in ("Mary", "John") if w not in words}
    assert len(changed) == 1  # one name chosen; all its occurrences replaced
    if "Mary" in changed:
        assert out.count("Maryland") == 1 and words[0] == words[4] and words[0] in FIRST_NAMES
    assert p.apply("mary had a little lamb", "0:0") is None  # case-sensitive
    assert p.apply("Maryland is a state", "0:0") is None     # whole word
    assert len({p.apply("Hello Anna.", f"0:{i}") for i in range(20)}) > 3


def test_punctuation_and_negation() -> None:
    p = get_perturbation("punctuation")
    assert p.apply("Great fun!!  ", "0:0") == "Great fun"
    assert p.apply("Great fun", "0:0") == "Great fun."
    assert p.apply("Is it?", "0:0") == "Is it"
    assert p.apply("?!", "0:0") is None
    n = get_perturbation("add_negation")
    out = n.apply("I loved it", "3:4")
    assert out.startswith("I loved it.") and out[len("I loved it."):] in NEGATION_CLAUSES
    assert n.apply("I loved it", "3:4") == out
    assert n.apply("Wow!", "0:0").startswith("Wow! ")


def test_mapping_perturbations() -> None:
    suf = get_perturbation({"suffix": ["Anyway.", " ok"]})
    assert {suf.apply("Good film.", f"0:{i}") for i in range(20)} == {"Good film. Anyway.", "Good film. ok"}
    pre = get_perturbation({"prefix": ["Honestly,"]})
    assert pre.apply("good film.", "0:0") == "Honestly, good film."
    rep = get_perturbation({"replace": {"good": "bad", "bad": "good", "not bad": "fine"}})
    assert rep.apply("good, not bad, bad; goodness", "0:0") == "bad, fine, good; goodness"
    assert rep.apply("Good stuff", "0:0") is None  # case-sensitive, nothing applies
    assert get_perturbation({"names": None}).name == "names"
    assert get_perturbation({"replace": {"a": "a"}}).apply("a b", "0:0") is None  # unchanged -> None


@pytest.mark.parametrize("spec, needle", [
    ("typo", "unknown perturbation 'typo' (known: typos, names, punctuation, add_negation"),
    ({"typos": {"count": 0}}, "count must be an integer >= 1"),
    ({"typos": {"n": 2}}, "unknown parameter 'n'"),
    ({"names": {"x": 1}}, "takes no parameters"),
    ({"suffix": []}, "non-empty list"),
    ({"replace": {}}, "non-empty mapping"),
    ({"suffix": ["a"], "prefix": ["b"]}, "exactly one key"),
    ({"shuffle": 1}, "unknown perturbation 'shuffle'"),
    (3, "a name or a mapping"),
])
def test_bad_perturbations(spec, needle) -> None:
    with pytest.raises(InputError) as ei:
        get_perturbation(spec)
    assert needle in str(ei.value) and "\n" not in str(ei.value)


# --------------------------------------------------------------------------------------------------
# bad suites: one line, starting with the suite path, naming the place


GOOD_GOLDEN = "golden:\n  - {name: g, path: golden.jsonl, metrics: {accuracy: {margin: 0.02}}}\n"

BAD = [
    ("unknown key", "name: s\ncheks: []\n" + GOOD_GOLDEN, "cheks: unknown key 'cheks' (allowed: name, task"),
    ("unknown golden key", "name: s\ngolden:\n  - {name: g, path: golden.jsonl, colum: x, "
     "metrics: {accuracy: {min: 0.1}}}\n", "golden[0].colum: unknown key 'colum'"),
    ("unknown metric", "name: s\ngolden:\n  - {name: g, path: golden.jsonl, metrics: {accurcy: {min: 0.1}}}\n",
     "golden[0].metrics.accurcy: unknown metric 'accurcy' for task classification (known: accuracy, "
     "macro_f1, ece, recall_<label>)"),
    ("generation metric on classification", "name: s\ngolden:\n  - {name: g, path: golden.jsonl, "
     "metrics: {rouge_l: {min: 0.1}}}\n", "set `task: generation`"),
    ("margin on length_ratio", "name: s\ntask: generation\ngolden:\n  - {name: g, path: gen.jsonl, "
     "metrics: {length_ratio: {margin: 0.1}}}\n", "golden[0].metrics.length_ratio.margin: length_ratio has no"),
    ("negative margin", "name: s\ngolden:\n  - {name: g, path: golden.jsonl, metrics: {accuracy: "
     "{margin: -0.1}}}\n", "golden[0].metrics.accuracy.margin: Input should be greater than or equal to 0"),
    ("empty rule", "name: s\ngolden:\n  - {name: g, path: golden.jsonl, metrics: {accuracy: {}}}\n",
     "golden[0].metrics.accuracy: a metric rule needs at least one of margin, min, max"),
    ("no metrics", "name: s\ngolden:\n  - {name: g, path: golden.jsonl, metrics: {}}\n", "golden[0].metrics: must not be empty"),
    ("missing data file", "name: s\ngolden:\n  - {name: g, path: nope.jsonl, metrics: {accuracy: {min: 0.1}}}\n",
     "golden[0].path: dataset file not found"),
    ("bad data row", "name: s\ngolden:\n  - {name: g, path: bad.jsonl, metrics: {accuracy: {min: 0.1}}}\n",
     "golden[0].path: "),
    ("bad yaml", "name: s\ngolden: [\n", "invalid YAML"),
    ("duplicate yaml key", "name: s\nname: t\n" + GOOD_GOLDEN, "line 2, column 1: invalid YAML (duplicate key 'name')"),
    ("empty file", "# only a comment\n", "the suite file is empty"),
    ("not a mapping", "- a\n- b\n", "a suite must be a YAML mapping"),
    ("nothing to test", "name: s\n", "at least one golden set or one check"),
    ("bad name", "name: 'bad name!'\n" + GOOD_GOLDEN, "name: invalid name 'bad name!'"),
    ("missing name", GOOD_GOLDEN, "name: missing required key"),
    ("duplicate golden", "name: s\ngolden:\n  - {name: g, path: golden.jsonl, metrics: {accuracy: {min: 0.1}}}\n"
     "  - {name: g, path: golden.jsonl, metrics: {accuracy: {min: 0.1}}}\n",
     "golden[1].name: duplicate golden set name 'g'"),
    ("duplicate check", GOOD_GOLDEN.replace("golden:", "name: s\ngolden:") + "checks:\n"
     "  - {name: c, type: invariance, data: g, perturbation: typos}\n"
     "  - {name: c, type: invariance, data: g, perturbation: names}\n", "checks[1].name: duplicate check name 'c'"),
    ("directional on generation", "name: s\ntask: generation\nchecks:\n  - {name: c, type: directional, "
     "data: gen.jsonl, perturbation: typos, label: x, direction: decrease}\n",
     "checks[0].type: directional checks need class scores"),
    ("placeholder without fill", "name: s\nchecks:\n  - {name: c, type: mft, template: 'a {x} {y}', "
     "fill: {x: [b]}, label: positive}\n", "checks[0].fill: placeholder {y} of the template has no fill list"),
    ("fill without placeholder", "name: s\nchecks:\n  - {name: c, type: mft, template: 'a {x}', "
     "fill: {x: [b], z: [c]}, label: positive}\n", "checks[0].fill.z: the template has no placeholder {z}"),
    ("mft without label", "name: s\nchecks:\n  - {name: c, type: mft, template: 'a', label: null}\n",
     "checks[0].label: missing required key"),
    ("max_failure_rate 1.5", "name: s\nchecks:\n  - {name: c, type: mft, template: 'a', label: p, "
     "max_failure_rate: 1.5}\n", "checks[0].max_failure_rate: Input should be less than or equal to 1"),
    ("unknown perturbation", GOOD_GOLDEN.replace("golden:", "name: s\ngolden:") + "checks:\n"
     "  - {name: c, type: invariance, data: g, perturbation: shuffle}\n",
     "checks[0].perturbation: unknown perturbation 'shuffle' (known: typos"),
    ("unknown check type", "name: s\nchecks:\n  - {name: c, type: mfx}\n",
     "checks[0].type: unknown check type 'mfx' (known: mft, invariance, directional)"),
    ("unknown check key", "name: s\nchecks:\n  - {name: c, type: mft, template: a, label: p, lable: q}\n",
     "checks[0].lable: unknown key 'lable' (allowed: name, max_failure_rate, type, template"),
    ("data neither golden nor file", GOOD_GOLDEN.replace("golden:", "name: s\ngolden:") + "checks:\n"
     "  - {name: c, type: invariance, data: gg, perturbation: typos}\n",
     "checks[0].data: 'gg' is neither a golden set name (golden sets: 'g')"),
    ("missing check data file", "name: s\nchecks:\n  - {name: c, type: invariance, data: ../x.jsonl, "
     "perturbation: typos}\n", "checks[0].data: dataset file not found"),
    ("bad confidence", GOOD_GOLDEN.replace("golden:", "name: s\ngolden:") + "gate: {confidence: 1.0}\n",
     "gate.confidence: Input should be less than 1"),
    ("few resamples", GOOD_GOLDEN.replace("golden:", "name: s\ngolden:") + "gate: {resamples: 10}\n",
     "gate.resamples: Input should be greater than or equal to 100"),
    ("bad policy", GOOD_GOLDEN.replace("golden:", "name: s\ngolden:") + "policies: {production: {require: true}}\n",
     "policies.production.require: unknown key 'require' (allowed: require_gate, drift)"),
    ("bool as label", "name: s\nchecks:\n  - {name: c, type: mft, template: a, label: yes}\n",
     "checks[0].label: Input should be a valid string, got True"),
    ("target_column on classification", "name: s\ngolden:\n  - {name: g, path: golden.jsonl, target_column: t, "
     "metrics: {accuracy: {min: 0.1}}}\n", "golden[0].target_column: target_column does not apply"),
    ("only_labels on generation", "name: s\ntask: generation\nchecks:\n  - {name: c, type: invariance, "
     "data: gen.jsonl, perturbation: typos, only_labels: [a]}\n", "checks[0].only_labels: only_labels applies"),
    ("bad template", "name: s\nchecks:\n  - {name: c, type: mft, template: 'a {x!r}', fill: {x: [b]}, "
     "label: p}\n", "checks[0].template: placeholder {x} may not have a conversion"),
]


@pytest.mark.parametrize("what, text, needle", BAD, ids=[b[0] for b in BAD])
def test_bad_suites(tmp_path: Path, what: str, text: str, needle: str) -> None:
    write_jsonl(tmp_path / "golden.jsonl", ROWS)
    write_jsonl(tmp_path / "gen.jsonl", [{"text": "q", "target": "a"}])
    (tmp_path / "bad.jsonl").write_text('{"text": "x", "label": "positive"}\n{"text": "y"}\n', encoding="utf-8")
    path = tmp_path / "suite.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError) as ei:
        load_suite(path)
    msg = str(ei.value)
    assert "\n" not in msg and msg.startswith(f"{path}: "), msg
    assert needle in msg, msg


def test_missing_suite_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"suite\.yaml: suite file not found$"):
        load_suite(tmp_path / "suite.yaml")
    with pytest.raises(InputError, match="is a folder"):
        load_suite(tmp_path)
