"""spreadcon.experiments.runner: run keys (stable across refactors), rows, report-only, outputs, index."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from spreadcon.cli import main
from spreadcon.experiments import common, registry
from spreadcon.experiments.recipes import config_dict, resolve_train
from spreadcon.experiments import runner
from spreadcon.experiments.runner import (
    Context, Experiment, RunNotFinished, RunSpec, plan_runs, rejudge, resolve_config, run_experiment, run_one,
)
from spreadcon.experiments.table import markdown
from spreadcon.run_lock import RunLock

EXPERIMENTS = registry.experiments()

# Keys planned before the experiments were split by concern (issue 23), before TrainConfig had
# `embedding` and before the paper protocol joined the projection rows (issue 26): finished runs
# under results/runs must keep being found. The projection rows keep their names and params; the
# paper protocol's rows are new ("<dataset>-paper-<loss>", "demo-paper-<loss>").
KNOWN_KEYS = {
    ("demo", "small", False): ["demo-supcon-s0-406013f913", "demo-simclr-s0-c461d3042c", "demo-spread-s0-f91ba873f0",
                               "demo-raw-pixels-s0-956aeb54d3", "demo-random-init-s0-b0c952fc37"],
    # the smoke demo ran the paper protocol under the names demo/<loss>: same params now under demo/paper/<loss>
    ("demo", "small", True): ["demo-paper-supcon-s0-569a48fe6e", "demo-paper-simclr-s0-95b4addd19",
                              "demo-paper-raw-pixels-s0-331ba0d799", "demo-paper-random-init-s0-159da16b1b",
                              "demo-supcon-s0-14711a3397", "demo-spread-s0-deef2a9485"],
    ("fig4-transfer", "small", True): [  # the smoke grid runs L_SC and L_spread only
        "mnist5k-coarse-supcon-s0-c7a5f7538d", "mnist5k-coarse-spread-s0-75436d7915",
        "mnist5k-coarse-raw-pixels-s0-2d93073b42", "mnist5k-coarse-random-init-s0-eea800433d"],
    ("fig4-transfer", "small", False): [
        "mnist5k-coarse-simclr-s0-c461d3042c", "mnist5k-coarse-supcon-s2-ef435fbf9d",
        "mnist5k-coarse-spread-s0-f91ba873f0", "mnist5k-coarse-u-spread-s2-24b7b9df5c",
        "digits-coarse-simclr-s0-6bfd56e8ba", "digits-coarse-spread-s2-ca84f9efd6",
        "mnist5k-coarse-raw-pixels-s0-5cb033dd21", "mnist5k-coarse-u-random-init-s2-eb388d07fd",
        "digits-coarse-random-init-s0-36da60a886"],
    ("fig4-end-model", "small", False): [
        "mnist5k-coarse-simclr-s0-c461d3042c", "spurious-mnist-supcon-s2-e8c31f2c53", "digits-spread-s0-cdcf479205",
        "mnist5k-coarse-raw-pixels-s0-5cb033dd21", "spurious-mnist-random-init-s2-81e55fcb7d"],
    ("fig4-transfer", "medium", False): [
        "cifar10-coarse-simclr-s0-72f3585bbc", "cifar10-coarse-simclr-s1-75f039da99",
        "cifar10-coarse-supcon-s0-0f32a37461", "cifar10-coarse-supcon-s1-585578921f",
        "cifar10-coarse-supcon-authors-s0-bfd86b4b81", "cifar10-coarse-supcon-authors-s1-6cb6a519ba"],
    ("fig2", "small", False): ["mnist5k-coarse-u-supcon-s0-bedc796135", "mnist5k-coarse-u-supcon-s1-b50581cc37",
                               "mnist5k-coarse-u-supcon-s2-b9d7a4deb6", "mnist5k-coarse-u-spread-s0-494ef4f78b"],
    ("fig5-noise", "small", True): ["noise-supcon-r0-f0.2-s0-af67c29f3d", "noise-spread-fix-r0-f0.2-s0-a9a30ffde9",
                                    "noise-supcon-r0.2-f0.2-s0-0653301b9f", "noise-spread-fix-r0.2-f0.2-s0-9ac676d4ae"],
    ("fig5-coreset", "small", False): ["coreset-digits-s0-30892bccba", "coreset-digits-s1-a5773c20ce"],
    ("fig5-robustness", "small", False): ["spurious-mnist-ce-s0-ba52119f5f", "spurious-mnist-ce-s1-1619c91e08"],
    ("sweep", "small", False): ["mnist5k-coarse-spread-tau0.5-alpha0.16-s0-f91ba873f0",
                                "mnist5k-coarse-spread-tau0.5-alpha0.16-s1-66a8e0a790"],
    ("theory", "small", False): ["presence-p0.3-0.3-n10-s0-9e0aa20727", "lemma3-K2-m1-s0-a019873eba"],
}


@pytest.mark.parametrize("name,scale,smoke", sorted(KNOWN_KEYS))
def test_run_keys_are_unchanged(name, scale, smoke):
    exp = EXPERIMENTS[name]
    cfg = resolve_config(exp, scale, smoke)
    keys = [s.key for s in plan_runs(exp, cfg, [0, 1, 2])]  # (seeds 0-2: whatever the config's count)
    assert [k for k in keys if k in KNOWN_KEYS[(name, scale, smoke)]] == KNOWN_KEYS[(name, scale, smoke)]


@pytest.mark.parametrize("folder,name,scale", [("fig4-transfer", "fig4-transfer", "small"),
                                               ("fig4-end-model", "fig4-end-model", "small"),
                                               ("fig4-transfer-medium", "fig4-transfer", "medium")])
def test_the_runs_behind_committed_results_are_still_planned(folder, name, scale):
    """Every training run a committed results.json was made from keeps its key in today's plan."""
    path = Path(__file__).resolve().parents[2] / "results" / folder / "results.json"
    if not path.exists():
        pytest.skip(f"results/{folder} is not committed")
    rows = json.loads(path.read_text())["rows"]
    exp = EXPERIMENTS[name]
    keys = {s.key for s in plan_runs(exp, resolve_config(exp, scale, False), sorted({r["seed"] for r in rows}))}
    assert {r["run"] for r in rows} <= keys


def test_an_implied_projection_head_is_not_hashed_and_comes_back():
    head = {"encoder_options": {"proj_dim": 8}}
    assert resolve_train({**head, "embedding": "projection"}) == resolve_train(head) == head
    assert config_dict(head) == {**head, "embedding": "projection"}
    assert resolve_train({"embedding": "projection"}) == {"embedding": "projection"}  # the default head: hashed
    assert resolve_train({"embedding": "paper", "epochs": 3, "seed": 4, "device": "cpu"}) == {"epochs": 3}


def test_runspec_key_is_stable_and_depends_on_params_and_seed():
    a = RunSpec("fig/x", {"x": 1, "y": [1, 2]}, 0, labels={"l": 1}, evals=("a",))
    same = RunSpec("fig/x", {"y": [1, 2], "x": 1}, 0, labels={"l": 2}, evals=("b",))
    assert a.key == same.key  # labels and evals do not change what is computed
    assert a.key.startswith("fig-x-s0-")
    assert RunSpec("fig/x", {"x": 2, "y": [1, 2]}, 0).key != a.key
    assert RunSpec("fig/x", {"x": 1, "y": [1, 2]}, 1).key != a.key


# --- the runner on an experiment without training ---------------------------------------------------
def _counting_experiment(calls: list, unfinished: set | None = None) -> Experiment:
    """execute records its calls; the seeds in `unfinished` have no finished run (RunNotFinished
    when the runner may not train)."""
    def execute(spec, ctx):
        if unfinished and spec.seed in unfinished and not ctx.train:
            raise RunNotFinished(spec.key)
        calls.append((spec.key, spec.evals))
        return {"m_a": spec.params["x"] * 10 + spec.seed}

    def report(rows, cfg, out):
        (out / "figure.png").write_bytes(b"png")
        return markdown(rows, row_key="name", col_key="kind", metric="m_a", scale=1.0)

    return Experiment(
        name="toy", summary="toy", cpu_minutes=0, module=__name__,
        config=lambda scale: {"seeds": 2, "xs": [1, 2]},
        smoke=lambda cfg: {**cfg, "xs": [1]},
        plan=lambda cfg, seeds, rows: [RunSpec(f"x{x}", {"x": x}, s, {"name": f"x{x}", "kind": "k"})
                                       for x in cfg["xs"] for s in seeds],
        execute=execute, report=report,
    )


def test_runner_writes_rows_tables_and_figures(tmp_path):
    calls: list = []
    exp = _counting_experiment(calls)
    out_dir = run_experiment(exp, Context(out=tmp_path, verbose=False))
    assert len(calls) == 4 and out_dir == tmp_path / "toy"
    result = json.loads((out_dir / "results.json").read_text())
    assert sorted(r["m_a"] for r in result["rows"]) == [10, 11, 20, 21]
    assert result["runs_planned"] == result["runs_finished"] == 4
    assert (out_dir / "table.md").read_text().count("|") > 0 and (out_dir / "figure.png").exists()
    assert "10.5 ± 0.7" in (out_dir / "table.md").read_text()  # x1 over seeds 0, 1: mean 10.5, std 0.71
    assert not (tmp_path / "runs").exists()  # the runner keeps no run markers of its own
    assert not list(out_dir.glob("*.tmp")) and not list(out_dir.glob(".*"))  # written through io's atomic writer
    run_experiment(exp, Context(out=tmp_path, verbose=False), seeds=[5])
    assert [k for k, _ in calls[4:]] == [RunSpec("x1", {"x": 1}, 5).key, RunSpec("x2", {"x": 2}, 5).key]


def test_a_run_another_process_is_writing_is_put_off_then_reused(tmp_path, monkeypatch, capsys):
    # fig4-transfer and fig4-end-model share runs: two `reproduce` commands side by side must not
    # fail on each other's locks. "The other process" holds x1/seed 0's lock (its own open file,
    # which flock refuses to this one) and releases it while the runner waits.
    calls: list = []
    exp = _counting_experiment(calls)
    locked_key = RunSpec("x1", {"x": 1}, 0).key

    def execute(spec, ctx):
        (ctx.runs_dir / spec.key).mkdir(parents=True, exist_ok=True)
        with RunLock(ctx.runs_dir / spec.key):
            return exp.execute(spec, ctx)

    (tmp_path / "runs" / locked_key).mkdir(parents=True)
    other = RunLock(tmp_path / "runs" / locked_key).acquire()
    monkeypatch.setattr(runner, "LOCKED_WAIT_S", 0.01)
    monkeypatch.setattr(runner.time, "sleep", lambda s: other.release())
    out = run_experiment(replace(exp, execute=execute), Context(out=tmp_path, verbose=False))
    assert [k for k, _ in calls][-1] == locked_key and len(calls) == 4  # put off, then done once
    assert "another process" in capsys.readouterr().out
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["run"] for r in rows][0] == locked_key  # rows keep the plan's order


def test_report_only_writes_partial_tables_without_training(tmp_path):
    calls: list = []
    out = run_experiment(_counting_experiment(calls, unfinished={1}), Context(out=tmp_path, train=False, verbose=False))
    assert len(calls) == 2  # only the finished seed-0 rows
    result = json.loads((out / "results.json").read_text())
    assert result["runs_finished"] == 2 and result["runs_planned"] == 4
    assert "**Partial: 2 of the 4 runs" in (out / "table.md").read_text()
    with pytest.raises(ValueError, match="no finished run"):
        run_experiment(_counting_experiment([], unfinished={0, 1}),
                       Context(out=tmp_path / "empty", train=False, verbose=False))


def test_rejudge_rewrites_the_claims_from_the_saved_rows_without_running_anything(tmp_path):
    calls: list = []
    out = run_experiment(_counting_experiment(calls), Context(out=tmp_path, verbose=False))
    saved = json.loads((out / "results.json").read_text())
    saved["git"], saved["claims"] = "0ld0ld0ld0", [["paper", "old claim", "yes"]]
    (out / "results.json").write_text(json.dumps(saved))
    judged = [("paper", "x2 beats x1", "holds: by the rows")]

    def execute(spec, ctx):
        raise AssertionError("rejudge ran an experiment")

    exp = replace(_counting_experiment(calls), execute=execute,
                  claims=lambda rows, cfg: judged if len(rows) == 4 and cfg["xs"] == [1, 2] else [])
    assert rejudge(exp, out) == out
    result = json.loads((out / "results.json").read_text())
    assert result["claims"] == [list(c) for c in judged] and result["rows"] == saved["rows"]
    assert result["rows_git"] == "0ld0ld0ld0" and result["runs_planned"] == 4
    table = (out / "table.md").read_text()
    assert "--rejudge" in table and "measured at git 0ld0ld0ld0" in table and "x2 beats x1" in table
    rejudge(exp, out)  # again: the rows keep their first revision
    assert json.loads((out / "results.json").read_text())["rows_git"] == "0ld0ld0ld0"
    with pytest.raises(FileNotFoundError, match="no .*results.json"):
        rejudge(exp, tmp_path / "nothing")
    with pytest.raises(ValueError, match="not of 'other'"):
        rejudge(replace(exp, name="other"), out)


def test_overrides_merge_into_the_config_and_smoke_goes_to_its_own_folder(tmp_path):
    cfg = resolve_config(EXPERIMENTS["fig2"], "small", False, overrides={"train": {"epochs": 3}})
    assert cfg["train"]["epochs"] == 3 and cfg["train"]["encoder"] == "cnn-digits"  # merged, not replaced
    cfg = resolve_config(EXPERIMENTS["fig4-transfer"], "small", False, overrides={"train": {"epochs": 3}})
    specs = plan_runs(EXPERIMENTS["fig4-transfer"], cfg, [0])  # "train" overrides every protocol's recipe
    assert {s.params["train"]["epochs"] for s in specs} == {3}
    exp = _counting_experiment([])
    assert run_experiment(exp, Context(out=tmp_path, smoke=True, verbose=False), seeds=1) == tmp_path / "toy-smoke"
    assert run_experiment(exp, Context(out=tmp_path, exp_dir=tmp_path / "here", verbose=False)) == tmp_path / "here"
    assert (tmp_path / "here" / "results.json").exists()


def test_claims_are_written_by_kind_and_the_index_counts_only_what_holds(tmp_path):
    claims = [("paper", "toy claim", "holds: A - B = +1.0 points"), ("target", "other", "not distinguishable: x"),
              ("sanity", "pipe", "holds: by construction")]
    exp = Experiment(**{**_counting_experiment([]).__dict__, "claims": lambda rows, cfg: claims})
    run_experiment(exp, Context(out=tmp_path, verbose=False))
    table = (tmp_path / "toy" / "table.md").read_text()
    assert "### The paper's claims\n\n- toy claim: **holds: A - B = +1.0 points**" in table
    assert "### Project targets\n\n- other: **not distinguishable: x**" in table and "### Sanity checks" in table
    assert json.loads((tmp_path / "toy" / "results.json").read_text())["claims"] == [list(c) for c in claims]
    (tmp_path / "app-made").mkdir()
    (tmp_path / "app-made" / "results.json").write_text('{"rows": []}')
    (tmp_path / "app-made" / "table.md").write_text("x")
    (tmp_path / "old").mkdir()  # claims written before they had a kind: not counted
    (tmp_path / "old" / "results.json").write_text(json.dumps({"experiment": "old", "claims": [["c", "yes; 1"]]}))
    run_experiment(exp, Context(out=tmp_path, smoke=True, verbose=False))
    from spreadcon.experiments.index import write_index

    text = write_index(tmp_path).read_text()
    command = "`spreadcon reproduce toy --scale small --seeds 2`"
    assert f"| [toy](toy/table.md) | toy | {command} | 2 | 1 / 1 | 0 / 1 | 1 / 1 |" in text
    assert "| old | " in text and "| regenerate | regenerate | regenerate |" in text
    assert "- [paper] toy claim: **holds: A - B = +1.0 points**" in text and "[figure.png](toy/figure.png)" in text
    assert "[app-made](app-made/table.md) | written by an application's own command" in text
    assert "toy-smoke" not in text


def test_cli_list_and_dry_run(capsys, tmp_path):
    assert main(["reproduce", "--list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in listed] == list(EXPERIMENTS)
    assert main(["reproduce", "fig4-transfer", "--dry-run", "--scale", "full", "--out", str(tmp_path)]) == 2
    assert "pass --data-root DIR" in capsys.readouterr().err  # the full scale reads files: refused without a root
    assert main(["reproduce", "fig4-transfer", "--dry-run", "--scale", "full", "--out", str(tmp_path),
                 "--data-root", str(tmp_path)]) == 0
    assert "runs planned" in capsys.readouterr().out
    assert main(["reproduce", "fig99"]) == 2
    assert "unknown experiment 'fig99'" in capsys.readouterr().err


def test_training_run_resumes_after_a_crash(tmp_path):
    """A real training run interrupted after epoch 1 resumes from its checkpoint (not from scratch)."""
    spec = common.train_spec("digits/spread", {"dataset": "digits", "encoder": "cnn-test", "epochs": 2,
                                               "batch_size": 256}, 0, {})
    ctx = Context(out=tmp_path, verbose=False)
    run_dir = tmp_path / "runs" / spec.key

    class Crash:
        def on_epoch_end(self, epoch, state):
            if epoch == 2:
                raise RuntimeError("crash in epoch 2")

    with pytest.raises(RuntimeError, match="crash"):
        common.train_run(spec, ctx, callbacks=[Crash()])
    assert (run_dir / "checkpoint.pt").exists()
    with pytest.raises(RunNotFinished, match="1 of 2 epochs"):
        common.train_run(spec, Context(out=tmp_path, verbose=False, train=False))
    exp = Experiment(name="t", summary="", cpu_minutes=1, module=__name__, config=lambda s: {},
                     smoke=lambda c: c, plan=lambda c, s, r: [spec], execute=common.train_and_evaluate,
                     report=lambda rows, cfg, out: "")
    row = run_one(exp, spec, ctx)
    epochs = [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]  # epoch 1 kept from before the crash, epoch 2 trained once
    assert 0.0 <= row["coarse_accuracy"] <= 1.0 and row["run_dir"] == str(run_dir)
