"""Group DRO as a training objective of the one trainer (issue 14): the step's robust CE is
Sagawa et al.'s online update, group-balanced sampling, worst-group model selection, q in the
checkpoint (resume bit-identical), init_from, pseudo-group files, bad input.
Tiny runs: digits-coarse (8x8, stratum = digit as groups) and spurious-mnist (true groups)."""

from __future__ import annotations

import math
import os
import signal

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from spreadcon import build, runs
from spreadcon.io import file_sha256, read_json
from spreadcon.config import TrainConfig
from spreadcon.group_dro import group_dro_loss
from spreadcon.groups import build_groups, write_group_file
from spreadcon.train import Batch, epoch_order, new_state, prepare, train, train_step


def tiny(tmp_path, name="run", **changes) -> TrainConfig:
    base = dict(dataset="digits-coarse", encoder="cnn-test", protocol="ce", epochs=2, batch_size=128, lr=3e-3,
                warmup_epochs=0.5, out_dir=str(tmp_path / name), progress=False, tensorboard=False,
                device="cpu", groups="stratum")
    return TrainConfig(**{**base, **changes})


def params(run_dir, name="checkpoint.pt") -> dict[str, torch.Tensor]:
    return torch.load(run_dir / name, map_location="cpu", weights_only=False)["model"]


class SigintAt:
    """Sends this process a real SIGINT (Ctrl-C) at a given step (as tests/test_train.py)."""

    def __init__(self, step: int) -> None:
        self.step, self.sent = step, False

    def relabel(self, step, z, labels, index):
        if step == self.step and not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGINT)
        return labels


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    """One finished 1-epoch ERM run on digits-coarse (the coarse run of GEORGE's pipeline)."""
    tmp = tmp_path_factory.mktemp("source")
    return train(tiny(tmp, "coarse", epochs=1, groups=None, warmup_epochs=0.0))


# --- the step ---------------------------------------------------------------------------
def sagawa_oracle(per_image: torch.Tensor, groups: torch.Tensor, q: torch.Tensor, eta: float,
                  counts: torch.Tensor, c: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Algorithm 1 of Sagawa et al., written per group in float64."""
    new = q.clone()
    means = torch.zeros(len(q), dtype=torch.float64)
    for g in range(len(q)):
        members = per_image[groups == g]
        means[g] = members.mean() if len(members) else 0.0
        new[g] = q[g] * math.exp(eta * (float(means[g]) + c / math.sqrt(float(counts[g]))))
    new = new / new.sum()
    return (new * means).sum(), new


def test_robust_ce_is_sagawas_update(tmp_path):
    cfg = tiny(tmp_path, objective="group_dro", gdro_eta=0.5, gdro_adjustment=2.0)
    run = prepare(cfg, ())
    state = new_state(run)
    q = state.group_weights
    assert q.dtype == torch.float64 and torch.allclose(q, torch.full((10,), 0.1, dtype=torch.float64))
    for step, rows in enumerate((torch.arange(0, 40), torch.arange(40, 100))):  # q carries over
        batch = Batch(run.data.x[rows], run.data.y_con[rows], run.data.y_ce[rows], run.data.labelled[rows],
                      rows, run.groups.train[rows])
        gen = torch.Generator().manual_seed(7 + step)
        with torch.no_grad():  # the same forward: same views (a copy of the generator), train mode
            xv = run.ctx.views(batch.x, cfg.views, torch.Generator().manual_seed(7 + step)).flatten(0, 1)
            _, logits = run.model(xv)
        ce = F.cross_entropy(logits, batch.y_ce.repeat_interleave(cfg.views), reduction="none")
        per_image = ce.view(len(rows), cfg.views).mean(1).double()
        q_before = q.clone()
        want_loss, want_q = sagawa_oracle(per_image, batch.group, q_before, 0.5, run.groups.counts, 2.0)
        lib_loss, lib_q = group_dro_loss(per_image, batch.group, q_before, eta=0.5, adjustment=run.groups.adjustment)
        loss = train_step(run.ctx, batch, generator=gen, step=step, acc=state.acc or _acc(run), group_weights=q)
        torch.testing.assert_close(q, want_q, rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(q, lib_q, rtol=1e-6, atol=1e-9)
        assert float(loss) == pytest.approx(float(want_loss), rel=1e-5)
        assert float(loss) == pytest.approx(float(lib_loss), rel=1e-5)
        assert not torch.allclose(q, q_before)
        state.optimizer.zero_grad()


def _acc(run):
    from spreadcon.train import new_accumulators

    return new_accumulators(run.config, n=run.data.n, num_classes=run.ds.num_classes, embed_dim=run.model.embed_dim,
                            device=run.device)


def test_group_sampling_is_uniform_over_groups(tmp_path):
    run = prepare(tiny(tmp_path, dataset="spurious-mnist", groups="group", group_sampling=True), ())
    counts = run.groups.counts.double()
    assert counts.min() / counts.max() < 0.1  # two rare groups (5% of each class)
    draws = [epoch_order(run, torch.Generator().manual_seed(s)) for s in range(3)]
    assert torch.equal(draws[0], epoch_order(run, torch.Generator().manual_seed(0)))  # seeded, deterministic
    assert not torch.equal(draws[0], draws[1])
    order = torch.cat(draws)
    assert len(draws[0]) == run.data.n
    freq = torch.bincount(run.groups.train[order], minlength=4).double() / len(order)
    torch.testing.assert_close(freq, torch.full((4,), 0.25, dtype=torch.float64), atol=0.02, rtol=0)


def test_without_sampling_the_epoch_is_a_permutation(tmp_path):
    run = prepare(tiny(tmp_path, objective="group_dro"), ())
    order = epoch_order(run, torch.Generator().manual_seed(0))
    assert torch.equal(order.sort().values, torch.arange(run.data.n))


# --- a run ----------------------------------------------------------------------------------
def test_worst_group_selection_and_logged_metrics(tmp_path):
    cfg = tiny(tmp_path, dataset="spurious-mnist", groups="group", objective="group_dro", group_sampling=True,
               gdro_adjustment=1.0, subsample_fraction=0.3, epochs=4, batch_size=64, warmup_epochs=0.0)
    assert cfg.selection == "worst_group"
    run_dir = train(cfg)
    rows = runs.read_metrics(run_dir)
    for r in rows:
        assert set(r["val_group_accuracy"]) == {"0", "1", "2", "3"}
        assert r["val_worst_group_accuracy"] == min(r["val_group_accuracy"].values())
        assert sum(r["group_weights"].values()) == pytest.approx(1.0)
    scores = [r["val_worst_group_accuracy"] for r in rows]
    best = int(np.argmax(scores)) + 1  # ties keep the earlier epoch
    assert torch.load(run_dir / "best.pt", weights_only=False)["epoch"] == best
    assert [r["epoch"] for r in rows if r["best"]][-1] == best
    info = read_json(run_dir / "run.json")
    assert info["groups"]["source"] == "group" and sum(info["groups"]["train_counts"]) == run_size(run_dir)


def run_size(run_dir) -> int:
    return int((runs.load_run(run_dir).dataset.split == 0).sum())


def test_selection_by_accuracy_ignores_groups(tmp_path):
    run_dir = train(tiny(tmp_path, select_by="accuracy", epochs=3))
    rows = runs.read_metrics(run_dir)
    assert "group_weights" not in rows[0] and "val_worst_group_accuracy" in rows[0]  # erm: no q, groups logged
    best = int(np.argmax([r["val_acc"] for r in rows])) + 1
    assert torch.load(run_dir / "best.pt", weights_only=False)["epoch"] == best


def test_resume_mid_epoch_is_bit_identical_with_q(tmp_path):
    # protocol joint: the Ctrl-C is sent from the contrastive loss's relabel hook
    changes = dict(objective="group_dro", group_sampling=True, gdro_eta=0.1, gdro_adjustment=2.0, epochs=3,
                   protocol="joint", loss="supcon")
    full = train(tiny(tmp_path, "full", **changes))
    cfg = tiny(tmp_path, "parts", **changes)
    with pytest.raises(KeyboardInterrupt, match="step"):
        train(cfg, callbacks=[SigintAt(step=13)])  # 11 steps per epoch (1295 images): inside epoch 2
    ckpt = torch.load(tmp_path / "parts" / "checkpoint.pt", weights_only=False)
    assert ckpt["position"]["group_weights"].shape == (10,)
    parts = train(cfg, resume=True)
    for a, b in ((params(full), params(parts)), (params(full, "best.pt"), params(parts, "best.pt"))):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    end = torch.load(full / "checkpoint.pt", weights_only=False)["position"]["group_weights"]
    assert torch.equal(end, torch.load(parts / "checkpoint.pt", weights_only=False)["position"]["group_weights"])
    strip = lambda rows: [{k: v for k, v in r.items() if k != "images_per_s"} for r in rows]  # noqa: E731
    rows = runs.read_metrics(full)
    assert strip(rows) == strip(runs.read_metrics(parts))
    assert rows[-1]["group_weights"] == dict(zip([str(i) for i in range(10)], end.tolist()))  # the final q


def test_joint_protocol_keeps_the_contrastive_term(tmp_path):
    rows = runs.read_metrics(train(tiny(tmp_path, protocol="joint", loss="supcon", objective="group_dro",
                                        epochs=1, warmup_epochs=0.0)))
    assert rows[0]["contrastive"] > 0 and rows[0]["ce"] > 0 and "group_weights" in rows[0]


# --- init_from ------------------------------------------------------------------------------
def test_init_from_copies_the_encoder_not_the_head(tmp_path, source_run):
    source = params(source_run, "best.pt")
    fresh = prepare(tiny(tmp_path, "fresh"), ()).model.state_dict()
    for where in (source_run, source_run / "best.pt"):
        model = prepare(tiny(tmp_path, "end", init_from=str(where)), ()).model.state_dict()
        for key in model:
            want = source[key] if key.startswith("encoder.") else fresh[key]
            assert torch.equal(model[key], want), key
        assert not torch.equal(model["head.weight"], source["head.weight"])
    run_dir = train(tiny(tmp_path, "trained", init_from=str(source_run), objective="group_dro", epochs=1,
                         warmup_epochs=0.0))
    assert read_json(run_dir / "run.json")["init_from"]["sha256"] == file_sha256(source_run / "best.pt")


def test_init_from_refuses_another_architecture(tmp_path, source_run):
    mismatch = r"holds encoder 'cnn-test' .* builds encoder 'cnn-test' with encoder_options {'widths': \[4, 4\]}"
    with pytest.raises(ValueError, match=mismatch):
        prepare(tiny(tmp_path, init_from=str(source_run), encoder_options={"widths": [4, 4]}), ())
    with pytest.raises(ValueError, match="encoder 'mlp-test'"):
        prepare(tiny(tmp_path, init_from=str(source_run), encoder="mlp-test"), ())
    bare = tmp_path / "elsewhere"
    bare.mkdir()
    torch.save({"model": {"encoder.nope": torch.zeros(1)}}, bare / "weights.pt")  # no config beside it
    with pytest.raises(ValueError, match="keys or shapes differ"):
        prepare(tiny(tmp_path, init_from=str(bare / "weights.pt")), ())
    with pytest.raises(FileNotFoundError, match="init_from"):
        prepare(tiny(tmp_path, init_from=str(tmp_path / "missing.pt")), ())


# --- pseudo-group files -----------------------------------------------------------------------
def pseudo_groups_file(tmp_path, source_run, *, drop: int = 0, val_ids=None):
    run = runs.load_run(source_run)
    train_split, val_split = run.embeddings("train"), run.embeddings("val")
    pseudo = lambda arrays: arrays["stratum"] % 3  # noqa: E731  (any clustering would do)
    return write_group_file(tmp_path / "pseudo.npz", train_index=train_split["index"][drop:],
                            train=pseudo(train_split)[drop:], val_index=val_split["index"],
                            val=pseudo(val_split) if val_ids is None else val_ids(val_split))


def test_pseudo_group_file_round_trip(tmp_path, source_run):
    path = pseudo_groups_file(tmp_path, source_run)
    cfg = tiny(tmp_path, groups=str(path), objective="group_dro", gdro_adjustment=2.0, epochs=1, warmup_epochs=0.0)
    ds = build.build_dataset(cfg)
    groups = build_groups(ds, str(path))
    rows = torch.nonzero(ds.split == 0).squeeze(1)
    assert torch.equal(groups.ids[groups.train], ds.stratum[rows] % 3)
    assert groups.ids.tolist() == [0, 1, 2] and int(groups.counts.sum()) == len(rows)
    run_dir = train(cfg)
    assert set(runs.read_metrics(run_dir)[0]["group_weights"]) == {"0", "1", "2"}
    assert read_json(run_dir / "run.json")["data_fingerprint"]["transforms"][-1]["sha256"] == \
        file_sha256(path)


def test_pseudo_group_file_errors(tmp_path, source_run):
    path = pseudo_groups_file(tmp_path, source_run, drop=5)
    with pytest.raises(ValueError, match="5 of the .* train rows .* no group.*same dataset config"):
        prepare(tiny(tmp_path, groups=str(path)), ())
    path = pseudo_groups_file(tmp_path, source_run, val_ids=lambda a: np.zeros(len(a["index"]), dtype=np.int64))
    with pytest.raises(ValueError, match=r"groups \[1, 2\] .* no val members"):
        prepare(tiny(tmp_path, groups=str(path)), ())
    prepare(tiny(tmp_path, groups=str(path), select_by="accuracy"), ())  # fine when selection needs no val groups
    with pytest.raises(FileNotFoundError, match="nowhere.npz"):
        prepare(tiny(tmp_path, groups=str(tmp_path / "nowhere.npz")), ())
    np.savez(tmp_path / "floats.npz", train_index=np.arange(3), train=np.ones(3) * 0.5, val_index=np.arange(3),
             val=np.arange(3))
    with pytest.raises(ValueError, match="train must be a 1-d array of ints >= 0"):
        build_groups(build.build_dataset(tiny(tmp_path, groups=None)), str(tmp_path / "floats.npz"))
    with pytest.raises(ValueError, match="ints >= 0"):
        write_group_file(tmp_path / "neg.npz", train_index=[0], train=[-1], val_index=[1], val=[0])


# --- bad input --------------------------------------------------------------------------------
@pytest.mark.parametrize("eta", [0.0, 11.0, float("nan"), -0.1])
def test_bad_eta(tmp_path, eta):
    with pytest.raises(ValueError, match="gdro_eta"):
        tiny(tmp_path, objective="group_dro", gdro_eta=eta)


@pytest.mark.parametrize("changes, match", [
    ({"objective": "group_dro", "groups": None}, "objective='group_dro' needs groups"),
    ({"group_sampling": True, "groups": None}, "group_sampling=True needs groups"),
    ({"select_by": "worst_group", "groups": None}, "select_by='worst_group' needs groups"),
    ({"objective": "dro"}, "objective='dro'"),
    ({"select_by": "best"}, "select_by='best'"),
    ({"groups": "clusters"}, "groups='clusters'"),
    ({"gdro_adjustment": -1.0}, "gdro_adjustment"),
    ({"objective": "group_dro", "protocol": "contrastive_then_probe", "loss": "supcon"}, "contrastive_then_probe"),
])
def test_bad_config(tmp_path, changes, match):
    with pytest.raises(ValueError, match=match):
        tiny(tmp_path, **changes)


def test_dataset_without_group_field_is_named(tmp_path):
    with pytest.raises(ValueError, match="dataset 'digits-coarse' has no group field"):
        prepare(tiny(tmp_path, groups="group"), ())


def test_defaults_keep_experiment_keys_stable():
    from spreadcon.experiments.recipes import resolve_train

    assert resolve_train({"dataset": "digits", "epochs": 3}) == {"dataset": "digits", "epochs": 3}
    assert TrainConfig().selection == "accuracy" and TrainConfig(groups="group").selection == "worst_group"
