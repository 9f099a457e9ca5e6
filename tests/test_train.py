"""The trainer: every loss trains, resume is bit-identical, checkpoints survive crashes, bad input
is refused before training. Tiny runs: `digits` (8x8), cnn-test, batches of 256."""

from __future__ import annotations

import math
import os
import signal

import numpy as np
import pytest
import torch

from spreadcon import build, runs, train as train_mod
from spreadcon.config import TrainConfig, apply_overrides, config_diff
from spreadcon.data.views import default_views
from spreadcon.runs import load_run
from spreadcon.train import lr_factor, train



def tiny(tmp_path, name="run", **changes) -> TrainConfig:
    base = dict(dataset="digits", encoder="cnn-test", loss="spread", epochs=2, batch_size=256, lr=3e-3,
                warmup_epochs=0.5, out_dir=str(tmp_path / name), progress=False, tensorboard=False,
                device="cpu", probe_epochs=5)
    return TrainConfig(**{**base, **changes})


def params(run_dir, which="last") -> dict[str, torch.Tensor]:
    name = {"last": "checkpoint.pt", "best": "best.pt"}[which]
    return torch.load(run_dir / name, map_location="cpu", weights_only=False)["model"]


def assert_same_params(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


class SigintAt:
    """Sends this process a real SIGINT (Ctrl-C) at a given step or after a given epoch."""

    def __init__(self, step: int | None = None, epoch: int | None = None) -> None:
        self.step, self.epoch, self.sent = step, epoch, False

    def relabel(self, step, z, labels, index):
        if step == self.step and not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGINT)
        return labels

    def on_epoch_end(self, epoch, state):
        if epoch == self.epoch and not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGINT)


# --- every loss and protocol trains ---------------------------------------------------------
@pytest.mark.parametrize("loss", ["spread", "supcon", "simclr", "attract", "repel"])
def test_two_epochs_each_loss(tmp_path, loss):
    run_dir = train(tiny(tmp_path, loss=loss))
    rows = runs.read_metrics(run_dir)
    assert [r["epoch"] for r in rows] == [1, 2]
    for r in rows:
        assert all(math.isfinite(r[k]) for k in ("loss", "contrastive", "ce", "val_acc", "images_per_s"))
        assert r["contrastive"] > 0 and r["ce"] > 0
        if loss == "spread":  # alpha = 0.5: the logged terms make up the loss
            assert r["contrastive"] == pytest.approx(0.5 * r["attract"] + 0.5 * r["repel"], rel=1e-5)
    assert rows[1]["lr"] == pytest.approx(0.0, abs=1e-12)  # cosine ends at 0 on the last step
    for name in ("config.json", "run.json", "checkpoint.pt", "best.pt"):
        assert (run_dir / name).exists()
    run = load_run(run_dir)
    assert not run.model.training and run.config.loss == loss
    test = run.embeddings("test")
    n_test = int((run.dataset.split == 2).sum())
    assert test["embedding"].shape == (n_test, run.model.encoder.embed_dim)
    assert test["logits"].shape == (n_test, 10)
    # the cached embeddings are the best model's, in eval mode, on un-augmented images
    x = default_views(run.dataset).prepare(run.dataset.x[test["index"][:5]])
    with torch.no_grad():
        emb, _ = run.model(x)
    np.testing.assert_allclose(test["embedding"][:5], emb.numpy(), rtol=1e-5, atol=1e-6)


def test_learns_digits(tmp_path):
    """A sanity check that the joint objective learns: 6 epochs beat chance (10%) by far (0.65 seen)."""
    run_dir = train(tiny(tmp_path, epochs=6, batch_size=64, lr=1e-2))
    assert runs.read_metrics(run_dir)[-1]["val_acc"] > 0.5


def test_ce_protocol_has_no_contrastive_term(tmp_path):
    rows = runs.read_metrics(train(tiny(tmp_path, protocol="ce")))
    assert all(r["contrastive"] == 0 for r in rows) and all(r["ce"] > 0 for r in rows)


def test_contrastive_then_probe_fits_the_head(tmp_path):
    run_dir = train(tiny(tmp_path, protocol="contrastive_then_probe", loss="supcon", epochs=3, batch_size=64))
    rows = runs.read_metrics(run_dir)
    assert all(r["ce"] == 0 for r in rows) and all(0 <= r["val_acc"] <= 1 for r in rows)
    best = torch.load(run_dir / "best.pt", weights_only=False)
    assert best["probed"] is True
    run = load_run(run_dir)
    test = run.embeddings("test")
    acc = (test["logits"].argmax(1) == test["label"]).mean()
    assert acc > 0.3  # the probe is fit (a zero head would predict class 0: ~10%)


# --- resume and checkpoints -----------------------------------------------------------------
def test_resume_after_epoch_equals_uninterrupted(tmp_path):
    full = train(tiny(tmp_path, "full", epochs=4))
    cfg = tiny(tmp_path, "parts", epochs=4)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, callbacks=[SigintAt(epoch=2)])
    assert [r["epoch"] for r in runs.read_metrics(tmp_path / "parts")] == [1, 2]
    parts = train(cfg, resume=True)
    assert_same_params(params(full), params(parts))
    assert_same_params(params(full, "best"), params(parts, "best"))
    strip = lambda rows: [{k: v for k, v in r.items() if k != "images_per_s"} for r in rows]  # noqa: E731
    assert strip(runs.read_metrics(full)) == strip(runs.read_metrics(parts))


def test_ctrl_c_mid_epoch_saves_and_resumes_identically(tmp_path):
    full = train(tiny(tmp_path, "full", epochs=2, track_examples=True))
    cfg = tiny(tmp_path, "parts", epochs=2, track_examples=True)
    with pytest.raises(KeyboardInterrupt, match="step"):
        train(cfg, callbacks=[SigintAt(step=7)])  # 6 steps per epoch (1295 images): inside epoch 2
    ckpt = torch.load(tmp_path / "parts" / "checkpoint.pt", weights_only=False)
    assert ckpt["position"]["epoch"] == 1 and ckpt["position"]["step_in_epoch"] == 2
    parts = train(cfg, resume=True)
    assert_same_params(params(full), params(parts))
    np.testing.assert_array_equal(np.load(full / "example_correct.npy"), np.load(parts / "example_correct.npy"))


def test_crash_during_checkpoint_write_keeps_last_good(tmp_path, monkeypatch):
    cfg = tiny(tmp_path, epochs=3)
    real_save = torch.save
    calls = {"n": 0}

    def crashing_save(obj, f, *args, **kwargs):
        if "position" in obj and obj["position"]["epoch"] == 2:  # the epoch-2 checkpoint
            with open(f, "wb") as handle:
                handle.write(b"half a checkpoint")  # a partial write ...
            raise OSError("disk full")                 # ... then the crash
        calls["n"] += 1
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(OSError, match="disk full"):
        train(cfg)
    monkeypatch.setattr(torch, "save", real_save)
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)  # still loadable
    assert ckpt["position"]["epoch"] == 1
    assert not list((tmp_path / "run").glob("*.tmp"))  # no temp file left behind
    run_dir = train(cfg, resume=True)  # and training continues from it
    assert [r["epoch"] for r in runs.read_metrics(run_dir)] == [1, 2, 3]


def test_nan_loss_stops_naming_the_step(tmp_path, monkeypatch):
    real = train_mod.build_loss

    def poisoned(config):
        loss = real(config)
        calls = {"n": 0}

        def forward(z, labels, **kw):
            calls["n"] += 1
            value = loss(z, labels, **kw)
            value, terms = value if isinstance(value, tuple) else (value, None)
            value = value * float("nan") if calls["n"] == 8 else value
            return value if terms is None else (value, terms)
        return forward

    monkeypatch.setattr(train_mod, "build_loss", poisoned)
    with pytest.raises(FloatingPointError, match=r"step 8 \(epoch 2, batch 2\)"):
        train(tiny(tmp_path, epochs=3))
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert ckpt["position"]["epoch"] == 1 and all(torch.isfinite(v).all() for v in ckpt["model"].values())


def test_keep_checkpoints_and_example_history(tmp_path):
    seen = []

    class Recorder:
        def relabel(self, step, z, labels, index):
            seen.append((step, z.shape, float(z.norm(dim=-1).mean()), index.clone()))
            return labels

        def on_epoch_end(self, epoch, state):
            state["metrics"]["recorded"] = epoch

    run_dir = train(tiny(tmp_path, epochs=3, keep_checkpoints=[1, 3], track_examples=True), callbacks=[Recorder()])
    assert (run_dir / "ckpt_epoch1.pt").exists() and (run_dir / "ckpt_epoch3.pt").exists()
    assert not (run_dir / "ckpt_epoch2.pt").exists()
    run = load_run(run_dir, checkpoint=1)
    assert_same_params(run.model.state_dict(), torch.load(run_dir / "ckpt_epoch1.pt", weights_only=False)["model"])
    n_train = int((run.dataset.split == 0).sum())
    history = np.load(run_dir / "example_correct.npy")
    assert history.shape == (3, n_train) and history.dtype == bool
    assert [r["recorded"] for r in runs.read_metrics(run_dir)] == [1, 2, 3]
    assert [s[0] for s in seen] == list(range(len(seen)))
    assert all(s[1][1:] == (2, 16) and s[2] == pytest.approx(1.0, abs=1e-5) for s in seen)
    per_epoch = len(seen) // 3
    first_epoch = torch.cat([s[3] for s in seen[:per_epoch]])
    assert torch.equal(first_epoch.sort().values, torch.arange(n_train))  # each example once per epoch


def test_relabel_changes_what_the_loss_sees(tmp_path):
    class AllZero:
        def relabel(self, step, z, labels, index):
            return torch.zeros_like(labels)

    plain = runs.read_metrics(train(tiny(tmp_path, "a", epochs=1, loss="supcon")))
    relabelled = runs.read_metrics(train(tiny(tmp_path, "b", epochs=1, loss="supcon"), callbacks=[AllZero()]))
    assert plain[0]["contrastive"] != relabelled[0]["contrastive"]


# --- config ---------------------------------------------------------------------------------
def test_overrides_round_trip_and_diff():
    cfg = apply_overrides(TrainConfig(), ["alpha=0.25", "loss=supcon", "encoder_options.width=16",
                                          "keep_checkpoints=[1,3]", "grad_clip=none", "epochs=12"])
    assert (cfg.alpha, cfg.loss, cfg.encoder_options, cfg.keep_checkpoints, cfg.grad_clip, cfg.epochs) == \
        (0.25, "supcon", {"width": 16}, [1, 3], None, 12)
    assert isinstance(cfg.epochs, int)
    assert apply_overrides(TrainConfig(), ["keep_checkpoints=2,4"]).keep_checkpoints == [2, 4]
    assert TrainConfig.from_json(cfg.to_json()) == cfg
    assert config_diff(TrainConfig(), cfg) == {
        "alpha": (0.5, 0.25), "loss": ("spread", "supcon"), "encoder_options.width": (None, 16),
        "keep_checkpoints": ([], [1, 3]), "epochs": (10, 12)}


@pytest.mark.parametrize("override, message", [
    ("alhpa=0.3", "unknown config key 'alhpa'"), ("alpha", "not key=value"),
    ("alpha=1.5", "alpha must lie in"), ("epochs=2.5", "epochs takes an integer"),
    ("lr=fast", "lr takes a number"), ("protocol=probe", "choose one of"),
    ("keep_checkpoints=[20]", "outside 1..epochs"), ("loss.x=1", "not a dict field"),
])
def test_bad_overrides(override, message):
    with pytest.raises(ValueError, match=message):
        apply_overrides(TrainConfig(), [override])


def test_lr_schedule():
    factors = [lr_factor(s, 10, 100) for s in range(100)]
    assert factors[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert factors[10] == 1.0 and lr_factor(55, 10, 100) == pytest.approx(0.5)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))
    assert lr_factor(100, 10, 100) == pytest.approx(0.0)


# --- bad input before training --------------------------------------------------------------
def test_resume_with_different_config_is_refused(tmp_path):
    train(tiny(tmp_path, epochs=1))
    with pytest.raises(ValueError, match=r"differing keys: alpha: 0.5 \(saved\) != 0.25.*temperature"):
        train(tiny(tmp_path, epochs=1, alpha=0.25, temperature=0.3), resume=True)
    with pytest.raises(ValueError, match="already holds a run"):
        train(tiny(tmp_path, epochs=1))
    train(tiny(tmp_path, epochs=1, device="cpu", progress=True), resume=True)  # runtime keys may differ


@pytest.mark.parametrize("changes, message", [
    ({"dataset": "digitz"}, "unknown dataset 'digitz'; known datasets: .*mnist5k-coarse"),
    ({"encoder": "cnn-tset"}, "unknown encoder 'cnn-tset'; known encoders: .*cnn-test"),
    ({"loss": "supcn"}, r"unknown loss 'supcn'; known losses: .*supcon"),
    ({"encoder": "vit-test", "encoder_options": {"patch": 3}}, "vit"),  # 8 px is not a multiple of 3
    ({"dataset": "strata", "encoder": "cnn-test"}, "cnn"),               # vectors into a conv net
])
def test_bad_names_and_mismatches_fail_before_training(tmp_path, changes, message):
    with pytest.raises(ValueError, match=message):
        train(tiny(tmp_path, **changes))
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_unwritable_out_dir(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(ValueError, match="cannot write to the run folder"):
        train(tiny(tmp_path, "file/run"))


# --- data transforms and the CE mask ----------------------------------------------------------
def test_transforms_from_the_config_are_reapplied_by_load_run(tmp_path):
    cfg = tiny(tmp_path, epochs=1, subsample_fraction=0.5, noise_rate=0.2, labelled_fraction=0.1)
    run = load_run(train(cfg))
    ds = run.dataset
    train_rows = ds.split == 0
    assert int(train_rows.sum()) == pytest.approx(1295 / 2, abs=5)
    assert [t["transform"] for t in ds.transforms] == ["subsample", "label_noise", "labelled_fraction"]
    assert (ds.label[train_rows] != ds.clean_label[train_rows]).float().mean() == pytest.approx(0.2, abs=0.01)
    assert ds.labelled[train_rows].float().mean() == pytest.approx(0.1, abs=0.02)
    emb = run.embeddings("train")
    assert np.array_equal(emb["origin"], ds.origin[train_rows].numpy())


def test_ce_term_sees_only_labelled_examples():
    cfg = TrainConfig(dataset="digits", encoder="cnn-test", protocol="ce", views=2, progress=False)
    ds = build.build_dataset(cfg)
    model = build.build_model(cfg, ds.input_shape, ds.num_classes)
    views = default_views(ds)
    x, y = ds.x[:8], ds.label[:8]
    acc = {k: torch.zeros((), dtype=torch.float64) for k in ("loss", "contrastive", "ce", "correct", "seen", "images")}
    ctx = train_mod.StepContext(model, None, views, cfg)

    def step(labelled):
        gen = torch.Generator().manual_seed(0)
        model.eval()  # BatchNorm in eval mode: the two calls compute the same logits
        batch = train_mod.Batch(x, y, y, labelled, torch.arange(8))
        out = train_mod.train_step(ctx, batch, generator=gen, step=0, acc=acc)
        return float(out), model.head.weight.grad

    loss, grad = step(torch.zeros(8, dtype=torch.bool))
    assert loss == 0.0 and torch.count_nonzero(grad) == 0
    mask = torch.zeros(8, dtype=torch.bool)
    mask[3] = True
    loss, _ = step(mask)
    with torch.no_grad():
        xv = views(x, 2, torch.Generator().manual_seed(0))
        _, logits = model(xv[3])
    assert loss == pytest.approx(float(torch.nn.functional.cross_entropy(logits, y[3].repeat(2))), rel=1e-5)


def test_channels_last_trains_the_same_model_up_to_rounding(tmp_path):
    plain = runs.read_metrics(train(tiny(tmp_path, "a", epochs=1)))
    nhwc = runs.read_metrics(train(tiny(tmp_path, "b", epochs=1, channels_last=True)))
    assert nhwc[0]["loss"] == pytest.approx(plain[0]["loss"], rel=1e-3)
    assert nhwc[0]["val_acc"] == pytest.approx(plain[0]["val_acc"], abs=0.05)


def test_without_a_val_split_the_last_epoch_is_kept(tmp_path):
    """dataset option val_fraction=0 (the paper's final runs): no model selection, best.pt = last epoch."""
    run_dir = train(tiny(tmp_path, epochs=2, dataset_options={"val_fraction": 0.0}))
    rows = runs.read_metrics(run_dir)
    assert [r["best"] for r in rows] == [True, True] and all(math.isnan(r["val_acc"]) for r in rows)
    assert torch.load(run_dir / "best.pt", weights_only=False)["epoch"] == 2


def test_compiled_step_trains_and_saves_the_plain_model(tmp_path):
    """config.compile: the step runs under torch.compile (the "eager" backend here: no compiler
    needed); checkpoints hold the plain model's keys, so eval and resume need no compile."""
    run_dir = train(tiny(tmp_path, epochs=1, compile="eager"))
    state = torch.load(run_dir / "checkpoint.pt", weights_only=False)["model"]
    assert not any(k.startswith("_orig_mod") for k in state)
    assert load_run(run_dir).embeddings("test")["logits"].shape[1] == 10
    with pytest.raises(ValueError, match="not a torch.compile backend"):
        train(tiny(tmp_path, "bad", compile="nope"))


def test_augment_recipe_is_a_config_key_that_changes_the_views(tmp_path):
    with pytest.raises(ValueError, match=r"augment='simclr'; choose one of \['ours', 'authors'\]"):
        tiny(tmp_path, augment="simclr")
    ours = train(tiny(tmp_path, "ours", epochs=1))
    authors = train(tiny(tmp_path, "authors", epochs=1, augment="authors"))
    assert TrainConfig.from_json((authors / "config.json").read_text()).augment == "authors"
    a, b = params(ours), params(authors)  # same seed and data: only the views differ
    assert any(not torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="recipe 'authors' is an image augmentation"):
        train(tiny(tmp_path, "vec", dataset="strata", encoder="mlp-test", augment="authors"))


def test_head_input_h_is_the_standard_protocol_ce_head_before_the_projection(tmp_path):
    proj = {"proj_dim": 8, "proj_hidden": 32}
    with pytest.raises(ValueError, match="head_input='x'; choose 'z'"):
        tiny(tmp_path, head_input="x")
    for protocol in ("joint", "contrastive_then_probe"):
        run_dir = train(tiny(tmp_path, protocol, epochs=1, encoder_options=proj, head_input="h", protocol=protocol,
                             probe_epochs=2, embedding="projection"))
        model = load_run(run_dir).model
        assert model.head.in_features == model.encoder.feature_dim != model.embed_dim
        x = torch.randn(4, 1, 8, 8)
        z, logits = model(x)
        with torch.no_grad():  # the logits read h: scrambling the projection head changes z, not them
            for p in model.encoder.proj.parameters():
                p.add_(torch.randn_like(p))
        z2, logits2 = model(x)
        assert not torch.allclose(z, z2) and torch.equal(logits, logits2)
        test = load_run(run_dir).embeddings("test")
        assert test["logits"].shape[1] == model.num_classes and test["features"].shape[1] == model.encoder.feature_dim


def test_embedding_names_the_protocol_and_refuses_a_contradiction(tmp_path):
    with pytest.raises(ValueError, match="embedding='paper' has no projection head"):
        tiny(tmp_path, encoder_options={"proj_dim": 8})
    with pytest.raises(ValueError, match="head_input='h' needs a projection head"):
        tiny(tmp_path, head_input="h")
    with pytest.raises(ValueError, match="embedding='nope'"):
        tiny(tmp_path, embedding="nope")
    paper = build.build_model(tiny(tmp_path), (1, 8, 8), 2)
    projection = build.build_model(tiny(tmp_path, embedding="projection"), (1, 8, 8), 2)
    assert not paper.has_projection and projection.has_projection
    assert projection.embed_dim == build.DEFAULT_PROJECTION["proj_dim"]
